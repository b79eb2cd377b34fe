"""SPEC §12: ntfy notifications, against a fake ntfy server on 127.0.0.1 (real reactor,
real twisted.web client) with the timeouts and pauses on a test clock, and in memory."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.logger import LogEvent, Logger, formatEvent
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from pocket_agent.config import ConfigError, NotificationsConfig, NtfyConfig, load_config
from pocket_agent.config.changes import HIDDEN
from pocket_agent.core.events import RecordAppended
from pocket_agent.ops.push import BACKOFF, TIMEOUT, Push
from pocket_agent.ops.pushtext import header_text, notification_for
from pocket_agent.runs.events import PermissionRequested, RunFinished
from pocket_agent.runs.outcome import Outcome, RunResult
from tests.support import Harness, make_config
from tests.test_execution import finish_ok, setup, start

TOPIC = "pa-test_topic"
NTFY_TOKEN = "tk_notareal0token0for0tests00000"
PROMPT = "fix the secret bug in billing.py: password=hunter2"
ORIGIN = "https://192.0.2.2:8443"
PROJECT_PATH = "/home/me/src/shop-app"


def ntfy_config(url: str | None, *, token: str | None = NTFY_TOKEN, events: Any = None) -> Any:
    return NotificationsConfig(
        ntfy=NtfyConfig(url=url, topic=TOPIC if url else None, token=token),
        events=tuple(events or ("approval_needed", "run_finished", "run_failed")),
    )


def result(outcome: Outcome, reason: str | None = None, error: str | None = None) -> RunResult:
    return RunResult(
        run_id="r1",
        outcome=outcome,
        exit_code=0,
        signal=None,
        duration_ms=1234,
        cost_usd=0.01,
        session_id="s",
        error=error,
        reason=reason,
    )


ASK = PermissionRequested("p1", "r1", "perm-1", "Write")
DONE = RunFinished("p1", result(Outcome.SUCCESS))
FAILED = RunFinished("p1", result(Outcome.FAILED, error=f"claude said: {PROMPT}"))


# --------------------------------------------------------------- what is sent


def test_each_event_becomes_its_notification() -> None:
    ask = notification_for(ASK, "shop-app")
    assert ask is not None
    assert (ask.event, ask.title, ask.priority, ask.tags) == (
        "approval_needed",
        "Approval needed: shop-app",
        "high",
        "question",
    )
    assert ask.message == "Claude asks to use Write in shop-app."
    cases = {
        Outcome.SUCCESS: ("run_finished", "Run finished: shop-app", "shop-app: success"),
        Outcome.INTERRUPTED: ("run_finished", "Run finished: shop-app", "shop-app: interrupted"),
        Outcome.KILLED: ("run_finished", "Run finished: shop-app", "shop-app: killed (shutdown)"),
        Outcome.FAILED: ("run_failed", "Run failed: shop-app", "shop-app: failed"),
        Outcome.TIMEOUT: ("run_failed", "Run failed: shop-app", "shop-app: timeout (timeout)"),
    }
    for outcome, expected in cases.items():
        reason = {Outcome.KILLED: "shutdown", Outcome.TIMEOUT: "timeout"}.get(outcome)
        made = notification_for(RunFinished("p1", result(outcome, reason, PROMPT)), "shop-app")
        assert made is not None
        assert (made.event, made.title, made.message) == expected
        assert PROMPT not in repr(made)  # the run's error text may quote the prompt
    assert notification_for(RecordAppended("p1", None), "x") is None  # type: ignore[arg-type]


def test_names_are_one_printable_line() -> None:
    made = notification_for(PermissionRequested("p", "r", "q", "Bash\r\nX-Evil: 1"), "a\nb" * 50)
    assert made is not None
    assert "\n" not in made.title + made.message and "\r" not in made.message
    assert len(made.title) <= len("Approval needed: ") + 80
    assert header_text("shop") == b"shop"
    assert header_text("café") == b"=?UTF-8?B?Y2Fmw6k=?="  # RFC 2047, which ntfy decodes


# ------------------------------------------------------- the fake ntfy server


@attrs.define
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeNtfy(Resource):
    """Answers each POST with the next of ``codes`` (then 200); ``hang`` never answers."""

    isLeaf = True

    def __init__(self, codes: list[int] | None = None, hang: bool = False) -> None:
        super().__init__()
        self.codes = list(codes or [])
        self.hang = hang
        self.seen: list[Seen] = []
        self.open: list[Deferred[None]] = []  # hanging requests, until their client goes
        self._waiting: list[Deferred[Seen]] = []

    def render(self, request: Request) -> bytes | int:
        headers = {
            k.decode().lower(): v[-1].decode()
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        assert request.content is not None
        seen = Seen(
            request.method.decode(), request.path.decode(), headers, request.content.read()
        )
        self.seen.append(seen)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            reactor.callLater(0, d.callback, seen)  # type: ignore[attr-defined]
        if self.hang:
            gone = request.notifyFinish()
            gone.addErrback(lambda _: None)
            self.open.append(gone)
            return NOT_DONE_YET
        code = self.codes.pop(0) if self.codes else 200
        request.setResponseCode(code)
        return json.dumps({"id": "x", "event": "message"}).encode()

    def next_request(self, count: int) -> Deferred[Seen]:
        """Fires once ``count`` requests have arrived."""
        if len(self.seen) >= count:
            return defer.succeed(self.seen[count - 1])
        d: Deferred[Seen] = Deferred()
        self._waiting.append(d)
        return d.addCallback(lambda _: self.next_request(count))


class WatchedClock(Clock):
    """A test clock that can say when something is scheduled ``delay`` from now."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[tuple[float, Deferred[None]]] = []

    def callLater(
        self, delay: float, f: Callable[..., object], *a: Any, **kw: Any
    ) -> IDelayedCall:
        call = super().callLater(delay, f, *a, **kw)
        for item in list(self._waiting):
            if item[0] == delay:
                self._waiting.remove(item)
                reactor.callLater(0, item[1].callback, None)  # type: ignore[attr-defined]
        return call

    def scheduled(self, delay: float) -> Deferred[None]:
        if any(c.getTime() - self.seconds() == delay for c in self.getDelayedCalls()):
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append((delay, d))
        return d


