"""Rotation decisions: what changed between the files followed and a look, as actions.

Pure: no file is opened here, so every rule is tested in milliseconds
(``tests/test_decide.py``) beside the real-file tests.

- the path names another inode (rename + create, delete + recreate, atomic replace, the
  directory moved away and recreated): the old file is ``rotated`` (drained: the server
  may write to it until it reopens its log), and the new one opened;
- the inode of a path is one already followed or drained under another name the specs
  match: it is ``renamed`` there, nothing is read twice;
- a followed path is gone: its file is ``gone`` (drained the same way);
- a path the look could not decide keeps what is followed there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal, NamedTuple

from gw502d.source.observe import Observation
from gw502d.source.spec import LogSpec

Ident = tuple[int, int]


class Action(NamedTuple):
    """One thing to do: ``open`` a new file at *path*; the file followed at *path* was
    ``rotated`` (another file is there now) or is ``gone``; the file with inode *ident*,
    followed or drained under another name, is ``renamed`` to *path*."""

    kind: Literal["open", "rotated", "gone", "renamed"]
    path: str
    spec: LogSpec | None = None
    st: os.stat_result | None = None
    ident: Ident | None = None


def decide(current: Mapping[str, Ident], draining: Mapping[Ident, str],
           seen: Observation) -> list[Action]:
    """The actions that bring *current* (path -> inode followed there) and *draining*
    (inode -> its old path) in line with *seen*."""
    actions: list[Action] = []
    where = {ident: path for path, ident in current.items()}
    moved: set[str] = set()
    for path, (spec, st) in seen.files.items():
        ident = (st.st_dev, st.st_ino)
        now = current.get(path)
        if now == ident:
            continue
        if now is not None:
            actions.append(Action("rotated", path))
        old = where.get(ident)
        if old is not None and old != path:
            actions.append(Action("renamed", path, spec, st, ident))
            moved.add(old)
        elif ident in draining:
            actions.append(Action("renamed", path, spec, st, ident))
        else:
            actions.append(Action("open", path, spec, st))
    for path in current:
        if path not in seen.files and path not in seen.keep and path not in moved:
            actions.append(Action("gone", path))
    return actions
