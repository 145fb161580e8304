"""Root causes across logs: nginx's 502/504 joined with what uWSGI or gunicorn logged.

The pairing rules on hand-made events, the daemon's hook on real lines, and ``gw502d scan``
over a directory with the nginx error log and the backend log real servers wrote.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw502d.classify.block import Block
from gw502d.classify.catalog import load_catalog
from gw502d.classify.events import EVENT_FACTS, Event
from gw502d.classify.tally import Tallies
from gw502d.daemon.pipeline import Pipeline, Settings
from gw502d.daemon.totals import Totals
from gw502d.export.incidents import describe
from gw502d.parse.times import line_time
from gw502d.remediate.correlate import (
    CAUSE_OF_INCIDENT,
    CAUSES,
    PREFERENCES,
    ROOT_CAUSE_PAIRS,
    Correlator,
    Pairing,
    offline_reaches,
    offline_sides,
    pair_offline,
)
from gw502d.remediate.root_causes import RootCauses, Timeline
from gw502d.source.spec import LogSpec
from tests.samples import HARAKIRI, NGINX_CLOSE
from tests.servers.harness import (
    HARAKIRI_SLEEP,
    HARAKIRI_WAIT,
    Nginx,
    Uwsgi,
    make_workdir,
    wait_for_line,
)
from tests.servers.provoke import (
    Capture,
    gunicorn_worker_killed,
    http_request,
    pass_block,
    status_of,
    uwsgi_protocol_mismatch,
    uwsgi_request_block_too_big,
    uwsgi_worker_died,
    uwsgi_worker_harakiri,
)

CATALOG = load_catalog()
ROOT = Path(__file__).resolve().parent.parent
UWSGI_UP = {"upstream": "uwsgi://127.0.0.1:3031"}
HTTP_UP = {"upstream": "http://127.0.0.1:8000"}


def ev(t: float | None, incident: str, source: str, **facts: Any) -> Event:
    return Event(t, incident, source, facts)


def close(t: float | None, upstream: dict[str, str] = UWSGI_UP) -> Event:
    return Event(t, "upstream_premature_close", "nginx", upstream)


def test_line_times_of_each_family() -> None:
    local = time.mktime((2024, 5, 2, 10, 0, 0, 0, 0, -1))
    assert line_time("nginx", "2024/05/02 10:00:00") == local
    assert line_time("uwsgi", "Thu May  2 10:00:00 2024") == local
    assert line_time("gunicorn", "2024-05-02 10:00:00 +0000") == 1714644000.0
    assert line_time("gunicorn", "2024-05-02 10:00:00") == local
    assert line_time("werkzeug", "2024/05/02 10:00:00") is None
    assert line_time("nginx", "garbage") is None


def test_pairs_within_the_window_either_order() -> None:
    c = Correlator(window=5)
    assert c.observe(ev(100, "worker_harakiri", "uwsgi", worker_pid=1)) == []
    found = c.observe(close(103))
    assert [(r.incident, r.cause, r.upstream) for r in found] == [
        ("upstream_premature_close", "worker_harakiri", "uwsgi://127.0.0.1:3031")]
    assert c.observe(close(200)) == []
    assert c.observe(ev(204, "worker_died", "uwsgi", worker_pid=2, signal=11))[0].cause == \
        "worker_crashed"
    assert c.counts == {("upstream_premature_close", "worker_harakiri"): 1,
                        ("upstream_premature_close", "worker_crashed"): 1}


def test_outside_the_window_stays_two_unrelated_counts() -> None:
    c = Correlator(window=5)
    c.observe(ev(100, "worker_harakiri", "uwsgi", worker_pid=1))
    assert c.observe(close(106)) == []
    assert c.observe(close(50)) == []  # late and out of order, still too far
    assert c.counts == {} and c.backend == {"worker_harakiri": 1}


def test_one_backend_event_explains_one_symptom() -> None:
    c = Correlator()
    c.observe(close(10))
    c.observe(close(11))
    assert len(c.observe(ev(12, "worker_died", "uwsgi", worker_pid=3, signal=9))) == 1
    assert c.counts == {("upstream_premature_close", "worker_oom_killed"): 1}


def test_upstream_scheme_and_peer_must_fit() -> None:
    c = Correlator()
    c.observe(close(10, UWSGI_UP))
    # gunicorn cannot be behind uwsgi://, a too-big uwsgi packet not behind http://
    assert c.observe(ev(11, "worker_timeout", "gunicorn", worker_pid=4)) == []
    assert c.observe(close(12, HTTP_UP))[0].cause == "gunicorn_worker_timeout"
    c.observe(close(20, HTTP_UP))
    assert c.observe(ev(21, "request_block_too_big", "uwsgi")) == []
    assert c.observe(ev(22, "protocol_mismatch", "uwsgi"))[0].cause == "protocol_mismatch"
    # a backend that names its peer only explains that upstream
    c.observe(close(30, {"upstream": "uwsgi://10.0.0.9:3031"}))
    assert c.observe(Event(31, "worker_harakiri", "uwsgi", {"worker_pid": 8},
                           peer="127.0.0.1:3031")) == []
    assert c.observe(close(32))[0].cause == "worker_harakiri"
    # nginx cut the line before its upstream field: time alone
    c.observe(Event(40, "upstream_reset", "nginx", {}))
    assert c.observe(ev(41, "worker_died", "uwsgi", worker_pid=9, signal=9))[0].cause == \
        "worker_oom_killed"


def test_death_after_a_kill_is_the_same_event_not_an_oom() -> None:
    """The tally makes the death after a harakiri (and gunicorn's kill after its timeout)
    a companion of that kill (same pid): it never reaches the pairing as a cause."""
    live = RootCauses(CATALOG.keys)
    counted([HARAKIRI, HARAKIRI.replace(b"try: 1", b"try: 2"),
             b"DAMN ! worker 1 (pid: 77) died, killed by signal 9 :( trying respawn ...",
             b"[2024-05-02 10:00:00 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:7)",
             b"[2024-05-02 10:00:00 +0000] [1] [ERROR] Worker (pid:7) was sent SIGKILL! "
             b"Perhaps out of memory?"], live.observe, now=100.0)
    assert live.correlator.backend == {"worker_harakiri": 1, "gunicorn_worker_timeout": 1}
    # a death with no kill before it is one of its own
    counted([b"DAMN ! worker 1 (pid: 78) died, killed by signal 9 :( trying respawn ..."],
            live.observe, now=101.0)
    assert live.correlator.backend["worker_oom_killed"] == 1


def test_a_cause_explains_only_what_it_can_produce() -> None:
    """A request refused for its size is reset at once: it is never a 504's cause."""
    c = Correlator()
    c.observe(Event(10, "upstream_timeout", "nginx", UWSGI_UP))
    assert c.observe(ev(11, "request_block_too_big", "uwsgi")) == []
    found = c.observe(Event(12, "upstream_reset", "nginx", UWSGI_UP))
    assert [(r.incident, r.cause) for r in found] == [("upstream_reset", "request_block_too_big")]


def test_an_undated_cause_pairs_only_inside_its_span() -> None:
    symptoms = [close(t) for t in (10, 100, 200)]
    without = pair_offline([*symptoms, ev(None, "worker_harakiri", "uwsgi", worker_pid=1)])
    assert without.counts == {}  # no dated line around it: it cannot be told
    inside = Event(None, "worker_died", "uwsgi", {"worker_pid": 2, "signal": 9},
                   span=(99.0, 101.0))
    paired = pair_offline([*symptoms, inside])
    assert paired.counts == {("upstream_premature_close", "worker_oom_killed"): 1}
    assert paired.upstreams == {"worker_oom_killed": {"uwsgi://127.0.0.1:3031": 1}}


def test_the_best_explanation_wins_over_the_first() -> None:
    """Two causes, two symptoms: each symptom goes to the cause that explains it best,
    whatever the order the causes come in."""
    events = [Event(42, "upstream_premature_close", "nginx", UWSGI_UP),
              Event(43, "upstream_reset", "nginx", UWSGI_UP),
              ev(43, "request_block_too_big", "uwsgi"),
              ev(43, "worker_died", "uwsgi", worker_pid=5, signal=9)]
    assert pair_offline(events).counts == {
        ("upstream_reset", "request_block_too_big"): 1,
        ("upstream_premature_close", "worker_oom_killed"): 1}


def test_memory_is_bounded() -> None:
    c = Correlator(max_pending=10)
    for t in range(1000):
        c.observe(close(t / 1000))
    assert len(c._symptoms) == 10
    for pid in range(10000):
        c.observe(ev(2000 + pid, "worker_harakiri", "uwsgi", worker_pid=pid))
    assert len(c._killed) <= 4096
    assert set(c.backend) <= set(CAUSES)




def counted(lines: list[bytes], *stages: Callable[[Block], None], now: float = 0.0) -> Block:
    """*lines* through a tally (capturing the event facts) and then *stages*."""
    block = Block("app", None, lines, now)
    Tallies(CATALOG, capture=EVENT_FACTS).count(block)
    for stage in stages:
        stage(block)
    return block


def test_daemon_stage_on_real_lines() -> None:
    live = RootCauses(CATALOG.keys)
    counted([HARAKIRI, NGINX_CLOSE, b"not an incident"], live.observe, now=time.time())
    assert {k: n for k, n in live.counts.items() if n} == {
        ("upstream_premature_close", "worker_harakiri"): 1}
    assert set(live.counts) == set(ROOT_CAUSE_PAIRS)  # every pair exists from the start


def test_a_block_of_identical_events_pairs_as_many() -> None:
    """The hits of one block become one event per distinct (time, facts), with a count;
    the undated uWSGI lines take their span from the request log line after them."""
    timeline = Timeline(CATALOG.keys)
    died = b"DAMN ! worker 1 (pid: 77) died, killed by signal 9 :( trying respawn ..."
    served = (b"[pid: 78|app: 0|req: 1/1] 10.0.0.1 () {30 vars in 363 bytes} "
              b"[Thu May  2 10:00:01 2024] GET / => generated 6 bytes in 900 msecs "
              b"(HTTP/1.1 200) 1 headers in 45 bytes (1 switches on core 0)")
    counted([NGINX_CLOSE] * 5 + [died, b"invalid request block size: 4363 (max 4096)...skip",
                                 served], timeline.add)
    events = sorted((e.incident, e.n, e.span is not None) for e in timeline._events)
    assert events == [("request_block_too_big", 1, True), ("upstream_premature_close", 5, False),
                      ("worker_died", 1, True)]
    c = timeline.correlate()
    assert c.counts == {("upstream_premature_close", "worker_oom_killed"): 1,
                        ("upstream_premature_close", "request_block_too_big"): 1}


def test_daemon_pipeline_pairs_by_arrival() -> None:
    """An undated uWSGI line is stamped with its arrival, next to nginx's own (dated) line."""
    nginx, uwsgi = LogSpec("/n.log", "nginx", "nginx"), LogSpec("/u.log", "uwsgi", "uwsgi")
    pipeline = Pipeline(CATALOG, [nginx, uwsgi], Settings(10, True, 5.0), Totals())
    now = time.strftime("%Y/%m/%d %H:%M:%S").encode()
    pipeline.feed(nginx, nginx.path, [now + NGINX_CLOSE[19:]])
    pipeline.feed(uwsgi, uwsgi.path, [HARAKIRI.split(b" - ", 1)[1]])
    assert pipeline.numbers().root_causes[("upstream_premature_close", "worker_harakiri")] == 1


# --------------------------------------------------------------------------- real servers


def scan_dir(tmp: Path, logs: dict[str, bytes], *, fmt: str = "json") -> Any:
    for name, raw in logs.items():
        (tmp / name).write_bytes(raw)
    out = subprocess.run([sys.executable, "-m", "gw502d", "scan", "--format", fmt, str(tmp)],
                         capture_output=True, timeout=60, check=True)
    return json.loads(out.stdout) if fmt == "json" else out.stdout.decode()


def logs_of(cap: Capture) -> dict[str, bytes]:
    """The backend's log and nginx's error log of one scenario."""
    return {cap.log_name: cap.raw, "nginx-error.log": cap.extra["nginx-error.log"]}


@pytest.mark.servers
def test_scan_names_harakiri_not_two_counts(tmp_path: Path) -> None:
    """Without log-date uWSGI still stamps its HARAKIRI lines; the worker's death after
    it is undated and the same event (same pid), not a second cause."""
    cap = uwsgi_worker_harakiri()
    summary = scan_dir(tmp_path, logs_of(cap))
    assert summary["counts"]["upstream_premature_close"]["nginx"] == 1
    assert summary["counts"]["worker_harakiri"]["uwsgi"] == 1
    assert summary["root_causes"] == {"upstream_premature_close": {"worker_harakiri": 1}}
    fix = summary["remediation"]["upstream_premature_close"]["nginx"]
    assert "worker_harakiri" in fix and "harakiri = " in fix and "uwsgi_read_timeout" in fix
    # the worker's death right after its harakiri ends that event: no OOM kill, no count
    assert summary["counts"]["worker_died"]["uwsgi"] == 0
    assert "worker_died" not in summary["remediation"]
    text = scan_dir(tmp_path, {}, fmt="text")
    assert "root cause: worker_harakiri x1" in text


@pytest.mark.servers
def test_scan_dated_uwsgi_log_pairs_by_time(tmp_path: Path) -> None:
    """With log-date both logs carry times; a third, unrelated nginx close an hour later
    stays unexplained."""
    work = make_workdir()
    try:
        uw = Uwsgi(work, {"harakiri": 1, "log-date": True})
        assert uw.port is not None
        nginx = Nginx(work, pass_block("uwsgi", uw.port))
        with uw, nginx:
            assert status_of(http_request(nginx.port, HARAKIRI_SLEEP)) == 502
            wait_for_line(uw.log_path, "Respawned uWSGI worker", HARAKIRI_WAIT)
            wait_for_line(nginx.log_path, "prematurely closed", 3)
        error_log = nginx.log_path.read_bytes()
        uwsgi_log = uw.log_path.read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    late = NGINX_CLOSE.replace(b"2024/05/02 10:00:01", time.strftime(
        "%Y/%m/%d %H:%M:%S", time.localtime(time.time() + 3600)).encode())
    summary = scan_dir(tmp_path, {"error.log": error_log + late + b"\n",
                                  "uwsgi.log": uwsgi_log})
    assert summary["counts"]["upstream_premature_close"]["nginx"] == 2
    assert summary["root_causes"] == {"upstream_premature_close": {"worker_harakiri": 1}}


@pytest.mark.servers
@pytest.mark.parametrize(("scenario", "symptom", "cause"), [
    (lambda: uwsgi_worker_died(9), "upstream_premature_close", "worker_oom_killed"),
    (lambda: uwsgi_worker_died(11), "upstream_premature_close", "worker_crashed"),
    (lambda: uwsgi_request_block_too_big("header"), "upstream_reset", "request_block_too_big"),
    (lambda: uwsgi_protocol_mismatch("nginx_proxy_pass"), "upstream_premature_close",
     "protocol_mismatch"),
    (lambda: gunicorn_worker_killed("self"), "upstream_premature_close",
     "gunicorn_worker_killed"),
], ids=["oom", "crash", "block", "mismatch", "gunicorn_killed"])
def test_scan_root_cause_per_backend_event(tmp_path: Path, scenario: Any, symptom: str,
                                           cause: str) -> None:
    summary = scan_dir(tmp_path, logs_of(scenario()))
    assert summary["root_causes"] == {symptom: {cause: 1}}
    assert cause in summary["remediation"][symptom]["nginx"]


@pytest.mark.parametrize("run", ["mixed-nginx-1.22.1-uwsgi-2.0.21",
                                 "mixed-nginx-1.22.1-uwsgi-2.0.21-log-date"])
def test_root_causes_are_right_or_absent_in_mixed_traffic(tmp_path: Path, run: str) -> None:
    """Real nginx and uWSGI lines with unrelated incidents interleaved (tests/data/real):
    every pair scan reports is a true one; what cannot be told stays unpaired."""
    d = ROOT / "tests" / "data" / "real" / run
    truth = json.loads((d / "truth.json").read_text())
    summary = scan_dir(tmp_path, {name: (d / name).read_bytes()
                                  for name in truth["files"].values()})
    true_pairs: dict[tuple[str, str], int] = {}
    for pair in truth["pairs"]:
        key = (pair["nginx_incident"], pair["cause"])
        true_pairs[key] = true_pairs.get(key, 0) + 1
    found = {(incident, cause): n for incident, causes in summary["root_causes"].items()
             for cause, n in causes.items() if n}
    assert all(n <= true_pairs.get(key, 0) for key, n in found.items()), (found, true_pairs)
    # what the lines can tell: the harakiri (dated) and the killed worker (its span)
    assert found.get(("upstream_premature_close", "worker_harakiri")) == 1
    assert found.get(("upstream_premature_close", "worker_oom_killed")) == 1


def test_jsonl_records_and_recent_incidents_carry_their_root_cause(tmp_path: Path) -> None:
    d = ROOT / "tests" / "data" / "real" / "mixed-nginx-1.22.1-uwsgi-2.0.21"
    truth = json.loads((d / "truth.json").read_text())
    out = subprocess.run([sys.executable, "-m", "gw502d", "scan", "--format", "jsonl",
                          str(d / "nginx-error.log"), str(d / "uwsgi.log")],
                         capture_output=True, timeout=60, check=True, cwd=ROOT).stdout
    records = [json.loads(line) for line in out.splitlines()]
    causes = {r["line"]: r["root_cause"] for r in records
              if r["path"].endswith("nginx-error.log") and r["root_cause"]}
    true = {p["nginx_line"]: p["cause"] for p in truth["pairs"]}
    assert causes and all(true[line] == cause for line, cause in causes.items())
    # the daemon's /incidents: the symptom's entry names its cause once it is paired
    nginx, uwsgi = LogSpec("/n.log", "nginx", "nginx"), LogSpec("/u.log", "uwsgi", "uwsgi")
    pipeline = Pipeline(CATALOG, [nginx, uwsgi], Settings(10, False, 5.0), Totals())
    pipeline.feed(nginx, nginx.path, [NGINX_CLOSE])
    pipeline.feed(uwsgi, uwsgi.path, [HARAKIRI])
    entries = [describe(seen, redact=False) for seen in pipeline.stages.recent.copy()]
    assert [(e["incident"], e["root_cause"]) for e in entries if e] == [
        ("upstream_premature_close", "worker_harakiri"), ("worker_harakiri", None)]


# ------------------------------------------------------------------ the fast search, checked

_UPSTREAMS = (None, "uwsgi://127.0.0.1:3031", "uwsgi://unix:/run/app.sock:",
              "http://127.0.0.1:8000", "http://127.0.0.1:3031")
_SYMPTOMS = sorted({incident for cause in CAUSES.values() for incident in cause.explains})
_CAUSE_LINES = sorted(CAUSE_OF_INCIDENT)


@st.composite
def _scan_events(draw: st.DrawFn) -> list[Event]:
    """A few seconds of a storm: symptoms on a few upstreams, dated, undated and lasting
    causes, identical lines counted together."""
    events = []
    for _ in range(draw(st.integers(0, 40))):
        up = draw(st.sampled_from(_UPSTREAMS))
        events.append(Event(float(draw(st.integers(0, 12))), draw(st.sampled_from(_SYMPTOMS)),
                            "nginx", {"upstream": up} if up else {}, n=draw(st.integers(1, 3))))
    for _ in range(draw(st.integers(0, 25))):
        incident, source = draw(st.sampled_from(_CAUSE_LINES))
        t = float(draw(st.integers(0, 12)))
        undated = draw(st.booleans())
        span = (t - draw(st.integers(0, 2)), t) if undated and draw(st.booleans()) else None
        events.append(Event(None if undated else t + draw(st.sampled_from((0.0, 0.5))),
                            incident, source, {}, n=draw(st.integers(1, 3)), span=span))
    return events


def _pair_plainly(events: list[Event]) -> Pairing:
    """The plain counterpart of pair_offline: every candidate each cause can reach, ranked
    and taken best first (the same ranks; ties on the right of a cause's time first, then
    nearer to it), with no heap, no passes and no skipping of taken symptoms."""
    pairing = Pairing()
    sides = offline_sides(events, pairing)
    candidates = []
    for preference in range(PREFERENCES):
        for reach in offline_reaches(sides, preference):
            group, center = reach.group, reach.center
            for i in range(reach.start, reach.end):
                t = group.times[i]
                if center is None:
                    rank = (preference, reach.undated, 0.0, reach.other_family, reach.order,
                            0, i)
                else:
                    side = int(t < center)
                    rank = (preference, reach.undated, abs(t - center), reach.other_family,
                            reach.order, side, -i if side else i)
                candidates.append((rank, group.found[i], reach.cause))
    for _, symptom, cause in sorted(candidates, key=lambda c: c[0]):
        if symptom.n and (cause.n or cause.lasting):
            pairing.found.append(pairing._pair(symptom, cause))
    return pairing


@settings(max_examples=300, deadline=None)
@given(_scan_events())
def test_the_fast_search_pairs_as_the_plain_one(events: list[Event]) -> None:
    fast, plain = pair_offline(events), _pair_plainly(events)
    assert fast.found == plain.found
    assert fast.counts == plain.counts
