"""``/``: one plain HTML page, the incidents with their counts and remediation.

For a person with a browser and no Grafana at hand. Every value is escaped: remediation
texts hold facts read from logs (and ``<upstream>`` placeholders).
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from gw502d import __version__
from gw502d.classify.catalog import Catalog
from gw502d.export.collector import Numbers

_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}"
          "tr.none{color:#888}")


def _when(timestamp: float) -> str:
    if not timestamp:
        return "never"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_page(catalog: Catalog, numbers: Numbers, nonce: str) -> str:
    """The page: incidents seen first (most frequent on top), then the rest of the catalog.

    Its style carries *nonce*, the response's Content-Security-Policy nonce."""
    keys = sorted(catalog.keys, key=lambda k: -numbers.incidents.get(k, 0))
    rows = []
    for key in keys:
        incident = catalog.incident(*key)
        count = numbers.incidents.get(key, 0)
        cells = (incident.id, incident.source, incident.severity, incident.status or "-", count,
                 _when(numbers.last_seen.get(key, 0.0)), incident.summary,
                 numbers.remediation.get(key, ""))
        row_class = "" if count else ' class="none"'
        rows.append(f"<tr{row_class}>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells)
                    + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("incident", "source", "severity", "HTTP", "count",
                                              "last seen", "what it is", "remediation"))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>gw502d</title><style nonce=\"{escape(nonce)}\">{_STYLE}</style></head><body>"
        f"<h1>gw502d {escape(__version__)}</h1>"
        "<p><a href=\"/metrics\">/metrics</a> · <a href=\"/incidents\">/incidents</a> · "
        "<a href=\"/healthz\">/healthz</a></p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "</body></html>\n"
    )
