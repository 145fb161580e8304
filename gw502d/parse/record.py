"""Records: a log line split into its structure (family, prefix fields, message, context).

Each family module describes its line shapes as templates (see
:mod:`gw502d.parse.template`); this module turns them into one parser. It serves
``gw502d explain`` and the facts of reported incidents; the hot path never calls it, it
uses the combined matcher compiled from the same templates.
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
    writes (its time format, nginx's phases).
    """

    family: str
    prefix: str
    context: str = ""
    evidence_context: str = ""
    forms: Mapping[str, str] = field(default_factory=dict)
    types: Mapping[str, CaptureType] = field(default_factory=dict)


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


# Lines that continue a Python traceback: the exception line at its end is the incident,
# the record it belongs to starts at "Traceback" (and the header line above it, if any).
_TRACEBACK_BODY = (b" ", b"\t", b"Traceback (most recent call last):", b"During handling",
                   b"The above exception")
_TRACEBACK_LOOKBACK = 500
_TRACEBACK_HEADER = {"gunicorn": b"[", "werkzeug": b"Exception occurred during processing"}


def record_start(lines: list[bytes], index: int, family: str) -> int:
    """Index of the first line of the record that ends (or is) ``lines[index]``.

    Only Python tracebacks (werkzeug, gunicorn) span lines; the walk back is bounded and
    never leaves the block it was given.
    """
    if family not in ("werkzeug", "gunicorn") or index == 0:
        return index
    start = index
    floor = max(0, index - _TRACEBACK_LOOKBACK)
    while start > floor and lines[start - 1].startswith(_TRACEBACK_BODY):
        start -= 1
    if start == index:
        return index
    header = _TRACEBACK_HEADER[family]
    if start > 0 and lines[start - 1].startswith(header):
        start -= 1  # the record the traceback belongs to: gunicorn's line, socketserver's note
    return start
