"""``/``: the on-call page, rendered from a :class:`~gw502d.export.page_model.PageModel`.

What is wrong now, since when, on which upstream and what to change, then the health of the
daemon itself. One HTML document with no external resource: its style and its script carry
the response's CSP nonce, charts are inline SVG drawn here (shapes and classes, never a
``style`` attribute, which the policy blocks). It is complete without JavaScript; the
script only fetches the page again every :data:`REFRESH_SECONDS` and swaps ``<main>``,
keeping the ``<details>`` a reader opened (the policy lets it fetch from this server
only). Light and dark follow ``prefers-color-scheme``; a narrow screen stacks everything,
the logs' table too.

Every value is escaped: upstreams, facts in remediation texts and log paths come from log
lines or files, and remediation texts hold ``<placeholders>``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from gw502d.export.page_model import IncidentRow, LogRow, PageModel
from gw502d.export.rates import RECENT_MINUTES

REFRESH_SECONDS = 10
_CHART_W, _CHART_H = 120, 30

_STYLE = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1b1b;--muted:#5f6368;--line:#dadce0;
--card:#f6f7f8;--crit:#b3001b;--err:#c74800;--warn:#946200;--info:#2f63a0;--bad-bg:#fce8e8;
--bad-fg:#8a0012;--ok:#1e7b34;--link:#0b57d0}
@media (prefers-color-scheme:dark){:root{--bg:#131314;--fg:#e3e3e3;--muted:#a0a4a8;
--line:#3c4043;--card:#1e1f20;--crit:#ff6b81;--err:#ff9a57;--warn:#f2c14e;--info:#8ab4f8;
--bad-bg:#4c1119;--bad-fg:#ffd6dc;--ok:#81c995;--link:#a8c7fa}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:72rem;padding:1rem;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif}
a{color:var(--link)}
header{display:flex;flex-wrap:wrap;gap:.2rem 1rem;align-items:baseline;
border-bottom:1px solid var(--line);padding-bottom:.5rem}
h1{font-size:1.3rem;margin:0}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
h3{font-size:1.05rem;margin:0;overflow-wrap:anywhere}
.muted,small{color:var(--muted)}
.alert{background:var(--bad-bg);color:var(--bad-fg);border-left:4px solid var(--crit);
padding:.5rem .8rem;margin:.8rem 0}.alert ul{margin:.2rem 0;padding-left:1.2rem}
.ok{color:var(--ok)}
.incident{background:var(--card);border-left:4px solid var(--sev);border-radius:4px;
padding:.6rem .8rem;margin:.8rem 0}
.sev-critical{--sev:var(--crit)}.sev-error{--sev:var(--err)}.sev-warning{--sev:var(--warn)}
.sev-info{--sev:var(--info)}
.top{display:flex;flex-wrap:wrap;gap:.25rem .7rem;align-items:center}
.badge{background:var(--sev);color:var(--bg);border-radius:3px;padding:0 .35rem;
font-size:.75rem;font-weight:700;text-transform:uppercase}
.rate{margin-left:auto;display:flex;align-items:center;gap:.5rem;white-space:nowrap}
.rate b{font-size:1.25rem}
svg.chart{width:150px;height:30px;color:var(--sev)}
svg.chart .bar{fill:currentColor}svg.chart .now{fill:var(--line)}
svg.chart .base{stroke:var(--muted);stroke-width:.5}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;margin:.4rem 0}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
.summary,.when,.cause{margin:.3rem 0}.when{color:var(--muted)}
.when time{color:var(--fg)}
.fix{margin:.3rem 0;padding-left:.6rem;border-left:2px solid var(--sev);overflow-wrap:anywhere}
ul.upstreams{list-style:none;padding:0;margin:.3rem 0}ul.upstreams>li{margin:.4rem 0}
code{font-size:.92em;overflow-wrap:anywhere}#logs code{overflow-wrap:normal}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:var(--bad-bg);color:var(--bad-fg)}
details{margin:.8rem 0}summary{cursor:pointer}
#stale,.failed{color:var(--crit);font-weight:600}
@media (max-width:40rem){body{padding:.6rem;font-size:14px}.rate{margin-left:0}
dl{grid-template-columns:1fr}dt{margin-top:.2rem}svg.chart{width:96px}
#logs thead{display:none}#logs tr,#logs td{display:block}#logs tr{margin:.6rem 0;
border-bottom:1px solid var(--line)}#logs td{border:0;padding:.1rem .5rem;text-align:left}
#logs td.n{display:inline-block}#logs td::before{content:attr(data-label) ": ";
color:var(--muted)}}
"""

