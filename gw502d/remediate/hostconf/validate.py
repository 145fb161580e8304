"""Check a planned change with the real servers before anyone applies it.

nginx: the whole config directory (the one holding nginx.conf) is copied to a private
temporary directory at the same path below it (``/tmp/x/etc/nginx``), with every file
nginx reads from elsewhere copied the same way; the plan is written into the copy and
``nginx -t -c <copy>/nginx.conf`` judges it. No root and no mount namespace is needed:

- a relative ``include`` already resolves in the copy (nginx joins it to the directory of
  the nginx.conf it was given);
- an absolute ``include`` is rewritten in the copied files to point into the copy (the
  line count does not change, so nginx's "in FILE:LINE" still names the real line once
  the temporary prefix is taken off);
- symlinks inside the tree are re-pointed into the copy, and a symlink leading out of it
  (sites-enabled/x -> /srv/x.conf) becomes a copy of its target, so nothing written in
  the copy can reach a real file;
- files nginx opens for writing (``error_log``, ``access_log``, ``pid``, ``lock_file``,
  ``*_temp_path``) are pointed into the copy: the check then runs unprivileged and never
  touches real logs. Files nginx only reads (certificates, keys, htpasswd) stay where they
  are: a key the caller cannot read fails the check, and the reason says so.

When the changed copy fails, the unchanged copy is checked too, so a failure that is not
the change's (an unreadable key) is told apart from a change nginx rejects.

uWSGI: the changed options (with the plugins the config loads) are given to the real
uWSGI in a scratch ini with ``strict = true`` (an unknown option is an error), a
scratch unix socket in place of any socket option (binding the real one would take it
over) and ``hook-pre-app = exit:``, which ends it after the sockets are bound and the
listen queue checked against net.core.somaxconn, before any app loads (~70 ms).
"""

# Paths stay strings exactly as the servers name them (pathlib would normalise them).
# ruff: noqa: PTH100, PTH113, PTH114, PTH118, PTH120

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from gw502d.remediate.hostconf import nginxtext
from gw502d.remediate.hostconf.change import Plan
from gw502d.remediate.hostconf.nginxread import NginxFiles, nginx_binary, nginx_error

# Directives whose first argument is a file nginx creates or writes
_WRITES = {"error_log", "access_log", "pid", "lock_file", "client_body_temp_path",
           "proxy_temp_path", "uwsgi_temp_path", "fastcgi_temp_path", "scgi_temp_path"}
_NOT_A_PATH = re.compile(r"^(off|stderr|syslog:|memory:)")
_QUOTE = re.compile(r"[\s;{}#\"'\\$]")
_TIMEOUT = 30.0
# uWSGI options that bind something
UWSGI_SOCKETS = ("socket", "uwsgi-socket", "http-socket", "https-socket", "http",
                 "shared-socket", "fastcgi-socket", "scgi-socket", "suwsgi-socket",
                 "raw-socket", "puwsgi-socket", "zerg-server")


def check_nginx(files: NginxFiles, plan: Plan, *, nginx: str | None = "nginx") -> str | None:
    """None when ``nginx -t`` accepts the configuration with *plan* applied, else why."""
    binary = nginx_binary(nginx)
    if binary is None:
        return f"{nginx or 'nginx'} is not installed: the change cannot be checked"
    with tempfile.TemporaryDirectory(prefix="gw502d-check-") as tmp:
        copy = _Copy(Path(tmp), files)
        problem = copy.build()
        if problem is not None:
            return problem
        failed = copy.test(binary, {c.path: c.new for c in plan.changes})
        if failed is None:
            return None
        if copy.test(binary, {c.path: c.old for c in plan.changes}) is not None:
            return f"nginx -t fails without the change too: {failed}"
        return f"nginx -t rejects the change: {failed}"