def bounded(d: Deferred[Any]) -> Deferred[Any]:
    """A test that goes wrong fails in seconds instead of hanging the run."""
    return d.addTimeout(20, reactor)  # type: ignore[arg-type]


@attrs.define
class Setup:
    server: FakeNtfy
    url: str
    clock: WatchedClock
    push: Push
    counted: list[str]
    logged: list[LogEvent]


@pytest.fixture
def ntfy() -> Iterator[Callable[..., Setup]]:
    ports: list[Any] = []
    servers: list[FakeNtfy] = []

    def make(
        server: FakeNtfy | None = None, *, dead: bool = False, path: str = "/ntfy", **push: Any
    ) -> Setup:
        server = server or FakeNtfy()
        port = reactor.listenTCP(0, Site(server), interface="127.0.0.1")  # type: ignore[attr-defined]
        number = port.getHost().port
        if dead:
            port.stopListening()  # connection refused from now on
        else:
            ports.append(port)
        servers.append(server)
        url = f"http://127.0.0.1:{number}{path}"
        clock = WatchedClock()
        counted: list[str] = []
        logged: list[LogEvent] = []
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        made = Push(
            ntfy_config(url),
            agent,
            clock,
            project_path=lambda pid: PROJECT_PATH if pid == "p1" else None,
            origin=lambda: ORIGIN,
            count=counted.append,
            **push,
        )
        made.log = Logger(observer=logged.append)
        return Setup(server, url, clock, made, counted, logged)

    yield make
    for server in servers:
        for gone in server.open:  # the client hung up on a hanging request: wait for it
            pytest_twisted.blockon(bounded(gone))
    for port in ports:
        pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def text_of(events: list[LogEvent]) -> str:
    return "\n".join(formatEvent(e) + repr(sorted(e.items(), key=str)) for e in events)


