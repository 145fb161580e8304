"""The web config on start and on reload (issue 12, items 2 and 3).

A reload never drops TLS, client certificates or basic auth because a file is empty,
half-written or leaves a section out; every broken file is one ConfigError line, on
``check-config`` and on SIGHUP alike. The end-to-end test runs the daemon with TLS and a
user, breaks its web config in the ways an editor or a deploy tool does, and checks over
HTTPS that nothing was dropped and the daemon still stops on SIGTERM.
"""

from __future__ import annotations

import base64
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest

from gw502d.errors import ConfigError
from gw502d.export.webconfig import WebConfig, load_web_config
from tests.daemon import ROOT, DaemonProcess, config_text, log_paths

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
USERS = f"basic_auth_users:\n  prometheus: '{HASH}'\n"


def tls_yaml(cert: Path, key: Path, extra: str = "") -> str:
    return f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n{extra}"


def write(tmp_path: Path, text: str | bytes, name: str = "web.yml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def running(tmp_path: Path, cert: Path, key: Path, extra: str = "") -> WebConfig:
    return load_web_config(write(tmp_path, tls_yaml(cert, key, extra) + USERS, "running.yml"))


@pytest.mark.parametrize("text", ["", "\n\n", "# tls_server_config:\n#   cert_file: a\n"])
def test_an_empty_file_is_an_error_even_on_start(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="empty"):
        load_web_config(write(tmp_path, text))


@pytest.mark.parametrize("text", ["tls_server_config:\n", "basic_auth_users:\n",
                                  f"{USERS}tls_server_config:\n"])
def test_a_section_without_a_value_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="has no value"):
        load_web_config(write(tmp_path, text))


