"""The envelope every frame shares, both directions, and its codec::

    {"type": str, "project_id"?: str, "request_id"?: str, "data"?: object}

A client decodes server frames with :func:`decode_envelope` too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from .errors import invalid

PROTOCOL_VERSION = 1
SUBPROTOCOL = "pocket-agent.v1"
MAX_REQUEST_ID_LENGTH = 128


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
