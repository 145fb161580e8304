"""Follow the systemd journal through ``journalctl``: exactly once, restarts lose nothing.

We spawn ``journalctl --follow --merge --no-tail --all --output=json`` with the spec's
matches, as Vector does, instead of binding libsystemd (no native dependency). What
systemd 252 (Debian 12) does, checked against ``journalctl`` 252.39 on journal files
written by ``systemd-journal-remote``:

- ``--follow`` without ``--merge`` implies ``--boot``: only the newest boot in the journal
  is shown (and on an empty directory it exits: "Data from the specified boot (+0) is not
  available"). Without ``--merge`` the host's journal is also only
  ``/var/log/journal/<this machine-id>``, so a container with the host's journal mounted
  sees nothing. Hence always ``--merge``, never ``--boot``.
- ``--follow`` implies ``--lines=10`` even with ``--cursor``: only 10 entries are printed
  until the next entry is appended. Hence ``--no-tail``.
- ``--after-cursor=C`` with a field match skips the first *matching* entry when C's own
  entry does not match (fixed upstream in v255, not in 252). So we resume with the
  inclusive ``--cursor=C`` and drop the first record only if its ``__CURSOR`` is C.
- ``--output=json`` writes a field longer than 4096 bytes as ``null`` unless ``--all``,
  and a value that is not printable UTF-8 as an array of byte values; a field present
  twice is an array of values. The order of fields in a line is not fixed (``MESSAGE``
  may come before ``__CURSOR``).
- With a match, journalctl can miss an entry it read while the writer was still linking
  it: it counts a file's entries before they are linked to the match's data, and looks at
  a file again only when that count changes. journald renames the file it rotates, which
  makes readers open it anew and find the entry; a writer that leaves a file as it is and
  goes on in one of another name can lose it (once in some 3,600 such switches here,
  never in 3,800 with the rename).
- A bad cursor makes journalctl exit ("Failed to seek to cursor"); a cursor whose entry
  is gone is accepted and journalctl starts near where it was. So before each start a
  probe (``--cursor=C --lines=1`` without matches) checks that C's entry still exists.
  If not, the loss is counted and logged, and we follow from C's own time
  (``--since=@SECONDS``, inclusive), never from the oldest entry: the probe also missed
  an entry that was there, once, in a torture test whose writer renames files as
  journald rotates them, and starting over would have counted everything again.

The position (``cursor``) advances for every record journalctl emits, with or without a
message, and is saved with the counters the callback fills: :attr:`JournalFollower.lock`
is held while ``on_records`` runs and the cursor moves, so a snapshot taken under it
counts every record exactly once. ``""`` (:data:`HEAD`) is the journal's oldest entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal

import structlog

from gw502d.source.lines import BLOCK_SIZE
from gw502d.source.spec import JournalSpec

log = structlog.get_logger("gw502d.journal")

#: The position of a journal's oldest entry (nothing read yet, or vacuumed past the cursor).
HEAD = ""
JOURNALCTL = ("journalctl",)
FIELDS = ("MESSAGE", "SYSLOG_IDENTIFIER", "_SYSTEMD_UNIT")  # __CURSOR and times always come
HOST_JOURNALS = ("/var/log/journal", "/run/log/journal")
PERMISSION_HINT = ("no permission to read the journal: run gw502d in the systemd-journal "
                   "group (SupplementaryGroups=systemd-journal in its unit)")

_TAIL = 4096  # bytes kept from the end of an oversized record: its short fields may be there
_MAX_TAG = 256
_MAX_SLEEP = 0.5  # longest wait, so a set ``stop`` is seen without a wake()
_BURST_WINDOW = 0.01  # while journalctl writes, read at most this often (fewer, larger reads)
_PROBE_TIMEOUT = 10.0
_HEALTHY_RUN = 30.0  # a journalctl that ran this long restarts without backoff
_SETTLED = 5.0  # a restarted journalctl running this long clears the problem of its exit
_FILES_CHECK = 30.0  # while nothing arrives, look for journal files this often
_STDERR_KEEP = 8
_CURSOR = re.compile(r"s=[0-9a-f]{32};i=[0-9a-f]+;b=[0-9a-f]{32};"
                     r"m=[0-9a-f]+;t=[0-9a-f]+;x=[0-9a-f]+")
_MACHINE_ID = re.compile(r"[0-9a-f]{32}")

RecordsCallback = Callable[[JournalSpec, list[bytes], list[float], list[str]], None]


class JournalError(OSError):
    """A journal that cannot be read (``scan``); the message names it and says why."""


@dataclass
class JournalStats:
    """Counters of one journal source, copied out by :meth:`JournalFollower.stats`.

    ``records`` counts entries journalctl emitted (those without a message too); ``lines``
    what went to the callback (a multi-line message gives several); ``bytes`` their size.
    """

    records: int = 0
    lines: int = 0
    bytes: int = 0
    long_lines: int = 0
    restarts: int = 0  # journalctl exited (or was killed) and was started again
    errors: int = 0  # records not understood, failed starts and exits of journalctl
    vacuumed: int = 0  # starts whose saved cursor's entry was gone
    last_record_timestamp: float = 0.0  # the last record's __REALTIME_TIMESTAMP (0: none yet)
    last_record_age: float | None = None  # seconds since then, when stats() was called


@dataclass(slots=True)
class _Batch:
    """What one read of journalctl's output gave."""

    lines: list[bytes] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    records: int = 0
    errors: int = 0
    long_lines: int = 0
    cursor: str | None = None  # of the last record, emitted or dropped
    last_time: float = 0.0


