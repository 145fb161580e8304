"""Werkzeug development server records (werkzeug.serving, Python's socketserver).

Request lines follow the common log format, ``127.0.0.1 - - [01/May/2024 10:00:00] "GET /
HTTP/1.1" 200 -``, coloured with ANSI codes on a terminal (stripped before parsing).
Errors the server cannot handle end as a Python traceback whose last line names the
exception, e.g. ``BrokenPipeError: [Errno 32] Broken pipe``.
"""

from gw502d.parse.record import RecordFormat

FORMAT = RecordFormat(
    family="werkzeug",
    prefix="",
    forms={
        "request_log": '{client:token} - - [{time:clf_time}] "',
    },
)
