"""Syslog files as sources of ``gw502d run`` (``format = "syslog"``) and ``gw502d scan``.

nginx (``error_log syslog:server=...``), uWSGI (``--logger rsyslog:``) and gunicorn
(``--log-syslog``) send to a real rsyslogd on 127.0.0.1, which writes the traditional
(RFC 3164), the high-precision and the RFC 5424 file formats; each server also writes its
own file log, and those own lines, written to a journal as the servers' units would, give
the ``journalctl -o short`` form. Every form must count exactly what a scan of the servers'
own logs counts: the expected numbers come from the servers, not from the code under test.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gw502d.classify.catalog import load_catalog
from gw502d.classify.matcher import Classifier
from gw502d.parse.syslog import strip_block
from tests.daemon import ROOT, Key, incidents, series
from tests.servers.harness import HOST, Gunicorn, Nginx, Uwsgi, free_port, make_workdir
from tests.servers.journal import JournalWriter, Rsyslog
from tests.servers.provoke import http_request, pass_block, status_of

CATALOG = load_catalog()
CLASSIFIER = Classifier(CATALOG)


def scan_counts(*paths: Path) -> Counter[Key]:
    out = subprocess.run([sys.executable, "-m", "gw502d", "scan", "--format", "json",
                          *map(str, paths)], capture_output=True, timeout=60, check=True,
                         cwd=ROOT)
    summary = json.loads(out.stdout)
    return Counter({(i, s): n for i, by in summary["counts"].items() for s, n in by.items()
                    if n})


@pytest.fixture(scope="module")
def logged() -> Any:
    """The servers' own logs and rsyslog's files of one run that provokes an incident of
    each family: HTTP on a uwsgi socket, nginx without its upstream, a gunicorn worker
    timeout. Yields ``(own, syslog_files)``: rsyslog's three files and the
    ``journalctl -o short`` one."""
    tmp = make_workdir()
    with Rsyslog(tmp) as rsyslog:
        uwsgi = Uwsgi(tmp, ["--plugin", "rsyslog,logfile",
                            "--logger", f"rsyslog:{HOST}:{rsyslog.port},uwsgi",
                            "--logger", f"file:{tmp / 'uwsgi.log'}"])
        nginx = Nginx(tmp, pass_block("proxy", free_port()),
                      http_block=f"    error_log {tmp / 'error.log'} info;\n"
                                 f"    error_log syslog:server={HOST}:{rsyslog.port},tag=nginx "
                                 "info;")
        gunicorn = Gunicorn(tmp, ["--log-syslog", "--log-syslog-to",
                                  f"udp://{HOST}:{rsyslog.port}", "--timeout", "1"])
        try:
            uwsgi.start()
            with socket.create_connection((HOST, uwsgi.port or 0)) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                uwsgi.wait_for_line("invalid request block size")
            nginx.start()
            assert status_of(http_request(nginx.port, "/")) == 502
            gunicorn.start()
            http_request(gunicorn.port, "/sleep?s=3", timeout=8)
            gunicorn.wait_for_line("Booting worker", 8, start=1)  # the new worker
        finally:
            for server in (gunicorn, nginx, uwsgi):
                server.stop()
        marker = "gw502d-test-end"
        rsyslog.send("gw502d-probe", marker)  # after every server's last line (one socket)
        rsyslog.wait_for(marker)
    own = {"uwsgi": uwsgi.log_path, "nginx": nginx.log_path, "gunicorn": gunicorn.log_path}
    return own, {**rsyslog.files, "short": short_output(own, tmp)}


def short_output(own: dict[str, Path], tmp: Path) -> Path:
    """The servers' own lines as their units' journal entries, exported by
    ``journalctl -o short`` (what ``journalctl > file`` on a host gives)."""
    jdir = tmp / "journal"
    jdir.mkdir()
    w = JournalWriter(jdir / "system.journal")
    w.append([w.entry(line, unit=f"{family}.service", ident=family, _PID="812")
              for family, path in own.items()
              for line in path.read_bytes().split(b"\n")[:-1]])
    out = tmp / "short.log"
    with out.open("wb") as f:
        subprocess.run(["journalctl", f"--directory={jdir}", "--output=short"], stdout=f,
                       check=True)
    return out


@pytest.mark.servers
def test_scan_counts_every_syslog_form_as_the_servers_own_logs(logged: Any) -> None:
    own, files = logged
    want = scan_counts(*own.values())
    families = {source for _, source in want}
    assert {("protocol_mismatch", "uwsgi"), ("upstream_connect_refused", "nginx"),
            ("worker_timeout", "gunicorn")} <= set(want), want
    assert families == {"uwsgi", "nginx", "gunicorn"}
    for name, path in files.items():
        assert scan_counts(path) == want, name


@pytest.mark.servers
def test_gunicorn_syslog_line_is_the_catalogs(logged: Any) -> None:
    """gunicorn --log-syslog writes ``[pid] message`` (no time, no level): the catalog's
    real example of that shape is written again here, and classifies as it says."""
    _, files = logged
    stripped = strip_block(files["traditional"].read_bytes().split(b"\n")).lines
    written = [ln for ln in stripped if re.fullmatch(rb"\[\d+\] WORKER TIMEOUT \(pid:\d+\)", ln)]
    assert written, "gunicorn wrote no WORKER TIMEOUT through syslog"
    example = next(ex for i in CATALOG.incidents for ex in i.examples
                   if "test_gunicorn_syslog_line_is_the_catalogs" in ex.origin)
    assert re.fullmatch(rb"\[\d+\] WORKER TIMEOUT \(pid:\d+\)", example.line.encode())
    hit = CLASSIFIER.classify(written[0])
    assert hit is not None and hit.incident.key == ("worker_timeout", "gunicorn")
    assert set(hit.facts) >= set(example.fields)


@pytest.mark.servers
def test_daemon_follows_syslog_files(logged: Any, daemon_factory: Any) -> None:
    """Four syslog files without a family: each line's tag names it; no line is
    unparsed; the incidents are the servers' own, four times over."""
    own, sources = logged
    want = scan_counts(*own.values())
    config = ['start_at = "beginning"']
    for name, path in sources.items():
        config += ["[[log]]", f"path = {json.dumps(str(path))}", f"name = {json.dumps(name)}",
                   'format = "syslog"']
    d = daemon_factory("\n".join(config) + "\n")
    d.start()
    expected = {key: 4.0 * n for key, n in want.items()}
    d.wait_for(lambda: {k: v for k, v in incidents(d.metrics()).items() if v} == expected,
               f"incident counts {expected}")
    samples = d.metrics()
    unparsed = {dict(k)["log"]: v
                for k, v in series(samples, "gw502d_unparsed_lines_total").items()}
    assert unparsed == dict.fromkeys(sources, 0.0)
    status, body, _ = d.get("/incidents?limit=500")
    lines = [r["line"].encode() for r in json.loads(body)["incidents"]]
    # /incidents shows the messages, not rsyslog's prefixes
    assert lines and set(strip_block(lines).tags) == {b""}
    assert d.stop() == 0


