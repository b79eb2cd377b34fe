"""The hub: who is connected, who follows what, and which events reach whom."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from pocket_agent.compose import build_registry
from pocket_agent.core.errors import ProjectNotFound
from pocket_agent.core.events import (
    Answered,
    AuthFailed,
    Cause,
    DeleteAnswer,
    Event,
    ProjectChanged,
    ProjectCreated,
    ProjectDeleted,
    RecordAppended,
    SlowConsumerDropped,
)
from pocket_agent.core.hub import Departure, Hub
from pocket_agent.core.registry import ProjectRegistry
from pocket_agent.runs.events import (
    RunFinished,
    RunKilled,
    RunStarted,
    SessionChanged,
    SessionReset,
)
from pocket_agent.runs.outcome import Outcome, RunResult
from tests.support import make_config


@attrs.define(eq=False)
class Conn:
    connection_id: str
    authenticated_as: str = "loopback"
    delivered: list[Event] = attrs.field(factory=list)
    closed: list[Departure] = attrs.field(factory=list)
    aborted: int = 0

    def deliver(self, event: Event) -> None:
        self.delivered.append(event)

    def close(self, why: Departure) -> None:
        self.closed.append(why)

    def abort(self) -> None:
        self.aborted += 1


@attrs.define
class World:
    registry: ProjectRegistry
    hub: Hub
    home: Path

    def project(self, name: str) -> str:
        path = self.home / name
        path.mkdir()
        project, created = self.registry.create(str(path), False)
        assert created
        return project.id

    def conn(self, cid: str, authenticated_as: str = "loopback") -> Conn:
        conn = Conn(cid, authenticated_as)
        assert self.hub.connect(conn)
        return conn


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    registry = build_registry(make_config(tmp_path), Clock())
    registry.load()
    hub = Hub(registry, max_connections=3)
    hub.accepting = True
    yield World(registry, hub, tmp_path / "home")
    registry.close()


def seqs(lines: list[bytes]) -> list[int]:
    return [json.loads(line)["seq"] for line in lines]


RESULT = RunResult("r1", Outcome.SUCCESS, 0, None, 10, None, None)


def project_events(pid: str, world: World) -> list[Event]:
    record = world.registry.history(pid).append("r1", "claude", {"type": "assistant"})
    return [
        ProjectChanged(world.hub.snapshot(world.registry.get(pid))),
        RecordAppended(pid, record),
        SessionChanged(pid, "s1"),
        SessionReset(pid, "s1"),
        RunStarted(pid, "r1", None),
        RunKilled(pid, "r1"),
        RunFinished(pid, RESULT),
    ]


# ----------------------------------------------------------------- connections


def test_connect_is_refused_until_accepting(world: World) -> None:
    world.hub.accepting = False
    assert world.hub.connect(Conn("c1")) is False
    assert world.hub.connection_count == 0
    world.hub.accepting = True
    assert world.hub.connect(Conn("c1")) is True
    assert world.hub.connection_count == 1


def test_connect_is_refused_at_the_limit_and_allowed_again_after_a_leave(world: World) -> None:
    conns = [world.conn(f"c{i}") for i in range(3)]
    extra = Conn("c3")
    assert world.hub.connect(extra) is False
    assert world.hub.connection_count == 3
    world.hub.observe(ProjectDeleted("nope"))
    assert extra.delivered == []  # a refused connection hears nothing
    world.hub.disconnect(conns[0])
    assert world.hub.connect(extra) is True


def test_drained_fires_when_the_last_connection_leaves(world: World) -> None:
    fired: list[None] = []
    world.hub.drained().addCallback(fired.append)
    assert fired == [None]  # nobody connected: at once
    a, b = world.conn("a"), world.conn("b")
    fired.clear()
    world.hub.drained().addCallback(fired.append)
    world.hub.disconnect(a)
    world.hub.disconnect(a)  # twice: no effect
    world.hub.disconnect(Conn("stranger"))
    assert fired == []
    world.hub.disconnect(b)
    assert fired == [None]
    assert world.hub.connection_count == 0


def test_close_all_asks_every_connection_to_close(world: World) -> None:
    a, b = world.conn("a"), world.conn("b", "token")
    world.hub.close_all(Departure.SHUTDOWN)
    assert a.closed == [Departure.SHUTDOWN]
    assert b.closed == [Departure.SHUTDOWN]
    assert world.hub.connection_count == 2  # gone only once they disconnect


def test_abort_all_drops_everyone_and_drains(world: World) -> None:
    pid = world.project("app")
    a, b = world.conn("a"), world.conn("b")
    world.hub.subscribe(a, pid, None)
    fired: list[None] = []
    world.hub.drained().addCallback(fired.append)
    world.hub.abort_all()
    assert (a.aborted, b.aborted) == (1, 1)
    assert world.hub.connection_count == 0
    assert fired == [None]
    assert not world.hub.follows(a, pid)
    assert world.hub.snapshot(world.registry.get(pid)).subscriber_count == 0


def test_revoking_the_token_closes_only_token_connections(world: World) -> None:
    token1, local, token2 = world.conn("t1", "token"), world.conn("l"), world.conn("t2", "token")
    assert world.hub.revoke_token_sessions() == 2
    assert token1.closed == [Departure.TOKEN_REVOKED]
    assert token2.closed == [Departure.TOKEN_REVOKED]
    assert local.closed == []
    assert token1.aborted == token2.aborted == local.aborted == 0


# ------------------------------------------------------------------- following


def test_subscribe_replays_exactly_the_records_after_after_seq(world: World) -> None:
    pid = world.project("app")
    history = world.registry.history(pid)
    for i in range(7):
        history.append("r1", "claude", {"type": "assistant", "n": i})
    conn = world.conn("a")

    for after in (0, 3, 6):
        sub = world.hub.subscribe(conn, pid, after)
        assert sub.replay is not None
        assert seqs(sub.replay.lines) == list(range(after + 1, 8))
        assert [json.loads(line)["message"]["n"] for line in sub.replay.lines] == list(
            range(after, 7)
        )
        assert sub.replay.has_more is False
        assert sub.replay.project_last_seq == 7

    up_to_date = world.hub.subscribe(conn, pid, 7)
    assert up_to_date.replay is not None
    assert up_to_date.replay.lines == []
    assert world.hub.subscribe(conn, pid, None).replay is None


def test_subscribe_starts_the_live_stream_after_the_replay(world: World) -> None:
    pid = world.project("app")
    history = world.registry.history(pid)
    history.append("r1", "claude", {"type": "assistant"})
    conn = world.conn("a")
    sub = world.hub.subscribe(conn, pid, 0)
    assert sub.replay is not None and seqs(sub.replay.lines) == [1]
    assert sub.project.id == pid
    assert sub.project.subscriber_count == 1  # counts the new follower
    record = history.append("r1", "claude", {"type": "result"})
    world.hub.observe(RecordAppended(pid, record))
    assert conn.delivered == [RecordAppended(pid, record)]
    assert record.seq == 2


def test_subscribe_to_an_unknown_project_changes_nothing(world: World) -> None:
    conn = world.conn("a")
    with pytest.raises(ProjectNotFound):
        world.hub.subscribe(conn, "no-such-project", 0)
    assert world.hub.following(conn) == []
    world.hub.observe(SessionChanged("no-such-project", "s"))
    assert conn.delivered == []


def test_following_is_in_join_order_with_the_last_joined_last(world: World) -> None:
    p1, p2, p3 = world.project("one"), world.project("two"), world.project("three")
    conn = world.conn("a")
    for pid in (p1, p2, p3):
        world.hub.subscribe(conn, pid, None)
    assert world.hub.following(conn) == [p1, p2, p3]
    world.hub.subscribe(conn, p1, None)
    assert world.hub.following(conn) == [p2, p3, p1]
    assert world.hub.snapshot(world.registry.get(p1)).subscriber_count == 1  # not twice
    world.hub.unsubscribe(conn, p3)
    assert world.hub.following(conn) == [p2, p1]
    assert not world.hub.follows(conn, p3)
    with pytest.raises(ProjectNotFound):
        world.hub.unsubscribe(conn, "no-such-project")


def test_follow_counts_followers_and_ignores_strangers(world: World) -> None:
    pid = world.project("app")
    a, b = world.conn("a"), world.conn("b")
    world.hub.follow("a", pid)
    world.hub.follow("b", pid)
    world.hub.follow("not-connected", pid)
    assert world.hub.snapshot(world.registry.get(pid)).subscriber_count == 2
    world.hub.disconnect(a)
    assert world.hub.snapshot(world.registry.get(pid)).subscriber_count == 1
    assert world.hub.following(a) == []
    assert world.hub.following(b) == [pid]


# --------------------------------------------------------------------- fan-out


def test_an_answer_goes_to_the_requester_only(world: World) -> None:
    a, b = world.conn("a"), world.conn("b")
    answer = Answered(Cause("b", "r9"), DeleteAnswer("p"))
    world.hub.observe(answer)
    assert a.delivered == []
    assert b.delivered == [answer]
    world.hub.disconnect(b)
    world.hub.observe(Answered(Cause("b", "r10"), DeleteAnswer("p")))  # gone: dropped
    assert a.delivered == []
    assert b.delivered == [answer]


def test_project_created_and_deleted_go_to_every_connection(world: World) -> None:
    pid = world.project("app")
    follower, other = world.conn("a"), world.conn("b")
    world.hub.subscribe(follower, pid, None)
    created = ProjectCreated(world.hub.snapshot(world.registry.get(pid)))
    deleted = ProjectDeleted("some-other-project")
    world.hub.observe(created)
    world.hub.observe(deleted)
    assert follower.delivered == [created, deleted]
    assert other.delivered == [created, deleted]


def test_project_deleted_drops_that_projects_followers(world: World) -> None:
    gone, kept = world.project("gone"), world.project("kept")
    a, b = world.conn("a"), world.conn("b")
    world.hub.subscribe(a, kept, None)
    world.hub.subscribe(a, gone, None)
    world.hub.subscribe(b, gone, None)
    world.hub.observe(ProjectDeleted(gone))
    assert world.hub.following(a) == [kept]
    assert world.hub.following(b) == []
    assert not world.hub.follows(a, gone)
    assert not world.hub.follows(b, gone)
    a.delivered.clear()
    b.delivered.clear()
    world.hub.observe(SessionChanged(gone, "s"))
    world.hub.observe(SessionChanged(kept, "s"))
    assert a.delivered == [SessionChanged(kept, "s")]
    assert b.delivered == []


def test_project_events_go_to_that_projects_followers_only(world: World) -> None:
    p1, p2 = world.project("one"), world.project("two")
    f1, f2, both, nobody = (
        world.conn("f1"),
        world.conn("f2"),
        world.conn("both"),
        Conn("nobody"),
    )
    world.hub.max_connections = 4
    assert world.hub.connect(nobody)
    world.hub.subscribe(f1, p1, None)
    world.hub.subscribe(f2, p2, None)
    world.hub.subscribe(both, p1, None)
    world.hub.subscribe(both, p2, None)
    events1, events2 = project_events(p1, world), project_events(p2, world)
    assert len({type(e) for e in events1}) == 7
    for e1, e2 in zip(events1, events2, strict=True):
        world.hub.observe(e1)
        world.hub.observe(e2)
    assert f1.delivered == events1
    assert f2.delivered == events2
    assert both.delivered == [e for pair in zip(events1, events2, strict=True) for e in pair]
    assert nobody.delivered == []


def test_a_follower_that_left_hears_nothing_more(world: World) -> None:
    pid = world.project("app")
    a, b = world.conn("a"), world.conn("b")
    world.hub.subscribe(a, pid, None)
    world.hub.subscribe(b, pid, None)
    world.hub.unsubscribe(a, pid)
    world.hub.disconnect(b)
    for event in project_events(pid, world):
        world.hub.observe(event)
    assert a.delivered == []
    assert b.delivered == []


def test_observer_only_events_reach_no_connection(world: World) -> None:
    pid = world.project("app")
    conn = world.conn("a")
    world.hub.subscribe(conn, pid, None)
    world.hub.observe(SlowConsumerDropped("a", 10))
    world.hub.observe(AuthFailed("1.2.3.4", "bad token", True))
    assert conn.delivered == []


def test_a_follower_that_fails_costs_the_others_nothing(world: World) -> None:
    pid = world.project("app")

    @attrs.define(eq=False)
    class Failing(Conn):
        def deliver(self, event: Event) -> None:
            raise RuntimeError("a bug in one connection")

    broken, fine = Failing("broken"), world.conn("fine")
    assert world.hub.connect(broken)
    for conn in (broken, fine):
        world.hub.subscribe(conn, pid, None)
    event = RunKilled(pid, "r1")
    with capturedLogs() as logs:
        world.hub.observe(event)
    assert fine.delivered == [event]
    assert [e["log_level"] for e in logs] == [LogLevel.critical]
