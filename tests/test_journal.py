"""The journal source against real journal files and the real journalctl (no systemd runs).

Journal files are written by ``systemd-journal-remote`` (tests/servers/journal.py); the
messages are the catalog's ``real:`` lines, written by uWSGI and gunicorn in
tests/test_real_servers.py. The torture test runs the follower in a child,
``python tests/test_journal.py follow CONFIG`` (see ``follow_main``), and SIGKILLs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gw502d.source.journal import (
    HEAD,
    PERMISSION_HINT,
    JournalError,
    JournalFollower,
    JournalReader,
    _Decoder,
    _output_args,
    check,
)
from gw502d.source.spec import JournalSpec
from gw502d.source.state import State, StateFile
from tests.servers.journal import (
    JOURNAL_REMOTE,
    JournalWriter,
    cmdline,
    export_entry,
    kill_quietly,
    real_lines,
    torture_run,
)

ROOT = Path(__file__).resolve().parents[1]
UWSGI_LINES = [line.encode() for line in real_lines("uwsgi")]
GUNICORN_LINES = [line.encode() for line in real_lines("gunicorn")]


class Sink:
    """An on_records callback that keeps (line, time, tag) and lets a test wait for them."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, float, str]] = []
        self.calls = 0
        self.cond = threading.Condition()

    def __call__(self, spec: JournalSpec, lines: list[bytes], times: list[float],
                 tags: list[str]) -> None:
        assert len(lines) == len(times) == len(tags)
        with self.cond:
            self.got.extend(zip(lines, times, tags, strict=True))
            self.calls += 1
            self.cond.notify_all()

    @property
    def lines(self) -> list[bytes]:
        with self.cond:
            return [line for line, _, _ in self.got]

    def wait(self, n: int, timeout: float = 20.0) -> list[bytes]:
        """The lines once there are at least ``n`` (AssertionError quoting them if not)."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.got) >= n, timeout):
                raise AssertionError(f"{len(self.got)} of {n} lines after {timeout}s: "
                                     f"{[x[0] for x in self.got[-5:]]}")
        return self.lines


def wait_until(cond: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.02)


@contextlib.contextmanager
def following(spec: JournalSpec, sink: Sink, *, cursor: str | None = None,
              **kw: Any) -> Iterator[JournalFollower]:
    """A follower running in a thread for the ``with`` block, stopped (and joined) after."""
    j = JournalFollower(spec, sink, **kw)
    j.restore(cursor)
    stop = threading.Event()
    t = threading.Thread(target=j.run, args=(stop,), name="journal")
    t.start()
    try:
        yield j
    finally:
        stop.set()
        j.wake()
        t.join(timeout=10)
        assert not t.is_alive()
        assert j.pid is None


def seq(n: int, start: int = 0) -> list[str]:
    return [f"seq {i}" for i in range(start, start + n)]


def cursor_after(spec: JournalSpec, sink: Sink, n: int) -> str | None:
    """Follow *spec* from its oldest entry until *sink* holds *n* lines; the cursor then."""
    with following(spec, sink, start_at="beginning") as j:
        sink.wait(n)
        return j.cursor


def test_follows_new_entries_of_a_unit_fast(tmp_path: Path) -> None:
    """Real uWSGI lines appended to the journal reach the callback as they were written,
    with the journal's time and the identifier; entries there before start are not read."""
    w = JournalWriter(tmp_path / "system.journal")
    w.append([w.entry("before start", unit="shop.service", ident="uwsgi")])
    sink = Sink()
    spec = JournalSpec("shop", "uwsgi", units=("shop",), directory=str(tmp_path))
    with following(spec, sink) as j:
        wait_until(lambda: j.pid is not None and j.cursor, what="journalctl started")
        assert j.cursor != HEAD  # at the end: the newest entry's cursor, saved at once
        delays = []
        for line in UWSGI_LINES:
            entry = w.entry(line, unit="shop.service", ident="uwsgi")
            w.append([entry])
            sink.wait(len(delays) + 1)
            delays.append(time.time() - int(entry["__REALTIME_TIMESTAMP"]) / 1e6)
        stats = j.stats()
    assert sink.lines == UWSGI_LINES
    assert {tag for _, _, tag in sink.got} == {"uwsgi"}
    assert all(abs(t - time.time()) < 60 for _, t, _ in sink.got)
    assert stats.records == len(UWSGI_LINES) and stats.lines == len(UWSGI_LINES)
    assert stats.bytes == sum(map(len, UWSGI_LINES))
    assert stats.last_record_age is not None and stats.restarts == 0 and stats.errors == 0
    assert max(delays) < 5.0, delays  # append -> callback, on a busy box (bench/ measures it)