def test_scan_dates_syslog_lines_by_their_prefix(tmp_path: Path) -> None:
    """A uWSGI death has no time of its own (no log-date): in a syslog file its prefix
    dates it, so it explains the nginx symptom of its minute, not one an hour before."""
    now = time.time() - 60

    def nginx_at(t: float, line: str) -> str:
        return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(t)) + line[19:]

    reset = ('2024/05/01 10:00:00 [error] 812#812: *12 recv() failed (104: Connection reset '
             'by peer) while reading response header from upstream, client: 127.0.0.1, '
             'server: localhost, request: "GET / HTTP/1.1", upstream: "uwsgi://127.0.0.1:3031"')
    close = ('2024/05/01 10:00:00 [error] 812#812: *11 upstream prematurely closed connection '
             'while reading response header from upstream, client: 127.0.0.1, server: '
             'localhost, request: "GET /slow HTTP/1.1", upstream: "uwsgi://127.0.0.1:3031"')
    prefix = time.strftime("%b %e %H:%M:%S", time.localtime(now)) + " web1 uwsgi[2201]: "
    iso = time.strftime("%Y-%m-%dT%H:%M:%S.250000%z", time.localtime(now))  # rsyslog's precise
    (tmp_path / "error.log").write_text(f"{nginx_at(now - 3600, reset)}\n")
    (tmp_path / "syslog").write_text(
        iso + " web1 nginx: " + nginx_at(now, close) + "\n" + prefix
        + "DAMN ! worker 2 (pid: 2202) died, killed by signal 9 :( trying respawn ...\n")
    out = subprocess.run([sys.executable, "-m", "gw502d", "scan", "--format", "json",
                          str(tmp_path)], capture_output=True, timeout=60, check=True, cwd=ROOT)
    summary = json.loads(out.stdout)
    assert summary["counts"]["worker_died"]["uwsgi"] == 1
    assert summary["root_causes"] == {"upstream_premature_close": {"worker_oom_killed": 1}}
    out = subprocess.run([sys.executable, "-m", "gw502d", "scan", "--format", "jsonl",
                          str(tmp_path)], capture_output=True, timeout=60, check=True, cwd=ROOT)
    causes = {r["incident"]: r["root_cause"] for r in map(json.loads, out.stdout.splitlines())
              if r["source"] == "nginx"}
    assert causes == {"upstream_reset": None, "upstream_premature_close": "worker_oom_killed"}
    # the same death without its prefix is undated: it cannot tell which one it explains
    (tmp_path / "syslog").write_text(
        "DAMN ! worker 2 (pid: 2202) died, killed by signal 9 :( trying respawn ...\n")
    out = subprocess.run([sys.executable, "-m", "gw502d", "scan", "--format", "json",
                          str(tmp_path)], capture_output=True, timeout=60, check=True, cwd=ROOT)
    assert "upstream_premature_close" not in json.loads(out.stdout)["root_causes"]
