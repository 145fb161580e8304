"""Fixtures shared by the test modules."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import DaemonProcess

# Servers run from work dirs named so (tests.servers.harness.make_workdir); their command
# lines name them
_WORKDIRS = f"{tempfile.gettempdir()}/gw502d-"


def _servers_running() -> set[tuple[int, str]]:
    """Live processes whose command line names a test work dir (zombies have exited)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state = stat.read_text().rpartition(")")[2].split()[0]
            argv = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except (OSError, IndexError):
            continue  # gone meanwhile
        if state != "Z" and _WORKDIRS in argv:
            found.add((int(stat.parent.name), argv.strip()))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_server_outlives_the_run() -> Iterator[None]:
    """Every server a test starts is stopped by PID when it ends: one that forked away from
    its PID (an nginx whose config lacks "daemon off") would keep running after the run."""
    before = _servers_running()
    yield
    deadline = time.monotonic() + 10
    while (left := _servers_running() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"still running after the tests: {sorted(left)}"


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def make(config: str, **kwargs: Any) -> DaemonProcess:
        d = DaemonProcess(tmp_path, config, **kwargs)
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key, made by openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed: apt-get install openssl")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "tls.crt", d / "tls.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key
