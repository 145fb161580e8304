"""Headers, methods and Host (issue 12, item 7).

Every answer carries a strict Content-Security-Policy, nosniff and no framing, and names no
version; HEAD answers like GET without a body; without basic auth only a Host naming this
machine (or ``allowed_hosts``) is answered. A real browser (Debian's chromium, headless)
loads the HTML pages and must report no CSP violation, while a page whose style lacks the
nonce is reported: the policy really is enforced, and the pages really follow it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from gw502d.export.collector import Numbers, Scrape, build_registry
from gw502d.export.hosts import HostPolicy, host_name, machine_names
from gw502d.export.http import Exporter, Site
from gw502d.export.listen import Listen
from tests.daemon import DaemonProcess, config_text, log_paths

HTML_PAGES = ("/", "/incidents?format=html")


def ask(port: int, head: str) -> tuple[int, dict[str, str], bytes]:
    """One raw request (*head* without the blank line); status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode() + b"Connection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def get(port: int, path: str, host: str = "127.0.0.1", extra: str = "",
        method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return ask(port, f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    logs = log_paths(tmp_path, ("nginx",))
    config = config_text(logs, allowed_hosts=["metrics.example.net", ".corp.example"])
    with DaemonProcess(tmp_path, config) as d:
        d.start()
        yield d
        assert d.stop() == 0


def test_every_answer_carries_the_security_headers(daemon: DaemonProcess) -> None:
    port = daemon.port
    nonces = []
    for path in ("/", "/metrics", "/incidents", "/incidents?format=html", "/healthz",
                 "/nothing", "/incidents?limit=0"):
        status, headers, body = get(port, path)
        assert status in (200, 400, 404), (path, status)
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, csp
        assert "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["server"] == "gw502d"  # no version, no Python
        if headers["content-type"].startswith("text/html"):
            nonce = re.search(r"style-src 'nonce-([A-Za-z0-9_-]{22})'", csp)
            assert nonce and f'nonce="{nonce.group(1)}"' in body.decode(), path
            nonces.append(nonce.group(1))
    assert len(nonces) == 2 and len(set(nonces)) == 2  # one per response


def test_head_and_other_methods(daemon: DaemonProcess) -> None:
    for path in ("/metrics", "/", "/incidents", "/healthz", "/nothing"):
        status, headers, body = get(daemon.port, path)
        head_status, head_headers, head_body = get(daemon.port, path, method="HEAD")
        assert (head_status, head_body) == (status, b"")
        assert head_headers["content-type"] == headers["content-type"]
        assert headers["content-length"] == str(len(body))
        if path != "/metrics":  # its process_* numbers move between two requests
            assert head_headers["content-length"] == headers["content-length"]
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "TRACE", "BREW"):
        status, headers, _ = get(daemon.port, "/metrics", method=method)
        assert status == 405 and headers["allow"] == "GET, HEAD", method


def test_host_names_this_machine_or_an_allowed_one(daemon: DaemonProcess) -> None:
    port = daemon.port
    allowed = ["127.0.0.1", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost",
               f"localhost:{port}", "app.localhost", socket.gethostname(),
               "metrics.example.net", "METRICS.example.net.", "corp.example", "a.b.corp.example"]
    refused = ["evil.example", f"evil.example:{port}", "metrics.example.net.evil.example",
               "evilcorp.example", "127.0.0.1.nip.io", "", "a b", f"localhost:{port}x"]
    for host in allowed:
        assert get(port, "/metrics", host)[0] == 200, host
    for host in refused:
        assert get(port, "/metrics", host)[0] in (400, 403), host
        assert get(port, "/incidents", host)[0] in (400, 403), host
    assert get(port, "/healthz", "evil.example")[0] == 200  # probes, and it reveals nothing
    # HTTP/1.0 without a Host: a script, not a browser
    assert ask(port, "GET /metrics HTTP/1.0\r\n")[0] == 200
    events = [e for e in daemon.events() if e.get("event", "").startswith("request for a host")]
    assert events and events[0]["host"] == "evil.example"

    # A reload changes the names.
    daemon.config_path.write_text(daemon.config_path.read_text().replace(
        '"metrics.example.net"', '"other.example.net"'))
    daemon.send(signal.SIGHUP)
    daemon.wait_for(lambda: get(port, "/metrics", "other.example.net")[0] == 200, "the reload")
    assert get(port, "/metrics", "metrics.example.net")[0] == 403


def test_with_basic_auth_any_host_is_answered(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  alice: '{hashed}'\n")
    token = base64.b64encode(b"alice:pw").decode()
    with DaemonProcess(tmp_path, config_text(log_paths(tmp_path, ("nginx",)),
                                             web_config=str(web))) as d:
        d.start()
        # A rebinding page has no password: with auth the name is not what protects.
        assert get(d.port, "/metrics", "evil.example")[0] == 401
        assert get(d.port, "/metrics", "evil.example",
                   f"Authorization: Basic {token}\r\n")[0] == 200
        assert d.stop() == 0


def _chromium(url: str, profile: Path) -> tuple[str, str]:
    """The DOM headless chromium built from *url*, and what it logged meanwhile (console
    messages, CSP violations among them)."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: apt-get install chromium")
    proc = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", "--dump-dom", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its helpers, by the group it leads
        proc.wait()
    return out.decode(errors="replace"), err.decode(errors="replace")


def test_a_browser_enforces_the_policy_and_the_pages_follow_it(
        tmp_path: Path, daemon: DaemonProcess) -> None:
    # The control: a page whose style has no nonce is blocked, and chromium says so.
    numbers = Numbers({}, {}, {}, {}, {}, {})
    site = Site(build_registry(lambda: Scrape(numbers, {}, True, 1.0)),
                health=lambda: None, incidents=lambda query: [],
                page=lambda nonce: "<!DOCTYPE html><html><head><style>p{color:red}</style>"
                                   "</head><body><p>x</p></body></html>", web=None)
    control = Exporter(Listen("127.0.0.1", 0), site)
    control.start()
    try:
        dom, log = _chromium(f"http://127.0.0.1:{control.port}/", tmp_path / "p0")
    finally:
        control.stop()
    assert "<p>x</p>" in dom and "Content Security Policy" in log, log[-2000:]
    for n, path in enumerate(HTML_PAGES, 1):
        dom, log = _chromium(f"http://127.0.0.1:{daemon.port}{path}", tmp_path / f"p{n}")
        assert "<table>" in dom, (path, dom[:500])
        assert "Content Security Policy" not in log, (path, log[-2000:])


def test_machine_names_come_from_local_configuration(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.1.1 web-1.example.internal web-1  # me\n"
                     "# 10.0.0.9 commented.example\n")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.2\nsearch prod.example.net. corp.example\n")
    names = machine_names(hosts, resolv)
    short = socket.gethostname().lower().partition(".")[0]
    assert {"localhost", "web-1.example.internal", "web-1", f"{short}.prod.example.net",
            f"{short}.corp.example"} <= names
    assert "commented.example" not in names and "me" not in names
    assert machine_names(tmp_path / "none", tmp_path / "none") >= {short}
    policy = HostPolicy(names=names)
    assert policy.allows("WEB-1.example.internal:9502") and policy.allows("[fe80::1%eth0]")
    assert not policy.allows("web-1.example.internal.evil.example")
    assert host_name("[::1]:95x") is None and host_name("a:b") is None
