"""gunicorn error log records (glogging.Logger, default ``--error-logfile`` format).

``[2024-05-01 10:00:00 +0000] [812] [ERROR] message``. Tracebacks follow a record on
lines of their own, without the prefix: they belong to the record above them.
"""

from gw502d.parse.record import RecordFormat
from gw502d.parse.template import CaptureType

TYPES = {
    "iso_time": CaptureType(r"\d\d\d\d-\d\d-\d\d \d\d:\d\d:\d\d(?: [+-]\d{4})?"),
    "LEVEL": CaptureType(r"[A-Z]++"),
}

FORMAT = RecordFormat(
    family="gunicorn",
    prefix="[{time:iso_time}] [{pid:int}] [{level:LEVEL}] ",
    types=TYPES,
    time_formats=("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S"),
)
