"""Helpers that run real nginx / uWSGI / gunicorn / Flask-dev servers on 127.0.0.1.

Why: the classifier must be tested against lines those servers really write, not against
lines we imagine. Every process started here gets its own log files in a tmp dir, is
remembered by PID and stopped by PID (SIGTERM/SIGINT, then SIGKILL) -- never by name.
Everything binds 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.servers.versions import GUNICORN_CURRENT, UWSGI_DEBIAN, WERKZEUG_CURRENT, Version

HOST = "127.0.0.1"
NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"
UWSGI_BIN = shutil.which("uwsgi") or "/usr/bin/uwsgi"
#: nginx workers need an unprivileged user when the master runs as root (Debian has www-data).
DEFAULT_NGINX_USER: str | None = "www-data" if os.geteuid() == 0 else None
#: A request that uWSGI's --harakiri 1 surely kills: the master looks every 3 s against a
#: deadline in whole seconds, so the kill comes 1-4 s in (a 3 s request escaped it in CI).
HARAKIRI_SLEEP = "/sleep?s=6"
#: How long the kill and the respawn after it may take from the request's start.
HARAKIRI_WAIT = 8.0

Matcher = str | bytes | re.Pattern[str] | Callable[[str], bool]


# --------------------------------------------------------------------------- ports, waiting


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    return free_ports(1)[0]


_GIVEN: set[int] = set()  # every port handed out in this process


def free_ports(n: int) -> list[int]:
    """*n* distinct such ports, none handed out before in this process: the kernel may
    hand out a port it just gave again, and a port picked for a server that starts later
    (or for a dead upstream that never listens) is not bound yet when the next one is
    picked. All are held while picked, so a refused one is not offered again."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        while len(ports) < n:
            s = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((HOST, 0))
            port = s.getsockname()[1]
            if port not in _GIVEN:
                ports.append(port)
        _GIVEN.update(ports)
        return ports


def wait_port(port: int, timeout: float = 10.0, host: str = HOST) -> None:
    """Block until something accepts TCP connections on host:port (a server finished binding)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def wait_path(path: Path, timeout: float = 10.0) -> None:
    """Block until a file (e.g. a unix socket a server creates) exists."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear after {timeout}s")
        time.sleep(0.05)


def _matches(line: str, match: Matcher) -> bool:
    if isinstance(match, bytes):
        return match.decode("utf-8", "replace") in line
    if isinstance(match, str):
        return match in line
    if isinstance(match, re.Pattern):
        return match.search(line) is not None
    return bool(match(line))


