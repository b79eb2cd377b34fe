"""Token file handling, credential extraction and the failure throttle."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock

from pocket_agent.core.events import AuthFailed, EventBus
from pocket_agent.net.auth import (
    Authenticator,
    Credentials,
    TokenFile,
    Verdict,
    ensure_token,
    is_local,
    new_token,
    write_token,
)
from tests.support import EventRecorder

TOKEN = "t" * 43


def creds(token: str | None = None, local: bool = True, forwarded: bool = False) -> Credentials:
    return Credentials(
        peer="192.0.2.1", local=local, forwarded=forwarded, same_machine=True, token=token
    )


def headers(**values: str) -> dict[str, str]:
    return {k.replace("_", "-").lower(): v for k, v in values.items()}


def test_new_tokens_are_long_urlsafe_and_random() -> None:
    tokens = {new_token() for _ in range(20)}
    assert len(tokens) == 20
    for token in tokens:
        assert len(token) >= 43  # 32 bytes of entropy
        assert set(token) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


def test_ensure_token_creates_a_private_file_once(tmp_path: Path) -> None:
    path = tmp_path / "data" / "auth_token"
    assert ensure_token(path) is True
    first = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(path) is False
    assert path.read_text() == first


def test_ensure_token_tightens_a_loose_mode(tmp_path: Path) -> None:
    path = tmp_path / "auth_token"
    path.write_text(TOKEN)
    os.chmod(path, 0o644)
    ensure_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_token_file_picks_up_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "auth_token"
    write_token(path, TOKEN)
    tokens = TokenFile(path)
    assert tokens.current() == TOKEN
    write_token(path, "u" * 43)
    assert tokens.current() == "u" * 43


def test_token_file_refuses_a_short_token(tmp_path: Path) -> None:
    path = tmp_path / "auth_token"
    path.write_text("short\n")
    with pytest.raises(ValueError, match="shorter than 32"):
        TokenFile(path).current()


@pytest.mark.parametrize(
    ("address", "local"),
    [
        (IPv4Address("TCP", "127.0.0.1", 1), True),
        (IPv4Address("TCP", "127.0.1.1", 1), True),
        (IPv6Address("TCP", "::1", 1), True),
        (UNIXAddress(b"/run/pa.sock"), True),
        (IPv4Address("TCP", "192.168.1.5", 1), False),
        (IPv6Address("TCP", "fe80::1", 1), False),
    ],
)
def test_is_local(address: object, local: bool) -> None:
    assert is_local(address) is local  # type: ignore[arg-type]


def test_credentials_prefer_header_then_subprotocol_then_query() -> None:
    peer = IPv4Address("TCP", "192.0.2.1", 1)
    both = Credentials.from_request(
        peer,
        headers(authorization="Bearer from-header", sec_websocket_protocol="bearer.from-sub"),
        ["from-query"],
    )
    assert both.token == "from-header"
    sub = Credentials.from_request(
        peer, headers(sec_websocket_protocol="pocket-agent.v1, bearer.from-sub"), ["q"]
    )
    assert sub.token == "from-sub"
    query = Credentials.from_request(peer, headers(), ["from-query"])
    assert query.token == "from-query"
    none = Credentials.from_request(peer, headers(), [])
    assert none.token is None
    assert (none.peer, none.local, none.forwarded) == ("192.0.2.1", False, False)
    # Any credential presented counts, even an empty or non-Bearer one.
    assert Credentials.from_request(peer, headers(authorization="Basic abc"), []).token == ""
    assert Credentials.from_request(peer, headers(authorization="Bearer"), []).token == ""


def test_credentials_notice_proxies() -> None:
    peer = IPv4Address("TCP", "127.0.0.1", 1)
    for header in (
        "x_forwarded_for",
        "x_real_ip",
        "forwarded",
        "x_forwarded_host",
        "x_forwarded_proto",
        "via",
        "x_client_ip",
        "true_client_ip",
        "cf_connecting_ip",
    ):
        found = Credentials.from_request(peer, headers(**{header: "1.2.3.4"}), [])
        assert found.forwarded and not found.trusted_local, header


def recording_authenticator() -> tuple[Authenticator, EventRecorder]:
    bus, seen = EventBus(), EventRecorder()
    bus.subscribe(seen)
    return Authenticator(lambda: TOKEN, True, Clock(), bus), seen


def test_verdicts() -> None:
    auth, seen = recording_authenticator()
    assert auth.check(creds(TOKEN, local=False)) is Verdict.TOKEN
    assert auth.check(creds(None, local=True)) is Verdict.LOOPBACK
    assert auth.check(creds(None, local=True, forwarded=True)) is Verdict.REFUSED
    assert auth.check(creds("wrong", local=True)) is Verdict.REFUSED
    assert auth.check(creds(None, local=False)) is Verdict.REFUSED
    assert len(seen.of(AuthFailed)) == 3


def test_anonymous_health_probes_are_not_counted_as_failures() -> None:
    auth, seen = recording_authenticator()
    for _ in range(50):
        assert auth.check(creds(None, local=False), anonymous_ok=True) is Verdict.REFUSED
    assert auth.check(creds(TOKEN, local=False)) is Verdict.TOKEN
    assert seen.of(AuthFailed) == []


def test_throttle_window_slides() -> None:
    clock = Clock()
    auth = Authenticator(lambda: TOKEN, True, clock)
    for _ in range(9):
        auth.check(creds("wrong"))
        clock.advance(5)
    auth.check(creds("wrong"))  # 10th failure, at t=45
    assert auth.check(creds(TOKEN)) is Verdict.THROTTLED
    assert auth.retry_after("192.0.2.1") == pytest.approx(15.0)
    clock.advance(15)  # the first failure (t=0) leaves the window
    assert auth.check(creds(TOKEN)) is Verdict.TOKEN


def test_throttled_attempts_do_not_extend_the_lockout() -> None:
    clock = Clock()
    auth = Authenticator(lambda: TOKEN, True, clock)
    for _ in range(10):
        auth.check(creds("wrong"))
    for _ in range(30):
        clock.advance(1)
        assert auth.check(creds("wrong")) is Verdict.THROTTLED
    clock.advance(31)
    assert auth.check(creds(TOKEN)) is Verdict.TOKEN


def test_failure_memory_is_bounded() -> None:
    auth = Authenticator(lambda: TOKEN, True, Clock())
    auth.MAX_TRACKED_ADDRESSES = 100
    for i in range(500):
        peer = f"10.0.{i // 256}.{i % 256}"
        auth.check(
            Credentials(peer=peer, local=False, forwarded=False, same_machine=True, token="x")
        )
    assert len(auth._failures) == 100


def test_failure_event_carries_no_token_value() -> None:
    auth, seen = recording_authenticator()
    auth.check(creds("wrong", local=False))
    [event] = seen.of(AuthFailed)
    assert (event.verdict, event.token_presented) == ("refused", True)
    assert "wrong" not in repr(event)


@pytest.mark.parametrize(
    ("host", "origin", "trusted"),
    [
        ("127.0.0.1:8443", None, True),
        ("localhost:8443", "https://localhost:8443", True),
        ("[::1]:8443", None, True),
        (None, None, True),
        ("evil.example:8443", "http://evil.example:8443", False),  # DNS rebinding
        ("evil.example:8443", None, False),
        ("127.0.0.1:8443", "https://evil.example", False),
    ],
)
def test_loopback_trust_needs_a_loopback_name(
    host: str | None, origin: str | None, trusted: bool
) -> None:
    values = {k: v for k, v in (("host", host), ("origin", origin)) if v is not None}
    found = Credentials.from_request(IPv4Address("TCP", "127.0.0.1", 1), values, [])
    assert found.trusted_local is trusted
    verdict = Authenticator(lambda: TOKEN, True, Clock()).check(found)
    assert (verdict is Verdict.LOOPBACK) is trusted


def test_failures_through_a_trusted_local_proxy_cannot_lock_out_anyone_else() -> None:
    auth = proxied_authenticator("127.0.0.1")
    local = IPv4Address("TCP", "127.0.0.1", 1)
    # nginx's $proxy_add_x_forwarded_for: what the client sent, then the client's address.
    attacker = headers(x_forwarded_for="198.51.100.7, 203.0.113.66", authorization="Bearer x")
    for _ in range(12):
        auth.check(Credentials.from_request(local, attacker, []))
    assert auth.check(Credentials.from_request(local, attacker, [])) is Verdict.THROTTLED
    phone = headers(x_forwarded_for="198.51.100.7", authorization=f"Bearer {TOKEN}")
    assert auth.check(Credentials.from_request(local, phone, [])) is Verdict.TOKEN
    assert (
        auth.check(Credentials.from_request(local, headers(host="127.0.0.1:8443"), []))
        is Verdict.LOOPBACK
    )


def test_empty_bearer_from_loopback_is_refused() -> None:
    auth = Authenticator(lambda: TOKEN, True, Clock())
    local = IPv4Address("TCP", "127.0.0.1", 1)
    for value in ("Bearer", "Bearer ", "Basic abc"):
        found = Credentials.from_request(local, headers(authorization=value), [])
        assert auth.check(found) is Verdict.REFUSED, value


# --------------------------------------------- whose address failures are counted by


def proxied_authenticator(
    *proxies: str, clock: Clock | None = None, bus: EventBus | None = None
) -> Authenticator:
    networks = [ipaddress.ip_network(p) for p in proxies]
    return Authenticator(lambda: TOKEN, True, clock or Clock(), bus, trusted_proxies=networks)


def attempt(auth: Authenticator, peer: str, token: str, forwarded_for: str | None) -> Verdict:
    """One request from socket peer ``peer``, as the HTTP layer hands it over."""
    address = IPv6Address("TCP", peer, 1) if ":" in peer else IPv4Address("TCP", peer, 1)
    values = headers(authorization=f"Bearer {token}", host="127.0.0.1:8443")
    if forwarded_for is not None:
        values["x-forwarded-for"] = forwarded_for
    return auth.check(Credentials.from_request(address, values, []))


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1"])
def test_a_new_forwarded_for_value_each_try_is_still_throttled(peer: str) -> None:
    """The attack: 60 wrong tokens, each with another X-Forwarded-For, from a peer that is
    not a trusted proxy. The header is the client's own text, so all 60 count for ``peer``."""
    bus, seen = EventBus(), EventRecorder()
    bus.subscribe(seen)
    auth = Authenticator(lambda: TOKEN, True, Clock(), bus)
    verdicts = [attempt(auth, peer, "wrong", f"198.51.{i}.{i}") for i in range(60)]
    assert verdicts == [Verdict.REFUSED] * 10 + [Verdict.THROTTLED] * 50
    assert attempt(auth, peer, TOKEN, "192.0.2.200") is Verdict.THROTTLED
    assert {event.peer for event in seen.of(AuthFailed)} == {peer}
    assert auth.retry_after(peer) == pytest.approx(60.0)