def source_args(spec: JournalSpec) -> list[str]:
    """The journal journalctl opens: ``--directory``, ``--file`` or the host's."""
    if spec.directory is not None:
        return [f"--directory={spec.directory}"]
    if spec.file is not None:
        return [f"--file={spec.file}"]
    return []


def match_args(spec: JournalSpec) -> list[str]:
    """journalctl matches: the units OR the identifiers (``+`` joins the two groups)."""
    units = [f"_SYSTEMD_UNIT={u if '.' in u else u + '.service'}" for u in spec.units]
    idents = [f"SYSLOG_IDENTIFIER={i}" for i in spec.identifiers]
    return [*units, "+", *idents] if units and idents else units + idents


def _output_args(fields: Sequence[str] = FIELDS) -> list[str]:
    """JSON lines of ``fields`` (the cursor and times come always), every field in full."""
    return ["--merge", "--all", "--no-pager", "--output=json",
            f"--output-fields={','.join(fields)}"]


# -- journalctl's JSON -> lines ------------------------------------------------------------


def _value_bytes(value: Any) -> list[bytes]:
    """A field's values as bytes: a string, an array of byte values, or several of those."""
    if isinstance(value, str):
        return [value.encode("utf-8", "backslashreplace")]
    if isinstance(value, list):
        try:
            return [bytes(value)]
        except TypeError:  # not byte values: the values of a field present more than once
            return [b for v in value for b in _value_bytes(v)]
        except ValueError:  # a number above 255: not from journalctl
            return []
    return []


_SHORT_FIELD = re.compile(rb'"(__CURSOR|__REALTIME_TIMESTAMP|SYSLOG_IDENTIFIER|_SYSTEMD_UNIT)":'
                          rb'("(?:[^"\\]|\\.)*")')
_MESSAGE_START = re.compile(rb'"MESSAGE":(?:"((?:[^"\\]|\\.)*)|\[((?:\d+,)*))')
_PARTIAL_ESCAPE = re.compile(rb"\\(?:u[0-9a-fA-F]{0,3})?$")