@pytest_twisted.inlineCallbacks
def test_posts_to_the_topic_with_ntfy_headers_and_no_prompt(
    ntfy: Callable[..., Setup],
) -> Generator[Deferred[Any], Any, None]:
    s = ntfy()
    s.push.observe(ASK)
    s.push.observe(FAILED)
    s.clock.advance(0)
    yield bounded(s.server.next_request(1))
    yield bounded(s.clock.scheduled(0))  # the second one follows the first
    s.clock.advance(0)
    yield bounded(s.push.idle())
    assert s.counted == ["sent", "sent"]
    ask, failed = s.server.seen
    assert (ask.method, ask.path) == ("POST", f"/ntfy/{TOPIC}")
    assert ask.headers["title"] == "Approval needed: shop-app"
    assert ask.headers["priority"] == "high"
    assert ask.headers["tags"] == "question"
    assert ask.headers["click"] == f"{ORIGIN}/#project=p1"
    assert ask.headers["authorization"] == f"Bearer {NTFY_TOKEN}"
    assert ask.headers["content-type"] == "text/plain; charset=utf-8"
    assert ask.body == b"Claude asks to use Write in shop-app."
    assert failed.headers["title"] == "Run failed: shop-app"
    assert failed.body == b"shop-app: failed"
    for seen in (ask, failed):
        assert PROMPT.encode() not in seen.body and "hunter2" not in json.dumps(seen.headers)
    assert NTFY_TOKEN not in text_of(s.logged)


@pytest_twisted.inlineCallbacks
def test_no_token_no_authorization_and_unwanted_events_are_not_sent(
    ntfy: Callable[..., Setup],
) -> Generator[Deferred[Any], Any, None]:
    s = ntfy(path="")
    s.push.config = ntfy_config(s.url, token=None, events=["run_failed"])
    s.push.observe(ASK)  # not among the events
    s.push.observe(DONE)
    assert s.clock.getDelayedCalls() == [] and not s.push.queue
    s.push.observe(FAILED)
    s.clock.advance(0)
    yield bounded(s.push.idle())
    [seen] = s.server.seen
    assert seen.path == f"/{TOPIC}"
    assert "authorization" not in seen.headers
    s.push.config = ntfy_config(None)  # off (SIGHUP): nothing is queued
    s.push.observe(FAILED)
    assert not s.push.queue
    assert s.counted == ["sent"]


@pytest.mark.parametrize("debug", [False, True])
@pytest_twisted.inlineCallbacks
def test_notification_sent_is_a_debug_line_built_only_at_debug(
    ntfy: Callable[..., Setup], monkeypatch: pytest.MonkeyPatch, debug: bool
) -> Generator[Deferred[Any], Any, None]:
    from pocket_agent.ops.logs import DEBUG

    monkeypatch.setattr(DEBUG, "on", debug)
    s = ntfy()
    s.push.observe(DONE)
    s.clock.advance(0)
    yield bounded(s.push.idle())
    assert s.counted == ["sent"]
    sent = [e for e in s.logged if e.get("log_format") == "Notification sent"]
    assert len(sent) == (1 if debug else 0)


def test_turned_off_while_queued_is_dropped_not_sent() -> None:
    clock, agent, counted = Clock(), NeverAgent(), []
    push = memory_push(clock, agent, counted)
    push.observe(DONE)
    push.config = ntfy_config(None)  # SIGHUP before it went out
    clock.advance(0)
    assert agent.requests == [] and counted == ["dropped"]


