"""Timestamps as the product writes them: RFC 3339, UTC, millisecond precision."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix: what phones parse without surprises."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: object) -> datetime:
    """A stored timestamp back to an aware UTC datetime; ValueError when it is not one."""
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    return moment.astimezone(UTC)


def from_seconds(seconds: float) -> datetime:
    """A clock reading (``IReactorTime.seconds()``) as a datetime, to the millisecond."""
    return datetime.fromtimestamp(round(seconds, 3), UTC)
