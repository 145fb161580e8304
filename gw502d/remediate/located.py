"""Advice located in this host's configuration: the block or option to change, its file:line,
the value in force and the new one, with the rule that makes the new one right.

Each function returns None when the configuration does not tell (nginx's config not read,
no location passes to the upstream, no uWSGI/gunicorn config binds its peer): the caller
then gives the generic advice. One sentence per change, and each change as an edit
(:class:`Change`) that ``gw502d fix`` turns into a diff. Values in sentences come from the
configuration files, never from a log line but the numbers gw502d reads (block sizes).
"""

from __future__ import annotations

import grp
import pwd
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gw502d.remediate import backend
from gw502d.remediate.advice import Advice, Context
from gw502d.remediate.configured import Backend, Bind
from gw502d.remediate.hostconf import (
    GunicornConfig,
    GunicornEdit,
    Handler,
    NginxConfig,
    NginxEdit,
    Setting,
    UwsgiConfig,
    UwsgiEdit,
)
from gw502d.remediate.hostconf.uwsgiconf import DEFAULTS as UWSGI_DEFAULTS
from gw502d.remediate.nginx import (
    Upstream,
    header_buffer_changes,
    parse_size,
    parse_time,
    power_of_two_at_least,
    time_text,
)

# Locations changed for one upstream at most (more are said, not listed)
MAX_BLOCKS = 4
# uWSGI's and gunicorn's request time limit, and what they call it
_LIMIT = {"uwsgi": "harakiri", "gunicorn": "timeout"}


@dataclass(frozen=True, slots=True, eq=False)
class Change:
    """One edit in this host's configuration and the sentence saying what and why."""

    target: NginxConfig | UwsgiConfig | GunicornConfig
    edit: NginxEdit | UwsgiEdit | GunicornEdit
    sentence: str


@dataclass
class _Draft:
    """Sentences and changes of one advice, in the order they are said."""

    sentences: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    nginx: dict[str, str] = field(default_factory=dict)
    uwsgi: dict[str, str] = field(default_factory=dict)
    gunicorn: dict[str, str] = field(default_factory=dict)

    def say(self, sentence: str) -> None:
        if sentence not in self.sentences:
            self.sentences.append(sentence)

    def nginx_edit(self, cfg: NginxConfig, h: Handler, directive: str, value: str,
                   sentence: str, *, instead_of: str | None = None) -> None:
        self.say(sentence)
        self.changes.append(Change(cfg, NginxEdit(h.location, directive, value, instead_of),
                                   sentence))
        self.nginx[directive] = value

    def backend_edit(self, b: Backend, name: str, value: int | str, sentence: str) -> None:
        self.say(sentence)
        if b.uwsgi is not None:
            self.changes.append(Change(b.uwsgi, UwsgiEdit(name, str(value)), sentence))
            self.uwsgi[name] = str(value)
        elif b.gunicorn is not None:
            self.changes.append(Change(b.gunicorn, GunicornEdit(name, value), sentence))
            self.gunicorn[name] = str(value)

    def advice(self, prefix: str = "", cause: str | None = None) -> Advice | None:
        if not self.sentences:
            return None
        said = ([prefix] if prefix else []) + self.sentences
        return Advice(" ".join(said), cause, nginx=self.nginx, uwsgi=self.uwsgi,
                      gunicorn=self.gunicorn, changes=tuple(self.changes),
                      sentences=tuple(said))


# --------------------------------------------------------------------------- finding


def handlers(ctx: Context, up: Upstream) -> list[Handler]:
    """The locations that pass to *up*: the one the failing requests' server and URI select
    when known (``gw502d fix`` reads them from the lines), else every one passing to it."""
    nginx = ctx.conf.nginx if ctx.conf is not None else None
    if nginx is None:
        return []
    server, uri = (ctx.routes or {}).get(str(up), (None, None))
    found = nginx.find(str(up), server=server, uri=uri).handlers
    if not found and server is not None:
        found = nginx.find(str(up)).handlers
    out: list[Handler] = []
    for h in found:
        if not h.pass_.conditional and all(h.location is not o.location for o in out):
            out.append(h)
    return out


def _backend_handlers(ctx: Context, b: Backend) -> list[Handler]:
    """The locations passing to any address *b* binds (when no error line named one)."""
    nginx = ctx.conf.nginx if ctx.conf is not None else None
    if nginx is None:
        return []
    return [h for h in nginx.routes() if not h.pass_.conditional
            and any(bind.serves(peer) for bind in b.binds for peer in h.pass_.peers)]