def test_a_reload_keeps_tls_and_users_unless_told(
        tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    previous = running(tmp_path, cert, key)
    refused = {
        USERS: "tls_server_config: missing, but the running server serves TLS",
        tls_yaml(cert, key): "basic_auth_users: missing, but the running server requires "
                             "basic auth",
        "{}\n": "tls_server_config: missing",
        # a file cut in the middle of a hash or a path
        USERS[:-20] + "'\n": "basic_auth_users.prometheus: must be a bcrypt hash",
        tls_yaml(cert, key)[:-8] + "\n" + USERS: "tls_server_config.cert_file: cannot load",
    }
    for n, (text, message) in enumerate(refused.items()):
        path = write(tmp_path, text, f"new{n}.yml")
        with pytest.raises(ConfigError) as info:
            load_web_config(path, previous)
        assert message in str(info.value), (text, str(info.value))
    # Saying so turns them off.
    plain = load_web_config(write(tmp_path, "tls_server_config: {}\n" + USERS), previous)
    assert plain.tls is None and plain.users
    nobody = load_web_config(write(tmp_path, tls_yaml(cert, key) + "basic_auth_users: {}\n"),
                             previous)
    assert nobody.tls is not None and not nobody.users
    # A web config removed from gw502d.toml is refused while one with TLS runs.
    with pytest.raises(ConfigError, match="web_config: removed"):
        load_web_config(None, previous)
    assert load_web_config(None, None) is None
    # On start, leaving a section out is plain HTTP or no auth, as in exporter-toolkit.
    assert load_web_config(write(tmp_path, USERS)).tls is None


def test_a_reload_keeps_client_certificates_unless_told(
        tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    mtls = (f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {cert}\n")
    previous = running(tmp_path, cert, key, mtls)
    assert previous.client_certs == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match="client_auth_type: missing, but the running server "
                                          "checks client certificates"):
        load_web_config(write(tmp_path, tls_yaml(cert, key) + USERS), previous)
    explicit = load_web_config(write(tmp_path, tls_yaml(
        cert, key, "  client_auth_type: NoClientCert\n") + USERS), previous)
    assert explicit.client_certs == ssl.CERT_NONE
    off = load_web_config(write(tmp_path, "tls_server_config: {}\n" + USERS), previous)
    assert off.tls is None


@pytest.mark.parametrize(("content", "message"), [
    (b"basic_auth_users:\n  prometheus: '\xff\xfe'\n",
     "file: not UTF-8 (byte 0xff at offset 33)"),
    (b"tls_server_config:\n  cert_file: \"a\\0b\"\n  key_file: k\n",
     "tls_server_config.cert_file: contains a NUL byte"),
    (b"basic_auth_users: \x00\n", "file: not valid YAML"),
    (b"basic_auth_users:\n  " + b"[" * 5000 + b"\n", "file: not valid YAML"),
    (b"basic_auth_users:\n  p: 2024-13-45\n", "file: not valid YAML: month must be in"),
    (b"basic_auth_users:\n  prometheus: $2$10$" + b"a" * 53 + b"\n",
     "basic_auth_users.prometheus: must be a bcrypt hash"),
    (b"- a\n", "file: must be a mapping"),
    (b"1: 2\n", "1: not supported by gw502d"),
], ids=["latin-1", "nul-path", "nul-byte", "deep", "bad-date", "hash-prefix", "list", "int-key"])
def test_every_broken_file_is_one_config_error(tmp_path: Path, content: bytes,
                                               message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        load_web_config(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)
    assert "\n" not in str(info.value)


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gw502d", "check-config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def test_check_config_says_it_in_one_line(tmp_path: Path) -> None:
    write(tmp_path, b"basic_auth_users:\n  prometheus: '\xff'\n", "latin1.yml")
    log = tmp_path / "app.log"
    cases = {
        'web_config = "latin1.yml"\n': "latin1.yml: file: not UTF-8",
        'web_config = "a\\u0000b.yml"\n': "web_config: must not contain NUL or line breaks",
    }
    for n, (line, message) in enumerate(cases.items()):
        config = write(tmp_path, line + f'[[log]]\npath = "{log}"\n', f"gw502d{n}.toml")
        result = check_config(config)
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr


def _auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_sighup_with_a_broken_web_config_keeps_tls_auth_and_the_daemon(
        tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    web = write(tmp_path, tls_yaml(cert, key) + USERS)
    logs = log_paths(tmp_path, ("nginx",))
    trusted = ssl.create_default_context(cafile=str(cert))
    good = _auth("prometheus", "s3cret")
    with DaemonProcess(tmp_path, config_text(logs, web_config=str(web)), scheme="https") as d:
        d.start(wait=False)
        d.wait_for(lambda: d.get("/healthz", context=trusted)[0] == 200, "TLS /healthz")

        def reload_state() -> str:
            _, body, _ = d.get("/metrics", headers=good, context=trusted)
            line = next((x for x in body.splitlines()
                         if x.startswith("gw502d_config_last_reload_successful ")), "")
            return line.rpartition(" ")[2]

        assert reload_state() == "1.0"
        broken = [b"", b"# being rewritten\n", USERS.encode(),
                  b"tls_server_config:\n  cert_file: \xff\n", tls_yaml(cert, key)[:30].encode()]
        for content in broken:
            web.write_bytes(content)
            d.send(signal.SIGHUP)
            d.wait_for(lambda: reload_state() == "0.0", f"a failed reload of {content!r}")
            # Still TLS, still basic auth.
            assert d.get("/metrics", context=trusted)[0] == 401
            assert d.get("/metrics", headers=good, context=trusted)[0] == 200
            d.scheme = "http"
            assert d.get("/metrics")[0] == 0  # plain HTTP gets no answer
            d.scheme = "https"
            web.write_text(tls_yaml(cert, key) + USERS)
            d.send(signal.SIGHUP)
            d.wait_for(lambda: reload_state() == "1.0", "a good reload")
        errors = [e["error"] for e in d.events() if e.get("event", "").startswith(
            "reload failed")]
        assert errors and all("\n" not in e for e in errors), errors
        assert d.stop() == 0
