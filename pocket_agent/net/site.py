"""The HTTP side of every listener: ``/ws``, ``/health``, and room for more routes.

Future routes (``/metrics``, the mobile web client at ``/``) are children of the
same root resource, so they share the listeners, the TLS and the auth rule.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from pocket_agent.ops.logs import redact

from .auth import Authenticator, Credentials, Verdict
from .protocol import PocketAgentFactory

Health = Callable[[], dict[str, Any]]


def request_credentials(request: Request) -> Credentials:
    headers = {
        name.decode("latin-1").lower(): values[-1].decode("latin-1")
        for name, values in request.requestHeaders.getAllRawHeaders()
    }
    tokens = [t.decode("utf-8", "replace") for t in (request.args or {}).get(b"token", [])]
    peer: IAddress = request.getClientAddress()
    return Credentials.from_request(peer, headers, tokens)


def json_response(request: Request, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body).encode() + b"\n"


class HealthResource(Resource):
    """SPEC §8: details when authenticated, only ``{status}`` otherwise; 503 when unhealthy."""

    isLeaf = True

    def __init__(self, health: Health, authenticator: Authenticator) -> None:
        super().__init__()
        self.health = health
        self.authenticator = authenticator

    def render_GET(self, request: Request) -> bytes:
        verdict = self.authenticator.check(request_credentials(request), anonymous_ok=True)
        if verdict is Verdict.THROTTLED:
            return json_response(request, 429, {"error": "too many failed attempts"})
        health = self.health()
        status = 503 if health["status"] == "unhealthy" else 200
        body = health if verdict.allowed else {"status": health["status"]}
        return json_response(request, status, body)


def safe_uri(request: Request) -> str:
    """The path and the query as Twisted decoded them, ``token`` values replaced
    (however the client percent-encoded the name or the value)."""
    path = request.uri.split(b"?", 1)[0].decode("latin-1")
    args = request.args or {}
    if not args:
        return path
    pairs = []
    for key, values in args.items():
        name = key.decode("utf-8", "replace")
        for value in values:
            shown = "<redacted>" if name == "token" else value.decode("utf-8", "replace")
            pairs.append(f"{name}={shown}")
    return f"{path}?{'&'.join(pairs)}"


class PocketAgentSite(Site):
    """A Site whose access log is a structured debug event with any token redacted;
    ``client`` is the address the server trusts (behind a trusted proxy, the one the
    proxy appended), ``peer`` the socket's."""

    _log = Logger()
    authenticator: Authenticator | None = None

    def log(self, request: Request) -> None:  # type: ignore[override]
        client = None
        if self.authenticator is not None:
            client = self.authenticator.address(request_credentials(request))
        self._log.debug(
            "HTTP request",
            method=request.method.decode("latin-1"),
            uri=redact(safe_uri(request)),
            code=request.code,
            peer=getattr(request.getClientAddress(), "host", None),
            client=client,
        )


def build_site(
    health: Health, authenticator: Authenticator, ws_factory: PocketAgentFactory
) -> PocketAgentSite:
    root = Resource()
    root.putChild(b"ws", WebSocketResource(ws_factory))
    root.putChild(b"health", HealthResource(health, authenticator))
    site = PocketAgentSite(root)
    site.authenticator = authenticator
    return site
