"""gunicorn's settings from gunicorn.conf.py (read with ``ast``, never run) and its command line.

gunicorn applies (gunicorn/app/base.py, load_config): the config file (``-c``, else
``./gunicorn.conf.py`` in its working directory), then ``GUNICORN_CMD_ARGS``, then the
command line, each overriding the one before. A top-level assignment of a literal is
known with its file:line; anything computed (``multiprocessing.cpu_count() * 2 + 1``),
changed later (``workers += 1``) or assigned under ``if``/``try``/a function is reported
as unknown with its source text, never evaluated.
"""

# Paths stay strings exactly as the servers name them (pathlib would normalise them).
# ruff: noqa: PTH109, PTH110, PTH118, PTH119

from __future__ import annotations

import ast
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gw502d.remediate.hostconf.change import Plan, TextEdits, planned
from gw502d.remediate.hostconf.procs import PROC, Process, find_masters, read_process
from gw502d.remediate.hostconf.result import Unreadable, Where, os_reason

# gunicorn's defaults (gunicorn/config.py) for the settings advice is about
DEFAULTS: dict[str, object] = {
    "bind": ["127.0.0.1:8000"], "workers": 1, "timeout": 30, "worker_class": "sync",
    "threads": 1, "backlog": 2048, "max_requests": 0, "max_requests_jitter": 0,
    "graceful_timeout": 30, "keepalive": 2, "limit_request_line": 4094,
    "limit_request_field_size": 8190, "limit_request_fields": 100,
    "worker_connections": 1000,
}
# command-line spellings that take a value (-b may repeat: bind is a list)
_CLI = {"-b": "bind", "--bind": "bind", "-w": "workers", "--workers": "workers",
        "-t": "timeout", "--timeout": "timeout", "-k": "worker_class",
        "--worker-class": "worker_class", "--threads": "threads", "--backlog": "backlog",
        "--max-requests": "max_requests", "--max-requests-jitter": "max_requests_jitter",
        "--graceful-timeout": "graceful_timeout", "--keep-alive": "keepalive",
        "--limit-request-line": "limit_request_line",
        "--limit-request-field_size": "limit_request_field_size",
        "--limit-request-fields": "limit_request_fields",
        "--worker-connections": "worker_connections", "-c": "config", "--config": "config",
        "--chdir": "chdir"}
# gunicorn's options without a value (gunicorn/config.py: store_true/store_const)
_NO_VALUE = frozenset((
    "--reload", "--spew", "--check-config", "--print-config", "--preload", "--no-sendfile",
    "--reuse-port", "-D", "--daemon", "--initgroups", "--disable-redirect-access-to-syslog",
    "--capture-output", "--log-syslog", "-R", "--enable-stdio-inheritance",
    "--enable-backlog-metric", "--suppress-ragged-eofs", "--do-handshake-on-connect",
    "--permit-obsolete-folding", "--strip-header-spaces",
    "--permit-unconventional-http-method", "--permit-unconventional-http-version",
    "--casefold-http-method", "--no-control-socket"))
_INTS = frozenset(k for k, v in DEFAULTS.items() if isinstance(v, int))
_TITLE = re.compile(r"^gunicorn: (master|worker)")


@dataclass(frozen=True, slots=True)
class Setting:
    """A setting in force: ``value`` (None when unknown), ``text`` as written, ``where``
    (None for gunicorn's default), ``source``: "default", "file", "GUNICORN_CMD_ARGS" or
    "command line"."""

    name: str
    value: object
    text: str
    where: Where | None
    source: str
    known: bool = True

    def __str__(self) -> str:
        place = f" ({self.where})" if self.where else " (gunicorn's default)"
        shown = self.text if self.known else f"unknown: {self.text}"
        return f"{self.name} = {shown}{place}"


@dataclass
class GunicornConfig:
    """The settings gunicorn runs with, as far as they can be known without running it.

    >>> cfg = read_gunicorn("/srv/blog/gunicorn.conf.py")       # doctest: +SKIP
    >>> str(cfg.get("timeout"))                                  # doctest: +SKIP
    'timeout = 30 (/srv/blog/gunicorn.conf.py:4)'
    """

    config_file: str | None = None
    file_settings: dict[str, Setting] = field(default_factory=dict)
    overrides: dict[str, Setting] = field(default_factory=dict)
    problems: list[Unreadable] = field(default_factory=list)

    def get(self, name: str) -> Setting:
        found = self.overrides.get(name) or self.file_settings.get(name)
        if found is not None:
            return found
        default = DEFAULTS.get(name)
        return Setting(name, default, repr(default), None, "default", default is not None)


