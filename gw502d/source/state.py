"""Saved positions: one JSON file, ``state_dir/state.json``, replaced atomically.

A snapshot holds, per open file, where the next unread line starts, plus the caller's
``extra`` dict (the daemon's counters) taken at the same instant, so a restart resumes
both from one consistent point: lines read after the snapshot are read again and counted
again from the restored counters, which keeps every total exactly-once.

The write is tmp file in the same directory, fsync, rename, fsync of the directory: after
a crash or SIGKILL the file is either the old snapshot or the new one, never a mix. A
file that cannot be read or parsed is reported once and ignored; the follower then starts
fresh rather than refusing to run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from gw502d.source.identity import fingerprint_length

STATE_FILE = "state.json"
VERSION = 1

log = structlog.get_logger("gw502d.follower")


@dataclass(frozen=True, slots=True)
class SavedFile:
    """One followed file: its identity and the offset of its next unread line."""

    path: str
    dev: int
    ino: int
    fingerprint: str
    offset: int
    draining: bool = False  # rotated away from path, read to its end


@dataclass(frozen=True, slots=True)
class State:
    """A snapshot: file positions, the patterns followed then, and the caller's extra."""

    files: tuple[SavedFile, ...] = ()
    patterns: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    saved_at: float = 0.0  # wall clock: files written to after it may hold unread lines

    def encode(self) -> bytes:
        """The JSON document written to disk."""
        doc = {
            "version": VERSION,
            "saved_at": self.saved_at,
            "patterns": list(self.patterns),
            "files": [
                {"path": f.path, "dev": f.dev, "ino": f.ino,
                 "fingerprint": f.fingerprint, "offset": f.offset, "draining": f.draining}
                for f in self.files
            ],
            "extra": self.extra,
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"expected a non-negative int, got {v!r}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {v!r}")
    return v


def decode(data: bytes) -> State:
    """Parse and validate a state document (ValueError or TypeError if it is not one)."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise ValueError("not a gw502d state document of version 1")
    files, patterns, extra = doc.get("files"), doc.get("patterns"), doc.get("extra")
    if not isinstance(files, list) or not isinstance(patterns, list):
        raise TypeError("files and patterns must be lists")
    if not isinstance(extra, dict):
        raise TypeError("extra must be an object")
    saved = []
    for f in files:
        if not isinstance(f, dict):
            raise TypeError("a file entry must be an object")
        fp = _str(f.get("fingerprint"))
        fingerprint_length(fp)
        saved.append(SavedFile(path=_str(f.get("path")), dev=_int(f.get("dev")),
                               ino=_int(f.get("ino")), fingerprint=fp,
                               offset=_int(f.get("offset")),
                               draining=f.get("draining") is True))
    saved_at = doc.get("saved_at", 0.0)
    if isinstance(saved_at, bool) or not isinstance(saved_at, int | float) or saved_at < 0:
        raise ValueError(f"saved_at must be a time, got {saved_at!r}")
    return State(files=tuple(saved), patterns=tuple(_str(p) for p in patterns), extra=extra,
                 saved_at=float(saved_at))


class StateFile:
    """Loads and saves ``state_dir/state.json``; skips writes that would change nothing."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self._unchanged: bytes | None = None
        self._failing = False

    def load(self) -> State | None:
        """The saved state, or None (missing, unreadable or corrupt: logged, never raised)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            log.info("no saved state, starting fresh", path=str(self.path))
            return None
        except OSError as e:
            log.warning("state file unreadable, starting fresh", path=str(self.path),
                        error=str(e))
            return None
        try:
            state = decode(data)
        except (ValueError, TypeError, RecursionError) as e:  # JSON and Unicode errors too
            log.warning("state file corrupt, starting fresh", path=str(self.path),
                        error=str(e))
            return None
        self._unchanged = replace(state, saved_at=0.0).encode()
        return state

    def save(self, state: State) -> bool:
        """Write ``state`` unless it equals the last write; False if the write failed.

        A failure is logged once until a write succeeds again: the follower keeps
        following, it only loses the ability to resume from a newer point.
        """
        same = replace(state, saved_at=0.0).encode()  # the time alone is no change
        if same == self._unchanged:
            return True
        data = state.encode()
        try:
            self._write(data)
        except OSError as e:
            if not self._failing:
                log.warning("cannot save state", path=str(self.path), error=str(e))
                self._failing = True
            return False
        if self._failing:
            log.info("saving state works again", path=str(self.path))
            self._failing = False
        self._unchanged = same
        return True

    @property
    def failing(self) -> bool:
        """Whether the last save failed (a full disk, a read-only state dir)."""
        return self._failing

    def _write(self, data: bytes) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{STATE_FILE}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