@pytest.mark.parametrize("attacker", ["203.0.113.66", "::1"])
def test_forwarded_for_naming_a_victim_does_not_lock_the_victim_out(attacker: str) -> None:
    """A peer that is no trusted proxy (a remote host, a local process beside nginx)
    names the victim in X-Forwarded-For ten times: only the attacker is locked out; the
    victim still gets in, through the operator's nginx and directly."""
    auth = proxied_authenticator("127.0.0.1")  # nginx on this machine
    victim = "198.51.100.7"
    for _ in range(10):
        assert attempt(auth, attacker, "wrong", victim) is Verdict.REFUSED
    assert attempt(auth, attacker, TOKEN, victim) is Verdict.THROTTLED
    assert auth.retry_after(victim) == 0.0
    assert attempt(auth, "127.0.0.1", TOKEN, victim) is Verdict.TOKEN
    assert attempt(auth, victim, TOKEN, None) is Verdict.TOKEN


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1"])
def test_a_loopback_peer_that_is_no_trusted_proxy_cannot_lock_out_a_proxied_victim(
    peer: str,
) -> None:
    """Default config: ten wrong tries from loopback naming the victim lock the loopback
    address, never the victim's (which a trusted proxy elsewhere would report)."""
    auth = Authenticator(lambda: TOKEN, True, Clock())
    for _ in range(10):
        attempt(auth, peer, "wrong", "198.51.100.7")
    assert auth.retry_after("198.51.100.7") == 0.0
    assert auth.retry_after(peer) > 0.0
    assert attempt(auth, "198.51.100.7", TOKEN, None) is Verdict.TOKEN


