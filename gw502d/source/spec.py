"""What to follow: a log's path or glob, its name, its family and its format; a part of
the systemd journal.

Its own module so the configuration can name logs without importing the follower.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: How a log's lines are written: as the server writes them, or behind a syslog prefix
#: (rsyslog, syslog-ng, ``journalctl -o short``), stripped before classifying.
LOG_FORMATS = ("plain", "syslog")


@dataclass(frozen=True)
class LogSpec:
    """A log to follow: a path or a glob, its ``log`` label, its family (None: auto) and
    its format (one of :data:`LOG_FORMATS`)."""

    path: str
    name: str
    family: str | None
    format: Literal["plain", "syslog"] = "plain"

    @property
    def is_glob(self) -> bool:
        """Whether ``path`` is a pattern (its directory part may be one too)."""
        return glob.has_magic(self.path)

    def matches(self, path: str) -> bool:
        """Whether ``path`` is this log."""
        return matches(self.path, path)

    def problem(self) -> str | None:
        """Why nothing of this log can be read now, or None (for ``check-config``)."""
        paths = sorted(glob.glob(self.path)) if self.is_glob else [self.path]  # noqa: PTH207
        if not paths:
            return "matches no file now (followed when one appears)"
        if any(Path(p).is_file() and os.access(p, os.R_OK) for p in paths):
            return None
        path = Path(paths[0])
        if not path.exists():
            return "does not exist now (followed when it appears)"
        if not path.is_file():
            return f"{path} is not a regular file"
        return f"{path} is not readable by this user (uid {os.geteuid()})"


def matches(pattern: str, path: str) -> bool:
    """Exact path, or glob matched part by part as glob does (``*`` stops at ``/``)."""
    if not glob.has_magic(pattern):
        return path == pattern
    pdir, pbase = os.path.split(pattern)
    d, base = os.path.split(path)
    return fnmatch.fnmatchcase(base, pbase) and (d == pdir or fnmatch.fnmatchcase(d, pdir))


@dataclass(frozen=True)
class JournalSpec:
    """A part of the systemd journal to follow: its ``log`` label and family (None: auto).

    ``units`` match ``_SYSTEMD_UNIT=`` (a name without a dot gets ``.service``, as
    ``journalctl -u`` does), ``identifiers`` match ``SYSLOG_IDENTIFIER=``; an entry matching
    either is taken, and with neither every entry is. ``directory`` or ``file`` read a
    journal other than the host's (a container's mount, a test's files).
    """

    name: str
    family: str | None
    units: tuple[str, ...] = ()
    identifiers: tuple[str, ...] = ()
    directory: str | None = None
    file: str | None = None

    def __post_init__(self) -> None:
        if self.directory is not None and self.file is not None:
            raise ValueError("a journal source reads a directory or a file, not both")
