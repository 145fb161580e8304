"""Python tracebacks: the lines Werkzeug and gunicorn write under a record.

A traceback has no record prefix: its body lines are indented, and its last line names the
exception (``BrokenPipeError: [Errno 32] Broken pipe``), which is the incident. The record
it belongs to starts at ``Traceback (most recent call last):`` or at the header line above
it (gunicorn's record, the socketserver note of Werkzeug).
"""

from __future__ import annotations

# The exception line: a dotted name ending like Python's exception classes, then ":" or the end
EXCEPTION = rb"[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|error)(?::|\Z)"
# Any line of a traceback but its header; a blank line belongs to the structure too
CONTINUATION = (rb"[ \t]|Traceback \(most recent call last\):|During handling"
                rb"|The above exception|" + EXCEPTION + rb"|\Z")

_BODY = (b" ", b"\t", b"Traceback (most recent call last):", b"During handling",
         b"The above exception")
_LOOKBACK = 500
_HEADER = {"gunicorn": b"[", "werkzeug": b"Exception occurred during processing"}


def record_start(lines: list[bytes], index: int, family: str) -> int:
    """Index of the first line of the record that ends (or is) ``lines[index]``.

    Only Python tracebacks (werkzeug, gunicorn) span lines; the walk back is bounded and
    never leaves the block it was given.
    """
    if family not in _HEADER or index == 0:
        return index
    start = index
    floor = max(0, index - _LOOKBACK)
    while start > floor and lines[start - 1].startswith(_BODY):
        start -= 1
    if start == index:
        return index
    if start > 0 and lines[start - 1].startswith(_HEADER[family]):
        start -= 1
    return start
