"""/metrics: SPEC §8's series after in-memory runs of every outcome, and who may read them."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.testing import MemoryReactorClock

from pocket_agent.compose import build_service
from pocket_agent.core.events import SlowConsumerDropped
from pocket_agent.errors import StartupError
from pocket_agent.net.site import build_metrics_site
from pocket_agent.ops.metrics import DURATION_BUCKETS
from tests.support import TOKEN, Harness, make_config
from tests.test_execution import INIT, RESULT, TEXT, setup, start
from tests.test_web import Response, http_get

SPEC_SAMPLES = {
    "pocket_agent_connections_active",
    "pocket_agent_projects_total",
    "pocket_agent_executions_total",
    "pocket_agent_execution_duration_seconds_bucket",
    "pocket_agent_execution_duration_seconds_count",
    "pocket_agent_execution_duration_seconds_sum",
    "pocket_agent_messages_total",
    "pocket_agent_slow_consumers_dropped_total",
    "pocket_agent_auth_failures_total",
    "pocket_agent_claude_cost_usd_total",
}
# Ours beyond SPEC §8, for §10: how often a phone is asked, how it ends, how long it takes.
APPROVAL_SAMPLES = {
    "pocket_agent_permission_requests_total",
    "pocket_agent_permissions_resolved_total",
    "pocket_agent_permission_wait_seconds_bucket",
    "pocket_agent_permission_wait_seconds_count",
    "pocket_agent_permission_wait_seconds_sum",
}
NOTIFICATION_SAMPLES = {"pocket_agent_notifications_total"}  # SPEC §12


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(name, sorted labels): value}`` of every sample in the exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def scrape(
    harness: Harness, **headers: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = http_get(harness.app.site, "/metrics", **headers)
    assert response.code == 200, response
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(response.body)


def value(scraped: dict[Any, float], name: str, **labels: str) -> float:
    return scraped[(name, tuple(sorted(labels.items())))]


def test_exactly_the_spec_series_from_the_start(harness: Harness) -> None:
    scraped = scrape(harness)
    ours = {name for name, _ in scraped if name.startswith("pocket_agent_")}
    assert ours == SPEC_SAMPLES | APPROVAL_SAMPLES | NOTIFICATION_SAMPLES  # no *_created series
    for result in ("sent", "failed", "dropped"):
        assert value(scraped, "pocket_agent_notifications_total", result=result) == 0
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= {
        n for n, _ in scraped
    }
    for status in ("success", "failed", "timeout", "killed", "interrupted"):  # pre-created, at 0
        assert value(scraped, "pocket_agent_executions_total", status=status) == 0
    for direction in ("client", "claude", "server"):
        assert value(scraped, "pocket_agent_messages_total", direction=direction) == 0
    buckets = {
        dict(labels)["le"]
        for name, labels in scraped
        if name == "pocket_agent_execution_duration_seconds_bucket"
    }
    assert max(float(b) for b in buckets - {"+Inf"}) == 3600.0  # minute-long runs fit
    assert len(buckets) == len(DURATION_BUCKETS) + 1


def test_runs_of_every_outcome_are_counted(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(timeouts={"execution": 600.0})
    pid, [client] = setup(harness)
    seen: list[dict[str, Any]] = []

    def run(play: Callable[[Any], None]) -> None:
        process, replies = start(harness, client, pid)
        play(process)
        seen.extend(replies + client.new())

    def success(process: Any) -> None:
        harness.clock.advance(42)
        process.emit(INIT, TEXT, RESULT)
        process.exit(0)

    def failed(process: Any) -> None:
        harness.clock.advance(3)
        process.emit({**RESULT, "is_error": True, "total_cost_usd": 0.5})
        process.exit(1)

    def timeout(process: Any) -> None:
        process.emit(INIT)
        harness.clock.advance(600)
        assert harness.clock.trees[-1].signals == [("leader", signal.SIGINT)]
        process.exit(0)

    def killed(process: Any) -> None:
        harness.clock.advance(90)
        seen.extend(client.request("agent_kill", project_id=pid))
        process.exit(0)

    for play in (success, failed, timeout, killed):
        run(play)
    finished = [
        m["data"]["message"]
        for m in seen
        if m["type"] == "agent_message" and m["data"]["message"]["type"] == "execution_finished"
    ]
    assert [f["outcome"] for f in finished] == ["success", "failed", "timeout", "killed"]

    scraped = scrape(harness)
    for status in ("success", "failed", "timeout", "killed"):
        assert value(scraped, "pocket_agent_executions_total", status=status) == 1
    durations = [f["duration_ms"] / 1000 for f in finished]
    assert durations == [42, 3, 600, 90]
    assert value(scraped, "pocket_agent_execution_duration_seconds_count") == 4
    assert value(scraped, "pocket_agent_execution_duration_seconds_sum") == sum(durations)
    assert value(scraped, "pocket_agent_execution_duration_seconds_bucket", le="60.0") == 2
    assert value(scraped, "pocket_agent_execution_duration_seconds_bucket", le="120.0") == 3
    assert value(scraped, "pocket_agent_claude_cost_usd_total") == pytest.approx(0.75)
    directions = Counter(m["data"]["direction"] for m in seen if m["type"] == "agent_message")
    assert set(directions) == {"client", "claude", "server"}
    for direction, count in directions.items():
        assert value(scraped, "pocket_agent_messages_total", direction=direction) == count


def test_gauges_read_the_hub_and_the_registry_when_scraped(harness: Harness) -> None:
    assert value(scrape(harness), "pocket_agent_connections_active") == 0
    _pid, [client] = setup(harness)
    other = harness.hello()[0]
    scraped = scrape(harness)
    assert value(scraped, "pocket_agent_connections_active") == 2
    assert value(scraped, "pocket_agent_projects_total") == 1
    other.disconnect()
    client.request("project_create", data={"path": str(harness.project_dir("two"))})
    scraped = scrape(harness)
    assert value(scraped, "pocket_agent_connections_active") == 1
    assert value(scraped, "pocket_agent_projects_total") == 2


def test_slow_consumers_and_auth_failures_are_counted(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(limits={"send_buffer": 10_000})
    pid, [client, slow] = setup(harness, followers=2)
    process, _ = start(harness, client, pid)
    slow.server.budget.pauseProducing()
    big = {"type": "assistant", "message": {"content": [{"type": "text", "text": "x" * 3000}]}}
    for _ in range(5):
        process.emit(big)
    harness.clock.advance(0)
    assert len(harness.events.of(SlowConsumerDropped)) == 1
    refused = harness.connect(peer="192.0.2.4", headers={"Authorization": "Bearer wrong"})
    assert not refused.protocol.opened
    scraped = scrape(harness)
    assert value(scraped, "pocket_agent_slow_consumers_dropped_total") == 1
    assert value(scraped, "pocket_agent_auth_failures_total") == harness.auth_failures == 1


# ------------------------------------------------------------------- who may read it


def test_metrics_follow_the_token_rule(harness: Harness) -> None:
    site = harness.app.site
    proxied = http_get(site, "/metrics", X_Forwarded_For="203.0.113.9")
    assert (proxied.code, proxied.headers["www-authenticate"]) == (401, "Bearer")
    assert b"pocket_agent" not in proxied.body
    assert http_get(site, "/metrics", peer="192.0.2.4").code == 401
    wrong = http_get(site, "/metrics", Authorization="Bearer wrong")  # from loopback too
    assert wrong.code == 401
    assert harness.auth_failures == 3
    assert (
        http_get(site, "/metrics", peer="192.0.2.4", Authorization=f"Bearer {TOKEN}").code == 200
    )
    assert http_get(site, f"/metrics?token={TOKEN}", peer="192.0.2.4").code == 200
    assert http_get(site, "/metrics").code == 200  # the operator's own loopback scripts
    for _ in range(9):  # with the one above: ten failures from 192.0.2.4
        http_get(site, "/metrics", peer="192.0.2.4")
    throttled = http_get(site, "/metrics", peer="192.0.2.4", Authorization=f"Bearer {TOKEN}")
    assert throttled.code == 429
    assert value(scrape(harness), "pocket_agent_auth_failures_total") == harness.auth_failures


def test_openmetrics_when_the_scraper_asks(harness: Harness) -> None:
    response = http_get(
        harness.app.site, "/metrics", Accept="application/openmetrics-text; version=1.0.0"
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.body.endswith(b"# EOF\n")


def test_metrics_listen_moves_metrics_to_their_own_site(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(metrics={"listen": "tcp:9090:interface=127.0.0.1"})
    assert http_get(harness.app.site, "/metrics").code == 404
    own = build_metrics_site(harness.app.metrics, harness.clock)
    response = http_get(own, "/metrics", peer="192.0.2.4", X_Forwarded_For="203.0.113.9")
    assert response.code == 200  # no token there: the operator chose where it listens
    assert b"pocket_agent_connections_active 0.0" in response.body
    assert http_get(own, "/ws").code == 404 and http_get(own, "/health").code == 404


def listeners_of(tmp_path: Path, **metrics: Any) -> tuple[Any, MemoryReactorClock]:
    config = make_config(tmp_path, metrics=metrics)
    reactor = MemoryReactorClock()
    root = build_service(config, reactor)
    return root, reactor


def test_metrics_listen_is_an_extra_listener(tmp_path: Path) -> None:
    root, reactor = listeners_of(tmp_path, listen="tcp:9090:interface=127.0.0.1")
    [metrics] = [
        s for s in root if getattr(s, "description", None) == "tcp:9090:interface=127.0.0.1"
    ]
    assert metrics not in root.listeners  # not announced as a wss:// address
    metrics.privilegedStartService()
    [(_port, factory, _backlog, interface)] = [s for s in reactor.tcpServers if s[0] == 9090]
    assert interface == "127.0.0.1"
    assert factory is not root.app.site
    response: Response = http_get(factory, "/metrics", peer="192.0.2.4")
    assert response.code == 200 and b"pocket_agent_projects_total" in response.body
    metrics.stopService()


def test_metrics_listen_must_be_loopback_unless_insecure(tmp_path: Path) -> None:
    with pytest.raises(StartupError) as caught:
        listeners_of(tmp_path, listen="tcp:9090")
    assert ": metrics.listen: 'tcp:9090' is plain text" in str(caught.value)
    config = make_config(tmp_path, metrics={"listen": "tcp:9090"})
    build_service(attrs.evolve(config, insecure=True), MemoryReactorClock())
