"""Werkzeug development server records (werkzeug.serving, Python's socketserver).

Request lines follow the common log format, ``127.0.0.1 - - [01/May/2024 10:00:00] "GET /
HTTP/1.1" 200 -``, coloured with ANSI codes on a terminal (stripped before parsing).
Errors the server cannot handle end as a Python traceback whose last line names the
exception, e.g. ``BrokenPipeError: [Errno 32] Broken pipe``.
"""

from gw502d.parse.record import RecordFormat
from gw502d.parse.template import CaptureType

TYPES = {
    "clf_time": CaptureType(r"\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d"),
    "ansi": CaptureType(r"(?:\x1b\[[\d;]*m)*"),
}

FORMAT = RecordFormat(
    family="werkzeug",
    prefix="",
    forms={
        "request_log": '{client:token} - - [{time:clf_time}] "',
    },
    types=TYPES,
)
