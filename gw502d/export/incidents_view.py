"""``/incidents`` as JSON (the default) or as an HTML table, one bounded page at a time.

A page holds at most ``query.limit`` entries and about ``MAX_BODY`` bytes: entries are
serialised one by one and the page ends early when the next would pass the budget, with a
``next`` link that continues where it stopped. Every value in the HTML comes from log
lines and is escaped; the page's only style carries the response's CSP nonce.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from html import escape
from typing import Any
from urllib.parse import urlencode

from gw502d.export.incidents import DEFAULT_LIMIT, Entry, IncidentQuery

MAX_BODY = 1 << 20
_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}"
          "code{white-space:pre-wrap;word-break:break-all}")


def page_url(query: IncidentQuery, *, before: int | None, html: bool) -> str:
    """The URL of *query*'s page of ids below *before*, in JSON or HTML."""
    params = {"before": before, "incident": query.incident, "source": query.source,
              "limit": query.limit if query.limit != DEFAULT_LIMIT else None,
              "format": "html" if html else None}
    return "/incidents?" + urlencode({k: v for k, v in params.items() if v is not None})


def _page(entries: Iterable[Entry], query: IncidentQuery,
          encode: Callable[[dict[str, Any]], str]) -> tuple[list[str], int | None]:
    """The encoded entries of one page and the id the next page starts below (or None)."""
    out: list[str] = []
    size = 0
    last: int | None = None
    it: Iterator[Entry] = iter(entries)
    for number, entry in it:
        text = encode(entry)
        if len(out) == query.limit or (out and size + len(text) > MAX_BODY):
            return out, last
        out.append(text)
        size += len(text)
        last = number
    return out, None


def render_json(entries: Iterable[Entry], query: IncidentQuery) -> bytes:
    """``{"incidents": [...], "next": URL or null}``, newest first."""
    items, more = _page(entries, query, lambda e: json.dumps(e, ensure_ascii=False, indent=1))
    following = None if more is None else page_url(query, before=more, html=False)
    return ('{"incidents": [\n' + ",\n".join(items) + "\n],\n"
            f'"next": {json.dumps(following)}}}\n').encode()


def _row(entry: dict[str, Any]) -> str:
    facts = "<br>".join(f"{escape(str(k))}={escape(str(v))}" for k, v in entry["facts"].items())
    link = escape(page_url(IncidentQuery(incident=entry["incident"]), before=None, html=True))
    cells = (str(entry["id"]), escape(entry["time"]),
             f'<a href="{link}">{escape(entry["incident"])}</a>', escape(entry["source"]),
             escape(entry["severity"]), escape(str(entry["status"] or "-")),
             escape(entry["log"]), facts, escape(entry["remediation"] or ""),
             f"<code>{escape(entry['line'])}</code>")
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_html(entries: Iterable[Entry], query: IncidentQuery, nonce: str) -> bytes:
    """The same page as a table for a person; styled only through *nonce*."""
    rows, more = _page(entries, query, _row)
    head = "".join(f"<th>{h}</th>" for h in ("id", "time", "incident", "source", "severity",
                                              "HTTP", "log", "facts", "remediation", "line"))
    title = "recent incidents" + (f": {query.incident}" if query.incident else "")
    following = ("" if more is None else
                 f'<p><a href="{escape(page_url(query, before=more, html=True))}">older</a></p>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>gw502d: {escape(title)}</title>"
        f"<style nonce=\"{escape(nonce)}\">{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1><p><a href=\"/\">all incident types</a></p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"{following}</body></html>\n"
    ).encode()
