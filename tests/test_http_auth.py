"""Basic auth (issue 12, item 6): no user-name timing leak, a failure budget per client,
no traceback for inputs bcrypt refuses.

Timing is compared in CPU time of the daemon process (``/proc/<pid>/stat``), not wall time:
bcrypt's cost is CPU, and CPU time does not care what else runs on the machine.
"""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path

import bcrypt

from gw502d.export.auth import BasicAuth, Credentials, client_key, dummy_hash, parse_basic
from tests.daemon import DaemonProcess, config_text, log_paths

CLK_TCK = os.sysconf("SC_CLK_TCK")
SLOW = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=12)).decode()
FAST = bcrypt.hashpw(b"quick", bcrypt.gensalt(rounds=4)).decode()


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def basic(user: str, password: str | bytes) -> dict[str, str]:
    raw = user.encode() + b":" + (password if isinstance(password, bytes) else password.encode())
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def raw_status(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head +
                  b"Connection: close\r\n\r\n")
        return s.recv(12)


def test_basic_auth_leaks_no_names_and_limits_guessing(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{SLOW}'\n  fast: '{FAST}'\n")
    logs = log_paths(tmp_path, ("nginx",))
    with DaemonProcess(tmp_path, config_text(logs, web_config=str(web))) as d:
        d.start()

        def cost(headers: dict[str, str], n: int = 3) -> float:
            before = cpu_seconds(d.pid)
            for _ in range(n):
                assert d.get("/metrics", headers=headers)[0] == 401
            return cpu_seconds(d.pid) - before

        cost(basic("nobody", "x"), 1)  # warm up
        unknown = cost(basic("nobody", "s3cret"))
        wrong = cost(basic("prometheus", "wrong"))
        # Both are one bcrypt run of cost 12 each (about 0.3 s of CPU here).
        assert unknown > 0.3 and 0.6 < unknown / wrong < 1.6, (unknown, wrong)

        # Inputs bcrypt 5 raises on, and headers that are not base64 or not ASCII: a 401.
        assert d.get("/metrics", headers=basic("prometheus", "x" * 100))[0] == 401
        assert raw_status(d.port, b"Authorization: Basic \xe9\xe9\xe9==\r\n").endswith(b"401")
        assert raw_status(d.port, b"Authorization: Basic " + base64.b64encode(
            b"\xff\xfe:pw") + b"\r\n").endswith(b"401")
        assert raw_status(d.port, b"Authorization: Bearer x\r\n").endswith(b"401")

        # A credential that passed is remembered: guessing from the same address does not
        # lock it out, and costs no bcrypt run once the budget is spent.
        assert d.get("/metrics", headers=basic("fast", "quick"))[0] == 200
        statuses = [d.get("/metrics", headers=basic("fast", f"guess{n}"))[0] for n in range(12)]
        assert statuses[-1] == 429 and set(statuses) == {401, 429}, statuses
        status, _, headers = d.get("/metrics", headers=basic("fast", "guess"))
        assert status == 429 and int(headers["Retry-After"]) >= 1
        before = cpu_seconds(d.pid)
        for _ in range(5):
            assert d.get("/metrics", headers=basic("prometheus", "guess"))[0] == 429
        assert cpu_seconds(d.pid) - before < 0.2  # no cost-12 bcrypt ran
        assert d.get("/metrics", headers=basic("fast", "quick"))[0] == 200
        assert d.get("/healthz")[0] == 200  # probes never need a password
        assert d.stop() == 0
    text = d.output.read_text()
    assert "Traceback" not in text and all(line.startswith("{") for line in text.splitlines())


def test_budget_per_client_with_refill() -> None:
    users = {"p": FAST.encode()}
    auth = BasicAuth(burst=3, refill_per_second=1.0, concurrent=8)
    header = basic("p", "wrong")["Authorization"]
    verdicts = [auth.decide(users, header, "10.0.0.1", now=100.0) for _ in range(4)]
    assert [v.check is not None for v in verdicts] == [True, True, True, False]
    assert verdicts[3].retry_after is not None and not verdicts[3].busy
    for v in verdicts[:3]:
        assert v.check is not None and not auth.verify(users, v.check, "10.0.0.1")
    # another client has its own budget; an IPv6 /64 is one client
    assert auth.decide(users, header, "10.0.0.2", now=100.0).check is not None
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff") == "2001:db8::/64"
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    # refilled after a second
    assert auth.decide(users, header, "10.0.0.1", now=101.5).check is not None


def test_few_bcrypt_checks_at_once() -> None:
    users = {"p": FAST.encode()}
    auth = BasicAuth(concurrent=2)
    header = basic("p", "wrong")["Authorization"]
    first = [auth.decide(users, header, f"10.0.0.{n}") for n in range(3)]
    assert [v.check is not None for v in first] == [True, True, False]
    assert first[2].busy
    auth.release()
    assert auth.decide(users, header, "10.0.0.9").check is not None


def test_parse_basic_and_dummy_hash() -> None:
    assert parse_basic("Basic " + base64.b64encode(b"a:b:c").decode()) == Credentials(
        "a", b"b:c")
    assert parse_basic("basic  " + base64.b64encode(b"a:").decode()) == Credentials("a", b"")
    for bad in (None, "Basic", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(),
                "Basic \u00e9", "Digest x"):
        assert parse_basic(bad) is None
    users = {"a": FAST.encode(), "b": SLOW.encode()}
    dummy = dummy_hash(users)
    assert dummy.startswith(SLOW[:29].encode()) and not bcrypt.checkpw(b"s3cret", dummy)
