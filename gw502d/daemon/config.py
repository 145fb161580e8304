"""The daemon's configuration: a TOML file, the built-in default, and command-line overrides.

The keys are those of ``deploy/gw502d.toml.example``. Every problem raises
:class:`ConfigError` naming the file, the key and what is wrong
(``log[2].family: must be one of ...``; ``[[log]]`` and ``[[journal]]`` tables count from
1), so that
``gw502d check-config`` and a refused SIGHUP reload say what to fix. Relative paths in a
file are taken from the file's directory, so a config and its patterns can move together.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from gw502d.errors import ConfigError
from gw502d.export.hosts import valid_pattern
from gw502d.export.listen import Listen, parse_listen
from gw502d.remediate.correlate import DEFAULT_WINDOW
from gw502d.remediate.host import DEFAULT_NGINX_CONF, ConfigPaths
from gw502d.source.lines import MAX_LINE, MAX_LINE_RANGE
from gw502d.source.spec import LOG_FORMATS, JournalSpec, LogSpec

DEFAULT_PATH = Path("/etc/gw502d/gw502d.toml")
DEFAULT_LISTEN = ":9502"
# Followed when no file and no --log says otherwise; missing ones are waited for.
DEFAULT_LOGS = (
    LogSpec("/var/log/nginx/error.log", "nginx", "nginx"),
    LogSpec("/var/log/uwsgi/*.log", "uwsgi", "uwsgi"),
    LogSpec("/var/log/gunicorn/*.log", "gunicorn", "gunicorn"),
)
START_AT = ("end", "beginning")
INCIDENTS_BUFFER_RANGE = (0, 10_000)
CORRELATION_WINDOW_RANGE = (0, 3600)
KEYS = frozenset({"listen", "state_dir", "pattern_dirs", "max_line_bytes",
                  "correlation_window_seconds", "start_at", "web_config", "incidents_buffer",
                  "redact", "allowed_hosts", "log", "journal", "servers"})
LOG_KEYS = frozenset({"path", "family", "name", "format"})
JOURNAL_KEYS = frozenset({"units", "identifiers", "directory", "file", "family", "name"})
SERVERS_KEYS = frozenset({"nginx_conf", "uwsgi", "gunicorn", "gunicorn_command"})
# journalctl matches _SYSTEMD_UNIT exactly (``-u`` globs only through the unit list)
_GLOB = frozenset("*?[")


def default_state_dir() -> Path:
    """/var/lib/gw502d for root (systemd's StateDirectory=), the XDG state dir otherwise."""
    if os.geteuid() == 0:
        return Path("/var/lib/gw502d")
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "gw502d"


@dataclass(frozen=True)  # no slots: the class attributes are the defaults parse_config uses
class Config:
    """A validated configuration; ``source`` says where it came from, for messages."""

    logs: tuple[LogSpec, ...]
    listen: Listen
    state_dir: Path
    journals: tuple[JournalSpec, ...] = ()
    pattern_dirs: tuple[Path, ...] = ()
    max_line_bytes: int = MAX_LINE
    correlation_window_seconds: float = DEFAULT_WINDOW
    start_at: Literal["end", "beginning"] = "end"
    web_config: Path | None = None
    incidents_buffer: int = 200
    redact: bool = True
    allowed_hosts: tuple[str, ...] = ()
    servers: ConfigPaths = field(default_factory=ConfigPaths)
    source: str = "built-in defaults"


@dataclass(frozen=True, slots=True)
class Overrides:
    """What the command line says; each set field wins over the file."""

    config: Path | None = None
    logs: tuple[str, ...] = ()
    journal_units: tuple[str, ...] = ()
    listen: str | None = None
    state_dir: Path | None = None
    web_config: Path | None = None
    pattern_dirs: tuple[Path, ...] = field(default=())


class _Reader:
    """Typed access to one table of the file, with errors that name the key."""

    def __init__(self, table: Mapping[str, Any], prefix: str, source: str, base: Path) -> None:
        self.table, self.prefix, self.source, self.base = table, prefix, source, base

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.prefix + key, problem, self.source)

    def get(self, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        value = self.table.get(key)
        if value is not None and (not isinstance(value, kind)
                                  or (isinstance(value, bool) and kind is not bool)):
            raise self.error(key, f"must be {what}, got {value!r}")
        return value

    def text(self, key: str) -> str | None:
        value = self.get(key, str, "a string")
        if value is not None and not value.strip():
            raise self.error(key, "must not be empty")
        return cast("str | None", value)

    def path(self, key: str) -> Path | None:
        value = self.text(key)
        if value is not None and any(c in value for c in "\0\n\r"):
            raise self.error(key, "must not contain NUL or line breaks")
        return None if value is None else self.base / value

    def number(self, key: str, kind: type | tuple[type, ...], bounds: tuple[float, float],
               what: str) -> Any:
        value = self.get(key, kind, what)
        low, high = bounds
        if value is not None and not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}, got {value!r}")
        return value

    def texts(self, key: str, what: str) -> tuple[str, ...]:
        """An array of strings without control characters (journal matches, names)."""
        values = self.get(key, list, f"an array of {what}") or []
        for v in values:
            if not isinstance(v, str) or not v.strip() or not v.isprintable():
                raise self.error(key, f"{v!r} is not one of {what}")
        return tuple(values)

    def unknown(self, known: Collection[str]) -> None:
        extra = sorted(set(self.table) - set(known))
        if extra:
            raise self.error(extra[0], f"unknown key (known: {', '.join(sorted(known))})")


