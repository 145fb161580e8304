"""uWSGI's options as the master applies them, each with its file:line or command line.

uWSGI reads options in order (core/init.c, core/ini.c): the command line from left to
right, a ``--ini``/``--yaml``/``--xml`` file (or a bare config file argument, by its
extension) at the point where it is named, ``ini =``/``include =`` keys inside a file
likewise. A later value of a single-valued option wins; socket options add a socket each.

ini as core/ini.c reads it: lines are stripped; ``[name]`` starts a section and only the
asked one counts (``file.ini:name``, default ``uwsgi``); a line whose first character is
``;`` or ``#`` is a comment (a ``;`` later in a line is part of the value); the key ends at
the first ``=``, and a line without one is a flag with an empty value. Placeholders
(``%(name)``, ``%d``, ``$(ENV)``, ``@(file)``) are kept as written: uWSGI expands them at
start-up and gw502d does not guess. A flag's value "false", "off", "no" or "0" turns it
off (uwsgi_opt_true).
"""

# Paths stay strings exactly as the servers name them (pathlib would normalise them).
# ruff: noqa: PTH109, PTH118, PTH119

from __future__ import annotations

import os
import re
import xml.parsers.expat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gw502d.remediate.hostconf.change import Plan, TextEdits, planned
from gw502d.remediate.hostconf.procs import PROC, Process, find_masters, read_process
from gw502d.remediate.hostconf.result import Unreadable, Where, os_reason
from gw502d.remediate.hostconf.validate import UWSGI_SOCKETS

# Defaults of the options advice is about (uwsgi.c; buffer-size: 4096 bytes)
DEFAULTS = {"buffer-size": "4096", "harakiri": "0", "listen": "100", "processes": "1",
            "threads": "1", "max-requests": "0", "reload-on-rss": "0"}
ALIASES = {"workers": "processes"}
_SHORT = {"s": "socket", "p": "processes", "t": "harakiri", "l": "listen", "b": "buffer-size",
          "R": "max-requests", "x": "xml", "y": "yaml", "j": "json", "d": "daemonize",
          "S": "set", "v": "max-vars", "z": "socket-timeout", "A": "sharedarea",
          "Q": "spooler", "w": "module", "H": "home"}
_SHORT_FLAGS = {"M": "master", "T": "enable-threads", "i": "single-interpreter",
                "c": "cgi-mode", "a": "abstract-socket", "L": "disable-logging",
                "r": "reaper", "h": "help", "C": "chmod-socket", "m": "memory-report"}
# Options taking no argument or an optional one (which getopt_long only takes after
# "="): a following word is not their value (the common ones; others guessed by shape)
_FLAGS = frozenset((
    "master", "enable-threads", "die-on-term", "vacuum", "lazy-apps", "lazy",
    "single-interpreter", "thunder-lock", "need-app", "no-orphans", "strict",
    "harakiri-verbose", "disable-logging", "auto-procname", "no-default-app", "cheap",
    "close-on-exec", "memory-report", "log-date", "logdate", "log-micros",
    "log-x-forwarded-for", "catch-exceptions", "honour-stdin", "so-keepalive",
    "chmod-socket", "chmod", "enable-proxy-protocol", "http-keepalive", "reload-os-env",
    "no-site", "py-call-osafterfork", "master-as-root", "skip-atexit", "exit-on-reload",
    "never-swap", "reuse-port", "tcp-nodelay", "manage-script-name", "py-autoreload-on-edit",
))
_CONFIG_LOADERS = {"ini": "ini", "yaml": "yaml", "yml": "yaml", "xml": "xml",
                   "xmlconfig": "xml", "json": "json", "js": "json", "include": "auto",
                   "inherit": "auto"}
_FALSE = ("false", "off", "no", "0")


@dataclass(frozen=True, slots=True)
class Option:
    """One option as uWSGI applies it; ``value`` is "" for a bare flag."""

    name: str
    value: str
    where: Where

    @property
    def on_command_line(self) -> bool:
        return self.where.line == 0

    def __str__(self) -> str:
        return f"{self.name} = {self.value} ({self.where})" if self.value else \
            f"{self.name} ({self.where})"


