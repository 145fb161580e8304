"""The remediation for an incident: the change to make on this host, from the facts seen.

Each built-in incident has a builder that reads the facts seen for it (with their counts),
this host's facts and, when given, what other logs said (root causes, other incidents'
facts) and computes the change. Where a builder knows too little it returns None and the
catalog's text is filled in with the most common facts instead.

When this host's configuration is known (:attr:`Context.conf`), the builders of
:mod:`located` name the block or option to change, its file:line, the value in force and
the new one; without it the generic advice stays. Advice that depends on the upstream is
given per upstream (:func:`advise_upstreams`), each from the facts seen with it.

Texts become a Prometheus label value: they are bounded (:data:`MAX_TEXT`) and are built
only from catalog wording, numbers computed here, and configuration read from the lines
(nginx's upstream scheme and peer, socket paths) or from the config files: never the URI,
client, Host or Referer.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from gw502d.classify.catalog import Incident
from gw502d.classify.tally import Tallies
from gw502d.remediate import backend, nginx
from gw502d.remediate.correlate import CAUSES, Pairing
from gw502d.remediate.host import HostFacts, host_facts
from gw502d.remediate.nginx import DEFAULT_READ_TIMEOUT, OTHER, Upstream

if TYPE_CHECKING:
    from gw502d.remediate.configured import HostConfig
    from gw502d.remediate.located import Change

FactCount = tuple[Mapping[str, Any], int]
MAX_TEXT = 640
MAX_VALUE = 120  # one configuration value (path, upstream) inside a text


@dataclass(frozen=True, slots=True)
class Advice:
    """What to change: a text for people and the same change as data for tools.

    ``nginx``: directives for the location that passes to the upstream (a ``*_pass``
    entry replaces the location's pass directive); ``uwsgi``: options as in an ini
    ``[uwsgi]`` section ("true" is a flag); ``gunicorn``: gunicorn.conf.py settings;
    ``sysctl``: kernel settings. ``cause`` is the root cause the advice addresses.
    With this host's configuration known, ``changes`` are the same changes located in its
    files (``gw502d fix`` plans them) and ``sentences`` say each one (``text`` joins them,
    bounded; they are not).
    """

    text: str
    cause: str | None = None
    nginx: Mapping[str, str] = field(default_factory=dict)
    uwsgi: Mapping[str, str] = field(default_factory=dict)
    gunicorn: Mapping[str, str] = field(default_factory=dict)
    sysctl: Mapping[str, str] = field(default_factory=dict)
    changes: tuple[Change, ...] = ()
    sentences: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Context:
    """What else is known when advising on one incident: the host, the tallies of every
    incident (other logs' facts), the correlator that paired root causes, and counts that
    outlive them (``causes`` and ``counts``: the daemon's, restored across restarts and
    reloads, used instead of the correlator's and the tallies' own). ``conf`` is this
    host's server configuration, when read; ``routes`` the server name and URI the failing
    requests to each upstream named most (``gw502d fix`` reads them from the lines), to
    find the location that handled them."""

    host: HostFacts = field(default_factory=host_facts)
    tallies: Tallies | None = None
    correlator: Pairing | None = None
    causes: Mapping[tuple[str, str], int] | None = None
    counts: Mapping[tuple[str, str], int] | None = None
    conf: HostConfig | None = None
    routes: Mapping[str, tuple[str | None, str | None]] | None = None

    def evidence(self, incident: str, source: str) -> list[FactCount]:
        if self.tallies is None or (incident, source) not in self.tallies.keys:
            return []
        return list(self.tallies.evidence((incident, source)))

    def count(self, incident: str, source: str) -> int:
        if self.counts is not None:
            return self.counts.get((incident, source), 0)
        if self.tallies is None:
            return 0
        return self.tallies.totals()[0].get((incident, source), 0)

    def top_cause(self, incident: str, up: Upstream | None = None) -> tuple[str | None, int]:
        """The root cause most often paired with an nginx *incident* (with upstream *up*:
        among the causes paired with that upstream, else those its scheme can have), and
        how often."""
        causes = self.causes
        if causes is None:
            causes = self.correlator.counts if self.correlator is not None else {}
        found = {c: n for (i, c), n in causes.items() if i == incident and n}
        if up is not None and found:
            paired = self.correlator.upstreams if self.correlator is not None else {}
            here = {c: m for c in found if (m := sum(
                k for u, k in paired.get(c, {}).items() if Upstream.parse(u) == up))}
            found = here or {c: n for c, n in found.items() if up.family in CAUSES[c].families}
        if not found:
            return None, 0
        cause = max(found, key=lambda c: found[c])
        return cause, found[cause]

    def label(self, upstream: object) -> str:
        """The upstream label of a fact (``other`` unless nginx's configuration has it)."""
        if self.conf is None or not isinstance(upstream, str):
            return OTHER
        return self.conf.label(upstream)

    def backend(self, cause: str) -> int | None:
        """Backend events of *cause* (None: no correlation ran)."""
        return None if self.correlator is None else self.correlator.backend.get(cause, 0)

    def upstream_of(self, cause: str) -> Upstream | None:
        """The nginx upstream a backend cause was most often paired with."""
        seen = self.correlator.upstreams.get(cause) if self.correlator else None
        return Upstream.parse(max(seen, key=lambda u: seen[u])) if seen else None


class _Seen:
    """The facts seen for one incident, with counts."""

    def __init__(self, evidence: Sequence[FactCount]) -> None:
        self.evidence = evidence

    def top(self, name: str) -> Any:
        counts: Counter[Any] = Counter()
        for facts, n in self.evidence:
            if name in facts:
                counts[facts[name]] += n
        return counts.most_common(1)[0][0] if counts else None

    def largest(self, name: str) -> int | None:
        values = [f[name] for f, _ in self.evidence if isinstance(f.get(name), int)]
        return max(values) if values else None

    def upstream(self) -> Upstream | None:
        value = self.top("upstream")
        return Upstream.parse(value) if isinstance(value, str) else None


Builder = Callable[[_Seen, Context], Advice | None]


def _value(value: object) -> str:
    """A configuration value from a log line, printable and bounded."""
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE - 3] + "..."


def _prefixed(advice: Advice, prefix: str, cause: str | None = None) -> Advice:
    """*advice* after *prefix* (a sentence of its own when the advice has sentences)."""
    sentences = (prefix.strip(), *advice.sentences) if advice.sentences else ()
    return replace(advice, text=prefix + advice.text, cause=cause or advice.cause,
                   sentences=sentences)


# --------------------------------------------------------------------------- shared fixes

_LIMITS = {"uwsgi": ("harakiri", "uWSGI"), "gunicorn": ("timeout", "gunicorn.conf.py")}
# The application servers that can sit behind each nginx module
_BACKENDS = {"uwsgi": ("uwsgi",), "proxy": ("gunicorn", "uwsgi")}


def _keep_order(family: str, backends: Sequence[str]) -> Advice:
    """nginx's read timeout above the application's own limit, each side named."""
    conf = {f"{family}_read_timeout": f"{DEFAULT_READ_TIMEOUT}s"}
    if not backends:
        return Advice(f"keep {family}_read_timeout above the backend's own request time limit "
                      f"(e.g. {nginx.render(conf)}).", nginx=conf)
    limits = {b: {_LIMITS[b][0]: str(backend.BACKEND_TIMEOUT)} for b in backends}
    names = " / ".join(f"{_LIMITS[b][0]} ({_LIMITS[b][1]})" for b in backends)
    theirs = " / ".join(f"{backend.render(limits[b])} ({_LIMITS[b][1]})" for b in backends)
    return Advice(
        f"keep {family}_read_timeout above {names}, e.g. {nginx.render(conf)} in the nginx "
        f"location with {theirs}.",
        nginx=conf, uwsgi=limits.get("uwsgi", {}), gunicorn=limits.get("gunicorn", {}))


def _killed_by_limit(up: Upstream | None, backend: str, default: str, *, what: str, fix: str,
                     cause: str) -> Advice:
    """The backend's own time limit killed the worker: nginx's timeout is not the lever."""
    family = up.family if up and up.family else default
    return _prefixed(
        _keep_order(family, (backend,)),
        f"{what}, so raising {family}_read_timeout alone changes nothing. {fix} and ", cause)


# backend -> (nginx family by default, what happened, the fix, the cause it is)
_LIMIT_KILLS = {
    "uwsgi": ("uwsgi", "uWSGI's harakiri killed the worker mid-request",
              "Fix the slow requests, or raise harakiri above the slowest legitimate one",
              "worker_harakiri"),
    "gunicorn": ("proxy", "gunicorn killed the worker after its timeout",
                 "Fix the slow view (or use gthread/async workers), or raise timeout above the "
                 "slowest legitimate request", "gunicorn_worker_timeout"),
}


def _limit_killed(ctx: Context, up: Upstream | None, server: Literal["uwsgi", "gunicorn"]
                  ) -> Advice:
    """The backend's request limit killed a worker: located when the config tells."""
    default, what, fix, cause = _LIMIT_KILLS[server]
    if ctx.conf is not None:
        from gw502d.remediate import located  # noqa: PLC0415 - loaded with the config

        found = located.killed_by_limit(ctx, up, server, what, cause)
        if found is not None:
            return found
    return _killed_by_limit(up, server, default, what=what, fix=fix, cause=cause)


def _harakiri(ctx: Context, up: Upstream | None) -> Advice:
    return _limit_killed(ctx, up, "uwsgi")


def _gunicorn_timeout(ctx: Context, up: Upstream | None) -> Advice:
    return _limit_killed(ctx, up, "gunicorn")


def _oom_killed() -> Advice:
    conf = {"max-requests": str(backend.RECYCLE_AFTER)}
    return Advice(
        "A uWSGI worker got SIGKILL without harakiri: most likely the kernel's OOM killer "
        f"(see dmesg). Run fewer processes, recycle workers ({backend.render(conf)}) or cap "
        "their memory (reload-on-rss = <MB>, times processes below the RAM).",
        "worker_oom_killed", uwsgi=conf)


def _crashed() -> Advice:
    return Advice(
        "A uWSGI worker crashed (a signal other than 9): a bug in a C extension or native "
        "library. uWSGI logs its backtrace after '!!! uWSGI process ... got Segmentation "
        "Fault !!!'; update or replace that library.", "worker_crashed")


def _gunicorn_killed() -> Advice:
    conf = {"max_requests": str(backend.RECYCLE_AFTER),
            "max_requests_jitter": str(backend.RECYCLE_AFTER // 10)}
    return Advice(
        "A gunicorn worker got SIGKILL: most likely the kernel's OOM killer (see dmesg). "
        f"Recycle workers ({backend.render(conf)} in gunicorn.conf.py) or run fewer.",
        "gunicorn_worker_killed", gunicorn=conf)


def _block(ctx: Context, up: Upstream | None, block: int | None) -> Advice:
    if block is not None and ctx.conf is not None:
        from gw502d.remediate import located  # noqa: PLC0415 - loaded with the config

        found = located.block_size(ctx, up, block)
        if found is not None:
            return found
    if block is None:
        return Advice("The request's headers exceed uWSGI's buffer-size: raise buffer-size "
                      "in the uWSGI config.", "request_block_too_big")
    size, over = backend.uwsgi_buffer_size(block)
    text = (f"Requests of up to {block} bytes of variables (URI, headers, cookies) exceed "
            f"uWSGI's buffer-size: set buffer-size = {size} in the uWSGI config.")
    if over:
        text += (" That is the most the uwsgi protocol carries (its packet size is 16 bits; "
                 "nginx refuses bigger requests): shrink cookies/headers, or serve HTTP "
                 "(http-socket) and use proxy_pass.")
    return Advice(text, "request_block_too_big", uwsgi={"buffer-size": str(size)})


def _mismatch(ctx: Context, up: Upstream | None, method: object = None) -> Advice:
    sent = f"HTTP ({method} ...)" if method else "HTTP"
    if up is not None and up.family == "proxy" and ctx.conf is not None:
        from gw502d.remediate import located  # noqa: PLC0415 - loaded with the config

        found = located.pass_with(ctx, up, "uwsgi", "protocol_mismatch")
        if found is not None:
            return found
    if up is None or up.family != "proxy":
        return Advice(
            f"{sent} reached uWSGI's uwsgi-protocol socket: behind nginx pass with "
            "uwsgi_pass + include uwsgi_params (not proxy_pass); for clients that speak HTTP "
            "directly, use http-socket = ADDRESS instead of socket = ADDRESS in the uWSGI "
            "config.", "protocol_mismatch")
    directive, target = up.pass_directive("uwsgi")
    conf = {"include": "uwsgi_params", directive: target}
    peer = _value(up.peer)
    return Advice(
        f"nginx sends {sent} with proxy_pass to {peer}, a uWSGI uwsgi-protocol socket: in that "
        f"location replace proxy_pass with {nginx.render(conf)} (or make uWSGI speak HTTP "
        f"there: http-socket = {peer} instead of socket =).", "protocol_mismatch", nginx=conf)


_CAUSE_FIX: dict[str, Callable[[Context, Upstream | None], Advice]] = {
    "worker_harakiri": _harakiri,
    "worker_oom_killed": lambda ctx, up: _oom_killed(),
    "worker_crashed": lambda ctx, up: _crashed(),
    "request_block_too_big": lambda ctx, up: _block(
        ctx, up, _Seen(ctx.evidence("request_block_too_big", "uwsgi")).largest("block_size")),
    "protocol_mismatch": lambda ctx, up: _mismatch(
        ctx, up, _Seen(ctx.evidence("protocol_mismatch", "uwsgi")).top("method")),
    "gunicorn_worker_timeout": _gunicorn_timeout,
    "gunicorn_worker_killed": lambda ctx, up: _gunicorn_killed(),
    "listen_queue_full": lambda ctx, up: _queue_full(
        ctx, up, "uWSGI's listen queue", "uwsgi",
        _Seen(ctx.evidence("listen_queue_full", "uwsgi")).largest("backlog")),
}
# Causes whose fix does not depend on what was seen: one sentence each
_CAUSE_TEXT = {
    "worker_memory_killed": "uWSGI's own memory limit (reload-on-rss, evil-reload-on-rss, "
    "limit-as) killed the worker mid-request: find what grows, raise the limit, or recycle "
    "workers before they reach it (max-requests).",
    "modifier_unavailable": "No uWSGI app or plugin serves the request's modifier (e.g. the "
    "python3 plugin is not loaded): load the plugin the nginx location's uwsgi_modifier1 "
    "asks for.",
    "http_request_too_big": "The request's headers exceed the buffer-size of uWSGI's "
    "http-socket: raise buffer-size in the uWSGI config.",
    "router_connect_failed": "uWSGI's http router cannot reach its workers' socket: check "
    "that the workers run and the router's --http-to / socket match.",
    "workers_respawning_too_fast": "uWSGI's workers die as they start and it slows their "
    "respawn: the app fails at import or at its first request; the lines above say why.",
    "app_load_failed": "uWSGI could not load the app ('no python application found'): fix "
    "the module/callable or the import error above it and restart.",
    "address_in_use": "The backend could not bind its address: another process holds it; "
    "stop that one or bind elsewhere, and point nginx's pass directive there.",
    "gunicorn_worker_crashed": "A gunicorn worker crashed in native code: run with "
    "PYTHONFAULTHANDLER=1 to get the stack, then fix or replace the extension.",
    "gunicorn_worker_exited": "A gunicorn worker exited with an error: the traceback above "
    "its exit line says why.",
    "gunicorn_app_load_failed": "gunicorn could not find the app (module:callable): fix the "
    "name or --chdir/PYTHONPATH and restart.",
    "gunicorn_worker_boot_failed": "gunicorn's worker raised while booting (often an import "
    "error): fix it and restart.",
    "gunicorn_address_in_use": "gunicorn could not bind its --bind address: another process "
    "holds it; stop that one or bind elsewhere.",
}


def _cause_fix(cause: str, ctx: Context, up: Upstream | None) -> Advice:
    fix = _CAUSE_FIX.get(cause)
    return fix(ctx, up) if fix is not None else Advice(_CAUSE_TEXT[cause], cause)


def _queue_full(ctx: Context, up: Upstream | None, where: str, server: str | None,
                current: int | None) -> Advice:
    if ctx.conf is not None:
        from gw502d.remediate import located  # noqa: PLC0415 - loaded with the config

        found = located.listen_queue(ctx, up, "uwsgi" if server == "uwsgi" else None)
        if found is not None:
            return _prefixed(found, f"{where} is full: every worker is busy. ")
    family = up.family if up is not None else server
    host = ctx.host
    listen, ceiling = backend.listen_backlog(current, host.somaxconn)
    uwsgi = {"listen": str(listen)}
    gunicorn = {"backlog": str(listen)} if family == "proxy" else {}
    text = (f"{where} is full: every worker is busy. Add processes/threads or make requests "
            f"faster; a longer queue absorbs bursts: listen = {listen} in the uWSGI config")
    if gunicorn:
        text += f" / backlog = {listen} in gunicorn.conf.py"
    if ceiling is not None:
        text += (f"; to go to {ceiling}, first raise net.core.somaxconn (the kernel's ceiling, "
                 f"now {host.somaxconn}) in /etc/sysctl.d.")
        return Advice(text, uwsgi=uwsgi, gunicorn=gunicorn,
                      sysctl={"net.core.somaxconn": str(ceiling)})
    if host.somaxconn is not None:
        text += f" (the kernel's ceiling, net.core.somaxconn, is {host.somaxconn} here)"
    return Advice(text + ".", uwsgi=uwsgi, gunicorn=gunicorn)


def _bind(up: Upstream | None, address: str) -> str:
    """Where the backend must listen for the location's ``*_pass`` to reach it."""
    family = up.family if up else None
    if family == "uwsgi":
        return f"socket = {address} (uWSGI)"
    if family == "proxy":
        unix = "unix:" if address.startswith("/") else ""
        return f"bind = {unix}{address} (gunicorn) or http-socket = {address} (uWSGI)"
    return f"its listen address {address}"


# --------------------------------------------------------------------------- nginx


def _header_too_big(seen: _Seen, ctx: Context) -> Advice | None:
    up = seen.upstream()
    if up is None or up.family is None:
        return None
    if ctx.conf is not None:
        from gw502d.remediate import located  # noqa: PLC0415 - loaded with the config

        found = located.header_buffers(ctx, up)
        if found is not None:
            return found
    conf = nginx.header_buffers(up.family, 4 * ctx.host.page_size)
    return Advice(
        f"{_value(up)} sends response headers larger than {up.family}_buffer_size (nginx's "
        f"default is one memory page, {nginx.size_text(ctx.host.page_size)} here). In the "
        f"location that passes to it: {nginx.render(conf)} Still too small (big cookies)? "
        "Double every value together.", nginx=conf)


def _timeout(seen: _Seen, ctx: Context) -> Advice | None:
    up = seen.upstream()
    if up is None or up.family is None:
        return None
    family, phase, where = up.family, seen.top("phase"), _value(up)
    if phase == "connect":
        return Advice(f"nginx could not connect to {where} within {family}_connect_timeout: "
                      "its listen queue is full or the host does not answer. Add workers, "
                      "then a longer queue (uWSGI listen, gunicorn backlog).")
    if phase == "send":
        return Advice(f"{where} did not read the request within {family}_send_timeout: every "
                      "worker is busy or reads uploads slowly. Add workers or make requests "
                      "faster.")
    cause, n = ctx.top_cause("upstream_timeout", up)
    if cause in ("gunicorn_worker_timeout", "gunicorn_worker_killed"):
        backends: Sequence[str] = ("gunicorn",)
    elif cause is not None:
        backends = ("uwsgi",)
    else:
        backends = _BACKENDS.get(family, ())
    said = f"; the backend log shows {cause} ({n}x)" if cause else ""
    if ctx.conf is not None:
        from gw502d.remediate import located  # noqa: PLC0415 - loaded with the config

        found = located.read_timeout(
            ctx, up, f"nginx gave up on {where} while the application still worked "
            f"(504){said}. Find the slow requests.", cause)
        if found is not None:
            return found
    return _prefixed(_keep_order(family, backends),
                     f"nginx gave up on {where} after {family}_read_timeout ({phase or 'read'} "
                     f"phase) while the application still worked (504){said}. Find the slow "
                     "requests, then ",
                     cause)


def _connection_lost(incident: str, what: str) -> Builder:
    """premature close / reset: the backend's root cause decides the fix."""

    def build(seen: _Seen, ctx: Context) -> Advice | None:
        up = seen.upstream()
        cause, n = ctx.top_cause(incident, up)
        if cause is None:
            return None
        where = _value(up) if up else "The upstream"
        return _prefixed(_cause_fix(cause, ctx, up),
                         f"{where} {what}: root cause {cause} ({n}x in the backend log). ")

    return build


def _socket_missing(seen: _Seen, ctx: Context) -> Advice | None:
    sock = seen.top("socket")
    if sock is None:
        return None
    path = _value(sock)
    return Advice(f"No socket file at {path}: the backend is not running or creates its "
                  f"socket elsewhere. Start it with {_bind(seen.upstream(), path)}, the path "
                  "nginx passes to; a directory under /run must be created at each boot "
                  "(systemd RuntimeDirectory=).")


def _socket_permission(seen: _Seen, ctx: Context) -> Advice | None:
    sock, host, up = seen.top("socket"), ctx.host, seen.upstream()
    if sock is not None and up is not None and ctx.conf is not None:
        from gw502d.remediate import located  # noqa: PLC0415 - loaded with the config

        found = located.socket_owner(ctx, up, str(sock))
        if found is not None:
            return found
    if sock is None or host.nginx_user is None:
        return None
    user, group = host.nginx_user, host.nginx_group
    uwsgi = {"chmod-socket": "660", "chown-socket": f"{user}:{group}"}
    gunicorn = ({"umask": "0o007", "group": str(group)}
                if up is not None and up.family == "proxy" else {})
    text = (f"nginx's workers (user {user}) may not connect to {_value(sock)}. Let the backend "
            f"create it for them: {backend.render(uwsgi)} (uWSGI, applied while it still runs "
            f"as root; else add {user} to uWSGI's group)")
    if gunicorn:
        text += f" / {backend.render(gunicorn)} (gunicorn.conf.py)"
    return Advice(text + f". Every directory above it needs x for {user}.",
                  uwsgi=uwsgi, gunicorn=gunicorn)


def _backlog_full(seen: _Seen, ctx: Context) -> Advice | None:
    sock = seen.top("socket")
    if sock is None:
        return None
    return _queue_full(ctx, seen.upstream(), f"The accept queue of {_value(sock)}", None,
                       None)


def _connect_refused(seen: _Seen, ctx: Context) -> Advice | None:
    up = seen.upstream()
    if up is None:
        return None
    peer = _value(up.peer)
    address = peer.removeprefix("unix:")
    stale = " (a socket file stays behind when the backend dies)" if address != peer else ""
    return Advice(f"Nothing accepts connections at {peer}{stale}: the backend is down or "
                  f"listens elsewhere. Start it with {_bind(up, address)}.")


def _invalid_header(seen: _Seen, ctx: Context) -> Advice | None:
    up = seen.upstream()
    if up is None:
        return None
    if up.family in ("proxy", "uwsgi") and ctx.conf is not None:
        from gw502d.remediate import located  # noqa: PLC0415 - loaded with the config

        other = "uwsgi" if up.family == "proxy" else "proxy"
        found = located.pass_with(ctx, up, other, None)
        if found is not None:
            return found
    if up.family == "proxy":
        conf = {"include": "uwsgi_params", "uwsgi_pass": up.pass_directive("uwsgi")[1]}
        return Advice(f"{_value(up)} does not answer HTTP. If it is a uWSGI socket (uwsgi "
                      f"protocol), pass to it with {nginx.render(conf)} instead of proxy_pass.",
                      nginx=conf)
    if up.family == "uwsgi":
        conf = dict([up.pass_directive("proxy")])
        return Advice(f"{_value(up)} does not speak the uwsgi protocol. If it is gunicorn or "
                      f"uWSGI's http-socket, pass to it with {nginx.render(conf)} instead of "
                      "uwsgi_pass.", nginx=conf)
    return None


# --------------------------------------------------------------------------- backends


def _worker_died(seen: _Seen, ctx: Context) -> Advice | None:
    signal = seen.top("signal")
    if signal is None:
        return None
    # a death right after its harakiri is that harakiri's companion (the tally's
    # consequence rule), never a worker_died: what is left was not killed by uWSGI
    return _crashed() if signal != 9 else _oom_killed()


def _slowness(ctx: Context) -> str:
    timeouts = ctx.count("upstream_timeout", "nginx")
    if timeouts:
        return (f"With {timeouts} nginx upstream timeouts they mean the application is too "
                "slow for its clients: find the slow requests.")
    return "Benign alone (impatient clients, short health-check timeouts)."


def _client_disconnect(source: str) -> Builder:
    quiet = {"ignore-sigpipe": "true", "ignore-write-errors": "true",
             "disable-write-exception": "true"}

    def build(seen: _Seen, ctx: Context) -> Advice:
        text = f"Clients went away before the answer was written. {_slowness(ctx)}"
        if source != "uwsgi":
            return Advice(text)
        return Advice(f"{text} To quiet uWSGI's log: {backend.render(quiet)}.", uwsgi=quiet)

    return build


def _dev_server(seen: _Seen, ctx: Context) -> Advice:
    n = str(ctx.host.gunicorn_workers)
    bind = "127.0.0.1:8000"
    gunicorn = {"workers": n, "bind": bind}
    uwsgi = {"master": "true", "processes": n, "http-socket": bind}
    return Advice(
        "This is the Werkzeug development server: do not run it in production. Serve the app "
        f"with gunicorn -w {n} -b {bind} <module>:<app> or uwsgi --master --processes {n} "
        f"--http-socket {bind} --module <module>:<app>, behind nginx with "
        f"proxy_pass http://{bind};.",
        nginx={"proxy_pass": f"http://{bind}"}, uwsgi=uwsgi, gunicorn=gunicorn)


_BUILDERS: dict[tuple[str, str], Builder] = {
    ("upstream_header_too_big", "nginx"): _header_too_big,
    ("upstream_timeout", "nginx"): _timeout,
    ("upstream_connect_refused", "nginx"): _connect_refused,
    ("upstream_socket_missing", "nginx"): _socket_missing,
    ("upstream_socket_permission", "nginx"): _socket_permission,
    ("upstream_backlog_full", "nginx"): _backlog_full,
    ("upstream_premature_close", "nginx"): _connection_lost(
        "upstream_premature_close", "closed the connection mid-request"),
    ("upstream_reset", "nginx"): _connection_lost("upstream_reset", "reset the connection"),
    ("upstream_invalid_header", "nginx"): _invalid_header,
    ("client_disconnect", "nginx"): _client_disconnect("nginx"),
    ("request_block_too_big", "uwsgi"): lambda seen, ctx: _block(
        ctx, ctx.upstream_of("request_block_too_big"), seen.largest("block_size")),
    ("protocol_mismatch", "uwsgi"): lambda seen, ctx: _mismatch(
        ctx, ctx.upstream_of("protocol_mismatch"), seen.top("method")),
    ("client_disconnect", "uwsgi"): _client_disconnect("uwsgi"),
    ("worker_harakiri", "uwsgi"): lambda seen, ctx: _harakiri(
        ctx, ctx.upstream_of("worker_harakiri")),
    ("worker_died", "uwsgi"): _worker_died,
    ("listen_queue_full", "uwsgi"): lambda seen, ctx: _queue_full(
        ctx, None, "uWSGI's listen queue", "uwsgi", seen.largest("backlog")),
    ("worker_timeout", "gunicorn"): lambda seen, ctx: _gunicorn_timeout(
        ctx, ctx.upstream_of("gunicorn_worker_timeout")),
    # a kill after its worker timeout is the timeout's companion: what is left is OOM
    ("worker_killed", "gunicorn"): lambda seen, ctx: _gunicorn_killed(),
    ("client_disconnect", "gunicorn"): _client_disconnect("gunicorn"),
    ("client_disconnect", "werkzeug"): _dev_server,
    ("dev_server_warning", "werkzeug"): _dev_server,
}


# --------------------------------------------------------------------------- entry points


class _Placeholders(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def _catalog_text(incident: Incident, seen: _Seen) -> str:
    facts = _Placeholders({name: _value(v) for name in incident.evidence
                           if (v := seen.top(name)) is not None})
    return string.Formatter().vformat(incident.remediation, (), facts)


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 3] + "..."


def advise(incident: Incident, evidence: Sequence[FactCount] = (),
           context: Context | None = None) -> Advice:
    """The change for *incident*, given the facts seen for it (``Evidence.facts()``: each
    distinct fact set and its count) and, optionally, what else is known."""
    ctx = context if context is not None else Context()
    seen = _Seen(evidence)
    build = _BUILDERS.get(incident.key)
    advice = build(seen, ctx) if build is not None else None
    if advice is None:
        advice = Advice(_catalog_text(incident, seen))
    return replace(advice, text=_bounded(advice.text))


def advise_seen(incident: Incident, context: Context,
                saved: Mapping[str, Any] | None = None) -> Advice:
    """The advice for *incident* from everything *context* knows: the facts its tallies saw
    for it, or *saved* (facts kept from before a restart) while they have seen none."""
    evidence = context.evidence(*incident.key)
    if not evidence and saved:
        evidence = [(saved, 1)]
    return advise(incident, evidence, context)


def per_upstream(incident: Incident) -> bool:
    """Whether the facts kept for *incident* name nginx's upstream (its advice, and its
    count in gw502d_upstream_incidents_total, are per upstream)."""
    return "upstream" in incident.evidence


def advise_upstreams(incident: Incident, context: Context,
                     saved: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Advice]:
    """Per upstream label (:meth:`Context.label`), the advice for *incident* from the facts
    seen with that upstream only; *saved*: facts per label kept from before a restart, for
    labels the tallies have seen nothing of since."""
    groups: dict[str, list[FactCount]] = {}
    for facts, n in context.evidence(*incident.key):
        groups.setdefault(context.label(facts.get("upstream")), []).append((facts, n))
    for label, facts in (saved or {}).items():
        groups.setdefault(label, [(facts, 1)])
    return {label: advise(incident, evidence, context) for label, evidence in groups.items()}


def remediation_for(incident: Incident, facts: Mapping[str, Any] | None = None) -> str:
    """The remediation text of *incident* from the facts of one line."""
    return advise(incident, [(facts, 1)] if facts else []).text