def _tables(raw: Any, key: str, top: _Reader) -> list[_Reader]:
    """The ``[[key]]`` tables, each with a reader whose errors say ``key[n].``."""
    if not isinstance(raw, list) or not raw or not all(isinstance(t, dict) for t in raw):
        raise top.error(key, f"must be one or more [[{key}]] tables")
    return [_Reader(table, f"{key}[{n}].", top.source, top.base)
            for n, table in enumerate(raw, 1)]


def _unique(name: str, r: _Reader, names: dict[str, str]) -> str:
    """A source's ``name`` (the ``log`` label): one per [[log]] and [[journal]] table."""
    if name in names:
        raise r.error("name", f"{name!r} is already the name of {names[name]}; give each "
                              "[[log]] and [[journal]] its own name")
    names[name] = r.prefix.rstrip(".")
    return name


def _logs(raw: Any, top: _Reader, names: dict[str, str]) -> tuple[LogSpec, ...]:
    specs: list[LogSpec] = []
    for r in _tables(raw, "log", top):
        r.unknown(LOG_KEYS)
        path = r.path("path")
        if path is None:
            raise r.error("path", "missing (the log file, or a glob of log files)")
        family = r.text("family")
        form = r.text("format") or "plain"
        if form not in LOG_FORMATS:
            raise r.error("format", f"must be one of {', '.join(LOG_FORMATS)}, got {form!r}")
        name = _unique(r.text("name") or family or str(path), r, names)
        specs.append(LogSpec(str(path), name, family, cast("Literal['plain', 'syslog']", form)))
    return tuple(specs)


def _journals(raw: Any, top: _Reader, names: dict[str, str]) -> tuple[JournalSpec, ...]:
    specs: list[JournalSpec] = []
    for r in _tables(raw, "journal", top):
        r.unknown(JOURNAL_KEYS)
        units = r.texts("units", "unit names")
        globbed = [u for u in units if _GLOB & set(u)]
        if globbed:
            raise r.error("units", f"{globbed[0]!r}: name each unit, globs are not matched")
        identifiers = r.texts("identifiers", "syslog identifiers")
        directory, file = r.path("directory"), r.path("file")
        if directory is not None and file is not None:
            raise r.error("file", "a journal source reads a directory or a file, not both")
        family = r.text("family")
        default = family or next(iter(units + identifiers), None) or "journal"
        name = _unique(r.text("name") or default, r, names)
        specs.append(JournalSpec(name, family, units, identifiers,
                                 str(directory) if directory is not None else None,
                                 str(file) if file is not None else None))
    return tuple(specs)


def _servers(raw: Any, top: _Reader) -> ConfigPaths:
    """``[servers]``: where nginx's, uWSGI's and gunicorn's configuration is."""
    if raw is None:
        return ConfigPaths(cwd=str(top.base))
    if not isinstance(raw, dict):
        raise top.error("servers", "must be a table ([servers])")
    r = _Reader(raw, "servers.", top.source, top.base)
    r.unknown(SERVERS_KEYS)
    nginx = r.get("nginx_conf", str, "a path (\"\" to not read nginx's configuration)")

    def paths(key: str) -> tuple[str, ...]:
        values = r.get(key, list, "an array of strings") or []
        if not all(isinstance(v, str) and v.strip() and not any(c in v for c in "\0\n\r")
                   for v in values):
            raise r.error(key, "must be an array of non-empty strings")
        return tuple(values)

    return ConfigPaths(
        nginx=DEFAULT_NGINX_CONF if nginx is None else str(top.base / nginx) if nginx else None,
        uwsgi=tuple(str(top.base / v) for v in paths("uwsgi")),
        gunicorn=tuple(str(top.base / v) for v in paths("gunicorn")),
        gunicorn_commands=paths("gunicorn_command"),
        cwd=str(top.base))


