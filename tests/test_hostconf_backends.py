"""uWSGI and gunicorn configuration: read from files and from running masters' command
lines, planned as diffs, checked by the real uWSGI, applied and seen by the restarted server.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gw502d.remediate.hostconf import (
    GunicornEdit,
    UwsgiEdit,
    apply_plan,
    check_uwsgi,
    gunicorn_masters,
    plan_gunicorn,
    plan_uwsgi,
    read_gunicorn,
    read_uwsgi,
    uwsgi_masters,
)
from tests.hostconf_host import GUNICORN_CONF, UWSGI_INI
from tests.servers.harness import (
    UWSGI_BIN,
    Gunicorn,
    Proc,
    make_workdir,
    read_lines,
    wait_for_line,
    write_wsgi_app,
)


@pytest.fixture
def work():
    base = make_workdir()
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _ini(work: Path) -> Path:
    ini = work / "shop.ini"
    ini.write_text(UWSGI_INI.format(socket=work / "shop.sock"))
    return ini


# --------------------------------------------------------------------------- uWSGI


def test_uwsgi_ini_quirks(work):
    ini = _ini(work)
    cfg = read_uwsgi(str(ini))
    assert cfg.problems == []
    assert [(o.name, o.value, o.where.line) for o in cfg.options] == [
        ("plugins", "python3", 3), ("master", "true", 4), ("processes", "2", 5),
        ("harakiri", "6", 7), ("buffer-size", "8192", 8), ("socket", f"{work}/shop.sock", 9),
        ("chmod-socket", "660", 10), ("stats", "%(socket).stats", 11),
        ("enable-threads", "", 12), ("listen", "64 ; not a comment: uWSGI keeps it in the value",
                                     13),
        ("processes", "3", 14)]
    assert str(cfg.last("workers")) == f"processes = 3 ({ini}:14)"  # alias, last wins
    assert cfg.number("harakiri") == 6 and cfg.number("listen") == 64
    assert cfg.number("threads") == 1  # uWSGI's default
    assert cfg.flag("master") and cfg.flag("enable-threads") and not cfg.flag("vacuum")
    assert cfg.plugins == ["python3"]
    other = read_uwsgi(f"{ini}:other")
    assert [(o.name, o.value) for o in other.options] == [("harakiri", "99")]
    assert read_uwsgi(f"{ini}:nope").problems[0].reason == "no [nope] section"
    assert read_uwsgi(str(work / "gone.ini")).problems[0].reason == "No such file or directory"


def test_uwsgi_yaml_and_xml(work):
    (work / "a.yaml").write_text("uwsgi:\n  socket:\n    - :3031\n    - :3032\n"
                                 "  harakiri: 30\n  master: true\n")
    (work / "a.xml").write_text('<uwsgi>\n  <socket>:3031</socket>\n  <harakiri>30</harakiri>\n'
                                "  <master/>\n</uwsgi>\n")
    y, x = read_uwsgi(str(work / "a.yaml")), read_uwsgi(str(work / "a.xml"))
    assert [(o.name, o.value, o.where.line) for o in y.options] == [
        ("socket", ":3031", 2), ("socket", ":3032", 2), ("harakiri", "30", 5),
        ("master", "true", 6)]
    assert [(o.name, o.value, o.where.line) for o in x.options] == [
        ("socket", ":3031", 2), ("harakiri", "30", 3), ("master", "", 4)]


def test_uwsgi_from_running_master(work):
    ini = _ini(work)
    app = write_wsgi_app(work)
    argv = [UWSGI_BIN, "--ini", str(ini), "--wsgi-file", str(app), "-t", "7",
            "--logto", str(work / "uwsgi.log"), "--die-on-term"]
    with Proc(argv, work / "uwsgi.out", cwd=work) as proc:
        wait_for_line(work / "uwsgi.log", "spawned uWSGI worker 3 ")
        assert proc.pid in [p.pid for p in uwsgi_masters()]
        cfg = read_uwsgi(pid=proc.pid)
    assert cfg.problems == [] and cfg.files == [str(ini)] and cfg.main == str(ini)
    assert str(cfg.last("harakiri")) == f"harakiri = 7 (command line of pid {proc.pid})"
    assert str(cfg.last("buffer-size")) == f"buffer-size = 8192 ({ini}:8)"
    assert [str(o) for o in cfg.sockets] == [f"socket = {work}/shop.sock ({ini}:9)"]
    # the command line wins: a diff to the ini would change nothing
    plan = plan_uwsgi(cfg, [UwsgiEdit("harakiri", "20")])
    assert plan.changes == () and "set on the command line of pid" in plan.refused[0]


def test_uwsgi_plan_check_apply_restart(work):
    ini = _ini(work)
    cfg = read_uwsgi(str(ini))
    edits = [UwsgiEdit("harakiri", "20"), UwsgiEdit("listen", "128"),
             UwsgiEdit("max-requests", "1000"),
             UwsgiEdit("http-socket", str(work / "shop.sock"), instead_of="socket")]
    plan = plan_uwsgi(cfg, edits)
    assert plan.refused == ()
    assert plan.sentences == (
        f"In {ini}:7 harakiri = 6: set harakiri = 20.",
        f"In {ini}:13 listen = 64 ; not a comment: uWSGI keeps it in the value: set listen = 128.",
        f"max-requests is unset (uWSGI's default: 0): add max-requests = 1000 to [uwsgi] in "
        f"{ini}:15.",
        f"In {ini}:9 socket = {work}/shop.sock: set http-socket = {work}/shop.sock.")
    new = plan.changes[0].new.splitlines()
    assert (new[6], new[8], new[12], new[14], new[15]) == (
        "harakiri = 20", f"http-socket = {work}/shop.sock", "listen = 128",
        "max-requests = 1000", "")
    options = [(e.option, e.value) for e in edits]
    assert check_uwsgi(options, cfg.plugins) is None
    assert check_uwsgi([("listen", "1000000")]) == (
        "uWSGI rejects it: Listen queue size is greater than the system max "
        "net.core.somaxconn (" + Path("/proc/sys/net/core/somaxconn").read_text().strip() + ").")
    assert check_uwsgi([("harakiry", "3")]) == (
        "uWSGI rejects it: [strict-mode] unknown config directive: harakiry")
    refused = apply_plan(plan_uwsgi(cfg, [UwsgiEdit("listen", "1000000")]), work / "backups",
                         before=lambda: check_uwsgi([("listen", "1000000")]))
    assert not refused.ok and ini.read_text() == plan.changes[0].old
    done = apply_plan(plan, work / "backups", before=lambda: check_uwsgi(options, cfg.plugins))
    assert done.ok and ini.read_text() == plan.changes[0].new
    app = write_wsgi_app(work)
    argv = [UWSGI_BIN, "--ini", str(ini), "--wsgi-file", str(app),
            "--logto", str(work / "uwsgi.log")]
    with Proc(argv, work / "uwsgi.out", cwd=work):
        lines = wait_for_line(work / "uwsgi.log", "spawned uWSGI worker 3 ")
    assert "your server socket listen backlog is limited to 128 connections" in lines
    assert any(f"uwsgi socket 0 bound to UNIX address {work}/shop.sock" in ln for ln in lines)


def test_uwsgi_plan_refuses_bad_values(work):
    cfg = read_uwsgi(str(_ini(work)))
    plan = plan_uwsgi(cfg, [UwsgiEdit("harakiri", "6s"), UwsgiEdit("listen", "1\nuid = 0")])
    assert plan.changes == ()
    assert plan.refused == ("harakiri = '6s': uWSGI wants a whole number",
                            "listen = '1\\nuid = 0': not a plain uWSGI option")


# --------------------------------------------------------------------------- gunicorn


def test_gunicorn_conf_read_without_running_it(work):
    conf = work / "gunicorn.conf.py"
    conf.write_text(GUNICORN_CONF + "raise SystemExit('executed!')\n")
    cfg = read_gunicorn(str(conf))
    assert cfg.problems == []
    shown = {n: str(cfg.get(n)) for n in ("bind", "workers", "timeout", "worker_class",
                                          "backlog", "graceful_timeout", "threads")}
    assert shown == {
        "bind": f"bind = \"127.0.0.1:8000\" ({conf}:3)",
        "workers": f"workers = unknown: multiprocessing.cpu_count() * 2 + 1 ({conf}:4)",
        "timeout": f"timeout = 30 ({conf}:5)",
        "worker_class": f"worker_class = \"sync\" ({conf}:6)",
        "backlog": f"backlog = unknown: if False: ({conf}:9)",
        "graceful_timeout": f"graceful_timeout = 2 ({conf}:11)",
        "threads": "threads = 1 (gunicorn's default)"}
    assert cfg.get("workers").value is None and cfg.get("timeout").value == 30
    broken = work / "broken.py"
    broken.write_text("timeout = (\n")
    assert "not valid Python" in read_gunicorn(str(broken)).problems[0].reason


def test_gunicorn_command_line_overrides_file(work):
    conf = work / "gunicorn.conf.py"
    conf.write_text(GUNICORN_CONF)
    argv = ["gunicorn", "-c", str(conf), "-w4", "--timeout", "60", "-b", ":1", "--bind=:2",
            "--preload", "-k", "gthread", "app:application"]
    cfg = read_gunicorn(argv=argv, cwd=str(work))
    assert (cfg.get("workers").value, cfg.get("timeout").value) == (4, 60)
    assert cfg.get("bind").value == [":1", ":2"] and cfg.get("worker_class").value == "gthread"
    assert cfg.get("keepalive").value == 7 and cfg.config_file == str(conf)


def test_gunicorn_from_running_master_and_plan(work):
    conf = work / "gunicorn.conf.py"
    conf.write_text(GUNICORN_CONF)
    server = Gunicorn(work, ["-c", str(conf), "--timeout", "5"])
    with server:
        assert server.proc.pid in [p.pid for p in gunicorn_masters()]
        cfg = read_gunicorn(pid=server.proc.pid)
    label = f"command line of pid {server.proc.pid}"
    assert cfg.problems == [] and cfg.config_file == str(conf)
    assert str(cfg.get("timeout")) == f"timeout = 5 ({label})"
    assert str(cfg.get("bind")) == f"bind = ['127.0.0.1:{server.port}'] ({label})"
    assert str(cfg.get("keepalive")) == f"keepalive = 7 ({conf}:7)"
    plan = plan_gunicorn(cfg, [GunicornEdit("max_requests", 500), GunicornEdit("backlog", 64),
                               GunicornEdit("workers", 3), GunicornEdit("timeout", 40),
                               GunicornEdit("threads", 2)])
    assert plan.refused == (
        f"{conf}:9: backlog is not a plain assignment; set backlog = 64 by hand",
        f"workers is set on the {label}: change it there (workers = 3)",
        f"timeout is set on the {label}: change it there (timeout = 40)")
    new = plan.changes[0].new
    assert "\nmax_requests = 500\n" in new
    assert new.endswith("graceful_timeout: int = 2\nthreads = 2\n")
    assert apply_plan(plan, work / "backups").ok
    again = read_gunicorn(str(conf))
    assert (again.get("max_requests").value, again.get("threads").value) == (500, 2)
    # the real gunicorn starts with the changed file and says what it runs with
    seen = len(read_lines(server.log_path))
    with Gunicorn(work, ["-c", str(conf)]) as changed:
        lines = wait_for_line(changed.log_path, "Booting worker with pid", start=seen)[seen:]
    assert "  max_requests: 500" in lines and "  threads: 2" in lines