def backend_of(ctx: Context, up: Upstream | None,
               server: Literal["uwsgi", "gunicorn"] | None) -> tuple[Backend, Bind | None] | None:
    """The backend behind *up* (its config binds nginx's peer); without an upstream, the
    only configured backend of *server*; None when the configuration does not say which (a
    peer no configured backend binds is another host's, or one not configured here)."""
    if ctx.conf is None:
        return None
    if up is not None:
        found = [(b, bind) for b, bind in ctx.conf.backends_for(up.peer)
                 if server is None or b.server == server]
        return found[0] if len(found) == 1 else None
    only = ctx.conf.only(server) if server is not None else None
    return (only, None) if only is not None else None


# --------------------------------------------------------------------------- wording


def _in(h: Handler, s: Setting) -> str:
    """"In FILE:LINE (location /api/, uwsgi_pass X) D is V", V with where it comes from."""
    loc = h.location
    where = s.where if s.level == "location" and s.where is not None else loc.statement.where
    if s.level == "location":
        value = str(s.value)
    elif s.statements:
        value = f"{s.value}, inherited from the {s.level} block ({s.where})"
    elif s.value is not None:
        value = f"{s.value} (nginx's default)"
    else:
        value = "not set"
    return f"In {where} ({loc.text}, {h.pass_.statement}) {s.directive} is {value}"


def _option(b: Backend, name: str) -> tuple[int | None, str]:
    """A backend's integer option and "harakiri is 6 in shop.ini:9" (None: unknown)."""
    if b.uwsgi is not None:
        opt = b.uwsgi.last(name)
        if opt is not None:
            return b.uwsgi.number(name), f"{name} is {opt.value or 'set'} in {opt.where}"
        default = UWSGI_DEFAULTS.get(name)
        if default is None:
            return None, f"{name} is not set in {b.name}"
        return int(default), f"{name} is not set in {b.name} (uWSGI's default: {default})"
    assert b.gunicorn is not None
    s = b.gunicorn.get(name)
    value = s.value if isinstance(s.value, int) and s.known else None
    if s.where is None:
        return value, f"{name} is {s.text} (gunicorn's default)"
    return value, f"{name} is {s.text if s.known else 'unknown (' + s.text + ')'} in {s.where}"


# --------------------------------------------------------------------------- nginx buffers


def header_buffers(ctx: Context, up: Upstream) -> Advice | None:
    """upstream_header_too_big: a bigger header buffer in each location passing to *up*,
    relative to the one in force, with the buffer rules nginx -t enforces."""
    family = up.family
    found = handlers(ctx, up)
    if family is None or not found or ctx.conf is None or ctx.conf.nginx is None:
        return None
    page, draft = ctx.host.page_size, _Draft()
    for h in found[:MAX_BLOCKS]:
        current = h.setting(f"{family}_buffer_size", page)
        size = parse_size(current.value) or page
        new = power_of_two_at_least(max(2 * size, 4 * page))
        buffers = h.setting(f"{family}_buffers", page)
        busy = h.setting(f"{family}_busy_buffers_size", page)
        temp = h.setting(f"{family}_temp_file_write_size", page)
        changes = header_buffer_changes(
            family, new, buffers.value, busy.value if busy.statements else None,
            temp.value if temp.statements else None)
        shown = {s.directive: s for s in (current, buffers, busy, temp)}
        for c in changes:
            draft.nginx_edit(ctx.conf.nginx, h, c.directive, c.value,
                             f"{_in(h, shown[c.directive])}; {c.reason}. "
                             f"Set {c.directive} {c.value}.")
    _more(draft, found)
    return draft.advice()


def _more(draft: _Draft, found: Sequence[Handler]) -> None:
    if len(found) > MAX_BLOCKS:
        draft.say(f"{len(found) - MAX_BLOCKS} more location(s) pass to the same upstream: "
                  "change them the same way.")


# --------------------------------------------------------------------------- timeouts


