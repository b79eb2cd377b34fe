"""The signal relay: handlers only hand the signal to the reactor (issue 8, hole 7)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

from pocket_agent.services import SignalRelay


class FakeReactor:
    def __init__(self, running: bool = True) -> None:
        self.scheduled: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.stops = 0
        self.running = running

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.scheduled.append((f, args))

    def stop(self) -> None:
        if not self.running:
            raise ReactorNotRunning()
        self.running = False
        self.stops += 1

    def run_scheduled(self) -> None:
        scheduled, self.scheduled = self.scheduled, []
        for f, args in scheduled:
            f(*args)


class FakeService:
    def __init__(self) -> None:
        self.reloads = 0

    def reload(self) -> None:
        self.reloads += 1


def relay_with_log(
    reactor: FakeReactor, service: Any = None
) -> tuple[SignalRelay, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    relay = SignalRelay(reactor, service)
    relay.log = Logger(observer=events.append)
    return relay, events


def test_the_handler_itself_neither_logs_nor_stops() -> None:
    """Logging inside the handler could hit a log write in progress and fail, and the
    reactor would never stop: the handler only schedules."""
    reactor = FakeReactor()
    relay, events = relay_with_log(reactor)
    relay.handler(signal.SIGTERM, None)
    assert events == []
    assert reactor.stops == 0
    assert [(f, args) for f, args in reactor.scheduled] == [(relay.received, (signal.SIGTERM,))]
    reactor.run_scheduled()
    assert reactor.stops == 1
    assert [e["log_format"] for e in events] == ["Received {signal}, shutting down"]
    assert events[0]["signal"] == "SIGTERM"


def test_a_second_sigterm_is_one_shutdown() -> None:
    reactor = FakeReactor()
    relay, events = relay_with_log(reactor)
    relay.handler(signal.SIGTERM, None)
    relay.handler(signal.SIGINT, None)
    reactor.run_scheduled()
    assert reactor.stops == 1
    assert "already shutting down" in events[1]["log_format"]


def test_a_reactor_already_stopping_is_not_an_error() -> None:
    reactor = FakeReactor(running=False)
    relay, _ = relay_with_log(reactor)
    relay.handler(signal.SIGTERM, None)
    reactor.run_scheduled()  # must not raise ReactorNotRunning
    assert reactor.stops == 0


def test_sighup_reloads_on_the_reactor_thread() -> None:
    reactor = FakeReactor()
    service = FakeService()
    relay, _ = relay_with_log(reactor, service)
    relay.handler(signal.SIGHUP, None)
    assert service.reloads == 0
    reactor.run_scheduled()
    assert service.reloads == 1
    assert reactor.stops == 0