def test_two_boots_and_a_second_file_are_read_in_order(tmp_path: Path) -> None:
    """``--merge``: without it, journalctl --follow shows only the newest boot."""
    w = JournalWriter(tmp_path / "system.journal")
    w.append([w.entry(line, unit="app.service") for line in seq(3)])
    w.new_boot()
    w.append([w.entry(line, unit="app.service") for line in seq(3, 3)])
    w.new_boot()
    w.append([w.entry(line, unit="app.service") for line in seq(2, 6)],
             path=tmp_path / "system@second.journal")
    sink = Sink()
    spec = JournalSpec("app", None, units=("app.service",), directory=str(tmp_path))
    with following(spec, sink, start_at="beginning"):
        got = sink.wait(8)
        w.new_boot()
        w.append([w.entry("seq 8", unit="app.service")])
        got = sink.wait(9)
    assert got == [s.encode() for s in seq(9)]


def test_messages_are_bytes_exactly(tmp_path: Path) -> None:
    """Non-UTF-8 and control bytes come as journalctl's arrays of byte values; a message
    with newlines gives one line each; a field given twice gives both values."""
    w = JournalWriter(tmp_path / "system.journal")
    messages: list[str | bytes] = [
        b"caf\xe9 latin-1 \xff\xfe",
        b"\x1b[31m127.0.0.1 - - [01/May/2024 10:00:00] \"GET / HTTP/1.1\" 500 -\x1b[0m",
        "caf\u00e9 utf-8 \u2713",
        "Traceback (most recent call last):\n  File \"app.py\", line 1\nValueError: x\n",
        "tab\there",
    ]
    w.append([w.entry(m, unit="app.service") for m in messages])
    sink = Sink()
    spec = JournalSpec("app", None, units=("app",), directory=str(tmp_path))
    with following(spec, sink, start_at="beginning") as j:
        got = sink.wait(7)
        stats = j.stats()
    assert got == [messages[0], messages[1], "café utf-8 ✓".encode(),
                   b"Traceback (most recent call last):", b'  File "app.py", line 1',
                   b"ValueError: x", b"tab\there"]
    assert stats.records == 5 and stats.lines == 7


def test_a_field_present_twice_gives_each_value(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path / "system.journal")
    entry = w.entry("one", unit="app.service")
    raw = tmp_path / "export"
    raw.write_bytes(export_entry(entry)[:-1] + b"MESSAGE=two\n\n")
    subprocess.run([JOURNAL_REMOTE, f"--output={w.path}", str(raw)], check=True,
                   capture_output=True)
    blocks = list(JournalReader(str(tmp_path)))
    assert [line for b in blocks for line in b.lines] == [b"one", b"two"]


def test_filters_by_unit_and_identifier(tmp_path: Path) -> None:
    """Units OR identifiers; a unit without a dot is a .service; other entries never come."""
    w = JournalWriter(tmp_path / "system.journal")
    entries = [
        w.entry(GUNICORN_LINES[0], unit="shop.service", ident="gunicorn"),
        w.entry("not ours", unit="cron.service", ident="CRON"),
        w.entry(GUNICORN_LINES[1], unit="api.service", ident="gunicorn"),
        w.entry("not ours either", unit="shop.socket"),
        w.entry(UWSGI_LINES[0], unit="blog.service", ident="uwsgi"),
    ]
    w.append(entries)
    sink = Sink()
    spec = JournalSpec("apps", None, units=("shop", "blog.service"), identifiers=("gunicorn",),
                       directory=str(tmp_path))
    with following(spec, sink, start_at="beginning") as j:
        sink.wait(3)
        w.append([w.entry("late, not ours", unit="cron.service"),
                  w.entry(UWSGI_LINES[1], unit="blog.service", ident="uwsgi")])
        got = sink.wait(4)
        time.sleep(0.3)
        assert j.stats().records == 4
    assert got == [GUNICORN_LINES[0], GUNICORN_LINES[1], UWSGI_LINES[0], UWSGI_LINES[1]]
    assert [tag for _, _, tag in sink.got] == ["gunicorn", "gunicorn", "uwsgi", "uwsgi"]


