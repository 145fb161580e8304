"""nginx's configuration on a Debian-like host: read it, map real error lines to blocks,
plan diffs that the real ``nginx -t`` judges, apply them.

The mapping is checked against nginx itself: every location passes to its own dead port,
so the ``upstream:`` of the error line nginx writes for a request names the location nginx
chose, and the ``server:`` field the server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gw502d.remediate.hostconf import (
    NginxConfig,
    NginxEdit,
    apply_nginx,
    check_nginx,
    nginxtext,
    normalize_uri,
    plan_nginx,
    read_nginx,
)
from gw502d.remediate.hostconf.nginxread import split_dump
from tests.hostconf_host import Host
from tests.servers.harness import NGINX_BIN, Nginx, Proc, make_workdir, wait_for_line

_ERROR = re.compile(r'server: ([^,]*), request: "\S+ (\S+) [^"]*", upstream: "([^"]+)"')


@pytest.fixture
def host():
    base = make_workdir()
    try:
        yield Host(base).write()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _where(setting) -> tuple[str, int] | None:
    w = setting.where
    return None if w is None else (w.file, w.line)


# --------------------------------------------------------------------------- reading


def test_nginx_T_and_files_read_the_same_tree(host):
    dumped = read_nginx(host.conf)
    files = read_nginx(host.conf, use_dump=False)
    assert dumped.method == "nginx -T" and files.method == "files"
    assert dumped.problems == files.problems == ()
    etc = str(host.etc)
    assert list(files.files) == [f"{etc}/nginx.conf", f"{etc}/mime.types",
                                 f"{etc}/conf.d/upstreams.conf", f"{etc}/sites-enabled/blog",
                                 f"{etc}/sites-enabled/shop", f"{etc}/snippets/uwsgi-timeouts.conf",
                                 f"{etc}/uwsgi_params"]
    assert set(dumped.files) == set(files.files)
    flat = [(s.name, s.args, s.where) for s in files.root.walk()]
    assert flat == [(s.name, s.args, s.where) for s in dumped.root.walk()]


def test_unreadable_is_said_not_raised(host, tmp_path):
    missing = read_nginx(str(tmp_path / "nope.conf"), nginx="no-such-nginx")
    assert missing.statements == ()
    assert [p.reason for p in missing.problems] == [
        "not installed; read the files instead", "No such file or directory"]
    os.unlink(host.etc / "snippets/uwsgi-timeouts.conf")
    cfg = NginxConfig.read(host.conf)
    assert cfg.files.method == "files"  # nginx -T fails on the missing include: said
    assert "uwsgi-timeouts.conf" in cfg.problems[0].reason
    assert cfg.problems[1].path.endswith("snippets/uwsgi-timeouts.conf")
    assert len(cfg.servers) == 2


def test_split_dump_keeps_each_files_lines():
    out = ("# configuration file /a/nginx.conf:\nhttp {\n  include b;\n}\n\n"
           "# configuration file /a/b:\nserver {}")
    assert split_dump(out + "\n") == {"/a/nginx.conf": "http {\n  include b;\n}\n",
                                      "/a/b": "server {}"}


def test_unprivileged_nginx_T_fails_and_files_are_read(host):
    """What a DynamicUser in group adm can do: nginx -T must write its pid file."""
    (host.etc / "run").chmod(0o755)
    res = subprocess.run(["runuser", "-u", "nobody", "--", NGINX_BIN, "-T", "-c", host.conf],
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode != 0 and "Permission denied" in res.stderr
    files = subprocess.run(
        ["runuser", "-u", "nobody", "--", "cat", host.shop, str(host.etc / "nginx.conf")],
        capture_output=True, timeout=30, check=False)
    assert files.returncode == 0


# --------------------------------------------------------------------------- mapping


def test_real_error_lines_map_to_the_block_nginx_chose(host):
    requests = [  # (Host, URI, the port key whose location nginx must choose)
        ("shop.example.net", "/", "root"),
        ("www.shop.example.net", "/api/v1/users?id=3", "api"),
        ("shop.example.net", "/api/v1/users.json", "json"),
        ("shop.example.net", "/static/logo.png", "static"),
        ("shop.example.net", "/img/logo.PNG", "images"),
        ("shop.example.net", "/exact", "exact"),
        ("shop.example.net", "/exact/more", "root"),
        ("shop.example.net", "/api/../static/a", "static"),
        ("unknown.example", "/api/x", "api"),
        ("a.b.blog.example.org", "/post/1", "blog"),
        ("shop.example.net", "/app/missing", "blog"),
    ]
    nginx = Nginx(host.etc / "run", "")
    nginx.conf_path, nginx.log_path = Path(host.conf), host.etc / "log/error.log"
    nginx.render_conf = lambda: Path(host.conf).read_text()  # type: ignore[method-assign]
    with nginx:
        for h, uri, _ in requests:
            req = urllib.request.Request(f"http://127.0.0.1:{host.port}{uri}", headers={"Host": h})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10)
            assert err.value.code == 502
        wait_for_line(nginx.log_path, "/app/missing")
    lines = [m.groups() for m in map(_ERROR.search, nginx.log_path.read_text().splitlines())
             if m]
    cfg = NginxConfig.read(host.conf)
    by_port = {str(port): key for key, port in host.ports.items()}
    seen = []
    for server, uri, upstream in lines:
        match = cfg.find(upstream, server=server, uri=uri)
        assert match.handler is not None, (upstream, server, uri, match.reason)
        port = re.search(r":(\d+)", upstream.split("//", 1)[1]).group(1)
        seen.append((server, uri, by_port[port], match.handler.by))
    assert ("shop.example.net", "/app/missing", "blog", "upstream") in seen
    expected = {(uri, key) for _, uri, key in requests}
    assert {(uri, key) for _, uri, key, _ in seen} >= expected
    assert {by for *_, by in seen if _[1] != "/app/missing"} == {"uri"}
    assert {s for s, *_ in seen} == {"shop.example.net", "*.blog.example.org"}


def test_server_selection_by_host(host):
    cfg = NginxConfig.read(host.conf)
    name = {h: [s.name for s in cfg.select_server(h, host.port)] for h in (
        "shop.example.net", "WWW.Shop.Example.Net.", "x.blog.example.org",
        "blog.example.org:8080", "nothing.example", None)}
    assert name == {"shop.example.net": ["shop.example.net"],
                    "WWW.Shop.Example.Net.": ["shop.example.net"],
                    "x.blog.example.org": ["*.blog.example.org"],
                    "blog.example.org:8080": ["*.blog.example.org"],
                    "nothing.example": ["shop.example.net"],  # default_server
                    None: ["shop.example.net"]}
    assert cfg.select_server("shop.example.net", host.port + 1) == []


def test_location_rules_nested_regex_exact_noregex(host):
    cfg = NginxConfig.read(host.conf)
    shop = cfg.servers_named("shop.example.net")[0]
    chosen = {uri: cfg.select_location(shop, normalize_uri(uri)).text for uri in (
        "/", "/api/x", "/api/x.json", "/api/a%2ejson", "/static/a.png", "/a.JPG", "/exact",
        "/exact/", "//api//x", "/app/x")}
    assert chosen == {"/": "location /", "/api/x": "location /api/",
                      "/api/x.json": "location ~ \\.json$", "/api/a%2ejson": "location ~ \\.json$",
                      "/static/a.png": "location ^~ /static/",
                      "/a.JPG": "location ~* \\.(png|jpg)$",
                      "/exact": "location = /exact", "/exact/": "location /",
                      "//api//x": "location /api/", "/app/x": "location /app/"}


def test_effective_values_with_file_and_line(host):
    cfg = NginxConfig.read(host.conf)
    shop, blog, etc = host.shop, str(host.etc / "sites-enabled/blog"), str(host.etc)
    api = cfg.find(f"uwsgi://127.0.0.1:{host.ports['api']}", server="shop.example.net",
                   uri="/api/v1").handler
    json = cfg.find(f"uwsgi://127.0.0.1:{host.ports['json_backup']}",
                    server="shop.example.net", uri="/api/v1/x.json").handler
    root = cfg.find(f"uwsgi://127.0.0.1:{host.ports['root']}", server="shop.example.net",
                    uri="/").handler
    assert (str(api.pass_.statement), _where(api.pass_.statement)) == (
        f"uwsgi_pass 127.0.0.1:{host.ports['api']}", (shop, 15))
    s = api.setting("uwsgi_read_timeout")
    assert (s.value, s.level, _where(s)) == ("3s", "location", (shop, 16))
    s = json.setting("uwsgi_read_timeout")  # nested: from the enclosing location
    assert (s.value, s.level, _where(s)) == ("3s", "enclosing location", (shop, 16))
    s = root.setting("uwsgi_read_timeout")
    assert (s.value, s.level, _where(s)) == ("20s", "server", (shop, 5))
    s = root.setting("uwsgi_send_timeout")  # from a snippet included in the server
    assert (s.value, s.level, _where(s)) == ("20s", "server",
                                              (f"{etc}/snippets/uwsgi-timeouts.conf", 1))
    s = root.setting("uwsgi_buffer_size")
    page = os.sysconf("SC_PAGESIZE") // 1024
    assert (s.value, s.level, s.where, str(s)) == (
        f"{page}k", "default", None, f"uwsgi_buffer_size {page}k (nginx's default)")
    blog_root = cfg.find(f"http://127.0.0.1:{host.ports['blog']}", server="*.blog.example.org",
                         uri="/").handler
    admin = cfg.select_location(cfg.servers_named("*.blog.example.org")[0], "/admin/x")
    # array directives: a level that sets any instance replaces all inherited ones
    s = blog_root.setting("proxy_set_header")
    assert [(str(x), x.where.line) for x in s.statements] == [("proxy_set_header Host $host", 8)]
    s = cfg.find(f"http://unix:{etc}/run/admin.sock:/admin/x", server="*.blog.example.org",
                 uri="/admin/x").handler.setting("proxy_set_header")
    assert admin.text == "location ~ ^/admin"
    assert [(str(x), _where(x)) for x in s.statements] == [
        ("proxy_set_header X-From-Server 1", (blog, 4))]
    s = cfg.find(f"http://127.0.0.1:{host.ports['blog']}", server="shop.example.net",
                 uri="/app/x").handler.setting("proxy_set_header")
    assert (s.level, _where(s)) == ("http", (f"{etc}/nginx.conf", 17))


def test_routes_and_bounded_labels(host):
    cfg = NginxConfig.read(host.conf)
    routes = {(r.server.name, r.location.text, str(r.pass_.statement)) for r in cfg.routes()}
    assert len(routes) == len(cfg.routes()) == 9
    assert ("shop.example.net", "location @app", "proxy_pass http://blog_app") in routes
    p = host.ports
    assert cfg.upstream_labels() == {
        *(f"uwsgi://127.0.0.1:{p[k]}" for k in
          ("root", "api", "json", "json_backup", "static", "images", "exact")),
        f"http://127.0.0.1:{p['blog']}", f"http://unix:{host.etc}/run/admin.sock"}
    assert cfg.label(f"uwsgi://127.0.0.1:{p['api']}") == f"uwsgi://127.0.0.1:{p['api']}"
    assert cfg.label(f"http://127.0.0.1:{p['blog']}/some/uri") == f"http://127.0.0.1:{p['blog']}"
    assert cfg.label("uwsgi://10.9.9.9:1") == "other"
    assert cfg.label(f"http://127.0.0.1:{p['api']}") == "other"  # right peer, wrong module
    miss = cfg.find("uwsgi://10.9.9.9:1", server="shop.example.net", uri="/")
    assert miss.handler is None and "no location passes to uwsgi://10.9.9.9:1" in miss.reason


# --------------------------------------------------------------------------- diffs


def test_plan_replaces_inserts_and_nginx_accepts_it(host):
    cfg = NginxConfig.read(host.conf)
    api = cfg.find(f"uwsgi://127.0.0.1:{host.ports['api']}", server="shop.example.net",
                   uri="/api/x").handler
    static = cfg.find(f"uwsgi://127.0.0.1:{host.ports['static']}",
                      server="shop.example.net", uri="/static/x").handler
    plan = plan_nginx(cfg, [
        NginxEdit(api.location, "uwsgi_read_timeout", "10s"),
        NginxEdit(api.location, "uwsgi_buffer_size", "16k"),
        NginxEdit(api.location, "uwsgi_buffers", "8 16k"),
        NginxEdit(api.location, "uwsgi_busy_buffers_size", "32k"),
        NginxEdit(static.location, "uwsgi_read_timeout", "9s"),
        NginxEdit(api.server, "client_max_body_size", "10m"),
    ])
    assert plan.refused == ()
    real = str(host.etc / "sites-available/shop")
    assert [c.real for c in plan.changes] == [real]
    assert plan.diff.splitlines()[:2] == [f"--- a{real}", f"+++ b{real}"]
    new = plan.changes[0].new.splitlines()
    assert new[3:5] == ["    server_name shop.example.net www.shop.example.net;",
                        "    client_max_body_size 10m;"]
    assert new[15:21] == [
        f"        uwsgi_pass 127.0.0.1:{host.ports['api']};",
        "        uwsgi_buffer_size 16k;", "        uwsgi_buffers 8 16k;",
        "        uwsgi_busy_buffers_size 32k;",
        "        uwsgi_read_timeout 10s;   # short on purpose", ""]
    assert new[27] == (f"    location ^~ /static/ {{ include uwsgi_params; uwsgi_pass "
                       f"127.0.0.1:{host.ports['static']}; uwsgi_read_timeout 9s; }}")
    assert plan.sentences[0] == (f"In {host.shop}:16 (location /api/, uwsgi_pass 127.0.0.1:"
                                 f"{host.ports['api']}) uwsgi_read_timeout is 3s: set "
                                 "uwsgi_read_timeout 10s;")
    assert "inherited from server" in plan.sentences[4]
    assert check_nginx(cfg.files, plan) is None
    # the diff applies with patch(1) as documented
    target = make_workdir()
    try:
        shutil.copytree(host.base, target, symlinks=True, dirs_exist_ok=True)
        diff = plan.diff.replace(str(host.base), str(target))
        res = subprocess.run(["patch", "-p1", "-d", "/"], input=diff, text=True,
                             capture_output=True, timeout=30, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        assert (target / "etc/nginx/sites-available/shop").read_text() == plan.changes[0].new
    finally:
        shutil.rmtree(target)


def test_nginx_rejects_a_broken_edit_with_its_reason(host):
    cfg = NginxConfig.read(host.conf)
    api = cfg.find(f"uwsgi://127.0.0.1:{host.ports['api']}", server="shop.example.net",
                   uri="/api/x").handler
    alone = plan_nginx(cfg, [NginxEdit(api.location, "uwsgi_buffer_size", "16k")])
    reason = check_nginx(cfg.files, alone)
    assert reason is not None and reason.startswith("nginx -t rejects the change: [emerg] ")
    assert '"uwsgi_busy_buffers_size" must be less than' in reason
    unknown = plan_nginx(cfg, [NginxEdit(api.location, "uwsgi_read_timeuot", "10s")])
    assert check_nginx(cfg.files, unknown) == (
        f'nginx -t rejects the change: [emerg] unknown directive "uwsgi_read_timeuot" in '
        f"{host.shop}:16")
    bad = plan_nginx(cfg, [NginxEdit(api.location, "uwsgi_read_timeout", "1s; include /x")])
    assert bad.changes == () and "not a plain directive" in bad.refused[0]


def test_snippet_shared_by_blocks_is_said(host):
    shop = Path(host.shop)
    shop.write_text(shop.read_text().replace(
        "uwsgi_pass 127.0.0.1:", "include snippets/uwsgi-timeouts.conf;\n"
        "        uwsgi_pass 127.0.0.1:", 1))
    cfg = NginxConfig.read(host.conf)
    root = cfg.find(f"uwsgi://127.0.0.1:{host.ports['root']}", server="shop.example.net",
                    uri="/").handler
    plan = plan_nginx(cfg, [NginxEdit(root.location, "uwsgi_send_timeout", "25s")])
    assert plan.changes[0].path == str(host.etc / "snippets/uwsgi-timeouts.conf")
    assert "is included 2 times" in plan.sentences[0]
    assert check_nginx(cfg.files, plan) is None


def test_apply_writes_atomically_keeps_links_and_backups(host):
    cfg = NginxConfig.read(host.conf)
    api = cfg.find(f"uwsgi://127.0.0.1:{host.ports['api']}", server="shop.example.net",
                   uri="/api/x").handler
    backups = host.base / "backups"
    plan = plan_nginx(cfg, [NginxEdit(api.location, "uwsgi_read_timeout", "10s")])
    real = host.etc / "sites-available/shop"
    before = real.read_text()
    done = apply_nginx(cfg.files, plan, backups)
    assert done.ok, done.reason
    assert os.path.islink(host.shop) and real.read_text() == plan.changes[0].new
    assert Path(done.backups[0]).read_text() == before
    assert str(backups) in done.backups[0]
    assert not [p for p in real.parent.iterdir() if p.name.startswith(".")]
    again = NginxConfig.read(host.conf).find(
        f"uwsgi://127.0.0.1:{host.ports['api']}", server="shop.example.net", uri="/api/x")
    assert again.handler.setting("uwsgi_read_timeout").value == "10s"
    # the plan is stale now: applying it again touches nothing
    stale = apply_nginx(cfg.files, plan, backups)
    assert not stale.ok and "changed since the plan was made" in stale.reason


def test_apply_touches_nothing_when_nginx_rejects(host):
    cfg = NginxConfig.read(host.conf)
    api = cfg.find(f"uwsgi://127.0.0.1:{host.ports['api']}", server="shop.example.net",
                   uri="/api/x").handler
    plan = plan_nginx(cfg, [NginxEdit(api.location, "uwsgi_buffer_size", "16k")])
    real = host.etc / "sites-available/shop"
    before = (real.read_bytes(), real.stat().st_mtime_ns)
    done = apply_nginx(cfg.files, plan, host.base / "backups")
    assert not done.ok and "uwsgi_busy_buffers_size" in done.reason
    assert (real.read_bytes(), real.stat().st_mtime_ns) == before
    assert not (host.base / "backups").exists()


def test_applied_change_reaches_running_nginx(host):
    """The closed loop in small: apply a new read timeout, reload, nginx uses it."""
    cfg = NginxConfig.read(host.conf)
    root = cfg.find(f"uwsgi://127.0.0.1:{host.ports['root']}", server="shop.example.net",
                    uri="/").handler
    proc = Proc([NGINX_BIN, "-c", host.conf, "-g", "daemon off;"], host.base / "nginx.out")
    with proc:
        wait_for_line(host.etc / "log/error.log", "start worker process")
        plan = plan_nginx(cfg, [NginxEdit(root.location, "uwsgi_pass",
                                          f"127.0.0.1:{host.ports['exact']}")])
        assert apply_nginx(cfg.files, plan, host.base / "backups").ok
        proc.send_signal(1)
        # the old worker answers until it has gone
        wait_for_line(host.etc / "log/error.log", re.compile(r"worker process \d+ exited"))
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{host.port}/", headers={"Host": "shop.example.net"}),
                timeout=10)
        lines = wait_for_line(host.etc / "log/error.log", f":{host.ports['exact']}\"")
    assert any('request: "GET / HTTP/1.1"' in ln and f":{host.ports['exact']}" in ln
               for ln in lines)


def test_statement_spans_follow_nginx_tokens():
    text = ('location ~ "^/a;b{" { # a { comment\n'
            '    set $x "${host}}"; proxy_pass http://u$x; }\n'
            "log_format f '$a \\' ;'\n  'more';\n")
    top = nginxtext.spans(text)
    assert [(s.name, s.args, s.line) for s in top] == [
        ("location", ("~", "^/a;b{"), 1), ("log_format", ("f", "$a \\' ;", "more"), 3)]
    assert [(s.name, s.args) for s in top[0].children] == [
        ("set", ("$x", "${host}}")), ("proxy_pass", ("http://u$x",))]
    assert text[top[0].children[1].start:top[0].children[1].end] == "proxy_pass http://u$x;"
    assert text[top[1].start:top[1].end] == "log_format f '$a \\' ;'\n  'more';"
