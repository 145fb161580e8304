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
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gw502d.errors import ConfigError

_BCRYPT = re.compile(r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}")
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_KEYS = frozenset({"cert_file", "key_file", "client_auth_type", "client_ca_file",
                       "min_version", "max_version"})
_KEYS = frozenset({"tls_server_config", "basic_auth_users"})


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What the server enforces: a TLS context (None: plain HTTP) and bcrypt hashes per user."""

    tls: ssl.SSLContext | None
    users: Mapping[str, bytes]


def _table(doc: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a mapping", source)
    return value


def _tls(raw: Mapping[str, Any], base: Path, source: str) -> ssl.SSLContext | None:
    if not raw:
        return None
    extra = sorted(set(raw) - _TLS_KEYS)
    if extra:
        raise ConfigError(f"tls_server_config.{extra[0]}",
                          f"not supported by gw502d (known: {', '.join(sorted(_TLS_KEYS))})",
                          source)

    def key(name: str) -> str:
        return f"tls_server_config.{name}"

    def text(name: str) -> str | None:
        value = raw.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(key(name), "must be a non-empty string", source)
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
    return context


def _users(raw: Mapping[str, Any], source: str) -> dict[str, bytes]:
    users = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or not isinstance(hashed, str) or not _BCRYPT.fullmatch(
                hashed):
            raise ConfigError(f"basic_auth_users.{user}", "must be a bcrypt hash "
                              "(htpasswd -nBC 10 \"\" | tr -d ':')", source)
        users[user] = hashed.encode()
    return users


def load_web_config(path: Path) -> WebConfig:
    """Read, validate and load one web config file (ConfigError names the key)."""
    # Imported here: every gw502d command loads this module, only a web config needs YAML.
    import yaml  # noqa: PLC0415

    source = str(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError("web_config", f"cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError("file", f"not valid YAML: {exc}", source) from exc
    if not isinstance(doc, dict):
        raise ConfigError("file", "must be a mapping of tls_server_config/basic_auth_users",
                          source)
    extra = sorted(set(doc) - _KEYS)
    if extra:
        raise ConfigError(extra[0], f"not supported by gw502d (known: {', '.join(sorted(_KEYS))})",
                          source)
    base = path.parent.absolute()
    return WebConfig(
        tls=_tls(_table(doc, "tls_server_config", source), base, source),
        users=_users(_table(doc, "basic_auth_users", source), source),
    )
