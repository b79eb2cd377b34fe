"""Rate limits (SPEC §9) on the injected clock: the bucket, messages per second per
connection (refused, then 1008 after 10 s) and executions per minute per project."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocket_agent.core.ratelimit import TokenBucket, retry_after_ms
from pocket_agent.net.ratelimit import CLOSE_AFTER, MessageRate
from tests.support import Client, Harness
from tests.test_execution import finish_ok, setup

# ------------------------------------------------------------------- the bucket


def test_a_new_bucket_is_full_and_then_refills_at_the_rate() -> None:
    bucket = TokenBucket()
    assert [bucket.take(0.0, 5, 10) for _ in range(10)] == [0.0] * 10
    assert bucket.take(0.0, 5, 10) == pytest.approx(0.2)
    assert bucket.take(0.1, 5, 10) == pytest.approx(0.1)  # half a token earned
    assert bucket.take(0.2, 5, 10) == 0.0
    assert bucket.take(100.0, 5, 10) == 0.0
    assert bucket.tokens == pytest.approx(9)  # never more than the burst


def test_time_running_backwards_earns_nothing() -> None:
    bucket = TokenBucket()
    for _ in range(2):
        bucket.take(10.0, 1, 2)
    assert bucket.take(5.0, 1, 2) > 0  # a wall clock stepped back
    assert bucket.take(10.5, 1, 2) == pytest.approx(0.5)  # 10 -> 10.5 credited, once


def test_a_burst_lowered_live_caps_what_is_saved() -> None:
    bucket = TokenBucket()
    bucket.take(0.0, 50, 100)
    assert [bucket.take(0.0, 1, 2) for _ in range(3)][-1] > 0


@pytest.mark.parametrize("rate", [3, 5, 6, 7, 50])
def test_a_client_exactly_at_the_rate_is_never_refused(rate: int) -> None:
    """Sums of 1/rate on a float clock fall a hair short of a whole token."""
    bucket, now = TokenBucket(), 0.0
    while bucket.take(now, rate, 2 * rate) == 0.0:
        pass
    for _ in range(500):
        now += 1 / rate
        assert bucket.take(now, rate, 2 * rate) == 0.0


def test_retry_after_is_whole_milliseconds_never_zero() -> None:
    assert retry_after_ms(0.2) == 200
    assert retry_after_ms(0.2000001) == 201
    assert retry_after_ms(1e-12) == 1


@given(
    rate=st.integers(1, 100),
    steps=st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=200),
)
def test_never_more_than_the_burst_plus_what_the_time_earned(
    rate: int, steps: list[float]
) -> None:
    """Over any run of attempts: admitted <= burst + rate * elapsed; and a refused
    attempt that waits what it was told is admitted."""
    bucket, now, admitted = TokenBucket(), 0.0, 0
    for step in steps:
        now += step
        wait = bucket.take(now, rate, 2 * rate)
        if wait == 0.0:
            admitted += 1
        else:
            assert bucket.take(now + retry_after_ms(wait) / 1000, rate, 2 * rate) == 0.0
            now += retry_after_ms(wait) / 1000
            admitted += 1
        assert admitted <= 2 * rate + rate * now + 1e-6


# -------------------------------------------------------- a connection's spell


def test_a_spell_of_refusals_closes_after_ten_seconds() -> None:
    rate, now = MessageRate(), 0.0
    for _ in range(2):
        assert rate.admit(now, 1) is None
    verdicts = []
    while now < CLOSE_AFTER + 1:
        now += 0.25
        verdicts.append((now, rate.admit(now, 1)))
    refused = [(t, v) for t, v in verdicts if v is not None]
    assert refused and all(not v.close for t, v in refused if t - refused[0][0] < CLOSE_AFTER)
    assert next(v.close for t, v in refused if t - refused[0][0] >= CLOSE_AFTER)


def test_a_pause_ends_the_spell() -> None:
    """Bursts now and then, with two quiet seconds between them: never closed."""
    rate, now = MessageRate(), 0.0
    for _ in range(20):
        verdicts = [rate.admit(now, 1) for _ in range(4)]
        assert verdicts[-1] is not None and not verdicts[-1].close
        now += 2.0


# ------------------------------------------------------ messages per connection


def health_burst(client: Client, n: int) -> list[dict[str, Any]]:
    for i in range(n):
        client.protocol.sendMessage(f'{{"type":"health","request_id":"h{i}"}}'.encode())
    return client.new()


def refused(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "error"]


def test_a_burst_gets_twice_the_rate_then_resource_limit(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(limits={"messages_per_second": 5})
    client, _ = harness.hello()  # from loopback: limited like anyone else
    frames = health_burst(client, 15)
    assert [f["type"] for f in frames] == ["health_status"] * 10 + ["error"] * 5
    error = frames[10]
    assert error["request_id"] == "h10"
    assert error["data"]["code"] == "RESOURCE_LIMIT"
    assert error["data"]["details"] == {
        "resource": "messages_per_second",
        "limit": 5,
        "retry_after_ms": 200,
    }
    assert not client.protocol.closed


def test_the_bucket_refills_and_retry_after_counts_down(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(limits={"messages_per_second": 5})
    client, _ = harness.hello()
    health_burst(client, 10)
    harness.clock.advance(0.05)
    [error] = health_burst(client, 1)
    assert error["data"]["details"]["retry_after_ms"] == 150
    harness.clock.advance(0.15)
    assert [f["type"] for f in health_burst(client, 2)] == ["health_status", "error"]
    harness.clock.advance(1.0)
    frames = health_burst(client, 6)
    assert [f["type"] for f in frames] == ["health_status"] * 5 + ["error"]


def test_binary_frames_count_too(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(limits={"messages_per_second": 1})
    client, _ = harness.hello()
    for _ in range(3):
        client.protocol.sendMessage(b"\x00", isBinary=True)
    codes = [f["data"]["code"] for f in client.new()]
    assert codes == ["INVALID_MESSAGE", "INVALID_MESSAGE", "RESOURCE_LIMIT"]


def test_still_refused_after_ten_seconds_is_closed_1008(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(limits={"messages_per_second": 2})
    client, _ = harness.hello()
    other, _ = harness.hello()
    health_burst(client, 5)  # 4 answered, refused from t=0 on
    for _ in range(79):  # 16 a second against 2 allowed, until t=9.875
        harness.clock.advance(0.125)
        assert refused(health_burst(client, 2))
    assert not client.protocol.closed
    harness.clock.advance(0.125)
    health_burst(client, 2)
    assert client.protocol.closed
    assert client.protocol.close_code == 1008
    assert other.one("health")["type"] == "health_status"  # nobody else is touched


def test_a_client_that_backs_off_stays(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(limits={"messages_per_second": 2})
    client, _ = harness.hello()
    for _ in range(10):  # a burst too many every 3 s, for 30 s
        assert refused(health_burst(client, 5))
        harness.clock.advance(3.0)
    assert not client.protocol.closed


def test_the_limit_is_read_live(make_harness: Callable[..., Harness]) -> None:
    """SIGHUP replaces the config: the next message is counted against the new limit."""
    harness = make_harness(limits={"messages_per_second": 1})
    client, _ = harness.hello()
    assert refused(health_burst(client, 3))
    config = harness.factory.config
    harness.factory.config = attrs.evolve(
        config, limits=attrs.evolve(config.limits, messages_per_second=100)
    )
    harness.clock.advance(1.0)
    assert len(refused(health_burst(client, 150))) == 50
    harness.clock.advance(2.0)
    assert not refused(health_burst(client, 150))


# ------------------------------------------------------ executions per project


def execute(client: Client, pid: str, **options: Any) -> dict[str, Any]:
    frames = client.request(
        "execute", project_id=pid, request_id="x", data={"prompt": "hi", "options": options}
    )
    return next(f for f in frames if f.get("request_id") == "x")


def run_once(harness: Harness, client: Client, pid: str) -> None:
    assert execute(client, pid)["type"] == "execute"
    finish_ok(harness, harness.clock.processes[-1])
    client.new()


def test_a_third_execute_in_a_minute_is_refused_until_the_bucket_refills(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(limits={"executions_per_minute": 2})
    pid, [client] = setup(harness)
    run_once(harness, client, pid)
    harness.clock.advance(10)
    run_once(harness, client, pid)
    error = execute(client, pid)
    assert error["type"] == "error"
    assert error["data"]["code"] == "RESOURCE_LIMIT"
    # 2 a minute: a run every 30 s; the first was 10 s ago.
    assert error["data"]["details"] == {
        "resource": "executions_per_minute",
        "limit": 2,
        "retry_after_ms": 20_000,
    }
    assert len(harness.clock.processes) == 2
    harness.clock.advance(19.9)
    assert execute(client, pid)["type"] == "error"
    harness.clock.advance(0.1)
    run_once(harness, client, pid)
    assert len(harness.clock.processes) == 3


def test_refused_executes_cost_nothing_and_projects_count_apart(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(limits={"executions_per_minute": 1})
    pid, [client] = setup(harness)
    for _ in range(3):  # refused by the path policy: no run, no token spent
        assert execute(client, pid, add_dirs=["/etc"])["data"]["code"] == "INVALID_PATH"
    run_once(harness, client, pid)
    assert execute(client, pid)["data"]["code"] == "RESOURCE_LIMIT"
    other = client.request("project_create", data={"path": str(harness.project_dir("b"))})
    run_once(harness, client, other[0]["project_id"])


def test_the_execution_limit_is_read_live(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(limits={"executions_per_minute": 1})
    pid, [client] = setup(harness)
    run_once(harness, client, pid)
    assert execute(client, pid)["data"]["code"] == "RESOURCE_LIMIT"
    executor = harness.app.executor
    executor.config = attrs.evolve(
        executor.config, limits=attrs.evolve(executor.config.limits, executions_per_minute=60)
    )
    harness.clock.advance(1.0)  # a run a second now
    run_once(harness, client, pid)
