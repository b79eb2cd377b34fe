"""Autobahn glue: authenticate the upgrade, turn frames into :class:`Connection` calls.

Nothing here knows what a project is. The protocol authenticates in
``onConnect`` (so a refused client gets an HTTP status, never a WebSocket),
registers a :class:`~pocket_agent.net.connection.Connection` with the hub in
``onOpen``, forwards every text frame to it, and sends what it gives back within
the connection's send budget.

The per-message path is kept lean (docs/performance.rst): a frame is written as the
bytes ``Outbound.frame`` built once for every follower, not through autobahn's
``sendMessage``; autobahn's ``dataReceived`` and ``onMessageEnd`` are replaced by
versions without the arguments of a disabled debug line and the txaio future per
message; the idle timer is armed once and checks a timestamp.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, cast
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from pocket_agent.config import Config
from pocket_agent.core.events import EventBus, SlowConsumerDropped
from pocket_agent.ops.logs import DEBUG, trace_frame
from pocket_agent.wire.envelope import SUBPROTOCOL, request_id_of
from pocket_agent.wire.errors import ErrorCode, ProtocolError, invalid
from pocket_agent.wire.messages import ErrorMessage, Outbound

from .auth import Authenticator, Credentials, Verdict, offered_subprotocols
from .connection import CLOSE_GOING_AWAY, CLOSE_POLICY, Connection, Domain
from .ratelimit import MessageRate

CLOSE_NORMAL = 1000
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013


DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """No Origin (native apps, scripts) is fine; a browser must be same-origin or listed.

    Same-origin compares the Origin's host and port with the request's Host header.
    """
    if not origin:  # autobahn reports a missing header as ""
        return True
    if origin in allowed or "*" in allowed:
        return True
    if origin == "null" or not host:
        return False
    try:
        parsed = urlsplit(origin)
        default = DEFAULT_PORTS.get(parsed.scheme, 443)
        own = urlsplit(f"//{host}")
        return (parsed.hostname, parsed.port or default) == (own.hostname, own.port or default)
    except ValueError:
        return False


@implementer(IPushProducer)
class SendBudget:
    """Tells us when the transport's buffer is full, so we can count what piles up after.

    Registered as the transport's producer: Twisted pauses it once the kernel and
    transport buffers are full (repeatedly: it must be idempotent) and resumes it when
    they drain. Bytes sent while paused are the connection's backlog.
    """

    def __init__(self) -> None:
        self.paused = False
        self.backlog = 0

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.backlog = 0

    def stopProducing(self) -> None:
        pass


class PocketAgentProtocol(WebSocketServerProtocol):
    # Autobahn owns ``self.log``; ours must have another name.
    _log = Logger()

    factory: PocketAgentFactory
    connection: Connection | None = None
    budget: SendBudget | None = None
    _idle_timer: IDelayedCall | None = None
    _last_heard = 0.0  # clock reading of the last message, for the idle check
    _dropping = False
    _authenticated_as = "token"
    rate: MessageRate | None = None

    def onConnect(self, request: ConnectionRequest) -> str | None:
        try:
            return self._on_connect(request)
        except ConnectionDeny:
            raise
        except Exception:
            self._log.failure("Error while accepting a connection")
            raise ConnectionDeny(ConnectionDeny.INTERNAL_SERVER_ERROR, "internal error") from None

    def _on_connect(self, request: ConnectionRequest) -> str | None:
        factory = self.factory
        assert self.transport is not None
        # Origin first: a cross-site page must not even count failures against us.
        host = request.headers.get("host")
        if not origin_allowed(request.origin, host, factory.config.auth.allowed_origins):
            self._log.warn("Refused a browser Origin", origin=request.origin)
            raise ConnectionDeny(403, "Origin not allowed")
        credentials = Credentials.from_request(
            self.transport.getPeer(), request.headers, request.params.get("token", [])
        )
        verdict = factory.authenticator.check(credentials)
        if verdict is Verdict.THROTTLED:
            raise ConnectionDeny(429, "Too Many Requests")
        if not verdict.allowed:
            raise ConnectionDeny(401, "Unauthorized")
        self._authenticated_as = verdict.value
        # Never echo a ``bearer.<token>`` entry: select ours or none.
        offered = offered_subprotocols(request.headers.get("sec-websocket-protocol"))
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    def onOpen(self) -> None:
        try:
            self._on_open()
        except Exception:
            self._log.failure("Error while opening a connection")
            self.close(1011, "internal error")

    def _on_open(self) -> None:
        factory = self.factory
        hub = factory.domain.hub
        connection = Connection(
            factory.domain,
            connection_id=str(uuid.uuid4()),
            authenticated_as=self._authenticated_as,
            send=self.send,
            close=self.close,
            abort=lambda: self.dropConnection(abort=True),
        )
        if not hub.connect(connection):
            if not hub.accepting:
                self.close(CLOSE_GOING_AWAY, "server shutting down")
                return
            limit = factory.config.limits.max_connections
            self.send(
                ErrorMessage.of(
                    ProtocolError(
                        ErrorCode.RESOURCE_LIMIT,
                        f"the server is at its limit of {limit} connections",
                        {"resource": "connections", "limit": limit},
                    )
                )
            )
            self.close(CLOSE_TRY_AGAIN_LATER, "too many connections")
            return
        self.connection = connection
        # Under WebSocketResource the HTTP channel is still the registered producer.
        consumer = cast(IConsumer, self.transport)
        consumer.unregisterProducer()
        self.budget = SendBudget()
        consumer.registerProducer(self.budget, True)
        self._log.info(
            "Connection opened",
            connection_id=connection.connection_id,
            peer=self.peer,
            authenticated_as=connection.authenticated_as,
        )
        self.send(connection.hello())
        self._last_heard = self.factory.clock.seconds()
        self._arm_idle_timer(factory.config.timeouts.idle)

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's formats the arguments of a debug line (off) for every read.
        self._dataReceived(data)

    def onMessageEnd(self) -> None:
        # Autobahn's (26.11), less its "message" observer signal (we observe nothing),
        # the txaio future and callbacks that signal costs for every message, and
        # trackedTimings (off unless trackTimings is set, which we never do).
        if not self.failedByMe:
            self._onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None  # type: ignore[assignment]  # as autobahn's does

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        config = self.factory.config
        if config.logging.trace:
            trace_frame("in", payload, isBinary, self._connection_id, self._secret())
        connection = self.connection
        if connection is None:
            return
        now = self._last_heard = self.factory.clock.seconds()
        idle, timer = config.timeouts.idle, self._idle_timer
        # Armed once; again only when SIGHUP switched idle on or made it shorter than
        # what the timer has left (a longer idle is seen when it fires).
        if idle > 0 and (timer is None or timer.getTime() > now + idle):
            self._arm_idle_timer(idle)
        if not self._within_rate(payload, now):
            return
        if isBinary:
            self.send(ErrorMessage.of(invalid("frame", "binary frames are not accepted")))
            return
        if not DEBUG.on:
            connection.receive(payload)
            return
        started = time.perf_counter()
        message_type = connection.receive(payload)
        self._log.debug(
            "Message processed",
            message_type=message_type,
            connection_id=connection.connection_id,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def _within_rate(self, payload: bytes, now: float) -> bool:
        """``limits.messages_per_second`` (read live): a message over it is refused with
        RESOURCE_LIMIT; a connection refused for 10 s on end is closed (1008). Loopback
        too: a runaway script is still a runaway."""
        if self.rate is None:
            self.rate = MessageRate()
        limit = self.factory.config.limits.messages_per_second
        refusal = self.rate.admit(now, limit)
        if refusal is None:
            return True
        if self.state != self.STATE_OPEN:
            return False  # closing already: nothing more to say
        if refusal.close:
            self._log.warn(
                "Closing a connection over the message rate limit",
                connection_id=self.connection.connection_id if self.connection else None,
                limit=limit,
            )
            self.close(CLOSE_POLICY, "over the message rate limit")
            return False
        error = ProtocolError(
            ErrorCode.RESOURCE_LIMIT,
            f"more than {limit} messages a second: retry in {refusal.retry_after_ms} ms",
            {
                "resource": "messages_per_second",
                "limit": limit,
                "retry_after_ms": refusal.retry_after_ms,
            },
        )
        self.send(ErrorMessage.of(error, request_id=request_id_of(payload)))
        return False

    def onMessageFrameBegin(self, length: int) -> None:
        # The per-frame cap is autobahn's; the whole-message cap is ours, because
        # autobahn's maxMessagePayloadSize would also refuse our *outgoing* frames
        # (a large Claude line must never be cut).
        super().onMessageFrameBegin(length)
        limit = self.factory.config.limits.max_message_size
        if not self.failedByMe and self.message_data_total_length > limit:
            self._max_message_size_exceeded(
                self.message_data_total_length, limit, f"message exceeds {limit} bytes"
            )

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._cancel_idle_timer()
        connection, self.connection = self.connection, None
        if connection is not None:
            self.factory.domain.hub.disconnect(connection)
            self._log.info(
                "Connection closed",
                connection_id=connection.connection_id,
                code=code,
                reason=reason,
                clean=wasClean,
            )

    def close(self, code: int, reason: str) -> None:
        """Close with any RFC 6455 code: autobahn's ``sendClose`` refuses 1001, 1008, 1009
        and 1013 (it only takes 1000 and 3000-4999), so go one level down."""
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:123], isReply=False)
        elif self.state != self.STATE_CLOSED:
            self.dropConnection(abort=True)

    def send(self, message: Outbound) -> None:
        """Never blocks and never buffers without bound: a follower whose backlog passes
        ``limits.send_buffer`` is dropped (1013) and replays from history on reconnect."""
        if self.state != self.STATE_OPEN or self._dropping:
            return
        frame = message.frame
        budget = self.budget
        if budget is not None and budget.paused:
            budget.backlog += len(frame)
            if budget.backlog > self.factory.config.limits.send_buffer:
                self._drop_slow_consumer()
                return
        if self.factory.config.logging.trace:
            trace_frame("out", message.encode(), False, self._connection_id, self._secret())
        if self._perMessageCompress is None and not self.send_queue:
            # What autobahn's sendMessage would write (tests compare the bytes), less
            # what we never use: its trafficStats counters, autoFragmentSize (0 here),
            # trackedTimings. Pings and close frames are written directly by autobahn
            # too, so the order of frames on the wire is the order of the calls.
            self.transport.write(frame)  # type: ignore[union-attr]  # open: it has one
        else:
            # Compression (never offered) or writes autobahn queued (sync or chopped
            # ones, which we never make): behind those, through autobahn.
            self.sendMessage(message.encode(), isBinary=False)

    def _secret(self) -> str | None:
        """The current token, for the trace to cut out (a client may paste it anywhere)."""
        try:
            return self.factory.authenticator.current_token()
        except Exception:
            return None

    @property
    def _connection_id(self) -> str | None:
        return self.connection.connection_id if self.connection is not None else None

    def _drop_slow_consumer(self) -> None:
        self._dropping = True
        self.factory.bus.emit(
            SlowConsumerDropped(
                self.connection.connection_id if self.connection else None,
                self.budget.backlog if self.budget else 0,
            )
        )
        self.close(CLOSE_TRY_AGAIN_LATER, "too slow: reconnect with after_seq")
        # It may not even take the close frame: do not wait for its answer.
        self.factory.clock.callLater(0, self.dropConnection, True)

    def _arm_idle_timer(self, delay: float) -> None:
        self._cancel_idle_timer()
        if delay > 0:
            self._idle_timer = self.factory.clock.callLater(delay, self._idle_check)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = None

    def _idle_check(self) -> None:
        """``timeouts.idle`` after the last message, not after the first: the timer is
        armed once and, when it fires early, again for what is left."""
        self._idle_timer = None
        idle = self.factory.config.timeouts.idle
        if idle <= 0:
            return  # switched off by SIGHUP; the next message arms it if it comes back
        left = self._last_heard + idle - self.factory.clock.seconds()
        if left > 0:
            self._arm_idle_timer(left)
            return
        if self.connection is not None and self.connection.follows_anything:
            self._arm_idle_timer(idle)
            return
        self._log.info(
            "Closing an idle connection",
            connection_id=self.connection.connection_id if self.connection else None,
        )
        self.close(CLOSE_NORMAL, "idle timeout")


class PocketAgentFactory(WebSocketServerFactory):
    protocol = PocketAgentProtocol  # type: ignore[assignment]

    def __init__(
        self,
        domain: Domain,
        bus: EventBus,
        authenticator: Authenticator,
        config: Config,
        clock: IReactorTime,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Not ``self.server``: autobahn uses that for the Server header.
        self.domain = domain
        self.bus = bus
        self.authenticator = authenticator
        self.config = config
        self.clock = clock
        timeouts, limits = config.timeouts, config.limits
        self.setProtocolOptions(
            autoPingInterval=timeouts.ping_interval,
            autoPingTimeout=timeouts.pong_timeout,
            maxFramePayloadSize=limits.max_message_size,
            # "Origin: null" reaches our own check (403) instead of autobahn's 400.
            allowNullOrigin=True,
            # Send the 1009 close frame instead of cutting the TCP connection.
            failByDrop=False,
        )
