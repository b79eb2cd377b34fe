"""The event bus: every observer hears every event, in order, whatever the others do."""

from __future__ import annotations

from twisted.logger import LogLevel, capturedLogs

from pocket_agent.core.events import (
    Answered,
    Cause,
    DeleteAnswer,
    Event,
    EventBus,
    ProjectDeleted,
)
from pocket_agent.runs.events import SessionChanged

DELETED = ProjectDeleted("p1")
CHANGED = SessionChanged("p1", "s1")


class Recording:
    def __init__(self, name: str, heard: list[tuple[str, Event]]) -> None:
        self.name = name
        self.heard = heard

    def observe(self, event: Event) -> None:
        self.heard.append((self.name, event))


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    def observe(self, event: Event) -> None:
        self.calls += 1
        raise RuntimeError("metrics bug")


def test_observers_hear_each_event_in_subscription_order() -> None:
    heard: list[tuple[str, Event]] = []
    bus = EventBus()
    for name in ("b", "a", "c"):
        bus.subscribe(Recording(name, heard))
    bus.emit(DELETED)
    bus.emit(CHANGED)
    assert heard == [
        ("b", DELETED),
        ("a", DELETED),
        ("c", DELETED),
        ("b", CHANGED),
        ("a", CHANGED),
        ("c", CHANGED),
    ]


def test_a_failing_observer_is_logged_and_the_others_still_hear() -> None:
    heard: list[tuple[str, Event]] = []
    bus = EventBus()
    broken = Broken()
    bus.subscribe(Recording("first", heard))
    bus.subscribe(broken)
    bus.subscribe(Recording("last", heard))
    with capturedLogs() as logged:
        bus.emit(DELETED)
        bus.emit(CHANGED)
    assert heard == [("first", DELETED), ("last", DELETED), ("first", CHANGED), ("last", CHANGED)]
    assert broken.calls == 2
    failures = [e for e in logged if "log_failure" in e]
    assert len(failures) == 2
    assert all(e["log_level"] is LogLevel.critical for e in failures)
    assert [e["event"] for e in failures] == ["ProjectDeleted", "SessionChanged"]
    assert all(e["observer"] is broken for e in failures)
    assert all(e["log_failure"].check(RuntimeError) for e in failures)


def test_unsubscribed_observers_hear_nothing_more() -> None:
    heard: list[tuple[str, Event]] = []
    bus = EventBus()
    a, b = Recording("a", heard), Recording("b", heard)
    bus.subscribe(a)
    bus.subscribe(b)
    bus.emit(DELETED)
    bus.unsubscribe(a)
    bus.emit(CHANGED)
    assert heard == [("a", DELETED), ("b", DELETED), ("b", CHANGED)]


def test_an_observer_may_unsubscribe_while_hearing_an_event() -> None:
    """The event in flight still reaches everyone subscribed when it was emitted."""
    heard: list[tuple[str, Event]] = []
    bus = EventBus()
    later = Recording("later", heard)

    class Leaver:
        def observe(self, event: Event) -> None:
            heard.append(("leaver", event))
            bus.unsubscribe(self)
            bus.unsubscribe(later)

    bus.subscribe(Leaver())
    bus.subscribe(later)
    bus.emit(DELETED)
    bus.emit(CHANGED)
    assert heard == [("leaver", DELETED), ("later", DELETED)]


def test_events_are_values() -> None:
    answer = Answered(Cause("c1", "r1"), DeleteAnswer("p1"))
    assert answer == Answered(Cause("c1", "r1"), DeleteAnswer("p1"))
    assert answer != Answered(Cause("c1", "r2"), DeleteAnswer("p1"))
    assert Cause("c1").request_id is None
    assert hash(DELETED) == hash(ProjectDeleted("p1"))


def test_an_event_emitted_while_delivering_waits_for_the_first_to_reach_everyone() -> None:
    """A follower dropped as slow while a record is delivered: every observer still hears
    the record before the drop, so they all see one order."""
    heard: list[tuple[str, Event]] = []
    bus = EventBus()

    class Emitting(Recording):
        def observe(self, event: Event) -> None:
            super().observe(event)
            if event is DELETED:
                bus.emit(CHANGED)

    bus.subscribe(Emitting("hub", heard))
    bus.subscribe(Recording("log", heard))
    bus.emit(DELETED)
    assert heard == [("hub", DELETED), ("log", DELETED), ("hub", CHANGED), ("log", CHANGED)]