def parse_config(data: Mapping[str, Any], *, source: str, base: Path) -> Config:
    """Validate a decoded TOML document (ConfigError on the first problem)."""
    r = _Reader(data, "", source, base)
    r.unknown(KEYS)
    listen = r.text("listen")
    try:
        address = parse_listen(listen or DEFAULT_LISTEN)
    except ValueError as exc:
        raise r.error("listen", str(exc)) from exc
    dirs = r.get("pattern_dirs", list, "an array of directories") or []
    if not all(isinstance(d, str) and d.strip() for d in dirs):
        raise r.error("pattern_dirs", "must be an array of directory names")
    start_at = r.get("start_at", str, "a string") or "end"
    if start_at not in START_AT:
        raise r.error("start_at", f"must be one of {', '.join(START_AT)}, got {start_at!r}")
    window = r.number("correlation_window_seconds", (int, float), CORRELATION_WINDOW_RANGE,
                      "a number of seconds")
    max_line = r.number("max_line_bytes", int, MAX_LINE_RANGE, "a number of bytes")
    buffer = r.number("incidents_buffer", int, INCIDENTS_BUFFER_RANGE, "a number of incidents")
    redact = r.get("redact", bool, "true or false")
    hosts = r.get("allowed_hosts", list, "an array of host names") or []
    bad = [h for h in hosts if not isinstance(h, str) or not valid_pattern(h)]
    if bad:
        raise r.error("allowed_hosts", f"{bad[0]!r} is not a host name, \".domain\" or \"*\"")
    names: dict[str, str] = {}
    logs = _logs(data["log"], r, names) if "log" in data else None
    journals = _journals(data["journal"], r, names) if "journal" in data else ()
    return Config(
        # a file that names journal sources and no log follows no file by default
        logs=logs if logs is not None else () if journals else DEFAULT_LOGS,
        journals=journals,
        listen=address,
        state_dir=r.path("state_dir") or default_state_dir(),
        pattern_dirs=tuple(base / d for d in dirs),
        max_line_bytes=_or(max_line, Config.max_line_bytes),
        correlation_window_seconds=float(_or(window, Config.correlation_window_seconds)),
        start_at=cast("Literal['end', 'beginning']", start_at),
        web_config=r.path("web_config"),
        incidents_buffer=_or(buffer, Config.incidents_buffer),
        redact=_or(redact, Config.redact),
        allowed_hosts=tuple(hosts),
        servers=_servers(data.get("servers"), r),
        source=source,
    )


def _or(value: Any, default: Any) -> Any:
    """The value set in the file, else the default (0 and false are values)."""
    return default if value is None else value


def read_config_file(path: Path) -> Config:
    """Read and validate one TOML file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("file", f"cannot read: {exc.strerror or exc}", str(path)) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("file", f"not valid TOML: {exc}", str(path)) from exc
    return parse_config(data, source=str(path), base=path.parent.absolute())


def load_config(overrides: Overrides) -> Config:
    """The file (``--config``, else the default path if it exists) with the flags applied."""
    path = overrides.config
    if path is None and DEFAULT_PATH.is_file():
        path = DEFAULT_PATH
    config = (read_config_file(path) if path is not None
              else parse_config({}, source="built-in defaults", base=Path.cwd()))
    changes: dict[str, Any] = {}
    if overrides.logs:
        changes["logs"] = tuple(LogSpec(os.path.abspath(p), os.path.abspath(p), None)  # noqa: PTH100 - globs stay str
                                for p in dict.fromkeys(overrides.logs))
    if overrides.journal_units:
        changes["journals"] = _unit_journals(overrides.journal_units,
                                             changes.get("logs", config.logs))
    if overrides.listen is not None:
        try:
            changes["listen"] = parse_listen(overrides.listen)
        except ValueError as exc:
            raise ConfigError("--listen", str(exc)) from exc
    if overrides.state_dir is not None:
        changes["state_dir"] = overrides.state_dir.absolute()
    if overrides.web_config is not None:
        changes["web_config"] = overrides.web_config.absolute()
    if overrides.pattern_dirs:
        changes["pattern_dirs"] = config.pattern_dirs + overrides.pattern_dirs
    return replace(config, **changes)


def _unit_journals(units: Collection[str], logs: Collection[LogSpec]) -> tuple[JournalSpec, ...]:
    """``--journal-unit``: one journal source per unit, named like the unit journalctl
    matches (``shop`` is ``shop.service``), its family told by each record's tag."""
    specs = []
    for unit in dict.fromkeys(units):
        name = unit if "." in unit else f"{unit}.service"
        if not unit.strip() or not unit.isprintable() or _GLOB & set(unit):
            raise ConfigError("--journal-unit", f"{unit!r} is not a unit name (globs are not "
                                                "matched)")
        if any(spec.name == name for spec in logs):
            raise ConfigError("--journal-unit", f"{name!r} is already the name of a log")
        specs.append(JournalSpec(name, None, (unit,)))
    return tuple(specs)


def check_families(config: Config, families: Collection[str]) -> None:
    """Every ``family`` names a family of the catalog (built-in or from pattern_dirs)."""
    tables: tuple[tuple[str, tuple[LogSpec | JournalSpec, ...]], ...] = (
        ("log", config.logs), ("journal", config.journals))
    for table, specs in tables:
        for n, spec in enumerate(specs, 1):
            if spec.family is not None and spec.family not in families:
                raise ConfigError(f"{table}[{n}].family",
                                  f"must be one of {', '.join(families)}, got {spec.family!r}",
                                  config.source)
