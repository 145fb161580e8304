"""``gw502d fix``'s gates: nothing is touched without ``--apply``, a change the real nginx
or the planner refuses is not printed (its reason is), a half-written apply is undone,
and every exit status.

The host is :mod:`tests.fix_host`'s tree (not started: ``nginx -t`` and uWSGI judge the
diff on copies); the log lines are nginx's and uWSGI's own (``real:`` catalog examples)
with the upstream and request of this host. The closed loop with running servers is
``tests/test_fix_loop.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gw502d.cli import main
from gw502d.remediate.configured import HostConfig
from gw502d.remediate.fixplan import apply_fix, plan_fix
from gw502d.remediate.host import ConfigPaths
from gw502d.scan import fixcmd
from gw502d.scan.fix import advise_found, scan_for_fix
from tests.daemon import append, config_text
from tests.fix_host import FixHost, fix_host
from tests.test_upstreams import CATALOG, line


@pytest.fixture
def host() -> Iterator[FixHost]:
    with fix_host() as h:
        yield h


def nginx_line(incident: str, host: FixHost, path: str = "/api/big-header?n=8192") -> str:
    text = line(incident, f"uwsgi://unix:{host.socket}:").decode()
    return re.sub(r'server: [^,]*, request: "GET \S+',
                  f'server: shop.test, request: "GET {path}', text)


def write_log(host: FixHost, *lines: str) -> Path:
    log = host.base / "log/error.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    append(log, list(lines))
    return log


def fix(host: FixHost, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*host.fix_args(), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def snapshot(host: FixHost) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (host.base / "etc").rglob("*")
            if p.is_file() and not p.is_symlink()}


def test_without_apply_nothing_is_touched(host: FixHost,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    host.write()
    log = write_log(host, nginx_line("upstream_header_too_big", host))
    before = snapshot(host)
    code, out, err = fix(host, capsys, str(log))
    assert code == fixcmd.EXIT_FIXED, err
    assert out.startswith(f"--- a{host.base}/etc/nginx/sites-available/shop\n")
    assert "+        uwsgi_buffer_size 16k;" in out and "Set uwsgi_buffer_size 16k." in err
    assert "nothing written: --apply writes it" in err
    assert snapshot(host) == before and not (host.base / "backups").exists()
    code, _, err = fix(host, capsys, "--apply", str(log))
    assert code == fixcmd.EXIT_FIXED, err
    changed = [p for p, data in snapshot(host).items() if before[p] != data]
    assert changed == [host.base / "etc/nginx/sites-available/shop"]
    assert (host.base / "etc/nginx/sites-enabled/shop").is_symlink()
    assert [p.read_bytes() for p in (host.base / "backups").rglob("shop") if p.is_file()] == \
        [before[host.base / "etc/nginx/sites-available/shop"]]


def test_a_change_nginx_rejects_is_not_printed(host: FixHost,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A bigger header buffer breaks an explicit uwsgi_max_temp_file_size below it: gw502d
    does not plan that one, nginx -t on the copy says no, and the reason is printed."""
    host.api = (f"include uwsgi_params;\n        uwsgi_pass unix:{host.socket};\n"
                "        uwsgi_max_temp_file_size 8k;")
    host.write()
    before = snapshot(host)
    code, out, err = fix(host, capsys, "--apply",
                         str(write_log(host, nginx_line("upstream_header_too_big", host))))
    assert code == fixcmd.EXIT_REFUSED
    assert out == ""
    assert "not changed: " in err and "nginx -t rejects the change: [emerg] " in err
    assert '"uwsgi_max_temp_file_size" must be equal to zero' in err
    assert snapshot(host) == before