def read_timeout(ctx: Context, up: Upstream, said: str, cause: str | None) -> Advice | None:
    """upstream_timeout, read phase: nginx gave up while the application still worked. Its
    read timeout must be above the backend's own request limit."""
    family, found = up.family, handlers(ctx, up)
    if family is None or not found or ctx.conf is None or ctx.conf.nginx is None:
        return None
    nginx, draft = ctx.conf.nginx, _Draft()
    behind = backend_of(ctx, up, None)
    limit: int | None = None
    reason = ""
    if behind is None:
        unknown = (f"no uWSGI or gunicorn config given binds {up.peer}, so its request time "
                   f"limit is unknown: keep {family}_read_timeout above it.")
    else:
        b = behind[0]
        limit, limit_said = _option(b, _LIMIT[b.server])
        unknown = f"{limit_said}: keep {family}_read_timeout above it."
        reason = f"{limit_said}, so nginx gives up first"
        if b.server == "uwsgi" and limit == 0:
            limit = backend.BACKEND_TIMEOUT
            draft.backend_edit(b, "harakiri", limit,
                               f"{limit_said}: uWSGI never ends a stuck request, and one nginx "
                               f"gave up on keeps its worker. Set harakiri = {limit}.")
            reason = f"it must stay above harakiri ({limit}, as set above)"
    for h in found[:MAX_BLOCKS]:
        current = h.setting(f"{family}_read_timeout")
        seconds = parse_time(current.value)
        if limit is None:
            draft.say(f"{_in(h, current)}; {unknown}")
        elif seconds is not None and seconds > limit:
            draft.say(f"{_in(h, current)}, above the application's limit ({limit}): the "
                      "requests waited in its listen queue, every worker busy. Add workers "
                      "or make requests faster.")
        else:
            new = time_text(backend.read_timeout_above(limit))
            draft.nginx_edit(nginx, h, f"{family}_read_timeout", new,
                             f"{_in(h, current)}; {reason}. Set {family}_read_timeout {new}.")
    _more(draft, found)
    return draft.advice(said, cause)


def killed_by_limit(ctx: Context, up: Upstream | None, server: Literal["uwsgi", "gunicorn"],
                    what: str, cause: str) -> Advice | None:
    """The backend's request limit (harakiri, gunicorn's timeout) killed a worker: raise
    it, and keep nginx's read timeout above the new value."""
    behind = backend_of(ctx, up, server)
    if behind is None or ctx.conf is None:
        return None
    b, name = behind[0], _LIMIT[server]
    limit, limit_said = _option(b, name)
    if not limit:
        return None
    new = backend.raised_limit(limit)
    draft = _Draft()
    draft.backend_edit(b, name, new, f"{limit_said}; {what}. Set {name} = {new} (twice the "
                       f"current value, and at least {backend.BACKEND_TIMEOUT}) if requests "
                       "that slow are legitimate; else fix them.")
    found = handlers(ctx, up) if up is not None else _backend_handlers(ctx, b)
    nginx = ctx.conf.nginx
    for h in found[:MAX_BLOCKS]:
        family = h.pass_.family
        current = h.setting(f"{family}_read_timeout")
        seconds = parse_time(current.value)
        if nginx is not None and (seconds is None or seconds <= new):
            value = time_text(backend.read_timeout_above(new))
            draft.nginx_edit(nginx, h, f"{family}_read_timeout", value,
                             f"{_in(h, current)}; it must stay above {name} ({new}), so that "
                             f"the application, not nginx, ends a stuck request. Set "
                             f"{family}_read_timeout {value}.")
    return draft.advice(cause=cause)


# --------------------------------------------------------------------------- uWSGI buffer


def block_size(ctx: Context, up: Upstream | None, block: int) -> Advice | None:
    """request_block_too_big: uWSGI's buffer-size from the largest request seen."""
    behind = backend_of(ctx, up, "uwsgi")
    if behind is None:
        return None
    b = behind[0]
    current, said = _option(b, "buffer-size")
    size, over = backend.uwsgi_buffer_size(block)
    if current is not None and size <= current:
        return None
    draft = _Draft()
    cap = (" That is the most a uwsgi packet carries (its size field is 16 bits): beyond "
           "it, shrink cookies/headers or serve HTTP (http-socket) behind proxy_pass."
           if over else "")
    draft.backend_edit(b, "buffer-size", size,
                       f"{said}; requests carried up to {block} bytes of variables (URI, "
                       f"headers, cookies). Set buffer-size = {size}.{cap}")
    return draft.advice(cause="request_block_too_big")


# --------------------------------------------------------------------------- protocol


