"""nginx error_log records (ngx_log_error_core, ngx_http_log_error_handler).

``2024/05/01 10:00:00 [error] 812#812: *3 MESSAGE[ (errno: text)][ while action], client: A,
server: S[, request: "R"][, subrequest: "SR"][, upstream: "U"][, host: "H"][, referrer: "F"]``

Fields come left to right in that order. ``request``, ``host`` and ``referrer`` are copied
from the client verbatim; only fields up to ``upstream`` are parsed, and only the scheme and
peer of the upstream (its URI part can carry client text). nginx cuts a record at 2048 bytes
(NGX_MAX_ERROR_STR), so any trailing field may be missing or cut short.
"""

import re

from gw502d.parse.record import RecordFormat
from gw502d.parse.template import CaptureType


def _phase(mapping: dict[str, str]) -> CaptureType:
    alternation = "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True))
    return CaptureType(f"(?:{alternation})", mapping.__getitem__)


# nginx's "while ..." action strings (ngx_http_upstream.c, ngx_http_request.c) mapped to the
# phase names the remediation and the metrics speak of.
UPSTREAM_PHASES = {
    "connecting to upstream": "connect",
    "SSL handshaking to upstream": "connect",
    "sending request to upstream": "send",
    "reading response header from upstream": "read_header",
    "reading upstream": "read_body",
}
# Phases in which nginx talks to the client; "... failed (32: Broken pipe)" here is the
# client's doing, in an upstream phase it is the upstream's.
CLIENT_PHASES = {
    "reading client request line": "read_request",
    "reading client request headers": "read_request",
    "reading client request body": "read_body",
    "sending to client": "send_response",
    "sending response to client": "send_response",
}
# nginx notices a client gone in any phase: "client prematurely closed connection while
# sending request to upstream" is the client's doing too.
ANY_PHASES = {
    **CLIENT_PHASES,
    **{action: f"upstream_{phase}" for action, phase in UPSTREAM_PHASES.items()},
}

TYPES = {
    # written out, not \d{4}: a branch that starts with a character class is skipped by sre
    # without entering it when the first byte does not fit
    "ngx_time": CaptureType(r"\d\d\d\d/\d\d/\d\d \d\d:\d\d:\d\d"),
    "level": CaptureType(r"[a-z]++"),
    # no comma: nginx's "server:" value (a server_name or listen address)
    "field": CaptureType(r"[^,]*+"),
    # scheme and peer of nginx's "upstream:" value, never its URI part (client text); only
    # when the line has one upstream field: a second one means the client wrote one of them
    # (nginx before 1.21.1 accepts spaces in the request line; Host and Referer come after).
    # The look-ahead is a greedy .* (lines hold no newline): sre runs to the line's end and
    # steps back in C to each comma only. No repeated group: inside one, sre copies every
    # capture mark set so far on each turn (1 µs a storm hit with the comma-to-comma form),
    # and a lazy .*? tries the literal at every byte of the host and referrer.
    "upstream": CaptureType(r"[a-z0-9+]++://(?:unix:[^\s\":]*+:?|[^\s\"/]*+)"
                            r'(?!.*, upstream: ")'),
    "ngx_phase": _phase(UPSTREAM_PHASES),
    "ngx_client_phase": _phase(CLIENT_PHASES),
    "ngx_any_phase": _phase(ANY_PHASES),
}

FORMAT = RecordFormat(
    family="nginx",
    prefix="{time:ngx_time} [{level:level}] {pid:int}#{tid:int}: [?*{cid:int} ]",
    context=(
        '[?, client: {client:token}[?, server: {server:field}]'
        '[?, request: "{method:method} {uri:word}[? {protocol:word}]"]'
        '[?, subrequest: "{:word}"]'
        '[?, upstream: "{upstream:upstream}]]'
    ),
    # Without spaces in the request line (nginx >= 1.21.1 rejects them), no client text can
    # fake the upstream field here: only server (config) and request come before it.
    evidence_context=(
        ', client: {:field}, server: {:field}, request: "{:nospace} {:nospace} {:quoted}"'
        '[?, subrequest: "{:quoted}"], upstream: "{upstream:upstream}'
    ),
    types=TYPES,
    time_formats=("%Y/%m/%d %H:%M:%S",),
    # NGX_MAX_ERROR_STR: a record is cut to 2047 bytes and its newline. The request line
    # comes before the upstream field, so on a cut line the real upstream may be gone and
    # one forged in the request left.
    max_length=2048,
    cut_at=2047,
    cut_facts=frozenset({"upstream"}),
)
