"""One followed file: where it is read up to, what it looked like, and reading it.

A :class:`Tracked` file keeps its identity (``(st_dev, st_ino)`` and its first bytes), the
offset read so far, the splitter holding its unfinished line, and a few *anchors*: CRCs of
its first bytes up to the line ends within :data:`ANCHOR_SPAN`. A file truncated in place
to a shorter prefix of itself (``truncate -s``, an editor) keeps lines that were read
already: the anchors tell how much of it is the same, so those lines are not read twice.

The descriptor may be closed while the file is idle (see :class:`~gw502d.source.follower.
Follower`'s open-file bound) and opened again by path; identity and anchors make sure it
is the same file.
"""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from gw502d.source.identity import FINGERPRINT_SIZE, fingerprint, read_head
from gw502d.source.lines import BLOCK_SIZE, LineSplitter
from gw502d.source.spec import LogSpec
from gw502d.source.state import SavedFile

Ident = tuple[int, int]
Deliver = Callable[[LogSpec, str, list[bytes]], None]

OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY  # a FIFO must not block
GZIP_MAGIC = b"\x1f\x8b"
ANCHOR_SPAN = 16 << 10  # the first bytes whose line ends are remembered
TAIL = 64  # the bytes before the offset kept to tell a file rewritten in place
_PASS_BLOCKS = 16  # blocks read from one file before the others get their turn


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """Open *path* for reading if it is a regular file (OSError says why not)."""
    fd = os.open(path, OPEN_FLAGS)
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(f"not a regular file (mode {stat.filemode(st.st_mode)})")
    return fd, st


@dataclass(slots=True)
class Counts:
    """What reading a file adds to its log's counters."""

    lines: int = 0
    bytes: int = 0
    long_lines: int = 0


@dataclass(eq=False, slots=True)
class Tracked:
    """A file being followed (or drained after a rotation)."""

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
    anchors: list[tuple[int, int]] = field(default_factory=list)  # (line end, crc of 0..end)
    tail: bytes = b""  # the last bytes before offset
    _crc: int = 0
    _crc_end: int = 0  # bytes the running CRC covers; -1: anchors cannot continue

    @property
    def line_start(self) -> int:
        """Where the next unread line starts: the offset a restart resumes at."""
        return self.offset - self.splitter.pending()

    def saved(self) -> SavedFile:
        """Its identity and position for the state file, with the longest head it has."""
        if self.fd >= 0 and len(self.head) < FINGERPRINT_SIZE:
            try:
                head = read_head(self.fd)
            except OSError:
                head = self.head
            if head.startswith(self.head):  # else it was rewritten: the next read tells
                self.head = head
        return SavedFile(path=self.path, dev=self.ident[0], ino=self.ident[1],
                         fingerprint=fingerprint(self.head), offset=self.line_start,
                         draining=self.draining)

    def same_head(self) -> bool:
        """Whether the file still starts as it did; grows the kept head up to 1 KiB."""
        head = read_head(self.fd)
        if not head.startswith(self.head):
            return False
        self.head = head
        return True

    def same_tail(self) -> bool:
        """Whether the bytes just before the offset are still the ones read: a file
        truncated and written again past the offset is caught here (its start may be the
        same)."""
        n = len(self.tail)
        return not n or os.pread(self.fd, n, self.offset - n) == self.tail

    def read(self, size: int, deliver: Deliver, counts: Counts) -> None:
        """Read up to *size* (a few blocks at most) and hand the complete lines on."""
        splitter = self.splitter
        for _ in range(_PASS_BLOCKS):
            if self.offset >= size:
                return
            block = os.pread(self.fd, min(BLOCK_SIZE, size - self.offset), self.offset)
            if not block:
                self.size = self.offset  # shrank since fstat; the next look settles it
                return
            if self._crc_end == self.offset and self.offset < ANCHOR_SPAN:
                self._anchor(block)
            self.offset += len(block)
            self.tail = block[-TAIL:] if len(block) >= TAIL else (self.tail + block)[-TAIL:]
            counts.bytes += len(block)
            long_before = splitter.long_lines
            lines = splitter.feed(block)
            counts.long_lines += splitter.long_lines - long_before
            if lines:
                counts.lines += len(lines)
                deliver(self.spec, self.path, lines)

    def _anchor(self, block: bytes) -> None:
        """Remember the CRC of the file's bytes up to each line end in its first span."""
        start = self._crc_end
        part = block[:max(ANCHOR_SPAN - start, 0)]
        pos = 0
        while (nl := part.find(b"\n", pos)) >= 0:
            self._crc = zlib.crc32(part[pos:nl + 1], self._crc)
            pos = nl + 1
            self.anchors.append((start + pos, self._crc))
        self._crc = zlib.crc32(part[pos:], self._crc)
        self._crc_end = start + len(part)

    def kept_prefix(self) -> int:
        """After a truncation: how many bytes at the start are still what was read (at a
        line end), so they are not read twice. 0 if the start changed."""
        if not self.anchors:
            return 0
        data = os.pread(self.fd, self.anchors[-1][0], 0)
        kept = crc = pos = 0
        for end, want in self.anchors:
            if end > len(data):
                break
            crc = zlib.crc32(data[pos:end], crc)
            pos = end
            if crc != want:
                break
            kept = end
        return kept

    def restart_at(self, offset: int, max_line: int) -> None:
        """Read on from *offset* (a line start) with a fresh splitter and head."""
        self.splitter = LineSplitter(max_line)
        self.offset = offset
        self.head = read_head(self.fd)
        self.tail = os.pread(self.fd, min(TAIL, offset), offset - min(TAIL, offset))
        self.anchors = [a for a in self.anchors if a[0] <= offset]
        if offset == 0:
            self._crc, self._crc_end = 0, 0
        elif self.anchors and self.anchors[-1][0] == offset:
            self._crc, self._crc_end = self.anchors[-1][1], offset
        else:  # no CRC of what comes before: no more anchors
            self._crc_end = -1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