# Fetch the page again and swap <main> (and the title). Only those parts are parsed, in an
# inert <template>: a whole document would bring a <style> with another response's nonce,
# which the policy reports. A failure says so; the old numbers stay visible.
_SCRIPT = """
(() => {
  const stale = document.getElementById("stale");
  const cut = (text, open, close) => {
    const start = text.indexOf(open), end = text.lastIndexOf(close);
    return start < 0 || end < start ? "" : text.slice(start, end + close.length);
  };
  async function refresh() {
    if (document.hidden) return;
    try {
      const answer = await fetch(location.href, {cache: "no-store"});
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const text = await answer.text();
      const part = document.createElement("template");
      part.innerHTML = cut(text, "<title>", "</title>") + cut(text, "<main>", "</main>");
      const main = part.content.querySelector("main");
      if (!main) throw new Error("not the page");
      for (const old of document.querySelectorAll("main details[id]")) {
        const same = main.querySelector("details#" + CSS.escape(old.id));
        if (same) same.open = old.open;
      }
      document.querySelector("main").replaceWith(main);
      document.title = part.content.querySelector("title").textContent;
      stale.hidden = true;
    } catch (error) {
      stale.textContent = "Refresh failed (" + error.message + "): these numbers are old.";
      stale.hidden = false;
    }
  }
  document.getElementById("refresh").textContent = "· refreshes every SECONDS s";
  setInterval(refresh, SECONDS * 1000);
})();
""".replace("SECONDS", str(REFRESH_SECONDS))


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    """A duration in words, to the minute (the page is refreshed, not a stopwatch)."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes // 1440} days"


def _when(now: float, t: float) -> str:
    """How long ago, and the time (its date too when not today)."""
    at = datetime.fromtimestamp(t, UTC)
    shown = at.strftime("%H:%M:%S UTC" if at.date() == datetime.fromtimestamp(now, UTC).date()
                        else "%Y-%m-%d %H:%M:%S UTC")
    return (f'<time datetime="{at.isoformat(timespec="seconds")}">{_span(max(now - t, 0.0))} '
            f"ago</time> <small>({shown})</small>")


def _chart(minutes: tuple[int, ...]) -> str:
    """Bars per minute, scaled to the hour's peak; the last five minutes shaded."""
    n = len(minutes)
    peak = max(minutes) or 1
    step = _CHART_W / n
    bars = []
    for i, count in enumerate(minutes):
        if count:
            height = max(round((_CHART_H - 2) * count / peak, 1), 1.0)
            bars.append(f'<rect class="bar" x="{i * step:.1f}" y="{_CHART_H - 1 - height:.1f}" '
                        f'width="{step * 0.8:.1f}" height="{height:.1f}"/>')
    shade = step * RECENT_MINUTES
    return (f'<svg class="chart" viewBox="0 0 {_CHART_W} {_CHART_H}" role="img" '
            f'aria-label="lines per minute over the last hour, peak {max(minutes):,}">'
            f"<title>lines per minute over the last hour (peak {max(minutes):,}/min)</title>"
            f'<rect class="now" x="{_CHART_W - shade:.1f}" y="0" width="{shade:.1f}" '
            f'height="{_CHART_H}"/>{"".join(bars)}'
            f'<line class="base" x1="0" y1="{_CHART_H - 0.5}" x2="{_CHART_W}" '
            f'y2="{_CHART_H - 0.5}"/></svg>')


