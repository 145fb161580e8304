"""Basic auth against the web config's bcrypt hashes, without leaks and without a CPU sink.

- Timing: an unknown user is checked against a hash of the same cost as the configured
  ones (the costliest, if they differ), so response times do not tell which names exist.
- Cost: bcrypt is slow on purpose. A (user, password, hash) that passed is remembered, so
  a scrape every few seconds pays it once; checks that need bcrypt are limited per client
  address (a token bucket, refunded on success, in a table of bounded size; IPv6 by /64)
  and globally (a few at once, the rest get 503), so failed guesses cannot eat the CPU
  that scrapes need. A remembered credential is never limited.
- Input: the header is bytes from the network. Anything that is not ``Basic`` + base64 of
  ``user:password`` with a UTF-8 user name, or a password bcrypt cannot take (over 72
  bytes), is a plain "no".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import bcrypt

BCRYPT_MAX_PASSWORD = 72
_CACHE_SIZE = 64


@dataclass(frozen=True, slots=True)
class Credentials:
    """What an Authorization header claims."""

    user: str
    password: bytes


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a request: let it in, refuse it, or run bcrypt first.

    ``retry_after`` is set when the answer is "not now" (limited or busy), ``check`` when a
    bcrypt check must decide (a slot is held for it: call :meth:`BasicAuth.verify`).
    """

    allowed: bool
    retry_after: float | None = None
    busy: bool = False
    check: Credentials | None = None


ALLOW = Verdict(allowed=True)
DENY = Verdict(allowed=False)


def parse_basic(header: str | None) -> Credentials | None:
    """The credentials of a ``Basic`` Authorization header, or None if there are none."""
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(encoded.strip().encode("latin-1"), validate=True)
        user, colon, password = raw.partition(b":")
        if not colon:
            return None
        return Credentials(user.decode("utf-8"), password)
    except (binascii.Error, UnicodeError, ValueError):
        return None


def client_key(address: str) -> str:
    """The unit a failure budget belongs to: an IPv4 address or an IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def dummy_hash(users: Mapping[str, bytes]) -> bytes:
    """A hash no password matches, as costly as the costliest configured one.

    It keeps that hash's salt (so bcrypt accepts it) and replaces the digest.
    """
    costliest = max(users.values(), key=lambda h: int(h[4:6]))
    return costliest[:29] + b"." * 31


class BasicAuth:
    """The state of basic auth across requests (and reloads: keyed by the hash itself)."""

    def __init__(self, *, burst: float = 10, refill_per_second: float = 0.5,
                 clients: int = 4096, concurrent: int = 2) -> None:
        self._burst = burst
        self._refill = refill_per_second
        self._clients = clients
        self._concurrent = concurrent
        self._lock = threading.Lock()
        self._budget: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._accepted: OrderedDict[bytes, None] = OrderedDict()
        self._running = 0

    @staticmethod
    def _token(users: Mapping[str, bytes], credentials: Credentials) -> bytes:
        hashed = users.get(credentials.user, b"")
        return hashlib.sha256(b"\0".join((credentials.user.encode(), credentials.password,
                                          hashed))).digest()

    def decide(self, users: Mapping[str, bytes], header: str | None, client: str,
               now: float | None = None) -> Verdict:
        """The verdict for one request (cheap: never runs bcrypt itself)."""
        if not users:
            return ALLOW
        credentials = parse_basic(header)
        if credentials is None:
            return DENY
        token = self._token(users, credentials)
        now = time.monotonic() if now is None else now
        key = client_key(client)
        with self._lock:
            if token in self._accepted:
                self._accepted.move_to_end(token)
                return ALLOW
            tokens, last = self._budget.pop(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._refill)
            if tokens < 1:
                self._remember(key, tokens, now)
                return Verdict(allowed=False, retry_after=(1 - tokens) / self._refill)
            if self._running >= self._concurrent:
                self._remember(key, tokens, now)
                return Verdict(allowed=False, retry_after=1.0, busy=True)
            self._remember(key, tokens - 1, now)
            self._running += 1
        return Verdict(allowed=False, check=credentials)

    def _remember(self, key: str, tokens: float, now: float) -> None:
        self._budget[key] = (tokens, now)
        if len(self._budget) > self._clients:
            self._budget.popitem(last=False)

    def release(self) -> None:
        """Give back the slot of a verdict's ``check`` that could not run."""
        with self._lock:
            self._running -= 1

    def verify(self, users: Mapping[str, bytes], credentials: Credentials, client: str) -> bool:
        """Run bcrypt for a verdict's ``check`` (slow: in a worker thread) and release its
        slot; a success is remembered and refunds the client's budget."""
        try:
            hashed = users.get(credentials.user)
            password = credentials.password
            try:
                ok = bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed or dummy_hash(users))
            except ValueError:  # a hash bcrypt cannot read: the web config checks the form
                ok = False
            ok = ok and hashed is not None and len(password) <= BCRYPT_MAX_PASSWORD
        finally:
            self.release()
        if ok:
            key = client_key(client)
            with self._lock:
                self._accepted[self._token(users, credentials)] = None
                if len(self._accepted) > _CACHE_SIZE:
                    self._accepted.popitem(last=False)
                if key in self._budget:
                    tokens, last = self._budget[key]
                    self._budget[key] = (min(self._burst, tokens + 1), last)
        return ok
