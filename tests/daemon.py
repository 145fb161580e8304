"""A ``gw502d run`` process for tests, and the catalog's example lines to feed it.

The lines appended to the followed logs are the catalog's own examples that a server wrote
(``real:``) or that are built from its source (``source:``), so the expected counts come
from the pattern files, not from the code under test. Every daemon started here is stopped
by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gw502d.classify.catalog import load_catalog
from gw502d.classify.matcher import Classifier

ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog()
CLASSIFIER = Classifier(CATALOG)
Key = tuple[str, str]
# One log per family, and one without a family: the werkzeug lines go there, so the
# all-families classifier is exercised too.
LOGS = {"nginx": "nginx", "uwsgi": "uwsgi", "gunicorn": "gunicorn", "werkzeug": None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def example_lines(family: str, ends: _Consequences | None = None,
                  ) -> tuple[list[str], Counter[Key], Counter[Key]]:
    """(lines, expected incident counts, expected companion counts) for one family.

    Only examples a server wrote or its source shows; benign ones are mixed in and must
    count nowhere. *ends* carries what the lines fed before left to end (one per log).
    """
    lines: list[str] = []
    incidents: Counter[Key] = Counter()
    companions: Counter[Key] = Counter()
    fam = next(f for f in CATALOG.families if f.name == family)
    ends = ends if ends is not None else _Consequences()
    for entry in fam.incidents:
        for ex in entry.examples:
            if not ex.origin.startswith(("real:", "source:")):
                continue
            lines.append(ex.line)
            if ex.incident is None:
                continue
            key = (ex.incident, family)
            target = ends.of(entry, ex.line)
            if target is not None:  # the end of an event counted before: its companion
                companions[target] += 1
            elif entry.companion and ex.incident == entry.id:
                companions[key] += 1
            else:
                incidents[key] += 1
                ends.saw(entry, ex.line)
    lines += [ex.line for ex in fam.benign if ex.origin.startswith(("real:", "source:"))]
    return lines, incidents, companions


class _Consequences:
    """The catalog's ``consequence_of`` rule, replayed over example lines in feed order: a
    line that follows an incident it names, with the same facts, ends that incident (one
    line per event)."""

    def __init__(self) -> None:
        self._waiting: Counter[tuple[Key, tuple[Any, ...]]] = Counter()

    def saw(self, entry: Any, line: str) -> None:
        facts = CLASSIFIER.classify(line.encode()).facts  # type: ignore[union-attr]
        for other in CATALOG.incidents:
            for c in other.consequence_of:
                if (c.incident, other.source) == entry.key:
                    self._waiting[(entry.key, tuple(facts.get(n) for n in c.same))] += 1
                    return

    def of(self, entry: Any, line: str) -> Key | None:
        facts = CLASSIFIER.classify(line.encode()).facts  # type: ignore[union-attr]
        for c in entry.consequence_of:
            waiting = ((c.incident, entry.source), tuple(facts.get(n) for n in c.same))
            if self._waiting[waiting] > 0:
                self._waiting[waiting] -= 1
                return waiting[0]
        return None


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
    """One ``gw502d run`` (``python -m gw502d`` unless *command* says) in a directory of its
    own, stopped by PID."""

    def __init__(self, workdir: Path, config: str, *, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, scheme: str = "http",
                 command: Sequence[str] = (sys.executable, "-m", "gw502d"),
                 prefix: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.config_path = workdir / "gw502d.toml"
        self.config_path.write_text(config)
        self.state_dir = workdir / "state"
        self.port = free_port()
        self.args = args
        self.command = tuple(command)
        self.prefix = prefix  # a command that execs the daemon (cgroups, rlimits)
        self.env = {**os.environ, **(env or {})}
        self.scheme = scheme
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
                [*self.prefix, *self.command, "run", "--config", str(self.config_path),
                 "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(self.state_dir),
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


# What each fed log has left to end: a daemon's tally remembers it from block to block
# (and through its snapshot), so the expected counts of later feeds depend on it.
_ENDS: dict[Path, _Consequences] = {}


def feed_examples(logs: dict[str, Path], times: int = 1) -> tuple[Counter[Key], Counter[Key]]:
    """Append every family's example lines *times* times; the expected counts."""
    want: Counter[Key] = Counter()
    want_companions: Counter[Key] = Counter()
    for name, path in logs.items():
        ends = _ENDS.setdefault(path, _Consequences())
        for _ in range(times):
            lines, expected, companions = example_lines(name, ends)
            append(path, lines)
            want.update(expected)
            want_companions.update(companions)
    return want, want_companions


def expected_totals(want: Counter[Key]) -> dict[Key, float]:
    return {key: float(want.get(key, 0)) for key in CATALOG.keys}


def wait_counts(d: DaemonProcess, want: Counter[Key]) -> Samples:
    expected = expected_totals(want)
    d.wait_for(lambda: incidents(d.metrics()) == expected,
               f"incident counts {dict(want)}")
    return d.metrics()
