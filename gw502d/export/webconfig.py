"""TLS and basic auth for the HTTP endpoints, from an exporter-toolkit web config file.

The format is node_exporter's ``--web.config.file``, so one file and one habit serve every
exporter on a host::

    tls_server_config:
      cert_file: /etc/gw502d/tls.crt       # relative paths: from this file's directory
      key_file: /etc/gw502d/tls.key
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      client_ca_file: /etc/gw502d/ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...                 # bcrypt, e.g. htpasswd -nBC 10 "" | tr -d ':'

Unknown keys are errors, as in exporter-toolkit, so a typo cannot silently switch TLS off.
The certificate and key are loaded here, so ``gw502d check-config`` catches a bad pair.

A reload never drops security by accident. An empty or all-comment file, a key with no
value, bytes that are not UTF-8 or a NUL in a path are errors (one line each, never a
traceback), and the running configuration stays. A file that leaves out a section the
running configuration has (TLS, client certificates, users) is refused too: half a file
written by an editor or a deploy tool looks just like that. Turning one off on reload takes
saying so: ``tls_server_config: {}``, an explicit ``client_auth_type``, or
``basic_auth_users: {}``; or a restart.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from gw502d.errors import ConfigError

_BCRYPT = re.compile(r"\$2[abxy]\$(?:0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_KEYS = frozenset({"cert_file", "key_file", "client_auth_type", "client_ca_file",
                       "min_version", "max_version"})
_KEYS = frozenset({"tls_server_config", "basic_auth_users"})
_MAX_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What the server enforces: a TLS context (None: plain HTTP), how it checks client
    certificates, and bcrypt hashes per user (none: no basic auth)."""

    tls: ssl.SSLContext | None
    users: Mapping[str, bytes]
    client_certs: ssl.VerifyMode = ssl.CERT_NONE