def test_a_new_journal_file_in_the_directory_is_followed(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path / "system.journal")
    w.append([w.entry("seq 0", unit="app.service")])
    sink = Sink()
    spec = JournalSpec("app", None, units=("app",), directory=str(tmp_path))
    with following(spec, sink, start_at="beginning"):
        sink.wait(1)
        w.append([w.entry("seq 1", unit="app.service")], path=tmp_path / "user-1000.journal")
        sink.wait(2)
        w.append([w.entry("seq 2", unit="app.service")])
        got = sink.wait(3)
    assert got == [s.encode() for s in seq(3)]


def test_resume_after_a_cursor_that_does_not_match_loses_nothing(tmp_path: Path) -> None:
    """The saved cursor is the journal's newest entry, not one of ours: 252's
    --after-cursor would skip our next entry here; the first one that matches must come.
    Resuming at one of our entries must not give it twice."""
    w = JournalWriter(tmp_path / "system.journal")
    w.append([w.entry("seq 0", unit="app.service"), w.entry("other", unit="cron.service")])
    spec = JournalSpec("app", None, units=("app",), directory=str(tmp_path))
    sink = Sink()
    with following(spec, sink) as j:
        wait_until(lambda: j.pid is not None, what="journalctl started")
        at_end = j.cursor
    assert at_end and not sink.lines  # started at the end: the cron entry's cursor
    w.append([w.entry(s, unit="app.service") for s in seq(2, 1)])
    with following(spec, sink, cursor=at_end) as j:
        sink.wait(2)
        resume_at = j.cursor
    w.append([w.entry("seq 3", unit="app.service")])
    with following(spec, sink, cursor=resume_at):
        got = sink.wait(3)
        time.sleep(0.3)
    assert sink.lines == got == [s.encode() for s in seq(3, 1)]


def test_journalctl_killed_under_the_follower_loses_nothing(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path / "system.journal")
    spec = JournalSpec("app", "gunicorn", units=("app",), directory=str(tmp_path))
    sink = Sink()
    n = 0
    with following(spec, sink, start_at="beginning") as j:
        for _ in range(3):
            wait_until(lambda: j.pid is not None, what="journalctl running")
            pid = j.pid
            assert pid is not None
            for _ in range(5):
                w.append([w.entry(s, unit="app.service") for s in seq(7, n)]
                         + [w.entry("noise", unit="cron.service")])
                n += 7
            sink.wait(n - 20)  # some read, some maybe not yet
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: j.problem == "journalctl exited: signal 9", what="the problem")
            wait_until(lambda: j.pid not in (None, pid), what="journalctl restarted")
        sink.wait(n)
        wait_until(lambda: j.problem is None, what="the restarted journalctl settled")
        stats = j.stats()
    assert sink.lines == [s.encode() for s in seq(n)]
    assert stats.restarts == 3 and stats.records == n


def test_vacuumed_past_the_cursor_is_reported_and_followed_from_the_oldest(
        tmp_path: Path) -> None:
    """``journalctl --vacuum-files`` deletes the archived file holding the saved cursor."""
    archived = tmp_path / f"system@{'a' * 32}-{1:016x}-{1:016x}.journal"
    w = JournalWriter(tmp_path / "system.journal")
    w.append([w.entry(s, unit="app.service") for s in seq(3)], path=archived)
    spec = JournalSpec("app", None, units=("app",), directory=str(tmp_path))
    sink = Sink()
    cursor = cursor_after(spec, sink, 3)
    w.append([w.entry(s, unit="app.service") for s in seq(3, 3)])
    with following(spec, sink, cursor=cursor) as j:  # nothing vacuumed: resumes
        sink.wait(6)
        cursor = j.cursor
        assert j.stats().vacuumed == 0
    w.append([w.entry(s, unit="app.service") for s in seq(2, 6)])
    subprocess.run(["journalctl", f"--directory={tmp_path}", "--vacuum-files=1"], check=True,
                   capture_output=True)
    assert not archived.exists()
    # The cursor of seq 5 is in system.journal, still there: no loss. Now lose one.
    (tmp_path / "system.journal").rename(archived)
    w.append([w.entry(s, unit="app.service") for s in seq(2, 8)])
    subprocess.run(["journalctl", f"--directory={tmp_path}", "--vacuum-files=1"], check=True,
                   capture_output=True)
    assert not archived.exists()
    sink2 = Sink()
    with capture_logs() as logs, following(spec, sink2, cursor=cursor) as j:
        got = sink2.wait(2)
        stats = j.stats()
    assert got == [b"seq 8", b"seq 9"]  # seq 6 and 7 were vacuumed before they were read
    assert stats.vacuumed == 1
    assert any("vacuumed" in e["event"] for e in logs)


