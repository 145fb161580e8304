"""The on-call page (issue 17): what is wrong now, on which upstream, what to change.

The model and its order from real lines (the catalog's ``real:`` examples) fed through the
daemon's own pipeline at chosen times; the per-minute rates; the HTML's hygiene under the
CSP (no ``style`` attribute, nonces, everything from logs escaped); and the page in a real
browser: Debian's headless Chromium, driven by Selenium, over a daemon that follows real
nginx and uWSGI while they fail (harakiri behind nginx, an upstream that closes, headers too
big), with a configured log that is missing. Its screenshots (desktop, phone, dark) are
saved in the directory the test prints (``GW502D_SCREENSHOTS`` chooses it).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from gw502d.classify.block import Block
from gw502d.classify.catalog import SEVERITIES, load_catalog
from gw502d.daemon.pipeline import Pipeline, Settings
from gw502d.daemon.totals import Totals
from gw502d.export.page import render_page
from gw502d.export.page_model import (
    CAUSE_NAMES,
    SYMPTOM_NAMES,
    PageModel,
    Reading,
    RunState,
    evidence_upstreams,
    page_model,
)
from gw502d.export.rates import MINUTES, Rates
from gw502d.remediate.correlate import CAUSES, SYMPTOMS
from gw502d.source.follower import LogStats
from gw502d.source.spec import LogSpec
from tests.browser import chrome, console, csp_violations, emulate, screenshot
from tests.daemon import DaemonProcess, append, config_text, incidents, series
from tests.servers.harness import HARAKIRI_SLEEP, HOST, Nginx, Uwsgi, free_port, make_workdir
from tests.servers.provoke import (
    FakeUpstream,
    _parallel,
    behave_close,
    http_request,
    pass_block,
)

CATALOG = load_catalog()
NGINX = LogSpec("/var/log/nginx/error.log", "nginx", "nginx")
UWSGI = LogSpec("/var/log/uwsgi/app.log", "uwsgi", "uwsgi")
GUNICORN = LogSpec("/var/log/gunicorn/error.log", "gunicorn", "gunicorn")
SPECS = [NGINX, UWSGI, GUNICORN]


def real(incident: str, source: str, contains: str = "") -> list[str]:
    """The catalog's lines of (incident, source) that a server wrote in a test."""
    return [ex.line for i in CATALOG.incidents if i.key == (incident, source)
            for ex in i.examples
            if ex.origin.startswith("real:") and ex.incident == incident and contains in ex.line]


def feed(pipeline: Pipeline, spec: LogSpec, lines: list[str], when: float) -> None:
    """One block through the daemon's stages, read at *when* (Pipeline.feed reads now)."""
    block = Block(spec.name, spec.family, [line.encode() for line in lines], when)
    with pipeline.lock:
        for stage in pipeline.stages.route:
            stage(block)


def model_of(pipeline: Pipeline, now: float, stats: dict[str, LogStats] | None = None,
             specs: list[LogSpec] = SPECS) -> PageModel:
    """The page's model as the daemon builds it."""
    numbers = pipeline.numbers()
    s = pipeline.stages
    upstreams = evidence_upstreams(s.tallies, s.root_causes.correlator, numbers)
    followed = {spec.name: LogStats(files=1, open_files=1) for spec in specs}
    return page_model(Reading(s.catalog, numbers, s.rates, upstreams, now), specs,
                      stats if stats is not None else followed,
                      RunState(now - 3600, True, now - 3600, "test.toml", None))


def new_pipeline(totals: Totals | None = None) -> Pipeline:
    return Pipeline(CATALOG, SPECS, Settings(100, True, 5.0), totals or Totals())


# --------------------------------------------------------------------------- rates