def test_trusted_proxy_the_right_most_entry_is_counted() -> None:
    """Behind nginx ($proxy_add_x_forwarded_for) the client's text comes first and the
    address nginx saw last: changing the text each try changes nothing."""
    bus, seen = EventBus(), EventRecorder()
    bus.subscribe(seen)
    auth = proxied_authenticator("127.0.0.1", bus=bus)
    written = [f"10.9.{i}.1" for i in range(60)]
    verdicts = [attempt(auth, "127.0.0.1", "wrong", f"{w}, 203.0.113.66") for w in written]
    assert verdicts == [Verdict.REFUSED] * 10 + [Verdict.THROTTLED] * 50
    assert {event.peer for event in seen.of(AuthFailed)} == {"203.0.113.66"}
    # Nobody the attacker named is locked out; the proxy itself is not either.
    assert attempt(auth, "127.0.0.1", TOKEN, written[0]) is Verdict.TOKEN
    assert attempt(auth, "127.0.0.1", TOKEN, "198.51.100.7") is Verdict.TOKEN
    assert auth.retry_after("127.0.0.1") == 0.0


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "address"),
    [
        ("10.1.2.3", "198.51.100.7", "198.51.100.7"),  # inside 10.0.0.0/8
        ("10.255.255.255", "6.6.6.6, 198.51.100.7", "198.51.100.7"),
        ("11.0.0.1", "198.51.100.7", "11.0.0.1"),  # outside: its header is its own text
        ("2001:db8::5", "198.51.100.7", "198.51.100.7"),  # inside 2001:db8::/32
        ("2001:db9::5", "198.51.100.7", "2001:db9::5"),
        ("::ffff:10.0.0.9", "198.51.100.7", "198.51.100.7"),  # IPv4-mapped, as on tcp6
    ],
)
def test_trusted_proxies_may_be_networks(peer: str, forwarded_for: str, address: str) -> None:
    auth = proxied_authenticator("10.0.0.0/8", "2001:db8::/32")
    credentials = Credentials.from_request(
        IPv6Address("TCP", peer, 1) if ":" in peer else IPv4Address("TCP", peer, 1),
        headers(x_forwarded_for=forwarded_for),
        [],
    )
    assert auth.address(credentials) == address
    for _ in range(10):
        attempt(auth, peer, "wrong", forwarded_for)
    assert auth.retry_after(address) > 0.0


