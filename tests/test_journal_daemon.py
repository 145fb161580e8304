"""``gw502d run`` and ``gw502d scan`` with journal sources: real journal files written by
``systemd-journal-remote``, the real journalctl, a real daemon process, real signals.

The entries are the catalog's own example lines (:mod:`tests.daemon`), so the expected
counts come from the pattern files; the torture test SIGKILLs the daemon while entries
and file lines are appended, and the counts must still be exact.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gw502d.export.metric_names import METRIC_NAMES
from tests.daemon import (
    ROOT,
    DaemonProcess,
    Key,
    _Consequences,
    append,
    example_lines,
    expected_totals,
    incidents,
    series,
    wait_counts,
)
from tests.servers.harness import (
    HARAKIRI_SLEEP,
    HARAKIRI_WAIT,
    Nginx,
    Uwsgi,
    make_workdir,
    wait_for_line,
)
from tests.servers.journal import (
    JournalStream,
    JournalWriter,
    StdoutPump,
    cmdline,
    journalctls,
    kill_quietly,
    torture_run,
)
from tests.servers.provoke import http_request, pass_block, status_of

UNIT = "shop.service"
# The journal identifier each family's service would log under (its tag names the family)
IDENTS = {"uwsgi": "uwsgi", "gunicorn": "gunicorn", "werkzeug": "flask"}


def journal_config(jdir: Path, nginx: Path | None = None, **settings: Any) -> str:
    """A gw502d.toml with a [[journal]] of UNIT in *jdir* (family from the tags) and,
    given *nginx*, its error log as a [[log]]."""
    out = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    out += ["[[journal]]", f"units = [{json.dumps(UNIT)}]", f"directory = {json.dumps(str(jdir))}",
            'name = "shop"']
    if nginx is not None:
        out += ["[[log]]", f"path = {json.dumps(str(nginx))}", 'family = "nginx"', 'name = "nginx"']
    return "\n".join(out) + "\n"


class Feeder:
    """Appends every family's example lines, the backends' to the journal (as UNIT, with
    each family's identifier, other units' entries between them) and nginx's to its file;
    keeps the expected counts, consequences included, across feeds."""

    def __init__(self, w: JournalWriter, nginx: Path | None = None) -> None:
        self.w = w
        self.nginx = nginx
        self.want: Counter[Key] = Counter()
        self.companions: Counter[Key] = Counter()
        self.entries = 0  # of UNIT
        self.noise = 0  # of other units
        self.messages: list[str] = []  # every entry's, in journal order
        self._ends = {family: _Consequences() for family in [*IDENTS, "nginx"]}

    def feed(self, families: tuple[str, ...] = tuple(IDENTS), *, nginx: bool = True) -> None:
        entries: list[dict[str, str | bytes]] = []
        for family in families:
            lines, want, companions = example_lines(family, self._ends[family])
            for line in lines:
                entries.append(self.w.entry(line, unit=UNIT, ident=IDENTS[family]))
                if len(entries) % 7 == 0:
                    entries.append(self.w.entry("CRON[9]: noise", unit="cron.service"))
                    self.noise += 1
            self.entries += len(lines)
            self.want += want
            self.companions += companions
        self.w.append(entries)
        self.messages += [str(e["MESSAGE"]) for e in entries]
        if nginx and self.nginx is not None:
            lines, want, companions = example_lines("nginx", self._ends["nginx"])
            append(self.nginx, lines)
            self.want += want
            self.companions += companions


def journal_value(samples: Any, name: str, log: str = "shop") -> float:
    return float(samples[(name, frozenset({("log", log)}))])


def companions_of(samples: Any) -> dict[Key, float]:
    return {(dict(k)["incident"], dict(k)["source"]): v
            for k, v in series(samples, "gw502d_companion_lines_total").items() if v}


def children(d: DaemonProcess, jdir: Path) -> list[int]:
    """The journalctl --follow the daemon runs for *jdir* (not its short probes)."""
    return [p for p in journalctls(jdir) if _parent(p) == d.pid and b"--follow\0" in cmdline(p)]


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


@pytest.fixture
def jdir(tmp_path: Path) -> Any:
    """A journal directory with one entry of another unit (so journalctl has a file)."""
    d = tmp_path / "journal"
    d.mkdir()
    w = JournalWriter(d / "system.journal")
    w.append([w.entry("before start", unit="cron.service")])
    yield d
    for pid in journalctls(d):  # of a SIGKILLed daemon
        kill_quietly(pid)


def test_journal_entries_are_counted_paired_saved_and_exported(
        tmp_path: Path, jdir: Path, daemon_factory: Any) -> None:
    nginx = tmp_path / "error.log"
    nginx.touch()
    w = JournalWriter(jdir / "system.journal")
    feeder = Feeder(w, nginx)
    d = daemon_factory(journal_config(jdir, nginx, start_at="beginning"))
    d.start()
    feeder.feed()
    samples = wait_counts(d, feeder.want)
    assert companions_of(samples) == dict(feeder.companions)
    names = {name for name, _ in samples if name.startswith("gw502d_")}
    assert names == METRIC_NAMES
    assert journal_value(samples, "gw502d_journal_records_total") == feeder.entries
    assert journal_value(samples, "gw502d_journal_errors_total") == 0
    assert abs(journal_value(samples, "gw502d_journal_last_record_timestamp_seconds")
               - time.time()) < 60
    assert samples[("gw502d_journals_configured", frozenset())] == 1
    assert samples[("gw502d_journals_followed", frozenset())] == 1
    assert samples[("gw502d_unparsed_lines_total", frozenset({("log", "shop")}))] == 0
    assert d.get("/healthz")[:2] == (200, "ok\n")
    status, body, _ = d.get("/incidents?limit=500")
    logs = {(r["log"], r["source"]) for r in json.loads(body)["incidents"]}
    assert {("shop", "uwsgi"), ("shop", "gunicorn"), ("nginx", "nginx")} <= logs

    # a restart continues at the saved cursor: nothing counted twice, nothing lost
    assert d.stop() == 0
    feeder.feed()
    d.start()
    wait_counts(d, feeder.want)

    # journalctl killed under the daemon: restarted at its cursor, counts stay exact
    for n in (1, 2):
        d.wait_for(lambda: len(children(d, jdir)) == 1, "journalctl running")
        (pid,) = children(d, jdir)
        os.kill(pid, signal.SIGKILL)
        feeder.feed(("uwsgi",), nginx=False)
        d.wait_for(lambda n=n: journal_value(d.metrics(), "gw502d_journal_restarts_total") >= n,
                   "journalctl restarted")
    samples = wait_counts(d, feeder.want)
    assert companions_of(samples) == dict(feeder.companions)
    assert journal_value(samples, "gw502d_journal_restarts_total") == 2
    d.wait_for(lambda: d.get("/healthz")[0] == 200, "healthy again")
    assert d.stop() == 0


def test_healthz_names_a_journal_that_cannot_be_read(tmp_path: Path,
                                                     daemon_factory: Any) -> None:
    """No journal files yet, journalctl missing: /healthz says which source and why; a
    journal source alone counts as followed (no [[log]] needed)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    d = daemon_factory(journal_config(empty))
    d.start(wait=False)
    d.wait_for(lambda: "no journal files" in d.get("/healthz")[1], "the problem on /healthz")
    status, body, _ = d.get("/healthz")
    assert (status, body) == (503, f"journal source 'shop' cannot be followed: no journal "
                                   f"files in {empty}\n")
    w = JournalWriter(empty / "system.journal")
    w.append([w.entry("hello", unit=UNIT)])
    # journalctl looks for files again within 30 s (the follower's check interval)
    d.wait_for(lambda: d.get("/healthz")[0] == 200, "the journal found", timeout=45)
    assert d.metrics()[("gw502d_journals_followed", frozenset())] == 1
    assert d.stop() == 0

    bin_dir = tmp_path / "bin"  # a PATH without journalctl
    bin_dir.mkdir()
    (tmp_path / "d2").mkdir()
    d2 = DaemonProcess(tmp_path / "d2", journal_config(empty), env={"PATH": str(bin_dir)})
    with d2:
        d2.start(wait=False)
        # until its first try to start journalctl, the source is only "starting"
        d2.wait_for(lambda: "journal source" in d2.get("/healthz")[1], "the journal's 503")
        status, body, _ = d2.get("/healthz")
        assert status == 503
        assert body == ("journal source 'shop' cannot be followed: journalctl not found "
                        "(journalctl): install systemd\n")
        assert d2.metrics()[("gw502d_journals_followed", frozenset())] == 0
        assert d2.stop() == 0


