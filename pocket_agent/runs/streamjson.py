"""Claude's stdout: split on ``\\n`` whatever the chunking, parse each line leniently.

Hand-written rather than ``LineOnlyReceiver``: that one defaults to ``\\r\\n``, caps lines
at 16 KiB and closes the transport when a line is longer, and stream-json lines with
tool results are routinely megabytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

MAX_LINE = 16 * 1024 * 1024


class LineSplitter:
    """Feed it chunks; it calls ``on_line`` with each complete line (without ``\\n``).

    A line longer than ``max_line`` is not kept whole in memory: ``on_overflow`` gets its
    first ``max_line`` bytes and its full length once its end arrives.
    """

    def __init__(
        self,
        on_line: Callable[[bytes], None],
        on_overflow: Callable[[bytes, int], None],
        max_line: int = MAX_LINE,
    ) -> None:
        self.on_line = on_line
        self.on_overflow = on_overflow
        self.max_line = max_line
        self._parts: list[bytes] = []
        self._size = 0
        self._overflow_head: bytes | None = None
        self._overflow_size = 0

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._keep(chunk[start:])
                return
            self._keep(chunk[start:end])
            self._emit()
            start = end + 1

    def finish(self) -> None:
        """End of stream: a last line without ``\\n`` still counts."""
        if self._parts or self._overflow_head is not None:
            self._emit()

    def _keep(self, piece: bytes) -> None:
        if not piece:
            return
        if self._overflow_head is not None:
            self._overflow_size += len(piece)
            return
        self._parts.append(piece)
        self._size += len(piece)
        if self._size > self.max_line:
            line = b"".join(self._parts)
            self._overflow_head = line[: self.max_line]
            self._overflow_size = len(line)
            self._parts, self._size = [], 0

    def _emit(self) -> None:
        if self._overflow_head is not None:
            head, size = self._overflow_head, self._overflow_size
            self._overflow_head, self._overflow_size = None, 0
            self.on_overflow(head, size)
            return
        line = b"".join(self._parts)
        self._parts, self._size = [], 0
        self.on_line(line)


def parse_line(line: bytes) -> dict[str, Any] | None:
    """The JSON object on this line, or None when it is not one (it becomes raw_output)."""
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def user_message(prompt: str) -> bytes:
    """The stdin line that carries one prompt to ``claude --input-format stream-json``."""
    line = {
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": prompt}]},
    }
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"