def test_rates_per_minute_over_the_hour_in_bounded_memory() -> None:
    rates = Rates()
    pipeline = new_pipeline()
    t0 = 1_800_000_000.0  # a minute's start
    harakiri = real("worker_harakiri", "uwsgi", "HARAKIRI ON WORKER")[:1]
    for minute, n in ((0, 2), (1, 3), (4, 1)):
        block = Block("uwsgi", "uwsgi", [harakiri[0].encode()] * n, t0 + 60 * minute + 5)
        pipeline.stages.tallies.count(block)
        rates.add(block)
    key = ("worker_harakiri", "uwsgi")
    assert rates.series(key, t0 + 250)[-5:] == [2, 3, 0, 0, 1]
    assert len(rates.series(key, t0 + 250)) == MINUTES
    # later reads shift the window without a new block
    assert rates.series(key, t0 + 250 + 120)[-7:] == [2, 3, 0, 0, 1, 0, 0]
    assert rates.first_seen[key] == t0 + 5 and rates.since_start[key] == 6
    assert rates.last_line == {"uwsgi": t0 + 245}
    # a clock set back counts into the newest minute
    block = Block("uwsgi", "uwsgi", [harakiri[0].encode()], t0 - 600)
    pipeline.stages.tallies.count(block)
    rates.add(block)
    assert rates.series(key, t0 + 250)[-1] == 2
    # an hour later the pair is forgotten: memory is minutes x pairs seen within the hour
    quiet = Block("uwsgi", "uwsgi", [b"noise"], t0 + 3700)
    pipeline.stages.tallies.count(quiet)
    other = Block("gunicorn", "gunicorn", [real("client_disconnect", "gunicorn")[0].encode()],
                  t0 + 3 * 3600)
    pipeline.stages.tallies.count(other)
    rates.add(quiet)
    rates.add(other)
    assert rates.series(key, t0 + 3 * 3600) == [0] * MINUTES
    assert list(rates._rings) == [("client_disconnect", "gunicorn")]
    assert rates.since_start[key] == 7  # this run's count stays


def test_rates_survive_a_reload() -> None:
    pipeline = new_pipeline()
    now = time.time()
    feed(pipeline, GUNICORN, real("client_disconnect", "gunicorn"), now)
    rates = pipeline.stages.rates
    pipeline.reload(CATALOG, SPECS, Settings(100, True, 5.0))
    assert pipeline.stages.rates is rates
    feed(pipeline, GUNICORN, real("client_disconnect", "gunicorn"), now)
    assert sum(rates.series(("client_disconnect", "gunicorn"), now)) == 2


# --------------------------------------------------------------------------- the model


def test_now_first_by_severity_then_rate_and_the_rest_collapsed() -> None:
    now = time.time() // 60 * 60 + 45  # the lines below 10 to 30 s ago: this minute
    totals = Totals()
    totals.restore({"incidents": {"worker_exited": {"gunicorn": 4}},
                    "last_seen": {"worker_exited": {"gunicorn": now - 7200}}}, CATALOG)
    pipeline = new_pipeline(totals)
    feed(pipeline, NGINX, real("upstream_header_too_big", "nginx"), now - 600)
    feed(pipeline, GUNICORN, real("client_disconnect", "gunicorn"), now - 20)
    feed(pipeline, UWSGI, real("worker_harakiri", "uwsgi", "HARAKIRI ON WORKER")[:1], now - 60)
    feed(pipeline, NGINX, real("upstream_timeout", "nginx"), now - 10)
    feed(pipeline, GUNICORN, real("address_in_use", "gunicorn", "Can't connect")[:1], now - 30)
    model = model_of(pipeline, now)

    assert [(r.id, r.source, r.recent) for r in model.incidents] == [
        ("address_in_use", "gunicorn", 1),  # critical first, even at one line
        ("upstream_timeout", "nginx", 3),  # then errors, most first
        ("worker_harakiri", "uwsgi", 1),
        ("client_disconnect", "gunicorn", 1),  # info
        ("upstream_header_too_big", "nginx", 0),  # within the hour, not now
    ]
    assert [(r.id, r.total, r.since_start, r.first_seen) for r in model.earlier] == [
        ("worker_exited", 4, 0, None)]
    assert len(model.never_seen) == len(CATALOG.keys) - 6
    timeout = model.incidents[1]
    assert timeout.minutes[-1] == 3 and timeout.hour == 3 and timeout.since_start == 3
    assert timeout.events_html == (
        "/incidents?incident=upstream_timeout&source=nginx&format=html")
    assert model.incidents[-1].minutes[-11] == 1  # ten minutes ago
    # each upstream of the timeouts, with the change for its own phase
    fixes = {u.name: u.remediation for u in timeout.upstreams.rows}
    assert set(fixes) == {"uwsgi://127.0.0.1:51043", "uwsgi://127.0.0.1:42485",
                          "http://127.0.0.1:59005"}  # the upstream, without nginx's URI
    assert "could not connect" in fixes["uwsgi://127.0.0.1:42485"]
    assert "did not read the request" in fixes["http://127.0.0.1:59005"]
    assert "uwsgi_read_timeout" in fixes["uwsgi://127.0.0.1:51043"]
    assert timeout.upstreams.other == 0


