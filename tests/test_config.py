"""The daemon's configuration: every problem names its key; check-config's exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gw502d.daemon import config as config_module
from gw502d.daemon.config import (
    DEFAULT_LOGS,
    Overrides,
    default_state_dir,
    load_config,
    parse_config,
    read_config_file,
)
from gw502d.daemon.service import load
from gw502d.errors import ConfigError
from gw502d.export.listen import Listen
from gw502d.source.spec import JournalSpec, LogSpec
from tests.servers.journal import JournalWriter

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "gw502d.toml.example"
LOG = '[[log]]\npath = "/var/log/nginx/error.log"\nfamily = "nginx"\n'


def gw502d(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gw502d", *args], capture_output=True,
                          text=True, timeout=60, check=False, cwd=ROOT)


def write(tmp_path: Path, text: str, name: str = "gw502d.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ('listen = "9502"\n' + LOG, "listen: '9502' is not HOST:PORT"),
    ('listen = ":99999"\n' + LOG, "listen: ':99999': the port must be a number from 1 to 65535"),
    ('listen = "::1:9502"\n' + LOG, "listen: '::1:9502': put an IPv6 address in brackets"),
    ('start_at = "middle"\n' + LOG, "start_at: must be one of end, beginning, got 'middle'"),
    ("max_line_bytes = 10\n" + LOG, "max_line_bytes: must be between 1024 and 16777216"),
    ('max_line_bytes = "64k"\n' + LOG, "max_line_bytes: must be a number of bytes, got '64k'"),
    ("correlation_window_seconds = -1\n" + LOG, "correlation_window_seconds: must be between"),
    ("incidents_buffer = true\n" + LOG, "incidents_buffer: must be a number of incidents"),
    ('redact = "yes"\n' + LOG, "redact: must be true or false, got 'yes'"),
    ('pattern_dirs = "/etc/gw502d/patterns.d"\n' + LOG, "pattern_dirs: must be an array"),
    ('state_dir = ""\n' + LOG, "state_dir: must not be empty"),
    ('lisen = ":9502"\n' + LOG, "lisen: unknown key (known: allowed_hosts, "
                                "correlation_window_seconds, "),
    ('allowed_hosts = "x"\n' + LOG, "allowed_hosts: must be an array of host names"),
    ('allowed_hosts = ["a b"]\n' + LOG, "allowed_hosts: 'a b' is not a host name"),
    ('allowed_hosts = [3]\n' + LOG, "allowed_hosts: 3 is not a host name"),
    ("log = []\n", "log: must be one or more [[log]] tables"),
    ('[[log]]\nfamily = "nginx"\n', "log[1].path: missing"),
    (LOG + 'pth = "/x"\n', "log[1].pth: unknown key (known: family, format, name, path)"),
    (LOG + LOG, "log[2].name: 'nginx' is already the name of log[1]; give each [[log]] and "
                "[[journal]] its own name"),
    (LOG + 'format = "json"\n', "log[1].format: must be one of plain, syslog, got 'json'"),
    ("journal = 3\n", "journal: must be one or more [[journal]] tables"),
    ('[[journal]]\nunits = "shop"\n', "journal[1].units: must be an array of unit names, "
                                      "got 'shop'"),
    ('[[journal]]\nunits = ["shop", ""]\n', "journal[1].units: '' is not one of unit names"),
    ('[[journal]]\nunits = ["uwsgi@*"]\n', "journal[1].units: 'uwsgi@*': name each unit, "
                                           "globs are not matched"),
    ('[[journal]]\nidentifiers = ["a\\nb"]\n', "journal[1].identifiers: 'a\\nb' is not one of "
                                              "syslog identifiers"),
    ('[[journal]]\ndirectory = "/j"\nfile = "/j/system.journal"\n',
     "journal[1].file: a journal source reads a directory or a file, not both"),
    ('[[journal]]\nunit = ["shop"]\n', "journal[1].unit: unknown key (known: directory, "
                                       "family, file, identifiers, name, units)"),
    (LOG + '[[journal]]\nunits = ["nginx.service"]\nname = "nginx"\n',
     "journal[1].name: 'nginx' is already the name of log[1]; give each [[log]] and "
     "[[journal]] its own name"),
    ('[[journal]]\nunits = ["a"]\n[[journal]]\nidentifiers = ["a"]\n',
     "journal[2].name: 'a' is already the name of journal[1]"),
    (LOG + '[[log]]\npath = "/a"\nfamily = 3\n', "log[2].family: must be a string, got 3"),
    ("listen = \n", "file: not valid TOML"),
])
def test_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert str(info.value).startswith(f"{path}: "), info.value
    assert message in str(info.value)


def test_family_must_be_in_the_catalog(tmp_path: Path) -> None:
    path = write(tmp_path, LOG + '[[log]]\npath = "/var/log/app.log"\nfamily = "nginz"\n')
    with pytest.raises(ConfigError) as info:
        load(Overrides(config=path))
    assert info.value.key == "log[2].family"
    assert str(info.value) == (f"{path}: log[2].family: must be one of gunicorn, nginx, uwsgi, "
                               "werkzeug, got 'nginz'")


def test_journal_sources_and_syslog_logs(tmp_path: Path) -> None:
    path = write(tmp_path, '[[journal]]\nunits = ["shop", "blog.service"]\nfamily = "uwsgi"\n'
                           '[[journal]]\nidentifiers = ["gunicorn"]\ndirectory = "journal"\n'
                           'name = "api"\n')
    config = read_config_file(path)
    # journal sources only: no file is followed by default
    assert config.logs == ()
    assert config.journals == (
        JournalSpec("uwsgi", "uwsgi", ("shop", "blog.service")),
        JournalSpec("api", None, identifiers=("gunicorn",), directory=str(tmp_path / "journal")))
    path = write(tmp_path, LOG + 'format = "syslog"\n'
                                 '[[journal]]\nfile = "j/system.journal"\n')
    config = read_config_file(path)
    assert config.logs == (LogSpec("/var/log/nginx/error.log", "nginx", "nginx", "syslog"),)
    assert config.journals == (
        JournalSpec("journal", None, file=str(tmp_path / "j" / "system.journal")),)
    path = write(tmp_path, '[[journal]]\nunits = ["shop"]\nfamily = "apache"\n')
    with pytest.raises(ConfigError) as info:
        load(Overrides(config=path))
    assert info.value.key == "journal[1].family"


def test_journal_unit_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(config_module, "DEFAULT_PATH", Path("/nonexistent/gw502d.toml"))
    config = load_config(Overrides(journal_units=("uwsgi", "api.service", "uwsgi")))
    assert config.logs == DEFAULT_LOGS  # the default logs have a "uwsgi" too: no clash
    assert config.journals == (JournalSpec("uwsgi.service", None, ("uwsgi",)),
                               JournalSpec("api.service", None, ("api.service",)))
    with pytest.raises(ConfigError, match=r"^--journal-unit: 'a\*' is not a unit name"):
        load_config(Overrides(journal_units=("a*",)))
    path = write(tmp_path, LOG + 'name = "x.service"\n[[journal]]\nunits = ["y"]\n')
    assert load_config(Overrides(config=path, journal_units=("z",))).journals == (
        JournalSpec("z.service", None, ("z",)),)  # the flag replaces the [[journal]] tables
    with pytest.raises(ConfigError, match=r"^--journal-unit: 'x.service' is already the name"):
        load_config(Overrides(config=path, journal_units=("x",)))


def test_family_from_a_pattern_dir_is_known(tmp_path: Path) -> None:
    patterns = tmp_path / "patterns.d"
    patterns.mkdir()
    (patterns / "myapp.toml").write_text(
        'family = "myapp"\nprefix = "MYAPP {level:word}: "\n'
        '[[incident]]\nid = "backend_down"\nseverity = "error"\nstatus = 502\n'
        'summary = "down"\nmessages = ["backend down"]\nremediation = "Start it."\n')
    path = write(tmp_path, 'pattern_dirs = ["patterns.d"]\n'
                           '[[log]]\npath = "app.log"\nfamily = "myapp"\n')
    loaded = load(Overrides(config=path))
    assert ("backend_down", "myapp") in loaded.catalog.keys
    assert loaded.config.logs == (LogSpec(str(tmp_path / "app.log"), "myapp", "myapp"),)


def test_a_broken_pattern_dir_is_a_pattern_dirs_error(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.toml").write_text('family = "nginx"\n[[incident]]\nid = "X"\n')
    path = write(tmp_path, 'pattern_dirs = ["bad"]\n' + LOG)
    with pytest.raises(ConfigError) as info:
        load(Overrides(config=path))
    assert info.value.key == "pattern_dirs"
    assert "x.toml" in str(info.value)


def test_web_config_errors_name_their_key(tmp_path: Path) -> None:
    cases = {
        "tls_server_config:\n  cert_file: tls.crt\n": "tls_server_config.key_file: missing",
        "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n":
            "tls_server_config.cert_file: cannot load a.crt with a.key",
        "tls_server_config:\n  certfile: a.crt\n": "tls_server_config.certfile: not supported",
        "basic_auth_users:\n  prometheus: secret\n": "basic_auth_users.prometheus: must be a "
                                                     "bcrypt hash",
        "basic_auth: {}\n": "basic_auth: not supported by gw502d",
        "[": "file: not valid YAML",
    }
    for n, (web, message) in enumerate(cases.items()):
        web_path = write(tmp_path, web, f"web{n}.yml")
        path = write(tmp_path, f'web_config = "{web_path.name}"\n' + LOG)
        with pytest.raises(ConfigError) as info:
            load(Overrides(config=path))
        assert str(info.value).startswith(f"{web_path}: {message}"), info.value
    path = write(tmp_path, 'web_config = "missing.yml"\n' + LOG)
    with pytest.raises(ConfigError, match=r"^web_config: cannot read .*missing\.yml"):
        load(Overrides(config=path))


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "DEFAULT_PATH", Path("/nonexistent/gw502d.toml"))
    config = load_config(Overrides())
    assert config.logs == DEFAULT_LOGS
    assert [s.path for s in config.logs] == [
        "/var/log/nginx/error.log", "/var/log/uwsgi/*.log", "/var/log/gunicorn/*.log"]
    assert config.listen == Listen("", 9502)
    assert config.state_dir == default_state_dir()
    assert (config.start_at, config.max_line_bytes, config.incidents_buffer, config.redact,
            config.web_config) == ("end", 65536, 200, True, None)


def test_state_dir_for_root_and_for_a_user(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setattr(config_module.os, "geteuid", lambda: 0)
    assert default_state_dir() == Path("/var/lib/gw502d")
    monkeypatch.setattr(config_module.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "gw502d"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / ".local" / "state" / "gw502d"


def test_the_default_file_is_used_when_it_exists(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "127.0.0.1:9999"\n' + LOG)
    monkeypatch.setattr(config_module, "DEFAULT_PATH", path)
    assert load_config(Overrides()).listen == Listen("127.0.0.1", 9999)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = ":9502"\nstate_dir = "state"\n'
                           'web_config = "web.yml"\nincidents_buffer = 0\n' + LOG)
    from_file = read_config_file(path)
    assert from_file.state_dir == tmp_path / "state"  # relative to the file
    assert from_file.incidents_buffer == 0  # 0 is a value, not "unset"
    config = load_config(Overrides(config=path, listen="[::1]:9600", state_dir=tmp_path / "s",
                                   web_config=tmp_path / "w.yml",
                                   logs=("/var/log/a.log", "/var/log/b/*.log")))
    assert config.listen == Listen("::1", 9600)
    assert str(config.listen) == "[::1]:9600"
    assert config.state_dir == tmp_path / "s"
    assert config.web_config == tmp_path / "w.yml"
    assert config.logs == (LogSpec("/var/log/a.log", "/var/log/a.log", None),
                           LogSpec("/var/log/b/*.log", "/var/log/b/*.log", None))
    with pytest.raises(ConfigError, match="^--listen: 'x' is not HOST:PORT"):
        load_config(Overrides(config=path, listen="x"))


def test_the_example_is_a_valid_config() -> None:
    config = read_config_file(EXAMPLE)
    raw = tomllib.loads(EXAMPLE.read_text())
    assert config.listen == Listen("", 9502)
    assert [(s.path, s.family, s.name) for s in config.logs] == [
        (t["path"], t["family"], t["name"]) for t in raw["log"]]
    assert config.redact is True and config.incidents_buffer == 200
    result = gw502d("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert f"{EXAMPLE}: OK: 3 log(s)" in result.stdout


def test_the_examples_commented_out_are_valid_too() -> None:
    """Every commented-out table and key of the example, uncommented, is a valid config."""
    text = re.sub(r"^# ((?:\[\[\w+\]\]|\w+ = .*))$", r"\1", EXAMPLE.read_text(),
                  flags=re.MULTILINE)
    config = parse_config(tomllib.loads(text), source="example", base=EXAMPLE.parent)
    assert [s.name for s in config.journals] == ["shop", "api"]
    assert config.journals[0].units == ("shop.service",) and config.journals[0].family == "uwsgi"
    assert config.journals[1].directory == "/host/var/log/journal"
    assert [s.format for s in config.logs].count("syslog") == 1
    assert config.allowed_hosts == ("metrics.example.net",)


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = write(tmp_path, LOG, "good.toml")
    result = gw502d("check-config", str(good))
    assert (result.returncode, result.stderr) == (0, "")
    bad = write(tmp_path, LOG + '[[log]]\npath = "/a"\nfamily = "apache"\n', "bad.toml")
    result = gw502d("check-config", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"gw502d check-config: {bad}: log[2].family: must be one of "
                                     "gunicorn, nginx, uwsgi, werkzeug, got 'apache'")
    result = gw502d("check-config", str(tmp_path / "none.toml"))
    assert result.returncode == 2 and "none.toml: file: cannot read" in result.stderr


def test_check_config_names_journal_problems(tmp_path: Path) -> None:
    """Journal sources are listed with what they match; an empty journal directory and a
    missing journalctl are warnings (check-config still exits 0: the config is valid)."""
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    w = JournalWriter(full / "system.journal")
    w.append([w.entry("hello", unit="shop.service")])
    path = write(tmp_path, f'[[journal]]\nunits = ["shop"]\ndirectory = "{empty}"\n'
                           f'[[journal]]\nidentifiers = ["uwsgi"]\ndirectory = "{full}"\n'
                           'family = "uwsgi"\n')
    result = gw502d("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK: 0 log(s), 2 journal source(s), " in result.stdout
    assert f"  journal 'shop': unit shop in {empty} (family from each entry)\n" in result.stdout
    assert f"  journal 'uwsgi': identifier uwsgi in {full} (uwsgi)\n" in result.stdout
    assert result.stderr == (f"gw502d check-config: warning: journal 'shop': no journal files "
                             f"in {empty}\n")
    result = subprocess.run([sys.executable, "-m", "gw502d", "check-config", str(path)],
                            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
                            env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 0
    assert result.stderr.count("journalctl not found (journalctl): install systemd") == 2


def test_run_refuses_a_bad_config_with_status_2(tmp_path: Path) -> None:
    bad = write(tmp_path, 'start_at = "now"\n' + LOG)
    result = gw502d("run", "--config", str(bad), "--listen", "127.0.0.1:1")
    assert result.returncode == 2
    assert "start_at: must be one of end, beginning" in result.stdout
