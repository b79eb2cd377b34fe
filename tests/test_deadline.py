"""The pausable deadline on the injected clock (``timeouts.execution``, ``no_output``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from pocket_agent.runs.deadline import Deadline


class Fired:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.clock = Clock()

    def __call__(self) -> None:
        self.times.append(self.clock.seconds())

    def deadline(self, limit: float) -> Deadline:
        return Deadline(self.clock, limit, self)


def pending(clock: Clock) -> list[object]:
    return [c for c in clock.getDelayedCalls() if c.active()]


def test_fires_once_after_the_limit() -> None:
    fired = Fired()
    deadline = fired.deadline(10)
    deadline.start()
    assert deadline.running
    fired.clock.advance(9.9)
    assert fired.times == []
    assert deadline.remaining == pytest.approx(0.1)
    fired.clock.advance(0.1)
    assert fired.times == [10]
    assert not deadline.running
    fired.clock.advance(100)
    deadline.start()  # over: starting again does nothing
    fired.clock.advance(100)
    assert fired.times == [10]
    assert pending(fired.clock) == []


def test_not_started_never_fires() -> None:
    fired = Fired()
    deadline = fired.deadline(1)
    fired.clock.advance(5)
    assert fired.times == []
    assert not deadline.running
    assert deadline.remaining == 1


def test_pause_stops_the_clock_and_resume_continues_with_what_was_left() -> None:
    fired = Fired()
    deadline = fired.deadline(10)
    deadline.start()
    fired.clock.advance(4)
    deadline.pause()
    assert not deadline.running
    assert deadline.remaining == 6
    assert pending(fired.clock) == []
    fired.clock.advance(1000)  # paused: time does not count
    assert fired.times == []
    assert deadline.remaining == 6
    deadline.resume()
    fired.clock.advance(5)
    deadline.pause()
    fired.clock.advance(50)
    deadline.resume()
    fired.clock.advance(0.5)
    assert fired.times == []
    fired.clock.advance(0.5)
    assert fired.times == [1060]  # 4 + 5 + 1 unpaused seconds


def test_pause_and_resume_twice_change_nothing() -> None:
    fired = Fired()
    deadline = fired.deadline(3)
    deadline.start()
    deadline.start()  # already running: no second timer
    assert len(pending(fired.clock)) == 1
    fired.clock.advance(1)
    deadline.pause()
    deadline.pause()
    assert deadline.remaining == 2
    deadline.resume()
    deadline.resume()
    assert len(pending(fired.clock)) == 1
    fired.clock.advance(2)
    assert fired.times == [3]


def test_restart_gives_the_full_limit_again() -> None:
    fired = Fired()
    deadline = fired.deadline(10)
    deadline.start()
    fired.clock.advance(8)
    deadline.restart()
    assert deadline.remaining == 10
    fired.clock.advance(9)
    assert fired.times == []
    fired.clock.advance(1)
    assert fired.times == [18]
    assert len(fired.times) == 1


def test_restart_does_not_resume_a_paused_deadline() -> None:
    fired = Fired()
    deadline = fired.deadline(10)
    deadline.start()
    fired.clock.advance(7)
    deadline.pause()
    deadline.restart()
    assert not deadline.running
    assert deadline.remaining == 10
    assert pending(fired.clock) == []
    fired.clock.advance(100)
    assert fired.times == []
    deadline.resume()
    fired.clock.advance(10)
    assert fired.times == [117]


def test_restart_before_start_does_not_start_it() -> None:
    fired = Fired()
    deadline = fired.deadline(2)
    deadline.restart()
    fired.clock.advance(10)
    assert fired.times == []
    assert not deadline.running


def test_cancel_never_fires_and_nothing_starts_it_again() -> None:
    fired = Fired()
    deadline = fired.deadline(5)
    deadline.start()
    fired.clock.advance(3)
    deadline.cancel()
    assert not deadline.running
    assert pending(fired.clock) == []
    deadline.start()
    deadline.restart()
    deadline.resume()
    assert pending(fired.clock) == []
    fired.clock.advance(100)
    assert fired.times == []


def test_cancel_while_paused_stays_cancelled() -> None:
    fired = Fired()
    deadline = fired.deadline(5)
    deadline.start()
    deadline.pause()
    deadline.cancel()
    deadline.resume()
    fired.clock.advance(100)
    assert fired.times == []


def test_a_limit_of_zero_or_less_never_fires() -> None:
    for limit in (0, -1):
        fired = Fired()
        deadline = fired.deadline(limit)
        deadline.start()
        deadline.restart()
        assert not deadline.running
        assert pending(fired.clock) == []
        fired.clock.advance(1e6)
        assert fired.times == []


steps = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(min_value=0, max_value=7)),
        st.tuples(st.just("pause"), st.just(0)),
        st.tuples(st.just("resume"), st.just(0)),
    ),
    max_size=40,
)


@given(limit=st.integers(min_value=1, max_value=30), steps=steps)
def test_fires_exactly_when_unpaused_time_reaches_the_limit(
    limit: int, steps: list[tuple[str, int]]
) -> None:
    """Whole seconds, one at a time, so the expected moment is exact."""
    fired = Fired()
    deadline = fired.deadline(limit)
    deadline.start()
    paused = False
    unpaused = 0
    expected: list[float] = []
    for action, seconds in steps:
        if action == "pause":
            deadline.pause()
            paused = True
        elif action == "resume":
            deadline.resume()
            paused = False
        else:
            for _ in range(seconds):
                fired.clock.advance(1)
                if not paused:
                    unpaused += 1
                    if unpaused == limit:
                        expected.append(fired.clock.seconds())
        assert deadline.running == (not paused and unpaused < limit)
        if unpaused < limit:
            assert deadline.remaining == limit - unpaused
    assert fired.times == expected
    if unpaused >= limit:
        assert pending(fired.clock) == []


def test_remaining_is_zero_once_expired() -> None:
    clock = Clock()
    deadline = Deadline(clock, 10, lambda: None)
    deadline.start()
    clock.advance(4)
    deadline.pause()
    deadline.resume()
    clock.advance(6)
    assert deadline.remaining == 0
    assert not deadline.running
