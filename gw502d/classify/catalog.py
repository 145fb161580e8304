"""The incident catalog: what each known incident looks like, as data in ``patterns/*.toml``.

One file per log family. A file names the family, the record prefix every line of that
family starts with, optionally the context fields the server appends after the message,
and a list of incidents; each incident has message templates, its meaning, its
remediation and example lines with their expected result (the catalog's own test data).
Users add files in a ``patterns.d`` directory; an entry with a built-in id replaces
nothing, it adds variants.

A malformed file raises :class:`CatalogError` naming the file, the entry and the problem.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gw502d.classify.predicates import PREDICATES, PROVIDES, VALUES
from gw502d.parse import FORMATS, Compiled, TemplateError, compile_template

SEVERITIES = ("critical", "error", "warning", "info")
STATUSES = (502, 503, 504, 499, None)


class CatalogError(ValueError):
    """A pattern file that cannot be used; the message names file, entry and problem."""

    def __init__(self, path: Path | str, entry: str, problem: str) -> None:
        super().__init__(f"{path}: {entry}: {problem}")
        self.path = str(path)
        self.entry = entry
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Example:
    """A sample line and what it must classify as (``incident`` None: not an incident)."""

    line: str
    incident: str | None
    fields: Mapping[str, Any]
    origin: str
    why: str = ""


@dataclass(frozen=True, slots=True)
class Consequence:
    """This line, when it follows ``incident`` with the same ``same`` facts, belongs to it.

    uWSGI writes a harakiri, then the killed worker's death: the death line is an incident
    of its own (``worker_died``) only when no harakiri of that worker_pid came before it.
    """

    incident: str
    same: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClientStatus:
    """What a client got for this incident from one server version, seen in a real test."""

    server: str  # the server and version that wrote the line, e.g. "gunicorn 20.1.0"
    via: str  # what stood between it and the client, e.g. "nginx 1.22.1 proxy_pass"
    status: int | None  # None: the connection closed without a response
    origin: str


@dataclass(frozen=True, slots=True)
class Incident:
    """One catalog entry: an incident id as logged by one family (the metric's source)."""

    id: str
    source: str
    severity: str
    status: int | None
    summary: str
    remediation: str
    docs: tuple[str, ...]
    messages: tuple[Compiled, ...]
    templates: tuple[str, ...]
    evidence: tuple[str, ...]
    examples: tuple[Example, ...]
    when: str | None = None
    companion: bool = False
    path: str = ""
    # a companion line's incident (its own id with the legacy ``companion = true``)
    companion_of: str | None = None
    consequence_of: tuple[Consequence, ...] = ()
    client_status: tuple[ClientStatus, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        """The metric label pair (incident, source)."""
        return (self.id, self.source)


@dataclass(frozen=True, slots=True)
class Family:
    """A log family: the record prefix, the appended context fields, and its incidents."""

    name: str
    description: str
    prefix: Compiled
    context: Compiled | None
    evidence_context: Compiled | None
    incidents: tuple[Incident, ...]
    benign: tuple[Example, ...]
    path: str = ""


@dataclass(frozen=True, slots=True)
class Catalog:
    """All families, in load order. Built-in files first, then user pattern directories."""

    families: tuple[Family, ...]
    files: tuple[str, ...] = field(default=())

    @property
    def incidents(self) -> tuple[Incident, ...]:
        return tuple(i for f in self.families for i in f.incidents)

    @property
    def keys(self) -> tuple[tuple[str, str], ...]:
        """Every (incident, source) pair once, in catalog order."""
        return tuple(dict.fromkeys(i.key for i in self.incidents if not i.companion))

    def incident(self, incident_id: str, source: str) -> Incident:
        """The first entry for the pair (variants of one pair share their texts)."""
        for i in self.incidents:
            if i.key == (incident_id, source):
                return i
        raise KeyError((incident_id, source))


def builtin_pattern_dir() -> Path:
    """The shipped catalog: ``gw502d/catalog`` when installed, ``patterns/`` in a checkout.

    Built artifacts carry ``patterns/*.toml`` as the package data ``gw502d/catalog``
    (pyproject.toml); a checkout or an editable install reads the repository's folder.
    """
    package = Path(__file__).resolve().parents[1]
    installed = package / "catalog"
    return installed if installed.is_dir() else package.parent / "patterns"


def _need(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
          path: Path) -> Any:
    if key not in table:
        raise CatalogError(path, where, f"missing key {key!r}")
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise CatalogError(path, where, f"{key!r} must be {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _compile(template: str, path: Path, where: str) -> Compiled:
    try:
        return compile_template(template)
    except TemplateError as exc:
        raise CatalogError(path, where, f"template {template!r}: {exc}") from exc


def _examples(raw: Any, path: Path, where: str, default: str | None) -> tuple[Example, ...]:
    if not isinstance(raw, list):
        raise CatalogError(path, where, "examples must be an array of tables")
    out = []
    for n, ex in enumerate(raw, 1):
        at = f"{where} example {n}"
        if not isinstance(ex, dict):
            raise CatalogError(path, at, "must be a table")
        line = _need(ex, "line", str, at, path)
        origin = _need(ex, "origin", str, at, path)
        incident = ex.get("incident", default)
        fields = ex.get("fields", {})
        if not isinstance(fields, dict):
            raise CatalogError(path, at, "'fields' must be a table")
        out.append(Example(line, incident or None, fields, origin, str(ex.get("why", ""))))
    return tuple(out)


def _template_names(text: str, path: Path, where: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError as exc:
        raise CatalogError(path, where, f"remediation template: {exc}") from exc


def _companion(raw: Mapping[str, Any], path: Path, where: str) -> tuple[str, str | None]:
    """(entry id, the incident it is a companion of) from ``id``/``companion``/``companion_of``.

    ``companion_of = "worker_harakiri"`` names the incident a companion line belongs to (its
    id is that incident's); the older ``companion = true`` means a companion of its own id.
    """
    of = raw.get("companion_of")
    flag = raw.get("companion", False)
    if not isinstance(flag, bool):
        raise CatalogError(path, where, "companion must be true or false")
    if of is None:
        ident = _need(raw, "id", str, where, path)
        return ident, ident if flag else None
    if not isinstance(of, str) or not of:
        raise CatalogError(path, where, "companion_of must be an incident id")
    if raw.get("id", of) != of:
        raise CatalogError(path, where, f"companion_of {of!r} and id {raw['id']!r} differ: "
                                        "a companion line counts under its incident's id")
    return of, of


def _consequences(raw: Any, names: set[str], path: Path, where: str) -> tuple[Consequence, ...]:
    if not isinstance(raw, list):
        raise CatalogError(path, where, "consequence_of must be an array of tables")
    out = []
    for n, item in enumerate(raw, 1):
        at = f"{where} consequence_of {n}"
        if not isinstance(item, dict) or set(item) - {"incident", "same"}:
            raise CatalogError(path, at, "must be a table with 'incident' and 'same'")
        incident = _need(item, "incident", str, at, path)
        same = _need(item, "same", list, at, path)
        if not same or not all(isinstance(s, str) for s in same):
            raise CatalogError(path, at, "'same' must name the facts both lines carry")
        missing = set(same) - names
        if missing:
            raise CatalogError(path, at, f"{sorted(missing)} not captured by every message")
        out.append(Consequence(incident, tuple(same)))
    return tuple(out)


def _client_statuses(raw: Any, path: Path, where: str) -> tuple[ClientStatus, ...]:
    if not isinstance(raw, list):
        raise CatalogError(path, where, "client_status must be an array of tables")
    out = []
    for n, item in enumerate(raw, 1):
        at = f"{where} client_status {n}"
        if not isinstance(item, dict) or set(item) - {"server", "via", "status", "origin"}:
            raise CatalogError(path, at, "keys are server, via, status, origin")
        status = item.get("status", "none")
        if status == "none":
            status = None
        elif not isinstance(status, int) or isinstance(status, bool) or not 100 <= status < 600:
            raise CatalogError(path, at, f"status must be an HTTP status or 'none' (the "
                                         f"connection closed without one), got {status!r}")
        out.append(ClientStatus(_need(item, "server", str, at, path),
                                _need(item, "via", str, at, path), status,
                                _need(item, "origin", str, at, path)))
    return tuple(out)


def _incident(raw: Any, family: str, captures: set[str], path: Path, n: int) -> Incident:
    where = f"incident {n}"
    if not isinstance(raw, dict):
        raise CatalogError(path, where, "must be a table")
    ident, companion_of = _companion(raw, path, where)
    where = f"incident {ident!r}"
    if not ident.isidentifier() or not ident.islower():
        raise CatalogError(path, where, "id must be lower_snake_case")
    severity = _need(raw, "severity", str, where, path)
    if severity not in SEVERITIES:
        raise CatalogError(path, where, f"severity must be one of {SEVERITIES}")
    status = raw.get("status")
    if status == "none":
        status = None
    if status not in STATUSES:
        raise CatalogError(path, where, f"status must be one of 502, 503, 504, 499 or 'none', "
                                        f"got {status!r}")
    templates = _need(raw, "messages", list, where, path)
    if not templates or not all(isinstance(t, str) for t in templates):
        raise CatalogError(path, where, "messages must be a non-empty array of strings")
    messages = tuple(_compile(t, path, where) for t in templates)
    known = set(captures)
    for m in messages:
        known.update(m.names)
    when = raw.get("when")
    if when is not None:
        if when not in PREDICATES:
            raise CatalogError(path, where, f"unknown predicate {when!r} "
                                            f"(known: {', '.join(sorted(PREDICATES))})")
        fact = VALUES[when][0]
        if not all(fact in m.names for m in messages):
            raise CatalogError(path, where, f"predicate {when!r} reads {{{fact}}}: "
                                            "every message must capture it")
        known.update(PROVIDES[when])
    evidence = tuple(raw.get("evidence", ()))
    unknown = set(evidence) - known
    if unknown:
        raise CatalogError(path, where, f"evidence names unknown facts {sorted(unknown)}")
    remediation = _need(raw, "remediation", str, where, path)
    unknown = _template_names(remediation, path, where) - set(evidence)
    if unknown:
        raise CatalogError(path, where, f"remediation uses {sorted(unknown)}, which are not "
                                        "listed in 'evidence'")
    docs = raw.get("docs", [])
    if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
        raise CatalogError(path, where, "docs must be an array of URLs")
    examples = _examples(raw.get("example", []), path, where, ident)
    in_every = set.intersection(*(set(m.names) for m in messages))
    consequence_of = _consequences(raw.get("consequence_of", []), in_every, path, where)
    if consequence_of and companion_of is not None:
        raise CatalogError(path, where, "a companion line is never an incident of its own: "
                                        "consequence_of is for incident entries")
    extra = set(raw) - {"id", "severity", "status", "summary", "messages", "evidence",
                        "remediation", "docs", "example", "companion", "companion_of",
                        "consequence_of", "client_status", "when"}
    if extra:
        raise CatalogError(path, where, f"unknown keys {sorted(extra)}")
    return Incident(
        id=ident, source=family, severity=severity, status=status,
        summary=_need(raw, "summary", str, where, path), remediation=remediation,
        docs=tuple(docs), messages=messages, templates=tuple(templates), evidence=evidence,
        examples=examples, when=when, companion=companion_of is not None, path=str(path),
        companion_of=companion_of, consequence_of=consequence_of,
        client_status=_client_statuses(raw.get("client_status", []), path, where),
    )


def parse_family(data: Mapping[str, Any], path: Path) -> Family:
    """Validate one decoded pattern file."""
    name = _need(data, "family", str, "file", path)
    fmt = FORMATS.get(name)
    if fmt is not None:
        if "prefix" in data or "context" in data:
            raise CatalogError(path, "family", f"the line format of {name!r} is built in "
                                               f"(gw502d.parse.{name}); remove prefix/context")
        prefix = compile_template(fmt.prefix)
        context = compile_template(fmt.context) if fmt.context else None
        evidence_context = (compile_template(fmt.evidence_context)
                            if fmt.evidence_context else context)
    else:
        prefix = _compile(_need(data, "prefix", str, "family", path), path, "prefix")
        context = _compile(data["context"], path, "context") if "context" in data else None
        evidence_context = context
    captures = set(prefix.names) | set(context.names if context else ())
    raw_incidents = data.get("incident", [])
    if not isinstance(raw_incidents, list):
        raise CatalogError(path, "file", "'incident' must be an array of tables ([[incident]])")
    incidents = tuple(_incident(r, name, captures, path, n) for n, r in enumerate(raw_incidents, 1))
    benign = _examples(data.get("benign", []), path, "benign", None)
    return Family(name, str(data.get("description", "")), prefix, context, evidence_context,
                  incidents, benign, str(path))


def load_file(path: Path) -> Family:
    """Read and validate one pattern file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(path, "file", f"cannot read: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(path, "file", f"not valid TOML: {exc}") from exc
    return parse_family(data, path)


def _merge(families: Sequence[Family]) -> tuple[Family, ...]:
    """User files for an existing family add incidents to it; they keep the built-in prefix."""
    merged: dict[str, Family] = {}
    for fam in families:
        have = merged.get(fam.name)
        if have is None:
            merged[fam.name] = fam
            continue
        merged[fam.name] = replace(have, incidents=have.incidents + fam.incidents,
                                   benign=have.benign + fam.benign)
    return tuple(merged.values())


def pattern_files(dirs: Iterable[Path]) -> list[Path]:
    """The ``*.toml`` files of each directory, sorted by name, directories in order."""
    return [f for d in dirs for f in sorted(Path(d).glob("*.toml"))]


def load_catalog(extra_dirs: Iterable[Path | str] = (), *, builtin: bool = True,
                 files: Iterable[Path | str] = ()) -> Catalog:
    """Load the built-in catalog, then every ``*.toml`` in *extra_dirs*, then *files*.

    A built-in catalog that is missing or holds no incident is an error: a daemon without
    it would follow logs, count nothing and look healthy.
    """
    paths = []
    if builtin:
        home = builtin_pattern_dir()
        paths = pattern_files([home])
        if not paths:
            raise CatalogError(home, "catalog", "no pattern files (*.toml) here: the built-in "
                               "incident catalog is missing, reinstall gw502d")
    paths += pattern_files(Path(d) for d in extra_dirs)
    paths += [Path(f) for f in files]
    catalog = Catalog(_merge([load_file(p) for p in paths]), tuple(str(p) for p in paths))
    if builtin and not catalog.keys:
        raise CatalogError(home, "catalog", "the pattern files here define no incident")
    for family in catalog.families:
        _check_links(family)
    return catalog


def _check_links(family: Family) -> None:
    """Companions and consequences name incidents of their family that are counted, and a
    consequence's shared facts are captured by every message of the incident it follows."""
    counted: dict[str, list[Incident]] = {}
    for i in family.incidents:
        if not i.companion:
            counted.setdefault(i.id, []).append(i)
    for i in family.incidents:
        where = f"incident {i.id!r}"
        if i.companion_of is not None and i.companion_of not in counted:
            raise CatalogError(i.path, where, f"companion_of {i.companion_of!r}: no such "
                                              f"incident in family {family.name!r}")
        for c in i.consequence_of:
            if c.incident not in counted:
                raise CatalogError(i.path, where, f"consequence_of {c.incident!r}: no such "
                                                  f"incident in family {family.name!r}")
            for other in counted[c.incident]:
                for m in other.messages:
                    if not set(c.same) <= set(m.names):
                        raise CatalogError(i.path, where, f"consequence_of {c.incident!r}: "
                                           f"its message {m.source!r} does not capture "
                                           f"{sorted(set(c.same) - set(m.names))}")
