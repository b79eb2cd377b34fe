"""Timestamps as the product writes them: RFC 3339, UTC, millisecond precision."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix: what phones parse without surprises."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: object) -> datetime:
    """A timestamp (stored, or a client's RFC 3339) as an aware UTC datetime; ValueError
    when it is not one, or when it has no UTC equivalent (``0001-01-01T00:00:00+01:00``
    is before the first representable instant: astimezone would overflow)."""
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"timestamp out of range: {value!r}") from None


def from_seconds(seconds: float) -> datetime:
    """A clock reading (``IReactorTime.seconds()``) as a datetime, to the millisecond."""
    return datetime.fromtimestamp(round(seconds, 3), UTC)