def test_reload_adds_changes_and_removes_journal_sources(tmp_path: Path, jdir: Path,
                                                         daemon_factory: Any) -> None:
    w = JournalWriter(jdir / "system.journal")
    block = "invalid request block size: 4363 (max 4096)...skip"  # uWSGI's own words
    d = daemon_factory(journal_config(jdir))
    d.start()
    key = ("request_block_too_big", "uwsgi")
    w.append([w.entry(block, unit=UNIT, ident="uwsgi"),
              w.entry(block, unit="blog.service", ident="uwsgi")])
    d.wait_for(lambda: incidents(d.metrics())[key] == 1, "shop's entry")
    # a second source, and shop now matches by identifier instead of unit
    d.config_path.write_text(journal_config(jdir).replace(
        f'units = ["{UNIT}"]', 'identifiers = ["uwsgi-shop"]')
        + f'[[journal]]\nunits = ["blog"]\ndirectory = "{jdir}"\nname = "blog"\n')
    d.send(signal.SIGHUP)
    d.wait_for(lambda: d.metrics()[("gw502d_journals_followed", frozenset())] == 2,
               "two journal sources followed")
    w.append([w.entry(block, unit="other.service", ident="uwsgi-shop"),
              w.entry(block, unit="blog.service", ident="uwsgi")])
    # shop went on from its cursor: the first blog entry, written before the reload, is
    # not shop's (and blog started at the journal's end)
    d.wait_for(lambda: incidents(d.metrics())[key] == 3, "both sources' new entries")
    samples = d.metrics()
    assert journal_value(samples, "gw502d_journal_records_total", "blog") == 1
    d.config_path.write_text(f'[[journal]]\nunits = ["blog"]\ndirectory = "{jdir}"\n'
                             'name = "blog"\n')
    d.send(signal.SIGHUP)
    d.wait_for(lambda: d.metrics()[("gw502d_journals_configured", frozenset())] == 1,
               "one journal source")
    assert ("gw502d_journal_records_total", frozenset({("log", "shop")})) not in d.metrics()
    w.append([w.entry(block, unit="x.service", ident="uwsgi-shop"),
              w.entry(block, unit="blog.service", ident="uwsgi")])
    d.wait_for(lambda: journal_value(d.metrics(), "gw502d_journal_records_total", "blog") == 2,
               "blog's entry")
    time.sleep(0.5)
    assert incidents(d.metrics())[key] == 4
    assert len(children(d, jdir)) == 1
    assert d.stop() == 0


