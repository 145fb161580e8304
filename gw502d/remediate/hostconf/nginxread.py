"""Read nginx's configuration as nginx reads it, as a tree of statements with file and line.

Two ways in, the same result:

- ``nginx -T`` (where nginx is installed and may run it): nginx itself resolves the
  includes and dumps every file it read, each after a ``# configuration file PATH:`` line
  and followed by one extra newline (src/core/nginx.c), so line numbers inside a section
  are the file's own. It fails for an unprivileged user on a stock Debian host: the test
  opens ``/run/nginx.pid`` and the error logs for writing.
- the files, from nginx.conf: ``include`` is resolved here as nginx does
  (ngx_conf_include): a relative pattern is joined to the directory of nginx.conf (the conf
  prefix, for includes in any file), a pattern with ``*?[`` is a glob whose matches are read
  in sorted order and may be none, a plain name must exist.

Each file is tokenised and parsed by nginxinc's crossplane, one file at a time
(``single=True``: its own include handling keeps a file included from two places only
once, and its directive tables are from 2020, so context and argument checks are off lest
it drop a statement it does not know). crossplane parses files only, so the sections of a
dump are parsed from private temporary copies.
"""

# Paths stay strings exactly as the servers name them (pathlib would normalise them).
# ruff: noqa: PTH100, PTH207

from __future__ import annotations

import fnmatch
import glob
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crossplane

from gw502d.remediate.hostconf.result import Unreadable, Where, os_reason

DEFAULT_CONF = "/etc/nginx/nginx.conf"
_DUMP_HEADER = re.compile(r"# configuration file (.+):")
_GLOB_CHARS = re.compile(r"[*?\[]")
_CONF_PATH = re.compile(r"--conf-path=(\S+)")
# nginx has no include-loop check of its own beyond its stack; stop long before
_MAX_INCLUDE_DEPTH = 32
_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True, eq=False)
class Statement:
    """One directive where nginx read it; ``block`` holds a block's statements with every
    ``include`` replaced by what it includes (each statement keeps its own file)."""

    name: str
    args: tuple[str, ...]
    where: Where
    block: tuple[Statement, ...] | None = None

    def __str__(self) -> str:
        return " ".join((self.name, *self.args))

    def __repr__(self) -> str:
        return f"<{self} at {self.where}>"

    def find(self, name: str) -> list[Statement]:
        """This block's own statements called *name*, in order."""
        return [s for s in self.block or () if s.name == name]

    def walk(self) -> Iterator[Statement]:
        """Every statement inside this block, depth first."""
        for s in self.block or ():
            yield s
            yield from s.walk()


@dataclass(frozen=True, slots=True)
class NginxFiles:
    """What was read: the main context, every file in the order nginx reads them, how
    (``"nginx -T"`` or ``"files"``) and what could not be read."""

    conf: str
    prefix: str | None
    statements: tuple[Statement, ...]
    files: tuple[str, ...]
    method: str
    problems: tuple[Unreadable, ...]

    @property
    def root(self) -> Statement:
        """The main context as a block (``name == "main"``)."""
        return Statement("main", (), Where(self.conf, 0), self.statements)


# --------------------------------------------------------------------------- sources of text


class _Files:
    """Config text from the filesystem."""

    def text(self, path: str) -> str:
        return Path(path).read_text(encoding="utf-8", errors="replace")

    def glob(self, pattern: str) -> list[str]:
        return sorted(glob.glob(pattern))


class _Dump:
    """Config text from ``nginx -T``'s sections."""

    def __init__(self, sections: dict[str, str]) -> None:
        self.sections = sections

    def text(self, path: str) -> str:
        try:
            return self.sections[path]
        except KeyError:
            raise FileNotFoundError(2, "not in nginx -T output", path) from None

    def glob(self, pattern: str) -> list[str]:
        parts = pattern.split("/")
        return sorted(p for p in self.sections if _glob_match(p.split("/"), parts))


def _glob_match(path: list[str], pattern: list[str]) -> bool:
    """POSIX glob per path component: ``*`` stops at ``/`` and skips dotfiles."""
    return len(path) == len(pattern) and all(
        fnmatch.fnmatchcase(name, pat) and not (name.startswith(".") and not pat.startswith("."))
        for name, pat in zip(path, pattern, strict=True))


def split_dump(output: str) -> dict[str, str]:
    """``nginx -T`` output -> {path: file text}. A file's own line that looks exactly like a
    section header would split it: nginx gives no other delimiter."""
    sections: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in output.splitlines(keepends=True):
        m = _DUMP_HEADER.fullmatch(line.rstrip("\n"))
        if m is not None:
            if name is not None:
                sections[name] = "".join(lines)[:-1]
            name, lines = m.group(1), []
        elif name is not None:
            lines.append(line)
    if name is not None:
        sections[name] = "".join(lines)[:-1]
    return sections


# --------------------------------------------------------------------------- reading


def nginx_binary(nginx: str | None = "nginx") -> str | None:
    """The nginx executable (a name on PATH, /usr/sbin included, or a path), None if absent."""
    if nginx is None:
        return None
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/usr/local/sbin"
    return shutil.which(nginx, path=path)


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, errors="replace",
                          timeout=_TIMEOUT, check=False)