def _salvage(head: bytes, tail: bytes) -> dict[str, Any]:
    """The fields of a record too long to keep: short ones from its head or tail, and
    the start of MESSAGE from its head (the rest is beyond any line cap anyway)."""
    rec: dict[str, Any] = {}
    for part in (head, tail):
        for m in _SHORT_FIELD.finditer(part):
            with contextlib.suppress(ValueError):
                rec.setdefault(m[1].decode(), json.loads(m[2]))
    start = _MESSAGE_START.search(head)
    if start is not None:
        if start[1] is not None:
            with contextlib.suppress(ValueError):
                rec["MESSAGE"] = json.loads(b'"' + _PARTIAL_ESCAPE.sub(b"", start[1]) + b'"')
        else:
            rec["MESSAGE"] = [int(x) for x in start[2].split(b",")[:-1]]
    return rec


class _Decoder:
    """journalctl's JSON lines, read in chunks, to lines, times and tags.

    A JSON line is kept whole up to ``8 * max_line + 64 KiB`` (the escaping of a message
    of ``max_line`` bytes fits); a longer one keeps only its head and last 4 KiB, from
    which :func:`_salvage` takes the cursor, time, tag and the start of the message, so
    memory stays bounded whatever a program logs.
    """

    def __init__(self, max_line: int, skip: str | None = None) -> None:
        self.max_line = max_line
        self.cap = 8 * max_line + 65536
        self.skip = skip  # the first record is dropped if it has this cursor
        self._pending = b""
        self._big: tuple[bytes, bytes] | None = None

    def feed(self, chunk: bytes) -> _Batch:
        """Decode a chunk of output; the unfinished last line waits for the next one."""
        batch = _Batch()
        if self._big is not None:
            head, tail = self._big
            nl = chunk.find(b"\n")
            if nl < 0:
                self._big = (head, (tail + chunk)[-_TAIL:])
                return batch
            self._big = None
            self._add(batch, [_salvage(head, (tail + chunk[:nl])[-_TAIL:])])
            chunk = chunk[nl + 1:]
        lines = (self._pending + chunk).split(b"\n") if self._pending else chunk.split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > self.cap:
            self._big = (self._pending[:self.cap], self._pending[-_TAIL:])
            self._pending = b""
        if lines:
            self._add(batch, _parse(lines, batch))
        return batch

    def _add(self, batch: _Batch, records: list[Any]) -> None:
        cap = self.max_line
        out, times, tags = batch.lines, batch.times, batch.tags
        for rec in records:
            cursor = rec.get("__CURSOR") if type(rec) is dict else None
            if type(cursor) is not str:
                batch.errors += 1
                continue
            batch.cursor = cursor
            if self.skip is not None:
                skip, self.skip = self.skip, None
                if cursor == skip:  # the saved cursor's own entry, counted before
                    continue
            batch.records += 1
            message = rec.get("MESSAGE")
            if message is None:
                continue
            try:
                t = int(rec["__REALTIME_TIMESTAMP"]) / 1e6
            except (KeyError, TypeError, ValueError):
                batch.errors += 1
                t = time.time()
            batch.last_time = t
            tag = rec.get("SYSLOG_IDENTIFIER") or rec.get("_SYSTEMD_UNIT") or ""
            if type(tag) is not str:
                tag = ""
            elif len(tag) > _MAX_TAG:
                tag = tag[:_MAX_TAG]
            if type(message) is str and "\n" not in message:  # the common case, made short
                line = message.encode("utf-8", "backslashreplace")
                if len(line) <= cap:
                    out.append(line)
                    times.append(t)
                    tags.append(tag)
                    continue
            for value in _value_bytes(message):
                parts = value.split(b"\n")
                if len(parts) > 1 and not parts[-1]:
                    parts.pop()
                for line in parts:
                    if len(line) > cap:
                        line = line[:cap]  # noqa: PLW2901 - the capped line replaces it
                        batch.long_lines += 1
                    out.append(line)
                    times.append(t)
                    tags.append(tag)


