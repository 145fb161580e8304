"""The daemon's pipeline and totals in-process: counts summed over family tallies, the
snapshot a restart continues from, a reload that never resets a counter."""

from __future__ import annotations

import time

import structlog

from gw502d.classify.catalog import load_catalog
from gw502d.daemon.pipeline import Pipeline, Settings
from gw502d.daemon.totals import Totals
from gw502d.remediate.correlate import ROOT_CAUSE_PAIRS
from gw502d.source.spec import LogSpec
from tests.samples import BLOCK, HARAKIRI, NGINX_CLOSE, SIGPIPE, timeout_line

CATALOG = load_catalog()
NGINX = LogSpec("/var/log/nginx/error.log", "nginx", "nginx")
UWSGI = LogSpec("/var/log/uwsgi/app.log", "uwsgi", "uwsgi")
ANY = LogSpec("/var/log/app/*.log", "app", None)
SETTINGS = Settings(incidents_buffer=10, redact=True, window=5.0)






def pipeline(totals: Totals | None = None) -> Pipeline:
    return Pipeline(CATALOG, [NGINX, UWSGI, ANY], SETTINGS, totals or Totals())


def test_counts_per_pair_summed_over_family_tallies() -> None:
    p = pipeline()
    p.feed(NGINX, NGINX.path, [timeout_line("http://127.0.0.1:8000"), b"not nginx at all"])
    p.feed(UWSGI, UWSGI.path, [BLOCK, SIGPIPE, b"*** Starting uWSGI ***"])
    p.feed(ANY, "/var/log/app/a.log", [timeout_line("http://127.0.0.1:8000"), BLOCK])
    n = p.numbers()
    assert n.incidents[("upstream_timeout", "nginx")] == 2
    assert n.incidents[("request_block_too_big", "uwsgi")] == 2
    assert set(n.incidents) == set(CATALOG.keys)
    assert n.companions[("client_disconnect", "uwsgi")] == 1
    # An nginx log's line without nginx's prefix is unparsed; uWSGI lines have no prefix.
    assert n.unparsed == {"nginx": 1}
    assert "http://127.0.0.1:8000" in n.remediation[("upstream_timeout", "nginx")]
    assert "read_header" in n.remediation[("upstream_timeout", "nginx")]
    assert n.last_seen[("upstream_timeout", "nginx")] > time.time() - 60
    assert n.last_seen[("worker_timeout", "gunicorn")] == 0
    assert set(n.root_causes) == set(ROOT_CAUSE_PAIRS) and not any(n.root_causes.values())


def test_remediation_follows_the_most_common_evidence() -> None:
    p = pipeline()
    p.feed(NGINX, NGINX.path, [timeout_line("http://10.1.1.1:80")])
    p.feed(NGINX, NGINX.path, [timeout_line("http://10.2.2.2:80")] * 3)
    assert "http://10.2.2.2:80" in p.numbers().remediation[("upstream_timeout", "nginx")]
    p.feed(NGINX, NGINX.path, [timeout_line("http://10.1.1.1:80")] * 3)
    assert "http://10.1.1.1:80" in p.numbers().remediation[("upstream_timeout", "nginx")]


def test_snapshot_restores_into_a_new_process() -> None:
    p = pipeline()
    p.feed(UWSGI, UWSGI.path, [HARAKIRI, BLOCK, SIGPIPE])
    p.feed(NGINX, NGINX.path, [NGINX_CLOSE, timeout_line("http://127.0.0.1:8000")])
    saved = p.snapshot()
    assert saved["incidents"]["upstream_timeout"]["nginx"] == 1  # type: ignore[index]
    totals = Totals()
    totals.restore(saved, CATALOG)
    fresh = pipeline(totals)
    before, after = p.numbers(), fresh.numbers()
    assert after == before
    assert after.root_causes[("upstream_premature_close", "worker_harakiri")] == 1
    fresh.feed(NGINX, NGINX.path, [timeout_line("http://127.0.0.1:8000")])
    assert fresh.numbers().incidents[("upstream_timeout", "nginx")] == 2


def test_restore_skips_what_it_cannot_use() -> None:
    totals = Totals()
    with structlog.testing.capture_logs() as logs:
        totals.restore({"incidents": {"upstream_timeout": {"nginx": -1, "uwsgi": "x"},
                                      "worker_died": {"uwsgi": 4}, "gone": 3,
                                      "renamed_incident": {"nginx": 7}},
                        "last_seen": "never"}, CATALOG)
    n = pipeline(totals).numbers()
    assert n.incidents[("worker_died", "uwsgi")] == 4
    assert n.incidents[("upstream_timeout", "nginx")] == 0
    # an incident the catalog no longer has is dropped, not exported forever
    assert ("renamed_incident", "nginx") not in n.incidents
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "saved counter malformed, ignored", "saved counter malformed, ignored",
        "saved counter malformed, ignored", "saved counters malformed, ignored",
        "saved counts of incidents not in the catalog dropped"]


def test_reload_never_resets_and_drops_nothing() -> None:
    p = pipeline()
    p.feed(NGINX, NGINX.path, [timeout_line("http://127.0.0.1:8000")] * 2)
    p.feed(UWSGI, UWSGI.path, [SIGPIPE, HARAKIRI])
    p.feed(NGINX, NGINX.path, [NGINX_CLOSE])
    before = p.numbers()
    p.reload(CATALOG, [NGINX], Settings(incidents_buffer=1, redact=False, window=5.0))
    after = p.numbers()
    assert after == before  # the evidence carries over too: the same remediation
    p.feed(NGINX, NGINX.path, [timeout_line("http://127.0.0.1:8000")])
    # A log that left the config may still deliver a last block: it counts as well.
    p.feed(UWSGI, UWSGI.path, [BLOCK])
    n = p.numbers()
    assert n.incidents[("upstream_timeout", "nginx")] == 3
    assert n.incidents[("request_block_too_big", "uwsgi")] == 1
    assert sum(v for (_, cause), v in n.root_causes.items() if cause == "worker_harakiri") == 1
    assert len(p.stages.recent.copy()) == 1
