"""The HTTP side of every listener: ``/ws``, ``/health``, ``/metrics`` and the web app.

The web app (SPEC §11, :mod:`.web`) answers every other path of the same root resource,
so it shares the listeners and the TLS, and a page's ``/ws`` is its own origin.
``/metrics`` moves to a site of its own when ``metrics.listen`` names a listener for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from pocket_agent.ops.logs import DEBUG, redact
from pocket_agent.ops.metrics import Metrics

from .auth import Authenticator, Credentials, Verdict
from .protocol import PocketAgentFactory
from .web import STATIC_ROOT, StaticApp

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
        credentials = request_credentials(request)
        verdict = self.authenticator.check(credentials, anonymous_ok=True)
        if verdict is Verdict.THROTTLED:
            return json_response(request, 429, {"error": "too many failed attempts"})
        if verdict is Verdict.REFUSED and credentials.token is not None:
            # SPEC §7: a wrong token is refused (the web client learns of it here);
            # only a request without any token gets the anonymous answer.
            request.setHeader(b"www-authenticate", b"Bearer")
            return json_response(request, 401, {"error": "invalid token"})
        health = self.health()
        status = 503 if health["status"] == "unhealthy" else 200
        body = health if verdict.allowed else {"status": health["status"]}
        return json_response(request, status, body)


def text_response(request: Request, status: int, text: str) -> bytes:
    if request.code != status:
        request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return text.encode() + b"\n"


class MetricsResource(Resource):
    """SPEC §8 ``/metrics``, rendered on the reactor thread (the gauges read the hub).

    With an ``authenticator`` (on the main site) it follows SPEC §7 like ``/ws``: a
    token, or loopback trust; a missing or wrong token is 401 and counted. Without one
    (its own ``metrics.listen`` listener) the operator's choice of address is the rule.
    """

    isLeaf = True

    def __init__(self, metrics: Metrics, authenticator: Authenticator | None) -> None:
        super().__init__()
        self.metrics = metrics
        self.authenticator = authenticator

    def render_GET(self, request: Request) -> bytes:
        if self.authenticator is not None:
            verdict = self.authenticator.check(request_credentials(request))
            if verdict is Verdict.THROTTLED:
                return text_response(request, 429, "too many failed attempts")
            if not verdict.allowed:
                request.setHeader(b"www-authenticate", b"Bearer")
                return text_response(request, 401, "a valid token is required")
        accept = request.getHeader(b"accept") or b""
        body, content_type = self.metrics.render(accept.decode("latin-1"))
        request.setHeader(b"content-type", content_type.encode())
        request.setHeader(b"cache-control", b"no-store")
        return body


def wants_websocket(request: Request) -> bool:
    upgrade = request.getHeader(b"upgrade") or b""
    return any(token.strip().lower() == b"websocket" for token in upgrade.split(b","))


class WebSocketRoute(Resource):
    """``/ws``: the upgrade goes to Autobahn; anything else is told to upgrade.

    Autobahn answers a plain ``GET`` with its status page (200, naming its version,
    and following ``?redirect=``) to anyone, authenticated or not.
    """

    isLeaf = True

    def __init__(self, ws_factory: PocketAgentFactory) -> None:
        super().__init__()
        self.websocket = WebSocketResource(ws_factory)

    def render(self, request: Request) -> bytes | int:
        if not wants_websocket(request):
            request.setHeader(b"upgrade", b"websocket")  # RFC 9110: a 426 names it
            request.setResponseCode(426, b"Upgrade Required")  # Twisted has no phrase for it
            return text_response(request, 426, "this is a WebSocket endpoint: upgrade required")
        result: bytes | int = self.websocket.render(request)
        return result


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
    noisy = False  # no "Starting factory <...object at 0x...>" lines: the ready line says it

    def log(self, request: Request) -> None:  # type: ignore[override]
        if not DEBUG.on:
            return
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


class Root(Resource):
    """The site's root: paths without a resource of their own go to ``fallback`` (the
    web app, which serves its files and 404s the rest), else get a plain 404 (Twisted's
    default is deprecated)."""

    def __init__(self, fallback: IResource | None = None) -> None:
        super().__init__()
        self.fallback = fallback

    def getChild(self, path: bytes, request: Request) -> IResource:
        return self.fallback if self.fallback is not None else notFound()


def build_site(
    health: Health,
    authenticator: Authenticator,
    ws_factory: PocketAgentFactory,
    metrics: Metrics | None = None,
    reactor: IReactorTime | None = None,
    static_root: Path = STATIC_ROOT,
) -> PocketAgentSite:
    """``metrics`` None: ``/metrics`` is not on this site (``metrics.listen`` is set);
    ``reactor`` runs the HTTP timeouts (None: the global one); ``static_root`` holds the
    web app served at ``/`` (the package's own)."""
    root = Root(StaticApp(static_root))
    root.putChild(b"ws", WebSocketRoute(ws_factory))
    root.putChild(b"health", HealthResource(health, authenticator))
    if metrics is not None:
        root.putChild(b"metrics", MetricsResource(metrics, authenticator))
    site = PocketAgentSite(root, reactor=reactor)
    site.authenticator = authenticator
    return site


def build_metrics_site(metrics: Metrics, reactor: IReactorTime | None = None) -> PocketAgentSite:
    """The site of a ``metrics.listen`` listener: ``/metrics`` and nothing else."""
    root = Root()
    root.putChild(b"metrics", MetricsResource(metrics, None))
    return PocketAgentSite(root, reactor=reactor)