def _parse(lines: list[bytes], batch: _Batch) -> list[Any]:
    """JSON lines to records: one ``json.loads`` for the block, line by line if it fails."""
    try:
        records: list[Any] = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        return _parse_each(lines, batch)
    if len(records) != len(lines):  # a line that was not one JSON value: find it
        return _parse_each(lines, batch)
    return records


def _parse_each(lines: list[bytes], batch: _Batch) -> list[Any]:
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            batch.errors += 1
    return records


# -- the follower --------------------------------------------------------------------------


class _StartError(Exception):
    """journalctl could not be started or a probe failed; the message is the problem."""


class JournalFollower:
    """Follows one journal spec and hands each batch of messages to ``on_records``.

    ``on_records(spec, lines, times, tags)`` gets the messages of the records one read of
    journalctl's output brought (a message with newlines gives several lines), each
    record's ``__REALTIME_TIMESTAMP`` in seconds and its ``SYSLOG_IDENTIFIER`` (else
    ``_SYSTEMD_UNIT``, else ``""``). It runs in the thread that calls :meth:`run`, with
    :attr:`lock` held.

    >>> j = JournalFollower(JournalSpec("app", "uwsgi", units=("app",)),
    ...                     on_records)                              # doctest: +SKIP
    >>> j.restore(saved_cursor)                                      # doctest: +SKIP
    >>> threading.Thread(target=j.run, args=(stop,)).start()         # doctest: +SKIP
    """

    def __init__(self, spec: JournalSpec, on_records: RecordsCallback, *,
                 start_at: Literal["end", "beginning"] = "end", max_line: int = 65536,
                 journalctl: Sequence[str] = JOURNALCTL, max_backoff: float = 60.0) -> None:
        self.spec = spec
        self._on_records = on_records
        self._start_at = start_at
        self._max_line = max_line
        self._journalctl = tuple(journalctl)
        self._max_backoff = max_backoff
        #: Held while ``on_records`` runs and the cursor advances: read :attr:`cursor` and
        #: the callback's counters under it and they agree.
        self.lock = threading.Lock()
        self._cursor: str | None = None
        self._stats_lock = threading.Lock()
        self._stats = JournalStats()
        self._problems: dict[str, str] = {}  # kind -> text, for /healthz
        self._proc: subprocess.Popen[bytes] | None = None
        self._decoder = _Decoder(max_line)
        self._stderr = b""
        self._stderr_lines: list[str] = []
        self._stderr_logged: set[str] = set()  # journalctl's messages logged in this run
        self._started_at = 0.0
        self._records_this_run = 0
        self._backoff = 1.0
        self._restart_at = 0.0
        self._next_files_check = 0.0
        self._heartbeat: float | None = None
        self._read_at = 0.0  # no read before this: journalctl's output gathers meanwhile
        self._wake_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- the public surface ------------------------------------------------------------

    @property
    def cursor(self) -> str | None:
        """Where the next run resumes: a journal cursor, :data:`HEAD`, or None before the
        start position is known. Read it under :attr:`lock` for a consistent snapshot."""
        return self._cursor

    def restore(self, cursor: str | None) -> None:
        """Resume at a saved cursor (call before :meth:`run`); a malformed one is logged
        and ignored, so the follower starts as if nothing had been saved."""
        if cursor is not None and cursor != HEAD and not _CURSOR.fullmatch(cursor):
            log.warning("saved journal cursor malformed, ignoring it", log=self.spec.name)
            cursor = None
        with self.lock:
            self._cursor = cursor

    def run(self, stop: threading.Event) -> None:
        """The reader loop (once per follower); returns once ``stop`` is set, at once after
        :meth:`wake`. journalctl is stopped before it returns."""
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ)
        self._heartbeat = time.monotonic()
        try:
            while not stop.is_set():
                now = time.monotonic()
                self._heartbeat = now
                if self._proc is None and now >= self._restart_at:
                    self._start(sel, now)
                elif self._proc is not None and (
                        self._records_this_run or now - self._started_at >= _SETTLED):
                    self._set_problem("exit", None)  # it runs again
                if now >= self._next_files_check:
                    self._check_files(now)
                self._wait(sel, stop)
        finally:
            self._kill()
            sel.close()
            with self._wake_lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_w = -1
            self._heartbeat = None

    def wake(self) -> None:
        """Ask the loop to look at ``stop`` now."""
        with self._wake_lock:
            if self._wake_w >= 0:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_w, b"x")

    def stats(self) -> JournalStats:
        """A copy of the counters; safe from any thread."""
        with self._stats_lock:
            s = replace(self._stats)
        if s.last_record_timestamp:
            s.last_record_age = max(time.time() - s.last_record_timestamp, 0.0)
        return s

    @property
    def problem(self) -> str | None:
        """Why this journal cannot be followed right now (for /healthz), or None."""
        with self._stats_lock:
            return "; ".join(self._problems.values()) or None

    @property
    def alive(self) -> bool:
        """The loop ran within the last few seconds."""
        beat = self._heartbeat
        return beat is not None and time.monotonic() - beat < 3 * _MAX_SLEEP + 1.0

    @property
    def pid(self) -> int | None:
        """journalctl's process id while it runs."""
        proc = self._proc
        return proc.pid if proc is not None else None

    # -- starting journalctl -----------------------------------------------------------

    def _start(self, sel: selectors.BaseSelector, now: float) -> None:
        try:
            cursor, seek = self._start_position()
            proc = self._spawn(seek)
        except _StartError as e:
            self._fail("start", str(e), now)
            return
        with self.lock:
            self._cursor = cursor
        self._proc = proc
        self._decoder = _Decoder(self._max_line, skip=cursor or None)
        self._stderr = b""
        self._stderr_lines = []
        self._stderr_logged = set()
        self._started_at = now
        self._records_this_run = 0
        assert proc.stdout is not None and proc.stderr is not None
        for f in (proc.stdout, proc.stderr):
            os.set_blocking(f.fileno(), False)
            sel.register(f.fileno(), selectors.EVENT_READ)
        with contextlib.suppress(OSError):  # fewer wake-ups under load; the default works too
            fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, BLOCK_SIZE)
        self._set_problem("start", None)
        log.info("following journal", log=self.spec.name, journal=_where(self.spec),
                 cursor=cursor or "oldest entry", pid=proc.pid)

    def _start_position(self) -> tuple[str, list[str]]:
        """The cursor to start at, checked against the journal, and how journalctl gets
        there: ``--cursor`` while its entry is there, else the cursor's own time, so
        nothing before it is read twice whether it was vacuumed or only not found."""
        cursor = self._cursor
        if cursor is None:
            if self._start_at == "beginning":
                return HEAD, []
            last = self._probe(["--lines=1"])  # the newest entry, matching or not
            return (last, [f"--cursor={last}"]) if last else (HEAD, [])
        if cursor == HEAD:
            return HEAD, []
        if self._probe([f"--cursor={cursor}", "--lines=1"]) == cursor:
            return cursor, [f"--cursor={cursor}"]
        with self._stats_lock:
            self._stats.vacuumed += 1
        log.warning("the saved journal cursor's entry is gone (vacuumed?): entries between "
                    "it and the oldest one left are lost; following from its time",
                    log=self.spec.name, journal=_where(self.spec))
        return cursor, [f"--since={_since(cursor)}"]

    def _probe(self, args: list[str]) -> str:
        """The cursor of the one entry journalctl prints with ``args`` ("" if none)."""
        done = _probe(self._journalctl, self.spec, args)
        first = done.stdout.split(b"\n", 1)[0]
        try:
            cursor = json.loads(first)["__CURSOR"] if first else ""
        except (ValueError, KeyError, TypeError) as e:
            raise _StartError(f"journalctl printed no cursor: {first[:200]!r}") from e
        return str(cursor)

    def _spawn(self, seek: list[str]) -> subprocess.Popen[bytes]:
        argv = [*self._journalctl, *source_args(self.spec), "--follow", "--no-tail",
                *_output_args(), *seek, *match_args(self.spec)]
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, bufsize=0)
        except FileNotFoundError as e:
            raise _StartError(f"journalctl not found ({e.filename}): install systemd") from e
        except OSError as e:
            raise _StartError(f"cannot start journalctl: {e.strerror or e}") from e

    # -- reading -----------------------------------------------------------------------

    def _wait(self, sel: selectors.BaseSelector, stop: threading.Event) -> None:
        """Wait for output, a wake-up or the next restart, and handle what came.

        The first record after a quiet spell is read at once; while journalctl keeps
        writing, reads come every ``_BURST_WINDOW``, so a busy journal costs one read and
        one callback per window instead of one per entry journalctl flushes.
        """
        pause = self._read_at - time.monotonic()
        if pause > 0:
            stop.wait(pause)
        timeout = _MAX_SLEEP
        if self._proc is None:
            timeout = min(max(self._restart_at - time.monotonic(), 0.0), _MAX_SLEEP)
        for key, _ in sel.select(timeout):
            if key.fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                continue
            proc = self._proc
            if proc is None or stop.is_set():
                continue
            assert proc.stdout is not None and proc.stderr is not None
            if key.fd == proc.stdout.fileno():
                if not self._read_stdout(key.fd):
                    self._ended(sel)
            elif key.fd == proc.stderr.fileno():
                self._read_stderr(key.fd)

    def _read_stdout(self, fd: int) -> bool:
        """Read what journalctl wrote and hand it on; False at end of output."""
        try:
            chunk = os.read(fd, BLOCK_SIZE)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        if len(chunk) < BLOCK_SIZE:  # read everything there was: let more gather first
            self._read_at = time.monotonic() + _BURST_WINDOW
        batch = self._decoder.feed(chunk)
        if batch.cursor is not None or batch.errors:
            self._deliver(batch)
        return True

    def _deliver(self, batch: _Batch) -> None:
        n = sum(map(len, batch.lines))
        with self.lock:
            if batch.lines:
                self._on_records(self.spec, batch.lines, batch.times, batch.tags)
            if batch.cursor is not None:
                self._cursor = batch.cursor
        self._records_this_run += batch.records
        with self._stats_lock:
            s = self._stats
            s.records += batch.records
            s.lines += len(batch.lines)
            s.bytes += n
            s.long_lines += batch.long_lines
            s.errors += batch.errors
            if batch.last_time:
                s.last_record_timestamp = batch.last_time
            self._problems.pop("files", None)
        if batch.errors:
            log.warning("journal records not understood", log=self.spec.name,
                        count=batch.errors)

    def _read_stderr(self, fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            data = os.read(fd, 65536)
            if not data:
                return
            lines = (self._stderr + data).split(b"\n")
            self._stderr = lines.pop()[-1024:]
            for raw in lines:
                text = raw.decode("utf-8", "replace").strip()[:500]
                if text:
                    self._on_stderr(text)

    def _on_stderr(self, text: str) -> None:
        self._stderr_lines = [*self._stderr_lines[-(_STDERR_KEEP - 1):], text]
        if _lacks_permission(text):
            self._set_problem("permission", PERMISSION_HINT)
        if text.startswith(("Users in groups", "Pass -q")) or text in self._stderr_logged:
            return  # the rest of journalctl's hint, or said before
        if len(self._stderr_logged) < 100:
            self._stderr_logged.add(text)
            log.warning("journalctl says", log=self.spec.name, message=text)

    def _ended(self, sel: selectors.BaseSelector) -> None:
        """journalctl closed its output: record why, and restart it after a pause."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        sel.unregister(proc.stdout.fileno())
        sel.unregister(proc.stderr.fileno())
        os.set_blocking(proc.stderr.fileno(), True)
        try:
            code = proc.wait(timeout=5)
            rest = proc.stderr.read(65536) or b""
        except subprocess.TimeoutExpired:
            self._kill()
            code, rest = -signal.SIGKILL, b""
        for raw in (self._stderr + rest).split(b"\n"):
            if text := raw.decode("utf-8", "replace").strip()[:500]:
                self._on_stderr(text)
        _close(proc)
        self._proc = None
        now = time.monotonic()
        with self._stats_lock:
            self._stats.restarts += 1
        if self._records_this_run or now - self._started_at >= _HEALTHY_RUN:
            self._backoff = 1.0
        reason = _explain("\n".join(self._stderr_lines).encode(), code)
        self._fail("exit", f"journalctl exited: {reason}", now, quiet=code == 0)

    def _fail(self, kind: str, problem: str, now: float, *, quiet: bool = False) -> None:
        """Set the problem, log it, and wait before the next start (doubling each time)."""
        with self._stats_lock:  # counted first: whoever sees the problem sees the error
            self._stats.errors += 1
        if not quiet:
            self._set_problem(kind, problem)
        log.warning("journalctl not running, retrying", log=self.spec.name, problem=problem,
                    retry_in=self._backoff)
        self._restart_at = now + self._backoff
        self._backoff = min(self._backoff * 2, self._max_backoff)

    def _set_problem(self, kind: str, text: str | None) -> None:
        with self._stats_lock:
            if text is None:
                if kind == "start":  # a new journalctl says again if it lacks permission
                    self._problems.pop("permission", None)
                self._problems.pop(kind, None)
            else:
                self._problems[kind] = text

    def _check_files(self, now: float) -> None:
        """No journal file where journalctl looks: say so, since journalctl run as root
        waits silently."""
        self._next_files_check = now + _FILES_CHECK
        if self._records_this_run:
            return
        self._set_problem("files", None if _has_journal_files(self.spec)
                          else f"no journal files in {_where(self.spec)}")

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _close(proc)


def _since(cursor: str) -> str:
    """``--since`` for a cursor's own time (``t=``, microseconds in hex): inclusive, so
    its entry, if there, comes first and is dropped as at a ``--cursor`` start."""
    usec = int(cursor.split(";t=", 1)[1].split(";", 1)[0], 16)
    return f"@{usec // 1_000_000}.{usec % 1_000_000:06d}"


def _probe(journalctl: Sequence[str], spec: JournalSpec,
           args: list[str]) -> subprocess.CompletedProcess[bytes]:
    """journalctl run once on the spec's journal (cursors only); _StartError if it fails."""
    argv = [*journalctl, *source_args(spec), *_output_args(["__CURSOR"]), *args]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=_PROBE_TIMEOUT, check=False)
    except FileNotFoundError as e:
        raise _StartError(f"journalctl not found ({e.filename}): install systemd") from e
    except (OSError, subprocess.TimeoutExpired) as e:
        raise _StartError(f"cannot run journalctl: {e}") from e
    if done.returncode != 0:
        raise _StartError(_explain(done.stderr, done.returncode))
    return done