def test_root_cause_per_incident_and_per_upstream() -> None:
    """A harakiri next to nginx's premature close pairs; the close on another upstream,
    which no cause explains, gets the catalog's own advice, not the harakiri's."""
    now = time.time()
    pipeline = new_pipeline()
    # nginx's own time next to the undated uWSGI line's arrival
    close = time.strftime("%Y/%m/%d %H:%M:%S") + real("upstream_premature_close", "nginx")[0][19:]
    upstream = close.split('upstream: "')[1].split('"')[0]
    other = close.replace(upstream, "http://127.0.0.1:8000/")
    feed(pipeline, NGINX, [close], now)
    feed(pipeline, UWSGI, real("worker_harakiri", "uwsgi", "HARAKIRI ON WORKER")[:1], now)
    feed(pipeline, NGINX, [other], now + 30)
    row = next(r for r in model_of(pipeline, now + 31).incidents
               if r.id == "upstream_premature_close")
    assert [(c.symptom, c.name, c.count) for c in row.causes] == [
        ("premature close", "uWSGI harakiri", 1)]
    assert row.total == 2
    fixes = {u.name: u.remediation for u in row.upstreams.rows}
    assert "root cause worker_harakiri" in fixes[upstream]
    assert "root cause" not in fixes["http://127.0.0.1:8000"]


def test_logs_not_followed_come_first() -> None:
    pipeline = new_pipeline()
    now = time.time()
    feed(pipeline, NGINX, ["noise"], now - 5)
    stats = {"nginx": LogStats(lines=1, files=1, open_files=1, size=10, offset=4),
             "uwsgi": LogStats(read_errors=3), "gunicorn": LogStats(files=1)}
    logs = model_of(pipeline, now, stats).logs
    assert [(log.name, log.followed) for log in logs] == [
        ("uwsgi", False), ("nginx", True), ("gunicorn", True)]
    assert logs[0].problem is not None and "does not exist" in logs[0].problem
    assert (logs[1].lag, logs[1].last_line, logs[0].read_errors) == (6, now - 5, 3)


def test_every_cause_and_symptom_has_a_name() -> None:
    assert set(CAUSE_NAMES) == set(CAUSES)
    assert set(SYMPTOM_NAMES) == {incident for incident, _ in SYMPTOMS}


# --------------------------------------------------------------------------- the HTML


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_escapes_log_values_and_follows_the_policy() -> None:
    now = time.time()
    hostile = LogSpec('/var/log/<u>x"</u>.log', "app<i>", "nginx")
    pipeline = Pipeline(CATALOG, [hostile], Settings(10, True, 5.0), Totals())
    line = real("upstream_header_too_big", "nginx")[0].split('upstream: "')[0]
    feed(pipeline, hostile, [line + 'upstream: "http://<img>peer<iframe>:8080", '
                             'host: "x"'], now)
    markup = _Markup()
    markup.feed(render_page(model_of(pipeline, now, {}, [hostile]), "N0nce"))
    tags = {tag for tag, _ in markup.tags}
    assert not tags & {"img", "iframe", "u", "i"}, tags
    text = "".join(markup.text)
    assert "http://<img>peer<iframe>:8080" in text
    assert '/var/log/<u>x"</u>.log' in text and "app<i>" in text
    # under the CSP: no style attribute anywhere, the nonce on every style and script
    assert not [tag for tag, attrs in markup.tags if "style" in attrs]
    assert all(attrs.get("nonce") == "N0nce" for tag, attrs in markup.tags
               if tag in ("style", "script"))
    assert {"style", "script", "svg", "main"} <= tags


# --------------------------------------------------------------------------- the browser


