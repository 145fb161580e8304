"""A planned change to config files: new texts, the unified diff, and what was refused.

Planning only reads. The diff names each file by the path written (a symlink such as
sites-enabled/shop resolved to sites-available/shop, so that writing it keeps the link),
as ``a/etc/nginx/...`` / ``b/etc/nginx/...``: ``patch -p1 -d /`` applies it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from gw502d.remediate.hostconf.result import os_reason

E = TypeVar("E")  # one kind of edit


@dataclass(frozen=True, slots=True)
class FileChange:
    """One file's text before and after; ``path`` as the server reads it, ``real`` the file
    that holds it (symlinks resolved)."""

    path: str
    real: str
    old: str
    new: str

    def diff(self) -> str:
        name = self.real.lstrip("/")
        return "".join(difflib.unified_diff(
            self.old.splitlines(keepends=True), self.new.splitlines(keepends=True),
            f"a/{name}", f"b/{name}"))


@dataclass(frozen=True, slots=True)
class Plan:
    """Changes to make, one sentence per edit saying what and where, and the edits that
    cannot be made (with why). An empty plan with ``refused`` changes nothing."""

    changes: tuple[FileChange, ...] = ()
    sentences: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()

    @property
    def diff(self) -> str:
        return "".join(c.diff() for c in self.changes)

    def __add__(self, other: Plan) -> Plan:
        return Plan(self.changes + other.changes, self.sentences + other.sentences,
                    self.refused + other.refused)


@dataclass
class TextEdits:
    """Edits to files' texts as (offset, length, replacement), applied together; texts are
    read once, from the files that hold them."""

    texts: dict[str, str] = field(default_factory=dict)
    ops: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def text(self, path: str) -> str | None:
        if path not in self.texts:
            try:
                self.texts[path] = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                reason = os_reason(e) if isinstance(e, OSError) else "not UTF-8"
                self.problems.append(f"{path}: {reason}")
                return None
        return self.texts[path]

    def add(self, path: str, offset: int, length: int, replacement: str) -> None:
        self.ops.setdefault(path, []).append((offset, length, replacement))

    def plan(self, sentences: Sequence[str], refused: Iterable[str]) -> Plan:
        changes = []
        for path, ops in self.ops.items():
            old = self.texts[path]
            new = old
            # from the end, so earlier offsets stay valid; at one offset the first edit
            # is applied last and so ends up first
            for _, (offset, length, repl) in sorted(enumerate(ops), reverse=True,
                                                    key=lambda e: (e[1][0], e[0])):
                new = new[:offset] + repl + new[offset + length:]
            if new != old:
                changes.append(FileChange(path, os.path.realpath(path), old, new))
        return Plan(tuple(changes), tuple(sentences), (*refused, *self.problems))


def planned(edits: Iterable[E], edit: Callable[[E, TextEdits], tuple[bool, str]]) -> Plan:
    """The plan of *edits*, each made by *edit* (which says whether it could, and why):
    what could not be done is refused, the rest planned together."""
    texts = TextEdits()
    sentences: list[str] = []
    refused: list[str] = []
    for one in edits:
        ok, said = edit(one, texts)
        (sentences if ok else refused).append(said)
    return texts.plan(sentences, refused)

