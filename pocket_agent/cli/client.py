"""``pocket-agent-server client``: talk to a running server from a terminal or a script.

pocket-agent-server client [--url URL] [--token T] [--json] COMMAND ...
  health | list | create PATH [--create] | join PROJECT [--after SEQ]
  exec PROJECT PROMPT [--model M] [--permission-mode MODE] [--approvals phone|off]
  kill PROJECT | interrupt PROJECT
  approve PROJECT PERMISSION_ID [--remember] [--input JSON] [--answer QUESTION=ANSWER ...]
  deny PROJECT PERMISSION_ID [--message TEXT]
  settings PROJECT [--allow RULE ...] [--clear] [--approvals phone|off]
  history PROJECT [--limit N] [--after SEQ] [--before SEQ]

PROJECT is a project id or its directory. ``exec`` and ``join`` on a terminal ask each
permission prompt (SPEC §10) as it comes; elsewhere they show it and wait, and
``approve``/``deny`` (or a phone) answer it. Without ``--url``/``--token``/``--cafile``
the local root's own settings are used: its first listener on loopback, the token in
``data/auth_token`` and its certificate ``certs/server.crt`` as the only trusted one.
The command line is :mod:`.client_options`; the transport is autobahn's Twisted client;
what each frame means lives in
:mod:`.client_flows`, how it looks in :mod:`.client_render`.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any, TextIO
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from OpenSSL import SSL
from rich.text import Text
from twisted.internet import defer, endpoints, ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from pocket_agent.config import ConfigError
from pocket_agent.wire.envelope import SUBPROTOCOL, decode_envelope
from pocket_agent.wire.errors import ProtocolError
from pocket_agent.wire.requests import Request, encode_request

from .client_flows import (
    AnswerFlow,
    CreateFlow,
    Flow,
    HealthFlow,
    HistoryFlow,
    InterruptFlow,
    KillFlow,
    ListFlow,
    SettingsFlow,
)
from .client_options import COMMAND, ClientOptions, Target, resolve_target
from .client_render import Output, console
from .client_stream import ExecFlow, JoinFlow

CLOSE_WAIT = 2.0  # seconds to wait for the server's close frame before leaving anyway


# ---------------------------------------------------------------- connection


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS without any certificate check (--insecure-skip-verify)."""

    def __init__(self) -> None:
        self._context = ssl.CertificateOptions().getContext()

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self._context, None)


def tls_creator(target: Target, host: str) -> Any:
    if not target.verify:
        return _Unverified()
    if target.cafile is None:
        return ssl.optionsForClientTLS(host)  # the platform's trust store
    trust = ssl.Certificate.loadPEM(target.cafile.read_bytes())
    return ssl.optionsForClientTLS(host, trustRoot=trust)


