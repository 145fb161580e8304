"""The daemon's pipeline and totals in-process: counts summed over family tallies, the
snapshot a restart continues from, a reload that never resets a counter."""

from __future__ import annotations

import time

import structlog

from gw502d.classify.catalog import load_catalog
from gw502d.daemon.pipeline import Pipeline, Settings
from gw502d.daemon.totals import Totals
from gw502d.remediate.correlate import ROOT_CAUSE_PAIRS
from gw502d.source.spec import JournalSpec, LogSpec
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


JOURNAL = JournalSpec("apps", None, units=("shop", "api"))
SYSLOG = LogSpec("/var/log/syslog", "syslog", None, "syslog")
DIED_77 = b"DAMN ! worker 1 (pid: 77) died, killed by signal 9 :( trying respawn ..."
TIMEOUT = b"[18359] WORKER TIMEOUT (pid:18362)"  # gunicorn --log-syslog, prefix stripped


def test_journal_records_go_to_the_tally_their_tag_names() -> None:
    """Mixed writers in one batch: each line counts in its family's tally, in line order
    within it (the death after its harakiri is the harakiri's companion)."""
    p = pipeline()
    now = time.time()
    p.feed_records(JOURNAL, [HARAKIRI, TIMEOUT, DIED_77, BLOCK, b"[18359] Booting worker"],
                   [now] * 5, ["uwsgi", "gunicorn.shop.error", "uwsgi", "uwsgi", "gunicorn"])
    n = p.numbers()
    assert n.incidents[("worker_harakiri", "uwsgi")] == 1
    assert n.incidents[("worker_died", "uwsgi")] == 0
    assert n.companions[("worker_harakiri", "uwsgi")] == 1
    assert n.incidents[("request_block_too_big", "uwsgi")] == 1
    assert n.incidents[("worker_timeout", "gunicorn")] == 1
    assert n.unparsed == {"apps": 0}
    assert set(p.stages.tallies.by_family) >= {"uwsgi", "gunicorn"}
    # a spec's family wins over the tags
    p.feed_records(JournalSpec("shop", "uwsgi", units=("shop",)), [BLOCK], [now], ["gunicorn"])
    assert p.numbers().incidents[("request_block_too_big", "uwsgi")] == 2


def test_journal_records_pair_at_their_own_time_not_their_arrival() -> None:
    """A harakiri read now but written 100 s ago explains no nginx symptom of now; one
    written a second before the symptom does, whichever is read first."""
    p = pipeline()
    now = time.time()
    p.feed_records(JOURNAL, [HARAKIRI], [now - 100], ["uwsgi"])
    p.feed(NGINX, NGINX.path, [NGINX_CLOSE])
    assert p.numbers().root_causes[("upstream_premature_close", "worker_harakiri")] == 0
    p.feed(NGINX, NGINX.path, [NGINX_CLOSE])
    p.feed_records(JOURNAL, [HARAKIRI.replace(b"pid: 77", b"pid: 78")], [time.time() - 1],
                   ["uwsgi"])
    assert p.numbers().root_causes[("upstream_premature_close", "worker_harakiri")] == 1


def test_syslog_lines_are_stripped_and_go_to_their_tags_family() -> None:
    p = pipeline()
    p.feed(SYSLOG, SYSLOG.path, [
        b"Oct 14 13:38:27 web1 uwsgi[740]: " + BLOCK,
        b"2025-10-14T13:38:27.123456+00:00 web1 nginx: " + NGINX_CLOSE,
        b"<11>1 2025-10-14T13:38:27.1+00:00 web1 gunicorn.app.error - - - " + TIMEOUT,
        b"Oct 14 13:38:28 web1 sshd[1]: Accepted publickey for root",
    ])
    n = p.numbers()
    assert n.incidents[("request_block_too_big", "uwsgi")] == 1
    assert n.incidents[("upstream_premature_close", "nginx")] == 1
    assert n.incidents[("worker_timeout", "gunicorn")] == 1
    assert n.unparsed == {"syslog": 0}
    recent = p.stages.recent.copy()
    assert {seen.line for seen in recent} == {BLOCK, NGINX_CLOSE, TIMEOUT}


def test_pending_ends_of_a_family_not_seen_since_the_restart_are_kept() -> None:
    """A harakiri read before a restart waits for its death; a snapshot taken after the
    restart but before the journal's next uWSGI line must still hold it (a journal's
    families get their tallies with their first line)."""
    def journal_pipeline(totals: Totals) -> Pipeline:
        return Pipeline(CATALOG, [NGINX, JOURNAL], SETTINGS, totals)

    p = journal_pipeline(Totals())
    p.feed_records(JOURNAL, [HARAKIRI], [time.time()], ["uwsgi"])
    totals = Totals()
    totals.restore(p.snapshot(), CATALOG)
    restarted = journal_pipeline(totals)
    again = Totals()
    again.restore(restarted.snapshot(), CATALOG)  # no uWSGI line in between
    p2 = journal_pipeline(again)
    p2.feed_records(JOURNAL, [DIED_77], [time.time()], ["uwsgi"])
    n = p2.numbers()
    assert n.incidents[("worker_died", "uwsgi")] == 0
    assert n.companions[("worker_harakiri", "uwsgi")] == 1
