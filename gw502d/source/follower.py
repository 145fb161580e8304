"""Follow log files like a production tailer: rotation, restarts and bad files lose nothing.

One thread (the caller of :meth:`Follower.run`) does all the reading, calls ``on_lines``,
keeps the offsets and writes the snapshots, so the callback's counters need no locks and
a snapshot is consistent. watchdog's threads only record a hint and wake that loop; a
periodic ``os.stat`` check every ``stat_interval`` seconds is the source of truth, so a
missed or dropped event costs latency, never lines.

What a check sees and what the follower does:

- the path names another inode (rename + create, delete + recreate, atomic replace, the
  directory moved away and recreated): the old file is kept open and read until it has
  been quiet for ``max(1, 5 * stat_interval)`` s (nginx writes to ``.1`` until USR1), the
  new file is read from 0;
- the path is gone: the open file is drained the same way; if no new file has come by
  the time it is finished, the path is reported missing (once);
- the file is shorter than the offset, or its first bytes changed (copytruncate): the
  rest of the old content is read from the copy logrotate left beside it when one starts
  with the same bytes, otherwise the unread bytes are counted in ``lost_bytes``; the file
  is then read from 0.

Offsets never pass the start of an unfinished line. After a restart a file resumes at its
saved offset if (st_dev, st_ino) and the fingerprint of its first bytes still match; a
file rotated while the daemon was down is looked for by inode, a copytruncate copy by
fingerprint, in the same directory. Limits: one rotation per file while the daemon was
down can be recovered (the older ones are not looked for), and bytes a writer appended
between logrotate's copy and its truncate are gone before anything can read them.
"""

# Paths stay str end to end (LogSpec.path, the callback's path, watchdog's events), and
# absolute glob patterns have no pathlib equivalent, hence os.path and os.stat here.
# ruff: noqa: PTH112, PTH116, PTH118, PTH120, PTH207

from __future__ import annotations

import fnmatch
import glob
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import structlog

from gw502d.source.identity import fingerprint, has_fingerprint, read_head
from gw502d.source.lines import BLOCK_SIZE, LineSplitter
from gw502d.source.spec import LogSpec, matches
from gw502d.source.state import SavedFile, State, StateFile
from gw502d.source.watch import Ident, Watcher

log = structlog.get_logger("gw502d.follower")

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY  # a FIFO must not block
_PASS_BLOCKS = 16  # blocks read from one file before the others get their turn
_MAX_SLEEP = 0.5  # longest wait, so a set ``stop`` is seen without a wake()
_MAX_BACKOFF = 60.0
_BURST_WINDOW = 0.01  # while a directory is busy, read it at most this often


LinesCallback = Callable[[LogSpec, str, list[bytes]], None]


@dataclass
class LogStats:
    """Counters of one log (spec name), copied out by :meth:`Follower.stats`.

    ``offset`` and ``size`` add up the files currently at the log's path(s), so
    ``size - offset`` is the backlog; ``open_files`` includes rotated files still drained.
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
    lost_bytes: int = 0


@dataclass(eq=False, slots=True)
class _File:
    """An open file: where it is read up to and what it looked like at the last look."""

    spec: LogSpec
    path: str  # the log's path; a drained file keeps the name it had when followed
    fd: int
    ident: Ident
    head: bytes
    offset: int  # bytes read; the next unread line starts at offset - splitter.pending()
    splitter: LineSplitter
    size: int = -1
    mtime: int = -1
    changed_at: float = 0.0
    draining: bool = False
    retry_at: float = 0.0

    def saved(self) -> SavedFile:
        return SavedFile(path=self.path, dev=self.ident[0], ino=self.ident[1],
                         fingerprint=fingerprint(self.head),
                         offset=self.offset - self.splitter.pending())


@dataclass(slots=True)
class _Trouble:
    error: str
    delay: float
    retry_at: float


@dataclass(slots=True)
class _Hints:
    """What watchdog's threads saw since the loop last looked (guarded by ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    paths: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)  # IN_MODIFY turned off: the loop must poll
    drain: bool = False
    changed: bool = False
    overflow: bool = False