def read_gunicorn(config: str | None = None, *, argv: Sequence[str] | None = None,
                  pid: int | None = None, cwd: str | None = None,
                  proc: Path = PROC) -> GunicornConfig:
    """Settings from *config* (gunicorn.conf.py), a command line *argv*, or the running
    master *pid* (its arguments, GUNICORN_CMD_ARGS when its environment is readable, and
    the config file they name, else ./gunicorn.conf.py in its working directory)."""
    cfg = GunicornConfig()
    label = "command line"
    env_args: list[str] = []
    if pid is not None:
        p = read_process(pid, proc)
        if isinstance(p, Unreadable):
            cfg.problems.append(p)
            return cfg
        if _TITLE.match(p.argv[0]):
            cfg.problems.append(Unreadable(p.label, "renamed by setproctitle: the "
                                           "arguments are gone"))
            return cfg
        argv, cwd, label = p.argv, p.cwd, p.label
        environ = p.environ(proc)
        if isinstance(environ, Unreadable):
            cfg.problems.append(Unreadable(environ.path, f"{environ.reason}: "
                                           "GUNICORN_CMD_ARGS unknown"))
        else:
            env_args = shlex.split(environ.get("GUNICORN_CMD_ARGS", ""))
    cli = _parse_args(list(argv[1:] if argv else ()), Where(label, 0), cfg)
    env = _parse_args(env_args, Where("GUNICORN_CMD_ARGS", 0), cfg)
    path = config or _text(cli.get("config")) or _text(env.get("config"))
    if path is None and (argv is not None or pid is not None):
        default = os.path.join(cwd or os.getcwd(), "gunicorn.conf.py")
        path = default if os.path.exists(default) else None
    if path is not None and path.startswith("python:"):
        cfg.problems.append(Unreadable(path, "a config module is not read (only files)"))
    elif path is not None:
        path = os.path.join(cwd or os.getcwd(), path.removeprefix("file:"))
        cfg.config_file = path
        _read_file(cfg, path)
    cfg.overrides = {**env, **cli}
    cfg.overrides.pop("config", None)
    return cfg


def gunicorn_masters(proc: Path = PROC) -> list[Process]:
    """Running gunicorn masters: ``gunicorn ...`` or ``python -m gunicorn ...``."""
    def is_gunicorn(argv: tuple[str, ...]) -> bool:
        head = [os.path.basename(a) for a in argv[:3]]
        return "gunicorn" in head or bool(_TITLE.match(argv[0]))
    return find_masters(is_gunicorn, proc)


def _text(s: Setting | None) -> str | None:
    return s.text if s is not None else None


def _parse_args(args: list[str], where: Where, cfg: GunicornConfig) -> dict[str, Setting]:
    out: dict[str, Setting] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            continue  # the WSGI app
        flag, eq, value = arg.partition("=")
        if not eq and len(flag) > 2 and not flag.startswith("--"):  # -w4, -b:8000
            flag, value, eq = arg[:2], arg[2:], "="
        if flag in _NO_VALUE:
            continue
        if not eq:
            if i >= len(args):
                cfg.problems.append(Unreadable(str(where), f"{flag} without a value"))
                break
            value = args[i]
            i += 1
        name = _CLI.get(flag)
        if name is None:
            continue
        if name == "bind" and "bind" in out:
            prev = out["bind"]
            binds = [*(prev.value if isinstance(prev.value, list) else []), value]
            out[name] = Setting(name, binds, repr(binds), where, where.file)
            continue
        typed: object = [value] if name == "bind" else value
        if name in _INTS:
            typed = int(value) if value.lstrip("-").isdigit() else None
        out[name] = Setting(name, typed, value if name != "bind" else repr(typed), where,
                            where.file, typed is not None)
    return out