def test_journal_unit_flag_follows_the_hosts_journal(tmp_path: Path,
                                                     daemon_factory: Any) -> None:
    d = daemon_factory('[[log]]\npath = "/nonexistent/error.log"\n',
                       args=("--journal-unit", "shop"))
    d.start(wait=False)
    d.wait_for(lambda: d.get("/healthz")[0] in (200, 503), "/healthz")
    d.wait_for(lambda: ("gw502d_journals_configured", frozenset()) in d.metrics(), "metrics")
    samples = d.metrics()
    assert samples[("gw502d_journals_configured", frozenset())] == 1
    assert ("gw502d_journal_records_total", frozenset({("log", "shop.service")})) in samples
    status, body, _ = d.get("/healthz")
    assert status == 200 or "'shop.service'" in body, body
    d.wait_for(lambda: any(e.get("event") == "started" for e in d.events()), "started")
    started = next(e for e in d.events() if e.get("event") == "started")
    assert started["journals"] == ["shop.service"]
    assert d.stop() == 0


def test_scan_reads_journals_with_their_times(tmp_path: Path, jdir: Path) -> None:
    w = JournalWriter(jdir / "system.journal")
    feeder = Feeder(w)
    feeder.feed()
    out = subprocess.run([sys.executable, "-m", "gw502d", "scan", "--format", "json",
                          "--journal", str(jdir)], capture_output=True, timeout=60, check=True,
                         cwd=ROOT)
    summary = json.loads(out.stdout)
    counts = {(i, s): n for i, by in summary["counts"].items() for s, n in by.items()}
    assert counts == expected_totals(feeder.want)
    assert summary["files"] == [str(jdir)]
    assert summary["lines"] == 1 + feeder.entries + feeder.noise  # every entry of the journal
    out = subprocess.run([sys.executable, "-m", "gw502d", "scan", "--format", "jsonl",
                          "--journal", str(jdir / "system.journal"), "--journal",
                          str(tmp_path / "nowhere")], capture_output=True, timeout=60,
                         check=False, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.decode().startswith(f"gw502d scan: {tmp_path / 'nowhere'}: cannot read "
                                          "journal: ")
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r.pop("path") for r in records} == {str(jdir / "system.journal")}
    # the same lines in a file give the same occurrences, line numbers included
    same = tmp_path / "same.log"
    append(same, ["before start", *feeder.messages])
    out = subprocess.run([sys.executable, "-m", "gw502d", "scan", "--format", "jsonl",
                          str(same)], capture_output=True, timeout=60, check=True, cwd=ROOT)
    from_file = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r.pop("path") for r in from_file} == {str(same)}
    assert records == from_file and len(records) >= sum(feeder.want.values())


