"""Records: how a family writes a line (prefix, message, context) and how captured bytes
become facts.

Each family module describes its line shapes as templates (see
:mod:`gw502d.parse.template`) in a :class:`RecordFormat`. The classifier compiles them into
its combined matcher; ``gw502d explain`` and the facts of reported incidents use the same
templates, so there is one description of each shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gw502d.parse.template import CaptureType

ANSI = re.compile(rb"\x1b\[[\d;]*m")


@dataclass(frozen=True, slots=True)
class RecordFormat:
    """How one family writes a line.

    ``prefix`` starts every line that carries a message (the incident templates follow it);
    ``context`` is what the server appends after the message, each field optional (for the
    facts of a reported line); ``evidence_context`` is the same in the one complete shape the
    hot path accepts, without optional groups, which are slow in Python's regex engine;
    ``forms`` are other whole-line shapes (request logs, tracebacks) that identify the
    family but are never incidents; ``types`` are the capture types only this family
    writes (its time format, nginx's phases); ``time_formats`` are strptime formats of the
    prefix's ``time``; ``anchors`` are regexes of lines that tell when they were written
    (group ``time``, plus ``ms`` a request took when the line is written at its end), for a
    family whose other lines carry no time. A line longer than ``max_length`` cannot be
    the family's (its server never writes one): its templates are not even tried, so a
    crafted 64 KiB line costs nothing. A server that cuts its records at ``cut_at``
    bytes may have cut off a field the client cannot forge and left a forged one: on a line
    that long the ``cut_facts`` are not trusted.
    """

    family: str
    prefix: str
    context: str = ""
    evidence_context: str = ""
    forms: Mapping[str, str] = field(default_factory=dict)
    types: Mapping[str, CaptureType] = field(default_factory=dict)
    time_formats: tuple[str, ...] = ()
    anchors: tuple[bytes, ...] = ()
    max_length: int | None = None
    cut_at: int | None = None
    cut_facts: frozenset[str] = frozenset()


def decode(raw: bytes) -> str:
    """Log bytes as text; undecodable bytes stay visible as escapes, never raise."""
    return raw.decode("utf-8", "backslashreplace")


def facts(m: re.Match[bytes], captures: tuple[tuple[str, Any], ...], first: int) -> dict[str, Any]:
    """Convert groups ``first ..`` of *m* into named facts (absent groups are left out)."""
    return convert(captures, m.groups()[first - 1:first - 1 + len(captures)])


def convert(captures: tuple[tuple[str, Any], ...],
            raw: Iterable[bytes | None]) -> dict[str, Any]:
    """Raw captured bytes as named, converted facts (None left out; text if unconvertible)."""
    out: dict[str, Any] = {}
    for (name, converter), value in zip(captures, raw, strict=True):
        if value is not None:
            text = decode(value)
            try:
                out[name] = converter(text)
            except (KeyError, ValueError):
                out[name] = text
    return out
