"""Authentication of the upgrade and of /health (SPEC §7, §8), against one shared daemon."""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
import websocket

from .daemon import (
    FORWARDED_FOR,
    WS_PROTOCOL,
    Client,
    Daemon,
    DaemonPool,
    https_get,
    ws_connect,
)

HEALTH_KEYS = {
    "status",
    "version",
    "uptime_s",
    "claude",
    "connections",
    "projects",
    "executions",
    "disk",
    "timestamp",
}


def refused_status(daemon: Daemon, **kwargs: object) -> int:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ws = ws_connect(daemon, **kwargs)
        ws.close()
    return refused.value.status_code


@pytest.mark.e2e
def test_forwarded_request_needs_the_token(
    shared_daemon: Daemon, clients: Callable[..., Client]
) -> None:
    token = shared_daemon.token

    # A request relayed by a proxy never gets loopback trust: 401 before the upgrade.
    assert refused_status(shared_daemon, headers=[FORWARDED_FOR]) == 401

    # The same request with the token is accepted, as "token".
    client = clients(shared_daemon, headers=[FORWARDED_FOR, f"Authorization: Bearer {token}"])
    assert client.hello is not None
    assert client.hello["data"]["authenticated_as"] == "token"

    # A wrong token is refused even from loopback.
    assert refused_status(shared_daemon, headers=["Authorization: Bearer " + "x" * 43]) == 401
    assert refused_status(shared_daemon, query="?token=" + "y" * 43) == 401

    # The token as ?token= (forwarded, so loopback trust cannot be what lets it in).
    client = clients(shared_daemon, headers=[FORWARDED_FOR], query=f"?token={token}")
    assert client.hello is not None
    assert client.hello["data"]["authenticated_as"] == "token"

    # The token as a subprotocol entry next to ours: ours is selected, never the token.
    client = clients(
        shared_daemon, headers=[FORWARDED_FOR], subprotocols=[WS_PROTOCOL, f"bearer.{token}"]
    )
    assert client.hello is not None
    assert client.hello["data"]["authenticated_as"] == "token"
    assert client.ws.getsubprotocol() == WS_PROTOCOL
    assert client.ws.getheaders()["sec-websocket-protocol"] == WS_PROTOCOL

    # A wrong bearer subprotocol entry is a wrong token: refused.
    status = refused_status(shared_daemon, subprotocols=[WS_PROTOCOL, "bearer." + "z" * 43])
    assert status == 401


@pytest.mark.e2e
def test_loopback_without_token(shared_daemon: Daemon, clients: Callable[..., Client]) -> None:
    first = clients(shared_daemon)
    second = clients(shared_daemon)
    hellos = [first.hello, second.hello]
    for hello in hellos:
        assert hello is not None
        assert hello["type"] == "server_hello"
        data = hello["data"]
        assert data["authenticated_as"] == "loopback"
        assert data["protocol_version"] == 1
        assert data["server_version"] == version("pocket-agent-server")
        assert isinstance(data["connection_id"], str)
        uuid.UUID(data["connection_id"])
        assert isinstance(data["limits"], dict)
    assert hellos[0]["data"]["connection_id"] != hellos[1]["data"]["connection_id"]

    # No subprotocol offered: none selected.
    assert first.ws.getsubprotocol() is None


@pytest.mark.e2e
def test_health_over_https(shared_daemon: Daemon, clients: Callable[..., Client]) -> None:
    port = shared_daemon.port
    assert port is not None
    ctx = shared_daemon.tls_context()
    clients(shared_daemon)  # at least one connection to count

    status, headers, body = https_get(port, "/health", ctx)
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    health = json.loads(body)
    assert HEALTH_KEYS <= set(health), health
    assert health["status"] in ("healthy", "degraded")
    assert health["version"] == version("pocket-agent-server")
    assert health["connections"]["active"] >= 1
    assert health["connections"]["max"] == 100
    assert isinstance(health["projects"]["count"], int)
    assert health["timestamp"].endswith("Z")

    # Through a proxy without a token: only the status.
    status, _, body = https_get(port, "/health", ctx, {"X-Forwarded-For": "203.0.113.9"})
    assert status == 200
    assert json.loads(body) == {"status": health["status"]}

    # Through a proxy with the token: everything again.
    auth = {"X-Forwarded-For": "203.0.113.9", "Authorization": f"Bearer {shared_daemon.token}"}
    status, _, body = https_get(port, "/health", ctx, auth)
    assert status == 200
    assert HEALTH_KEYS <= set(json.loads(body))

    # The certificate really is verified: without trusting it, the handshake fails.
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(port, "/health", ssl.create_default_context())