class _Copy:
    """The config tree below a temporary root, rewritten to stay inside it."""

    def __init__(self, tmp: Path, files: NginxFiles) -> None:
        self.tmp = Path(os.path.realpath(tmp))
        self.files = files
        self.root = os.path.dirname(files.conf)
        # each file nginx reads, by the copy that holds it, as copied
        self.pristine: dict[str, str] = {}

    def inside(self, path: str) -> Path:
        return self.tmp / os.path.abspath(path).lstrip("/")

    def build(self) -> str | None:
        try:
            self._tree(self.root)
            for path in self.files.files:
                dest = self.inside(path)
                if not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, dest)
            for path in self.files.files:
                real = os.path.realpath(self.inside(path))
                self.pristine[real] = Path(real).read_text(encoding="utf-8")
        except OSError as e:
            return f"cannot copy {e.filename}: {e.strerror}"
        return None

    def _tree(self, root: str) -> None:
        """Copy *root*; symlinks re-pointed into the copy or replaced by their target's
        content; unreadable files that nginx does not read are left out."""
        read = {os.path.abspath(p) for p in self.files.files}
        for dirpath, dirnames, filenames in os.walk(root):
            self.inside(dirpath).mkdir(parents=True, exist_ok=True)
            for name in [*dirnames, *filenames]:
                src = os.path.join(dirpath, name)
                dest = self.inside(src)
                if os.path.islink(src):
                    target = os.path.realpath(src)
                    if _under(target, root):
                        dest.symlink_to(self.inside(target))
                    elif os.path.isfile(target):
                        shutil.copyfile(target, dest)
                elif os.path.isfile(src):
                    try:
                        shutil.copyfile(src, dest)
                    except PermissionError:
                        if src in read:
                            raise

    def test(self, binary: str, texts: Mapping[str, str]) -> str | None:
        changed = {os.path.realpath(self.inside(p)): t for p, t in texts.items()}
        for dest in changed:
            if dest not in self.pristine:
                return f"{dest.replace(str(self.tmp), '')}: not a file nginx reads"
        for dest, text in self.pristine.items():
            Path(dest).write_text(self._rewrite(changed.get(dest, text)), encoding="utf-8")
        failed = nginx_t(binary, str(self.inside(self.files.conf)), self.files.prefix)
        return None if failed is None else failed.replace(str(self.tmp), "")

    def _rewrite(self, text: str) -> str:
        """Absolute includes into the copy, written files into its scratch dir."""
        edits: list[tuple[int, int, str]] = []
        for span in nginxtext.walk(nginxtext.spans(text)):
            if not span.tokens[1:]:
                continue
            arg = span.tokens[1]
            new: str | None = None
            if span.name == "include" and arg.text.startswith("/"):
                new = str(self.tmp) + arg.text
            elif span.name in _WRITES and not _NOT_A_PATH.match(arg.text):
                new = str(self.tmp / "scratch" / f"{len(edits)}-{span.name}")
            if new is not None:
                edits.append((arg.start, arg.end, f'"{new}"' if _QUOTE.search(new) else new))
        for start, end, new in reversed(edits):
            text = text[:start] + new + text[end:]
        (self.tmp / "scratch").mkdir(exist_ok=True)
        return text


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def nginx_t(binary: str, conf: str, prefix: str | None) -> str | None:
    """``nginx -t`` on *conf*: None when it passes, else nginx's first error line."""
    argv = [binary, "-t", "-q", "-c", conf, *(["-p", prefix] if prefix else [])]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                             timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    return None if res.returncode == 0 else nginx_error(res.stderr)


def check_uwsgi(options: Iterable[tuple[str, str]], plugins: Sequence[str] = (), *,
                uwsgi: str = "uwsgi") -> str | None:
    """None when the real uWSGI accepts *options* (name, value) with *plugins*, else why."""
    binary = shutil.which(uwsgi)
    if binary is None:
        return f"{uwsgi} is not installed: the change cannot be checked"
    with tempfile.TemporaryDirectory(prefix="gw502d-uwsgi-") as tmp:
        sock = os.path.join(tmp, "check.sock")
        lines = ["[uwsgi]", "strict = true", *(f"plugins = {p}" for p in plugins)]
        bound = False
        for name, value in options:
            given = sock if name in UWSGI_SOCKETS else value
            bound = bound or name in UWSGI_SOCKETS
            lines.append(f"{name} = {given}" if given else name)
        if not bound:
            lines.append(f"socket = {sock}")
        lines.append("hook-pre-app = exit:")
        ini = Path(tmp, "check.ini")
        ini.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            res = subprocess.run([binary, "--ini", str(ini)], capture_output=True, text=True,
                                 errors="replace", timeout=_TIMEOUT, check=False, cwd=tmp)
        except (OSError, subprocess.SubprocessError) as e:
            return str(e)
        if res.returncode == 0:
            return None
        out = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
        return f"uWSGI rejects it: {out[-1] if out else f'exit status {res.returncode}'}"