def _read_file(cfg: GunicornConfig, path: str) -> None:
    try:
        source = Path(path).read_text(encoding="utf-8")
        tree = ast.parse(source, path)
    except OSError as e:
        cfg.problems.append(Unreadable(path, os_reason(e)))
        return
    except (SyntaxError, ValueError, UnicodeDecodeError) as e:
        cfg.problems.append(Unreadable(path, f"not valid Python: {e}"))
        return
    for node in tree.body:
        for name, value in _assignments(node):
            where = Where(path, node.lineno)
            text = ast.get_source_segment(source, value) if value is not None else None
            if value is None:
                shown = text or ast.get_source_segment(source, node) or name
                cfg.file_settings[name] = Setting(name, None, shown.splitlines()[0], where,
                                                  "file", False)
                continue
            try:
                literal = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                cfg.file_settings[name] = Setting(name, None, text or "", where, "file", False)
                continue
            cfg.file_settings[name] = Setting(name, literal, text or repr(literal), where,
                                              "file")


def _assignments(node: ast.stmt) -> list[tuple[str, ast.expr | None]]:
    """(name, value) bound by a top-level statement; value None when not a plain binding
    (augmented, or inside if/for/try/with/def)."""
    if isinstance(node, ast.Assign):
        return [(t.id, node.value) for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [(node.target.id, node.value)]
    if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
        return [(node.target.id, None)]
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return []
    return [(n.id, None) for n in ast.walk(node)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]


# --------------------------------------------------------------------------- edits


@dataclass(frozen=True, slots=True)
class GunicornEdit:
    """Set gunicorn.conf.py's *setting* to *value* (a Python literal: int, str, list)."""

    setting: str
    value: object


def plan_gunicorn(cfg: GunicornConfig, edits: Sequence[GunicornEdit]) -> Plan:
    """The diff that sets each setting in gunicorn.conf.py: the assignment in force is
    replaced, or one is appended; a setting the command line overrides is refused."""
    plan = planned(edits, lambda edit, texts: _gunicorn_edit(cfg, edit, texts))
    for change in plan.changes:
        try:
            compile(change.new, change.path, "exec", dont_inherit=True)
        except SyntaxError as e:
            return Plan((), (), (*plan.refused, f"{change.path}: the change breaks it: {e}"))
    return plan


def _gunicorn_edit(cfg: GunicornConfig, edit: GunicornEdit,
                   texts: TextEdits) -> tuple[bool, str]:
    name, value = edit.setting, edit.value
    if not name.isidentifier() or not _literal(value):
        return False, f"{name} = {value!r}: not a setting and a literal"
    if name in _INTS and not (isinstance(value, int) and value >= 0):
        return False, f"{name} = {value!r}: gunicorn wants a whole number"
    assignment = f"{name} = {value!r}"
    current = cfg.get(name)
    if current.source in ("command line", "GUNICORN_CMD_ARGS") or (
            current.where is not None and current.where.line == 0):
        return False, f"{name} is set on the {current.where}: change it there ({assignment})"
    path = cfg.config_file
    if path is None:
        return False, f"no gunicorn.conf.py (give -c FILE): cannot set {assignment}"
    text = texts.text(path)
    if text is None:
        return False, f"{path} cannot be read"
    if current.source == "file" and current.where is not None:
        node = _assignment_at(text, name, current.where.line)
        if node is None:
            return False, f"{current.where}: {name} is not a plain assignment; set " \
                f"{assignment} by hand"
        start, end = _offsets(text, node)
        texts.add(path, start, end - start, repr(value))
        return True, f"In {current.where} {name} = {current.text}: set {assignment}."
    sep = "" if not text or text.endswith("\n") else "\n"
    texts.add(path, len(text), 0, f"{sep}{assignment}\n")
    return True, f"{name} is gunicorn's default ({current.text}): add {assignment} to {path}."


def _literal(value: object) -> bool:
    try:
        return bool(ast.literal_eval(repr(value)) == value)
    except (ValueError, SyntaxError):
        return False


def _assignment_at(text: str, name: str, line: int) -> ast.expr | None:
    for node in ast.parse(text).body:
        if node.lineno == line:
            for n, value in _assignments(node):
                if n == name and value is not None:
                    return value
    return None


def _offsets(text: str, node: ast.expr) -> tuple[int, int]:
    """ast's (line, UTF-8 byte column) -> offsets in *text*."""
    lines = text.splitlines(keepends=True)

    def at(line: int, col: int) -> int:
        return sum(len(x) for x in lines[: line - 1]) + len(
            lines[line - 1].encode()[:col].decode(errors="replace"))

    assert node.end_lineno is not None and node.end_col_offset is not None
    return at(node.lineno, node.col_offset), at(node.end_lineno, node.end_col_offset)
