"""Which file is this: (st_dev, st_ino) plus a fingerprint of its first bytes.

The inode alone is not enough: a truncated-and-regrown file (copytruncate) keeps its
inode, and a deleted file's inode number is reused at once by ext4 and tmpfs for the
next file created. While the follower holds a file open its inode cannot be reused, so
the fingerprint matters where nothing is held: after a restart, and when a file it holds
was truncated and has grown past the old offset before the follower looked.
"""

from __future__ import annotations

import hashlib
import os

FINGERPRINT_SIZE = 1024


def read_head(fd: int) -> bytes:
    """The first bytes of an open file (fewer while the file is shorter)."""
    return os.pread(fd, FINGERPRINT_SIZE, 0)


def fingerprint(head: bytes) -> str:
    """``"<n>:<hash>"`` of the first n bytes; n grows with the file up to 1024."""
    return f"{len(head)}:{hashlib.blake2b(head, digest_size=16).hexdigest()}"


def fingerprint_length(fp: str) -> int:
    """How many leading bytes ``fp`` covers (ValueError if it is malformed)."""
    n, sep, digest = fp.partition(":")
    if not sep or not digest or not n.isdigit():
        raise ValueError(f"bad fingerprint {fp!r}")
    return int(n)


def has_fingerprint(fd: int, fp: str) -> bool:
    """Whether the open file still starts with the bytes ``fp`` was taken from."""
    n = fingerprint_length(fp)
    head = os.pread(fd, n, 0) if n else b""
    return len(head) == n and fingerprint(head) == fp
