"""The one WebSocket frame a server sends for a text message (RFC 6455 §5.2).

Server frames are never masked, so the frame is a function of the payload alone: built
once, the same bytes go to every follower (``Outbound.frame``). We build it ourselves
rather than through autobahn's ``sendMessage`` (which frames again for every
connection and formats the arguments of a disabled debug log on every write); the
result is byte for byte what autobahn's ``PreparedMessage`` makes, which the tests
check.
"""

from __future__ import annotations

import struct

FIN_TEXT = 0x81  # FIN set, opcode 1 (text), no RSV bits: we never compress
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame around ``payload`` (UTF-8 already)."""
    length = len(payload)
    if length < 126:
        head = _SHORT.pack(FIN_TEXT, length)
    elif length < 0x10000:
        head = _MEDIUM.pack(FIN_TEXT, 126, length)
    else:
        head = _LONG.pack(FIN_TEXT, 127, length)
    return head + payload
