"""The (incident, source) pair that names a count, and its JSON shape ``{a: {b: v}}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

Key = tuple[str, str]
V = TypeVar("V")


def nest(flat: Mapping[tuple[str, str], V]) -> dict[str, dict[str, V]]:
    """``{(a, b): v}`` as ``{a: {b: v}}`` (counts per incident and source, causes, ...)."""
    out: dict[str, dict[str, V]] = {}
    for (a, b), value in flat.items():
        out.setdefault(a, {})[b] = value
    return out
