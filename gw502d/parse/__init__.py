"""Parse: the shapes of log lines, one module per log family, and the template language
they and the catalog are written in."""

from collections.abc import Mapping

from gw502d.parse import gunicorn, nginx, uwsgi, werkzeug
from gw502d.parse import template as _template
from gw502d.parse.record import RecordFormat
from gw502d.parse.template import CaptureType, Compiled, TemplateError

FORMATS: dict[str, RecordFormat] = {
    m.FORMAT.family: m.FORMAT for m in (nginx, gunicorn, werkzeug, uwsgi)
}
FAMILIES = tuple(FORMATS)
# Every capture type a template may use: the generic ones and each family's own.
CAPTURE_TYPES: Mapping[str, CaptureType] = {
    **_template.TYPES, **{k: v for f in FORMATS.values() for k, v in f.types.items()},
}


def compile_template(template: str) -> Compiled:
    """Compile a template with every family's capture types (TemplateError if it is bad)."""
    return _template.compile_template(template, CAPTURE_TYPES)


__all__ = ["CAPTURE_TYPES", "FAMILIES", "FORMATS", "Compiled", "RecordFormat", "TemplateError",
           "compile_template"]
