"""A project's Record stream on disk: ``data/projects/<id>/logs/messages_current.jsonl``.

One Record per line, ``seq`` per project from 1, never repeated across restarts.
Claude's own line is embedded byte for byte (it was parsed once to check it is a
JSON object); nothing re-serialises a multi-megabyte tool result.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from .protocol import rfc3339

CURRENT = "messages_current.jsonl"
TAIL_CHUNK = 64 * 1024


@attrs.frozen
class Record:
    seq: int
    timestamp: str
    run_id: str | None
    direction: str  # client | claude | server
    message: dict[str, Any] = attrs.field(eq=False, repr=False)
    line: bytes = attrs.field(repr=False)  # the JSON object, no newline

    def to_wire(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "timestamp": self.timestamp,
            "run_id": self.run_id,
            "direction": self.direction,
            "message": self.message,
        }


def encode_record(
    seq: int, timestamp: str, run_id: str | None, direction: str, message_json: bytes
) -> bytes:
    head = json.dumps(
        {"seq": seq, "timestamp": timestamp, "run_id": run_id, "direction": direction},
        separators=(",", ":"),
    )
    return head[:-1].encode() + b',"message":' + message_json + b"}"


class History:
    """Append-only Record log of one project, flushed per record, fsynced on demand
    and at most ``sync_interval`` after the last write while records stream."""

    def __init__(self, directory: Path, clock: IReactorTime, sync_interval: float = 1.0) -> None:
        self.directory = directory
        self.path = directory / CURRENT
        self.clock = clock
        self.sync_interval = sync_interval
        self.last_seq = 0
        self._file: BinaryIO | None = None
        self._sync_call: IDelayedCall | None = None

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.last_seq = last_seq_in(self.path)
        self._file = open(self.path, "ab")

    def append(
        self,
        run_id: str | None,
        direction: str,
        message: dict[str, Any],
        message_json: bytes | None = None,
    ) -> Record:
        """Write one Record and return it; ``message_json`` is Claude's exact line."""
        if self._file is None:
            self.open()
        assert self._file is not None
        seq = self.last_seq + 1
        timestamp = rfc3339(datetime.fromtimestamp(self.clock.seconds(), UTC))
        raw = message_json
        if raw is None:
            raw = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
        line = encode_record(seq, timestamp, run_id, direction, raw)
        self._file.write(line + b"\n")
        self._file.flush()
        self.last_seq = seq
        if self._sync_call is None and self.sync_interval > 0:
            self._sync_call = self.clock.callLater(self.sync_interval, self.sync)
        return Record(seq, timestamp, run_id, direction, message, line)

    def sync(self) -> None:
        if self._sync_call is not None:
            if self._sync_call.active():
                self._sync_call.cancel()
            self._sync_call = None
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self.sync()
        if self._file is not None:
            self._file.close()
            self._file = None


def last_seq_in(path: Path) -> int:
    """The highest seq in the file, reading backwards from its end (a torn or invalid
    last line is skipped, not fatal)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return 0
    with f:
        end = f.seek(0, os.SEEK_END)
        tail = b""
        while end > 0:
            start = max(0, end - TAIL_CHUNK)
            f.seek(start)
            tail = f.read(end - start) + tail
            end = start
            lines = tail.split(b"\n")
            complete = lines if start == 0 else lines[1:]
            for line in reversed(complete):
                seq = _seq_of(line)
                if seq is not None:
                    return seq
            tail = lines[0] if start > 0 else b""
    return 0


def _seq_of(line: bytes) -> int | None:
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    seq = record.get("seq") if isinstance(record, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None