class ClientProtocol(WebSocketClientProtocol):
    """Frames in to the session, nothing else (autobahn owns ``.log``)."""

    factory: ClientFactory

    def onOpen(self) -> None:
        self.factory.session.opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.session.received(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.session.closed(code, reason)


class ClientFactory(WebSocketClientFactory):
    protocol = ClientProtocol  # type: ignore[assignment]

    def __init__(
        self, session: Session, url: str, headers: Mapping[str, str], reactor: Any = None
    ) -> None:
        super().__init__(url, protocols=[SUBPROTOCOL], headers=dict(headers), reactor=reactor)
        self.session = session


class Session:
    """One connection running one flow: the :class:`~.client_flows.Link` it sends through."""

    def __init__(self, reactor: Any, out: Output, ask_terminal: bool) -> None:
        self.reactor = reactor
        self.out = out
        self.ask_terminal = ask_terminal
        self.flow: Flow | None = None
        self.protocol: ClientProtocol | None = None
        self.code: int | None = None
        self.done: defer.Deferred[int] = defer.Deferred()
        self._ids = itertools.count(1)
        self._hello = False

    # the Link
    def send(self, request: Request, project_id: str | None = None) -> str:
        request_id = f"cli-{next(self._ids)}"
        if self.protocol is not None:
            self.protocol.sendMessage(encode_request(request, project_id, request_id))
        return request_id

    def finish(self, code: int) -> None:
        if self.code is not None:
            return
        self.code = code
        if self.protocol is not None and self.protocol.state == self.protocol.STATE_OPEN:
            self.protocol.sendClose(1000)
            self.reactor.callLater(CLOSE_WAIT, self._exit)
        else:
            self._exit()

    def ask(self, question: str) -> defer.Deferred[bool]:
        """Read the answer on a daemon thread, so frames keep flowing while the person
        thinks (and a second Ctrl-C can still leave)."""
        answered: defer.Deferred[bool] = defer.Deferred()

        def read() -> None:
            try:
                line = self.out.err.input(Text(question))
            except (EOFError, OSError):
                line = ""
            self.reactor.callFromThread(answered.callback, line.strip().lower() in ("y", "yes"))

        threading.Thread(target=read, name="client-ask", daemon=True).start()
        return answered

    # from the transport
    def opened(self, protocol: ClientProtocol) -> None:
        self.protocol = protocol

    def received(self, payload: bytes) -> None:
        assert self.flow is not None
        try:
            envelope = decode_envelope(payload)
        except ProtocolError as e:
            self.out.note(f"ignoring a frame the server should not send: {e.message}", "red")
            return
        if envelope.type == "server_hello" and not self._hello:
            self._hello = True
            self.flow.start()
            return
        self.flow.frame(envelope, payload)

    def closed(self, code: int | None, reason: str | None) -> None:
        self.protocol = None
        if self.flow is not None and not self.flow.done:
            self.flow.closed(f"{code} {reason or ''}".strip())
        self._exit()

    def failed(self, failure: Failure) -> None:
        self.out.note(f"cannot connect: {failure.getErrorMessage()}", "red")
        self.finish(1)

    def interrupt(self) -> None:
        if self.flow is not None and not self.flow.done:
            self.flow.interrupt()
        else:
            self.finish(130)

    def _exit(self) -> None:
        if not self.done.called:
            self.done.callback(1 if self.code is None else self.code)


def connect(reactor: Any, target: Target, session: Session) -> None:
    parts = urlsplit(target.url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise usage.UsageError(f"--url {target.url!r}: expected ws:// or wss://host:port/ws")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    factory = ClientFactory(session, target.url, headers, reactor)
    endpoint: Any = endpoints.HostnameEndpoint(reactor, host, port, timeout=10)
    if parts.scheme == "wss":
        endpoint = endpoints.wrapClientTLS(tls_creator(target, host), endpoint)
    endpoint.connect(factory).addErrback(session.failed)


# ---------------------------------------------------------------------- main


def build_flow(options: ClientOptions, session: Session, out: Output, interactive: bool) -> Flow:
    sub = options.subOptions
    assert sub is not None
    command = options.subCommand
    if command == "health":
        return HealthFlow(session, out)
    if command == "list":
        return ListFlow(session, out)
    if command == "create":
        return CreateFlow(session, out, sub["path"], bool(sub["create"]))
    if command == "join":
        return JoinFlow(session, out, sub["project"], sub["after"], interactive)
    if command == "exec":
        return ExecFlow(session, out, sub["project"], sub["prompt"], sub["options"], interactive)
    if command == "kill":
        return KillFlow(session, out, sub["project"])
    if command == "interrupt":
        return InterruptFlow(session, out, sub["project"])
    if command in ("approve", "deny"):
        return AnswerFlow(session, out, sub["project"], sub["request"])
    if command == "settings":
        return SettingsFlow(session, out, sub["project"], sub["change"])
    assert command == "history"
    return HistoryFlow(
        session,
        out,
        sub["project"],
        limit=sub["limit"],
        after_seq=sub["after"],
        before_seq=sub["before"],
    )


def client_command(
    argv: Sequence[str], stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    options = ClientOptions()
    try:
        options.parseOptions(list(argv))
    except usage.UsageError as e:
        print(f"{COMMAND}: {e}", file=sys.stderr)
        return 2
    json_mode = bool(options.common("json"))
    out = Output(console(stdout or sys.stdout), console(stderr or sys.stderr), json_mode=json_mode)
    try:
        target = resolve_target(options, os.environ)
    except (ConfigError, OSError) as e:
        print(f"{COMMAND}: {e}", file=sys.stderr)
        return 2
    interactive = not json_mode and sys.stdin.isatty() and out.out.is_terminal
    from twisted.internet import reactor

    return run(reactor, options, target, out, interactive)


def run(
    reactor: Any, options: ClientOptions, target: Target, out: Output, interactive: bool
) -> int:
    session = Session(reactor, out, interactive)
    session.flow = build_flow(options, session, out, interactive)
    try:
        connect(reactor, target, session)
    except (usage.UsageError, OSError, SSL.Error) as e:
        print(f"{COMMAND}: {e}", file=sys.stderr)
        return 2
    codes: list[int] = []

    def stop(code: int) -> None:
        codes.append(code)
        if reactor.running:
            reactor.stop()

    session.done.addCallback(stop)

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(session.interrupt)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        if not codes:
            reactor.run(installSignalHandlers=False)
    finally:
        signal.signal(signal.SIGINT, previous)
        out.idle()
    return codes[0] if codes else 1