@dataclass
class UwsgiConfig:
    """Every option read, in uWSGI's order, and what could not be read.

    >>> cfg = read_uwsgi("/etc/uwsgi/apps-enabled/shop.ini")   # doctest: +SKIP
    >>> str(cfg.last("harakiri"))                              # doctest: +SKIP
    'harakiri = 6 (/etc/uwsgi/apps-enabled/shop.ini:9)'
    """

    options: list[Option] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[Unreadable] = field(default_factory=list)
    # the file that options are added to (the last one named on the command line)
    main: str | None = None
    sections: dict[str, str] = field(default_factory=dict)

    def all(self, name: str) -> list[Option]:
        name = ALIASES.get(name, name)
        return [o for o in self.options if ALIASES.get(o.name, o.name) == name]

    def last(self, name: str) -> Option | None:
        found = self.all(name)
        return found[-1] if found else None

    def value(self, name: str) -> str | None:
        """The value in force ("" for a flag), nginx-style default when unset, None if
        neither is known."""
        opt = self.last(name)
        return opt.value if opt is not None else DEFAULTS.get(ALIASES.get(name, name))

    def number(self, name: str) -> int | None:
        """An integer option's value as uWSGI's atoi reads it (leading digits); None when
        unset without default or not a number (a placeholder such as ``%(workers)``)."""
        m = re.match(r"\s*(\d+)", self.value(name) or "")
        return int(m.group(1)) if m else None

    def flag(self, name: str) -> bool:
        opt = self.last(name)
        return opt is not None and opt.value.strip().lower() not in _FALSE

    @property
    def sockets(self) -> list[Option]:
        return [o for o in self.options if o.name in UWSGI_SOCKETS]

    @property
    def plugins(self) -> list[str]:
        return [p.strip() for o in self.options if o.name in ("plugin", "plugins")
                for p in o.value.split(",") if p.strip()]


def read_uwsgi(path: str | None = None, *, pid: int | None = None,
               proc: Path = PROC) -> UwsgiConfig:
    """Options from a config file (``shop.ini``, ``shop.ini:section``, .yaml, .xml) or from
    the command line of the running master *pid* (the files it names are read too)."""
    cfg = UwsgiConfig()
    if pid is not None:
        p = read_process(pid, proc)
        if isinstance(p, Unreadable):
            cfg.problems.append(p)
        else:
            _command_line(cfg, p)
    if path is not None:
        _load(cfg, path, _kind(path), os.getcwd(), 0)
        cfg.main = cfg.main or _split_section(path)[0]
    return cfg


def uwsgi_masters(proc: Path = PROC) -> list[Process]:
    """Running uWSGI masters (processes whose program is uwsgi, without a uwsgi parent)."""
    return find_masters(lambda argv: os.path.basename(argv[0]).startswith("uwsgi"), proc)


def _kind(path: str) -> str:
    name = _split_section(path)[0]
    for ext, kind in ((".ini", "ini"), (".yaml", "yaml"), (".yml", "yaml"), (".xml", "xml"),
                      (".json", "json"), (".js", "json")):
        if name.endswith(ext):
            return kind
    return "ini"


def _split_section(path: str) -> tuple[str, str]:
    name, sep, section = path.rpartition(":")
    if sep and "/" not in section and name:
        return name, section or "uwsgi"
    return path, "uwsgi"


