"""The follower against real files, real threads and real processes (no filesystem mocks).

Every behaviour is exercised while lines are being written. Tests that depend on how the
follower learns about a change run twice: with inotify and a stat check too slow to
matter (30 s, so only events can explain a timely result), and with stat polling only.

Processes: tests that need a different privilege or a crash run the follower in a child,
``python tests/test_follower.py follow CONFIG`` (see ``follow_main``); the torture test's
writer is ``python tests/test_follower.py write CONFIG`` (``write_main``).
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from gw502d.source.follower import Follower, LogStats
from gw502d.source.spec import LogSpec
from gw502d.source.state import STATE_FILE

ROOT = Path(__file__).resolve().parents[1]
MODES = [pytest.param(True, id="inotify"), pytest.param(False, id="poll")]


def interval(inotify: bool) -> float:
    """inotify runs get a stat check too slow to help; polling runs a fast one."""
    return 30.0 if inotify else 0.05


class Sink:
    """An on_lines callback that keeps (log, path, line) and lets a test wait for lines."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, bytes]] = []
        self.cond = threading.Condition()

    def __call__(self, spec: LogSpec, path: str, lines: list[bytes]) -> None:
        with self.cond:
            self.got.extend((spec.name, path, line) for line in lines)
            self.cond.notify_all()

    def lines(self) -> list[bytes]:
        with self.cond:
            return [line for _, _, line in self.got]

    def wait(self, n: int, timeout: float = 10.0) -> list[bytes]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= n, timeout), (
                f"{len(self.got)} of {n} lines: {self.got[-5:]}")
            return [line for _, _, line in self.got]


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what or pred}"
        time.sleep(0.005)


@contextmanager
def following(specs: list[LogSpec], sink: Sink, **kw: Any) -> Iterator[Follower]:
    kw.setdefault("state_dir", None)
    kw.setdefault("start_at", "beginning")
    f = Follower(specs, sink, **kw)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            f.run(stop)
        except BaseException as e:
            errors.append(e)
            raise

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_until(lambda: f.alive, what="loop start")
    try:
        yield f
    finally:
        stop.set()
        f.wake()
        t.join(15)
        assert not t.is_alive(), "run() did not return"
        assert not errors, errors


def saved_offsets(state_dir: Path) -> list[int] | None:
    try:
        doc = json.loads((state_dir / STATE_FILE).read_bytes())
    except FileNotFoundError:
        return None
    return [f["offset"] for f in doc["files"]]


def spec(path: Path, name: str = "app") -> LogSpec:
    return LogSpec(str(path), name, None)


def numbers(lines: list[bytes], tag: bytes) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.split(b" ", 1)[0] == tag]


def assert_exactly_once(got: list[int], n: int, what: str = "") -> None:
    counts = collections.Counter(got)
    dup = sorted(k for k, v in counts.items() if v > 1)
    missing = sorted(set(range(n)) - counts.keys())
    assert not dup and not missing and len(counts) == n, (
        f"{what}: {n} written, {len(dup)} duplicated {dup[:10]}, {len(missing)} missing "
        f"{missing[:10]}")


class Writer(threading.Thread):
    """Appends b"<tag> <n>" lines, one write() each, until stopped; rotates on request.

    Rotations take the write lock, so they are atomic with respect to the writes (as
    logrotate + a signalled server are, as far as lines go).
    """

    def __init__(self, path: Path, tag: bytes = b"w", pause: float = 0.0005) -> None:
        super().__init__(daemon=True)
        self.path, self.tag, self.pause = path, tag, pause
        self.lock = threading.Lock()
        self.n = 0
        self.fd = self._open()
        self.halt = threading.Event()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write_line(self, fd: int | None = None) -> None:
        os.write(self.fd if fd is None else fd, b"%s %d\n" % (self.tag, self.n))
        self.n += 1

    def run(self) -> None:
        while not self.halt.is_set():
            with self.lock:
                self.write_line()
            time.sleep(self.pause)

    def wait_lines(self, n: int) -> None:
        wait_until(lambda: self.n >= n, what=f"{n} written")

    def reopen(self, late: int) -> None:
        """After the path changed: `late` lines still go to the old file, then reopen."""
        for _ in range(late):
            self.write_line()
        old, self.fd = self.fd, self._open()
        os.close(old)

    def finish(self) -> int:
        self.halt.set()
        self.join()
        os.close(self.fd)
        return self.n


# -- appends, partial lines, start position ------------------------------------------------

@pytest.mark.parametrize("inotify", MODES)
def test_appends_and_partial_lines_with_a_safe_saved_offset(tmp_path: Path,
                                                            inotify: bool) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    sink = Sink()
    with following([spec(log)], sink, state_dir=tmp_path / "st", snapshot_interval=0.05,
                   stat_interval=interval(inotify), use_inotify=inotify) as f:
        with log.open("ab", buffering=0) as w:
            w.write(b"one\ntwo\nthr")
            assert sink.wait(2) == [b"one", b"two"]
            # The unfinished line is held and the saved offset stops at its start.
            wait_until(lambda: saved_offsets(tmp_path / "st") == [8], what="offset 8 saved")
            time.sleep(0.1)
            assert sink.lines() == [b"one", b"two"]
            w.write(b"ee\n")
            assert sink.wait(3) == [b"one", b"two", b"three"]
        wait_until(lambda: f.stats()["app"].offset == 14)
        s = f.stats()["app"]
        assert (s.lines, s.bytes, s.size, s.open_files, s.read_errors) == (3, 14, 14, 1, 0)


def test_start_at_end_skips_the_backlog_but_not_the_unfinished_line(tmp_path: Path) -> None:
    old, new_later = tmp_path / "old.log", tmp_path / "new.log"
    old.write_bytes(b"backlog 1\nbacklog 2\nhalf of a li")
    sink = Sink()
    with following([spec(old, "old"), spec(new_later, "new")], sink, start_at="end",
                    stat_interval=0.05, use_inotify=False) as f:
        wait_until(lambda: f.stats()["old"].open_files == 1)
        with old.open("ab") as w:
            w.write(b"ne\nfresh\n")
        new_later.write_bytes(b"created after start 1\ncreated after start 2\n")
        sink.wait(4)
    got = sorted(sink.got)
    assert [(n, line) for n, _, line in got] == [
        ("new", b"created after start 1"), ("new", b"created after start 2"),
        ("old", b"fresh"), ("old", b"half of a line")]


