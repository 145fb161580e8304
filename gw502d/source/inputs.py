"""Inputs of ``gw502d scan``: files, directories (recursively), gzip files, stdin.

Whatever cannot be read is an :class:`InputError` that names it and says why, and the
other inputs are still read. Only regular files (and stdin) are read: a FIFO would block
forever, a device like ``/dev/zero`` would never end. A gzip file is recognised by its
magic bytes; a truncated one or one with a bad CRC keeps every line decoded before the
damage, as ``zcat`` does, and then says what is wrong.
"""

from __future__ import annotations

import os
import stat
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gw502d.source.lines import BLOCK_SIZE, LineSplitter

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = zlib.MAX_WBITS | 16  # a gzip header and trailer around deflate data


class InputError(OSError):
    """An input that cannot be read (or only in part); the message names it and says why."""


def expand(paths: list[str]) -> tuple[list[str], list[str]]:
    """(inputs to read, errors): directories become their regular files, sorted and
    recursively; ``-`` stays stdin. Unreadable directories and files that are not regular
    are errors, never skipped in silence."""
    out: list[str] = []
    errors: list[str] = []
    for p in paths:
        if p == "-":
            out.append(p)
        elif Path(p).is_dir():
            _walk(Path(p), out, errors)
        else:
            out.append(p)
    return out, errors


def _walk(directory: Path, out: list[str], errors: list[str]) -> None:
    def failed(exc: OSError) -> None:
        errors.append(f"{exc.filename}: cannot read directory: {exc.strerror or exc}")

    for root, dirs, files in os.walk(directory, onerror=failed):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)  # noqa: PTH118 - os.walk gives str
            try:
                mode = os.stat(path).st_mode  # noqa: PTH116
            except OSError as exc:
                errors.append(f"{path}: cannot read: {exc.strerror or exc}")
                continue
            if stat.S_ISREG(mode):
                out.append(path)
            else:
                errors.append(f"{path}: not a regular file, skipped")


def blocks(path: str, max_line: int) -> Iterator[list[bytes]]:
    """The lines of *path* per block; any read failure becomes an :class:`InputError`
    after the lines read before it."""
    if path == "-":
        yield from _lines(sys.stdin.buffer, path, max_line)
        return
    try:
        f = Path(path).open("rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with f:
        try:
            mode = os.fstat(f.fileno()).st_mode
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(mode):
            raise InputError(f"{path}: not a regular file (a FIFO or device would never end)")
        head = f.read(2)
        f.seek(0)
        if head == GZIP_MAGIC:
            yield from _gunzip(f, path, max_line)
        else:
            yield from _lines(f, path, max_line)


def _lines(f: BinaryIO, path: str, max_line: int) -> Iterator[list[bytes]]:
    splitter = LineSplitter(max_line)
    try:
        while block := f.read(BLOCK_SIZE):
            if lines := splitter.feed(block):
                yield lines
    except OSError as exc:
        raise InputError(f"{path}: read failed: {exc.strerror or exc}") from exc
    if rest := splitter.flush():
        yield rest


def _gunzip(f: BinaryIO, path: str, max_line: int) -> Iterator[list[bytes]]:
    """The lines of a gzip file; after a damaged spot, the lines decoded before it, then
    the error (as zcat prints them)."""
    splitter = LineSplitter(max_line)
    problem = None
    try:
        for out in _inflate(_Reader(f)):
            if lines := splitter.feed(out):
                yield lines
    except InputError as exc:
        problem = str(exc)
    except zlib.error as exc:
        problem = f"the gzip data is damaged ({exc})"
    except OSError as exc:
        problem = f"read failed: {exc.strerror or exc}"
    if rest := splitter.flush():
        yield rest
    if problem is not None:
        raise InputError(f"{path}: {problem}; the lines before it were counted")


def _inflate(data: _Reader) -> Iterator[bytes]:
    """Decompressed data, member after member, each trailer checked here.

    Raw deflate (the gzip header skipped by :func:`_header`) hands out every byte it
    decodes; zlib's own gzip mode, like the gzip module, raises on a bad CRC and drops what
    the same call decoded, up to a block of lines.
    """
    while _header(data):
        inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        crc = size = 0
        while not inflate.eof:
            chunk = inflate.unconsumed_tail or data.read()
            if not chunk:
                raise InputError("the gzip stream ends early (a truncated file)")
            out = inflate.decompress(chunk, BLOCK_SIZE)
            crc, size = zlib.crc32(out, crc), size + len(out)
            yield out
        data.unread(inflate.unused_data)
        trailer = data.exactly(8)
        if len(trailer) < 8:
            raise InputError("the gzip stream ends early (a truncated file)")
        if trailer != struct.pack("<II", crc, size & 0xFFFFFFFF):
            raise InputError("gzip CRC or length mismatch (damaged data)")


class _Reader:
    """Reads a file in blocks, with bytes pushed back (gzip members share blocks)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._buf = b""
        self._pos = 0

    def read(self) -> bytes:
        """The buffered bytes, else the next block."""
        if self._pos < len(self._buf):
            out = self._buf[self._pos:]
            self._buf, self._pos = b"", 0
            return out
        return self._f.read(BLOCK_SIZE)

    def unread(self, data: bytes) -> None:
        self._buf, self._pos = data + self._buf[self._pos:], 0

    def _fill(self, n: int) -> bool:
        while len(self._buf) - self._pos < n:
            more = self._f.read(BLOCK_SIZE)
            if not more:
                return False
            self._buf, self._pos = self._buf[self._pos:] + more, 0
        return True

    def exactly(self, n: int) -> bytes:
        """The next *n* bytes (fewer at the end of the file)."""
        self._fill(n)
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def skip(self, byte: bytes, *, upto: bool) -> bool:
        """Skip bytes equal to *byte* (``upto``: up to and including the first one);
        False if the file ended first."""
        while True:
            if upto:
                i = self._buf.find(byte, self._pos)
                if i >= 0:
                    self._pos = i + 1
                    return True
            else:
                rest = self._buf[self._pos:].lstrip(byte)
                if rest:
                    self._buf, self._pos = rest, 0
                    return True
            self._buf, self._pos = b"", 0
            if not self._fill(1):
                return False


_FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 2, 4, 8, 16


def _header(data: _Reader) -> bool:
    """Skip one gzip member header (RFC 1952); False at the end (zero padding allowed)."""
    if not data.skip(b"\0", upto=False):
        return False
    head = data.exactly(10)
    if len(head) < 10 or head[:3] != GZIP_MAGIC + b"\x08":
        raise InputError("not a gzip member where one should start (trailing garbage?)")
    flags = head[3]
    if flags & _FEXTRA:
        (n,) = struct.unpack("<H", data.exactly(2).ljust(2, b"\0"))
        data.exactly(n)
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            data.skip(b"\0", upto=True)
    if flags & _FHCRC:
        data.exactly(2)
    return True


def size(paths: list[str]) -> int:
    """Bytes on disk of the inputs (for a progress bar); 0 when unknown."""
    total = 0
    for p in paths:
        if p == "-":
            return 0
        try:
            total += Path(p).stat().st_size
        except OSError:
            continue
    return total
