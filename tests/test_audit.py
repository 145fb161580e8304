"""The audit from source (patterns/audit/*.toml) against the catalog.

Every message the supported servers can write about a failed request or a worker/app that
cannot serve is listed there with its verdict. Here: each audited message has example
lines that classify exactly as its verdict says (the incident, a companion of it, or
nothing), every template of the catalog is covered by an audited example (a new template
cannot skip the audit), and every incident that explains nginx symptoms names them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from gw502d.classify.catalog import load_catalog
from gw502d.classify.matcher import Classifier

AUDIT_DIR = Path(__file__).resolve().parents[1] / "patterns" / "audit"
CATALOG = load_catalog()
CLASSIFIER = Classifier(CATALOG)
VERDICTS = ("incident", "companion", "benign")
AUDITS = {p.stem: tomllib.loads(p.read_text(encoding="utf-8"))
          for p in sorted(AUDIT_DIR.glob("*.toml"))}
MESSAGE_KEYS = {"format", "source", "versions", "level", "verdict", "incident", "reason",
                "example", "consequence_of"}


def _examples() -> list[Any]:
    cases = []
    for name, audit in AUDITS.items():
        for n, msg in enumerate(audit["message"]):
            for k, ex in enumerate(msg.get("example", [])):
                cases.append(pytest.param(audit, msg, ex, id=f"{name}-{n}-{k}"))
    return cases


def _verdict(msg: dict[str, Any], ex: dict[str, Any]) -> tuple[str, str | None]:
    verdict = ex.get("verdict", msg["verdict"])
    incident = ex.get("incident", msg.get("incident"))
    return verdict, None if verdict == "benign" else incident


def test_audits_cover_each_supported_server():
    assert set(AUDITS) >= {"nginx", "uwsgi", "gunicorn", "werkzeug", "gevent"}
    for name, audit in AUDITS.items():
        for key in ("server", "versions", "sources", "scope", "injection", "out_of_scope"):
            assert audit.get(key), f"{name}: says nothing about {key}"
        for item in audit["out_of_scope"]:
            assert item["what"] and item["why"], name


@pytest.mark.parametrize("name", sorted(AUDITS))
def test_every_audited_message_is_complete(name):
    audit = AUDITS[name]
    assert audit["message"], name
    for msg in audit["message"]:
        where = f"{name}: {msg.get('format')!r}"
        assert set(msg) <= MESSAGE_KEYS, (where, set(msg) - MESSAGE_KEYS)
        for key in ("format", "source", "versions", "level", "reason"):
            assert msg.get(key), f"{where}: no {key}"
        assert msg["verdict"] in VERDICTS, where
        if msg["verdict"] != "benign":
            assert msg.get("incident"), f"{where}: {msg['verdict']} of which incident?"
        assert msg.get("example"), f"{where}: no example line"
        for ex in msg["example"]:
            if ex.get("verdict", msg["verdict"]) != msg["verdict"] or "incident" in ex:
                assert ex.get("why"), f"{where}: an example that differs says why"


@pytest.mark.parametrize(("audit", "msg", "ex"), _examples())
def test_audited_example_classifies_as_its_verdict(audit, msg, ex):
    verdict, incident = _verdict(msg, ex)
    hit = CLASSIFIER.classify(ex["line"].encode("utf-8", "surrogateescape"))
    if verdict == "benign":
        assert hit is None, (ex["line"], hit and hit.incident.id)
        return
    assert hit is not None, ex["line"]
    assert hit.incident.source == audit["family"], ex["line"]
    assert hit.incident.id == incident, ex["line"]
    if verdict == "companion":
        assert hit.incident.companion and hit.incident.companion_of == incident, ex["line"]
    else:
        assert not hit.incident.companion, ex["line"]


def test_consequences_in_the_audit_are_the_catalogs():
    for audit in AUDITS.values():
        for msg in audit["message"]:
            for other in msg.get("consequence_of", []):
                line = msg["example"][0]["line"].encode()
                hit = CLASSIFIER.classify(line)
                assert hit is not None
                assert other in {c.incident for c in hit.incident.consequence_of}, (
                    msg["format"], other)


def test_every_catalog_template_is_audited():
    """A template no audited example reaches was added without reading the source."""
    reached: set[tuple[str, str]] = set()
    for audit in AUDITS.values():
        for msg in audit["message"]:
            for ex in msg["example"]:
                m = CLASSIFIER.match(ex["line"].encode("utf-8", "surrogateescape"))
                if m is not None and m.lastindex is not None:
                    slot = CLASSIFIER.slots[m.lastindex]
                    reached.add((slot.family.name, slot.message.source))
    missing = sorted({(slot.family.name, slot.message.source)
                      for slot in CLASSIFIER.slots.values()} - reached)
    assert not missing, "templates without an audited message: " + "\n".join(map(str, missing))


def test_backend_incidents_name_the_nginx_symptoms_they_explain():
    nginx = {i.id for i in CATALOG.incidents if i.source == "nginx"}
    for name, audit in AUDITS.items():
        family = audit["family"]
        pairings = {p["incident"]: p for p in audit.get("pairing", [])}
        for p in pairings.values():
            assert set(p["explains"]) <= nginx, (name, p)
            assert p["how"], (name, p)
            assert any(i.id == p["incident"] and i.source == family for i in CATALOG.incidents)
        if family in ("uwsgi", "gunicorn"):
            counted = {i.id for i in CATALOG.incidents
                       if i.source == family and not i.companion and i.status is not None}
            for incident in counted - {"client_disconnect"}:
                assert incident in pairings or incident in audit.get("paired_by_engine", []), (
                    f"{family}/{incident}: which nginx symptom does it explain?")
