"""The recorded real logs under tests/data/real/ and what they say, checked against the catalog.

- sequences.json (tests/servers/sequences.py): each file holds one event reported on several
  lines; the catalog must say which line is counted and tie every other line to it, as a
  companion of its incident or as a consequence with the same worker pid.
- mixed-*/truth.json (tests/servers/mixed.py): nginx and uWSGI logs of one run with unrelated
  incidents interleaved and the true pairing, known by construction; every line it names
  classifies as it says.

These are the engine's test data (one event, one count; root causes right or absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gw502d.classify.catalog import load_catalog
from gw502d.classify.matcher import Classifier
from tests.servers.mixed import record

DATA = Path(__file__).resolve().parent / "data" / "real"
CATALOG = load_catalog()
CLASSIFIER = Classifier(CATALOG)
SEQUENCES = json.loads((DATA / "sequences.json").read_text())
MIXED = sorted(DATA.glob("mixed-*/truth.json"))


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def test_sequences_cover_every_version_recorded():
    servers = {entry["server"].split()[0] for entry in SEQUENCES}
    assert servers == {"uWSGI", "gunicorn", "nginx"}
    versions = {entry["server"] for entry in SEQUENCES}
    assert {"uWSGI 2.0.31", "gunicorn 20.1.0", "gunicorn 23.0.0"} <= versions


@pytest.mark.parametrize("entry", SEQUENCES, ids=lambda e: e["file"])
def test_one_event_has_one_counted_line_and_the_rest_tied_to_it(entry):
    lines = _lines(DATA / entry["file"])
    event = entry["event"]
    primary = None
    for item in event["lines"]:
        hit = CLASSIFIER.classify(lines[item["line"] - 1])
        assert hit is not None and hit.incident.id == item["classified_as"], item
        if item["role"] == "primary":
            assert not hit.incident.companion and hit.incident.id == event["incident"]
            primary = hit
        elif item["role"] == "companion":
            assert hit.incident.companion, item
        else:  # a consequence: its entry names the event's incident (or a companion's)
            assert primary is not None, "a consequence follows the event's first line"
            follows = {c.incident: c.same for c in hit.incident.consequence_of}
            assert event["incident"] in follows or hit.incident.id in follows, item
            same = follows.get(event["incident"], follows.get(hit.incident.id, ()))
            for fact in same:
                assert hit.facts.get(fact) == primary.facts.get(fact), (item, fact)
    assert primary is not None


@pytest.mark.parametrize("truth_path", MIXED, ids=lambda p: p.parent.name)
def test_mixed_traffic_truth_names_lines_that_classify_as_it_says(truth_path):
    truth = json.loads(truth_path.read_text())
    nginx = _lines(truth_path.parent / truth["files"]["nginx"])
    uwsgi = _lines(truth_path.parent / truth["files"]["uwsgi"])
    assert truth["pairs"] and truth["unpaired_nginx"] and truth["unpaired_uwsgi"]
    for pair in truth["pairs"]:
        hit = CLASSIFIER.classify(nginx[pair["nginx_line"] - 1])
        assert hit is not None and hit.incident.id == pair["nginx_incident"], pair
        first = CLASSIFIER.classify(uwsgi[pair["uwsgi_lines"][0] - 1])
        assert first is not None and first.incident.id == pair["uwsgi_incident"], pair
        for n in pair["uwsgi_lines"][1:]:
            hit = CLASSIFIER.classify(uwsgi[n - 1])
            assert hit is not None, (pair, n)
    for item in truth["unpaired_nginx"]:
        hit = CLASSIFIER.classify(nginx[item["line"] - 1])
        assert hit is not None and hit.incident.id == item["incident"], item
    for item in truth["unpaired_uwsgi"]:
        hit = CLASSIFIER.classify(uwsgi[item["line"] - 1])
        assert hit is not None and hit.incident.id == item["incident"], item
    # by construction every nginx error line of the run is in the truth, paired or not
    named = {p["nginx_line"] for p in truth["pairs"]} | {u["line"] for u in truth["unpaired_nginx"]}
    errors = {n for n, line in enumerate(nginx, 1) if b" [error] " in line}
    assert errors == named


@pytest.mark.servers
def test_mixed_traffic_records_again_with_the_same_shape(tmp_path):
    """The recorder runs on every CI run: the committed fixture stays reproducible."""
    truth = record(tmp_path / "mixed")
    assert [p["cause"] for p in truth["pairs"]] == [
        "worker_oom_killed", "request_block_too_big", "worker_harakiri"]
    assert [u["incident"] for u in truth["unpaired_uwsgi"]] == ["protocol_mismatch"] * 2
    assert truth["client_status"] == {"timeout": 504, "crash": 502, "too_big": 502,
                                      "timeout2": 504, "harakiri": 502}
    test_mixed_traffic_truth_names_lines_that_classify_as_it_says(tmp_path / "mixed" /
                                                                  "truth.json")
