"""The Prometheus series of SPEC §8, counted from domain events.

An observer on the :class:`~pocket_agent.core.events.EventBus` like the event log: the
domain never calls it. Counters follow the events; the two gauges read the hub and
the project registry when scraped, so they can never drift. Everything lives in a
:class:`~prometheus_client.CollectorRegistry` of the server's own (tests and several
servers in one process never share state) and is rendered on the reactor thread: the
gauges read domain objects that only that thread may touch, so prometheus_client's
threaded WSGI app is not used.
"""

from __future__ import annotations

from collections.abc import Callable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder

from pocket_agent.core.events import AuthFailed, Event, RecordAppended, SlowConsumerDropped
from pocket_agent.runs.events import PermissionRequested, PermissionResolved, RunFinished
from pocket_agent.runs.outcome import Outcome
from pocket_agent.runs.prompts import Resolution

# Runs take from seconds to the 5-minute default timeout and beyond (an operator may
# allow an hour): the buckets are spread over that span, not prometheus_client's
# default web-request latencies (5 ms to 10 s).
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
DIRECTIONS = ("client", "claude", "server")

# The ``*_created`` series are not among SPEC §8's and would double the output; the
# switch is process-wide, which suits a daemon with one registry.
prometheus_client.disable_created_metrics()


class Metrics:
    """``connections`` and ``projects`` are read at every scrape (the hub's connection
    count, the registry's size)."""

    def __init__(self, connections: Callable[[], int], projects: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Gauge(
            "pocket_agent_connections_active", "Open WebSocket connections", registry=r
        ).set_function(lambda: float(connections()))
        Gauge("pocket_agent_projects_total", "Registered projects", registry=r).set_function(
            lambda: float(projects())
        )
        self.executions = Counter(
            "pocket_agent_executions", "Finished runs by outcome", ["status"], registry=r
        )
        for outcome in Outcome:  # every outcome shows from the start, at 0
            self.executions.labels(status=str(outcome))
        self.duration = Histogram(
            "pocket_agent_execution_duration_seconds",
            "Wall-clock duration of finished runs",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.messages = Counter(
            "pocket_agent_messages",
            "History Records appended, by direction",
            ["direction"],
            registry=r,
        )
        for direction in DIRECTIONS:
            self.messages.labels(direction=direction)
        self.slow_consumers = Counter(
            "pocket_agent_slow_consumers_dropped",
            "Connections dropped for a full send buffer",
            registry=r,
        )
        self.auth_failures = Counter(
            "pocket_agent_auth_failures", "Refused or throttled authentications", registry=r
        )
        self.cost = Counter(
            "pocket_agent_claude_cost_usd", "Sum of result.total_cost_usd", registry=r
        )
        self.permissions = Counter(
            "pocket_agent_permission_requests", "Permission prompts asked of a phone", registry=r
        )
        self.resolved = Counter(
            "pocket_agent_permissions_resolved",
            "Permission prompts decided, by behavior and reason",
            ["behavior", "reason"],
            registry=r,
        )
        for reason in Resolution:
            for behavior in ("allow", "deny") if reason is Resolution.USER else ("deny",):
                self.resolved.labels(behavior=behavior, reason=str(reason))
        self.permission_wait = Histogram(
            "pocket_agent_permission_wait_seconds",
            "How long a permission prompt stayed open",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.notifications = Counter(
            "pocket_agent_notifications",
            "ntfy notifications (SPEC §12) by result: sent, failed after retries, dropped",
            ["result"],
            registry=r,
        )
        for result in ("sent", "failed", "dropped"):
            self.notifications.labels(result=result)
        ProcessCollector(registry=r)

    def observe(self, event: Event) -> None:
        match event:
            case RecordAppended(_, record):
                self.messages.labels(direction=record.direction).inc()
            case RunFinished(_, result):
                self.executions.labels(status=str(result.outcome)).inc()
                self.duration.observe(result.duration_ms / 1000)
                if result.cost_usd is not None and result.cost_usd > 0:
                    self.cost.inc(result.cost_usd)
            case PermissionRequested():
                self.permissions.inc()
            case PermissionResolved(behavior=behavior, reason=reason, waited_s=waited):
                self.resolved.labels(behavior=behavior, reason=reason).inc()
                self.permission_wait.observe(waited)
            case SlowConsumerDropped():
                self.slow_consumers.inc()
            case AuthFailed():
                self.auth_failures.inc()

    def notification(self, result: str) -> None:
        """Counted by :class:`~pocket_agent.ops.push.Push` (not a domain event)."""
        self.notifications.labels(result=result).inc()

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition and its content type, in the format ``accept`` asks for
        (the Prometheus text format unless a scraper asks for OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