def _table(doc: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    if key not in doc:
        return {}
    value = doc[key]
    if value is None:
        raise ConfigError(key, "has no value: give its settings, or {} for none", source)
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a mapping", source)
    return value


def _tls(raw: Mapping[str, Any], base: Path,
         source: str) -> tuple[ssl.SSLContext | None, ssl.VerifyMode]:
    if not raw:
        return None, ssl.CERT_NONE
    extra = sorted(set(raw) - _TLS_KEYS, key=str)
    if extra:
        raise ConfigError(f"tls_server_config.{extra[0]}",
                          f"not supported by gw502d (known: {', '.join(sorted(_TLS_KEYS))})",
                          source)

    def key(name: str) -> str:
        return f"tls_server_config.{name}"

    def text(name: str) -> str | None:
        value = raw.get(name)
        if name in raw and (not isinstance(value, str) or not value):
            raise ConfigError(key(name), "must be a non-empty string", source)
        if value is not None and "\0" in value:
            raise ConfigError(key(name), "contains a NUL byte", source)
        return value

    cert, private = text("cert_file"), text("key_file")
    if cert is None or private is None:
        raise ConfigError(key("cert_file" if cert is None else "key_file"),
                          "missing: TLS needs cert_file and key_file", source)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for name, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        value = text(name)
        if value is not None:
            if value not in _TLS_VERSIONS:
                raise ConfigError(key(name), f"must be one of {', '.join(_TLS_VERSIONS)}",
                                  source)
            setattr(context, attr, _TLS_VERSIONS[value])
    try:
        context.load_cert_chain(base / cert, base / private)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(key("cert_file"), f"cannot load {cert} with {private}: {exc}",
                          source) from exc
    auth = text("client_auth_type") or "NoClientCert"
    if auth not in _CLIENT_AUTH:
        raise ConfigError(key("client_auth_type"),
                          f"must be one of {', '.join(_CLIENT_AUTH)}", source)
    context.verify_mode = _CLIENT_AUTH[auth]
    ca = text("client_ca_file")
    if ca is not None:
        try:
            context.load_verify_locations(base / ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(key("client_ca_file"), f"cannot load {ca}: {exc}", source) from exc
    elif context.verify_mode != ssl.CERT_NONE:
        raise ConfigError(key("client_ca_file"), f"missing: needed for {auth}", source)
    return context, context.verify_mode


def _users(raw: Mapping[str, Any], source: str) -> dict[str, bytes]:
    users = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or not isinstance(hashed, str) or not _BCRYPT.fullmatch(
                hashed):
            raise ConfigError(f"basic_auth_users.{user}", "must be a bcrypt hash "
                              "(htpasswd -nBC 10 \"\" | tr -d ':')", source)
        users[user] = hashed.encode()
    return users


def _read(path: Path) -> Any:
    """The YAML document in *path*; every way it can fail is a ConfigError."""
    # Imported here: every gw502d command loads this module, only a web config needs YAML.
    import yaml  # noqa: PLC0415

    source = str(path)
    if "\0" in source:
        raise ConfigError("web_config", f"the path contains a NUL byte: {source!r}")
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_SIZE + 1)
    except OSError as exc:
        raise ConfigError("web_config", f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > _MAX_SIZE:
        raise ConfigError("file", f"larger than {_MAX_SIZE >> 20} MiB: not a web config", source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError("file", f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start})", source) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise ConfigError("file", f"not valid YAML: {problem}", source) from None
    except (ValueError, RecursionError) as exc:  # a bad date; nesting too deep
        raise ConfigError("file", f"not valid YAML: {exc}", source) from None


@overload
def load_web_config(path: Path, previous: WebConfig | None = None) -> WebConfig: ...


@overload
def load_web_config(path: None, previous: WebConfig | None = None) -> None: ...


def load_web_config(path: Path | None, previous: WebConfig | None = None) -> WebConfig | None:
    """Read, validate and load one web config file (ConfigError names the key).

    *previous* is the running configuration when this is a reload: what it secures may
    only be turned off by a file that says so (see the module's doc). *path* None means
    the configuration names no web config any more, which is refused while *previous*
    has TLS or users.
    """
    if path is None:
        if previous is not None and (previous.tls is not None or previous.users):
            raise ConfigError("web_config", "removed, but the running server has TLS or basic "
                              "auth: a reload never turns them off (restart to do that)")
        return None
    source = str(path)
    doc = _read(path)
    if doc is None:
        raise ConfigError("file", "empty (only comments?): give tls_server_config and/or "
                          "basic_auth_users, or {} for plain HTTP without users", source)
    if not isinstance(doc, dict):
        raise ConfigError("file", "must be a mapping of tls_server_config/basic_auth_users",
                          source)
    extra = sorted(set(doc) - _KEYS, key=str)
    if extra:
        raise ConfigError(str(extra[0]),
                          f"not supported by gw502d (known: {', '.join(sorted(_KEYS))})", source)
    tls_raw = _table(doc, "tls_server_config", source)
    tls, client_certs = _tls(tls_raw, path.parent.absolute(), source)
    web = WebConfig(tls=tls, users=_users(_table(doc, "basic_auth_users", source), source),
                    client_certs=client_certs)
    if previous is not None:
        _keep_security(previous, web, doc, tls_raw, source)
    return web


def _keep_security(previous: WebConfig, web: WebConfig, doc: Mapping[str, Any],
                   tls_raw: Mapping[str, Any], source: str) -> None:
    """Refuse a reload that weakens what *previous* enforced without saying so."""
    weaker = (
        ("tls_server_config", previous.tls is not None and web.tls is None,
         "tls_server_config" in doc, "serves TLS", "tls_server_config: {}"),
        ("tls_server_config.client_auth_type",
         web.tls is not None and web.client_certs < previous.client_certs,
         "client_auth_type" in tls_raw, "checks client certificates",
         "client_auth_type explicitly"),
        ("basic_auth_users", bool(previous.users) and not web.users,
         "basic_auth_users" in doc, "requires basic auth", "basic_auth_users: {}"),
    )
    for key, dropped, explicit, what, how in weaker:
        if dropped and not explicit:
            raise ConfigError(key, f"missing, but the running server {what}: a reload keeps "
                              f"it unless the file says {how}", source)
