"""Parse: one module per log family, each describing the shapes of its lines."""

from gw502d.parse import gunicorn, nginx, uwsgi, werkzeug
from gw502d.parse.record import Record, RecordFormat

FORMATS: dict[str, RecordFormat] = {
    m.FORMAT.family: m.FORMAT for m in (nginx, gunicorn, werkzeug, uwsgi)
}
FAMILIES = tuple(FORMATS)

__all__ = ["FAMILIES", "FORMATS", "Record", "RecordFormat"]
