"""gunicorn error log records (glogging.Logger, default ``--error-logfile`` format).

``[2024-05-01 10:00:00 +0000] [812] [ERROR] message``. Tracebacks follow a record on
lines of their own, without the prefix: they belong to the record above them.

With ``--log-syslog`` gunicorn sends ``gunicorn.<proc_name>.error: [812] message``
(glogging's ``syslog_fmt``: no time, no level); once the syslog prefix is stripped
(:mod:`gw502d.parse.syslog`) the message is ``[812] message``, so the time and the level
are optional. The prefix still starts with a literal ``[``: the combined matcher skips the
family's branch on the first byte of any other line.
"""

from gw502d.parse.record import RecordFormat
from gw502d.parse.template import CaptureType

TYPES = {
    "iso_time": CaptureType(r"\d\d\d\d-\d\d-\d\d \d\d:\d\d:\d\d(?: [+-]\d{4}|)"),
    "LEVEL": CaptureType(r"[A-Z]++"),
    # a bind address as gunicorn prints it: a socket tuple's repr, or one token (unix:...)
    "address": CaptureType(r"\('[^']*+', \d[, \d]*+\)|[^\s\[\]]++"),
    # The arbiter names a worker's deadly signal (gunicorn >= 21: "was sent SIGSEGV!", or
    # "code 139" when the wait status is no signal number); SIGKILL has an entry of its
    # own and SIGTERM is a normal stop, so neither is a crash.
    "crash_signal": CaptureType(r"(?!SIGKILL!|SIGTERM!)(?:SIG[A-Z0-9]++|code \d++)"),
    # gunicorn 20.1 says "terminated due to signal 11": any number but 9 and 15
    "crash_signum": CaptureType(r"(?!(?:9|15)$)\d++", int),
}

FORMAT = RecordFormat(
    family="gunicorn",
    prefix="[[?{time:iso_time}\\] \\[]{pid:int}] [?\\[{level:LEVEL}\\] ]",
    types=TYPES,
    time_formats=("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S"),
)
