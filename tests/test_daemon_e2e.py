"""``gw502d run`` as systemd runs it: a real process, real files, real HTTP, real signals.

The lines appended to the followed logs are the catalog's own examples that a server wrote
(``real:``) or that are built from its source (``source:``), so the expected counts come
from the pattern files, not from the code under test. Every daemon started here is stopped
by its PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gw502d.classify.catalog import load_catalog
from gw502d.export.metric_names import METRIC_NAMES

ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog()
Key = tuple[str, str]
# One log per family, and one without a family: the werkzeug lines go there, so the
# all-families classifier is exercised too.
LOGS = {"nginx": "nginx", "uwsgi": "uwsgi", "gunicorn": "gunicorn", "werkzeug": None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def example_lines(family: str) -> tuple[list[str], Counter[Key], Counter[Key]]:
    """(lines, expected incident counts, expected companion counts) for one family.

    Only examples a server wrote or its source shows; benign ones are mixed in and must
    count nowhere.
    """
    lines: list[str] = []
    incidents: Counter[Key] = Counter()
    companions: Counter[Key] = Counter()
    fam = next(f for f in CATALOG.families if f.name == family)
    for entry in fam.incidents:
        for ex in entry.examples:
            if not ex.origin.startswith(("real:", "source:")):
                continue
            lines.append(ex.line)
            if ex.incident is not None:
                counts = companions if entry.companion and ex.incident == entry.id else incidents
                counts[(ex.incident, family)] += 1
    lines += [ex.line for ex in fam.benign if ex.origin.startswith(("real:", "source:"))]
    return lines, incidents, companions


def config_text(logs: dict[str, Path], **settings: Any) -> str:
    """A gw502d.toml with the given [[log]] files (name: path) and top-level settings."""
    out = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    for name, path in logs.items():
        family = LOGS.get(name)
        out += ["[[log]]", f"path = {json.dumps(str(path))}", f"name = {json.dumps(name)}"]
        if family is not None:
            out.append(f"family = {json.dumps(family)}")
    return "\n".join(out) + "\n"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class DaemonProcess:
    """One ``python -m gw502d run`` in a directory of its own, stopped by PID."""

    def __init__(self, workdir: Path, config: str, *, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, scheme: str = "http",
                 prefix: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.config_path = workdir / "gw502d.toml"
        self.config_path.write_text(config)
        self.state_dir = workdir / "state"
        self.port = free_port()
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.scheme = scheme
        self.prefix = prefix  # a command that execs the daemon (cgroups, rlimits)
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = workdir / "daemon.out"
        self.runs = 0

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        self.runs += 1
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "gw502d", "run",
                 "--config", str(self.config_path), "--listen", f"127.0.0.1:{self.port}",
                 "--state-dir", str(self.state_dir),
                 *self.args],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env)
        if wait:
            self.wait_for(lambda: self.get("/healthz")[0] == 200, "/healthz to answer 200")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the process and wait for it; its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"gw502d did not stop on signal {signum}:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.output.read_text(errors="replace")[-5000:]

    def events(self) -> list[dict[str, Any]]:
        """The JSON log events written so far (stdout is not a TTY: JSON lines)."""
        return [json.loads(line) for line in self.output.read_text().splitlines()
                if line.startswith("{")]

    def get(self, path: str, headers: dict[str, str] | None = None,
            context: Any = None) -> tuple[int, str, dict[str, str]]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), dict(exc.headers)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, "", {}

    def metrics(self) -> Samples:
        status, body, _ = self.get("/metrics")
        assert status == 200, body
        return parse_metrics(body)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"gw502d exited ({self.proc.returncode}) while waiting for {what}:"
                            f"\n{self.log_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}:\n{self.log_text()}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def make(config: str, **kwargs: Any) -> DaemonProcess:
        d = DaemonProcess(tmp_path, config, **kwargs)
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()


def incidents(samples: Samples) -> dict[Key, float]:
    return {(dict(labels)["incident"], dict(labels)["source"]): value
            for (name, labels), value in samples.items() if name == "gw502d_incidents_total"}


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def page_tags(page: str) -> set[str]:
    tags: set[str] = set()

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: Any) -> None:
            tags.add(tag)

    Parser().feed(page)
    return tags


def append(path: Path, lines: list[str]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def log_paths(tmp_path: Path, names: tuple[str, ...] = tuple(LOGS)) -> dict[str, Path]:
    paths = {name: tmp_path / f"{name}.log" for name in names}
    for path in paths.values():
        path.touch()
    return paths


def feed_examples(logs: dict[str, Path], times: int = 1) -> tuple[Counter[Key], Counter[Key]]:
    """Append every family's example lines *times* times; the expected counts."""
    want: Counter[Key] = Counter()
    want_companions: Counter[Key] = Counter()
    for name, path in logs.items():
        lines, expected, companions = example_lines(name)
        append(path, lines * times)
        for key, n in expected.items():
            want[key] += n * times
        for key, n in companions.items():
            want_companions[key] += n * times
    return want, want_companions


def expected_totals(want: Counter[Key]) -> dict[Key, float]:
    return {key: float(want.get(key, 0)) for key in CATALOG.keys}


def wait_counts(d: DaemonProcess, want: Counter[Key]) -> Samples:
    expected = expected_totals(want)
    d.wait_for(lambda: incidents(d.metrics()) == expected,
               f"incident counts {dict(want)}")
    return d.metrics()


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
    more, _ = feed_examples({"nginx": logs["nginx"]})
    want += more
    assert sum(want.values()) >= 40 and want_companions
    samples = wait_counts(d, want)

    names = {name for name, _ in samples if name.startswith("gw502d_")}
    assert names == METRIC_NAMES
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
    assert len(causes) == 21 and all(v >= 0 for v in causes.values())
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
    assert page_tags(page) <= {"html", "head", "meta", "title", "style", "body", "h1", "p",
                               "a", "table", "thead", "tbody", "tr", "th", "td"}

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
    d = daemon_factory(config_text(logs, start_at="beginning"))
    d.start()
    timeout_key = ("upstream_timeout", "nginx")

    def feed(start: int, n: int) -> None:
        nginx, uwsgi = _storm(start, n)
        append(logs["nginx"], nginx)
        append(logs["uwsgi"], uwsgi)
        d.wait_for(lambda: incidents(d.metrics())[timeout_key] == start + n,
                   f"{start + n} timeouts", timeout=60)

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
    # The same series as before; remediation_info keeps one per pair (its text follows
    # the most common evidence, so it is compared by number only).
    assert len(samples) == len(series_before)
    assert ({k for k in samples if k[0] != "gw502d_remediation_info"}
            == {k for k in series_before if k[0] != "gw502d_remediation_info"})
    assert len(series(samples, "gw502d_remediation_info")) == len(CATALOG.keys)
    assert incidents(samples)[("client_disconnect", "uwsgi")] == 60_000
    assert rss_after - rss_before < 8 * 1024, (rss_before, rss_after)
    for labels in series(samples, "gw502d_remediation_info"):
        text = dict(labels)["remediation"]
        assert not re.search(r"\b10\.\d+\.\d+\.\d+|example|/item/|/export/", text), text
    assert d.stop() == 0