def _counts(row: IncidentRow) -> str:
    text = f"{row.since_start:,} since start · {row.hour:,} in the last hour"
    if row.total != row.since_start:
        text += f" · {row.total:,} in all (earlier runs included)"
    return text


def _fix(text: str) -> str:
    return f'<p class="fix"><b>fix:</b> {escape(text)}</p>'


def _upstreams(row: IncidentRow) -> str:
    breakdown = row.upstreams
    if not breakdown.rows:
        return _fix(row.remediation) if row.remediation else ""
    if len(breakdown.rows) == 1 and not breakdown.other:
        only = breakdown.rows[0]
        name = "no upstream named" if only.name is None else f"<code>{escape(only.name)}</code>"
        return f"<p>upstream: {name}</p>{_fix(only.remediation)}"
    items = []
    for up in breakdown.rows:
        name = ('<span class="muted">lines that name no upstream</span>' if up.name is None
                else f"<code>{escape(up.name)}</code>")
        items.append(f'<li class="upstream">{name}: <b>{up.count:,}</b> '
                     f"line{'s' if up.count != 1 else ''}{_fix(up.remediation)}</li>")
    if breakdown.other:
        items.append(f'<li class="muted">other upstreams or earlier runs: {breakdown.other:,} '
                     "lines</li>")
    return f'<p>by upstream:</p><ul class="upstreams">{"".join(items)}</ul>'


def _incident(row: IncidentRow, now: float) -> str:
    status = f" · HTTP {row.status}" if row.status else ""
    first = ('<span class="muted">before this start</span>' if row.first_seen is None
             else _when(now, row.first_seen) + " in this run")
    last = _when(now, row.last_seen) if row.last_seen else '<span class="muted">unknown</span>'
    when = f"last seen {last} · first seen {first} · {_counts(row)}"
    causes = "".join(f'<p class="cause">root cause: {escape(c.symptom)} ← <b>{escape(c.name)}'
                     f"</b>, {c.count:,} of {row.total:,}</p>" for c in row.causes)
    return (
        f'<article class="incident sev-{escape(row.severity)}" '
        f'data-incident="{escape(row.id)}" data-source="{escape(row.source)}">'
        f'<div class="top"><span class="badge">{escape(row.severity)}</span>'
        f"<h3>{escape(row.id)}</h3>"
        f'<span class="muted">{escape(row.source)}{status}</span>'
        f'<span class="rate">{_chart(row.minutes)}<span><b class="recent">{row.recent:,}</b> '
        f"in {RECENT_MINUTES} min</span></span></div>"
        f'<p class="summary">{escape(row.summary)}</p><p class="when">{when}</p>{causes}'
        f'{_upstreams(row)}<p><a href="{escape(row.events_html)}">recent lines</a> · '
        f'<a href="{escape(row.events_json)}">JSON</a></p></article>')


def _alerts(model: PageModel) -> str:
    out = []
    missing = model.missing_logs
    if missing:
        items = "".join(f"<li><b>{escape(log.name)}</b> {_path(log.path)}: "
                        f"{escape(log.problem or '')}</li>" for log in missing)
        out.append(f'<div class="alert" role="alert" id="missing-logs"><b>{len(missing)} '
                   f"configured log{'s are' if len(missing) != 1 else ' is'} not followed"
                   f"</b><ul>{items}</ul></div>")
    run = model.run
    if run.problem:
        out.append(f'<div class="alert" role="alert">/healthz: {escape(run.problem)}</div>')
    if not run.reload_ok:
        out.append('<div class="alert" role="alert">The last reload failed: the previous '
                   "configuration runs (see the daemon's log).</div>")
    return "".join(out)