@pytest_twisted.inlineCallbacks
def test_a_500_is_retried_after_a_pause_then_sent(
    ntfy: Callable[..., Setup],
) -> Generator[Deferred[Any], Any, None]:
    s = ntfy(FakeNtfy(codes=[500, 503]))
    s.push.observe(DONE)
    s.clock.advance(0)
    for attempt, pause in ((1, BACKOFF[0]), (2, BACKOFF[1])):
        yield bounded(s.server.next_request(attempt))
        yield bounded(s.clock.scheduled(pause))
        assert len(s.server.seen) == attempt and s.counted == []
        s.clock.advance(pause)
    yield bounded(s.push.idle())
    assert len(s.server.seen) == 3
    assert s.counted == ["sent"]
    assert s.server.seen[0].headers == s.server.seen[2].headers  # the same message again


@pytest_twisted.inlineCallbacks
def test_a_refused_connection_fails_after_three_retries(
    ntfy: Callable[..., Setup],
) -> Generator[Deferred[Any], Any, None]:
    s = ntfy(dead=True)
    s.push.observe(ASK)
    s.clock.advance(0)
    for pause in BACKOFF:
        yield bounded(s.clock.scheduled(pause))
        assert s.counted == []
        s.clock.advance(pause)
    yield bounded(s.push.idle())
    assert s.counted == ["failed"]
    [warning] = [e for e in s.logged if e["log_level"].name == "warn"]
    assert warning["attempts"] == 4
    assert "ConnectionRefused" in warning["error"]
    assert warning["server"] == "http://127.0.0.1:" + s.url.split(":")[2].split("/")[0]
    assert NTFY_TOKEN not in text_of(s.logged) and TOPIC not in formatEvent(warning)


@pytest_twisted.inlineCallbacks
def test_a_server_that_never_answers_times_out_each_attempt(
    ntfy: Callable[..., Setup],
) -> Generator[Deferred[Any], Any, None]:
    s = ntfy(FakeNtfy(hang=True))
    s.push.observe(DONE)
    s.clock.advance(0)
    for attempt in range(1, 5):
        yield bounded(s.server.next_request(attempt))
        s.clock.advance(TIMEOUT - 0.5)
        assert s.counted == [] and s.push.sending is not None  # still waiting
        s.clock.advance(0.5)
        if attempt < 4:
            pause = BACKOFF[attempt - 1]
            yield bounded(s.clock.scheduled(pause))
            s.clock.advance(pause)
    yield bounded(s.push.idle())
    assert len(s.server.seen) == 4
    assert s.counted == ["failed"]
    [warning] = [e for e in s.logged if e["log_level"].name == "warn"]
    assert warning["error"] == "no answer within 10s"


@pytest_twisted.inlineCallbacks
def test_a_bad_token_is_not_retried(
    ntfy: Callable[..., Setup],
) -> Generator[Deferred[Any], Any, None]:
    s = ntfy(FakeNtfy(codes=[401]))
    s.push.observe(DONE)
    s.clock.advance(0)
    yield bounded(s.push.idle())
    assert (len(s.server.seen), s.counted) == (1, ["failed"])


# ------------------------------------------------- never in the way of a run


