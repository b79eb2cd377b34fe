"""Who may talk to the server: the pairing token, loopback trust, brute-force throttling.

Transport-neutral: the WebSocket handshake and the plain HTTP routes both build
a :class:`Credentials` from what the request carried and ask one
:class:`Authenticator`, so ``/ws``, ``/health`` and ``/metrics`` follow one rule.
Failures are counted per :meth:`Authenticator.address`: the socket peer, or what a
configured trusted proxy appended to ``X-Forwarded-For``; never a value the client wrote.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import os
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import attrs
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, IReactorTime

from pocket_agent.core.events import AuthFailed, EventBus
from pocket_agent.storage import atomic_write_bytes

TOKEN_BYTES = 32
BEARER_PREFIX = "bearer."
# Any of these means a proxy relayed the request: it must not pass for loopback.
FORWARDING_HEADERS = frozenset(
    {"forwarded", "via", "x-real-ip", "x-client-ip", "true-client-ip", "cf-connecting-ip"}
)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def write_token(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, f"{token}\n".encode(), mode=0o600)
    os.chmod(path, 0o600)


def ensure_token(path: Path) -> bool:
    """Create the token file on first start; True when it was created."""
    if path.exists():
        os.chmod(path, 0o600)
        return False
    write_token(path, new_token())
    return True


class TokenFile:
    """The current token, re-read when the file changes so ``token --rotate`` takes effect
    without a restart (one ``stat`` per authentication; the file is tiny)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    def current(self) -> str:
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            token = self.path.read_text().strip()
            if len(token) < 32:
                raise ValueError(f"{self.path}: the token is shorter than 32 characters")
            self._token, self._stamp = token, stamp
        return self._token


def is_local(address: IAddress) -> bool:
    """Loopback TCP, or a UNIX socket (only local users can reach one)."""
    if isinstance(address, UNIXAddress):
        return True
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host in LOOPBACK_HOSTS or address.host.startswith("127.")
    return False


def address_key(address: IAddress) -> str:
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host
    return "local"


def parse_ip(text: str) -> IPAddress | None:
    """An address as a socket or a proxy writes it (``1.2.3.4``, ``1.2.3.4:567``, ``::1``,
    ``[::1]:567``), IPv4-mapped IPv6 as IPv4; None for anything else (``unknown``, junk)."""
    text = text.strip()
    if text.startswith("["):
        text, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
    elif text.count(":") == 1:  # IPv4 with a port; IPv6 has at least two colons
        text, _, port = text.partition(":")
        if not port.isdigit():
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@attrs.frozen
class Credentials:
    """What one request presented, independent of HTTP library."""

    peer: str  # the socket peer's host ("local" for a UNIX socket): the client cannot forge it
    local: bool  # loopback TCP or a UNIX socket
    forwarded: bool  # relayed by a proxy
    same_machine: bool  # Host (and Origin, if any) name this machine: no DNS rebinding
    token: str | None  # "" when a credential was presented but empty or not Bearer
    # X-Forwarded-For entries, left to right, as received: believed only from a trusted proxy.
    forwarded_for: tuple[str, ...] = ()

    @classmethod
    def from_request(
        cls, address: IAddress, headers: Mapping[str, str], query_tokens: Sequence[str]
    ) -> Credentials:
        """``headers`` has lower-case names; ``query_tokens``: the ``?token=`` values."""
        token = None
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else ""
        if token is None:
            token = bearer_subprotocol(offered_subprotocols(headers.get("sec-websocket-protocol")))
        if token is None and query_tokens:
            token = query_tokens[0]
        forwarded = any(
            name in FORWARDING_HEADERS or name.startswith("x-forwarded-") for name in headers
        )
        forwarded_for = headers.get("x-forwarded-for")
        return cls(
            peer=address_key(address),
            local=is_local(address),
            forwarded=forwarded,
            same_machine=_names_this_machine(headers.get("host"), headers.get("origin")),
            token=token,
            forwarded_for=() if forwarded_for is None else tuple(forwarded_for.split(",")),
        )

    @property
    def trusted_local(self) -> bool:
        """Loopback trust (SPEC §7), but never through a proxy or a rebound DNS name."""
        return self.local and not self.forwarded and self.same_machine


def _host_of(value: str) -> str | None:
    try:
        return urlsplit(value if "//" in value else f"//{value}").hostname
    except ValueError:
        return None


def _names_this_machine(host: str | None, origin: str | None) -> bool:
    """A page served from evil.example that rebinds its name to 127.0.0.1 sends
    ``Host: evil.example``: only loopback names (or none: UNIX sockets, old clients)
    qualify, and a browser Origin must be a loopback one too."""
    if host is not None and _host_of(host) not in LOOPBACK_NAMES:
        return False
    return not origin or _host_of(origin) in LOOPBACK_NAMES