@pytest.mark.e2e
def test_token_never_logged(shared_daemon: Daemon, clients: Callable[..., Client]) -> None:
    """SPEC §2/§7: the token is never written to any log, ``?token=`` included."""
    token = shared_daemon.token
    clients(shared_daemon, headers=[FORWARDED_FOR], query=f"?token={token}")
    clients(shared_daemon, subprotocols=[WS_PROTOCOL, f"bearer.{token}"])
    port = shared_daemon.port
    assert port is not None
    https_get(port, f"/health?token={token}", shared_daemon.tls_context())
    # The last request above has certainly been logged once a later one is answered.
    https_get(port, "/health", shared_daemon.tls_context())

    server_log = (shared_daemon.root / "server.log").read_text()
    assert server_log, "server.log is empty"
    for line in server_log.splitlines():
        json.loads(line)  # JSON lines, as PA_LOG_FORMAT=json asks
    assert token not in server_log
    assert token not in shared_daemon.output()


def failure_peers(daemon: Daemon) -> list[str]:
    """The ``peer`` of every "Authentication failed" line in server.log (flushed per line,
    and written before the refusal is sent)."""
    lines = (json.loads(line) for line in (daemon.root / "server.log").read_text().splitlines())
    return [line["peer"] for line in lines if line.get("msg") == "Authentication failed"]


@pytest.mark.e2e
def test_a_new_forwarded_for_each_try_is_throttled(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    """The attack: 60 wrong tokens from one peer, each with another X-Forwarded-For. The
    peer is no trusted proxy (the default), so the header is the client's own text: all
    60 count for 127.0.0.1, and the 11th on gets 429, right token or not."""
    daemon = daemons.start(root, home)
    wrong = "Authorization: Bearer " + "x" * 43
    statuses = [
        refused_status(daemon, headers=[f"X-Forwarded-For: 198.51.{i}.{i}", wrong])
        for i in range(60)
    ]
    assert statuses == [401] * 10 + [429] * 50
    right = f"Authorization: Bearer {daemon.token}"
    assert refused_status(daemon, headers=["X-Forwarded-For: 192.0.2.200", right]) == 429
    assert set(failure_peers(daemon)) == {"127.0.0.1"}
    # The operator's own loopback script (no proxy header) is never locked out.
    hello = clients(daemon).hello
    assert hello is not None
    assert hello["data"]["authenticated_as"] == "loopback"


@pytest.mark.e2e
def test_behind_a_trusted_proxy_the_address_it_appended_is_counted(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    """``trusted_proxies: ["127.0.0.1"]``, requests shaped like nginx's
    ``$proxy_add_x_forwarded_for``: the client's text, then the address nginx saw. Only
    that last address is counted and logged; the addresses the attacker wrote, the
    victim among them, are not locked out."""
    (root / "config.yaml").write_text('auth:\n  trusted_proxies: ["127.0.0.1"]\n')
    daemon = daemons.start(root, home)
    wrong = "Authorization: Bearer " + "x" * 43
    victim = "198.51.100.7"
    written = [victim] + [f"10.9.{i}.1" for i in range(59)]
    statuses = [
        refused_status(daemon, headers=[f"X-Forwarded-For: {w}, 203.0.113.66", wrong])
        for w in written
    ]
    assert statuses == [401] * 10 + [429] * 50
    assert set(failure_peers(daemon)) == {"203.0.113.66"}

    right = f"Authorization: Bearer {daemon.token}"
    assert refused_status(daemon, headers=["X-Forwarded-For: 203.0.113.66", right]) == 429
    port = daemon.port
    assert port is not None
    status, _, _ = https_get(
        port,
        "/health",
        daemon.tls_context(),
        {"X-Forwarded-For": "203.0.113.66", "Authorization": f"Bearer {daemon.token}"},
    )
    assert status == 429
    # The victim the attacker named, through the same proxy: let in with the token.
    hello = clients(daemon, headers=[f"X-Forwarded-For: {victim}", right]).hello
    assert hello is not None
    assert hello["data"]["authenticated_as"] == "token"
    # A proxied request without a token still needs one, even from the trusted proxy.
    assert refused_status(daemon, headers=[f"X-Forwarded-For: {victim}"]) == 401
    assert failure_peers(daemon)[-1] == victim
