"""Follow log files like a production tailer: rotation, restarts and bad files lose nothing.

One thread (the caller of :meth:`Follower.run`) does all the reading, calls ``on_lines``,
keeps the offsets and writes the snapshots, so the callback's counters need no locks and
a snapshot is consistent. watchdog's thread only records a hint and wakes that loop
(:mod:`~gw502d.source.hints`); a periodic look at the file system is the source of truth
(:mod:`~gw502d.source.observe`, then :mod:`~gw502d.source.decide`), so a missed or
dropped event costs latency, never lines. The look runs every ``stat_interval`` seconds
while some directory has no working inotify watch (or after a queue overflow), else every
``sweep_interval``: inotify reports appends, creates, renames and deletes as they happen.

What a look finds and what the follower does:

- the path names another inode (rename + create, delete + recreate, atomic replace, the
  directory moved away and recreated): the old file is kept open and read until it has
  been quiet for ``max(1, 5 * stat_interval)`` s (nginx writes to ``.1`` until USR1), the
  new file is read from 0; rotated names of the log written to since the last look that
  were never opened (several rotations within one look) are read whole
  (:mod:`~gw502d.source.siblings`);
- the path is gone: the open file is drained the same way;
- the file is shorter than the offset, or its first bytes or the bytes before the offset
  changed: with a copy beside it that starts with the same bytes (copytruncate), the rest
  is read from the copy; else, if the start of the file is still what was read (truncated
  in place to a prefix), reading goes on after that prefix; whatever cannot be read is
  counted in ``lost_bytes`` and logged.

Offsets never pass the start of an unfinished line. After a restart a file resumes at its
saved offset if its inode and the fingerprint of its first bytes still match; files
rotated or copied while the daemon was down are found by inode, by fingerprint, and by
being rotated names written to since the snapshot (:mod:`~gw502d.source.resume`).

Open files are bounded (``max_open``): past it, the files that changed least recently are
closed and opened again by path when they change, their identity checked. Limits: bytes a
writer appended between logrotate's copy and its truncate are gone before anything can
read them; a rotated file that was compressed before it was read is reported, not read.
"""

# Paths stay str end to end (LogSpec.path, the callback's path, watchdog's events).
# ruff: noqa: PTH116, PTH120

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import structlog

from gw502d.source import siblings
from gw502d.source.backoff import Backoff
from gw502d.source.decide import Action, decide
from gw502d.source.hints import BURST_WINDOW, Hints
from gw502d.source.identity import fingerprint, read_head
from gw502d.source.lines import MAX_LINE, LineSplitter
from gw502d.source.observe import FileSystem, Observation, observe
from gw502d.source.resume import Resumer
from gw502d.source.spec import LogSpec, matches
from gw502d.source.state import State, StateFile
from gw502d.source.tracked import GZIP_MAGIC, Counts, Ident, Tracked, open_regular
from gw502d.source.watch import Watcher

log = structlog.get_logger("gw502d.follower")

_MAX_SLEEP = 0.5  # longest wait, so a set ``stop`` is seen without a wake()
_SLACK_NS = 1_000_000_000  # file times vs our clock: a second of leeway
DEFAULT_MAX_OPEN = 512

LinesCallback = Callable[[LogSpec, str, list[bytes]], None]


@dataclass
class LogStats:
    """Counters of one log (spec name), copied out by :meth:`Follower.stats`.

    ``offset`` and ``size`` add up the files currently at the log's path(s), so
    ``size - offset`` is the backlog; ``files`` are the files followed (drained ones
    included, open or closed while idle), ``open_files`` those with a descriptor;
    ``skipped_files`` are paths the log names that are not followed (not regular files,
    compressed); ``lost_bytes`` could not be read (truncated away, a rotated file gone or
    compressed before it was read).
    """

    lines: int = 0
    bytes: int = 0
    offset: int = 0
    size: int = 0
    rotations: int = 0
    truncations: int = 0
    long_lines: int = 0
    read_errors: int = 0
    open_files: int = 0
    files: int = 0
    skipped_files: int = 0
    lost_bytes: int = 0