# -- the torture test: SIGKILLs of the daemon during appends --------------------------------


@pytest.mark.slow
def test_torture_sigkills_during_appends_count_every_line_once(
        tmp_path: Path, jdir: Path, request: pytest.FixtureRequest) -> None:
    """A writer appends the catalog's example lines to the journal (in batches, between
    other units' entries, sometimes after a rotation or as a new boot) and nginx's to its
    error log, while the daemon is SIGKILLed at random moments and started again; at the
    end every incident and companion count is exact. About 20 s; ``GW502D_TORTURE_SECONDS``
    sets it."""
    seconds, seed, rng = torture_run(request.config.getoption("markexpr"), 20.0)
    nginx = tmp_path / "error.log"
    nginx.touch()
    w = JournalWriter(jdir / "system.journal")
    feeder = Feeder(w, nginx)
    d = DaemonProcess(tmp_path, journal_config(jdir, nginx, start_at="beginning"))
    kills = files = 0
    with d:
        d.start()
        deadline = time.monotonic() + seconds
        next_kill = time.monotonic() + rng.uniform(0.5, 2.5)
        while time.monotonic() < deadline or kills < 3:  # a slow box still gets three
            families = tuple(f for f in IDENTS if rng.random() < 0.6) or ("uwsgi",)
            if rng.random() < 0.05:
                files += 1
                w.rotate()
            if rng.random() < 0.03:
                w.new_boot()
            feeder.feed(families, nginx=rng.random() < 0.5)
            if time.monotonic() >= next_kill:
                d.kill()
                kills += 1
                d.start(wait=rng.random() < 0.5)
                next_kill = time.monotonic() + rng.uniform(0.5, 2.5)
            time.sleep(rng.uniform(0, 0.2))
        d.wait_for(lambda: d.get("/healthz")[0] == 200, "/healthz to answer 200")
        want = expected_totals(feeder.want)
        try:
            d.wait_for(lambda: incidents(d.metrics()) == want,
                       f"exact counts after {kills} SIGKILLs (seed {seed})", timeout=60)
        except BaseException:
            got = incidents(d.metrics())
            print({k: (got[k], want[k]) for k in want if got[k] != want[k]})
            raise
        samples = d.metrics()
        assert companions_of(samples) == dict(feeder.companions), f"seed {seed}"
        assert d.stop() == 0
    print(f"daemon torture: {feeder.entries} entries, {kills} SIGKILLs, {files} new files, "
          f"seed {seed}")