def compiled_conf_path(binary: str) -> str | None:
    """``--conf-path`` from ``nginx -V`` (the nginx.conf nginx reads without ``-c``)."""
    try:
        m = _CONF_PATH.search(_run([binary, "-V"]).stderr)
    except (OSError, subprocess.SubprocessError):
        return None
    return m.group(1) if m else None


def nginx_error(stderr: str) -> str:
    """The line of nginx's stderr that says why (its [emerg]), without the timestamp."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    bad = [ln for ln in lines if re.search(r"\[(emerg|alert|crit|error)\]", ln)]
    line = (bad or lines or ["no message"])[0]
    return re.sub(r"^(nginx: )?\S+ \S+ \[(\w+)\] \d+#\d+: ", r"[\2] ", line)


def dump(binary: str, conf: str, prefix: str | None) -> dict[str, str] | Unreadable:
    """Run ``nginx -T``: its sections, or why it failed."""
    argv = [binary, "-T", "-q", "-c", conf, *(["-p", prefix] if prefix else [])]
    try:
        res = _run(argv)
    except (OSError, subprocess.SubprocessError) as e:
        return Unreadable(f"{binary} -T", str(e))
    if res.returncode != 0:
        return Unreadable(f"{binary} -T", nginx_error(res.stderr))
    sections = split_dump(res.stdout)
    if conf not in sections:
        return Unreadable(f"{binary} -T", f"no section for {conf} in its output")
    return sections


def read_nginx(conf: str | None = None, *, nginx: str | None = "nginx",
               prefix: str | None = None, use_dump: bool = True) -> NginxFiles:
    """Read the configuration nginx would load from *conf* (default: nginx's own
    ``--conf-path``, else /etc/nginx/nginx.conf): with ``nginx -T`` when *nginx* is found
    and *use_dump*, else (or when that fails, said in ``problems``) from the files."""
    binary = nginx_binary(nginx)
    if conf is None:
        conf = (compiled_conf_path(binary) if binary else None) or DEFAULT_CONF
    conf = os.path.abspath(conf)
    problems: list[Unreadable] = []
    if binary is None and use_dump:
        problems.append(Unreadable(nginx or "nginx", "not installed; read the files instead"))
    if binary is not None and use_dump:
        got = dump(binary, conf, prefix)
        if isinstance(got, dict):
            return _parse_all(conf, prefix, _Dump(got), "nginx -T", problems)
        problems.append(Unreadable(got.path, f"{got.reason}; read the files instead"))
    return _parse_all(conf, prefix, _Files(), "files", problems)


def _parse_all(conf: str, prefix: str | None, source: _Files | _Dump, method: str,
               problems: list[Unreadable]) -> NginxFiles:
    with tempfile.TemporaryDirectory(prefix="gw502d-nginx-") as tmp:
        reader = _Reader(source, conf, Path(tmp), problems)
        statements = reader.file(conf, 0)
    return NginxFiles(conf, prefix, tuple(statements), tuple(reader.order), method,
                      tuple(problems))


class _Reader:
    """Parses files with crossplane and expands includes in place."""

    def __init__(self, source: _Files | _Dump, conf: str, tmp: Path,
                 problems: list[Unreadable]) -> None:
        self.source = source
        self.conf_prefix = conf[: conf.rfind("/") + 1]
        self.tmp = tmp
        self.problems = problems
        self.order: list[str] = []
        self.parsed: dict[str, list[dict[str, Any]] | None] = {}

    def file(self, path: str, depth: int) -> list[Statement]:
        if path not in self.parsed:
            self.parsed[path] = self._crossplane(path)
            self.order.append(path)
        found = self.parsed[path]
        return [] if found is None else self._convert(found, path, depth)

    def _crossplane(self, path: str) -> list[dict[str, Any]] | None:
        try:
            text = self.source.text(path)
        except OSError as e:
            self.problems.append(Unreadable(path, os_reason(e)))
            return None
        copy = self.tmp / f"{len(self.parsed)}.conf"
        copy.write_text(text, encoding="utf-8")
        payload = crossplane.parse(str(copy), single=True, comments=False,
                                   check_ctx=False, check_args=False)
        for err in payload["errors"]:
            self.problems.append(Unreadable(
                f"{path}:{err.get('line') or 0}",
                str(err["error"]).replace(str(copy), path)))
        parsed: list[dict[str, Any]] = payload["config"][0]["parsed"]
        return parsed

    def _convert(self, parsed: list[dict[str, Any]], path: str, depth: int) -> list[Statement]:
        out: list[Statement] = []
        for d in parsed:
            where = Where(path, int(d["line"]))
            args = tuple(str(a) for a in d["args"])
            if d["directive"] == "include" and args:
                out += self._include(args[0], where, depth)
                continue
            block = d.get("block")
            out.append(Statement(str(d["directive"]), args, where,
                                 None if block is None else tuple(
                                     self._convert(block, path, depth))))
        return out

    def _include(self, pattern: str, where: Where, depth: int) -> list[Statement]:
        if depth >= _MAX_INCLUDE_DEPTH:
            self.problems.append(Unreadable(str(where), "includes nested too deep (a loop?)"))
            return []
        full = pattern if pattern.startswith("/") else self.conf_prefix + pattern
        names = self.source.glob(full) if _GLOB_CHARS.search(full) else [full]
        out: list[Statement] = []
        for name in names:
            out += self.file(name, depth + 1)
        return out