def test_start_at_beginning_reads_the_backlog(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\nb\n")
    sink = Sink()
    with following([spec(log)], sink, start_at="beginning", use_inotify=False,
                   stat_interval=0.05):
        assert sink.wait(2) == [b"a", b"b"]


@pytest.mark.parametrize("inotify", MODES)
def test_a_backlog_of_many_passes_is_read_without_waiting_for_the_next_look(
        tmp_path: Path, inotify: bool) -> None:
    """A pass reads 16 MiB of a file; what is already written brings no inotify event. A
    backlog of 40 MiB (a start from the beginning, a restart behind its offsets) is read on
    at once, not one pass per stat interval (a minute here: without the fix, the test waits
    for the second pass and times out)."""
    log = tmp_path / "app.log"
    line = b"x" * 99 + b"\n"
    n = (40 << 20) // len(line)
    log.write_bytes(line * n)
    sink = Sink()
    with following([spec(log)], sink, start_at="beginning", use_inotify=inotify,
                   stat_interval=60.0, sweep_interval=60.0):
        assert len(sink.wait(n, timeout=20.0)) == n


# -- rotation ------------------------------------------------------------------------------

@pytest.mark.parametrize("inotify", MODES)
def test_rename_and_create_keeps_reading_the_old_file(tmp_path: Path, inotify: bool) -> None:
    log = tmp_path / "error.log"
    sink = Sink()
    w = Writer(log)
    with following([spec(log)], sink, stat_interval=interval(inotify),
                   use_inotify=inotify) as f:
        w.start()
        for k in range(3):
            w.wait_lines(300 * (k + 1))
            with w.lock:
                os.rename(log, f"{log}.{k}")
                w.reopen(late=20)  # nginx writes to the renamed file until USR1
        w.wait_lines(1200)
        n = w.finish()
        wait_until(lambda: len(sink.lines()) >= n, what=f"{n} lines")
        assert f.stats()["app"].rotations == 3
        assert f.stats()["app"].open_files >= 2  # the rotated ones are drained a while
    assert_exactly_once(numbers(sink.lines(), b"w"), n, "rename+create")
    assert {p for _, p, _ in sink.got} == {str(log)}


@pytest.mark.parametrize("inotify", MODES)
def test_copytruncate_reads_the_rest_from_the_copy(tmp_path: Path, inotify: bool) -> None:
    log = tmp_path / "app.log"
    sink = Sink()
    w = Writer(log)
    with following([spec(log)], sink, stat_interval=interval(inotify),
                   use_inotify=inotify) as f:
        w.start()
        for k in range(3):
            w.wait_lines(400 * (k + 1))
            with w.lock:  # logrotate copytruncate: copy, then truncate in place
                shutil.copyfile(log, f"{log}.{k}")
                os.truncate(log, 0)
        w.wait_lines(1600)
        n = w.finish()
        wait_until(lambda: len(sink.lines()) >= n, what=f"{n} lines")
        s = f.stats()["app"]
    assert_exactly_once(numbers(sink.lines(), b"w"), n, "copytruncate")
    assert (s.truncations, s.lost_bytes, s.rotations) == (3, 0, 0)


def test_truncation_without_a_copy_counts_what_is_lost(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    sink = Sink()
    with following([spec(log)], sink, use_inotify=True, stat_interval=30.0) as f:
        with log.open("ab", buffering=0) as w:
            w.write(b"complete\nunfinished and then trunc")
            sink.wait(1)
            wait_until(lambda: f.stats()["app"].offset == 34)
            os.truncate(log, 0)
            w.write(b"after 1\nafter 2\n")
            assert sink.wait(3) == [b"complete", b"after 1", b"after 2"]
        s = f.stats()["app"]
        assert (s.truncations, s.lost_bytes) == (1, len(b"unfinished and then trunc"))


def test_truncated_and_regrown_past_the_offset_is_caught_by_the_fingerprint(
        tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"old 1\nold 2\n")
    sink = Sink()
    with following([spec(log)], sink, use_inotify=False, stat_interval=30.0) as f:
        sink.wait(2)
        # Replaced in place by more bytes than were read, before the follower looks again:
        # the size alone would say "appended"; the first bytes say "new content".
        with log.open("r+b") as w:
            w.truncate(0)
            w.write(b"".join(b"new %d\n" % i for i in range(10)))
        f.wake()
        got = sink.wait(12)
        assert got[2:] == [b"new %d" % i for i in range(10)]
        assert f.stats()["app"].truncations == 1


@pytest.mark.parametrize("inotify", MODES)
def test_delete_and_recreate(tmp_path: Path, inotify: bool) -> None:
    log = tmp_path / "app.log"
    sink = Sink()
    w = Writer(log)
    with following([spec(log)], sink, stat_interval=interval(inotify),
                   use_inotify=inotify) as f:
        w.start()
        for k in range(3):
            w.wait_lines(300 * (k + 1))
            with w.lock:
                log.unlink()
                w.reopen(late=10)  # lines to the deleted file, read through the open fd
        w.wait_lines(1200)
        n = w.finish()
        wait_until(lambda: len(sink.lines()) >= n, what=f"{n} lines")
        assert f.stats()["app"].rotations == 3
    assert_exactly_once(numbers(sink.lines(), b"w"), n, "delete+recreate")


@pytest.mark.parametrize("inotify", MODES)
def test_a_file_replaced_atomically_by_rename(tmp_path: Path, inotify: bool) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"first 0\n")
    sink = Sink()
    with following([spec(log)], sink, stat_interval=interval(inotify),
                   use_inotify=inotify) as f:
        sink.wait(1)
        with log.open("ab") as w:
            w.write(b"first 1\n")  # may or may not be read before the replace: never lost
            tmp = tmp_path / ".app.log.tmp"
            tmp.write_bytes(b"second 0\nsecond 1\n")
            os.replace(tmp, log)
            w.write(b"first 2\n")  # still to the replaced inode, read through its fd
        sink.wait(5)
        assert f.stats()["app"].rotations == 1
    got = sink.lines()
    assert sorted(got) == [b"first 0", b"first 1", b"first 2", b"second 0", b"second 1"]


@pytest.mark.parametrize("inotify", MODES)
def test_directory_moved_away_and_recreated(tmp_path: Path, inotify: bool) -> None:
    d = tmp_path / "nginx"
    d.mkdir()
    log = d / "error.log"
    sink = Sink()
    w = Writer(log)
    # A new directory is seen by the stat check only (its parent is not watched).
    with following([spec(log)], sink, stat_interval=0.2, use_inotify=inotify) as f:
        w.start()
        w.wait_lines(300)
        with w.lock:
            d.rename(tmp_path / "nginx.old")
            for _ in range(10):
                w.write_line()  # still into the moved directory's file
        time.sleep(0.3)
        with w.lock:
            d.mkdir()
            w.reopen(late=0)
        w.wait_lines(w.n + 300)
        n = w.finish()
        wait_until(lambda: len(sink.lines()) >= n, what=f"{n} lines")
        assert f.stats()["app"].rotations == 1
    assert_exactly_once(numbers(sink.lines(), b"w"), n, "directory moved")


@pytest.mark.parametrize("inotify", MODES)
def test_glob_picks_up_new_files_and_new_directories(tmp_path: Path, inotify: bool) -> None:
    (tmp_path / "site1").mkdir()
    (tmp_path / "site1" / "app-a.log").write_bytes(b"a 0\n")
    (tmp_path / "site1" / "other.txt").write_bytes(b"not matched\n")
    sink = Sink()
    with following([LogSpec(str(tmp_path / "*" / "app-*.log"), "apps", "uwsgi")], sink,
                   start_at="end", stat_interval=0.1, use_inotify=inotify) as f:
        wait_until(lambda: f.stats()["apps"].open_files == 1)
        (tmp_path / "site1" / "app-b.log").write_bytes(b"b 0\nb 1\n")  # new: from 0
        (tmp_path / "site2").mkdir()
        (tmp_path / "site2" / "app-c.log").write_bytes(b"c 0\n")
        with (tmp_path / "site1" / "app-a.log").open("ab") as w:
            w.write(b"a 1\n")
        sink.wait(4)
        assert f.stats()["apps"].open_files == 3
    assert sorted(sink.lines()) == [b"a 1", b"b 0", b"b 1", b"c 0"]
    assert {p for _, p, _ in sink.got} == {str(tmp_path / s) for s in (
        "site1/app-a.log", "site1/app-b.log", "site2/app-c.log")}


# -- long lines and memory -----------------------------------------------------------------

def test_a_10mb_line_is_cut_counted_and_the_next_lines_flow(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    sink = Sink()
    with following([spec(log)], sink, max_line=4096, use_inotify=True,
                   stat_interval=30.0) as f:
        with log.open("ab", buffering=0) as w:
            w.write(b"before\n")
            for _ in range(10):  # written over time, so it arrives in many reads
                w.write(b"L" * (1 << 20))
                time.sleep(0.01)
            w.write(b"\nafter 1\nafter 2\n")
            got = sink.wait(4)
        assert got == [b"before", b"L" * 4096, b"after 1", b"after 2"]
        assert f.stats()["app"].long_lines == 1


def test_100mb_without_newlines_keeps_memory_bounded(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    sink = Sink()
    chunk = b"n" * (1 << 20)
    tracemalloc.start()
    try:
        with following([spec(log)], sink, use_inotify=True, stat_interval=30.0) as f, \
                log.open("ab", buffering=0) as w:
            for _ in range(100):
                w.write(chunk)
            w.write(b"\nnext\n")
            got = sink.wait(2, timeout=30)
            _, peak = tracemalloc.get_traced_memory()
            assert f.stats()["app"].long_lines == 1
    finally:
        tracemalloc.stop()
    assert [len(line) for line in got] == [65536, 4]
    assert peak < 12 << 20, f"peak {peak >> 20} MiB while reading 100 MiB without a newline"


# -- errors --------------------------------------------------------------------------------

def test_a_directory_a_fifo_and_missing_files_are_errors_others_flow(tmp_path: Path) -> None:
    good, a_dir, fifo, missing, goes = (tmp_path / n for n in (
        "good.log", "dir.log", "fifo.log", "missing.log", "goes.log"))
    good.write_bytes(b"")
    goes.write_bytes(b"goes 0\n")
    a_dir.mkdir()
    os.mkfifo(fifo)  # opening it for reading would block: it must never be opened
    sink = Sink()
    specs = [spec(good, "good"), spec(a_dir, "dir"), spec(fifo, "fifo"), spec(missing, "gone"),
             spec(goes, "goes")]
    with capture_logs() as logs, following(specs, sink, stat_interval=0.02,
                                           use_inotify=False) as f:
        sink.wait(1)
        goes.unlink()  # followed, then gone for good: missing once its rest is drained
        with good.open("ab", buffering=0) as w:
            for i in range(5):
                w.write(b"good %d\n" % i)
                time.sleep(0.05)
        sink.wait(6)
        wait_until(lambda: f.stats()["dir"].read_errors >= 3, what="retries")
        a_dir.rmdir()
        a_dir.write_bytes(b"now a file\n")
        missing.write_bytes(b"here now\n")
        sink.wait(8)
        wait_until(lambda: f.stats()["goes"].read_errors == 1, what="goes.log missing")
        stats = f.stats()
    warned = collections.Counter(e.get("path") for e in logs if e["log_level"] == "warning")
    assert warned == {str(a_dir): 1, str(fifo): 1, str(missing): 1, str(goes): 1}  # once each
    assert stats["fifo"].read_errors >= 3 and stats["good"].read_errors == 0
    assert stats["gone"].read_errors == 1
    assert (stats["goes"].rotations, stats["goes"].open_files) == (1, 0)
    assert sorted(sink.lines()) == sorted([b"goes 0", *(b"good %d" % i for i in range(5)),
                                           b"here now", b"now a file"])


def run_child(config: dict[str, Any], *, prefix: list[str] | None = None,
              stdin: int | None = None) -> subprocess.Popen[bytes]:
    cfg = config["dir"] / f"child-{time.monotonic_ns()}.json"
    cfg.write_text(json.dumps({k: str(v) if isinstance(v, Path) else v
                               for k, v in config.items()}))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([*(prefix or []), sys.executable, __file__, "follow", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin,
                            env=env)


def child_config(tmp_path: Path, specs: list[LogSpec], **kw: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"dir": tmp_path, "specs": [[s.path, s.name] for s in specs],
                           "out": tmp_path / "received", "stats_out": tmp_path / "stats.json",
                           "state_dir": None, "stat_interval": 0.05, "snapshot_interval": 0.2,
                           "use_inotify": True, "start_at": "beginning", "ready_files": 0}
    cfg.update(kw)
    return cfg


def wait_ready(p: subprocess.Popen[bytes]) -> None:
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line == b"ready\n", (line, p.stderr.read() if p.stderr else b"")


def stop_child(p: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """SIGTERM, wait, and return the child's structlog events (JSON lines on stderr)."""
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err.decode()
    return [json.loads(line) for line in err.splitlines() if line.startswith(b"{")]


def received(tmp_path: Path) -> list[bytes]:
    path = tmp_path / "received"
    return path.read_bytes().splitlines() if path.exists() else []


def test_permission_denied_is_logged_once_counted_and_retried(tmp_path: Path) -> None:
    """As root, permission checks are skipped; the child drops CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from its bounding set (setpriv), so a mode 000 file and a mode
    000 directory really fail with EACCES for it, while it stays root for everything
    else (it can still run Python from /root). setuid(nobody) would not work here:
    nobody cannot read the interpreter under /root."""
    secret, locked = tmp_path / "secret.log", tmp_path / "locked"
    ok = tmp_path / "ok.log"
    locked.mkdir()
    inner = locked / "inner.log"
    for path, tag in ((secret, b"s"), (inner, b"i"), (ok, b"o")):
        path.write_bytes(tag + b" 0\n")
    secret.chmod(0)
    locked.chmod(0)
    specs = [spec(secret, "secret"), spec(inner, "inner"), spec(ok, "ok")]
    p = run_child(child_config(tmp_path, specs, ready_files=1),
                  prefix=["setpriv", "--bounding-set", "-dac_override,-dac_read_search"])
    try:
        wait_ready(p)
        with ok.open("ab") as w:
            w.write(b"o 1\n")
        wait_until(lambda: b"o 1" in received(tmp_path), what="ok.log flowing")
        time.sleep(0.8)  # several retries, with back-off
        with secret.open("ab") as w:
            w.write(b"s 1\n")
        secret.chmod(0o644)
        locked.chmod(0o755)
        wait_until(lambda: {b"s 1", b"i 0"} <= set(received(tmp_path)), what="recovery")
    finally:
        secret.chmod(0o644)
        locked.chmod(0o755)
        events = stop_child(p)
    assert sorted(received(tmp_path)) == [b"i 0", b"o 0", b"o 1", b"s 0", b"s 1"]
    stats = json.loads((tmp_path / "stats.json").read_text())["run"]
    assert stats["secret"]["read_errors"] >= 3  # every failed try is counted
    assert stats["inner"]["read_errors"] >= 3
    denied = [e for e in events if e["event"] == "cannot read log"]
    assert sorted(e["path"] for e in denied) == [str(inner), str(secret)]  # logged once each
    assert "Permission denied" in denied[0]["error"]
    watch_failed = [e for e in events if e["event"] == "cannot watch directory, polling it "
                    "with stat"]
    assert [e["directory"] for e in watch_failed] == [str(locked)]


def test_inotify_unavailable_falls_back_to_polling(tmp_path: Path) -> None:
    """The child uses up its descriptors first, so inotify_init fails with EMFILE (as it
    does when fs.inotify.max_user_instances is reached) and so do the first opens."""
    log = tmp_path / "app.log"
    log.write_bytes(b"x 0\n")
    p = run_child(child_config(tmp_path, [spec(log)], exhaust_fds=True, ready_files=1))
    try:
        wait_ready(p)
        with log.open("ab") as w:
            w.write(b"x 1\n")
        wait_until(lambda: received(tmp_path) == [b"x 0", b"x 1"], what="polled lines")
    finally:
        events = stop_child(p)
    names = [e["event"] for e in events]
    assert names.count("inotify unavailable, polling with stat only") == 1
    assert names.count("cannot read log") == 1  # EMFILE on open, retried until it works
    stats = json.loads((tmp_path / "stats.json").read_text())["run"]
    assert stats["app"]["read_errors"] >= 1


def test_inotify_queue_overflow_is_detected_and_nothing_is_lost(tmp_path: Path) -> None:
    """The child's threads are held off the GIL while more events than the kernel queue
    holds (fs.inotify.max_queued_events) are made in the watched directory."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    p = run_child(child_config(tmp_path, [spec(log)], stat_interval=30.0, ready_files=1),
                  stdin=subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None
    noise = [os.open(tmp_path / f"noise{i}", os.O_WRONLY | os.O_CREAT) for i in range(2)]
    try:
        wait_ready(p)
        p.stdin.write(b"freeze 2.0\n")
        p.stdin.flush()
        assert p.stdout.readline() == b"frozen\n"
        # twice what the queue holds: the reader may still drain a buffer or two (a thread
        # that asked for the GIL before the freeze gets it once); alternating names, so the
        # kernel cannot merge the events
        for i in range(2 * limit):
            os.write(noise[i % 2], b".")
        with log.open("ab") as w:  # its IN_MODIFY is dropped: only the overflow says it
            w.write(b"during the overflow\n")
        wait_until(lambda: received(tmp_path) == [b"during the overflow"], timeout=20,
                   what="the line written during the overflow")
    finally:
        for fd in noise:
            os.close(fd)
        events = stop_child(p)
    assert [e["event"] for e in events].count(
        "inotify queue overflowed, checking every file with stat") == 1


# -- state and restarts --------------------------------------------------------------------

class Counting(Sink):
    """A sink whose line count goes into the snapshot, as the daemon's counters do."""

    def __init__(self, restored: int = 0) -> None:
        super().__init__()
        self.total = restored

    def __call__(self, spec: LogSpec, path: str, lines: list[bytes]) -> None:
        self.total += len(lines)
        super().__call__(spec, path, lines)

    def extra(self) -> dict[str, Any]:
        return {"total": self.total}


def restart(tmp_path: Path, specs: list[LogSpec]) -> tuple[Counting, dict[str, Any]]:
    probe = Follower(specs, Sink(), state_dir=tmp_path / "st")
    return Counting(probe.restored_extra.get("total", 0)), probe.restored_extra


def test_restart_resumes_at_the_saved_offsets(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    specs = [spec(log)]
    w = Writer(log)
    w.start()
    sink = Counting()
    with following(specs, sink, state_dir=tmp_path / "st", stat_interval=0.05,
                   use_inotify=False, snapshot_extra=sink.extra):
        w.wait_lines(500)
    seen_first = len(sink.lines())
    w.wait_lines(w.n + 500)  # written while stopped
    sink2, extra = restart(tmp_path, specs)
    assert extra == {"total": seen_first}
    with following(specs, sink2, state_dir=tmp_path / "st", stat_interval=0.05,
                   use_inotify=False, start_at="end", snapshot_extra=sink2.extra):
        n = w.finish()
        wait_until(lambda: sink2.total >= n, what="all lines")
    assert sink2.total == n
    assert_exactly_once(numbers(sink.lines() + sink2.lines(), b"w"), n, "restart")


def test_rotation_and_copytruncate_while_stopped_are_caught_up(tmp_path: Path) -> None:
    renamed, copied = tmp_path / "renamed.log", tmp_path / "copied.log"
    specs = [spec(renamed, "r"), spec(copied, "c")]
    wr, wc = Writer(renamed, b"r"), Writer(copied, b"c")
    for w in (wr, wc):
        w.start()
    sink = Counting()
    with following(specs, sink, state_dir=tmp_path / "st", stat_interval=0.05,
                   use_inotify=False, snapshot_extra=sink.extra):
        wr.wait_lines(300)
        wc.wait_lines(300)
    time.sleep(0.05)
    with wr.lock:  # while stopped: logrotate runs, the servers go on writing
        os.rename(renamed, f"{renamed}.1")
        wr.reopen(late=30)
    with wc.lock:
        shutil.copyfile(copied, f"{copied}.1")
        os.truncate(copied, 0)
    wr.wait_lines(wr.n + 200)
    sink2, _ = restart(tmp_path, specs)
    with following(specs, sink2, state_dir=tmp_path / "st", stat_interval=0.05,
                   use_inotify=False, start_at="end", snapshot_extra=sink2.extra) as f:
        nr, nc = wr.finish(), wc.finish()
        wait_until(lambda: sink2.total >= nr + nc, what="all lines")
        stats = f.stats()
    lines = sink.lines() + sink2.lines()
    assert_exactly_once(numbers(lines, b"r"), nr, "renamed while stopped")
    assert_exactly_once(numbers(lines, b"c"), nc, "copytruncated while stopped")
    assert (stats["r"].rotations, stats["c"].truncations) == (1, 1)


@pytest.mark.parametrize("inotify", MODES)
def test_five_renames_within_milliseconds_lose_nothing(tmp_path: Path, inotify: bool) -> None:
    """logrotate run five times in a row: four files are rotated away before any look saw
    them; they are rotated names written to since the last look, and are read whole."""
    log = tmp_path / "app.log"
    w = Writer(log, pause=0.0)
    sink = Sink()
    with following([spec(log)], sink, stat_interval=interval(inotify),
                   use_inotify=inotify) as f:
        for _ in range(240):
            w.write_line()
        sink.wait(240)
        for k in range(1, 6):
            os.rename(log, f"{log}.{k}")
            w.reopen(late=0)
            for _ in range(240):
                w.write_line()
        os.close(w.fd)
        n = w.n
        wait_until(lambda: len(sink.lines()) >= n, what=f"{n} lines")
        time.sleep(0.3)
        assert f.stats()["app"].rotations >= 1
    assert_exactly_once(numbers(sink.lines(), b"w"), n, "five quick renames")


def test_a_rename_every_50ms_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log, pause=0.0005)
    sink = Sink()
    with following([spec(log)], sink, stat_interval=30.0, use_inotify=True):
        w.start()
        for k in range(1, 41):
            time.sleep(0.05)
            with w.lock:
                os.rename(log, f"{log}.{k}")
                w.reopen(late=3)
        n = w.finish()
        wait_until(lambda: len(sink.lines()) >= n, timeout=20, what=f"{n} lines")
        time.sleep(0.3)
    assert_exactly_once(numbers(sink.lines(), b"w"), n, "a rename every 50 ms")


def test_two_rotations_while_stopped_are_caught_up(tmp_path: Path) -> None:
    """The daemon is down for two logrotates: the file it followed is found by inode, the
    one created and rotated away meanwhile as a rotated name written after the snapshot."""
    log = tmp_path / "app.log"
    w = Writer(log)
    specs = [spec(log)]
    sink = Counting()
    with following(specs, sink, state_dir=tmp_path / "st", stat_interval=0.05,
                   use_inotify=False, snapshot_extra=sink.extra):
        for _ in range(500):
            w.write_line()
        wait_until(lambda: sink.total >= 500, what="500 lines")
    for k in (1, 2):  # while stopped: rename + create, twice, lines in between
        for _ in range(500):
            w.write_line()
        if k == 2:
            os.rename(f"{log}.1", f"{log}.2")
        os.rename(log, f"{log}.1")
        w.reopen(late=10)
    for _ in range(500):
        w.write_line()
    sink2, _ = restart(tmp_path, specs)
    with following(specs, sink2, state_dir=tmp_path / "st", stat_interval=0.05,
                   use_inotify=False, start_at="end", snapshot_extra=sink2.extra) as f:
        n = w.n
        wait_until(lambda: sink2.total >= n, what=f"{n} lines")
        time.sleep(0.3)
        assert f.stats()["app"].rotations == 1
    os.close(w.fd)
    assert sink2.total == n
    assert_exactly_once(numbers(sink.lines() + sink2.lines(), b"w"), n, "two rotations")


@pytest.mark.parametrize("inotify", MODES)
def test_truncated_in_place_to_a_prefix_reads_only_what_is_new(tmp_path: Path,
                                                                inotify: bool) -> None:
    """``truncate`` to the first 10 lines, then 300 more: the 10 kept lines were read
    already and are not counted again."""
    log = tmp_path / "app.log"
    data = b"".join(b"w %d\n" % i for i in range(500))
    log.write_bytes(data)
    sink = Sink()
    with following([spec(log)], sink, stat_interval=interval(inotify),
                   use_inotify=inotify) as f:
        sink.wait(500)
        kept = sum(len(line) + 1 for line in data.split(b"\n")[:10])
        with log.open("r+b") as fh:
            fh.truncate(kept)
            fh.seek(kept)
            fh.write(b"".join(b"n %d\n" % i for i in range(300)))
        sink.wait(800)
        time.sleep(0.3)
        stats = f.stats()["app"]
    assert len(sink.lines()) == 800
    assert_exactly_once(numbers(sink.lines(), b"n"), 300, "appended after the truncate")
    assert stats.truncations == 1 and stats.lost_bytes == 0  # all of it was read before


def test_open_files_are_bounded_and_idle_files_reopened_by_identity(tmp_path: Path) -> None:
    """400 matched files and room for 32 descriptors: the quiet ones are closed, and a line
    appended to any of them later is still read exactly once."""
    d = tmp_path / "many"
    d.mkdir()
    paths = [d / f"f{i:03d}.log" for i in range(400)]
    for i, path in enumerate(paths):
        path.write_bytes(b"a %d\n" % i)
    sink = Sink()
    with following([LogSpec(str(d / "*.log"), "many", None)], sink, stat_interval=0.05,
                   use_inotify=True, max_open=32) as f:
        sink.wait(400)
        wait_until(lambda: f.stats()["many"].open_files <= 32, what="descriptors closed")
        assert f.stats()["many"].files == 400
        for i, path in enumerate(paths):
            with path.open("ab") as fh:
                fh.write(b"b %d\n" % i)
        sink.wait(800, timeout=20)
        rotated = paths[7]
        os.rename(rotated, f"{rotated}.1")  # a closed file rotated away: found by inode
        rotated.write_bytes(b"c 7\n")
        sink.wait(801)
        wait_until(lambda: f.stats()["many"].open_files <= 32, what="descriptors closed again")
        stats = f.stats()["many"]
    assert stats.lost_bytes == 0 and stats.files >= 400
    assert_exactly_once(numbers(sink.lines(), b"a"), 400, "first lines")
    assert_exactly_once(numbers(sink.lines(), b"b"), 400, "lines added to closed files")


def test_a_glob_reports_what_it_does_not_follow(tmp_path: Path) -> None:
    """A compressed rotated file and a FIFO matched by a glob are said, never read."""
    (tmp_path / "app.log").write_bytes(b"w 0\n")
    (tmp_path / "old.log").write_bytes(gzip.compress(b"w 1\n" * 100))
    os.mkfifo(tmp_path / "pipe.log")
    sink = Sink()
    with capture_logs() as logs, following([LogSpec(str(tmp_path / "*.log"), "g", None)],
                                           sink, stat_interval=0.05, use_inotify=False) as f:
        sink.wait(1)
        wait_until(lambda: f.stats()["g"].skipped_files == 2, what="two skipped")
        time.sleep(0.2)
    assert sink.lines() == [b"w 0"]
    said = {e["path"]: e["why"] for e in logs if e["event"] == "not following"}
    assert said == {str(tmp_path / "old.log"): "compressed (gzip): a glob should not match "
                    "rotated files", str(tmp_path / "pipe.log"): "not a regular file"}


def test_snapshots_are_consistent_with_the_extra(tmp_path: Path) -> None:
    """Positions and snapshot_extra() come from the same instant: the lines before each
    saved offset are exactly the lines the extra counted."""
    log = tmp_path / "app.log"
    w = Writer(log, pause=0.0002)
    w.start()
    sink = Counting()
    state = tmp_path / "st" / STATE_FILE
    checked = 0
    with following([spec(log)], sink, state_dir=tmp_path / "st", snapshot_interval=0.01,
                   stat_interval=30.0, use_inotify=True, snapshot_extra=sink.extra):
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                doc = json.loads(state.read_bytes())
            except FileNotFoundError:
                continue
            (entry,) = doc["files"]
            with log.open("rb") as r:
                assert r.read(entry["offset"]).count(b"\n") == doc["extra"]["total"]
            checked += 1
    w.finish()
    assert checked > 20


def test_a_corrupt_state_file_is_ignored_and_following_starts_fresh(tmp_path: Path) -> None:
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / STATE_FILE).write_bytes(b'{"version": 1, "files": [{"path"')
    log = tmp_path / "app.log"
    log.write_bytes(b"old\n")
    sink = Sink()
    with capture_logs() as logs:
        f = Follower([spec(log)], sink, state_dir=tmp_path / "st", start_at="end")
    assert f.restored_extra == {}
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "state file corrupt, starting fresh"]
    with following([spec(log)], sink, state_dir=tmp_path / "st", start_at="end",
                   use_inotify=True, stat_interval=30.0) as f:
        wait_until(lambda: f.stats()["app"].open_files == 1)
        with log.open("ab") as w:
            w.write(b"new\n")
        assert sink.wait(1) == [b"new"]
    assert saved_offsets(tmp_path / "st") == [8]


def test_sigkill_and_restart_read_every_line_exactly_once(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log, pause=0.0003)
    w.start()
    cfg = child_config(tmp_path, [spec(log)], state_dir=tmp_path / "st", ready_files=1,
                       snapshot_interval=0.1)
    for _ in range(3):
        p = run_child(cfg)
        wait_ready(p)
        time.sleep(random.uniform(0.3, 0.6))
        p.kill()  # SIGKILL: no final snapshot
        p.wait()
        time.sleep(0.2)  # lines written while down
    p = run_child(cfg)
    wait_ready(p)
    n = w.finish()
    wait_until(lambda: len(received(tmp_path)) >= n, what=f"{n} lines")
    stop_child(p)
    assert_exactly_once(numbers(received(tmp_path), b"w"), n, "SIGKILL")


# -- reload, health, stats -----------------------------------------------------------------

def test_set_specs_keeps_positions_of_files_still_matched(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_bytes(b"a 0\n")
    b.write_bytes(b"b 0\n")
    sink = Sink()
    with following([spec(a, "a")], sink, stat_interval=30.0, use_inotify=True) as f:
        sink.wait(1)
        f.set_specs([spec(a, "renamed"), spec(b, "b")])
        sink.wait(2)
        with a.open("ab") as w:
            w.write(b"a 1\n")
        sink.wait(3)
        f.set_specs([spec(b, "b")])
        wait_until(lambda: "renamed" not in f.stats())
        with a.open("ab") as w:
            w.write(b"a 2\n")
        with b.open("ab") as w:
            w.write(b"b 1\n")
        sink.wait(4)
        time.sleep(0.1)
        assert f.stats()["b"].open_files == 1
    assert [(n, line) for n, _, line in sink.got] == [
        ("a", b"a 0"), ("b", b"b 0"), ("renamed", b"a 1"), ("b", b"b 1")]


def test_alive_and_stats_from_another_thread(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    w.start()
    sink = Sink()
    f = Follower([spec(log)], sink, state_dir=None, start_at="beginning", use_inotify=True,
                 stat_interval=0.2)
    assert not f.alive
    snapshots: list[LogStats] = []
    with following([spec(log)], sink, use_inotify=True, stat_interval=0.2) as g:
        assert g.alive
        for _ in range(200):
            snapshots.append(g.stats()["app"])
        w.wait_lines(w.n + 200)
        n = w.finish()
        wait_until(lambda: g.stats()["app"].lines == n)
    assert not g.alive
    assert all(isinstance(v, int) for s in snapshots for v in asdict(s).values())
    assert [s.lines for s in snapshots] == sorted(s.lines for s in snapshots)


# -- torture -------------------------------------------------------------------------------

@pytest.mark.slow
def test_torture_rotations_and_sigkills_lose_nothing(tmp_path: Path) -> None:
    """A writer process appends numbered lines to 3 files while it randomly rotates them
    (r: rename+create with late writes, d: delete+recreate, c: copytruncate); the follower
    child is SIGKILLed and restarted 3 times, and each time one rename and one
    copytruncate happen while it is down. Its received lines are rolled back to the
    snapshot's extra on restart, as the daemon's counters are.

    Random rotations pause 1 s before each kill: a deleted file's unread tail exists only
    in the follower's open descriptor, so a follower killed before it read and saved that
    tail cannot get it back (no tailer can). Runs GW502D_TORTURE_SECONDS (default 8) of
    writing (``GW502D_TORTURE_SECONDS=60`` for a long run)."""
    seconds = float(os.environ.get("GW502D_TORTURE_SECONDS", "8"))
    d = tmp_path / "logs"
    d.mkdir()
    seed = random.randrange(1 << 30)
    writer_cfg = tmp_path / "writer.json"
    writer_cfg.write_text(json.dumps({"dir": str(d), "rate": 1500, "seed": seed}))
    writer = subprocess.Popen([sys.executable, __file__, "write", str(writer_cfg)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert writer.stdin is not None and writer.stdout is not None

    def tell(cmd: str) -> str:
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.write(cmd.encode() + b"\n")
        writer.stdin.flush()
        return writer.stdout.readline().decode().strip()

    assert writer.stdout.readline() == b"ready\n"
    specs = [LogSpec(str(d / f"{t}.log"), t, None) for t in "rdc"]
    cfg = child_config(tmp_path, specs, state_dir=tmp_path / "st", ready_files=3,
                       stat_interval=0.5, snapshot_interval=0.2)
    p = run_child(cfg)
    try:
        wait_ready(p)
        assert tell("resume") == "ok"
        for _ in range(3):
            time.sleep(seconds / 4)
            assert tell("pause") == "ok"
            time.sleep(1.0)
            p.kill()
            p.wait()
            assert tell("rotate r") == "ok"
            assert tell("rotate c") == "ok"
            time.sleep(0.3)
            p = run_child(cfg)
            wait_ready(p)
            assert tell("resume") == "ok"
        time.sleep(seconds / 4)
        written = json.loads(tell("stop"))
        writer.wait(10)
        total = sum(written["lines"].values())
        wait_until(lambda: len(received(tmp_path)) >= total, timeout=30,
                   what=f"{total} lines (seed {seed})")
        time.sleep(0.3)
    finally:
        if writer.poll() is None:
            writer.kill()
        stop_child(p)
    got = received(tmp_path)
    stats = json.loads((tmp_path / "stats.json").read_text())["total"]
    print(f"torture seed {seed}: {written} received {len(got)} stats {stats}")
    assert_exactly_once(numbers(got, b"r"), written["lines"]["r"], f"rename (seed {seed})")
    assert_exactly_once(numbers(got, b"d"), written["lines"]["d"], f"delete (seed {seed})")
    c = numbers(got, b"c")
    assert len(c) == len(set(c)), f"copytruncate duplicated lines (seed {seed})"
    if len(c) < written["lines"]["c"]:  # a loss must show in the counters, never be silent
        assert stats["c"]["truncations"] > 0 and stats["c"]["lost_bytes"] > 0
    assert written["rotations"]["r"] >= 3 and written["rotations"]["c"] >= 3
    # The counters survive the kills through the extra, like the lines: every rotation once.
    assert stats["r"]["rotations"] == written["rotations"]["r"]
    assert stats["d"]["rotations"] == written["rotations"]["d"]
    assert stats["c"]["truncations"] == written["rotations"]["c"]
    assert stats["c"]["rotations"] == stats["r"]["truncations"] == 0


# -- child processes -----------------------------------------------------------------------

def follow_main(config_path: str) -> None:
    """A tiny daemon: follow, append every line to cfg["out"], snapshot the output's
    length (and cumulative stats) as extra, roll the output back to it on start."""
    cfg = json.loads(Path(config_path).read_text())
    structlog.configure(processors=[structlog.processors.add_log_level,
                                    structlog.processors.JSONRenderer()],
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    specs = [LogSpec(path, name, None) for path, name in cfg["specs"]]
    out_size = 0
    base: dict[str, dict[str, int]] = {}
    follower: Follower

    def totals() -> dict[str, dict[str, int]]:
        now = follower.stats()
        return {n: {k: v + base.get(n, {}).get(k, 0) for k, v in asdict(s).items()}
                for n, s in now.items()}

    def on_lines(_spec: LogSpec, _path: str, lines: list[bytes]) -> None:
        nonlocal out_size
        data = b"".join(line + b"\n" for line in lines)
        os.write(out_fd, data)
        out_size += len(data)

    follower = Follower(specs, on_lines,
                        state_dir=Path(cfg["state_dir"]) if cfg["state_dir"] else None,
                        start_at=cfg["start_at"], stat_interval=cfg["stat_interval"],
                        snapshot_interval=cfg["snapshot_interval"],
                        snapshot_extra=lambda: {"out": out_size, "stats": totals()},
                        use_inotify=cfg["use_inotify"])
    out_size = follower.restored_extra.get("out", 0)
    base = follower.restored_extra.get("stats", {})
    out_fd = os.open(cfg["out"], os.O_WRONLY | os.O_CREAT, 0o644)
    os.ftruncate(out_fd, out_size)  # roll back what came after the snapshot
    os.lseek(out_fd, 0, os.SEEK_END)
    hog: list[int] = []
    if cfg.get("exhaust_fds"):  # so that inotify_init and the first opens fail (EMFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        try:
            while True:
                hog.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
    stop = threading.Event()

    def on_term(_sig: int, _frame: object) -> None:
        stop.set()
        follower.wake()

    signal.signal(signal.SIGTERM, on_term)
    thread = threading.Thread(target=follower.run, args=(stop,))
    thread.start()
    if hog:  # let the follower meet EMFILE, then give the descriptors back
        time.sleep(0.3)
        for fd in hog:
            os.close(fd)
    while sum(s.open_files for s in follower.stats().values()) < cfg["ready_files"]:
        time.sleep(0.01)
    print("ready", flush=True)
    if not sys.stdin.isatty():
        threading.Thread(target=_commands, daemon=True).start()
    thread.join()
    Path(cfg["stats_out"]).write_text(json.dumps(
        {"run": {n: asdict(s) for n, s in follower.stats().items()}, "total": totals()}))


def _commands() -> None:
    """``freeze SECONDS``: hold the GIL, so no thread of this process runs meanwhile."""
    for line in sys.stdin:
        cmd, _, arg = line.partition(" ")
        if cmd == "freeze":
            sys.setswitchinterval(60.0)
            print("frozen", flush=True)
            end = time.monotonic() + float(arg)
            while time.monotonic() < end:
                pass
            sys.setswitchinterval(0.005)


def write_main(config_path: str) -> None:
    """The torture writer: r.log, d.log and c.log, numbered lines at cfg["rate"] each.

    stdin commands, each answered with one line: resume / pause (random rotations on or
    off), rotate r|d|c (now), stop (prints {"lines": ..., "rotations": ...})."""
    cfg = json.loads(Path(config_path).read_text())
    d, rng = Path(cfg["dir"]), random.Random(cfg["seed"])
    paths = {t: d / f"{t}.log" for t in "rdc"}
    fds = {t: os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) for t, p in paths.items()}
    n = dict.fromkeys("rdc", 0)
    rotations = dict.fromkeys("rdc", 0)
    last_rotation = dict.fromkeys("rdc", 0.0)
    commands: list[str] = []
    lock = threading.Lock()
    answered = threading.Condition(lock)

    def write(t: str, fd: int | None = None) -> None:
        os.write(fds[t] if fd is None else fd, b"%s %d\n" % (t.encode(), n[t]))
        n[t] += 1

    def rotate(t: str) -> None:
        path = paths[t]
        rotations[t] += 1
        last_rotation[t] = time.monotonic()
        dest = f"{path}.{rotations[t]}"
        if t == "c":
            shutil.copyfile(path, dest)
            os.truncate(path, 0)
            return
        if t == "r":
            os.rename(path, dest)
        else:
            path.unlink()
        old = fds[t]
        for _ in range(rng.randrange(20)):  # until the server reopens its log
            write(t, old)
        fds[t] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.close(old)

    def read_commands() -> None:
        for line in sys.stdin:
            with lock:
                commands.append(line.strip())
                answered.wait_for(lambda: not commands)

    threading.Thread(target=read_commands, daemon=True).start()
    print("ready", flush=True)
    random_rotations = False
    start = time.monotonic()
    next_rotation = start
    while True:
        with lock:
            if commands:
                cmd = commands.pop(0)
                if cmd == "stop":
                    print(json.dumps({"lines": n, "rotations": rotations}), flush=True)
                    return
                random_rotations = cmd == "resume" or (random_rotations and cmd != "pause")
                if cmd.startswith("rotate "):
                    rotate(cmd.split()[1])
                print("ok", flush=True)
                answered.notify_all()
        now = time.monotonic()
        due = int((now - start) * cfg["rate"])
        while n["r"] < due:
            for t in "rdc":
                write(t)
        if random_rotations and now >= next_rotation:
            t = rng.choice("rdc")
            if now - last_rotation[t] > 0.6:
                rotate(t)
            next_rotation = now + rng.uniform(0.1, 0.3)
        time.sleep(0.001)


if __name__ == "__main__":
    {"follow": follow_main, "write": write_main}[sys.argv[1]](sys.argv[2])
