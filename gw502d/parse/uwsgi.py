"""uWSGI log records.

uWSGI writes plain lines with no prefix by default; ``--log-date`` (or ``log-date = true``)
prefixes them with ctime ``Sat Jan  7 10:00:00 2017 - ``. Request log lines start with
``[pid: N|app: N|req: N/N]``, optionally after ``{address space usage: ...}`` memory
reports. Errors on a request use the ``uwsgi_req_error`` form (core/uwsgi.h):
``func(): strerror [file line N] during METHOD URI (ADDR)``.
"""

from gw502d.parse.record import RecordFormat
from gw502d.parse.template import CaptureType

_CTIME = rb"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}"
TYPES = {
    "ctime": CaptureType(_CTIME.decode()),
    # a socket name inside double quotes: one pass, nothing to backtrack into
    "dq": CaptureType(r'[^"]*+'),
    # the http router's calls on its worker connection (hr_instance_read/write) and on the
    # client's (hr_read/hr_write, hr_ssl_*): the same line shape, different culprits
    "hr_instance_call": CaptureType(r"hr_instance_\w++"),
    "hr_client_call": CaptureType(r"hr_(?!instance_)\w++"),
    # strerror() text before "[file line N]": no brackets, so a request's text after it
    # (the router's key is the client's Host) cannot stand in for it
    "strerror": CaptureType(r"[^\[\]()]*?"),
    "memory_report": CaptureType(r"\{address space usage: \d+ bytes/\d+MB\} "
                                 r"\{rss usage: \d+ bytes/\d+MB\} "),
}

FORMAT = RecordFormat(
    family="uwsgi",
    prefix="[?{time:ctime} - ]",
    forms={
        "request_log": "[?{:memory_report}][pid: {worker_pid:int}|app: {app:int}|"
                       "req: {:int}/{:int}] {client:token} ",
        "request_error": "[?{time:ctime} - ]{func:ident}(): {strerror:text} [{:token} line {:int}] "
                         "during {method:method} ",
    },
    types=TYPES,
    time_formats=("%a %b %d %H:%M:%S %Y",),
    # Without log-date most lines have no time; these do: a dated line, a request log line
    # (written when the request ends: its start time plus msecs), the start banner.
    anchors=(
        rb"(?P<time>" + _CTIME + rb") - ",
        rb"(?:\{[^}]*+\} \{[^}]*+\} )?\[pid: \d++\|app: -?\d++\|req: -?\d++/\d++\] "
        # the last duration: from the line's end back, not through a URI of 64 KiB
        rb"[^\[]*+\[(?P<time>" + _CTIME + rb")\] .* in (?P<ms>\d++) msecs",
        rb"\*\*\* Starting uWSGI [^\[]*+\[(?P<time>" + _CTIME + rb")\]",
    ),
)