class NeverAgent:
    """An ntfy server that never answers, without a socket; keeps what it was asked."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes, Any]] = []

    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None) -> Any:
        self.requests.append((method, uri, headers))
        return Deferred()


class FailingAgent(NeverAgent):
    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None) -> Any:
        super().request(method, uri, headers, body)
        return defer.fail(ConnectionRefusedError())


def memory_push(clock: Clock, agent: NeverAgent, counted: list[str], **kw: Any) -> Push:
    return Push(
        ntfy_config("https://ntfy.example"),
        agent,  # type: ignore[arg-type]
        clock,
        project_path=lambda pid: None,
        origin=lambda: None,
        count=counted.append,
        **kw,
    )


def test_the_observer_only_queues_and_the_queue_is_bounded() -> None:
    clock, agent, counted = Clock(), NeverAgent(), []
    push = memory_push(clock, agent, counted, queue_size=3)
    for _ in range(10):
        push.observe(DONE)
    assert agent.requests == []  # nothing is sent from inside the observer
    assert len(push.queue) == 3 and counted == ["dropped"] * 7
    clock.advance(0)
    [(method, uri, headers)] = agent.requests  # one at a time, in order
    assert (method, uri) == (b"POST", f"https://ntfy.example/{TOPIC}".encode())
    assert headers.getRawHeaders(b"click") is None  # no origin known: no link
    assert headers.getRawHeaders(b"title") == [b"Run finished: p1"]  # unknown path: the id
    push.observe(DONE)
    assert len(push.queue) == 3 and counted == ["dropped"] * 7


def test_shutdown_gives_the_queue_a_moment_then_drops_it() -> None:
    clock, agent, counted = Clock(), NeverAgent(), []
    push = memory_push(clock, agent, counted)
    logged: list[LogEvent] = []
    push.log = Logger(observer=logged.append)
    push.startService()
    push.observe(DONE)
    push.observe(FAILED)
    clock.advance(0)
    stopped = push.stopService()
    assert stopped is not None and not stopped.called
    clock.advance(1.9)
    assert not stopped.called
    clock.advance(0.1)
    assert stopped.called and counted == ["dropped", "dropped"]
    assert clock.getDelayedCalls() == []
    push.observe(DONE)  # after the stop: nothing
    assert not push.queue
    assert "https://ntfy.example" in text_of(
        [e for e in logged if "Notifications go" in formatEvent(e)]
    )
    assert TOPIC not in text_of(logged)
    failing, counted = memory_push(clock, FailingAgent(), []), []
    failing.count = counted.append
    failing.startService()
    failing.observe(DONE)
    failing.observe(DONE)
    clock.advance(0)
    assert failing.retrying
    assert failing.stopService() is None  # ntfy already fails: no wait
    assert counted == ["dropped", "dropped"] and clock.getDelayedCalls() == []
    idle = memory_push(Clock(), NeverAgent(), [])
    idle.startService()
    assert idle.stopService() is None  # nothing waiting: no delay at all


def test_a_run_finishes_for_its_followers_whatever_ntfy_does(
    make_harness: Callable[..., Harness],
) -> None:
    """Wired by compose: the run ends and is shown at once; the notification waits."""
    harness = make_harness(
        notifications={"ntfy": NtfyConfig(url="https://n.example", topic=TOPIC, token=None)}
    )
    agent = NeverAgent()
    harness.app.push.agent = agent  # type: ignore[assignment]
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid, PROMPT)
    finish_ok(harness, process)
    finished = [m for m in client.new() if m["type"] == "execution_finished"]
    assert finished and finished[0]["data"]["outcome"] == "success"
    assert agent.requests == []  # queued, not sent, while the run ended
    harness.clock.advance(0)
    [(_method, uri, headers)] = agent.requests
    assert uri == f"https://n.example/{TOPIC}".encode()
    assert headers.getRawHeaders(b"title") == [b"Run finished: app"]
    [click] = headers.getRawHeaders(b"click")
    assert click.startswith(b"http") and click.endswith(f"/#project={pid}".encode())
    assert PROMPT.encode() not in repr(headers).encode()
    assert harness.app.metrics.notifications.labels(result="dropped")._value.get() == 0


def test_the_counter_is_on_metrics(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness()
    harness.app.push.count("sent")
    harness.app.push.count("dropped")
    body, _ = harness.app.metrics.render()
    assert b'pocket_agent_notifications_total{result="sent"} 1.0' in body
    assert b'pocket_agent_notifications_total{result="failed"} 0.0' in body
    assert b'pocket_agent_notifications_total{result="dropped"} 1.0' in body


# ---------------------------------------------------------------- the config


def load(tmp_path: Path, text: str) -> Any:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    (root / "config.yaml").write_text(text)
    from pocket_agent.config import Overrides

    return load_config(Overrides(root=str(root)), environ={})


def test_config_defaults_off_and_a_full_entry(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.notifications == ntfy_config(None, token=None)
    assert not config.notifications.enabled
    loaded = load(
        tmp_path,
        "notifications:\n  ntfy: {url: 'https://ntfy.sh/', topic: pa-1, token: tk_abc}\n"
        "  events: [approval_needed]\n",
    )
    assert loaded.notifications == NotificationsConfig(
        ntfy=NtfyConfig(url="https://ntfy.sh", topic="pa-1", token="tk_abc"),
        events=("approval_needed",),
    )
    assert loaded.notifications.enabled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ntfy: {url: 'ftp://x', topic: t}", "notifications.ntfy.url: 'ftp://x' is not an http"),
        ("ntfy: {url: 'ntfy.sh', topic: t}", "notifications.ntfy.url: 'ntfy.sh' is not an http"),
        ("ntfy: {url: 'https://ntfy.sh'}", "notifications.ntfy.topic: must be set when"),
        (
            "ntfy: {url: 'https://ntfy.sh', topic: ' '}",
            "notifications.ntfy.topic: ' ' is not a non-empty",
        ),
        (
            "ntfy: {url: 'https://ntfy.sh', topic: 'a/b'}",
            "notifications.ntfy.topic: 'a/b' is not a topic",
        ),
        (
            "ntfy: {url: 'https://u:pw@ntfy.sh', topic: t}",
            "notifications.ntfy.url: has credentials",
        ),
        ("ntfy: {url: 'https://ntfy.sh?x=1', topic: t}", "has a query or fragment"),
        (
            "ntfy: {url: 'https://ntfy.sh', topic: t, tokn: x}",
            "notifications.ntfy.tokn: unknown key",
        ),
        (
            "ntfy: {url: 'https://ntfy.sh', topic: t, token: 'a b'}",
            "notifications.ntfy.token: has spaces",
        ),
        (
            "events: [run_started]",
            "notifications.events[0]: 'run_started' is not one of approval_needed",
        ),
        ("events: run_failed", "notifications.events: 'run_failed' is not a list"),
        ("ntfy: []", "notifications.ntfy: [] is not a mapping"),
        ("nfty: {}", "notifications.nfty: unknown key"),
    ],
)
def test_bad_notification_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "notifications:\n  " + text + "\n")
    assert str(info.value).startswith(message) or message in str(info.value), str(info.value)
    assert "pw" not in str(info.value) and "a b" not in str(info.value)


def test_sighup_applies_notifications_and_hides_the_token(harness: Harness) -> None:
    new = attrs.evolve(
        harness.config,
        notifications=NotificationsConfig(
            ntfy=NtfyConfig(url="https://ntfy.sh", topic="t", token=NTFY_TOKEN),
            events=("run_failed",),
        ),
    )
    result = harness.app.reconfigure(new)
    assert harness.app.push.config == new.notifications
    shown = {c.key: (c.old_shown, c.new_shown) for c in result.applied}
    assert shown["notifications.ntfy.token"] == ("null", HIDDEN)
    assert shown["notifications.ntfy.url"] == ("null", "https://ntfy.sh")
    assert shown["notifications.ntfy.topic"] == ("null", HIDDEN)  # a topic reads along
    assert result.need_restart == ()


def test_build_service_runs_push_only_when_configured(tmp_path: Path) -> None:
    """Configured, it starts before the domain and so stops after the runs it reports."""
    from twisted.internet.testing import MemoryReactorClock

    from pocket_agent.compose import build_service

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    off = build_service(make_config(tmp_path / "a"), MemoryReactorClock())
    assert "Push" not in [type(s).__name__ for s in off]
    config = make_config(
        tmp_path / "b",
        notifications={"ntfy": NtfyConfig(url="https://n.example", topic=TOPIC, token=None)},
    )
    names = [type(s).__name__ for s in build_service(config, MemoryReactorClock())]
    assert names.index("LogService") < names.index("Push") < names.index("DomainService")