def check(spec: JournalSpec, journalctl: Sequence[str] = JOURNALCTL) -> str | None:
    """Why *spec*'s journal cannot be followed now, or None (for ``check-config``): what a
    :class:`JournalFollower` would put in :attr:`~JournalFollower.problem` at its start."""
    try:
        done = _probe(journalctl, spec, ["--lines=1"])
    except _StartError as e:
        return str(e)
    said = done.stderr.decode("utf-8", "replace")
    if _lacks_permission(said):
        return PERMISSION_HINT
    if not _has_journal_files(spec):
        return f"no journal files in {_where(spec)}"
    return None


def describe(spec: JournalSpec) -> str:
    """What a spec follows, for people: its matches and the journal it reads."""
    matches = [*(f"unit {u}" for u in spec.units),
               *(f"identifier {i}" for i in spec.identifiers)]
    return f"{' or '.join(matches) or 'every entry'} in {_where(spec)}"


def _lacks_permission(said: str) -> bool:
    """Whether journalctl's stderr says it cannot read (all of) the journal."""
    return "not seeing messages from other users" in said or "insufficient permissions" in said


def _where(spec: JournalSpec) -> str:
    """The journal a spec reads, for messages."""
    return spec.directory or spec.file or " or ".join(HOST_JOURNALS)


