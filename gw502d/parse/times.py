"""When a line says it was written: the time text of a family's prefix as epoch seconds.

nginx writes ``YYYY/MM/DD HH:MM:SS`` in local time; uWSGI a ctime prefix only with
``log-date`` (and always on its HARAKIRI lines); gunicorn ``YYYY-mm-dd HH:MM:SS +zone``.
Naive times are local. strptime is slow, so it runs once per minute of log time: the
seconds are added to the minute's epoch.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime

from gw502d.parse import FORMATS
from gw502d.parse.record import decode

_SPACES = re.compile(r"\s+")
_SECONDS = re.compile(r"(.*\d:\d\d):(\d\d)(.*)", re.DOTALL)


@functools.lru_cache(maxsize=4096)  # lines come in bursts that share a second
def line_time(family: str, text: str) -> float | None:
    """The epoch time *text* (a prefix's ``time``) stands for, or None."""
    m = _SECONDS.fullmatch(_SPACES.sub(" ", text))
    if m is None:
        return None
    minute = _minute(family, m[1], m[3])
    return None if minute is None else minute + int(m[2])


@functools.lru_cache(maxsize=1024)
def _minute(family: str, head: str, tail: str) -> float | None:
    fmt = FORMATS.get(family)
    for pattern in fmt.time_formats if fmt is not None else ():
        try:
            return datetime.strptime(f"{head}:00{tail}", pattern).timestamp()
        except ValueError:
            continue
    return None


@functools.cache
def _anchors(family: str) -> re.Pattern[bytes] | None:
    fmt = FORMATS.get(family)
    if fmt is None or not fmt.anchors:
        return None
    return re.compile(b"|".join(b"(?:" + a.replace(b"(?P<time>", b"(?P<t%d>" % n)
                                .replace(b"(?P<ms>", b"(?P<m%d>" % n) + b")"
                                for n, a in enumerate(fmt.anchors)))


def written_at(family: str, line: bytes) -> float | None:
    """When *line* says it was written, if it is one of its family's anchors."""
    anchors = _anchors(family)
    m = anchors.match(line) if anchors is not None else None
    if m is None:
        return None
    groups = {k[0]: v for k, v in m.groupdict().items() if v is not None}
    t = line_time(family, decode(groups["t"]))
    if t is None:
        return None
    return t + int(groups.get("m", b"0")) / 1000
