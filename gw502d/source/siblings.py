"""Files beside a log that hold lines it has not read: where rotations left them.

- a rename rotation moves the file, whose inode the follower knows, to another name;
- copytruncate leaves a copy whose first bytes are the log's old first bytes;
- rotations the follower did not see (several within one look, or while it was stopped)
  leave files it never opened: rotated names of the log (``error.log.1``, ``app.log-2024``)
  written to since it last looked.

A compressed copy (gzip magic) is not read as text: it is reported, and its lines count as
lost.
"""

# Paths stay str: they come from and go to LogSpec paths and os.scandir entries.
# ruff: noqa: PTH120

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass

from gw502d.source.identity import has_fingerprint
from gw502d.source.tracked import GZIP_MAGIC, Ident, open_regular


@dataclass(frozen=True, slots=True)
class Found:
    """An open sibling: its name, descriptor (the caller closes it) and stat."""

    path: str
    fd: int
    st: os.stat_result

    @property
    def ident(self) -> Ident:
        return (self.st.st_dev, self.st.st_ino)


# What logrotate, savelog and the servers' own rotation append to a log's name:
# ``.1``, ``-20241201``, ``.2024-12-01``, ``.old``, each maybe ``.gz``/``.xz``/``.bz2``
ROTATED_SUFFIX = re.compile(r"[.\-_](?:\d{1,8}|\d{4}-?\d\d-?\d\d(?:[-_T.]?[\d:]{2,8})?|old|bak)"
                            r"(?:\.(?:gz|xz|bz2|zst))?")


def is_rotated_name(base: str, name: str) -> bool:
    """Whether *name* is a rotated name of the log *base* (not another program's file)."""
    return name.startswith(base) and ROTATED_SUFFIX.fullmatch(name, len(base)) is not None


def _entries(path: str) -> list[os.DirEntry[str]]:
    directory, base = os.path.split(path)
    try:
        with os.scandir(directory or ".") as it:
            return [e for e in it if is_rotated_name(base, e.name)]
    except OSError:
        return []


def _open(entry: os.DirEntry[str]) -> Found | None:
    try:
        fd, st = open_regular(entry.path)
    except OSError:
        return None
    return Found(entry.path, fd, st)


def by_inode(path: str, ident: Ident, fp: str) -> Found | None:
    """The file with inode *ident* under any name in the log's directory, if it still
    starts with the bytes of *fp*: a deleted file's inode number is soon another's."""
    directory = os.path.dirname(path)
    try:
        with os.scandir(directory or ".") as it:
            entries = [e for e in it if e.inode() == ident[1]]
    except OSError:
        return None
    for entry in entries:
        found = _open(entry)
        if found is None:
            continue
        try:
            ok = found.ident == ident and has_fingerprint(found.fd, fp)
        except OSError:
            ok = False
        if ok:
            return found
        os.close(found.fd)
    return None


def copy_of(path: str, fp: str, min_size: int, exclude: Ident,
            since_ns: int = 0) -> Found | None:
    """The newest rotated name of the log that starts with the bytes of *fp*, holds at
    least *min_size* bytes and was written to at or after *since_ns* (copytruncate's copy)."""
    best: Found | None = None
    for entry in _entries(path):
        found = _open(entry)
        if found is None:
            continue
        try:
            ok = (found.st.st_size >= min_size and found.ident != exclude
                  and found.st.st_mtime_ns >= since_ns and has_fingerprint(found.fd, fp))
        except OSError:
            ok = False
        if ok and (best is None or found.st.st_mtime_ns > best.st.st_mtime_ns):
            if best is not None:
                os.close(best.fd)
            best = found
        else:
            os.close(found.fd)
    return best


def unseen(path: str, since_ns: int, known: Collection[Ident]) -> tuple[list[Found], list[str]]:
    """Rotated names of the log, written to at or after *since_ns* (wall clock), whose inode
    is not *known*: files rotated away before the follower opened them, oldest first.

    Returns (plain files, paths of compressed ones).
    """
    found: list[Found] = []
    compressed: list[str] = []
    for entry in _entries(path):
        try:
            st = entry.stat()
        except OSError:
            continue
        if st.st_mtime_ns < since_ns or (st.st_dev, st.st_ino) in known:
            continue
        sibling = _open(entry)
        if sibling is None:
            continue
        try:
            magic = os.pread(sibling.fd, 2, 0)
        except OSError:
            magic = b""
        if magic == GZIP_MAGIC:
            os.close(sibling.fd)
            compressed.append(sibling.path)
        else:
            found.append(sibling)
    found.sort(key=lambda f: f.st.st_mtime_ns)
    return found, compressed
