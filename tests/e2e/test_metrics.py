"""/metrics from a real daemon: behind the token on the main site, or on its own listener."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .daemon import RECV_TIMEOUT, Client, DaemonPool, https_get
from .test_runs import run_until_idle, setup

pytestmark = pytest.mark.e2e


def sample_values(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def free_loopback_port() -> int:
    """A port nobody listens on right now (the daemon takes it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_metrics_count_a_real_run_and_need_the_token(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon, pid, client, _other = setup(daemons, root, home, clients)
    client.send("execute", {"prompt": "fake:replay:hello"}, project_id=pid, request_id="x")
    run_until_idle(client)
    assert daemon.port is not None
    ctx = daemon.tls_context()

    status, headers, _ = https_get(
        daemon.port, "/metrics", ctx, {"X-Forwarded-For": "203.0.113.9"}
    )
    assert (status, headers["www-authenticate"]) == (401, "Bearer")
    status, _, _ = https_get(daemon.port, "/metrics", ctx, {"Authorization": "Bearer wrong"})
    assert status == 401

    auth = {"X-Forwarded-For": "203.0.113.9", "Authorization": f"Bearer {daemon.token}"}
    status, headers, body = https_get(daemon.port, "/metrics", ctx, auth)
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    values = sample_values(body)
    assert values[("pocket_agent_executions_total", frozenset({("status", "success")}))] == 1
    assert values[("pocket_agent_claude_cost_usd_total", frozenset())] == pytest.approx(0.2679075)
    assert values[("pocket_agent_execution_duration_seconds_count", frozenset())] == 1
    assert values[("pocket_agent_connections_active", frozenset())] == 2
    assert values[("pocket_agent_projects_total", frozenset())] == 1
    assert values[("pocket_agent_auth_failures_total", frozenset())] == 2
    assert values[("process_resident_memory_bytes", frozenset())] > 0

    status, headers, body = https_get(daemon.port, "/ws", ctx)  # no upgrade
    assert (status, headers["upgrade"]) == (426, "websocket")
    assert b"Autobahn" not in body


def test_metrics_on_their_own_listener(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    port = free_loopback_port()
    (root / "config.yaml").write_text(f'metrics: {{listen: "tcp:{port}:interface=127.0.0.1"}}\n')
    daemon = daemons.start(root, home)
    clients(daemon)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=RECV_TIMEOUT)
    try:
        conn.request("GET", "/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200  # no token on the operator's own metrics address
    assert sample_values(body)[("pocket_agent_connections_active", frozenset())] == 1
    assert daemon.port is not None
    auth = {"Authorization": f"Bearer {daemon.token}"}
    status, _, _ = https_get(daemon.port, "/metrics", daemon.tls_context(), auth)
    assert status == 404  # moved off the main site