def _close(proc: subprocess.Popen[bytes]) -> None:
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()


def _explain(stderr: bytes, code: int) -> str:
    """journalctl's exit as one line: what it last said (and the fix when we know it)."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    said = lines[-1][:300] if lines else ""
    if any("insufficient permissions" in ln or "Permission denied" in ln for ln in lines):
        return f"{PERMISSION_HINT} ({said})"
    status = f"signal {-code}" if code < 0 else f"status {code}"
    return f"{said} ({status})" if said else status


def _has_journal_files(spec: JournalSpec) -> bool:
    """Whether journalctl would find a journal file (``-D`` reads machine-id subdirs too)."""
    if spec.file is not None:
        return Path(spec.file).is_file()
    dirs = [spec.directory] if spec.directory is not None else list(HOST_JOURNALS)
    for d in dirs:
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError:
            continue
        for e in entries:
            if e.name.endswith((".journal", ".journal~")):
                return True
            if _MACHINE_ID.fullmatch(e.name) and e.is_dir():
                with contextlib.suppress(OSError), os.scandir(e.path) as sub:
                    if any(s.name.endswith((".journal", ".journal~")) for s in sub):
                        return True
    return False


# -- scan: a journal read to its end -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JournalBlock:
    """Lines of a journal read by ``scan``, with each one's journal time and tag."""

    lines: list[bytes]
    times: list[float]
    tags: list[str]


