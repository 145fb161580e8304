"""The catalog's own example lines (fail2ban style), and errors for malformed pattern files."""

from __future__ import annotations

from pathlib import Path

import pytest

from gw502d.classify.catalog import CatalogError, load_catalog, load_file
from gw502d.classify.matcher import Classifier
from gw502d.classify.selftest import check_example

CATALOG = load_catalog()
CLASSIFIER = Classifier(CATALOG)
CASES = [
    pytest.param(ex, id=f"{i.source}-{i.id}-{n}")
    for i in CATALOG.incidents for n, ex in enumerate(i.examples)
] + [
    pytest.param(ex, id=f"{f.name}-benign-{n}")
    for f in CATALOG.families for n, ex in enumerate(f.benign)
]

# The incident ids are a public interface (metrics, alerts, dashboards): never rename them.
PUBLIC_IDS = {
    "nginx": {"upstream_header_too_big", "upstream_timeout", "upstream_connect_refused",
              "upstream_socket_missing", "upstream_socket_permission", "upstream_backlog_full",
              "upstream_premature_close", "upstream_reset", "no_live_upstreams",
              "upstream_invalid_header", "client_disconnect", "upstream_unreachable",
              "upstream_local_ports_exhausted", "upstream_ssl_handshake_failed",
              "address_in_use"},
    "uwsgi": {"request_block_too_big", "protocol_mismatch", "client_disconnect",
              "worker_harakiri", "worker_died", "listen_queue_full", "worker_crashed",
              "worker_memory_killed", "app_load_failed", "address_in_use",
              "workers_respawning_too_fast", "tls_on_uwsgi_socket", "modifier_unavailable",
              "http_request_too_big", "router_upstream_reset", "router_connect_failed"},
    "gunicorn": {"worker_timeout", "worker_killed", "client_disconnect", "worker_crashed",
                 "worker_exited", "worker_boot_failed", "app_load_failed", "address_in_use"},
    "werkzeug": {"client_disconnect", "dev_server_warning", "address_in_use"},
}


@pytest.mark.parametrize("example", CASES)
def test_example_classifies_as_annotated(example):
    assert check_example(CLASSIFIER, example, "example") is None


def test_public_incident_ids_exist_with_examples():
    for source, ids in PUBLIC_IDS.items():
        for incident_id in ids:
            entry = CATALOG.incident(incident_id, source)
            assert entry.examples, f"{source}/{incident_id} has no example line"
            assert entry.summary and entry.remediation


def test_every_incident_has_docs_and_a_known_status():
    for i in CATALOG.incidents:
        assert i.docs and all(d.startswith("https://") for d in i.docs), i.id
        assert i.status in (502, 504, 499, None)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "custom.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "problem"), [
    ("family = 'nginx'\n[[incident]]\nid = 'x'\n", "missing key 'severity'"),
    ("this is = not toml", "not valid TOML"),
    ("family = 'nginx'\n[[incident]]\nid='x'\nseverity='error'\nstatus=502\nsummary='s'\n"
     "messages=['a {b:nope}']\nremediation='r'\n", "unknown capture type 'nope'"),
    ("family = 'nginx'\n[[incident]]\nid='x'\nseverity='error'\nstatus=502\nsummary='s'\n"
     "messages=['a {b:int}']\nremediation='use {c}'\nevidence=['b']\n", "not listed in 'evidence'"),
    ("family = 'nginx'\n[[incident]]\nid='x'\nseverity='loud'\n", "severity must be one of"),
    ("family = 'nginx'\nprefix = '{x:int}'\n", "line format of 'nginx' is built in"),
    ("family = 'mine'\n", "missing key 'prefix'"),
    ("family = 'nginx'\n[[incident]]\nid='x'\nseverity='error'\nstatus=502\nsummary='s'\n"
     "messages=['a [?b']\nremediation='r'\n", "cannot parse template"),
    ("family = 'uwsgi'\n[[incident]]\nid='x'\nseverity='error'\nstatus=502\nsummary='s'\n"
     "messages=['size {size:int}']\nwhen='block_size_spells_method'\nremediation='r'\n",
     "every message must capture it"),
])
def test_malformed_file_names_file_entry_and_problem(tmp_path, text, problem):
    path = _write(tmp_path, text)
    with pytest.raises(CatalogError) as err:
        load_file(path)
    assert str(path) in str(err.value)
    assert problem in str(err.value)


_ENTRY = ("severity='error'\nstatus=502\nsummary='s'\nremediation='r'\n")


@pytest.mark.parametrize(("text", "problem"), [
    ("family='uwsgi'\n[[incident]]\ncompanion_of='no_such'\n" + _ENTRY + "messages=['x y']\n",
     "companion_of 'no_such': no such incident"),
    ("family='uwsgi'\n[[incident]]\nid='a'\n" + _ENTRY + "messages=['a {n:int}']\n"
     "consequence_of=[{incident='worker_harakiri', same=['n']}]\n",
     "does not capture ['n']"),
    ("family='uwsgi'\n[[incident]]\nid='a'\n" + _ENTRY + "messages=['a {n:int}', 'b']\n"
     "consequence_of=[{incident='worker_harakiri', same=['n']}]\n",
     "['n'] not captured by every message"),
    ("family='uwsgi'\n[[incident]]\nid='a'\n" + _ENTRY + "messages=['a']\n"
     "client_status=[{server='x 1', via='v', status=999, origin='claim'}]\n",
     "status must be an HTTP status"),
    ("family='uwsgi'\n[[incident]]\nid='a'\ncompanion_of='worker_died'\n" + _ENTRY +
     "messages=['a']\n", "companion_of 'worker_died' and id 'a' differ"),
])
def test_links_between_entries_are_checked(tmp_path, text, problem):
    (tmp_path / "links.toml").write_text(text)
    with pytest.raises(CatalogError) as err:
        load_catalog([tmp_path])
    assert problem in str(err.value)
    assert "links.toml" in str(err.value)


def test_companions_and_consequences_name_counted_incidents():
    for i in CATALOG.incidents:
        if i.companion:
            assert i.companion_of is not None and not i.consequence_of
            assert (i.companion_of, i.source) in CATALOG.keys
        for c in i.consequence_of:
            assert (c.incident, i.source) in CATALOG.keys and c.same


def test_user_pattern_dir_adds_incident_to_family(tmp_path):
    (tmp_path / "app.toml").write_text(
        "family = 'uwsgi'\n[[incident]]\nid = 'app_oom_guard'\nseverity = 'warning'\n"
        "status = 'none'\nsummary = 'our guard fired'\nmessages = ['OOM guard: rss {rss:int} MB']\n"
        "evidence = ['rss']\nremediation = 'rss reached {rss} MB'\n"
        "[[incident.example]]\nline = 'OOM guard: rss 900 MB'\norigin = 'claim'\n"
        "fields = { rss = 900 }\n")
    catalog = load_catalog([tmp_path])
    hit = Classifier(catalog).classify(b"OOM guard: rss 900 MB")
    assert hit is not None and hit.incident.id == "app_oom_guard" and hit.facts["rss"] == 900
    # the built-in incidents are still there
    assert Classifier(catalog).classify(b"invalid request block size: 4363 (max 4096)...skip")
