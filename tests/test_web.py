"""The HTTP site: /health, /ws without an upgrade, the access log, rendered in memory."""

from __future__ import annotations

import json
from typing import Any

import attrs
import autobahn
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.logger import LogEvent, globalLogPublisher
from twisted.test import iosim
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from pocket_agent.net.site import HealthResource, PocketAgentSite
from tests.support import TOKEN, Harness


def get_health(
    harness: Harness, peer: str = "127.0.0.1", query_token: str | None = None, **headers: str
) -> tuple[int, Any]:
    request = DummyRequest([b"health"])
    request.client = IPv4Address("TCP", peer, 40000)
    if query_token is not None:
        request.args = {b"token": [query_token.encode()]}
    for name, value in headers.items():
        request.requestHeaders.addRawHeader(name.replace("_", "-"), value)
    body = HealthResource(harness.app.health.report, harness.authenticator).render_GET(request)
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json"]
    return request.responseCode or 200, json.loads(body)


def test_health_in_full_for_loopback_and_token(harness: Harness) -> None:
    code, body = get_health(harness)
    assert code == 200
    assert body["status"] == "healthy"
    assert {"version", "uptime_s", "claude", "connections", "projects", "disk"} <= set(body)
    code, body = get_health(harness, peer="192.0.2.4", Authorization=f"Bearer {TOKEN}")
    assert "connections" in body


def test_health_shows_only_status_without_a_token(harness: Harness) -> None:
    assert get_health(harness, X_Forwarded_For="203.0.113.9") == (200, {"status": "healthy"})
    assert get_health(harness, peer="192.0.2.4") == (200, {"status": "healthy"})
    assert harness.auth_failures == 0


def test_health_degraded_without_claude(harness: Harness) -> None:
    harness.app.claude.binary = "/nonexistent/claude"
    code, body = get_health(harness)
    assert (code, body["status"], body["claude"]["available"]) == (200, "degraded", False)
    assert "/nonexistent/claude" in body["claude"]["reason"]


def test_health_unhealthy_is_503(harness: Harness) -> None:
    harness.app.lock.release()
    code, body = get_health(harness, peer="192.0.2.4")
    assert (code, body) == (503, {"status": "unhealthy"})


def test_health_is_throttled_after_failures(harness: Harness) -> None:
    for _ in range(10):
        get_health(harness, peer="192.0.2.4", Authorization="Bearer wrong")
    code, _body = get_health(harness, peer="192.0.2.4", Authorization=f"Bearer {TOKEN}")
    assert code == 429


def test_access_log_redacts_the_token(debug_logging: None) -> None:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        request = DummyRequest([b"ws"])
        request.uri = f"/ws?tok%65n=%4A{TOKEN}&x=1".encode()
        request.args = {b"token": [f"J{TOKEN}".encode()], b"x": [b"1"]}
        request.method = b"GET"
        request.code = 101
        PocketAgentSite(None).log(request)  # type: ignore[arg-type]
    finally:
        globalLogPublisher.removeObserver(events.append)
    [event] = [e for e in events if e.get("log_format") == "HTTP request"]
    assert TOKEN not in json.dumps({k: str(v) for k, v in event.items()})
    assert event["uri"] == "/ws?token=<redacted>&x=1"


def test_no_access_log_event_at_all_below_debug() -> None:
    """Not even one the level filters out: twistd's stdout observer would print it."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        request = DummyRequest([b"ws"])
        request.method, request.code = b"GET", 200
        PocketAgentSite(None).log(request)  # type: ignore[arg-type]
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e for e in events if e.get("log_format") == "HTTP request"] == []


# ------------------------------------------- the whole site, over an in-memory socket


@attrs.frozen
class Response:
    code: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    status_line: str = ""


class RawHTTPClient(Protocol):
    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def http_get(
    site: Site,
    path: str,
    *,
    method: str = "GET",
    peer: str = "127.0.0.1",
    host: str = "localhost",
    **headers: str,
) -> Response:
    """One request through the real twisted.web stack (HTTPChannel, Site, resources),
    byte for byte over iosim: no sockets, no threads. ``headers`` as in ``get_health``."""
    address = IPv4Address("TCP", peer, 40000)
    server = site.buildProtocol(address)
    client = RawHTTPClient()
    pump = iosim.connect(
        server,
        iosim.FakeTransport(
            server,
            isServer=True,
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8443),
            peerAddress=address,
        ),
        client,
        iosim.FakeTransport(client, isServer=False),
        greet=True,
    )
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    if method in ("POST", "PUT"):
        lines.append("Content-Length: 0")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    client.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    pump.flush()
    head, _, body = client.received.partition(b"\r\n\r\n")
    status, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return Response(
        int(status.split()[1]),
        {name.lower(): value for name, value in fields.items()},
        body,
        status,
    )


def test_get_ws_without_an_upgrade_is_told_to_upgrade(harness: Harness) -> None:
    """Not Autobahn's status page (200, naming its version, following ?redirect=)."""
    for peer, query in (("192.0.2.4", ""), ("127.0.0.1", "?redirect=https://example.com/")):
        response = http_get(harness.app.site, f"/ws{query}", peer=peer)
        assert response.code == 426
        assert response.status_line == "HTTP/1.1 426 Upgrade Required"
        assert response.headers["upgrade"] == "websocket"
        assert response.headers["content-type"].startswith("text/plain")
        assert response.body == b"this is a WebSocket endpoint: upgrade required\n"
        assert "location" not in response.headers
    assert autobahn.__version__.encode() not in response.body


def test_the_websocket_upgrade_still_goes_through_the_site(harness: Harness) -> None:
    response = http_get(
        harness.app.site,
        "/ws",
        Upgrade="websocket",
        Connection="Upgrade",
        Sec_WebSocket_Key="dGhlIHNhbXBsZSBub25jZQ==",
        Sec_WebSocket_Version="13",
        Sec_WebSocket_Protocol="pocket-agent.v1",
    )
    assert response.code == 101
    assert response.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert b"server_hello" in response.body  # the first frame: the server took over


def test_health_with_a_wrong_token_is_refused_and_counted(harness: Harness) -> None:
    """SPEC §7 and §11: the web client learns of a refused token from /health."""
    for peer in ("127.0.0.1", "192.0.2.4"):
        code, body = get_health(harness, peer=peer, Authorization="Bearer wrong")
        assert (code, body) == (401, {"error": "invalid token"})
    code, body = get_health(harness, peer="192.0.2.4", query_token="wrong")
    assert code == 401
    assert harness.auth_failures == 3
    response = http_get(harness.app.site, "/health", peer="192.0.2.4", Authorization="Bearer x")
    assert (response.code, response.headers["www-authenticate"]) == (401, "Bearer")
    assert get_health(harness, peer="192.0.2.4") == (200, {"status": "healthy"})