class Follower:
    """Follows the files of ``specs`` and hands their complete lines to ``on_lines``.

    >>> f = Follower([LogSpec("/var/log/nginx/*error.log", "nginx", "nginx")],
    ...              on_lines, state_dir=Path("/var/lib/gw502d"))   # doctest: +SKIP
    >>> threading.Thread(target=f.run, args=(stop,)).start()        # doctest: +SKIP
    """

    def __init__(self, specs: Sequence[LogSpec], on_lines: LinesCallback, *,
                 state_dir: Path | None,
                 start_at: Literal["end", "beginning"] = "end", max_line: int = MAX_LINE,
                 stat_interval: float = 2.0, sweep_interval: float = 60.0,
                 snapshot_interval: float = 10.0,
                 snapshot_extra: Callable[[], dict[str, Any]] | None = None,
                 use_inotify: bool = True, max_open: int = DEFAULT_MAX_OPEN,
                 fs: FileSystem | None = None) -> None:
        self._specs = tuple(specs)
        self._on_lines = on_lines
        self._start_at = start_at
        self._max_line = max_line
        self._stat_interval = stat_interval
        self._sweep_interval = max(sweep_interval, stat_interval)
        self._snapshot_interval = snapshot_interval
        self._snapshot_extra = snapshot_extra
        self._use_inotify = use_inotify
        self._max_open = max(max_open, 1)
        self._fs = fs
        self._drain_quiet = max(1.0, 5 * stat_interval)

        self._lock = threading.Lock()  # guards the registry and counters for stats()
        self._counters = {s.name: LogStats() for s in self._specs}
        self._current: dict[str, Tracked] = {}
        self._draining: list[Tracked] = []
        self._by_dir: dict[str, list[Tracked]] = {}
        self._backoff = Backoff(stat_interval)
        self._watch_backoff = Backoff(stat_interval / 2, logged=False)  # the watcher logs
        self._missing: set[str] = set()
        self._skipped: dict[str, str] = {}  # path -> why it is not followed
        self._looked_ns: dict[str, int] = {}  # path -> wall time of the last look at it
        self._finished: dict[Ident, None] = {}  # drained files closed lately (bounded)
        self._checked: set[str] = set()  # spec paths past their first look
        self._preexisting: set[str] = set()  # seen at a first look, not opened yet
        self._pending_specs: tuple[LogSpec, ...] | None = None

        self._wake = threading.Event()
        self._watcher: Watcher | None = None
        self._hints = Hints(self._wake, self._disarm)
        self._bursts: dict[str, float] = {}  # directory with IN_MODIFY off -> next poll
        self._snapshot_soon = False  # a rotation or truncation: save before the interval
        self._opened = False  # a descriptor was opened: check the bound
        self._heartbeat: float | None = None
        self._unwatched = True  # some directory has no working watch: look often

        self._state_file = StateFile(state_dir) if state_dir is not None else None
        restored = self._state_file.load() if self._state_file is not None else None
        self.restored_extra: dict[str, Any] = dict(restored.extra) if restored else {}
        self._resumer = Resumer(restored, self._spec_for, max_line)

    # -- the public surface ------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """The reader loop; returns after a final snapshot once ``stop`` is set.

        Call :meth:`wake` after setting ``stop`` to return at once (otherwise within
        half a second).
        """
        self._heartbeat = time.monotonic()
        if self._use_inotify:
            watcher = Watcher(self._hints.notify, self._hints.overflowed)
            self._watcher = watcher if watcher.start() else None
        try:
            self._take_up(self._resumer.restore(time.monotonic(), self._counters))
            self._loop(stop)
            self._snapshot()
        finally:
            if self._watcher is not None:
                self._watcher.stop()
                self._watcher = None
            for f in self._files():
                self._close(f)
            self._heartbeat = None

    def wake(self) -> None:
        """Ask the loop to look at the files now."""
        self._hints.ask_look()

    def stats(self) -> dict[str, LogStats]:
        """Per spec name; safe to call from any thread."""
        with self._lock:
            out = {name: replace(c) for name, c in self._counters.items()}
            for f in self._files():
                s = out.get(f.spec.name)
                if s is None:
                    continue
                s.files += 1
                s.open_files += f.fd >= 0
                if not f.draining:
                    s.offset += f.offset
                    s.size += max(f.size, f.offset)
            for spec in self._specs:
                out[spec.name].skipped_files = sum(
                    1 for p in self._skipped if spec.matches(p))
        return out

    def set_specs(self, specs: Sequence[LogSpec]) -> None:
        """Follow ``specs`` from now on, keeping the positions of files still matched."""
        with self._lock:
            self._pending_specs = tuple(specs)
        self.wake()

    @property
    def alive(self) -> bool:
        """The loop ran within the last few intervals (for /healthz)."""
        beat = self._heartbeat
        return beat is not None and time.monotonic() - beat < 3 * self._stat_interval + 1.0

    @property
    def saving_fails(self) -> bool:
        """Whether the last snapshot could not be written (a restart would re-read more)."""
        return self._state_file is not None and self._state_file.failing

    # -- the loop ----------------------------------------------------------------------

    def _loop(self, stop: threading.Event) -> None:
        now = time.monotonic()
        next_look = now
        next_snapshot = now + self._snapshot_interval
        overflow_logged = False
        while not stop.is_set():
            now = time.monotonic()
            self._heartbeat = now
            taken = self._hints.take()
            if taken.overflow and not overflow_logged:
                log.warning("inotify queue overflowed, checking every file with stat")
                overflow_logged = True
            if self._pending_specs is not None:
                self._apply_specs()
                taken.look = True
            if taken.look or now >= next_look:
                self._look(now)
                interval = self._stat_interval if self._unwatched else self._sweep_interval
                next_look = now + interval
                more = self._read(self._files(), now)[1]
            else:
                more = self._read_hinted(taken.paths, taken.drain, now)
                more |= self._read_behind(now)
            for d in taken.dirs:
                self._bursts.setdefault(d, now + BURST_WINDOW)
            more |= self._poll_bursts(now)
            drained_by = self._drained_by()
            if now >= drained_by:
                self._drain_quiet_files(now)
            if self._opened and self._limit_open(now):
                self._opened = True  # the newest ones changed a moment ago: next turn
                drained_by = min(drained_by, now + BURST_WINDOW)
            if now >= next_snapshot or self._snapshot_soon:
                self._snapshot()
                next_snapshot = now + self._snapshot_interval
            if not more:
                due = min(next_look, next_snapshot, drained_by, *self._bursts.values())
                self._wake.wait(min(max(due - time.monotonic(), 0.0), _MAX_SLEEP))
            self._wake.clear()

    def _files(self) -> list[Tracked]:
        return [*self._current.values(), *self._draining]

    def _read_hinted(self, paths: set[str], drain: bool, now: float) -> bool:
        """Read the files inotify named, unless their directory is in a burst already.

        The first write after a quiet spell is read at once; the reader thread has then
        turned the directory's IN_MODIFY off and :meth:`_poll_bursts` reads it every
        ``BURST_WINDOW`` until a poll finds nothing.
        """
        files = [self._current[p] for p in paths if p in self._current]
        if drain:
            files += self._draining
        return self._read([f for f in files if os.path.dirname(f.path) not in self._bursts],
                          now)[1]

    def _read_behind(self, now: float) -> bool:
        """Read on in the files a pass left unfinished (a backlog: a start from the
        beginning, a restart behind its saved offsets, a writer faster than a pass): no
        inotify event comes for what is already written, and waiting for the next look
        would read one pass per stat interval."""
        behind = [f for f in self._files() if f.offset < f.size]
        return self._read(behind, now)[1] if behind else False

    def _poll_bursts(self, now: float) -> bool:
        """Poll the directories whose IN_MODIFY is off; turn it back on once quiet."""
        more = False
        for d, due in list(self._bursts.items()):
            if now < due:
                continue
            files = self._by_dir.get(d, [])
            got, more_here = self._read(files, now)
            if not got and self._watcher is not None:
                self._watcher.rearm(d)
                got, more_here = self._read(files, now)  # what came before the rearm
            if got:
                self._bursts[d] = now + BURST_WINDOW
            else:
                del self._bursts[d]
            more |= more_here
        return more

    def _disarm(self, directory: str) -> None:
        watcher = self._watcher
        if watcher is not None:
            watcher.disarm(directory)

    # -- reading -----------------------------------------------------------------------

    def _read(self, files: Iterable[Tracked], now: float) -> tuple[int, bool]:
        """Read what the files have: (bytes read, whether one has more than a pass takes)."""
        got = 0
        more = False
        for f in list(files):
            if f.retry_at <= now and (f.fd >= 0 or self._reopen(f, now)):
                got += self._read_file(f, now)
                more |= f.offset < f.size
        return got, more

    def _reopen(self, f: Tracked, now: float) -> bool:
        """Open an idle-closed file again if it changed; False if there is nothing to do.

        A path that names another inode now is left to the next look (a rotation).
        """
        try:
            st = os.stat(f.path)
        except OSError:
            self._hints.ask_look()
            return False
        if (st.st_size, st.st_mtime_ns) == (f.size, f.mtime):
            return False
        if (st.st_dev, st.st_ino) != f.ident:
            self._hints.ask_look()
            return False
        try:
            fd, st = open_regular(f.path)
        except OSError as e:
            self._fail(f.spec, f.path, e, now)
            return False
        if (st.st_dev, st.st_ino) != f.ident:
            os.close(fd)
            self._hints.ask_look()
            return False
        f.fd = fd
        f.changed_at = now
        self._opened = True
        return True

    def _read_file(self, f: Tracked, now: float) -> int:
        start = f.offset
        counts = Counts()
        try:
            st = os.fstat(f.fd)
            if st.st_size != f.size or st.st_mtime_ns != f.mtime:
                if st.st_size < f.offset or not f.same_head() or not f.same_tail():
                    self._truncated(f, now)
                    start = 0
                f.size, f.mtime, f.changed_at = st.st_size, st.st_mtime_ns, now
            if f.offset < st.st_size:
                f.read(st.st_size, self._on_lines, counts)
        except OSError as e:
            f.retry_at = self._fail(f.spec, f.path, e, now)
            return 0
        finally:
            self._count(f.spec, counts)
        if f.retry_at:
            f.retry_at = 0.0
            self._backoff.recovered(f.path)
        return f.offset - start

    def _count(self, spec: LogSpec, counts: Counts) -> None:
        c = self._counters.get(spec.name)
        if c is not None:
            c.lines += counts.lines
            c.bytes += counts.bytes
            c.long_lines += counts.long_lines

    # -- rotation, truncation, draining ------------------------------------------------

    def _truncated(self, f: Tracked, now: float) -> None:
        """copytruncate, or rewritten in place: finish from a copy if there is one, else
        keep what still starts the file; then read on."""
        c = self._counters[f.spec.name]
        old_size = max(f.size, f.offset)
        # Even with nothing read yet: the copy holds what was written before the truncate.
        # Only one made since the last look (a short head matches many files).
        since = self._looked_ns.get(f.path, 0) - _SLACK_NS
        copy = siblings.copy_of(f.path, fingerprint(f.head), f.line_start, f.ident, since)
        kept = 0
        if copy is not None:
            # The copy continues the unfinished line, so it takes over the splitter.
            drained = Tracked(spec=f.spec, path=f.path, fd=copy.fd, ident=copy.ident,
                              head=read_head(copy.fd), offset=f.offset, splitter=f.splitter)
            self._add_draining(drained, now)
            lost = max(old_size - copy.st.st_size, 0)
        else:
            kept = f.kept_prefix()
            lost = max(old_size - max(f.line_start, kept), 0)
        c.truncations += 1
        c.lost_bytes += lost
        self._snapshot_soon = True
        log.warning("log truncated", log=f.spec.name, path=f.path, lost_bytes=lost,
                    rest_read_from=copy.path if copy is not None else None, kept_bytes=kept)
        f.restart_at(kept, self._max_line)

    def _add_draining(self, f: Tracked, now: float) -> None:
        f.draining = True
        f.changed_at = now
        self._snapshot_soon = True
        with self._lock:
            self._draining.append(f)
        self._publish()

    def _stop_following(self, path: str, now: float, event: str) -> None:
        """The path no longer names its file: count a rotation, drain the file, and read
        the rotated files no look saw."""
        with self._lock:
            f = self._current.pop(path, None)
        if f is None:
            return
        c = self._counters[f.spec.name]
        c.rotations += 1
        log.info(event, log=f.spec.name, path=f.path, unread_bytes=max(f.size - f.offset, 0))
        if f.fd < 0:  # closed while idle: find it again where the rotation put it
            found = siblings.by_inode(path, f.ident, fingerprint(f.head))
            if found is None:
                self._lose(f, "rotated while closed and gone")
            else:
                f.fd = found.fd
        if f.fd >= 0:
            self._add_draining(f, now)
        self._recover_unseen(f.spec, path, now)

    def _recover_unseen(self, spec: LogSpec, path: str, now: float) -> None:
        since = self._looked_ns.get(path)
        if since is None:
            return
        known = {f.ident for f in self._files()} | self._finished.keys()
        found, compressed = siblings.unseen(path, since - _SLACK_NS, known)
        for sibling in found:
            log.info("reading a rotated file no look saw", log=spec.name, path=path,
                     found=sibling.path)
            self._add_draining(Tracked(spec=spec, path=path, fd=sibling.fd,
                                       ident=sibling.ident, head=read_head(sibling.fd),
                                       offset=0, splitter=LineSplitter(self._max_line),
                                       changed_at=now), now)
        for name in compressed:
            log.warning("a rotated file was compressed before it was read", log=spec.name,
                        path=path, compressed=name)

    def _lose(self, f: Tracked, why: str) -> None:
        lost = max(f.size - f.line_start, 0)
        self._counters[f.spec.name].lost_bytes += lost
        log.warning("unread lines lost", log=f.spec.name, path=f.path, lost_bytes=lost,
                    why=why)

    def _drained_by(self) -> float:
        """When the first drained file will have been quiet long enough to be finished."""
        return min((f.changed_at + self._drain_quiet for f in self._draining),
                   default=float("inf"))

    def _drain_quiet_files(self, now: float) -> None:
        for f in list(self._draining):
            if now - f.changed_at < self._drain_quiet:
                continue
            self._read_file(f, now)
            if now - f.changed_at < self._drain_quiet:
                continue  # it grew after all
            c = self._counters[f.spec.name]
            long_before = f.splitter.long_lines
            rest = f.splitter.flush()  # its writer has moved on: the last line is complete
            c.long_lines += f.splitter.long_lines - long_before
            if rest:
                c.lines += 1
                self._on_lines(f.spec, f.path, rest)
            self._finished[f.ident] = None
            if len(self._finished) > 1024:
                del self._finished[next(iter(self._finished))]
            self._close(f)
            self._snapshot_soon = True
            log.info("rotated file finished", log=f.spec.name, path=f.path, offset=f.offset)

    # -- the look ----------------------------------------------------------------------

    def _look(self, now: float) -> None:
        """Match the specs against the file system (the source of truth) and act."""
        seen = observe(self._specs, waiting=lambda p: self._backoff.waiting(p, now),
                       followed=self._followed_in, fs=self._fs)
        wall = time.time_ns()
        self._report(seen, now)
        first = {s.path for s in self._specs} - self._checked
        current = {p: f.ident for p, f in self._current.items()}
        draining = {f.ident: f.path for f in self._draining}
        for action in decide(current, draining, seen):
            self._apply(action, first, now)
        for f in list(self._current.values()):
            if not f.head and f.path in self._looked_ns:
                # Nothing read and nothing to compare: a copytruncate now is invisible in
                # the file itself, but its copy holds lines never read.
                self._recover_unseen(f.spec, f.path, now)
        for path in seen.files:
            self._looked_ns[path] = wall
        self._checked |= first
        self._sync_watches(seen.dirs, now)
        self._publish()

    def _apply(self, action: Action, first: set[str], now: float) -> None:
        if action.kind == "rotated":
            self._stop_following(action.path, now, "log rotated")
        elif action.kind == "gone":
            self._stop_following(action.path, now, "log file gone")
        elif action.kind == "renamed":
            self._renamed(action)
        elif action.spec is not None and action.st is not None:
            spec_first = any(matches(p, action.path) for p in first)
            self._open(action.spec, action.path, spec_first, now)

    def _renamed(self, action: Action) -> None:
        """A followed or drained file moved to another name the specs match."""
        with self._lock:
            f = next((f for f in self._files() if f.ident == action.ident), None)
            if f is None or action.spec is None:
                return
            if f.draining:
                self._draining.remove(f)
                f.draining = False
            elif self._current.get(f.path) is f:
                del self._current[f.path]
            f.path, f.spec = action.path, action.spec
            self._current[action.path] = f

    def _open(self, spec: LogSpec, path: str, first: bool, now: float) -> None:
        if first:
            self._preexisting.add(path)
        try:
            fd, st = open_regular(path)
            head = read_head(fd)
        except FileNotFoundError:  # renamed since the look saw it (a rotation): look again
            self._hints.ask_look()
            return
        except OSError as e:
            self._fail(spec, path, e, now)
            return
        if head.startswith(GZIP_MAGIC):
            os.close(fd)
            self._skip(spec, path, "compressed (gzip): a glob should not match rotated files")
            return
        self._backoff.recovered(path)
        ident = (st.st_dev, st.st_ino)
        resumed = self._resumer.offset_for(path, ident)
        if resumed is not None:
            offset = resumed
        elif path in self._preexisting and not self._resumer.knew(path):
            offset = self._line_start_before(fd, st.st_size) if self._start_at == "end" else 0
        else:
            offset = 0  # created after start (or after the last snapshot): all of it
        self._preexisting.discard(path)
        f = Tracked(spec=spec, path=path, fd=fd, ident=ident, head=head, offset=offset,
                    splitter=LineSplitter(self._max_line), changed_at=now)
        if offset:
            f.restart_at(offset, self._max_line)
        with self._lock:
            self._current[path] = f
        self._snapshot_soon = self._opened = True
        log.info("following", log=spec.name, path=path, offset=offset)
        # A path looked at before had another file: files that were at the path between
        # the looks (renamed away before any look saw them there) are read whole
        self._recover_unseen(spec, path, now)

    def _line_start_before(self, fd: int, size: int) -> int:
        """Where the last (possibly unfinished) line starts, so "end" drops no line head."""
        start = max(size - self._max_line, 0)
        nl = os.pread(fd, size - start, start).rfind(b"\n")
        return start + nl + 1 if nl >= 0 else size

    def _report(self, seen: Observation, now: float) -> None:
        """Log what cannot be followed (once per episode) and count it."""
        for path, spec in seen.missing.items():
            if path not in self._missing and not any(f.path == path for f in self._files()):
                log.warning("log file missing, waiting for it", log=spec.name, path=path)
                self._counters[spec.name].read_errors += 1
                self._missing.add(path)
        for path in list(self._missing):
            if path in seen.files:
                self._missing.discard(path)
                log.info("log file appeared", path=path)
        for path, (spec, error) in seen.errors.items():
            self._fail(spec, path, OSError(error), now)
        for path, (spec, why) in seen.skipped.items():
            self._skip(spec, path, why)
        for path in list(self._skipped):
            if path not in seen.skipped and path not in seen.files:
                del self._skipped[path]
        for directory in seen.dirs - seen.errors.keys():
            self._backoff.recovered(directory)

    def _skip(self, spec: LogSpec, path: str, why: str) -> None:
        if self._skipped.get(path) != why:
            log.warning("not following", log=spec.name, path=path, why=why)
            self._skipped[path] = why

    def _followed_in(self, directory: str) -> list[str]:
        return [f.path for f in self._by_dir.get(directory, []) if not f.draining]

    # -- errors, open files, watches ---------------------------------------------------

    def _fail(self, spec: LogSpec, path: str, e: OSError, now: float) -> float:
        """Count an error, log it once per episode, and back off before the next try."""
        c = self._counters.get(spec.name)
        if c is not None:
            c.read_errors += 1
        return self._backoff.fail(path, e.strerror or str(e), now, log=spec.name)

    def _limit_open(self, now: float) -> bool:
        """Past ``max_open`` descriptors, close the followed files quiet the longest (they
        are opened again by path when they change); drained files stay open. Whether it
        is still past the bound (files that changed a moment ago are not closed yet)."""
        self._opened = False
        open_now = [f for f in self._current.values() if f.fd >= 0]
        excess = len(open_now) + len(self._draining) - self._max_open
        if excess <= 0:
            return False
        for f in sorted(open_now, key=lambda f: f.changed_at)[:excess]:
            if now - f.changed_at <= BURST_WINDOW:
                return True
            f.close()
        return False

    def _sync_watches(self, dirs: set[str], now: float) -> None:
        """Watch the wanted directories that exist, again if they were replaced."""
        w = self._watcher
        if w is None:
            self._unwatched = True
            return
        watched = w.watched()
        for d in watched.keys() - dirs:
            w.unwatch(d)
        unwatched = False
        for d in dirs:
            try:
                st = os.stat(d or ".")
            except OSError:  # not there (yet): only a look can see it come
                w.unwatch(d)
                unwatched = True
                continue
            ident = (st.st_dev, st.st_ino)
            if watched.get(d) == ident:
                continue
            if not self._watch_backoff.waiting(d, now) and w.watch(d, ident):
                self._watch_backoff.recovered(d)
            else:
                unwatched = True
                if not self._watch_backoff.waiting(d, now):
                    self._watch_backoff.fail(d, "cannot watch", now)
        # a directory that a glob may name later has no watch either
        self._unwatched = unwatched or any(glob.has_magic(os.path.dirname(s.path))
                                           for s in self._specs)

    def _publish(self) -> None:
        """Tell watchdog's thread which events are ours (swapped whole: no lock)."""
        by_dir: dict[str, list[Tracked]] = {}
        for f in self._files():
            by_dir.setdefault(os.path.dirname(f.path), []).append(f)
        self._by_dir = by_dir
        self._hints.hot = frozenset(self._current)
        self._hints.drain_dirs = frozenset(os.path.dirname(f.path) for f in self._draining)

    # -- specs and state ---------------------------------------------------------------

    def _spec_for(self, path: str) -> LogSpec | None:
        return next((s for s in self._specs if s.matches(path)), None)

    def _apply_specs(self) -> None:
        with self._lock:
            specs, self._pending_specs = self._pending_specs, None
            if specs is None:
                return
            self._specs = specs
            for name in {s.name for s in specs} - self._counters.keys():
                self._counters[name] = LogStats()
        for f in self._files():
            spec = self._spec_for(f.path)
            if spec is None:
                self._close(f)
            else:
                f.spec = spec
        with self._lock:
            names = {s.name for s in specs}
            for name in self._counters.keys() - names:
                del self._counters[name]
        self._checked &= {s.path for s in specs}
        self._publish()

    def _take_up(self, found: list[Tracked]) -> None:
        """Drain the files the resumer found rotated or copied while stopped."""
        for f in found:
            self._add_draining(f, time.monotonic())

    def _snapshot(self) -> None:
        self._snapshot_soon = False
        if self._state_file is None:
            return
        extra = self._snapshot_extra() if self._snapshot_extra is not None else {}
        self._state_file.save(State(files=tuple(f.saved() for f in self._files()),
                                    patterns=tuple(s.path for s in self._specs),
                                    extra=extra, saved_at=time.time()))

    def _close(self, f: Tracked) -> None:
        with self._lock:
            if f.draining:
                if f in self._draining:
                    self._draining.remove(f)
            elif self._current.get(f.path) is f:
                del self._current[f.path]
        f.close()