def test_an_edit_the_planner_refuses_stops_the_whole_fix(
        host: FixHost, capsys: pytest.CaptureFixture[str]) -> None:
    """harakiri set on uWSGI's command line cannot be changed in a file: the read timeout
    that belongs with it is not proposed alone."""
    host.uwsgi = {"harakiri": "1"}
    host.write()
    ini = host.base / "etc/uwsgi/apps-available/shop.ini"
    yaml_ini = host.base / "etc/uwsgi/shop.yaml"
    options = [ln.split(" = ", 1) for ln in ini.read_text().splitlines() if " = " in ln]
    yaml_ini.write_text("uwsgi:\n" + "".join(f"  {k}: {v}\n" for k, v in options))
    harakiri = next(ex.line for i in CATALOG.incidents if i.key == ("worker_harakiri", "uwsgi")
                    for ex in i.examples if ex.origin.startswith("real: uWSGI 2.0.21"))
    log = write_log(host, nginx_line("upstream_premature_close", host, "/api/sleep?s=3"),
                    harakiri)
    capsys.readouterr()
    code = main(["fix", "--nginx-conf", str(host.nginx_conf), "--uwsgi-config", str(yaml_ini),
                 str(log)])
    out = capsys.readouterr()
    assert code == fixcmd.EXIT_REFUSED, out.err
    assert out.out == ""
    assert f"not changed: harakiri = 1 ({yaml_ini}:" in out.err
    assert "only ini files are edited; set harakiri = 30 by hand" in out.err


def test_exit_statuses_for_nothing_and_unreadable_input(
        host: FixHost, capsys: pytest.CaptureFixture[str]) -> None:
    host.write()
    quiet = write_log(host, "uwsgi_response_write_body_do(): Broken pipe [core/writer.c line "
                            "429] during GET /x (127.0.0.1)")
    code, out, err = fix(host, capsys, str(quiet))
    assert (code, out) == (fixcmd.EXIT_NOTHING, "")
    assert "client_disconnect (uwsgi): 1 line(s)" in err
    assert "nothing here that a change of the configuration read fixes" in err
    code, out, err = fix(host, capsys, str(quiet), str(host.base / "missing.log"))
    assert (code, out) == (fixcmd.EXIT_INPUT, "")
    assert "missing.log" in err and "nothing is proposed" in err
    assert main(["fix"]) == fixcmd.EXIT_INPUT


def test_an_apply_that_fails_half_way_is_undone(host: FixHost) -> None:
    """nginx's file is written first; uWSGI's changed since the plan: nginx's is put back."""
    host.server_extra = "uwsgi_read_timeout 1s;"
    host.write()
    log = write_log(host, nginx_line("upstream_timeout", host, "/api/sleep?s=2"))
    result, routes = scan_for_fix(CATALOG, [str(log)], 5.0)
    conf = HostConfig.read(ConfigPaths(str(host.nginx_conf), uwsgi=(str(host.shop_ini),)))
    planned = plan_fix(c for f in advise_found(CATALOG, result, routes, conf)
                       for c in f.advice.changes)
    assert planned.problems == [] and [s.server for s in planned.steps] == ["uwsgi", "nginx"]
    planned.steps.reverse()  # nginx first, so that its write has to be undone
    before = snapshot(host)
    ini = host.base / "etc/uwsgi/apps-available/shop.ini"
    ini.write_text(ini.read_text() + "processes = 2\n")
    edited = snapshot(host)
    applied = apply_fix(planned, host.base / "backups")
    assert not applied.ok and "changed since the plan was made; nothing changed" in \
        applied.reason
    assert snapshot(host) == edited != before


def test_fix_from_a_running_daemon(host: FixHost, capsys: pytest.CaptureFixture[str],
                                   daemon_factory: Any) -> None:
    """The same diff from the daemon's /incidents as from the log it follows."""
    host.write()
    log = write_log(host, nginx_line("upstream_header_too_big", host),
                    nginx_line("upstream_socket_permission", host, "/api/ok"))
    d = daemon_factory(config_text({"nginx": log}, start_at="beginning"))
    d.start()
    d.wait_for(lambda: '"upstream_socket_permission"' in d.get("/incidents")[1],
               "the incidents")
    code, from_daemon, err = fix(host, capsys, "--from", f"{d.url}/incidents?limit=1")
    assert code == fixcmd.EXIT_FIXED, err
    code, from_log, _ = fix(host, capsys, str(log))
    assert code == fixcmd.EXIT_FIXED and from_daemon == from_log
    assert "chmod-socket = 660" in from_log and "uwsgi_buffer_size 16k;" in from_log
    code, out, err = fix(host, capsys, "--from", "http://127.0.0.1:1/incidents")
    assert (code, out) == (fixcmd.EXIT_INPUT, "") and "cannot read incidents" in err
    assert d.stop() == 0
