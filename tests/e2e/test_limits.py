"""The message rate limit from the outside: a burst on one real connection (SPEC §9)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .daemon import Client, Daemon, DaemonPool

PER_SECOND = 20
BURST = 100


def test_a_burst_of_health_requests_is_cut_at_twice_the_rate(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    (root / "config.yaml").write_text(f"limits:\n  messages_per_second: {PER_SECOND}\n")
    daemon: Daemon = daemons.start(root, home)
    client = clients(daemon)  # from loopback, without a token: limited all the same
    assert client.hello is not None
    assert client.hello["data"]["limits"]["messages_per_second"] == PER_SECOND

    started = time.monotonic()
    for i in range(BURST):
        client.send("health", request_id=f"h{i}")
    replies = [client.replies(f"h{i}", 1)[0] for i in range(BURST)]
    elapsed = time.monotonic() - started

    answered = [r for r in replies if r["type"] == "health_status"]
    refused = [r for r in replies if r["type"] == "error"]
    assert len(answered) + len(refused) == BURST
    # The burst (2x the rate), plus what the bucket earned while the burst was read.
    assert 2 * PER_SECOND <= len(answered) <= 2 * PER_SECOND + math.ceil(elapsed * PER_SECOND)
    assert [r["request_id"] for r in answered[: 2 * PER_SECOND]] == [
        f"h{i}" for i in range(2 * PER_SECOND)
    ]
    for error in refused:
        assert error["data"]["code"] == "RESOURCE_LIMIT"
        details = error["data"]["details"]
        assert details["resource"] == "messages_per_second"
        assert details["limit"] == PER_SECOND
        assert 1 <= details["retry_after_ms"] <= 1000 // PER_SECOND

    # Still open: a client that waits as it is told is answered again.
    assert still_answered(client, refused[-1]["data"]["details"]["retry_after_ms"])


def still_answered(client: Client, wait_ms: int, deadline: float = 5.0) -> bool:
    """Ask again after each ``retry_after_ms`` until answered (the server's clock is
    its own, so this polls, within a deadline)."""
    give_up = time.monotonic() + deadline
    n = 0
    while time.monotonic() < give_up:
        time.sleep(wait_ms / 1000)
        n += 1
        reply: dict[str, Any] = client.request("health", request_id=f"again{n}")
        if reply["type"] == "health_status":
            return True
        wait_ms = reply["data"]["details"]["retry_after_ms"]
    return False
