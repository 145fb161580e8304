"""``gw502d run`` as systemd runs it: a real process, real files, real HTTP, real signals.

The lines appended to the followed logs are the catalog's own examples (see
:mod:`tests.daemon`), so the expected counts come from the pattern files, not from the code
under test. Every daemon started here is stopped by its PID.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gw502d.export.metric_names import METRIC_NAMES, PER_JOURNAL
from gw502d.remediate.correlate import ROOT_CAUSE_PAIRS
from tests.daemon import (
    CATALOG,
    LOGS,
    append,
    config_text,
    expected_totals,
    feed_examples,
    incidents,
    log_paths,
    page_tags,
    series,
    wait_counts,
)

# --- the tests --------------------------------------------------------------


def test_counts_serves_and_explains_real_lines(tmp_path: Path, daemon_factory: Any) -> None:
    logs = log_paths(tmp_path)
    d = daemon_factory(config_text(logs, start_at="beginning", incidents_buffer=20))
    d.start()
    before = d.metrics()
    # Every catalog pair exists from the start, at 0.
    assert incidents(before) == expected_totals(Counter())
    # nginx last, so /incidents (newest first) shows its lines.
    want, want_companions = feed_examples({k: v for k, v in logs.items() if k != "nginx"})
    wait_counts(d, want)
    more, more_companions = feed_examples({"nginx": logs["nginx"]})
    want += more
    want_companions += more_companions
    assert sum(want.values()) >= 40 and want_companions
    samples = wait_counts(d, want)

    names = {name for name, _ in samples if name.startswith("gw502d_")}
    assert names == METRIC_NAMES - PER_JOURNAL  # no [[journal]] source here
    companions = {(dict(k)["incident"], dict(k)["source"]): v
                  for k, v in series(samples, "gw502d_companion_lines_total").items()}
    assert {k: v for k, v in companions.items() if v} == dict(want_companions)
    for name in ("gw502d_remediation_info", "gw502d_last_incident_timestamp_seconds"):
        assert len(series(samples, name)) == len(CATALOG.keys), name
    remediation = {(dict(k)["incident"], dict(k)["source"]): dict(k)["remediation"]
                   for k in series(samples, "gw502d_remediation_info")}
    # Filled with the upstream of the lines seen, not a placeholder.
    assert "<upstream>" not in remediation[("upstream_header_too_big", "nginx")]
    assert "uwsgi://" in remediation[("upstream_header_too_big", "nginx")]
    last = {(dict(k)["incident"], dict(k)["source"]): v
            for k, v in series(samples, "gw502d_last_incident_timestamp_seconds").items()}
    assert all(abs(last[k] - time.time()) < 60 for k in want)
    assert all(last[k] == 0 for k in CATALOG.keys if k not in want)
    causes = series(samples, "gw502d_root_causes_total")
    # every (symptom, cause) series exists; the example lines, written within seconds of
    # each other, pair a few nginx symptoms with uWSGI/gunicorn causes
    assert len(causes) == len(ROOT_CAUSE_PAIRS) and all(v >= 0 for v in causes.values())
    per_log = series(samples, "gw502d_log_lines_total")
    assert {dict(k)["log"] for k in per_log} == set(LOGS)
    for name, path in logs.items():
        n = path.read_text().count("\n")
        assert per_log[frozenset({("log", name)})] == n
        assert samples[("gw502d_log_lag_bytes", frozenset({("log", name)}))] == 0
        assert samples[("gw502d_log_open_files", frozenset({("log", name)}))] == 1
    assert samples[("gw502d_config_last_reload_successful", frozenset())] == 1
    assert samples[("gw502d_unparsed_lines_total", frozenset({("log", "nginx")}))] == 0

    status, body, _ = d.get("/healthz")
    assert (status, body) == (200, "ok\n")

    status, body, headers = d.get("/incidents")
    assert status == 200 and headers["Content-Type"] == "application/json"
    recent = json.loads(body)["incidents"]
    assert len(recent) == 20  # incidents_buffer
    assert {"time", "log", "source", "incident", "facts", "remediation"} <= set(recent[0])
    nginx = [r for r in recent if r["source"] == "nginx"]
    assert nginx and all(r["facts"].get("client") in (None, "<redacted>") for r in nginx)
    assert all("client: 127.0.0.1" not in r["line"] for r in nginx)

    status, page, headers = d.get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "upstream_header_too_big" in page and "uwsgi://" in page
    # Remediation texts hold <placeholders> and facts from logs: text, never markup.
    assert "&lt;" in page
    assert page_tags(page) <= {"html", "head", "meta", "title", "style", "script", "body",
                               "header", "nav", "main", "section", "article", "details",
                               "summary", "div", "span", "small", "time", "h1", "h2", "h3", "p",
                               "b", "a", "code", "wbr", "ul", "li", "dl", "dt", "dd", "svg",
                               "rect", "line", "table", "thead", "tbody", "tr", "th",
                               "td"}

    events = [e for e in d.events() if e.get("event") == "incident"]
    assert {(e["incident"], e["source"]) for e in events} == set(want)
    assert all(e["remediation"] and "facts" in e for e in events)
    assert d.stop() == 0


def test_incident_events_are_rate_limited(tmp_path: Path, daemon_factory: Any) -> None:
    logs = log_paths(tmp_path, ("uwsgi",))
    d = daemon_factory(config_text(logs, start_at="beginning"))
    d.start()
    storm = ["invalid request block size: 4363 (max 4096)...skip"] * 5000
    append(logs["uwsgi"], storm)
    d.wait_for(lambda: incidents(d.metrics())[("request_block_too_big", "uwsgi")] == 5000,
               "5000 incidents")
    time.sleep(1.1)
    append(logs["uwsgi"], storm[:1])
    d.wait_for(lambda: incidents(d.metrics())[("request_block_too_big", "uwsgi")] == 5001,
               "one more")
    d.wait_for(lambda: len([e for e in d.events() if e.get("event") == "incident"]) >= 2,
               "the second event")
    events = [e for e in d.events() if e.get("event") == "incident"]
    # The storm logs a handful of events, not 5000; the next one counts what was left out.
    assert 2 <= len(events) <= 5
    assert sum(e["suppressed"] for e in events) + len(events) == 5001
    assert d.stop() == 0


def test_reload_keeps_counters_and_refuses_a_broken_config(
        tmp_path: Path, daemon_factory: Any) -> None:
    logs = log_paths(tmp_path, ("nginx", "uwsgi"))
    d = daemon_factory(config_text({"nginx": logs["nginx"]}, start_at="beginning"))
    d.start()
    want, _ = feed_examples({"nginx": logs["nginx"]})
    wait_counts(d, want)
    good = d.config_path.read_text()

    d.config_path.write_text(good + '[[log]]\npath = "/x.log"\nfamily = "nginz"\n')
    d.send(signal.SIGHUP)
    reload_ok = ("gw502d_config_last_reload_successful", frozenset())
    d.wait_for(lambda: d.metrics()[reload_ok] == 0, "the failed reload")
    errors = [e for e in d.events() if e.get("event", "").startswith("reload failed")]
    assert "log[2].family" in errors[-1]["error"]
    # every failed attempt is said at once (the operator is waiting for the answer)
    d.send(signal.SIGHUP)
    d.wait_for(lambda: len([e for e in d.events()
                            if e.get("event", "").startswith("reload failed")]) == 2,
               "the second failed reload's event")
    # The old configuration still runs and nothing was reset.
    more, _ = feed_examples({"nginx": logs["nginx"]})
    want += more
    samples = wait_counts(d, want)
    assert ("gw502d_log_lines_total", frozenset({("log", "uwsgi")})) not in samples

    d.config_path.write_text(config_text(logs, start_at="beginning"))
    success = d.metrics()[("gw502d_config_last_reload_success_timestamp_seconds", frozenset())]
    d.send(signal.SIGHUP)
    d.wait_for(lambda: d.metrics()[reload_ok] == 1, "the good reload")
    samples = d.metrics()
    assert samples[("gw502d_config_last_reload_success_timestamp_seconds", frozenset())] > success
    assert incidents(samples) == expected_totals(want)  # counters survive a reload
    more, _ = feed_examples(logs)
    want += more
    samples = wait_counts(d, want)
    assert samples[("gw502d_log_lines_total", frozenset({("log", "uwsgi")}))] > 0
    assert d.stop() == 0


def test_sigterm_then_restart_counts_nothing_twice(tmp_path: Path, daemon_factory: Any) -> None:
    logs = log_paths(tmp_path)
    d = daemon_factory(config_text(logs, start_at="beginning"))
    d.start()
    want, _ = feed_examples(logs)
    wait_counts(d, want)
    assert d.stop(signal.SIGTERM) == 0
    # Written while it was down: counted once, after the restart.
    more, _ = feed_examples(logs)
    want += more
    d.start()
    wait_counts(d, want)
    time.sleep(1)  # a second look: nothing read twice
    assert incidents(d.metrics()) == expected_totals(want)
    assert d.stop(signal.SIGINT) == 0


def test_sigkill_then_restart_continues_from_the_snapshot(
        tmp_path: Path, daemon_factory: Any) -> None:
    logs = log_paths(tmp_path)
    d = daemon_factory(config_text(logs, start_at="beginning"))
    d.start()
    want, _ = feed_examples(logs)
    wait_counts(d, want)
    state = d.state_dir / "state.json"

    def saved_total() -> int:
        try:
            extra = json.loads(state.read_text())["extra"]
        except (OSError, ValueError, KeyError):
            return -1
        return sum(n for sources in extra["incidents"].values() for n in sources.values())

    # The follower snapshots every 10 s: wait for one that holds the first batch.
    d.wait_for(lambda: saved_total() == sum(want.values()), "a snapshot", timeout=15)
    more, _ = feed_examples(logs, times=3)
    want += more
    wait_counts(d, want)  # read, counted, most likely not saved yet
    d.stop(signal.SIGKILL)
    d.start()
    wait_counts(d, want)
    time.sleep(1)
    assert incidents(d.metrics()) == expected_totals(want)
    assert d.stop() == 0


def test_systemd_notify_protocol(tmp_path: Path, daemon_factory: Any) -> None:
    sock_dir = Path(tempfile.mkdtemp(prefix="gw502d-"))  # AF_UNIX paths are short
    address = sock_dir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        sock.settimeout(10)
        logs = log_paths(tmp_path, ("nginx",))
        d = daemon_factory(config_text(logs), env={"NOTIFY_SOCKET": str(address),
                                                   "WATCHDOG_USEC": "400000"})
        d.start(wait=False)
        seen: list[str] = []

        def receive_until(state: str) -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                message = sock.recv(4096).decode()
                seen.append(message)
                if state in message.splitlines():
                    return
            pytest.fail(f"no {state} in {seen}")

        receive_until("READY=1")
        assert d.get("/healthz")[0] == 200  # READY comes after the listener is up
        receive_until("WATCHDOG=1")
        receive_until("WATCHDOG=1")
        d.send(signal.SIGHUP)
        receive_until("RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") for line in seen[-1].splitlines())
        receive_until("READY=1")
        d.send(signal.SIGTERM)
        receive_until("STOPPING=1")
        assert d.stop() == 0
    address.unlink()
    sock_dir.rmdir()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _storm(start: int, n: int) -> tuple[list[str], list[str]]:
    """nginx and uWSGI incident lines, each with its own URI, Host, client and upstream port."""
    nginx, uwsgi = [], []
    for i in range(start, start + n):
        client = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        nginx.append(
            f"2024/05/01 10:00:00 [error] 812#812: *{i} upstream timed out (110: Connection "
            f"timed out) while reading response header from upstream, client: {client}, "
            f'server: shop.example.net, request: "GET /item/{i}?session={i:x} HTTP/1.1", '
            f'upstream: "http://127.0.0.1:{1024 + i % 60000}/item/{i}", '
            f'host: "h{i}.example.net", referrer: "https://r{i}.example/?q={i}"')
        uwsgi.append(
            f"uwsgi_response_write_body_do(): Broken pipe [core/writer.c line 429] during "
            f"GET /export/{i}?t={i} ({client})" if i % 2 else
            f"invalid request block size: {4097 + i % 20000} (max 4096)...skip")
    return nginx, uwsgi


def test_cardinality_and_memory_stay_flat_under_attacker_chosen_values(
        tmp_path: Path, daemon_factory: Any) -> None:
    logs = log_paths(tmp_path, ("nginx", "uwsgi"))
    # no nginx configuration: every upstream label is "other", whatever this host runs
    d = daemon_factory(config_text(logs, start_at="beginning") + '[servers]\nnginx_conf = ""\n')
    d.start()
    timeout_key, broken_pipe = ("upstream_timeout", "nginx"), ("client_disconnect", "uwsgi")

    def feed(start: int, n: int) -> None:
        nginx, uwsgi = _storm(start, n)
        append(logs["nginx"], nginx)
        append(logs["uwsgi"], uwsgi)
        # both logs read (in either order: a pass takes up to 16 MiB of each file in turn)
        d.wait_for(lambda: (found := incidents(d.metrics()))[timeout_key] == start + n
                   and found[broken_pipe] == (start + n) // 2,
                   f"{start + n} timeouts and {(start + n) // 2} broken pipes", timeout=60)

    feed(0, 20_000)  # warm up: caches, evidence tables, allocator arenas
    series_before = set(d.metrics())
    rss_before = _rss_kib(d.pid)
    started = time.monotonic()
    feed(20_000, 100_000)
    elapsed = time.monotonic() - started
    samples = d.metrics()
    rss_after = _rss_kib(d.pid)
    gw502d_series = {k for k in samples if k[0].startswith("gw502d_")}
    print(f"\ncardinality: {len(gw502d_series)} gw502d series, {len(samples)} in all; "
          f"RSS {rss_before} KiB -> {rss_after} KiB; 200,000 lines in {elapsed:.1f} s")
    # The same series as before; remediation_info keeps one per pair, and one per pair and
    # upstream seen (its text follows the most common evidence, so it is compared by number
    # only). The storm's upstreams are no peer of nginx's configuration: all "other".
    infos = ("gw502d_remediation_info", "gw502d_upstream_remediation_info")
    assert len(samples) == len(series_before)
    assert ({k for k in samples if k[0] not in infos}
            == {k for k in series_before if k[0] not in infos})
    assert len(series(samples, "gw502d_remediation_info")) == len(CATALOG.keys)
    upstream_fixes = series(samples, "gw502d_upstream_remediation_info")
    assert {dict(labels)["upstream"] for labels in upstream_fixes} == {"other"}
    assert incidents(samples)[broken_pipe] == 60_000
    assert rss_after - rss_before < 8 * 1024, (rss_before, rss_after)
    for labels in [*series(samples, "gw502d_remediation_info"), *upstream_fixes]:
        text = dict(labels)["remediation"]
        assert not re.search(r"\b10\.\d+\.\d+\.\d+|example|/item/|/export/", text), text
    assert d.stop() == 0


def test_health_says_when_the_daemon_cannot_do_its_job(tmp_path: Path,
                                                      daemon_factory: Any) -> None:
    """No configured log can be followed, or state cannot be saved: 503 with the reason,
    and a metric says how many configured logs are followed."""
    missing = tmp_path / "later.log"
    d = daemon_factory(config_text({"nginx": missing}))
    d.start(wait=False)
    d.wait_for(lambda: d.get("/healthz")[0] == 503, "/healthz 503")
    assert "no configured log is being followed" in d.get("/healthz")[1]
    assert d.metrics()[("gw502d_logs_followed", frozenset())] == 0
    missing.write_text("")
    d.wait_for(lambda: d.get("/healthz")[0] == 200, "/healthz 200 once the log appears")
    assert d.metrics()[("gw502d_logs_followed", frozenset())] == 1
    assert d.stop() == 0

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the state directory should be")
    log = tmp_path / "app.log"
    log.write_text("")
    e = daemon_factory(config_text({"nginx": log}), args=("--state-dir", str(blocked)))
    e.start(wait=False)
    e.wait_for(lambda: "cannot save state" in e.get("/healthz")[1], "/healthz says why")
    assert e.get("/healthz")[0] == 503
    assert e.stop() == 0


def test_a_path_with_a_nul_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('state_dir = "/var/lib/gw\\u0000x"\n[[log]]\npath = "/a.log"\n')
    result = subprocess.run([sys.executable, "-m", "gw502d", "check-config", str(config)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "state_dir" in result.stderr
