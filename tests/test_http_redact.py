"""Redaction in every output (issue 12, item 4).

Secrets are planted in requests to a real nginx whose proxy_pass goes nowhere, so nginx
itself writes them into its error log (request line, upstream URI, Referer); the daemon
follows that log, and no secret may appear in ``/incidents`` (JSON and HTML, lines and
facts), in ``/`` or in the daemon's own incident events.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest

from gw502d.classify.catalog import load_catalog
from gw502d.classify.matcher import Classifier
from gw502d.export.redact import REDACTED, redact_facts, redact_line, redact_text
from tests.daemon import DaemonProcess
from tests.servers.harness import Nginx, free_port, make_workdir, wait_for_line
from tests.servers.provoke import pass_block

# (request target, extra header lines): each carries one secret after the path
PLANTED = [
    ("/a?token=x,SECRET1", ""),
    ("/a?x=1'SECRET2", ""),
    ("/a?x=(SECRET3)", ""),
    ("/a;jsessionid=SECRET4", ""),
    ("/a%3Ftoken=SECRET5", ""),
    ("/a%3bjsessionid=SECRET6", ""),
    ("/a%253Ftoken=SECRET7", ""),
    ("/a", "Referer: https://ref.example/page?session=SECRET8\r\n"),
    ("/a?token=SECRET9", "Referer: https://ref.example/x;sid=SECRET10\r\n"),
]
SECRET = re.compile(r"SECRET\d+")


def _send(port: int, target: str, extra: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}"
                  "Connection: close\r\n\r\n".encode())
        while s.recv(65536):
            pass


def test_no_planted_secret_reaches_any_output(tmp_path: Path) -> None:
    work = make_workdir(tmp_path)
    nginx = Nginx(work, pass_block("proxy", free_port()))
    with nginx:
        config = (f'start_at = "beginning"\n[[log]]\npath = "{nginx.log_path}"\n'
                  'family = "nginx"\nname = "nginx"\n')
        with DaemonProcess(tmp_path, config) as d:
            d.start()
            for n, (target, extra) in enumerate(PLANTED):
                _send(nginx.port, target, extra)
                wait_for_line(nginx.log_path, f"SECRET{n + 1}", 10)
                # one event per incident and second: give each request its own
                d.wait_for(lambda n=n: len([e for e in d.events() if e.get("event") ==
                                            "incident"]) > n, f"incident event {n + 1}")
                time.sleep(1.05)
            log = nginx.log_path.read_text()
            assert len(set(SECRET.findall(log))) == 10  # nginx wrote every one of them

            status, body, _ = d.get("/incidents")
            assert status == 200
            entries = json.loads(body)["incidents"]
            refused = [e for e in entries if e["incident"] == "upstream_connect_refused"]
            assert len(refused) == len(PLANTED)
            pages = {
                "/incidents": body,
                "/incidents?format=html": d.get("/incidents?format=html")[1],
                "/": d.get("/")[1],
                "events": d.output.read_text(),
            }
            assert d.stop() == 0
    for where, text in pages.items():
        assert not SECRET.search(text), (where, SECRET.findall(text))
    # Redacted, not dropped: the path is still there, the rest is marked.
    uris = {e["facts"]["uri"] for e in refused}
    assert {"/a?" + REDACTED, "/a;" + REDACTED, "/a%3F" + REDACTED, "/a%3b" + REDACTED,
            "/a%253F" + REDACTED, "/a"} <= uris
    assert all("client: " + REDACTED in e["line"] for e in refused)
    events = [e for e in d.events() if e.get("event") == "incident"]
    assert {e["facts"]["uri"] for e in events} == uris


CATALOG = load_catalog()


@pytest.mark.parametrize(("text", "expected"), [
    ("GET /a?b=1 HTTP/1.1", f"GET /a?{REDACTED} HTTP/1.1"),
    ('request: "GET /a?t=x,y\'z) HTTP/1.1"', f'request: "GET /a?{REDACTED} HTTP/1.1"'),
    ("/a;jsessionid=1?x", f"/a;{REDACTED}"),
    ("/a%3F%3Fx /b%3bc", f"/a%3F{REDACTED} /b%3b{REDACTED}"),
    ("a; b ; c;", "a; b ; c;"),  # a semicolon in prose ends nothing worth hiding
    ("'HTTP_COOKIE': 'a=1; b=SECRET', 'HTTP_HOST': 'x'", f"'HTTP_COOKIE': {REDACTED}"),
    ("Cookie: a=1; b=SECRET", f"Cookie: {REDACTED}"),
    ('cookie="s=SECRET", x', f"cookie={REDACTED}"),
    ("Authorization: Basic SECRET", f"Authorization: {REDACTED}"),
    ("upstream: \"http://127.0.0.1:8000\"", "upstream: \"http://127.0.0.1:8000\""),
])
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redact_facts_cuts_a_uri_to_its_end() -> None:
    facts = {"uri": "/a b?c d", "client": "10.0.0.1", "upstream": "http://h:1", "size": 3}
    assert redact_facts(facts) == {"uri": "/a b?" + REDACTED, "client": REDACTED,
                                   "upstream": "http://h:1", "size": 3}


def test_redact_line_of_uwsgi_keeps_its_shape() -> None:
    # claim: the shape of uWSGI's write error (core/writer.c), typed here
    line = (b"uwsgi_response_writev_headers_and_body_do(): Broken pipe [core/writer.c line "
            b"306] during GET /x;jsessionid=SECRET?y=(1) (10.0.0.9)")
    classifier = Classifier(CATALOG, ["uwsgi"])
    m = classifier.match(line)
    assert m is not None and m.lastindex is not None
    slot = classifier.slots[m.lastindex]
    text = redact_line(slot, line)
    assert "SECRET" not in text and "10.0.0.9" not in text
    assert text.endswith(f"during GET /x;{REDACTED} ({REDACTED})"), text