def read_lines(path: Path) -> list[str]:
    """The file's lines as text (undecodable bytes replaced); [] if it does not exist yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()


def after_match(lines: list[str], match: Matcher, start: int = 0) -> int:
    """The index after the first of *lines* (from *start*) that *match* matches: where to
    look for what follows it. Not ``len(lines)``: the read that found it may already hold
    the lines written after it (a respawned worker's boot line)."""
    return next(i for i in range(start, len(lines)) if _matches(lines[i], match)) + 1


def wait_for_line(
    path: Path, match: Matcher, timeout: float = 10.0, *, start: int = 0
) -> list[str]:
    """Poll a log file until a line (at index >= start) matches; return all the file's lines.

    `match` is a substring (str/bytes), a compiled regex, or a predicate on the decoded line.
    Raises TimeoutError quoting the file's tail so a failing scenario explains itself.
    """
    deadline = time.monotonic() + timeout
    while True:
        lines = read_lines(path)
        if any(_matches(line, match) for line in lines[start:]):
            return lines
        if time.monotonic() > deadline:
            tail = "\n".join(lines[-30:])
            raise TimeoutError(f"no line matching {match!r} in {path} after {timeout}s:\n{tail}")
        time.sleep(0.05)


def make_workdir(base: Path | None = None, prefix: str = "gw502d-") -> Path:
    """Create a fresh dir (mode 0755) under `base` that nginx workers can traverse.

    pytest's tmp_path lives under a 0700 dir: a www-data worker would then fail on a unix
    socket with EACCES for the wrong reason. So when `base` is not traversable by
    DEFAULT_NGINX_USER, the dir is made in the system tmp dir instead.
    """
    if base is not None and DEFAULT_NGINX_USER and not user_can_traverse(base, DEFAULT_NGINX_USER):
        base = None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------- processes


class _StartStop:
    """Context-manager plumbing: ``with X(...) as x`` starts it and always stops it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> int | None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Proc(_StartStop):
    """One child process with stdout+stderr in a log file, stopped by its PID only.

    The child leads its own session, so after the leader dies we can also reap leftover
    children of *that* group (e.g. orphaned uWSGI workers) without touching anything else.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(os.environ if env is None else env)
        self.stop_signal = stop_signal
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError("process not started")
        return self.popen.pid

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
        return self

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """Send stop_signal to the PID, SIGKILL it after `timeout`, then reap its group."""
        if self.popen is None:
            return None
        pid = self.popen.pid
        if self.popen.poll() is None:
            try:
                os.kill(pid, self.stop_signal)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self.popen.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        # Leftovers of the group this process leads (pgid == its pid), e.g. orphaned workers.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        return self.popen.returncode


class Server(_StartStop):
    """Common start/stop plumbing for the concrete servers below."""

    log_path: Path
    proc: Proc | None = None

    def stop(self, timeout: float = 5.0) -> int | None:
        return None if self.proc is None else self.proc.stop(timeout)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("server not started")
        return self.proc.pid

    def log_bytes(self) -> bytes:
        try:
            return self.log_path.read_bytes()
        except FileNotFoundError:
            return b""

    def wait_for_line(self, match: Matcher, timeout: float = 10.0, *, start: int = 0) -> list[str]:
        return wait_for_line(self.log_path, match, timeout, start=start)


# --------------------------------------------------------------------------- apps

#: Stdlib-only WSGI app shared by uWSGI (Debian's /usr/bin/python3) and gunicorn (pyenv).
WSGI_APP = '''\
"""Test app: each route provokes one backend behaviour."""
import os
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    qs = parse_qs(environ.get("QUERY_STRING", ""))

    def arg(name, default):
        return qs.get(name, [default])[0]

    if path == "/big-header":
        n = int(arg("n", "8192"))
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Big", "a" * n)])
        return [b"big header\\n"]
    if path == "/sleep":
        time.sleep(float(arg("s", "1")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept\\n"]
    if path == "/stream":
        n, size = int(arg("n", "400")), int(arg("size", "65536"))
        delay = float(arg("delay", "0.01"))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def body():
            chunk = b"x" * size
            for _ in range(n):
                yield chunk
                time.sleep(delay)

        return body()
    if path == "/crash":
        os.kill(os.getpid(), int(arg("sig", "9")))
        time.sleep(5)
    if path == "/eat":
        # memory held for a while: a worker past uWSGI's (evil-)reload-on-rss limit
        held = bytearray(int(arg("mb", "200")) * 1024 * 1024)
        time.sleep(float(arg("s", "2")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ate %d bytes\\n" % len(held)]
    if path == "/body":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(length)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [("read %d bytes\\n" % len(data)).encode()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]
'''

#: Flask app run by the Werkzeug development server (what `flask run` / app.run() use).
FLASK_APP = '''\
"""Flask dev-server test app."""
import sys
import time

from flask import Flask, Response, request

app = Flask(__name__)


@app.route("/ok")
def ok():
    return "ok\\n"


@app.route("/sleep")
def sleep():
    time.sleep(float(request.args.get("s", "1")))
    return "slept\\n"


@app.route("/stream")
def stream():
    n = int(request.args.get("n", "400"))
    size = int(request.args.get("size", "65536"))
    delay = float(request.args.get("delay", "0.01"))

    def body():
        chunk = b"x" * size
        for _ in range(n):
            yield chunk
            time.sleep(delay)

    return Response(body(), mimetype="application/octet-stream")


@app.route("/boom")
def boom():
    raise RuntimeError("boom")


@app.route("/body", methods=["POST"])
def body():
    data = request.get_data()
    return "read %d bytes\\n" % len(data)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
'''


def write_wsgi_app(tmpdir: Path, text: str | None = None) -> Path:
    path = tmpdir / "wsgi_app.py"
    path.write_text(WSGI_APP if text is None else text)
    path.chmod(0o644)
    return path


# --------------------------------------------------------------------------- nginx


class Nginx(Server):
    """nginx in the foreground with a one-location config, its logs and temp dirs in tmpdir."""

    def __init__(
        self,
        tmpdir: Path,
        location_block: str,
        user: str | None = DEFAULT_NGINX_USER,
        *,
        http_block: str = "",
        port: int | None = None,
    ) -> None:
        self.tmpdir = tmpdir
        self.location_block = location_block
        self.user = user
        self.http_block = http_block
        self.port = port or free_port()
        self.conf_path = tmpdir / "nginx.conf"
        self.log_path = tmpdir / "error.log"
        self.access_log = tmpdir / "access.log"
        #: combined + upstream fields, for checking 499/502/504 against $upstream_addr.
        self.upstream_access_log = tmpdir / "access_upstream.log"
        self.stderr_path = tmpdir / "nginx.stderr"
        self.write_conf()

    def render_conf(self) -> str:
        t = self.tmpdir
        user_line = f"user {self.user};\n" if self.user else ""
        return f"""{user_line}master_process on;
worker_processes 1;
error_log {t}/error.log info;
pid {t}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    log_format upstreaminfo '$remote_addr - $remote_user [$time_local] "$request" '
        '$status $body_bytes_sent "$http_referer" "$http_user_agent" '
        'upstream_addr=$upstream_addr upstream_status=$upstream_status '
        'request_time=$request_time upstream_response_time=$upstream_response_time';
    access_log {t}/access.log combined;
    access_log {t}/access_upstream.log upstreaminfo;
    client_body_temp_path {t}/client_body_temp;
    proxy_temp_path {t}/proxy_temp;
    fastcgi_temp_path {t}/fastcgi_temp;
    uwsgi_temp_path {t}/uwsgi_temp;
    scgi_temp_path {t}/scgi_temp;
{self.http_block}
    server {{
        listen {HOST}:{self.port};
        location / {{
{self.location_block}
        }}
    }}
}}
"""

    def write_conf(self) -> None:
        self.conf_path.write_text(self.render_conf())

    def _argv(self, *extra: str) -> list[str]:
        # in the foreground whatever the config says (a host's nginx.conf has no "daemon
        # off"): a master that forks away outlives the test that started it
        return [NGINX_BIN, "-p", f"{self.tmpdir}/", "-c", str(self.conf_path),
                "-g", "daemon off;", *extra]

    def check(self) -> tuple[bool, str]:
        """`nginx -t`: (syntax ok?, its stderr)."""
        self.write_conf()
        res = subprocess.run(
            self._argv("-t"), check=False, capture_output=True, text=True, timeout=30
        )
        return res.returncode == 0, res.stderr

    def start(self, timeout: float = 10.0, ready: bool = True) -> Self:
        """Start; wait for its worker unless `ready` is False (a start that must fail)."""
        ok, err = self.check()
        if not ok:
            raise RuntimeError(f"nginx -t failed:\n{err}")
        seen = len(read_lines(self.log_path))
        self.proc = Proc(self._argv(), self.stderr_path, cwd=self.tmpdir).start()
        if not ready:
            return self
        # Wait on the log, not with a probe connection: a probe adds a "client closed
        # connection while waiting for request" line to the very log we capture.
        try:
            wait_for_line(self.log_path, "start worker process ", timeout, start=seen)
        except TimeoutError:
            self.stop()
            raise TimeoutError(self.stderr_path.read_text(errors="replace")) from None
        return self

    def reload(self, timeout: float = 10.0) -> None:
        """Rewrite the config and SIGHUP the master; wait until it says it reconfigured."""
        self.write_conf()
        seen = len(read_lines(self.log_path))
        if self.proc is None:
            raise RuntimeError("nginx not started")
        self.proc.send_signal(signal.SIGHUP)
        wait_for_line(self.log_path, "reconfiguring", timeout, start=seen)

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"


# --------------------------------------------------------------------------- uWSGI


def _options_argv(options: Mapping[str, object] | Sequence[str]) -> list[str]:
    if isinstance(options, Mapping):
        argv: list[str] = []
        for key, value in options.items():
            if value is None or value is False:
                continue
            # "--key=value": some uWSGI options take an *optional* argument (chmod-socket)
            # and would read a separate "666" as a config file to load.
            argv.append(f"--{key}" if value is True else f"--{key}={value}")
        return argv
    return [str(o) for o in options]


class Uwsgi(Server):
    """uWSGI serving WSGI_APP, logging to <tmp>/uwsgi.log: Debian's (python3 plugin) or
    another `version` (a pip build, python built in).

    `socket` is "127.0.0.1:PORT" (default: a free port) or a unix socket path;
    `protocol="http"` uses --http-socket instead of the binary uwsgi --socket,
    `protocol="router"` the http router (--http) in front of a uwsgi --socket.
    `app` replaces WSGI_APP's text (an app that fails to load, ...).
    """

    def __init__(
        self,
        tmpdir: Path,
        options: Mapping[str, object] | Sequence[str] = (),
        *,
        socket: str | None = None,
        protocol: str = "uwsgi",
        processes: int = 1,
        version: Version = UWSGI_DEBIAN,
        app: str | None = None,
    ) -> None:
        self.tmpdir = tmpdir
        self.version = version
        version.ensure()
        self.options = options
        self.port: int | None = None
        if socket is None:
            self.port = free_port()
            socket = f"{HOST}:{self.port}"
        elif not socket.startswith("/"):
            self.port = int(socket.rsplit(":", 1)[1])
        self.socket = socket
        self.protocol = protocol
        self.processes = processes
        self.log_path = tmpdir / "uwsgi.log"
        self.stdout_path = tmpdir / "uwsgi.stdout"
        self.app_path = write_wsgi_app(tmpdir, app)
        #: with protocol="router", the workers' own uwsgi socket behind the router
        self.worker_socket = f"{HOST}:{free_port()}"

    def argv(self) -> list[str]:
        if self.protocol == "router":
            sockets = ["--http", self.socket, "--socket", self.worker_socket]
        else:
            sockets = ["--http-socket" if self.protocol == "http" else "--socket", self.socket]
        # Debian's uWSGI loads its python (and http router) plugins; a pip build has them
        plugins = "python3,http" if self.protocol == "router" else "python3"
        binary = ([UWSGI_BIN, "--plugin", plugins] if self.version.venv is None
                  else [self.version.bin("uwsgi")])
        return [
            *binary,
            "--master",
            "--die-on-term",
            "--logto", str(self.log_path),
            "--processes", str(self.processes),
            "--pythonpath", str(self.tmpdir),
            "--wsgi-file", str(self.app_path),
            *sockets,
            *_options_argv(self.options),
        ]  # fmt: skip

    def start(
        self, timeout: float = 15.0, ready: Matcher | None = "spawned uWSGI worker 1 "
    ) -> Self:
        """Start; wait for the `ready` line (None: do not wait, e.g. for a failing start)."""
        self.proc = Proc(
            self.argv(), self.stdout_path, cwd=self.tmpdir, stop_signal=signal.SIGINT
        ).start()
        if ready is None:
            return self
        try:
            # The socket is bound before the master spawns workers; no probe connection.
            self.wait_for_line(ready, timeout)
            if self.port is None:
                wait_path(Path(self.socket), timeout)
        except TimeoutError:
            out = self.stdout_path.read_text(errors="replace")
            self.stop()
            raise TimeoutError(f"uWSGI did not start; stdout:\n{out}") from None
        return self

    def worker_pids(self) -> list[int]:
        """PIDs from 'spawned uWSGI worker N (pid: P, ...)' / 'Respawned ... (new pid: P)'."""
        text = "\n".join(read_lines(self.log_path))
        return [int(p) for p in re.findall(r"(?:\(pid|new pid): (\d+)", text)]


# --------------------------------------------------------------------------- gunicorn


@functools.cache
def _gunicorn_no_control_socket(python: str) -> tuple[str, ...]:
    """gunicorn >= 25 opens a control socket in ~/.gunicorn by default; keep out of $HOME."""
    res = subprocess.run(
        [python, "-m", "gunicorn", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return ("--no-control-socket",) if "--no-control-socket" in res.stdout else ()


class Gunicorn(Server):
    """`python -m gunicorn` (sync worker) of `version` serving WSGI_APP (or `app`) with a
    debug error log."""

    def __init__(self, tmpdir: Path, args: Sequence[str] = (), *, workers: int = 1,
                 version: Version = GUNICORN_CURRENT, app: str | None = None,
                 port: int | None = None) -> None:
        self.tmpdir = tmpdir
        self.version = version
        version.ensure()
        self.args = list(args)
        self.workers = workers
        self.port = port or free_port()
        self.log_path = tmpdir / "gunicorn.log"
        self.access_log = tmpdir / "gunicorn_access.log"
        self.stdout_path = tmpdir / "gunicorn.stdout"
        write_wsgi_app(tmpdir, app)

    def argv(self) -> list[str]:
        python = self.version.interpreter()
        return [
            python, "-m", "gunicorn",
            "--error-logfile", str(self.log_path),
            "--access-logfile", str(self.access_log),
            "--log-level", "debug",
            "--bind", f"{HOST}:{self.port}",
            "--workers", str(self.workers),
            "--worker-class", "sync",
            "--graceful-timeout", "2",
            "--chdir", str(self.tmpdir),
            *_gunicorn_no_control_socket(python),
            *self.args,
            "wsgi_app:application",
        ]  # fmt: skip

    def start(self, timeout: float = 15.0, ready: bool = True) -> Self:
        # SIGINT = quick shutdown (SIGTERM waits for graceful-timeout).
        seen = len(read_lines(self.log_path))
        self.proc = Proc(self.argv(), self.stdout_path, cwd=self.tmpdir, stop_signal=signal.SIGINT)
        self.proc.start()
        if not ready:
            return self
        try:
            self.wait_for_line("Booting worker with pid", timeout, start=seen)
            # Ready means the master has spawned them all and said so ("N workers"). Until
            # then it is writing its own log: gunicorn <= 23 logs a dead worker from its
            # SIGCHLD handler, and a handler that writes while the master is mid-write loses
            # its line (a reentrant BufferedWriter call), so a worker killed that early
            # left no "was sent SIGKILL" (CI, gunicorn 23.0.0).
            self.wait_for_line(re.compile(rf"\] {self.workers} workers$"), timeout, start=seen)
        except TimeoutError:
            out = self.stdout_path.read_text(errors="replace")
            self.stop()
            raise TimeoutError(f"gunicorn did not start; stdout:\n{out}") from None
        return self

    def worker_pids(self) -> list[int]:
        text = "\n".join(read_lines(self.log_path))
        return [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", text)]


# --------------------------------------------------------------------------- Flask dev server


class FlaskDev(Server):
    """Flask's app.run() (the Werkzeug development server); stdout+stderr in flask.log."""

    def __init__(self, tmpdir: Path, *, ansi: bool = False,
                 version: Version = WERKZEUG_CURRENT, port: int | None = None) -> None:
        """ansi=True hides colorama from the app, as on hosts without it.

        Werkzeug styles non-200 request lines with ANSI escapes; when colorama is importable
        it wraps stderr in AnsiToWin32, which strips them whenever stderr is not a tty. So
        whether a log *file* holds escapes depends on colorama being installed.
        """
        self.tmpdir = tmpdir
        self.ansi = ansi
        self.version = version
        version.ensure()
        self.port = port or free_port()
        self.log_path = tmpdir / "flask.log"
        self.app_path = tmpdir / "flask_app.py"
        self.app_path.write_text(FLASK_APP)

    def start(self, timeout: float = 15.0, ready: bool = True) -> Self:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("FLASK_DEBUG", None)
        if self.ansi:
            shim = self.tmpdir / "no_colorama"
            shim.mkdir(exist_ok=True)
            (shim / "colorama.py").write_text('raise ImportError("hidden by the test harness")\n')
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))
        argv = [self.version.interpreter(), str(self.app_path), str(self.port)]
        self.proc = Proc(argv, self.log_path, cwd=self.tmpdir, env=env).start()
        if not ready:
            return self
        try:
            wait_port(self.port, timeout)
            self.wait_for_line("Press CTRL+C to quit", timeout)
        except TimeoutError:
            self.stop()
            raise
        return self


def user_can_traverse(path: Path, user: str) -> bool:
    """Whether `user` could reach `path` through its parent dirs (o+x / owner x on each)."""
    pw = pwd.getpwnam(user)
    for parent in [*reversed(path.resolve().parents)]:
        st = parent.stat()
        if st.st_uid == pw.pw_uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid == pw.pw_gid:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            return False
    return True
