from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support import Harness

# One place for hypothesis profiles: CI gets more examples, local runs stay quick.
settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile(
    "dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if __import__("os").environ.get("CI") else "dev")


@pytest.fixture
def make_harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**sections: dict[str, Any]) -> Harness:
        harness = Harness(tmp_path, **sections)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.stop()


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


@pytest.fixture
def asked(harness: Harness) -> Any:
    """Two followers, a run, and claude asking for a Write (tests/test_approvals.py)."""
    from tests.test_approvals import asking

    return asking(harness)


@pytest.fixture
def debug_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """``logging.level: debug`` as the LogService sets it: debug events are built."""
    from pocket_agent.ops.logs import DEBUG

    monkeypatch.setattr(DEBUG, "on", True)