# -- root causes across sources: a real uWSGI unit's journal and nginx's error log -----------


@pytest.mark.servers
def test_a_uwsgi_units_harakiri_pairs_with_nginx_live_and_in_a_scan(daemon_factory: Any) -> None:
    """uWSGI (harakiri 1) behind nginx, a request that runs 3 s: uWSGI's lines go to the
    journal as its unit's stdout would (stamped on arrival), nginx writes its error log.
    The daemon counts the harakiri once (the worker's death after it is its companion),
    pairs nginx's premature close with it by the records' journal times, and exports it;
    a scan of the same journal and error log finds the same."""
    work = make_workdir()
    try:
        jdir = work / "journal"
        jdir.mkdir()
        w = JournalWriter(jdir / "system.journal")
        w.append([w.entry("before start", unit="cron.service")])
        uw = Uwsgi(work, {"harakiri": 1})
        assert uw.port is not None
        nginx = Nginx(work, pass_block("uwsgi", uw.port))
        d = daemon_factory(journal_config(jdir, nginx.log_path))
        d.start()
        with JournalStream(w) as stream, \
                StdoutPump(uw.log_path, stream, unit=UNIT, ident="uwsgi") as pump, uw, nginx:
            assert status_of(http_request(nginx.port, HARAKIRI_SLEEP)) == 502
            wait_for_line(uw.log_path, "Respawned uWSGI worker", HARAKIRI_WAIT)
            wait_for_line(nginx.log_path, "prematurely closed", 3)
            d.wait_for(lambda: series(d.metrics(), "gw502d_root_causes_total")[frozenset(
                {("incident", "upstream_premature_close"), ("cause", "worker_harakiri")})] == 1,
                "the root cause")
        samples = d.metrics()
        counts = {k: v for k, v in incidents(samples).items() if v}
        assert counts == {("worker_harakiri", "uwsgi"): 1,
                          ("upstream_premature_close", "nginx"): 1}, counts
        # the worker's death (and uWSGI's other harakiri lines) are the harakiri's companions
        assert companions_of(samples)[("worker_harakiri", "uwsgi")] >= 1
        assert sum(series(samples, "gw502d_root_causes_total").values()) == 1
        fix = {dict(k)["incident"]: dict(k)["remediation"]
               for k in series(samples, "gw502d_remediation_info")}["upstream_premature_close"]
        assert "worker_harakiri" in fix and "harakiri" in fix
        d.wait_for(lambda: journal_value(d.metrics(), "gw502d_journal_records_total")
                   == len(pump.lines), "every uWSGI line")
        assert d.stop() == 0

        out = subprocess.run([sys.executable, "-m", "gw502d", "scan", "--format", "json",
                              "--journal", str(jdir), str(nginx.log_path)],
                             capture_output=True, timeout=60, check=True, cwd=ROOT)
        summary = json.loads(out.stdout)
        assert summary["root_causes"] == {"upstream_premature_close": {"worker_harakiri": 1}}
        assert summary["counts"]["worker_harakiri"]["uwsgi"] == 1
        assert summary["counts"]["worker_died"]["uwsgi"] == 0
    finally:
        for pid in journalctls(work):
            kill_quietly(pid)
        shutil.rmtree(work, ignore_errors=True)
