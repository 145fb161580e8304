"""What the exporter hides of a log line: client addresses, query strings, cookies.

Everything after a path's first ``?`` or ``;`` (path parameters: ``;jsessionid=``), or
either one percent-encoded (``%3F``, ``%253F``), may carry a token: it is cut up to the end
of the URI. A URI ends at whitespace or a double quote, which clients percent-encode; ``,``
``'`` and ``)`` they do not, so those end nothing. A cookie or Authorization value is cut to
the end of the line. Used by ``/incidents`` and by the daemon's incident events, so both
hide the same things.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gw502d.classify.matcher import Slot
from gw502d.parse.record import decode

REDACTED = "<redacted>"
_CLIENT_FACTS = frozenset({"client"})
_URI_FACTS = frozenset({"uri"})
_MARK = r"(\?|;|%(?:25)*3[fFbB])"
_AFTER_PATH = re.compile(_MARK + r"[^\s\"]+")
# A fact that is a URI ends where the value does (uWSGI's may hold spaces).
_URI_TAIL = re.compile(_MARK + r".+", re.DOTALL)
_CREDENTIAL = re.compile(r"(?i)((?:cookie|authorization)[\"']?\s*[:=]\s*)\S.*")
_SUB = r"\1" + REDACTED


def redact_text(text: str) -> str:
    """*text* without what follows a path (query, parameters) and without cookie values."""
    if "?" in text or ";" in text or "%" in text:
        text = _AFTER_PATH.sub(_SUB, text)
    return _CREDENTIAL.sub(_SUB, text)


def redact_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """Facts without client addresses, query strings and cookies."""
    out: dict[str, Any] = {}
    for name, value in facts.items():
        if name in _CLIENT_FACTS:
            out[name] = REDACTED
        elif isinstance(value, str):
            out[name] = redact_text(_URI_TAIL.sub(_SUB, value) if name in _URI_FACTS else value)
        else:
            out[name] = value
    return out


def redact_line(slot: Slot, line: bytes) -> str:
    """The line without the client's address, query strings and cookie values.

    The address is cut where the line's own structure has it (nginx's ``client:``, the end
    of a uWSGI request error), not wherever the same text appears: the upstream is often
    the same 127.0.0.1.
    """
    m = slot.full.match(line)
    spans = []
    if m is not None:
        for captures, first in slot.full_captures:
            spans += [m.span(first + n) for n, (name, _) in enumerate(captures)
                      if name in _CLIENT_FACTS and m.start(first + n) >= 0]
    for start, end in sorted(spans, reverse=True):
        line = line[:start] + REDACTED.encode() + line[end:]
    return redact_text(decode(line))