@pytest.mark.parametrize(
    ("forwarded_for", "address"),
    [
        # client wrote 6.6.6.6; the edge proxy appended 198.51.100.7; the inner 10.0.0.5
        ("6.6.6.6, 198.51.100.7, 10.0.0.5", "198.51.100.7"),
        ("6.6.6.6, 198.51.100.7, 10.0.0.5, 10.0.0.6", "198.51.100.7"),
        ("10.0.0.7, 10.0.0.5", "10.0.0.7"),  # all trusted: the left-most is the client
        ("198.51.100.7,10.0.0.5", "198.51.100.7"),  # no space after the comma
    ],
)
def test_a_chain_of_trusted_proxies_is_skipped(forwarded_for: str, address: str) -> None:
    auth = proxied_authenticator("127.0.0.1", "10.0.0.0/24")
    for _ in range(10):
        attempt(auth, "127.0.0.1", "wrong", forwarded_for)
    assert attempt(auth, "127.0.0.1", TOKEN, forwarded_for) is Verdict.THROTTLED
    assert auth.retry_after(address) > 0.0
    assert attempt(auth, "127.0.0.1", TOKEN, "6.6.6.6") is Verdict.TOKEN


@pytest.mark.parametrize(
    ("forwarded_for", "address"),
    [
        (None, "127.0.0.1"),  # the proxy did not say: count the proxy
        ("", "127.0.0.1"),
        ("unknown", "127.0.0.1"),
        ("198.51.100.7, _hidden", "127.0.0.1"),  # RFC 7239 obfuscated names, junk
        ("198.51.100.7, 300.1.1.1", "127.0.0.1"),
        ("198.51.100.7, not an ip, 10.0.0.5", "10.0.0.5"),  # the last trusted hop
        ("198.51.100.7:51234", "198.51.100.7"),  # with a port
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]x", "127.0.0.1"),
        ("1.2.3.4:port", "127.0.0.1"),
    ],
)
def test_a_garbled_forwarded_for_falls_back_to_the_proxy(
    forwarded_for: str | None, address: str
) -> None:
    auth = proxied_authenticator("127.0.0.1", "10.0.0.0/24")
    values = {} if forwarded_for is None else headers(x_forwarded_for=forwarded_for)
    local = IPv4Address("TCP", "127.0.0.1", 1)
    assert auth.address(Credentials.from_request(local, values, [])) == address


def test_a_trusted_proxy_never_gets_loopback_trust() -> None:
    """SPEC §7: a loopback connection that carries a proxy header needs a token, whether or
    not it comes from a trusted proxy; without one it is the operator's own script."""
    auth = proxied_authenticator("127.0.0.1", "::1")
    local = IPv4Address("TCP", "127.0.0.1", 1)
    for name in ("x_forwarded_for", "x_real_ip", "forwarded"):
        found = Credentials.from_request(local, headers(**{name: "198.51.100.7"}), [])
        assert auth.check(found) is Verdict.REFUSED, name
    plain = Credentials.from_request(IPv6Address("TCP", "::1", 1), headers(host="[::1]:1"), [])
    assert auth.check(plain) is Verdict.LOOPBACK


def test_a_unix_socket_is_counted_as_local() -> None:
    auth = proxied_authenticator("127.0.0.1")
    found = Credentials.from_request(
        UNIXAddress(b"/run/pa.sock"), headers(x_forwarded_for="198.51.100.7"), []
    )
    assert auth.address(found) == "local"
