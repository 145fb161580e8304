"""nginx error_log records (ngx_log_error_core, ngx_http_log_error_handler).

``2024/05/01 10:00:00 [error] 812#812: *3 MESSAGE[ (errno: text)][ while action], client: A,
server: S[, request: "R"][, subrequest: "SR"][, upstream: "U"][, host: "H"][, referrer: "F"]``

Fields come left to right in that order. ``request``, ``host`` and ``referrer`` are copied
from the client verbatim; only fields up to ``upstream`` are parsed, and only the scheme and
peer of the upstream (its URI part can carry client text). nginx cuts a record at 2048 bytes
(NGX_MAX_ERROR_STR), so any trailing field may be missing or cut short.
"""

from gw502d.parse.record import RecordFormat

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
)