def pass_with(ctx: Context, up: Upstream, family: str, cause: str | None) -> Advice | None:
    """The location speaks the wrong protocol to *up*: pass with *family*'s directive
    instead (``uwsgi_pass`` + uwsgi_params for a uwsgi socket, ``proxy_pass`` for HTTP)."""
    found = [h for h in handlers(ctx, up) if h.pass_.family == up.family]
    if not found or ctx.conf is None or ctx.conf.nginx is None:
        return None
    nginx, draft = ctx.conf.nginx, _Draft()
    directive, target = up.pass_directive(family)
    behind = backend_of(ctx, up, None)
    speaks = "the uwsgi protocol" if family == "uwsgi" else "HTTP"
    there = f": {behind[1].option}" if behind is not None and behind[1] is not None else ""
    params = Path(nginx.files.conf).parent / "uwsgi_params"
    for h in found[:MAX_BLOCKS]:
        where = h.pass_.statement.where
        head = (f"In {where} ({h.location.text}) nginx passes with {h.pass_.statement}, but "
                f"{up.peer} speaks {speaks}{there}")
        draft.nginx_edit(nginx, h, directive, target,
                         f"{head}. Replace it with {directive} {target}.",
                         instead_of=h.pass_.statement.name)
        if family == "uwsgi" and not h.setting("uwsgi_param").statements:
            if params.is_file():
                draft.nginx_edit(nginx, h, "include", "uwsgi_params",
                                 f"{h.location.text} ({h.location.statement.where}) has no "
                                 "uwsgi_param: add include uwsgi_params.")
            else:
                draft.say(f"{params} does not exist: give {h.location.text} the uwsgi_param "
                          "lines the application needs.")
    return draft.advice(cause=cause)


# --------------------------------------------------------------------------- sockets


def _socket_state(path: str) -> str:
    try:
        st = Path(path).stat()
    except OSError as e:
        return f"{path} cannot be inspected ({e.strerror})"
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{path} is {stat.filemode(st.st_mode)} {owner}:{group}"


def socket_owner(ctx: Context, up: Upstream, path: str) -> Advice | None:
    """upstream_socket_permission: let the backend create its socket for nginx's workers."""
    behind = backend_of(ctx, up, None)
    user = ctx.conf.nginx_user() if ctx.conf is not None else None
    if behind is None or user is None:
        return None
    b, (name, group, where) = behind[0], user
    workers = f"nginx's workers run as {name} ({where}) and {_socket_state(path)}"
    draft = _Draft()
    if b.uwsgi is not None:
        _, mode = _option(b, "chmod-socket")
        _, owner = _option(b, "chown-socket")
        draft.backend_edit(b, "chmod-socket", "660", f"{workers}; {mode}. Set chmod-socket "
                           "= 660, read and write for the socket's owner and group.")
        draft.backend_edit(b, "chown-socket", f"{name}:{group}",
                           f"{owner}. Set chown-socket = {name}:{group} (uWSGI applies it "
                           "while it still runs as root).")
    else:
        _, umask = _option(b, "umask")
        _, current = _option(b, "group")
        draft.backend_edit(b, "umask", 0o007, f"{workers}; {umask}. Set umask = 0o007, so "
                           "that gunicorn creates its socket for its group.")
        draft.backend_edit(b, "group", group, f"{current}. Set group = {group!r}, the "
                           "group of nginx's workers (gunicorn's workers run with it too).")
    return draft.advice()


def listen_queue(ctx: Context, up: Upstream | None,
                 server: Literal["uwsgi", "gunicorn"] | None) -> Advice | None:
    """The backend's listen queue overflowed: a longer one, below net.core.somaxconn."""
    behind = backend_of(ctx, up, server)
    if behind is None:
        return None
    b = behind[0]
    name = "listen" if b.server == "uwsgi" else "backlog"
    current, said = _option(b, name)
    somaxconn = ctx.host.somaxconn
    new, ceiling = backend.listen_backlog(current, somaxconn)
    kernel = (f"; the kernel allows up to {somaxconn} (net.core.somaxconn)"
              if somaxconn is not None else "")
    draft = _Draft()
    if current is not None and new <= current:
        draft.say(f"{said}{kernel}: the queue cannot grow. Add processes or make requests "
                  "faster.")
    else:
        draft.backend_edit(b, name, new, f"{said}; every worker was busy and the queue "
                           f"overflowed{kernel}. Set {name} = {new}.")
    if ceiling is not None:
        draft.say(f"To go to {ceiling}, first raise net.core.somaxconn in /etc/sysctl.d.")
    return draft.advice()