def _command_line(cfg: UwsgiConfig, p: Process) -> None:
    where = Where(p.label, 0)
    cwd = p.cwd or "/"
    if p.cwd is None:
        cfg.problems.append(Unreadable(f"/proc/{p.pid}/cwd", "unreadable: relative config "
                                       "paths are taken from /"))
    args = list(p.argv[1:])
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            if not eq and name not in _FLAGS and i < len(args) and not args[i].startswith("-"):
                value = args[i]
                i += 1
        elif arg.startswith("-") and len(arg) > 1:
            letter, rest = arg[1], arg[2:]
            if letter in _SHORT_FLAGS:
                name, value = _SHORT_FLAGS[letter], ""
                if rest:  # clustered flags (-MT): the rest is read as another option
                    args.insert(i, "-" + rest)
            elif letter in _SHORT:
                name = _SHORT[letter]
                if rest:
                    value = rest
                elif i < len(args):
                    value = args[i]
                    i += 1
                else:
                    value = ""
            else:
                cfg.problems.append(Unreadable(p.label, f"unknown option {arg}"))
                continue
        else:
            positional.append(arg)
            continue
        _apply(cfg, Option(name, value, where), cwd, 0)
    for arg in positional:
        if not arg.startswith("["):
            _load(cfg, arg, _kind(arg), cwd, 0)
            cfg.main = _split_section(arg)[0]


def _apply(cfg: UwsgiConfig, opt: Option, cwd: str, depth: int) -> None:
    """Record an option; a config-loading one loads its file in place."""
    kind = _CONFIG_LOADERS.get(opt.name)
    if kind is None:
        cfg.options.append(opt)
        return
    path = opt.value
    _load(cfg, path, _kind(path) if kind == "auto" else kind, cwd, depth + 1)
    if opt.on_command_line:
        cfg.main = _split_section(path)[0]


def _load(cfg: UwsgiConfig, path: str, kind: str, cwd: str, depth: int) -> None:
    name, section = _split_section(path)
    full = os.path.join(cwd, name)
    if depth > 16:
        cfg.problems.append(Unreadable(full, "config files nested too deep (a loop?)"))
        return
    if kind == "json":
        cfg.problems.append(Unreadable(full, "JSON uWSGI configs are not read"))
        return
    try:
        text = Path(full).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        cfg.problems.append(Unreadable(full, os_reason(e)))
        return
    cfg.files.append(full)
    cfg.sections[full] = section
    reader = {"ini": _ini, "yaml": _yaml, "xml": _xml}[kind]
    try:
        found = list(reader(text, section, full))
    except (yaml.YAMLError, xml.parsers.expat.ExpatError) as e:
        cfg.problems.append(Unreadable(full, str(e).splitlines()[0]))
        return
    if not found:
        cfg.problems.append(Unreadable(full, f"no [{section}] section"))
    for opt in found:
        _apply(cfg, opt, cwd, depth)


def _ini(text: str, section: str, path: str) -> Iterable[Option]:
    current = ""
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip(" \t\r")
        if not line or line[0] in ";#":
            continue
        if line[0] == "[":
            current = line[1:-1]
        elif current == section:
            key, _, value = line.partition("=")
            yield Option(key.rstrip(" \t\r"), value.strip(" \t\r"), Where(path, n))


def _yaml(text: str, section: str, path: str) -> Iterable[Option]:
    root = yaml.compose(text)
    if not isinstance(root, yaml.MappingNode):
        return
    for key, node in root.value:
        if key.value != section or not isinstance(node, yaml.MappingNode):
            continue
        for k, v in node.value:
            items = v.value if isinstance(v, yaml.SequenceNode) else [v]
            for item in items:
                value = item.value if isinstance(item, yaml.ScalarNode) else ""
                yield Option(str(k.value), _yaml_scalar(value), Where(path, k.start_mark.line + 1))


def _yaml_scalar(value: str) -> str:
    return {"true": "true", "false": "false"}.get(value.lower(), value)