def _incidents(model: PageModel) -> str:
    now = model.now
    out = ["<h2>Incidents in the last hour, now first</h2>"]
    if model.incidents:
        out += [_incident(row, now) for row in model.incidents]
    else:
        out.append('<p class="ok" id="all-quiet">No incident in the last hour.</p>')
    if model.earlier:
        n = len(model.earlier)
        out.append(f'<details id="earlier"><summary>{n} incident type{"s" if n != 1 else ""} '
                   "seen before the last hour</summary>"
                   f"{''.join(_incident(row, now) for row in model.earlier)}</details>")
    if model.never_seen:
        n = len(model.never_seen)
        names = ", ".join(f"{escape(i)} ({escape(s)})" for i, s in model.never_seen)
        other = "other " if model.incidents or model.earlier else ""
        out.append(f'<details id="never-seen"><summary>{n} {other}known incident'
                   f"{'s' if n != 1 else ''}: none seen</summary>"
                   f'<p class="muted">{names}</p></details>')
    return f'<section id="incidents">{"".join(out)}</section>'


_LOG_COLUMNS = ("log", "path", "family", "state", "last line", "lines", "lag (bytes)",
                "read errors", "rotations", "truncations", "unparsed")


def _path(path: str) -> str:
    """A path that may wrap after each slash."""
    return f"<code>{escape(path).replace('/', '/<wbr>')}</code>"


def _log(log: LogRow, now: float) -> str:
    state = ("followed" if log.followed else
             f"<b>not followed</b> <small>{escape(log.problem or '')}</small>")
    last = _when(now, log.last_line) if log.last_line else '<span class="muted">none yet</span>'
    cells = (escape(log.name), _path(log.path), escape(log.family or "auto"), state, last,
             *(f"{n:,}" for n in (log.lines, log.lag, log.read_errors, log.rotations,
                                  log.truncations, log.unparsed)))
    numeric = ' class="n"'
    tds = "".join(f'<td data-label="{name}"{numeric if i > 4 else ""}>{cell}</td>'
                  for i, (name, cell) in enumerate(zip(_LOG_COLUMNS, cells, strict=True)))
    row_class = "followed" if log.followed else "bad"
    return f'<tr class="{row_class}" data-log="{escape(log.name)}">{tds}</tr>'


def _logs(model: PageModel) -> str:
    head = "".join(f"<th>{h}</th>" for h in _LOG_COLUMNS)
    rows = "".join(_log(log, model.now) for log in model.logs)
    return (f'<section id="logs"><h2>Logs</h2><table>'
            f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></section>")


def _daemon(model: PageModel) -> str:
    run = model.run
    reload = (f'<span class="ok">ok</span>, {_clock(run.reload_time)}' if run.reload_ok else
              '<span class="failed">failed</span>: the previous configuration runs, loaded '
              f"{_clock(run.reload_time)}")
    facts = (
        ("version", escape(model.version)),
        ("host", escape(model.host)),
        ("up", f"{_span(model.now - run.started)}, since {_clock(run.started)}"),
        ("configuration", f"<code>{escape(run.config_source)}</code>"),
        ("last load", reload),
        ("catalog", f"{model.catalog_size} incident types in {model.families} log families"),
        ("health", '<span class="ok">ok</span>' if run.problem is None
         else f'<span class="failed">{escape(run.problem)}</span>'),
    )
    items = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    return f'<section id="daemon"><h2>This daemon</h2><dl>{items}</dl></section>'


def render_page(model: PageModel, nonce: str) -> str:
    """The page; its style and script carry *nonce*, the response's CSP nonce."""
    now_count = sum(1 for row in model.incidents if row.recent)
    title = (f"{now_count} incident type{'s' if now_count != 1 else ''} now"
             if now_count else "quiet") + f" · gw502d on {model.host}"
    n = escape(nonce)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>{escape(title)}</title><style nonce=\"{n}\">{_STYLE}</style></head><body>"
        f"<header><h1>gw502d on {escape(model.host)}</h1>"
        '<nav><a href="/incidents?format=html">recent lines</a> · <a href="/metrics">metrics</a>'
        ' · <a href="/healthz">healthz</a> <small id="refresh"></small></nav></header>'
        f'<main><p class="muted">as of {_clock(model.now)}</p>'
        f"{_alerts(model)}{_incidents(model)}{_logs(model)}{_daemon(model)}</main>"
        '<p id="stale" role="status" hidden></p>'
        f'<script nonce="{n}">{_SCRIPT}</script></body></html>\n'
    )
