"""/health and the access log, rendered in memory."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.logger import LogEvent, globalLogPublisher
from twisted.web.test.requesthelper import DummyRequest

from pocket_agent.net.site import HealthResource, PocketAgentSite
from tests.support import TOKEN, Harness


def get_health(harness: Harness, peer: str = "127.0.0.1", **headers: str) -> tuple[int, Any]:
    request = DummyRequest([b"health"])
    request.client = IPv4Address("TCP", peer, 40000)
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


def test_access_log_redacts_the_token() -> None:
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