def _artifacts(tmp_path: Path) -> Path:
    where = Path(os.environ.get("GW502D_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    print(f"\npage screenshots: {where}")
    return where


def _articles(driver: Any) -> list[dict[str, Any]]:
    """Each incident article on the page now, as the reader sees it."""
    return driver.execute_script("""
        return [...document.querySelectorAll('main #incidents > article.incident')].map(a => ({
            incident: a.dataset.incident, source: a.dataset.source,
            severity: a.querySelector('.badge').textContent,
            recent: Number(a.querySelector('b.recent').textContent.replace(/,/g, '')),
            text: a.innerText,
            upstreams: [...a.querySelectorAll('li.upstream')].map(li => li.innerText),
            bars: a.querySelectorAll('svg.chart rect.bar').length}));""")


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.servers
def test_the_page_in_a_browser_on_real_failures(tmp_path: Path) -> None:
    shots = _artifacts(tmp_path)
    work = make_workdir()
    gunicorn_log = tmp_path / "gunicorn.log"
    gunicorn_log.touch()
    try:
        uw = Uwsgi(work, {"harakiri": 1}, processes=3)
        assert uw.port is not None
        with FakeUpstream(behave_close) as closing:
            second = free_port()
            nginx = Nginx(work, pass_block("uwsgi", uw.port), http_block=(
                f"    server {{ listen {HOST}:{second}; location / {{ "
                f"proxy_pass http://{HOST}:{closing.port}; }} }}\n"))
            logs = {"nginx": nginx.log_path, "uwsgi": uw.log_path, "gunicorn": gunicorn_log,
                    "missing": tmp_path / "absent" / "app.log"}
            with uw, nginx, DaemonProcess(tmp_path, config_text(logs, start_at="beginning")) as d:
                d.start()
                counts = _provoke(d, nginx.port, second, gunicorn_log)
                upstreams = (f"uwsgi://{HOST}:{uw.port}", f"http://{HOST}:{closing.port}")
                driver = chrome(tmp_path / "chromium")
                try:
                    _check_page(driver, d, counts, upstreams, shots)
                    _check_refresh_without_reload(driver, gunicorn_log)
                    _check_phone_dark_and_no_script(driver, d, len(counts), shots)
                    _check_console_reports_violations(driver)
                finally:
                    driver.quit()
                assert d.stop() == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _provoke(d: DaemonProcess, port: int, closing_port: int,
             gunicorn_log: Path) -> dict[tuple[str, str], int]:
    """The incident mix; the daemon's counts once it has read it all."""
    # uWSGI's harakiri kills three workers mid-request: nginx says "premature close"
    _parallel(lambda: http_request(port, HARAKIRI_SLEEP), 3)
    for _ in range(2):
        http_request(port, "/big-header?n=8192")
    pair = frozenset({("incident", "upstream_premature_close"), ("cause", "worker_harakiri")})
    d.wait_for(lambda: series(d.metrics(), "gw502d_root_causes_total").get(pair) == 3,
               "three closes paired with their harakiri")
    # ... then an upstream that closes on its own, which no backend explains; counted
    # before gunicorn's bind failure comes, which explains what follows it, not what came
    # before (read in the same poll, both lines would arrive at one instant)
    http_request(closing_port, "/")
    d.wait_for(lambda: incidents(d.metrics())[("upstream_premature_close", "nginx")] == 4,
               "the fourth close counted")
    append(gunicorn_log, real("address_in_use", "gunicorn", "Can't connect")[:2]
           + real("client_disconnect", "gunicorn"))

    def counted() -> bool:
        seen = incidents(d.metrics())
        return (seen[("upstream_premature_close", "nginx")] == 4
                and seen[("upstream_header_too_big", "nginx")] == 2
                and seen[("client_disconnect", "gunicorn")] == 1)

    d.wait_for(counted, "the last lines counted")
    return {key: int(n) for key, n in incidents(d.metrics()).items() if n}


def _check_console_reports_violations(driver: Any) -> None:
    """None so far; and the control: the console does report what the policy blocks."""
    assert csp_violations(console(driver)) == []
    driver.execute_script("document.body.insertAdjacentHTML('beforeend', "
                          "'<p style=\"color:red\">x</p>')")
    _wait(lambda: bool(csp_violations(console(driver))), "a CSP report", 10)


def _check_page(driver: Any, d: DaemonProcess, counts: dict[tuple[str, str], int],
                upstreams: tuple[str, str], shots: Path) -> None:
    driver.get(d.url + "/")
    messages = console(driver)
    assert csp_violations(messages) == [], messages
    articles = _articles(driver)
    # every incident seen, and only those, with its count now (all within five minutes)
    assert {(a["incident"], a["source"]): a["recent"] for a in articles} == counts
    assert articles[0]["incident"] == "address_in_use" and articles[0]["severity"] == "critical"
    order = [(SEVERITIES.index(a["severity"]), -a["recent"]) for a in articles]
    assert order == sorted(order)
    assert all(a["bars"] >= 1 for a in articles)
    close = next(a for a in articles if a["incident"] == "upstream_premature_close")
    assert "premature close ← uWSGI harakiri, 3 of 4" in close["text"]
    # by upstream: the uWSGI one with the harakiri's fix, the other with its own
    harakiri, closing = close["upstreams"]
    assert harakiri.startswith(f"{upstreams[0]}: 3 lines"), harakiri
    assert "root cause worker_harakiri" in harakiri.split("fix:")[1]
    assert closing.startswith(f"{upstreams[1]}: 1 line"), closing
    assert "root cause" not in closing.split("fix:")[1]
    header = next(a for a in articles if a["incident"] == "upstream_header_too_big")
    assert "uwsgi_buffer_size" in header["text"] and "fix:" in header["text"]
    # the quiet part of the catalog is one line
    never = driver.find_element(By.CSS_SELECTOR, "#never-seen summary").text
    assert never == f"{len(CATALOG.keys) - len(counts)} other known incidents: none seen"
    # the log that is not followed: red, at the top of the page and of the table
    alert = driver.find_element(By.ID, "missing-logs")
    assert "missing" in alert.text and "does not exist" in alert.text
    assert alert.location["y"] < driver.find_element(By.ID, "incidents").location["y"]
    rows = driver.find_elements(By.CSS_SELECTOR, "#logs tbody tr")
    assert [r.get_attribute("data-log") for r in rows][0] == "missing"
    assert rows[0].get_attribute("class") == "bad"
    red = driver.execute_script("return getComputedStyle(arguments[0].cells[0]).color", rows[0])
    r, g, b = (int(x) for x in red[red.index("(") + 1:-1].split(",")[:3])
    assert r > 2 * max(g, b), red
    followed = {row.get_attribute("data-log"): row.text for row in rows[1:]}
    assert set(followed) == {"nginx", "uwsgi", "gunicorn"}
    assert all("followed" in text for text in followed.values())
    daemon = driver.find_element(By.ID, "daemon").text
    assert f"{len(CATALOG.keys)} incident types" in daemon and "health\nok" in daemon
    # the links to each incident's recent lines answer, as HTML and JSON
    link = driver.find_element(By.CSS_SELECTOR,
                               '[data-incident="upstream_premature_close"] a').get_attribute("href")
    status, body, _ = d.get(link.removeprefix(d.url))
    assert status == 200 and body.count("upstream_premature_close") >= 4
    screenshot(driver, shots / "desktop.png")


def _check_refresh_without_reload(driver: Any, gunicorn_log: Path) -> None:
    """The script swaps in fresh numbers every few seconds; the page is not reloaded and
    the details a reader opened stay open."""
    driver.execute_script("window.notReloaded = true;"
                          "document.querySelector('#never-seen').open = true;")
    assert "refreshes every" in driver.find_element(By.ID, "refresh").text
    before = next(a["recent"] for a in _articles(driver) if a["incident"] == "address_in_use")
    append(gunicorn_log, real("address_in_use", "gunicorn", "Can't connect")[:1])
    _wait(lambda: next(a["recent"] for a in _articles(driver)
                       if a["incident"] == "address_in_use") == before + 1,
          "the refreshed count")
    assert driver.execute_script("return window.notReloaded === true")
    assert driver.execute_script("return document.querySelector('#never-seen').open")
    assert not driver.find_element(By.ID, "stale").is_displayed()


def _check_phone_dark_and_no_script(driver: Any, d: DaemonProcess, seen: int,
                                    shots: Path) -> None:
    emulate(driver, phone=True)
    driver.get(d.url + "/")
    width = driver.execute_script("return window.innerWidth")
    assert width < 500
    assert driver.execute_script("return document.documentElement.scrollWidth") <= width
    for article in driver.find_elements(By.CSS_SELECTOR, "article.incident"):
        assert article.rect["x"] + article.rect["width"] <= width + 1
    screenshot(driver, shots / "phone.png")
    emulate(driver, dark=True)
    driver.get(d.url + "/")
    background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert sum(int(x) for x in background[4:-1].split(",")) < 150, background
    screenshot(driver, shots / "dark.png")
    emulate(driver, phone=True, dark=True)
    driver.get(d.url + "/")
    screenshot(driver, shots / "phone-dark.png")
    emulate(driver)
    # without JavaScript the page is the same, only not refreshed
    driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    driver.get(d.url + "/")
    assert driver.find_element(By.ID, "refresh").text == ""
    assert len(driver.find_elements(By.CSS_SELECTOR, "#incidents > article.incident")) == seen
    assert driver.find_element(By.ID, "missing-logs").is_displayed()
    driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
