"""Which family wrote a line, when lines of every family share one stream."""

from __future__ import annotations

import re

from gw502d.parse import FORMATS, compile_template
from gw502d.parse.record import ANSI
from gw502d.parse.traceback import EXCEPTION

# Strict shapes first; uWSGI's plain lines have no shape, so it is the fallback for any
# line that is not recognisably something else.
_SHAPES: list[tuple[str, re.Pattern[bytes]]] = []
for _fmt in FORMATS.values():
    for _template in (_fmt.prefix, *_fmt.forms.values()):
        _shape = re.compile(compile_template(_template).regex.encode(), re.DOTALL)
        if _shape.match(b"") is None:  # an all-optional prefix says nothing
            _SHAPES.append((_fmt.family, _shape))
_PYTHON_EXCEPTION = re.compile(rb"Traceback \(most recent call last\):|" + EXCEPTION)


def detect_family(line: bytes) -> str | None:
    """The family whose structure the line has, or None for an empty line."""
    line = ANSI.sub(b"", line)
    if not line.strip():
        return None
    for family, shape in _SHAPES:
        if shape.match(line):
            return family
    if _PYTHON_EXCEPTION.match(line):
        return "werkzeug"
    return "uwsgi"
