"""Syslog prefixes: what rsyslog, syslog-ng or ``journalctl -o short`` put before a message.

A program that logs through syslog (nginx ``error_log syslog:``, uWSGI ``--logger
rsyslog``, gunicorn ``--log-syslog``) ends up in a file with a prefix before its own line.
The forms, as rsyslog 8.2302 writes them (tests/test_syslog.py has its real lines):

- RFC 3164, ``RSYSLOG_TraditionalFileFormat``, ``journalctl -o short[-precise]``:
  ``Oct 14 13:38:27 web1 nginx[740353]: msg`` (the host is absent from journalctl's
  output for an entry without ``_HOSTNAME``; a tag from an RFC 5424 sender has no ``:``);
- ``RSYSLOG_FileFormat`` (rsyslog's default on Debian), ``journalctl -o short-iso``:
  ``2025-10-14T13:38:27.123456+00:00 web1 nginx[740353]: msg``;
- RFC 5424, ``RSYSLOG_SyslogProtocol23Format``: ``<13>1 2025-10-14T13:38:27.123+00:00 web1
  nginx 740353 - - msg``, the PRI optional. A message rsyslog received as RFC 3164 keeps
  the space after its ``tag:`` there (``- - -  msg``), so up to two spaces are taken.

nginx, uWSGI's rsyslog logger and Python's SysLogHandler (gunicorn) send RFC 3164, whose
messages come back exactly, indentation included. rsyslog writes an RFC 5424 message that
starts with a space with no separator before it, so such a message loses one space
(a traceback's ``  File`` line stays indented).

:func:`strip_block` does a block in one ``findall`` over the joined lines (the regex engine
walks the lines, no Python code runs per line), returning the messages, the tags and the
times as written. :func:`family_of` names the family a tag speaks of; :func:`parse_time`
converts a time when one is needed (an incident line, not every line: :class:`PrefixTimes`
converts on first read).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter
from typing import NamedTuple, overload

_TIME = (rb"(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d{1,9})?"
         rb"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d))")
# RFC 5424 STRUCTURED-DATA: "-" or [id param="value"]..., "]" and '"' escaped inside values.
# No possessive repeat of a group with alternatives: Python before 3.11.5 (Debian 12 has
# 3.11.2) matches those wrongly (gh-106052); the alternatives exclude each other anyway.
_SD = rb'(?:-|(?:\[(?:[^\]"\\]++|\\.|"(?:[^"\\]++|\\.)*")*\])+)'
_NAME = rb"[^\s\[\]:]++"
# Groups: 1 the RFC 5424 version (the conditionals below test it), 2 time, 3 tag, 4 message.
_LINE = re.compile(
    rb"^(?:(?:<\d{1,3}>)?(1 )?(" + _TIME + rb") "
    rb"(?(1)[^ ]++ |(?:" + _NAME + rb" )?)"  # host: always in RFC 5424, else optional
    rb"(" + _NAME + rb")"
    rb"(?(1) [^ ]++ [^ ]++ " + _SD + rb"(?:  ?|$)|(?:\[\d+\])?:?(?: |$)))?"
    rb"(.*)",
    re.MULTILINE)
_GET_TIME, _GET_TAG, _GET_MESSAGE = itemgetter(1), itemgetter(2), itemgetter(3)


class Stripped(NamedTuple):
    """A block's lines without their syslog prefixes; ``b""`` where a line had none."""

    lines: list[bytes]
    tags: list[bytes]
    times: list[bytes]


def strip_block(lines: list[bytes]) -> Stripped:
    """Split every line into its prefix's tag and time and the message after them.

    A line without a syslog prefix comes back whole, with an empty tag and time.

    >>> strip_block([b"Oct 14 13:38:27 web1 nginx[740353]: 2025/10/14 13:38:27 [error] x",
    ...              b"not syslog"])
    Stripped(lines=[b'2025/10/14 13:38:27 [error] x', b'not syslog'], tags=[b'nginx', b''], \
times=[b'Oct 14 13:38:27', b''])
    """
    if not lines:
        return Stripped([], [], [])
    found = _LINE.findall(b"\n".join(lines))
    if len(found) != len(lines):  # a line with a "\n" in it: not from a line splitter
        found = [m.groups() for m in map(_LINE.match, lines) if m is not None]
    return Stripped(list(map(_GET_MESSAGE, found)), list(map(_GET_TAG, found)),
                    list(map(_GET_TIME, found)))


# Not "python": ``python3 -m gunicorn`` and ``python3 app.py`` (Werkzeug) share it, so its
# lines are left to the all-families classifier.
_FAMILY_OF_TAG = re.compile(rb"(nginx)|(uwsgi)|(gunicorn)|(werkzeug|flask)", re.I)
_FAMILIES = (None, "nginx", "uwsgi", "gunicorn", "werkzeug")


@functools.lru_cache(maxsize=1024)
def family_of(tag: bytes | str) -> str | None:
    """The log family a syslog tag, journal identifier or unit name speaks of, or None.

    >>> family_of(b"nginx"), family_of("gunicorn.app.error"), family_of("uwsgi@shop.service")
    ('nginx', 'gunicorn', 'uwsgi')
    """
    raw = tag.encode("utf-8", "replace") if isinstance(tag, str) else tag
    m = _FAMILY_OF_TAG.search(raw)
    return _FAMILIES[m.lastindex or 0] if m is not None else None


_MONTHS = {m.encode(): n for n, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def parse_time(raw: bytes, now: float | None = None) -> float | None:
    """A prefix's time as seconds since the epoch, or None if it is not one.

    RFC 3164 times have neither year nor zone: they are local time, in the year that puts
    them at most a day after ``now`` (a December line read in January is last year's).
    """
    text = raw.decode("ascii", "replace")
    if raw[:1].isdigit():
        if text[-5:-4] in "+-" and text[-3:-2] != ":":  # journalctl's +0000
            text = f"{text[:-2]}:{text[-2:]}"
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    month = _MONTHS.get(raw[:3])
    try:
        day, clock = int(raw[4:6]), text[7:]
        hms, _, frac = clock.partition(".")
        h, m, s = (int(x) for x in hms.split(":"))
    except ValueError:
        return None
    if month is None:
        return None
    now = time.time() if now is None else now
    year = time.localtime(now).tm_year
    for y in (year, year - 1):
        t = time.mktime((y, month, day, h, m, s, 0, 0, -1)) + float(f"0.{frac or 0}")
        if t <= now + 86400:
            return t
    return None


class PrefixTimes(Sequence[float | None]):
    """A stripped block's prefix times as epoch seconds (None: no time), each converted
    when it is read: a scan reads those of incident lines only."""

    def __init__(self, raw: Sequence[bytes]) -> None:
        self._raw = raw

    def __len__(self) -> int:
        return len(self._raw)

    @overload
    def __getitem__(self, i: int) -> float | None: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[float | None]: ...

    def __getitem__(self, i: int | slice) -> float | Sequence[float | None] | None:
        if isinstance(i, slice):
            return [_cached_time(raw) for raw in self._raw[i]]
        return _cached_time(self._raw[i])


@functools.lru_cache(maxsize=4096)  # lines come in bursts that share a second
def _cached_time(raw: bytes) -> float | None:
    return parse_time(raw) if raw else None
