"""What the message rate limit costs per inbound message.

    python bench/ratelimit.py [--checks N]

Times ``MessageRate.admit`` as ``PocketAgentProtocol`` calls it for every message
(the clock read and the limit read from the live config included): admitted with
time moving on (a refill each check), and refused (an empty bucket, the spell
bookkeeping and the Refusal value; the error frame itself is not counted). For scale,
the same for ``decode_envelope`` of a ``health`` frame, which every message pays
anyway. Then the whole in-memory path of a ``project_list`` request (autobahn framing,
dispatch, the reply) with the limiter and with it switched off, run alternately.
Median of 5 runs, ns per check / per message.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attrs

from pocket_agent.config import Overrides, load_config
from pocket_agent.net.protocol import PocketAgentProtocol
from pocket_agent.net.ratelimit import MessageRate
from pocket_agent.wire.envelope import decode_envelope
from tests.support import Harness

RUNS = 5
HEALTH = b'{"type":"health","request_id":"h1"}'


@attrs.define
class FakeClock:
    """Moves on by ``step`` at each read (1 ms: every admitted check refills)."""

    step: float
    now: float = 0.0

    def seconds(self) -> float:
        self.now += self.step
        return self.now


@attrs.define
class Factory:
    config: object
    clock: FakeClock


def ns_per_call(fn: Callable[[], object], n: int) -> float:
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter_ns()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter_ns() - started) / n)
    return statistics.median(runs)


def whole_path(messages: int) -> tuple[float, float]:
    """ns per ``project_list`` round trip in memory: (limited, not limited)."""
    with_limit = PocketAgentProtocol._within_rate
    frame = b'{"type":"project_list","request_id":"p"}'
    limited: list[float] = []
    free: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        # The limit high enough that nothing is refused: the cost of checking is measured.
        harness = Harness(Path(tmp), limits={"messages_per_second": 10**9})
        client, _ = harness.hello()
        try:
            for run in range(2 * RUNS):
                off = run % 2 == 1
                if off:
                    PocketAgentProtocol._within_rate = lambda self, payload: True  # type: ignore[method-assign]
                started = time.perf_counter_ns()
                for _ in range(messages):
                    client.protocol.sendMessage(frame)
                    client.pump.flush()
                elapsed = (time.perf_counter_ns() - started) / messages
                PocketAgentProtocol._within_rate = with_limit  # type: ignore[method-assign]
                (free if off else limited).append(elapsed)
                client.new()
                assert client.protocol.received[-1]["type"] == "project_list_response"
                client.protocol.received.clear()
                client._seen = 0
        finally:
            PocketAgentProtocol._within_rate = with_limit  # type: ignore[method-assign]
            harness.stop()
    return statistics.median(limited), statistics.median(free)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=500_000)
    parser.add_argument("--messages", type=int, default=5_000)
    args = parser.parse_args()
    n = args.checks
    factory = Factory(load_config(Overrides(root="."), environ={}), FakeClock(0.001))

    admitting = MessageRate()

    def admitted() -> object:
        limit = factory.config.limits.messages_per_second  # type: ignore[attr-defined]
        return admitting.admit(factory.clock.seconds(), limit)

    refusing = MessageRate()
    stopped = FakeClock(0.0)

    def refused() -> object:
        limit = factory.config.limits.messages_per_second  # type: ignore[attr-defined]
        return refusing.admit(stopped.seconds(), limit)

    for _ in range(1000):
        refused()  # empty the bucket
    assert admitted() is None and refused() is not None

    results = {
        "admit (refill each check)": ns_per_call(admitted, n),
        "refuse (empty bucket)": ns_per_call(refused, n),
        "decode_envelope(health), for scale": ns_per_call(lambda: decode_envelope(HEALTH), n),
    }
    width = max(len(k) for k in results)
    for name, ns in results.items():
        print(f"{name:<{width}}  {ns:8.0f} ns")
    scale = results["decode_envelope(health), for scale"]
    print(f"admit / decode_envelope = {results['admit (refill each check)'] / scale:.2f}")
    limited, free = whole_path(args.messages)
    print(f"project_list in memory, limited      {limited:8.0f} ns")
    print(f"project_list in memory, not limited  {free:8.0f} ns")
    print(f"limited / not limited = {limited / free:.3f}")


if __name__ == "__main__":
    main()
