"""One line of ``check``'s report, shared by the checks of the server and of the files."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

Status = Literal["pass", "warn", "fail"]  # warn is still a pass for the exit status


@attrs.frozen
class Check:
    name: str  # stable id for scripts: server, port, health, claude, disk, data, ...
    title: str
    status: Status
    detail: str
    data: Mapping[str, Any] = attrs.field(factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.data,
        }


def size(count: float) -> str:
    """Bytes for people: ``12.3 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"
