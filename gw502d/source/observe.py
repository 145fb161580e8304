"""What the configured logs name now: one look at the file system, as data.

The follower's stat check is the source of truth (inotify events only wake it up). A look
returns an :class:`Observation` (regular files per path, missing paths, errors, files that
are not followed and why, directories to watch) and :mod:`gw502d.source.decide` turns the
difference from what is followed into actions. The file system is a parameter, so the
rules are tested without a disk (watchdog's ``DirectorySnapshot`` does the same).
"""

# Paths stay str end to end (LogSpec.path, watchdog's events); absolute glob patterns have
# no pathlib equivalent.
# ruff: noqa: PTH118, PTH120, PTH207, PTH208

from __future__ import annotations

import fnmatch
import glob
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gw502d.source.spec import LogSpec


class FileSystem(Protocol):
    """The calls a look makes (``os`` and ``glob`` by default)."""

    def stat(self, path: str) -> os.stat_result: ...

    def listdir(self, path: str) -> list[str]: ...

    def isdir(self, path: str) -> bool: ...

    def glob(self, pattern: str) -> list[str]: ...


class RealFileSystem:
    """The machine's own file system."""

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)  # noqa: PTH116

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path or ".")

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path or ".")  # noqa: PTH112

    def glob(self, pattern: str) -> list[str]:
        return glob.glob(pattern)


@dataclass(slots=True)
class Observation:
    """One look at the paths of the specs.

    ``files``: the regular files named (the first spec that names a path wins);
    ``keep``: paths the look could not decide (an error, or a path still backing off):
    what is followed there stays as it is; ``missing``: exact paths that do not exist;
    ``errors``: paths that failed, or an exact path that is no regular file (path ->
    (spec, error)); ``skipped``: what a glob matched that is no regular file (path ->
    (spec, why)); ``dirs``: directories to watch.
    """

    files: dict[str, tuple[LogSpec, os.stat_result]] = field(default_factory=dict)
    keep: set[str] = field(default_factory=set)
    missing: dict[str, LogSpec] = field(default_factory=dict)
    errors: dict[str, tuple[LogSpec, str]] = field(default_factory=dict)
    skipped: dict[str, tuple[LogSpec, str]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)


def observe(specs: Sequence[LogSpec], *, waiting: Callable[[str], bool],
            followed: Callable[[str], list[str]],
            fs: FileSystem | None = None) -> Observation:
    """Look at every spec's path(s). *waiting(path)* says a path is backing off after an
    error (not looked at now); *followed(directory)* lists the paths followed there."""
    fs = fs or RealFileSystem()
    seen = Observation()
    for spec in specs:
        if spec.is_glob:
            _glob(spec, seen, fs, waiting, followed)
        else:
            seen.dirs.add(os.path.dirname(spec.path))
            _exact(spec, spec.path, seen, fs, waiting)
    return seen


def _exact(spec: LogSpec, path: str, seen: Observation, fs: FileSystem,
           waiting: Callable[[str], bool]) -> None:
    if path in seen.files or path in seen.keep:
        return
    if waiting(path):
        seen.keep.add(path)
        return
    try:
        st = fs.stat(path)
    except FileNotFoundError:
        seen.missing[path] = spec
        return
    except OSError as e:
        seen.errors[path] = (spec, e.strerror or str(e))
        seen.keep.add(path)
        return
    if stat.S_ISREG(st.st_mode):
        seen.files[path] = (spec, st)
    else:  # configured by name: an error, retried (it may become a file)
        what = "is a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        seen.errors[path] = (spec, what)


def _glob(spec: LogSpec, seen: Observation, fs: FileSystem, waiting: Callable[[str], bool],
          followed: Callable[[str], list[str]]) -> None:
    pdir, pbase = os.path.split(spec.path)
    directories = sorted(fs.glob(pdir)) if glob.has_magic(pdir) else [pdir]
    for directory in directories:
        seen.dirs.add(directory)
        if waiting(directory):
            seen.keep.update(followed(directory))
            continue
        try:
            names = fs.listdir(directory)
        except FileNotFoundError:
            continue
        except OSError as e:
            if fs.isdir(directory):  # glob also lists files for a directory pattern
                seen.errors[directory] = (spec, e.strerror or str(e))
                seen.keep.update(followed(directory))
            continue
        for name in sorted(names):
            if fnmatch.fnmatchcase(name, pbase) and (pbase.startswith(".")
                                                     or not name.startswith(".")):
                path = os.path.join(directory, name)
                try:
                    st = fs.stat(path)
                except OSError:
                    continue  # gone since the listing; the next look settles it
                if stat.S_ISREG(st.st_mode):
                    seen.files.setdefault(path, (spec, st))
                elif not stat.S_ISDIR(st.st_mode):
                    seen.skipped.setdefault(path, (spec, "not a regular file"))