def test_a_cursor_the_probe_misses_resumes_at_its_time_not_from_the_oldest(
        tmp_path: Path) -> None:
    """The probe once missed an entry that was there (the torture test, whose writer
    renames files as journald rotates): resuming from the oldest entry counted every entry
    again. Now the follower resumes at the cursor's own time: what came after it, once.
    The miss is injected (a journalctl that answers the probe with nothing); the following
    is the real journalctl's."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    w = JournalWriter(jdir / "system.journal")
    w.append([w.entry(s, unit="app.service") for s in seq(3)])
    spec = JournalSpec("app", None, units=("app",), directory=str(jdir))
    sink = Sink()
    cursor = cursor_after(spec, sink, 3)
    w.append([w.entry(s, unit="app.service") for s in seq(2, 3)])
    blind = tmp_path / "journalctl"
    blind.write_text('#!/bin/sh\ncase "$*" in *--cursor=*--lines=1*) exit 0;; esac\n'
                     'exec journalctl "$@"\n')
    blind.chmod(0o755)
    again = Sink()
    with capture_logs() as logs, following(spec, again, cursor=cursor,
                                           journalctl=[str(blind)]) as j:
        got = again.wait(2)
        time.sleep(0.5)  # nothing else comes: no entry before the cursor again
        stats = j.stats()
    assert again.lines == got == [b"seq 3", b"seq 4"]
    assert stats.vacuumed == 1
    assert any("gone" in e["event"] for e in logs)


def test_huge_messages_are_capped_and_memory_stays_bounded(tmp_path: Path) -> None:
    """A message longer than max_line is cut; one whose JSON is longer than the decoder
    keeps (8 * max_line + 64 KiB) is salvaged from its head and tail."""
    w = JournalWriter(tmp_path / "system.journal")
    big_text = "x" * 5000
    huge_bytes = b"\xff" + b"y" * 300_000  # an array of byte values, about 1.2 MB of JSON
    huge_text = "z" * 300_000
    wide = "\u00e9" * 900  # 900 characters, 1800 bytes: the cap counts bytes
    w.append([w.entry(big_text, unit="app.service"), w.entry(huge_bytes, unit="app.service"),
              w.entry(huge_text, unit="app.service"), w.entry(wide, unit="app.service"),
              w.entry("after", unit="app.service")])
    spec = JournalSpec("app", None, units=("app",), directory=str(tmp_path))
    sink = Sink()
    with following(spec, sink, start_at="beginning", max_line=1000) as j:
        got = sink.wait(5)
        stats = j.stats()
    assert got == [b"x" * 1000, huge_bytes[:1000], b"z" * 1000, wide.encode()[:1000], b"after"]
    assert stats.long_lines == 4 and stats.records == 5 and stats.errors == 0
    assert [tag for _, _, tag in sink.got] == ["app.service"] * 5
    reader = JournalReader(str(tmp_path), max_line=1000)
    assert [line for b in reader for line in b.lines] == got
    assert reader.long_lines == 4
    # In 4 KiB pieces both huge records span reads: only their head and tail are kept.
    out = subprocess.run(["journalctl", f"--directory={tmp_path}", *_output_args()],
                         capture_output=True, check=True).stdout
    decoder = _Decoder(1000)
    pieces = [decoder.feed(out[i:i + 4096]) for i in range(0, len(out), 4096)]
    assert [line for b in pieces for line in b.lines] == got
    assert sum(b.records for b in pieces) == 5 and not any(b.errors for b in pieces)


def test_problems_are_named(tmp_path: Path) -> None:
    """journalctl missing, no permission, no journal files: /healthz can say which."""
    spec = JournalSpec("app", None, units=("app",), directory=str(tmp_path))
    sink = Sink()
    with following(spec, sink, journalctl=["/nonexistent/journalctl"]) as j:
        wait_until(lambda: j.problem, what="a problem")
        assert "journalctl not found" in str(j.problem)
    with following(spec, sink) as j:  # an empty directory: journalctl waits silently
        wait_until(lambda: j.problem, what="a problem")
        assert j.problem == f"no journal files in {tmp_path}"
        w = JournalWriter(tmp_path / "system.journal")
        w.append([w.entry("hello", unit="app.service")])
        sink.wait(1)
        wait_until(lambda: j.problem is None, what="problem cleared")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    w = JournalWriter(locked / "system.journal")
    w.append([w.entry("secret", unit="app.service")])
    (locked / "system.journal").chmod(0o600)
    if os.geteuid() == 0:  # root reads anything: run journalctl as nobody
        jctl = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "journalctl"]
    else:
        (locked / "system.journal").chmod(0)
        jctl = ["journalctl"]
    spec = JournalSpec("app", None, units=("app",), directory=str(locked))
    with following(spec, sink, journalctl=jctl) as j:
        wait_until(lambda: j.problem, what="a problem")
        assert str(j.problem).startswith(PERMISSION_HINT), j.problem
        assert j.stats().errors >= 1
    assert sink.lines == [b"hello"]
    # check-config asks the same questions once, without following
    assert str(check(spec, journalctl=jctl)).startswith(PERMISSION_HINT)
    assert check(spec) is None
    (tmp_path / "none").mkdir()
    assert check(JournalSpec("app", None, directory=str(tmp_path / "none"))) == (
        f"no journal files in {tmp_path / 'none'}")
    assert check(JournalSpec("app", None, directory=str(tmp_path / "gone"))) == (
        f"Failed to open {tmp_path / 'gone'}: No such file or directory (status 1)")
    assert check(spec, journalctl=["/nonexistent/journalctl"]) == (
        "journalctl not found (/nonexistent/journalctl): install systemd")


def test_reader_reads_a_directory_or_a_file_to_its_end(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path / "system.journal")
    w.append([w.entry(line, unit="shop.service", ident="uwsgi") for line in UWSGI_LINES])
    w.new_boot()
    w.append([w.entry(line, unit="api.service", ident="gunicorn") for line in GUNICORN_LINES],
             path=tmp_path / "system@2.journal")
    for path in (tmp_path, tmp_path / "system@2.journal"):
        reader = JournalReader(str(path))
        blocks = list(reader)
        lines = [line for b in blocks for line in b.lines]
        times = [t for b in blocks for t in b.times]
        expected = UWSGI_LINES + GUNICORN_LINES if path == tmp_path else GUNICORN_LINES
        assert lines == expected
        assert times == sorted(times) and len(times) == len(lines)
        assert reader.records == len(expected) and reader.errors == 0
    with pytest.raises(JournalError, match=r"^/nonexistent: cannot read journal: "):
        list(JournalReader("/nonexistent"))


def test_a_malformed_saved_cursor_is_ignored(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path / "system.journal")
    w.append([w.entry("old", unit="app.service")])
    sink = Sink()
    spec = JournalSpec("app", None, units=("app",), directory=str(tmp_path))
    with capture_logs() as logs, following(spec, sink, cursor="s=garbage") as j:
        wait_until(lambda: j.pid is not None, what="journalctl running")
        w.append([w.entry("new", unit="app.service")])
        assert sink.wait(1) == [b"new"]  # started at the end, as without a saved cursor
    assert any("malformed" in e["event"] for e in logs)


# -- the torture test: SIGKILLs of a process using the follower, during appends ----------------


@pytest.mark.slow
def test_torture_sigkills_during_appends_count_every_entry_once(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A writer appends numbered entries of our unit between other units' entries, in
    batches, sometimes after a rotation (as journald's) or in a new boot; a child follows
    them and saves its count with the cursor (atomically, like the daemon's snapshot) while
    it is SIGKILLed at random moments and restarted from its snapshot. At the end the
    child has seen each number exactly once, in order. About 10 s by default; 60 s with
    ``-m slow``."""
    seconds, seed, rng = torture_run(request.config.getoption("markexpr"), 10.0)
    jdir = tmp_path / "journal"
    jdir.mkdir()
    cfg = {"directory": str(jdir), "state_dir": str(tmp_path / "state")}
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    w = JournalWriter(jdir / "system.journal")
    # The first start is at the end, on another unit's entry (252's --after-cursor trap).
    w.append([w.entry("before the first start", unit="app.service"),
              w.entry("noise", unit="cron.service")])

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, __file__, "follow", str(cfg_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})

    state = StateFile(Path(cfg["state_dir"]))

    def saved() -> dict[str, Any]:
        s = state.load()
        return dict(s.extra) if s is not None else {}

    child = start()
    n = kills = 0
    files = 1
    schedule: list[tuple[int, str]] = []  # (a seq number, what happened there), for a failure
    try:
        wait_until(lambda: saved().get("cursor"), 30, "the child's first snapshot")
        child.kill()  # restarts at that cursor, with entries of ours after it already there
        child.wait()
        w.append([w.entry(f"seq {i}", unit="app.service") for i in range(5)])
        n = 5
        child = start()
        deadline = time.monotonic() + seconds
        next_kill = time.monotonic() + rng.uniform(0.2, 1.2)
        while time.monotonic() < deadline:
            first, batch = n, []
            for _ in range(rng.randint(1, 40)):
                if rng.random() < 0.3:
                    batch.append(w.entry("noise", unit="cron.service"))
                batch.append(w.entry(f"seq {n}", unit="app.service"))
                n += 1
            if rng.random() < 0.05:
                files += 1
                archive = w.rotate()
                schedule.append((first, f"seq {first}.. to a new file, {archive.name} archived"))
            if rng.random() < 0.03:
                w.new_boot()
                schedule.append((first, f"seq {first}.. in a new boot"))
            w.append(batch)
            if time.monotonic() >= next_kill:
                child.kill()
                child.wait()
                kills += 1
                schedule.append((n, f"SIGKILL after seq {n - 1} was written; restart from "
                                    f"the snapshot's next {saved().get('next')}"))
                child = start()
                next_kill = time.monotonic() + rng.uniform(0.2, 1.2)
        wait_until(lambda: saved().get("next") == n, 60, f"{n} entries counted (seed {seed})")
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 0
    finally:
        kill_quietly(child.pid if child.poll() is None else None)
    final = saved()
    print(f"torture: {n} entries, {kills} SIGKILLs, {files} files, seed {seed}")
    # what happened around a wrong number: the random schedule alone cannot replay it
    near = [what for at, what in schedule
            if any(abs(at - expected) <= 100 for expected, _ in final["bad"][:3])]
    assert final["bad"] == [], f"seed {seed}: {final['bad'][:10]}; around them: {near}"
    assert final["next"] == n and kills >= 3, (final, n, kills, seed)
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and str(jdir).encode()
                 in cmdline(int(p))]
    for pid in leftovers:
        kill_quietly(int(pid))
    assert not leftovers, "journalctl outlived its killed parent"


