"""The exporter in-process: counters, the collector, and the HTTP server with TLS and auth.

The server binds a real socket on 127.0.0.1 and is spoken to over HTTP(S); the certificate
is made by ``openssl`` for each run.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from gw502d.classify.catalog import load_catalog
from gw502d.daemon.logging import RepeatLimiter
from gw502d.daemon.notify import watchdog_interval
from gw502d.daemon.pipeline import Pipeline, Settings
from gw502d.daemon.totals import Totals
from gw502d.export.collector import Scrape, build_registry
from gw502d.export.http import Exporter, Site
from gw502d.export.listen import Listen
from gw502d.export.webconfig import load_web_config
from gw502d.source.follower import LogStats
from gw502d.source.spec import LogSpec
from tests.samples import timeout_line

CATALOG = load_catalog()
NGINX = LogSpec("/var/log/nginx/error.log", "nginx", "nginx")
UWSGI = LogSpec("/var/log/uwsgi/app.log", "uwsgi", "uwsgi")
ANY = LogSpec("/var/log/app/*.log", "app", None)






def test_repeated_warnings_are_limited() -> None:
    limiter = RepeatLimiter(interval=0.2)
    event = {"event": "cannot read log", "path": "/a"}
    assert limiter(None, "warning", dict(event)) == event
    for _ in range(3):
        with pytest.raises(structlog.DropEvent):
            limiter(None, "warning", dict(event))
    assert limiter(None, "warning", {"event": "cannot read log", "path": "/b"})
    assert limiter(None, "info", dict(event)) == event  # info is never limited
    time.sleep(0.25)
    assert limiter(None, "warning", dict(event)) == {**event, "suppressed": 3}


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None


# --- the HTTP server --------------------------------------------------------


def serve(tmp_path: Path, web_yaml: str | None) -> tuple[Exporter, Pipeline]:
    c = Pipeline(CATALOG, [NGINX], Settings(incidents_buffer=10, redact=True, window=5.0),
                 Totals())
    web = None
    if web_yaml is not None:
        path = tmp_path / "web.yml"
        path.write_text(web_yaml)
        web = load_web_config(path)

    def scrape() -> Scrape:
        return Scrape(c.numbers(), {"nginx": LogStats(lines=3, size=10, offset=4)}, True, 1.0)

    site = Site(build_registry(scrape), health=lambda: None, incidents=lambda query: [],
                page=lambda nonce: "<html></html>", web=web)
    exporter = Exporter(Listen("127.0.0.1", 0), site)
    exporter.start()
    return exporter, c


@pytest.fixture
def started() -> Iterator[list[Exporter]]:
    servers: list[Exporter] = []
    yield servers
    for s in servers:
        s.stop()


def fetch(url: str, *, auth: tuple[str, str] | None = None,
          context: ssl.SSLContext | None = None) -> tuple[int, str]:
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10,
                                    context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_plain_http_endpoints(tmp_path: Path, started: list[Exporter]) -> None:
    exporter, c = serve(tmp_path, None)
    started.append(exporter)
    c.feed(NGINX, NGINX.path, [timeout_line("http://127.0.0.1:8000")])
    base = f"http://127.0.0.1:{exporter.port}"
    status, body = fetch(base + "/metrics")
    assert status == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples[("gw502d_incidents_total",
                    (("incident", "upstream_timeout"), ("source", "nginx")))] == 1
    assert samples[("gw502d_log_lag_bytes", (("log", "nginx"),))] == 6
    assert ("process_resident_memory_bytes", ()) in samples
    assert fetch(base + "/healthz") == (200, "ok\n")
    assert fetch(base + "/nothing")[0] == 404
    # gzip for Prometheus, which asks for it
    request = urllib.request.Request(base + "/metrics", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Encoding"] == "gzip"


def test_tls_and_basic_auth(tmp_path: Path, started: list[Exporter],
                            tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    # htpasswd writes $2y$; bcrypt's own prefix is $2b$: both must work.
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    hashed = "$2y$" + hashed[4:]
    exporter, _ = serve(tmp_path, f"tls_server_config:\n  cert_file: {cert}\n"
                                  f"  key_file: {key}\n  min_version: TLS12\n"
                                  f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    started.append(exporter)
    base = f"https://127.0.0.1:{exporter.port}"
    trusted = ssl.create_default_context(cafile=str(cert))

    assert fetch(base + "/metrics", context=trusted)[0] == 401
    assert fetch(base + "/metrics", auth=("prometheus", "wrong"), context=trusted)[0] == 401
    assert fetch(base + "/metrics", auth=("nobody", "s3cret"), context=trusted)[0] == 401
    status, body = fetch(base + "/metrics", auth=("prometheus", "s3cret"), context=trusted)
    assert status == 200 and "gw502d_incidents_total" in body
    assert fetch(base + "/", auth=("prometheus", "s3cret"), context=trusted)[0] == 200
    # Probes reach the health check without a password.
    assert fetch(base + "/healthz", context=trusted) == (200, "ok\n")
    # The certificate is the one configured: an untrusting client refuses it.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(base + "/healthz")
    # Plain HTTP to the TLS port gets no metrics, and does not stop the server.
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = s.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert b"gw502d_incidents_total" not in answer
    assert fetch(base + "/healthz", context=trusted) == (200, "ok\n")


def test_web_config_applies_to_new_connections(tmp_path: Path, started: list[Exporter]) -> None:
    exporter, _ = serve(tmp_path, None)
    started.append(exporter)
    base = f"http://127.0.0.1:{exporter.port}"
    assert fetch(base + "/metrics")[0] == 200
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "auth.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{hashed}'\n")
    exporter.site.web = load_web_config(path)  # what a SIGHUP reload does
    assert fetch(base + "/metrics")[0] == 401
    assert fetch(base + "/metrics", auth=("alice", "pw"))[0] == 200
