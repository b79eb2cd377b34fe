"""The envelope every frame shares, both directions, and its codec::

    {"type": str, "project_id"?: str, "request_id"?: str, "data"?: object}

A client decodes server frames with :func:`decode_envelope` too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

import attrs

from .errors import invalid

PROTOCOL_VERSION = 1
SUBPROTOCOL = "pocket-agent.v1"
MAX_REQUEST_ID_LENGTH = 128

# A decoded string holds a lone surrogate only if the frame spelled one as an escape
# ("\ud800") or carried its raw bytes (json.loads decodes bytes with "surrogatepass"):
# only such frames need the second pass that looks for one. A false alarm (an escaped
# backslash before "ud8") costs that pass, nothing else.
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_MAYBE_SURROGATE_TEXT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")


@attrs.frozen
class Envelope:
    type: str
    project_id: str | None = None
    request_id: str | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def target_project_id(self) -> str | None:
        """Top-level ``project_id``, else ``data.project_id`` (the caller falls back further)."""
        if self.project_id is not None:
            return self.project_id
        nested = self.data.get("project_id")
        if nested is None:
            return None
        if not isinstance(nested, str) or not nested:
            raise invalid("data.project_id", "must be a non-empty string")
        return nested


def envelope_head(mtype: str, project_id: str | None, request_id: str | None) -> bytes:
    """What :func:`encode_envelope` writes before the ``data`` object (``...,"data":``),
    for a frame whose data is already JSON bytes. ``encode_basestring`` is the escaper
    ``json.dumps(..., ensure_ascii=False)`` uses for a str: the same bytes, no encoder."""
    head = '{"type":' + encode_basestring(mtype)
    if project_id is not None:
        head += ',"project_id":' + encode_basestring(project_id)
    if request_id is not None:
        head += ',"request_id":' + encode_basestring(request_id)
    return (head + ',"data":').encode()


def encode_envelope(
    mtype: str,
    data: Mapping[str, Any],
    project_id: str | None = None,
    request_id: str | None = None,
) -> bytes:
    wire: dict[str, Any] = {"type": mtype}
    if project_id is not None:
        wire["project_id"] = project_id
    if request_id is not None:
        wire["request_id"] = request_id
    wire["data"] = data
    return json.dumps(wire, ensure_ascii=False, separators=(",", ":")).encode()


def decode_envelope(payload: bytes | str) -> Envelope:
    """Parse one text frame; every malformation is an INVALID_MESSAGE naming the field."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise invalid("frame", f"not valid JSON ({e})") from None
    except RecursionError:
        raise invalid("frame", "nested too deeply") from None
    if not isinstance(obj, dict):
        raise invalid("frame", "must be a JSON object")
    if _might_hold_surrogates(payload):
        try:
            # JSON may spell lone surrogates ("\ud800"): no UTF-8 can carry them back out.
            json.dumps(obj, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise invalid("frame", "contains unpaired UTF-16 surrogates") from None
    mtype = obj.get("type")
    if not isinstance(mtype, str) or not mtype:
        raise invalid("type", "must be a non-empty string")
    request_id = obj.get("request_id")
    if request_id is not None and (
        not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID_LENGTH
    ):
        raise invalid("request_id", f"must be a string of at most {MAX_REQUEST_ID_LENGTH} chars")
    project_id = obj.get("project_id")
    if project_id is not None and (not isinstance(project_id, str) or not project_id):
        raise invalid("project_id", "must be a non-empty string")
    data = obj.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise invalid("data", "must be a JSON object")
    return Envelope(type=mtype, project_id=project_id, request_id=request_id, data=data)


def _might_hold_surrogates(payload: bytes | str) -> bool:
    if isinstance(payload, str):
        return _MAYBE_SURROGATE_TEXT.search(payload) is not None
    if b"\x00" in payload[:4] or not payload[:1].isascii():
        return True  # UTF-16 or -32, or a BOM (json.loads reads those too): the pattern is UTF-8's
    return _MAYBE_SURROGATE.search(payload) is not None


def request_id_of(payload: bytes | str) -> str | None:
    """Best effort: the request_id of a frame that failed validation, so errors still echo it."""
    try:
        obj = json.loads(payload)
        rid = obj.get("request_id") if isinstance(obj, dict) else None
        if isinstance(rid, str) and len(rid) <= MAX_REQUEST_ID_LENGTH:
            rid.encode()  # a lone surrogate cannot be echoed
            return rid
    except Exception:  # whatever made the frame invalid in the first place
        return None
    return None