def follow_main(config_path: str) -> None:
    """A tiny daemon: follow ``seq N`` entries of app.service, check each is the next
    number, and save that count with the cursor every 50 ms from another thread (as the
    daemon's file follower saves its snapshot), taken under the follower's lock."""
    cfg = json.loads(Path(config_path).read_text())
    state_file = StateFile(Path(cfg["state_dir"]))
    saved = state_file.load()
    extra = dict(saved.extra) if saved is not None else {}
    counts = {"next": int(extra.get("next", 0)), "bad": list(extra.get("bad", []))}

    def on_records(spec: JournalSpec, lines: list[bytes], times: list[float],
                   tags: list[str]) -> None:
        for line in lines:
            number = int(line.split()[1]) if line.startswith(b"seq ") else None
            if number is None:
                continue
            if number != counts["next"] and len(counts["bad"]) < 100:
                counts["bad"].append([counts["next"], number])
            counts["next"] = number + 1

    j = JournalFollower(JournalSpec("app", None, units=("app",), directory=cfg["directory"]),
                        on_records, start_at="end")
    j.restore(extra.get("cursor"))
    stop = threading.Event()

    def snapshot() -> None:
        with j.lock:
            doc = {"cursor": j.cursor, "next": counts["next"], "bad": list(counts["bad"])}
        state_file.save(State(extra=doc))

    def saver() -> None:
        while not stop.wait(0.05):
            snapshot()

    signal.signal(signal.SIGTERM, lambda *_: (stop.set(), j.wake()))
    t = threading.Thread(target=saver)
    t.start()
    j.run(stop)
    t.join()
    snapshot()


if __name__ == "__main__":
    {"follow": follow_main}[sys.argv[1]](sys.argv[2])
