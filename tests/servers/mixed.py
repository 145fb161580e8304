"""Mixed traffic: one nginx in front of one uWSGI, unrelated incidents interleaved, and the
true pairing of nginx's lines with uWSGI's, known by construction.

Why: a root cause paired by order alone is wrong as soon as two incidents overlap (a 504 on
one location next to a protocol mismatch from a direct request to the uwsgi socket). Each
phase below provokes one known thing with a request id in its URI; the lines each log
gained during a phase are that phase's, so the truth is recorded as it happens, not
inferred from the logs. uWSGI runs without log-date unless asked: then most of its lines
carry no time.

Usage: python3 -m tests.servers.mixed OUTDIR [--log-date]  (writes nginx-error.log,
uwsgi.log, access.log and truth.json; tests/data/real/mixed-* was recorded this way).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gw502d.classify.catalog import load_catalog
from gw502d.classify.matcher import Classifier
from tests.servers.harness import Nginx, Uwsgi, make_workdir, read_lines, wait_for_line
from tests.servers.provoke import UWSGI_PARAMS, _running, http_request, status_of
from tests.servers.versions import NGINX_DEBIAN, UWSGI_DEBIAN


def _locations(port: int) -> str:
    """/slow/: 1 s read timeout (504s); everything else: 30 s (uWSGI's own limits act)."""
    return (f"{UWSGI_PARAMS}            uwsgi_pass 127.0.0.1:{port};\n"
            "            uwsgi_read_timeout 30s;\n"
            "        }\n"
            "        location /slow/ {\n"
            "            rewrite ^/slow(/.*)$ $1 break;\n"
            f"{UWSGI_PARAMS}            uwsgi_pass 127.0.0.1:{port};\n"
            "            uwsgi_read_timeout 1s;\n")


class _Phase:
    """Lines each log gained while one phase ran (1-based numbers, as in truth.json)."""

    def __init__(self, nginx: Nginx, uw: Uwsgi) -> None:
        self.logs = {"nginx": nginx.log_path, "uwsgi": uw.log_path}
        self.start = {name: len(read_lines(p)) for name, p in self.logs.items()}

    def find(self, log: str, text: str) -> list[int]:
        lines = read_lines(self.logs[log])
        return [n + 1 for n in range(self.start[log], len(lines)) if text in lines[n]]

    def one(self, log: str, text: str) -> int:
        found = self.find(log, text)
        if len(found) != 1:
            raise AssertionError(f"{log}: expected one line with {text!r}, got {found}")
        return found[0]


def record(out: Path, *, log_date: bool = False) -> dict[str, Any]:
    """Run the phases against real servers; write the logs and truth.json into *out*.

    With *log_date* uWSGI stamps every line (``log-date``), as a careful deployment does.
    """
    out.mkdir(parents=True, exist_ok=True)
    tmp = make_workdir()
    uw = Uwsgi(tmp, {"harakiri": 5, "log-date": log_date}, processes=2)
    assert uw.port is not None
    nginx = Nginx(tmp, _locations(uw.port))
    pairs: list[dict[str, Any]] = []
    unpaired_nginx: list[dict[str, Any]] = []
    unpaired_uwsgi: list[dict[str, Any]] = []
    statuses: dict[str, int | None] = {}
    with _running(uw, nginx):
        # 1. a 504 on /slow/ while a direct HTTP request hits the uwsgi socket
        phase = _Phase(nginx, uw)
        slow = threading.Thread(target=lambda: statuses.update(
            timeout=status_of(http_request(nginx.port, "/slow/sleep?s=3&req=timeout"))))
        slow.start()
        time.sleep(0.3)
        http_request(uw.port, "/direct?req=mismatch", timeout=3)
        slow.join(10)
        wait_for_line(uw.log_path, "req=timeout", 6)  # the slow request's own log line
        time.sleep(0.3)
        unpaired_nginx.append({
            "line": phase.one("nginx", "req=timeout"), "incident": "upstream_timeout",
            "why": "the app was slower than uwsgi_read_timeout; uWSGI logs no failure for it "
                   "(it finishes the request later and logs it as served)"})
        unpaired_uwsgi.append({
            "line": phase.one("uwsgi", "invalid request block size"),
            "incident": "protocol_mismatch",
            "why": "a direct HTTP request to the uwsgi socket: nginx never saw it"})
        # 2. a worker killed by signal 9 mid-request
        phase = _Phase(nginx, uw)
        statuses["crash"] = status_of(http_request(nginx.port, "/crash?sig=9&req=crash"))
        wait_for_line(uw.log_path, "Respawned uWSGI worker", 6, start=phase.start["uwsgi"])
        time.sleep(0.3)
        pairs.append({
            "nginx_line": phase.one("nginx", "req=crash"),
            "uwsgi_lines": [phase.one("uwsgi", "DAMN ! worker")],
            "uwsgi_incident": "worker_died", "cause": "worker_oom_killed",
            "evidence": "the worker that took the request died by signal 9 while nginx waited"})
        # 3. a request too big for buffer-size
        phase = _Phase(nginx, uw)
        statuses["too_big"] = status_of(http_request(nginx.port, "/ok?req=too_big&q=" + "a" * 5000))
        wait_for_line(nginx.log_path, "req=too_big", 5, start=phase.start["nginx"])
        pairs.append({
            "nginx_line": phase.one("nginx", "req=too_big"),
            "uwsgi_lines": [phase.one("uwsgi", "invalid request block size")],
            "uwsgi_incident": "request_block_too_big", "cause": "request_block_too_big",
            "evidence": "the worker refused the uwsgi packet of this request"})
        # 4. a harakiri while another direct HTTP request and a 504 overlap it
        phase = _Phase(nginx, uw)
        long = threading.Thread(target=lambda: statuses.update(
            harakiri=status_of(http_request(nginx.port, "/sleep?s=10&req=harakiri", timeout=15))))
        long.start()
        time.sleep(0.5)
        slow2 = threading.Thread(target=lambda: statuses.update(
            timeout2=status_of(http_request(nginx.port, "/slow/sleep?s=2&req=timeout2"))))
        slow2.start()
        time.sleep(1.5)
        http_request(uw.port, "/direct?req=mismatch2", timeout=3)
        long.join(15)
        slow2.join(10)
        wait_for_line(uw.log_path, "Respawned uWSGI worker", 6, start=phase.start["uwsgi"])
        time.sleep(0.5)
        kill = phase.one("uwsgi", "HARAKIRI ON WORKER")
        pairs.append({
            "nginx_line": phase.one("nginx", "req=harakiri"),
            "uwsgi_lines": sorted([kill, *phase.find("uwsgi", "HARAKIRI !!!"),
                                   *phase.find("uwsgi", "HARAKIRI [core"),
                                   *phase.find("uwsgi", "DAMN ! worker")]),
            "uwsgi_incident": "worker_harakiri", "cause": "worker_harakiri",
            "evidence": "HARAKIRI [core N] names the request (req=harakiri); the worker's death "
                        "by signal 9 after it is the same event (same pid)"})
        unpaired_nginx.append({
            "line": phase.one("nginx", "req=timeout2"), "incident": "upstream_timeout",
            "why": "slow app on /slow/, overlapping the harakiri: not its cause"})
        unpaired_uwsgi.append({
            "line": phase.one("uwsgi", "invalid request block size"),
            "incident": "protocol_mismatch",
            "why": "a direct HTTP request to the uwsgi socket during the harakiri"})
    # What nginx called each symptom depends on timing (a reset or a close): read it back.
    nginx_lines = read_lines(nginx.log_path)
    classifier = Classifier(load_catalog(), families=["nginx"])
    for pair in pairs:
        hit = classifier.classify(nginx_lines[pair["nginx_line"] - 1].encode())
        pair["nginx_incident"] = hit.incident.id if hit else None
    truth = {
        "servers": {"nginx": NGINX_DEBIAN.label, "uwsgi": UWSGI_DEBIAN.label},
        "files": {"nginx": "nginx-error.log", "uwsgi": "uwsgi.log"},
        "uwsgi_log_date": log_date,
        "pairs": pairs,
        "unpaired_nginx": unpaired_nginx,
        "unpaired_uwsgi": unpaired_uwsgi,
        "client_status": statuses,
    }
    (out / "nginx-error.log").write_bytes(nginx.log_path.read_bytes())
    (out / "uwsgi.log").write_bytes(uw.log_path.read_bytes())
    (out / "access.log").write_bytes(nginx.upstream_access_log.read_bytes())
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return truth


if __name__ == "__main__":
    print(json.dumps(record(Path(sys.argv[1]), log_date="--log-date" in sys.argv), indent=2))