class JournalReader:
    """Reads a journal directory or file to its end (``journalctl`` without ``--follow``).

    Iterate it for blocks; afterwards ``records``, ``errors`` and ``long_lines`` say what
    was read. A journal journalctl cannot open raises :class:`JournalError`.

    >>> for block in JournalReader("/var/log/journal"):            # doctest: +SKIP
    ...     classify(block.lines, block.times)
    """

    def __init__(self, path: str, *, max_line: int = 65536,
                 journalctl: Sequence[str] = JOURNALCTL) -> None:
        self.path = path
        self.records = 0
        self.errors = 0
        self.long_lines = 0
        self._max_line = max_line
        self._journalctl = tuple(journalctl)

    def __iter__(self) -> Iterator[JournalBlock]:
        where = "--directory" if Path(self.path).is_dir() else "--file"
        argv = [*self._journalctl, f"{where}={self.path}", *_output_args()]
        decoder = _Decoder(self._max_line)
        with tempfile.TemporaryFile() as err:
            proc = _popen_reader(argv, err, self.path)
            assert proc.stdout is not None
            try:
                while chunk := proc.stdout.read(BLOCK_SIZE):
                    batch = decoder.feed(chunk)
                    self.records += batch.records
                    self.errors += batch.errors
                    self.long_lines += batch.long_lines
                    if batch.lines:
                        yield JournalBlock(batch.lines, batch.times, batch.tags)
                code = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
            if code != 0:
                err.seek(0)
                raise JournalError(f"{self.path}: cannot read journal: "
                                   f"{_explain(err.read(65536), code)}")


def _popen_reader(argv: list[str], err: IO[bytes], path: str) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err)
    except OSError as e:
        raise JournalError(f"{path}: cannot run journalctl: {e.strerror or e}") from e
