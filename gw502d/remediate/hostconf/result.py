"""Where a value was read, and what could not be read: the two facts every reader returns.

A reader never raises for a host it cannot see (missing file, permission denied, nginx not
installed): it returns what it could read plus one :class:`Unreadable` per thing it could
not, so advice can say "unknown: /etc/nginx/nginx.conf: Permission denied" instead of
guessing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Where:
    """A file and 1-based line, or ``line == 0`` for a command line (``file`` says which)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Something that could not be read or understood, and why (one line)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def os_reason(err: OSError) -> str:
    """``[Errno 13] Permission denied: '/x'`` -> ``Permission denied`` (the path is said apart)."""
    return err.strerror or type(err).__name__