class Follower:
    """Follows the files of ``specs`` and hands their complete lines to ``on_lines``.

    >>> f = Follower([LogSpec("/var/log/nginx/*error.log", "nginx", "nginx")],
    ...              on_lines, state_dir=Path("/var/lib/gw502d"))   # doctest: +SKIP
    >>> threading.Thread(target=f.run, args=(stop,)).start()        # doctest: +SKIP
    """

    def __init__(self, specs: Sequence[LogSpec], on_lines: LinesCallback, *,
                 state_dir: Path | None,
                 start_at: Literal["end", "beginning"] = "end", max_line: int = 65536,
                 stat_interval: float = 2.0, snapshot_interval: float = 10.0,
                 snapshot_extra: Callable[[], dict[str, Any]] | None = None,
                 use_inotify: bool = True) -> None:
        self._specs = tuple(specs)
        self._on_lines = on_lines
        self._start_at = start_at
        self._max_line = max_line
        self._stat_interval = stat_interval
        self._snapshot_interval = snapshot_interval
        self._snapshot_extra = snapshot_extra
        self._use_inotify = use_inotify
        self._drain_quiet = max(1.0, 5 * stat_interval)

        self._lock = threading.Lock()  # guards the file registry and counters for stats()
        self._counters = {s.name: LogStats() for s in self._specs}
        self._current: dict[str, _File] = {}
        self._draining: list[_File] = []
        self._troubles: dict[str, _Trouble] = {}
        self._missing: set[str] = set()
        self._checked: set[str] = set()  # spec paths past their first check
        self._preexisting: set[str] = set()  # seen at a first check, not opened yet
        self._pending_specs: tuple[LogSpec, ...] | None = None
        self._resume_at: dict[str, SavedFile] = {}  # saved positions not taken up yet

        self._wake = threading.Event()
        self._hints = _Hints()
        self._bursts: dict[str, float] = {}  # directory with IN_MODIFY off -> next poll
        self._snapshot_soon = False  # a rotation or truncation: save before the interval
        self._hot: frozenset[str] = frozenset()
        self._drain_dirs: frozenset[str] = frozenset()
        self._watcher: Watcher | None = None
        self._heartbeat: float | None = None

        self._state_file = StateFile(state_dir) if state_dir is not None else None
        self._restored = self._state_file.load() if self._state_file is not None else None
        self.restored_extra: dict[str, Any] = (
            dict(self._restored.extra) if self._restored is not None else {}
        )
        self._known_patterns = self._restored.patterns if self._restored is not None else ()

    # -- the public surface ------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """The reader loop; returns after a final snapshot once ``stop`` is set.

        Call :meth:`wake` after setting ``stop`` to return at once (otherwise within
        half a second).
        """
        self._heartbeat = time.monotonic()
        if self._use_inotify:
            watcher = Watcher(self._notify, self._notify_overflow)
            self._watcher = watcher if watcher.start() else None
        try:
            self._restore(time.monotonic())
            self._loop(stop)
            self._snapshot()
        finally:
            if self._watcher is not None:
                self._watcher.stop()
                self._watcher = None
            self._close_all()
            self._heartbeat = None

    def wake(self) -> None:
        """Ask the loop to look at the files now."""
        with self._hints.lock:
            self._hints.changed = True
        self._wake.set()

    def stats(self) -> dict[str, LogStats]:
        """Per spec name; safe to call from any thread."""
        with self._lock:
            out = {name: replace(c) for name, c in self._counters.items()}
            for f in self._files():
                s = out[f.spec.name]
                s.open_files += 1
                if not f.draining:
                    s.offset += f.offset
                    s.size += max(f.size, f.offset)
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

    # -- watchdog's threads ------------------------------------------------------------

    def _notify(self, kind: str, path: str) -> None:
        """Record a hint and wake the loop (in watchdog's reader thread)."""
        hints = self._hints
        if kind != "modified":
            with hints.lock:
                hints.changed = True
            self._wake.set()
            return
        d = os.path.dirname(path)
        hot = path in self._hot
        if not hot and d not in self._drain_dirs:
            return  # another program's file in the same directory
        # IN_MODIFY off before the hint is recorded, so the loop's rearm (after it has
        # polled the directory for this hint) always comes after this disarm.
        watcher = self._watcher
        if watcher is not None:
            watcher.disarm(d)
        with hints.lock:
            if hot:
                hints.paths.add(path)
            else:
                hints.drain = True
            hints.dirs.add(d)
        self._wake.set()

    def _notify_overflow(self) -> None:
        with self._hints.lock:
            self._hints.overflow = self._hints.changed = True
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------

    def _loop(self, stop: threading.Event) -> None:
        now = time.monotonic()
        next_check = now
        next_snapshot = now + self._snapshot_interval
        overflow_logged = False
        while not stop.is_set():
            now = time.monotonic()
            self._heartbeat = now
            hints = self._hints
            with hints.lock:
                paths, hints.paths = hints.paths, set()
                dirs, hints.dirs = hints.dirs, set()
                changed, drain, overflow = hints.changed, hints.drain, hints.overflow
                hints.changed = hints.drain = hints.overflow = False
            if overflow and not overflow_logged:
                log.warning("inotify queue overflowed, checking every file with stat")
                overflow_logged = True
            if self._pending_specs is not None:
                self._apply_specs()
                changed = True
            if changed or now >= next_check:
                self._check(now)
                next_check = now + self._stat_interval
                _, more = self._read(self._files(), now)
            else:
                more = self._read_hinted(paths, drain, dirs, now)
            for d in dirs:
                self._bursts.setdefault(d, now + _BURST_WINDOW)
            more |= self._poll_bursts(now)
            if now >= next_snapshot or self._snapshot_soon:
                self._snapshot()
                next_snapshot = now + self._snapshot_interval
            if not more:
                due = min(next_check, next_snapshot, *self._bursts.values())
                self._wake.wait(min(max(due - time.monotonic(), 0.0), _MAX_SLEEP))
            self._wake.clear()

    def _files(self) -> list[_File]:
        return [*self._current.values(), *self._draining]

    def _read_hinted(self, paths: set[str], drain: bool, dirs: set[str], now: float) -> bool:
        """Read the files inotify named, unless their directory is in a burst already.

        The first write after a quiet spell is read at once; the reader thread has then
        turned the directory's IN_MODIFY off (``dirs``) and :meth:`_poll_bursts` reads it
        every ``_BURST_WINDOW`` until a poll finds nothing, so a busy log costs one read
        per window instead of a wake-up in two threads per write().
        """
        files = [self._current[p] for p in paths if p in self._current]
        if drain:
            files += self._draining
        return self._read([f for f in files if os.path.dirname(f.path) not in self._bursts],
                          now)[1]

    def _poll_bursts(self, now: float) -> bool:
        """Poll the directories whose IN_MODIFY is off; turn it back on once quiet."""
        more = False
        for d, due in list(self._bursts.items()):
            if now < due:
                continue
            files = [f for f in self._files() if os.path.dirname(f.path) == d]
            got, more_here = self._read(files, now)
            if not got and self._watcher is not None:
                self._watcher.rearm(d)
                got, more_here = self._read(files, now)  # what came before the rearm
            if got:
                self._bursts[d] = now + _BURST_WINDOW
            else:
                del self._bursts[d]
            more |= more_here
        return more

    def _read(self, files: Iterable[_File], now: float) -> tuple[int, bool]:
        """Read what the files have: (bytes read, whether one has more than a pass takes)."""
        got = 0
        more = False
        for f in files:
            if f.fd >= 0 and f.retry_at <= now:
                got += self._read_file(f, now)
                more |= f.offset < f.size
        return got, more

    def _read_file(self, f: _File, now: float) -> int:
        start = f.offset
        try:
            st = os.fstat(f.fd)
            if st.st_size != f.size or st.st_mtime_ns != f.mtime:
                if st.st_size < f.offset or not self._same_head(f):
                    self._truncated(f, now)
                    start = 0
                f.size, f.mtime, f.changed_at = st.st_size, st.st_mtime_ns, now
            if f.offset < st.st_size:
                self._read_blocks(f, st.st_size)
        except OSError as e:
            self._fail(f.spec, f.path, e, now)
            f.retry_at = self._troubles[f.path].retry_at
            return 0
        if f.retry_at:
            f.retry_at = 0.0
            self._recovered(f.path)
        return f.offset - start

    def _read_blocks(self, f: _File, size: int) -> None:
        c = self._counters[f.spec.name]
        splitter = f.splitter
        for _ in range(_PASS_BLOCKS):
            if f.offset >= size:
                return
            block = os.pread(f.fd, min(BLOCK_SIZE, size - f.offset), f.offset)
            if not block:
                f.size = f.offset  # shrank since fstat; the next look settles it
                return
            f.offset += len(block)
            c.bytes += len(block)
            long_before = splitter.long_lines
            lines = splitter.feed(block)
            if splitter.long_lines != long_before:
                c.long_lines += splitter.long_lines - long_before
            if lines:
                c.lines += len(lines)
                self._on_lines(f.spec, f.path, lines)

    def _same_head(self, f: _File) -> bool:
        """Whether the file still starts as it did; grows the kept head up to 1 KiB."""
        head = read_head(f.fd)
        if not head.startswith(f.head):
            return False
        f.head = head
        return True

    # -- rotation, truncation, draining ------------------------------------------------

    def _truncated(self, f: _File, now: float) -> None:
        """copytruncate: finish the old content from its copy if there is one, then 0."""
        c = self._counters[f.spec.name]
        # Bytes may have been appended after the last look, so a copy is worth looking
        # for even when everything seen was read; only what was seen can be counted.
        lost = max(f.size - f.offset, 0) + f.splitter.pending()
        copy = None
        if f.offset:
            copy = self._find_sibling(f.path, fingerprint(f.head), f.offset, exclude=f.ident)
        if copy is not None:
            _, fd, st = copy
            # The copy continues the unfinished line, so it takes over the splitter.
            self._add_draining(_File(spec=f.spec, path=f.path, fd=fd, ident=(st.st_dev, st.st_ino),
                                     head=read_head(fd), offset=f.offset, splitter=f.splitter),
                               now)
            lost = max(f.size - st.st_size, 0)
        c.truncations += 1
        c.lost_bytes += lost
        self._snapshot_soon = True
        log.warning("log truncated", log=f.spec.name, path=f.path, lost_bytes=lost,
                    rest_read_from=copy[0] if copy is not None else None)
        f.splitter = LineSplitter(self._max_line)
        f.offset = 0
        f.head = read_head(f.fd)

    def _find_sibling(self, path: str, fp: str, min_size: int, *,
                      exclude: Ident | None = None, ident: Ident | None = None,
                      ) -> tuple[str, int, os.stat_result] | None:
        """An open file beside ``path`` that starts with the bytes of ``fp``.

        With ``ident`` it is the file with that inode under any name (rename rotation);
        without, a copy whose name starts with the log's name (copytruncate), the newest
        if several match.
        """
        directory, base = os.path.split(path)
        best: tuple[str, int, os.stat_result] | None = None
        try:
            with os.scandir(directory or ".") as it:
                entries = [e for e in it if (e.inode() == ident[1] if ident
                                             else e.name.startswith(base) and e.name != base)]
        except OSError:
            return None
        for e in entries:
            try:
                fd = os.open(e.path, _OPEN_FLAGS)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                ok = (stat.S_ISREG(st.st_mode) and st.st_size >= min_size
                      and (st.st_dev, st.st_ino) != exclude
                      and (ident is None or (st.st_dev, st.st_ino) == ident)
                      and has_fingerprint(fd, fp))
            except OSError:
                ok = False
            if ok and (best is None or st.st_mtime_ns > best[2].st_mtime_ns):
                if best is not None:
                    os.close(best[1])
                best = (e.path, fd, st)
            else:
                os.close(fd)
        return best

    def _add_draining(self, f: _File, now: float) -> None:
        f.draining = True
        f.changed_at = now
        self._snapshot_soon = True
        with self._lock:
            self._draining.append(f)
        self._publish()

    def _stop_following(self, f: _File, now: float, event: str) -> None:
        """The path no longer names ``f``: count a rotation and drain ``f``."""
        with self._lock:
            del self._current[f.path]
        self._counters[f.spec.name].rotations += 1
        log.info(event, log=f.spec.name, path=f.path, unread_bytes=max(f.size - f.offset, 0))
        self._add_draining(f, now)

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
            self._close(f)
            self._snapshot_soon = True
            log.info("rotated file finished", log=f.spec.name, path=f.path, offset=f.offset)

    # -- the stat check ----------------------------------------------------------------

    def _check(self, now: float) -> None:
        """Match the specs against the file system: the source of truth."""
        keep: set[str] = set()
        dirs: set[str] = set()
        for spec in self._specs:
            first = spec.path not in self._checked
            for path, st in self._expand(spec, keep, dirs, now):
                self._follow(spec, path, st, first, now)
                keep.add(path)
            self._checked.add(spec.path)
        for f in list(self._current.values()):
            if f.path not in keep:
                self._stop_following(f, now, "log file gone")
        self._drain_quiet_files(now)
        self._sync_watches(dirs, now)
        self._publish()

    def _expand(self, spec: LogSpec, keep: set[str], dirs: set[str],
                now: float) -> Iterator[tuple[str, os.stat_result]]:
        """The regular files ``spec`` names now; paths it cannot decide go into ``keep``."""
        if not spec.is_glob:
            dirs.add(os.path.dirname(spec.path))
            st = self._stat(spec, spec.path, keep, now)
            if st is not None:
                yield spec.path, st
            return
        pdir, pbase = os.path.split(spec.path)
        found = sorted(glob.glob(pdir)) if glob.has_magic(pdir) else [pdir]
        for directory in found:
            dirs.add(directory)
            if self._backing_off(directory, now):
                keep.update(p for p in self._current if os.path.dirname(p) == directory)
                continue
            try:
                with os.scandir(directory or ".") as it:
                    names = sorted(e.name for e in it if fnmatch.fnmatchcase(e.name, pbase)
                                   and (pbase.startswith(".") or not e.name.startswith(".")))
            except FileNotFoundError:
                continue
            except OSError as e:
                if os.path.isdir(directory or "."):  # glob also lists files for a dir pattern
                    self._fail(spec, directory, e, now)
                    keep.update(p for p in self._current if os.path.dirname(p) == directory)
                continue
            self._recovered(directory)
            for name in names:
                path = os.path.join(directory, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # gone since the listing; the next check settles it
                if stat.S_ISREG(st.st_mode):
                    yield path, st

    def _stat(self, spec: LogSpec, path: str, keep: set[str],
              now: float) -> os.stat_result | None:
        """``os.stat`` of an exact path, with its errors logged once and counted."""
        if self._backing_off(path, now):
            keep.add(path)
            return None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            # Not while the file of this path is still followed or drained: a new may come.
            if path not in self._missing and not any(f.path == path for f in self._files()):
                log.warning("log file missing, waiting for it", log=spec.name, path=path)
                self._counters[spec.name].read_errors += 1
                self._missing.add(path)
            return None
        except OSError as e:
            self._fail(spec, path, e, now)
            keep.add(path)
            return None
        if path in self._missing:
            self._missing.discard(path)
            log.info("log file appeared", log=spec.name, path=path)
        if not stat.S_ISREG(st.st_mode):
            what = "is a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            self._fail(spec, path, OSError(what), now)
            return None
        return st

    def _follow(self, spec: LogSpec, path: str, st: os.stat_result, first: bool,
                now: float) -> None:
        ident = (st.st_dev, st.st_ino)
        f = self._current.get(path)
        if f is not None:
            if f.ident == ident:
                return
            self._stop_following(f, now, "log rotated")
        for other in self._files():
            if other.ident == ident:  # renamed to a name the spec matches too
                with self._lock:
                    if other.draining:
                        self._draining.remove(other)
                        other.draining = False
                    else:
                        del self._current[other.path]
                    other.path, other.spec = path, spec
                    self._current[path] = other
                return
        if first:
            self._preexisting.add(path)
        opened = self._open(spec, path, now)
        if opened is None:
            return
        fd, st = opened
        saved = self._resume_at.pop(path, None)
        if saved is not None and (saved.dev, saved.ino) == ident:
            offset = self._resumed_offset(spec, path, fd=fd, st=st, saved=saved, now=now)
        elif path in self._preexisting and not any(
                matches(p, path) for p in self._known_patterns):
            offset = self._line_start_before(fd, st.st_size) if self._start_at == "end" else 0
        else:
            offset = 0  # created after start (or after the last snapshot): all of it
        self._preexisting.discard(path)
        f = _File(spec=spec, path=path, fd=fd, ident=ident, head=read_head(fd), offset=offset,
                  splitter=LineSplitter(self._max_line), changed_at=now)
        with self._lock:
            self._current[path] = f
        self._snapshot_soon = True
        log.info("following", log=spec.name, path=path, offset=offset)

    def _open(self, spec: LogSpec, path: str, now: float) -> tuple[int, os.stat_result] | None:
        """Open a regular file for reading; errors are counted and backed off."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as e:
            self._fail(spec, path, e, now)
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError("not a regular file")  # noqa: TRY301 - one cleanup path
        except OSError as e:
            os.close(fd)
            self._fail(spec, path, e, now)
            return None
        self._recovered(path)
        return fd, st

    def _resumed_offset(self, spec: LogSpec, path: str, *, fd: int, st: os.stat_result,
                        saved: SavedFile, now: float) -> int:
        """The saved offset if the file is still the saved one, else 0 (after its copy)."""
        if st.st_size >= saved.offset and has_fingerprint(fd, saved.fingerprint):
            log.info("resumed", log=spec.name, path=path, offset=saved.offset)
            return saved.offset
        # Same inode, other first bytes: truncated (or the inode reused) while stopped.
        self._counters[spec.name].truncations += 1
        self._drain_found(spec, saved, self._find_sibling(
            path, saved.fingerprint, saved.offset, exclude=(saved.dev, saved.ino)), now)
        return 0

    def _line_start_before(self, fd: int, size: int) -> int:
        """Where the last (possibly unfinished) line starts, so "end" drops no line head."""
        start = max(size - self._max_line, 0)
        nl = os.pread(fd, size - start, start).rfind(b"\n")
        return start + nl + 1 if nl >= 0 else size

    # -- errors ------------------------------------------------------------------------

    def _fail(self, spec: LogSpec, path: str, e: OSError, now: float) -> None:
        """Count an error, log it once per episode, and back off before the next try."""
        self._counters[spec.name].read_errors += 1
        error = e.strerror or str(e)
        t = self._troubles.get(path)
        if t is None:
            log.warning("cannot read log", log=spec.name, path=path, error=error)
            t = self._troubles[path] = _Trouble(error, self._stat_interval, now)
        else:
            t.delay = min(t.delay * 2, _MAX_BACKOFF)
            if t.error != error:
                log.warning("cannot read log", log=spec.name, path=path, error=error)
                t.error = error
        t.retry_at = now + t.delay

    def _backing_off(self, path: str, now: float) -> bool:
        t = self._troubles.get(path)
        return t is not None and now < t.retry_at

    def _recovered(self, path: str) -> None:
        if self._troubles.pop(path, None) is not None:
            log.info("log readable again", path=path)

    # -- watches -----------------------------------------------------------------------

    def _sync_watches(self, dirs: set[str], now: float) -> None:
        """Watch the wanted directories that exist, again if they were replaced."""
        w = self._watcher
        if w is None:
            return
        watched = w.watched()
        for d in watched.keys() - dirs:
            w.unwatch(d)
        for d in dirs:
            key = "watch:" + d
            try:
                st = os.stat(d or ".")
            except OSError:
                w.unwatch(d)
                continue
            ident = (st.st_dev, st.st_ino)
            if watched.get(d) == ident or self._backing_off(key, now):
                continue
            if w.watch(d, ident):
                self._troubles.pop(key, None)
            else:
                t = self._troubles.setdefault(key, _Trouble("", self._stat_interval / 2, now))
                t.delay = min(t.delay * 2, _MAX_BACKOFF)
                t.retry_at = now + t.delay

    def _publish(self) -> None:
        """Tell watchdog's threads which events are ours (swapped whole: no lock)."""
        self._hot = frozenset(self._current)
        self._drain_dirs = frozenset(os.path.dirname(f.path) for f in self._draining)

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

    def _restore(self, now: float) -> None:
        """Take up the saved state: files still at their path resume when the first check
        follows them; files rotated while stopped are found by inode and drained."""
        state, self._restored = self._restored, None
        if state is None:
            return
        # Per path: a deleted file's inode number is free again once the old process died.
        saved_idents = {(s.path, s.dev, s.ino) for s in state.files}
        rotated: set[str] = set()
        for saved in state.files:
            spec = self._spec_for(saved.path)
            if spec is None:
                continue
            try:
                st: os.stat_result | None = os.stat(saved.path)
            except OSError:
                st = None
            here = (st.st_dev, st.st_ino) if st is not None else None
            if here == (saved.dev, saved.ino) and saved.path not in self._resume_at:
                self._resume_at[saved.path] = saved
                continue
            known = here is not None and (saved.path, *here) in saved_idents
            if not known and saved.path not in rotated:
                self._counters[spec.name].rotations += 1  # rotated while stopped
                rotated.add(saved.path)
            self._drain_found(spec, saved, self._find_sibling(
                saved.path, saved.fingerprint, saved.offset, ident=(saved.dev, saved.ino)), now)

    def _drain_found(self, spec: LogSpec, saved: SavedFile,
                     found: tuple[str, int, os.stat_result] | None, now: float) -> None:
        """Read a file found for ``saved`` (rotated or copied while stopped) to its end."""
        if found is None:
            log.warning("file changed while stopped and is gone; any unread rest is lost",
                        log=spec.name, path=saved.path, offset=saved.offset)
            return
        path, fd, st = found
        log.info("resumed rotated file", log=spec.name, path=saved.path, found=path,
                 offset=saved.offset)
        self._add_draining(_File(spec=spec, path=saved.path, fd=fd,
                                 ident=(st.st_dev, st.st_ino), head=read_head(fd),
                                 offset=saved.offset, splitter=LineSplitter(self._max_line),
                                 changed_at=now), now)

    def _snapshot(self) -> None:
        self._snapshot_soon = False
        if self._state_file is None:
            return
        extra = self._snapshot_extra() if self._snapshot_extra is not None else {}
        self._state_file.save(State(files=tuple(f.saved() for f in self._files()),
                                    patterns=tuple(s.path for s in self._specs),
                                    extra=extra))

    def _close(self, f: _File) -> None:
        with self._lock:
            if f.draining:
                self._draining.remove(f)
            elif self._current.get(f.path) is f:
                del self._current[f.path]
        os.close(f.fd)
        f.fd = -1

    def _close_all(self) -> None:
        for f in self._files():
            self._close(f)


