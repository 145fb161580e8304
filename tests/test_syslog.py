"""Syslog prefixes against what rsyslog and journalctl really write.

nginx (``error_log syslog:``), uWSGI (``--logger rsyslog:``) and gunicorn (``--log-syslog``)
send to a real rsyslogd on 127.0.0.1, which writes the traditional, the high-precision and
the RFC 5424 file formats; each server also writes its own file log, so the stripped
syslog message can be compared with the line the server wrote itself.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gw502d.parse.syslog import family_of, parse_time, strip_block
from tests.servers.harness import HOST, Gunicorn, Nginx, Uwsgi, free_port, make_workdir, read_lines
from tests.servers.journal import RSYSLOG_FORMATS, JournalWriter, Rsyslog, real_lines
from tests.servers.provoke import http_request, pass_block, status_of


@pytest.fixture
def rsyslog() -> Iterator[Rsyslog]:
    tmp = make_workdir()
    with Rsyslog(tmp) as rs:
        yield rs


def stripped(path: Path, needle: str) -> list[tuple[bytes, bytes, bytes]]:
    """(message, tag, time) of the file's lines whose message contains ``needle``."""
    s = strip_block(path.read_bytes().split(b"\n")[:-1])
    return [x for x in zip(s.lines, s.tags, s.times, strict=True) if needle.encode() in x[0]]


def assert_recent(raw_time: bytes) -> None:
    t = parse_time(raw_time)
    assert t is not None and abs(t - time.time()) < 300, (raw_time, t)


@pytest.mark.servers
def test_servers_lines_through_rsyslog_are_their_own_lines(rsyslog: Rsyslog) -> None:
    tmp = rsyslog.tmpdir
    uwsgi = Uwsgi(tmp, ["--plugin", "rsyslog,logfile",
                        "--logger", f"rsyslog:{HOST}:{rsyslog.port},uwsgi",
                        "--logger", f"file:{tmp / 'uwsgi.log'}"])
    # Both logs at the http level: an http-level error_log replaces the main one there.
    nginx = Nginx(tmp, pass_block("proxy", free_port()),
                  http_block=f"    error_log {tmp / 'error.log'} info;\n"
                             f"    error_log syslog:server={HOST}:{rsyslog.port},tag=nginx info;")
    gunicorn = Gunicorn(tmp, ["--log-syslog", "--log-syslog-to", f"udp://{HOST}:{rsyslog.port}",
                              "--timeout", "1"])
    try:
        uwsgi.start()
        with socket.create_connection((HOST, uwsgi.port or 0)) as s:  # HTTP to a uwsgi socket
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            uwsgi.wait_for_line("invalid request block size")
        nginx.start()
        assert status_of(http_request(nginx.port, "/")) == 502  # nothing on the upstream port
        gunicorn.start()
        http_request(gunicorn.port, "/sleep?s=3", timeout=8)
        gunicorn.wait_for_line("WORKER TIMEOUT", 8)
        rsyslog.wait_for("WORKER TIMEOUT")
    finally:
        for server in (gunicorn, nginx, uwsgi):
            server.stop()
    own = {
        "uwsgi": next(ln for ln in read_lines(uwsgi.log_path) if "invalid request block" in ln),
        "nginx": next(ln for ln in read_lines(nginx.log_path) if "connect() failed" in ln),
    }
    timeout_line = next(ln for ln in read_lines(gunicorn.log_path) if "WORKER TIMEOUT" in ln)
    # gunicorn's syslog format is "[pid] message": no time and no level, unlike its file.
    arbiter, message = re.fullmatch(r"\[[^]]+\] \[(\d+)\] \[CRITICAL\] (.*)", timeout_line).groups()
    own["gunicorn"] = f"[{arbiter}] {message}"
    for name in RSYSLOG_FORMATS:
        for family, line in own.items():
            found = stripped(rsyslog.files[name], line)
            assert found, (name, family, rsyslog.files[name].read_text()[-2000:])
            msg, tag, raw_time = found[0]
            assert msg == line.encode(), (name, family)
            assert family_of(tag) == family, (name, tag)
            assert_recent(raw_time)