def offered_subprotocols(header_value: str | None) -> list[str]:
    if not header_value:
        return []
    return [p.strip() for p in header_value.split(",") if p.strip()]


def bearer_subprotocol(offered: Iterable[str]) -> str | None:
    for entry in offered:
        if entry.startswith(BEARER_PREFIX):
            return entry[len(BEARER_PREFIX) :]
    return None


class Verdict(enum.Enum):
    TOKEN = "token"
    LOOPBACK = "loopback"
    REFUSED = "refused"  # HTTP 401
    THROTTLED = "throttled"  # HTTP 429

    @property
    def allowed(self) -> bool:
        return self in (Verdict.TOKEN, Verdict.LOOPBACK)


class Authenticator:
    """SPEC §7: a wrong token is refused even from loopback; a reverse proxy never gets
    loopback trust; ten failures from one address in a minute lock it out for the
    rest of that minute."""

    MAX_FAILURES = 10
    WINDOW = 60.0
    MAX_TRACKED_ADDRESSES = 10_000

    def __init__(
        self,
        token: Callable[[], str],
        trust_loopback: bool,
        clock: IReactorTime,
        bus: EventBus | None = None,
        *,
        trusted_proxies: Iterable[IPNetwork] = (),
    ) -> None:
        """Every failure is an :class:`AuthFailed` event on ``bus`` (logged, counted).
        ``trusted_proxies``: whose ``X-Forwarded-For`` is believed (``auth.trusted_proxies``)."""
        self._token = token
        self.trust_loopback = trust_loopback
        self.clock = clock
        self.bus = bus
        self.trusted_proxies = tuple(trusted_proxies)
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def current_token(self) -> str:
        """The token now in force (for redaction: never logged)."""
        return self._token()

    def address(self, credentials: Credentials) -> str:
        """The address failures are counted by, and logged as.

        The socket peer, unless it is a trusted proxy: then the right-most
        ``X-Forwarded-For`` entry, which that proxy appended, skipping entries that are
        trusted proxies themselves (a chain). Left of the first untrusted entry is what
        the client wrote, so it is never read; a missing or garbled entry stops the walk
        at the last trusted hop, the proxy that passed it on.
        """
        hop = parse_ip(credentials.peer)
        if hop is None:
            return credentials.peer  # a UNIX socket
        if not self._is_trusted_proxy(hop):
            return str(hop)
        for entry in reversed(credentials.forwarded_for):
            client = parse_ip(entry)
            if client is None:
                break
            hop = client
            if not self._is_trusted_proxy(client):
                break
        return str(hop)

    def _is_trusted_proxy(self, address: IPAddress) -> bool:
        return any(address in network for network in self.trusted_proxies)

    def check(self, credentials: Credentials, *, anonymous_ok: bool = False) -> Verdict:
        """``anonymous_ok``: a request without a token is a plain REFUSED, not a counted
        failure (``/health`` for monitors that carry no token)."""
        now = self.clock.seconds()
        if credentials.token is None and self.trust_loopback and credentials.trusted_local:
            return Verdict.LOOPBACK  # never throttled: nobody can lock the operator out
        address = self.address(credentials)
        recent = self._recent_failures(address, now)
        if recent is not None and len(recent) >= self.MAX_FAILURES:
            return self._fail(address, credentials, Verdict.THROTTLED)
        if credentials.token is not None:
            expected = self._token().encode()
            if credentials.token and hmac.compare_digest(credentials.token.encode(), expected):
                return Verdict.TOKEN
            self._record_failure(address, now)
            return self._fail(address, credentials, Verdict.REFUSED)
        if anonymous_ok:
            return Verdict.REFUSED
        self._record_failure(address, now)
        return self._fail(address, credentials, Verdict.REFUSED)

    def retry_after(self, address: str) -> float:
        """Seconds until the oldest counted failure of ``address`` leaves the window."""
        recent = self._failures.get(address)
        if not recent:
            return 0.0
        return max(0.0, recent[0] + self.WINDOW - self.clock.seconds())

    def _fail(self, address: str, credentials: Credentials, verdict: Verdict) -> Verdict:
        if self.bus is not None:
            self.bus.emit(AuthFailed(address, verdict.value, credentials.token is not None))
        return verdict

    def _recent_failures(self, peer: str, now: float) -> deque[float] | None:
        recent = self._failures.get(peer)
        if recent is None:
            return None
        while recent and recent[0] <= now - self.WINDOW:
            recent.popleft()
        if not recent:
            del self._failures[peer]
            return None
        return recent

    def _record_failure(self, peer: str, now: float) -> None:
        recent = self._failures.setdefault(peer, deque())
        self._failures.move_to_end(peer)
        recent.append(now)
        while len(self._failures) > self.MAX_TRACKED_ADDRESSES:
            self._failures.popitem(last=False)
