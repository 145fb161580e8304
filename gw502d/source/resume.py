"""Taking up a saved state: where each file resumes, and what rotated while stopped.

At start the follower knows, per file followed at the last snapshot, its path, inode,
first bytes and offset (:mod:`~gw502d.source.state`). For each:

- the same file is still at its path with the same first bytes: it resumes at its offset
  (when the follower's first look opens it, :meth:`Resumer.offset_for`);
- the same inode with other first bytes: truncated while stopped (copytruncate): the rest
  is read from the copy beside it, the file from 0;
- another file at the path: rotated while stopped: the saved inode is looked for under
  any name in the directory and read from the offset on;
- files rotated away while stopped that no snapshot knew (two rotations while stopped)
  are the log's rotated names written to after the snapshot: read whole.

A file that cannot be found is logged: its unread lines are lost.
"""

# Paths stay str: they are LogSpec paths and state entries.
# ruff: noqa: PTH116

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Protocol

import structlog

from gw502d.source import siblings
from gw502d.source.identity import has_fingerprint, read_head
from gw502d.source.lines import LineSplitter
from gw502d.source.spec import LogSpec, matches
from gw502d.source.state import SavedFile, State
from gw502d.source.tracked import Ident, Tracked, open_regular

log = structlog.get_logger("gw502d.follower")

_SLACK_NS = 1_000_000_000  # file times vs the snapshot's clock


class _Counters(Protocol):
    """What the resumer adds to a log's counters (the follower's LogStats)."""

    rotations: int
    truncations: int


class Resumer:
    """The saved state, taken up once at start."""

    def __init__(self, state: State | None, spec_for: Callable[[str], LogSpec | None],
                 max_line: int) -> None:
        self._state = state
        self._spec_for = spec_for
        self._max_line = max_line
        self._offsets: dict[str, tuple[Ident, int]] = {}  # path -> (inode, offset)
        self._patterns = state.patterns if state is not None else ()

    def knew(self, path: str) -> bool:
        """Whether *path* was a followed log's at the snapshot: a file there that the
        snapshot does not have appeared after it, and is read from its start."""
        return any(matches(p, path) for p in self._patterns)

    def offset_for(self, path: str, ident: Ident) -> int | None:
        """Where the file now at *path* resumes, or None if the snapshot did not have it."""
        saved = self._offsets.pop(path, None)
        if saved is None or saved[0] != ident:
            return None
        log.info("resumed", path=path, offset=saved[1])
        return saved[1]

    def restore(self, now: float, counters: Mapping[str, _Counters]) -> list[Tracked]:
        """Decide every saved file's fate; the files to drain (rotated or copied while
        stopped)."""
        state, self._state = self._state, None
        if state is None:
            return []
        drain: list[Tracked] = []
        saved_idents = {(s.path, s.dev, s.ino) for s in state.files}
        rotated: set[str] = set()
        for saved in state.files:
            spec = self._spec_for(saved.path)
            if spec is None:
                continue
            ident = (saved.dev, saved.ino)
            try:
                st = os.stat(saved.path)
                here: Ident | None = (st.st_dev, st.st_ino)
            except OSError:
                here = None
            if here == ident and not saved.draining and saved.path not in self._offsets:
                copy = self._same_file(spec, saved, ident, counters)
                if copy is not None:
                    drain.append(copy)
                continue
            new_file = here is None or (saved.path, *here) not in saved_idents
            if not saved.draining and new_file and saved.path not in rotated:
                counters[spec.name].rotations += 1  # rotated while stopped
                rotated.add(saved.path)
            found = siblings.by_inode(saved.path, ident, saved.fingerprint)
            if found is None:
                log.warning("file rotated while stopped and gone; its unread rest is lost",
                            log=spec.name, path=saved.path, offset=saved.offset)
                continue
            drain.append(self._tracked(spec, saved.path, found, saved.offset))
        drain += self._unseen(state, drain, saved_idents)
        return drain

    def _same_file(self, spec: LogSpec, saved: SavedFile, ident: Ident,
                   counters: Mapping[str, _Counters]) -> Tracked | None:
        """The saved inode is at its path: resume there, unless it was truncated while
        stopped (then its copy, if any, is returned to drain, and it is read from 0)."""
        try:
            fd, st = open_regular(saved.path)
        except OSError:
            self._offsets[saved.path] = (ident, saved.offset)  # the first look says why
            return None
        try:
            if st.st_size >= saved.offset and has_fingerprint(fd, saved.fingerprint):
                self._offsets[saved.path] = (ident, saved.offset)
                return None
        finally:
            os.close(fd)
        counters[spec.name].truncations += 1
        self._offsets[saved.path] = (ident, 0)
        copy = siblings.copy_of(saved.path, saved.fingerprint, saved.offset, ident)
        if copy is None:
            log.warning("file truncated while stopped, no copy beside it; its unread rest "
                        "is lost", log=spec.name, path=saved.path, offset=saved.offset)
            return None
        return self._tracked(spec, saved.path, copy, saved.offset)

    def _unseen(self, state: State, drain: list[Tracked],
                saved_idents: set[tuple[str, int, int]]) -> list[Tracked]:
        """Rotated names of each saved log written to after the snapshot, never seen."""
        if not state.saved_at:
            return []
        known: set[Ident] = {(dev, ino) for _, dev, ino in saved_idents}
        known |= {f.ident for f in drain}
        out = []
        for path in dict.fromkeys(s.path for s in state.files):
            spec = self._spec_for(path)
            if spec is None:
                continue
            try:
                st = os.stat(path)
                known.add((st.st_dev, st.st_ino))
            except OSError:
                pass
            found, compressed = siblings.unseen(path, int(state.saved_at * 1e9) - _SLACK_NS,
                                                known)
            for sibling in found:
                log.info("reading a file rotated while stopped", log=spec.name, path=path,
                         found=sibling.path)
                known.add(sibling.ident)
                out.append(self._tracked(spec, path, sibling, 0))
            for name in compressed:
                log.warning("a file rotated while stopped was compressed before it was read",
                            log=spec.name, path=path, compressed=name)
        return out

    def _tracked(self, spec: LogSpec, path: str, found: siblings.Found,
                 offset: int) -> Tracked:
        log.info("resumed rotated file", log=spec.name, path=path, found=found.path,
                 offset=offset)
        f = Tracked(spec=spec, path=path, fd=found.fd, ident=found.ident,
                    head=read_head(found.fd), offset=offset,
                    splitter=LineSplitter(self._max_line))
        if offset:
            f.restart_at(offset, self._max_line)
        return f