def test_logger_messages_in_every_format(rsyslog: Rsyslog) -> None:
    """RFC 3164 and RFC 5424 senders, with and without a pid; an RFC 3164 message keeps
    its indentation exactly (nginx, uWSGI and Python's SysLogHandler all send RFC 3164)."""
    sent = [
        ("uwsgi", "3164", 4242, "DAMN ! worker 1 (pid: 4243) died, killed by signal 9 :("),
        ("gunicorn", "3164", 77, '  File "/srv/app.py", line 3, in handler'),
        ("app-python3", "3164", None, "Traceback (most recent call last):"),
        ("nginx", "5424", None, "2026/11/22 03:09:19 [error] 9#9: *1 upstream timed out"),
        ("gunicorn", "5424", 78, "OSError: write error"),
        ("gunicorn", "5424", 79, '  File "/srv/app.py", line 4'),
    ]
    for tag, rfc, pid, message in sent:
        rsyslog.send(tag, message, rfc=rfc, pid=pid)
    rsyslog.wait_for("line 4")
    for name in RSYSLOG_FORMATS:
        lines = rsyslog.files[name].read_bytes().split(b"\n")[:-1]
        s = strip_block(lines)
        got = [(t, m) for t, m in zip(s.tags, s.lines, strict=True) if t != b"gw502d-probe"]
        assert got[:-1] == [(t.encode(), m.encode()) for t, _, _, m in sent[:-1]], (name, lines)
        # rsyslog writes an RFC 5424 message that starts with a space without a separator
        # before it (and RFC 3164 ones with one more): one space of it is taken for that.
        assert got[-1] == (b"gunicorn", b' File "/srv/app.py", line 4'), (name, lines)
        assert all(parse_time(t) for t in s.times)


def test_journalctl_short_outputs(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path / "system.journal", hostname="web1")
    lines = real_lines("uwsgi") + real_lines("gunicorn")
    w.append([w.entry(line, unit="app.service", ident="uwsgi", _PID="812") for line in lines])
    w.append([{k: v for k, v in w.entry("no host", ident="gunicorn").items()
               if k != "_HOSTNAME"}])
    for output in ("short", "short-precise", "short-iso", "short-iso-precise"):
        out = subprocess.run(["journalctl", f"--directory={tmp_path}", f"--output={output}"],
                             capture_output=True, check=True).stdout.split(b"\n")[:-1]
        s = strip_block(out)
        assert s.lines == [line.encode() for line in [*lines, "no host"]], output
        assert s.tags == [b"uwsgi"] * len(lines) + [b"gunicorn"], output
        for raw_time in s.times:
            assert_recent(raw_time)


def test_lines_without_a_prefix_come_back_whole() -> None:
    """Every family's own lines (written by the servers) are not mistaken for syslog."""
    own = [line.encode() for family in ("nginx", "uwsgi", "gunicorn", "werkzeug")
           for line in real_lines(family)]
    s = strip_block(own)
    assert s.lines == own
    assert set(s.tags) == {b""} and set(s.times) == {b""}


@given(st.lists(st.binary().map(lambda b: b.replace(b"\n", b""))))
def test_every_line_gives_one_message_that_ends_it(lines: list[bytes]) -> None:
    s = strip_block(lines)
    assert len(s.lines) == len(s.tags) == len(s.times) == len(lines)
    assert all(line.endswith(msg) for line, msg in zip(lines, s.lines, strict=True))


def test_family_of_tags() -> None:
    assert [family_of(t) for t in (b"nginx", b"uwsgi", "uwsgi@shop.service",
                                   b"gunicorn.app.error", "python3", b"flask", b"sshd", b"")] \
        == ["nginx", "uwsgi", "uwsgi", "gunicorn", None, "werkzeug", None, None]


def test_rfc3164_times_take_the_year_that_is_not_in_the_future() -> None:
    dec31 = time.mktime((2025, 12, 31, 23, 59, 0, 0, 0, -1))
    jan1 = time.mktime((2026, 1, 1, 0, 1, 0, 0, 0, -1))
    assert parse_time(b"Dec 31 23:59:00", now=jan1) == dec31
    assert parse_time(b"Jan  1 00:01:00.25", now=jan1) == jan1 + 0.25
    assert parse_time(b"2026-01-01T00:00:00.5+0000") == 1767225600.5
    assert parse_time(b"2026-01-01T00:00:00Z") == 1767225600.0
    assert parse_time(b"Foo  1 00:01:00") is None