def _xml(text: str, section: str, path: str) -> Iterable[Option]:
    """``<uwsgi><socket>:3031</socket><master/></uwsgi>``; a section is ``<uwsgi id="x">``."""
    found: list[Option] = []
    stack: list[tuple[str, int, list[str]]] = []
    inside = [False]
    parser = xml.parsers.expat.ParserCreate()

    def start(tag: str, attrs: dict[str, str]) -> None:
        if not stack and not inside[0] and tag == "uwsgi":
            inside[0] = attrs.get("id", "uwsgi") == section
            stack.append((tag, parser.CurrentLineNumber, []))
            return
        stack.append((tag, parser.CurrentLineNumber, []))

    def end(tag: str) -> None:
        name, line, chunks = stack.pop()
        if len(stack) == 1 and inside[0]:
            found.append(Option(name, "".join(chunks).strip(), Where(path, line)))

    def chars(data: str) -> None:
        if stack:
            stack[-1][2].append(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.Parse(text, True)
    return found


# --------------------------------------------------------------------------- edits


@dataclass(frozen=True, slots=True)
class UwsgiEdit:
    """Set *option* to *value* ("" or "true" for a flag); with *instead_of*, the line
    setting that option (e.g. ``socket`` -> ``http-socket``) is the one replaced."""

    option: str
    value: str
    instead_of: str | None = None


_INT_OPTIONS = frozenset(("buffer-size", "harakiri", "listen", "processes", "workers",
                          "threads", "max-requests", "reload-on-rss", "gevent"))


def plan_uwsgi(cfg: UwsgiConfig, edits: Sequence[UwsgiEdit]) -> Plan:
    """The diff that sets each option in the file that sets it (the line of the value in
    force), or adds it to the asked section of the main config file."""
    return planned(edits, lambda edit, texts: _uwsgi_edit(cfg, edit, texts))


def _uwsgi_edit(cfg: UwsgiConfig, edit: UwsgiEdit, texts: TextEdits) -> tuple[bool, str]:
    name, value = edit.option, edit.value.strip()
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) or "\n" in value or "\r" in value:
        return False, f"{name} = {value!r}: not a plain uWSGI option"
    if name in _INT_OPTIONS and not value.isdigit():
        return False, f"{name} = {value!r}: uWSGI wants a whole number"
    line_text = f"{name} = {value}" if value else name
    current = cfg.last(edit.instead_of or name)
    if current is not None and current.on_command_line:
        return False, (f"{current.name} is set on the {current.where}: change it there "
                       f"({line_text})")
    if current is not None:
        path = current.where.file
        if not path.endswith(".ini"):
            return False, f"{current}: only ini files are edited; set {line_text} by hand"
        text = texts.text(path)
        if text is None:
            return False, f"{path} cannot be read"
        lines = text.splitlines(keepends=True)
        old = lines[current.where.line - 1]
        start = sum(len(x) for x in lines[: current.where.line - 1])
        indent = old[: len(old) - len(old.lstrip(" \t"))]
        body = old.rstrip("\r\n")
        texts.add(path, start, len(body), indent + line_text)
        was = f"{current.name} = {current.value}" if current.value else current.name
        return True, f"In {current.where} {was}: set {line_text}."
    return _add(cfg, name, line_text, texts)


def _add(cfg: UwsgiConfig, name: str, line_text: str, texts: TextEdits) -> tuple[bool, str]:
    path = cfg.main
    if path is None or not path.endswith(".ini"):
        return False, f"no uWSGI ini file to add {line_text} to"
    text = texts.text(path)
    if text is None:
        return False, f"{path} cannot be read"
    section = cfg.sections.get(path, "uwsgi")
    lines = text.splitlines(keepends=True)
    current, last = "", None
    for n, raw in enumerate(lines):
        line = raw.strip()
        if line.startswith("["):
            current = line[1:-1]
        elif current == section and line and line[0] not in ";#":
            last = n
    if last is None:
        return False, f"{path}: no [{section}] section to add {line_text} to"
    offset = sum(len(x) for x in lines[: last + 1])
    sep = "" if lines[last].endswith("\n") else "\n"
    texts.add(path, offset, 0, f"{sep}{line_text}\n")
    default = DEFAULTS.get(ALIASES.get(name, name))
    was = f"unset (uWSGI's default: {default})" if default is not None else "unset"
    return True, f"{name} is {was}: add {line_text} to [{section}] in {path}:{last + 2}."
