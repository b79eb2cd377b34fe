"""SPEC §12: ntfy notifications off the page (a phone whose tab is closed, native apps).

An observer of the event bus, like the event log and the metrics: a permission prompt
becomes ``approval_needed``, a finished run ``run_finished`` or ``run_failed``. The
observer only appends to a bounded queue (full: the notification is dropped and
counted), so a slow or dead ntfy server can never delay a run or a follower; the queue
is sent one notification at a time (in order), each attempt bounded by a timeout, with
at most three retries and a growing pause between them, all on an injected clock.

The text names the project (its directory's name) and the tool or the outcome, and
nothing else: never prompt text, code, file contents or a credential.
"""

from __future__ import annotations

import collections
import urllib.parse
from collections.abc import Callable, Generator, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from pocket_agent.config import NotificationsConfig
from pocket_agent.core.events import Event
from pocket_agent.runs.events import PermissionRequested, RunFinished

from .logs import DEBUG
from .pushtext import Notification, header_text, notification_for

TIMEOUT = 10.0  # seconds per attempt: connecting, sending and the whole answer
BACKOFF = (2.0, 4.0, 8.0)  # the pause before each retry: at most three retries
QUEUE_SIZE = 100  # notifications waiting to be sent; more are dropped and counted
STOP_GRACE = 2.0  # on shutdown, how long what is queued (a run killed by it) may take
RESULTS = ("sent", "failed", "dropped")


@implementer(IBodyProducer)
class _Body:
    """The message, written in one go (no cooperator, no reactor of its own)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Discard(Protocol):
    """Reads ntfy's answer to its end without keeping it (its size is not ours to trust)."""

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred(lambda _: self._cancel())

    def _cancel(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)


def _timed_out(result: object, timeout: float) -> Failure:
    """Whatever the cancelled request reports (ResponseNeverReceived...), it timed out."""
    return Failure(defer.TimeoutError(f"no answer within {timeout:g}s"))


def _drained(response: IResponse) -> Deferred[int]:
    reader = _Discard()
    response.deliverBody(reader)
    return reader.done.addCallback(lambda _: response.code)


class HTTPStatus(Exception):
    """ntfy answered, but not with a 2xx."""

    def __init__(self, code: int) -> None:
        super().__init__(f"HTTP {code}")
        self.code = code

    @property
    def retryable(self) -> bool:
        return self.code >= 500 or self.code == 429  # a 4xx (a bad token) stays wrong


class Push(Service):
    """Queues notifications from domain events and delivers them to ntfy.

    ``config`` is read at each attempt (SIGHUP may change it); ``project_path`` gives a
    project's directory (None: unknown), whose last name the text shows; ``origin`` the web
    app's ``https://host:port`` for the ``Click`` link (None: no link), asked when needed;
    ``count`` is told ``sent``, ``failed`` or ``dropped`` once per notification.
    """

    log = Logger()

    def __init__(
        self,
        config: NotificationsConfig,
        agent: IAgent,
        clock: IReactorTime,
        *,
        project_path: Callable[[str], str | None],
        origin: Callable[[], str | None],
        count: Callable[[str], None] = lambda result: None,
        queue_size: int = QUEUE_SIZE,
        timeout: float = TIMEOUT,
        backoff: Sequence[float] = BACKOFF,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self.config = config
        self.agent = agent
        self.clock = clock
        self.project_path = project_path
        self.origin = origin
        self.count = count
        self.timeout = timeout
        self.backoff = tuple(backoff)
        self.stop_grace = stop_grace
        self.queue: collections.deque[Notification] = collections.deque()
        self.queue_size = queue_size
        self.sending: Deferred[None] | None = None
        self._scheduled: Any = None  # the delayed call that starts the next delivery
        self.retrying = False  # pausing after a failed attempt: the server is in trouble
        self._stopped = False
        self._idle: list[Deferred[None]] = []

    # ------------------------------------------------------------ the observer

    def observe(self, event: Event) -> None:
        """Only queues: delivery starts on a later turn of the reactor."""
        if not isinstance(event, PermissionRequested | RunFinished):
            return
        config = self.config
        if not config.enabled or self._stopped:
            return
        path = self.project_path(event.project_id)
        name = path.rstrip("/").rpartition("/")[2] if path else event.project_id
        notification = notification_for(event, name or event.project_id)
        if notification is None or notification.event not in config.events:
            return
        if len(self.queue) >= self.queue_size:
            self.count("dropped")
            self.log.warn(
                "Notification dropped: {queued} already waiting",
                queued=len(self.queue),
                notification=notification.event,
                project_id=notification.project_id,
            )
            return
        self.queue.append(notification)
        self._schedule()

    # ------------------------------------------------------------ delivery

    def _schedule(self) -> None:
        if self.sending is None and self._scheduled is None and self.queue:
            self._scheduled = self.clock.callLater(0, self._next)

    def _next(self) -> None:
        self._scheduled = None
        if self.sending is not None or not self.queue:
            return
        notification = self.queue.popleft()
        self.sending = self.deliver(notification)
        self.sending.addBoth(self._sent)

    def _sent(self, result: object) -> None:
        self.sending = None
        if isinstance(result, Failure) and not result.check(defer.CancelledError):
            self.log.failure("Notification delivery broke", result)
        if self.queue and not self._stopped:
            self._schedule()
        elif not self.queue:
            idle, self._idle = self._idle, []
            for waiting in idle:
                waiting.callback(None)

    @defer.inlineCallbacks
    def deliver(self, notification: Notification) -> Generator[Deferred[Any], Any, None]:
        """One notification: the first attempt and up to ``len(backoff)`` retries."""
        error = "not sent"
        attempts = 0
        try:
            for pause in (None, *self.backoff):
                if pause is not None:
                    self.retrying = True
                    try:
                        yield deferLater(self.clock, pause, lambda: None)
                    finally:
                        self.retrying = False
                if not self.config.enabled:  # turned off by a SIGHUP meanwhile
                    self.count("dropped")
                    return
                attempts += 1
                try:
                    yield self.post(notification)
                except defer.TimeoutError:
                    error = f"no answer within {self.timeout:g}s"
                except HTTPStatus as e:
                    error = str(e)
                    if not e.retryable:
                        break
                except defer.CancelledError:
                    raise
                except Exception as e:
                    error = f"{type(e).__name__}: {e}"
                else:
                    self.count("sent")
                    if DEBUG.on:
                        self.log.debug(
                            "Notification sent",
                            notification=notification.event,
                            project_id=notification.project_id,
                            attempts=attempts,
                        )
                    return
        except defer.CancelledError:  # the server is stopping and gave up waiting
            self.count("dropped")
            return
        self.count("failed")
        self.log.warn(
            "Notification not delivered to {server} after {attempts} attempts: {error}",
            server=self._server(),
            attempts=attempts,
            error=error,
            notification=notification.event,
            project_id=notification.project_id,
        )

    def post(self, notification: Notification) -> Deferred[int]:
        """One attempt: POST ``<url>/<topic>``; fails on a non-2xx answer or the timeout."""
        ntfy = self.config.ntfy
        if ntfy.url is None or ntfy.topic is None:
            raise RuntimeError("notifications.ntfy.url is no longer set")
        url = f"{ntfy.url}/{urllib.parse.quote(ntfy.topic, safe='')}"
        headers = Headers(
            {
                b"Title": [header_text(notification.title)],
                b"Priority": [notification.priority.encode()],
                b"Tags": [notification.tags.encode()],
                b"Content-Type": [b"text/plain; charset=utf-8"],
                b"User-Agent": [b"pocket-agent-server"],
            }
        )
        origin = self.origin()
        if origin is not None:
            click = f"{origin}/#project={urllib.parse.quote(notification.project_id)}"
            headers.setRawHeaders(b"Click", [click.encode()])
        if ntfy.token is not None:
            headers.setRawHeaders(b"Authorization", [b"Bearer " + ntfy.token.encode()])
        body = _Body(notification.message.encode())
        sent: Deferred[IResponse] = self.agent.request(b"POST", url.encode(), headers, body)
        answered: Deferred[int] = sent.addCallback(_drained)
        answered.addCallback(self._check)
        answered.addTimeout(self.timeout, self.clock, onTimeoutCancel=_timed_out)
        return answered

    @staticmethod
    def _check(code: int) -> int:
        if not 200 <= code < 300:
            raise HTTPStatus(code)
        return code

    def _server(self) -> str:
        """The server as it may be logged: scheme and host, no path (it may hold a topic
        someone could guess and post to)."""
        parts = urllib.parse.urlsplit(self.config.ntfy.url or "")
        return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "(none)"

    # ------------------------------------------------------------ lifecycle

    def startService(self) -> None:
        super().startService()
        config = self.config
        if config.enabled:  # the topic is not logged: on a public server it is the password
            self.log.info(
                "Notifications go to the ntfy server {server}: {events}",
                server=self._server(),
                events=", ".join(config.events),
            )

    def idle(self) -> Deferred[None]:
        """Fires once nothing is queued or being sent (tests; the shutdown)."""
        if self.sending is None and not self.queue:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._idle.append(waiting)
        return waiting

    def stopService(self) -> Deferred[None] | None:
        """Let what is queued (the runs the shutdown killed) go out for a moment, then
        give up on the rest, counted as dropped; at once if ntfy is already failing."""
        super().stopService()
        if self.retrying:  # the server already failed: waiting would only delay the exit
            self._abandon()
        if self.sending is None and not self.queue:
            self._stopped = True
            return None
        done = self.idle()
        timer = self.clock.callLater(self.stop_grace, self._abandon)

        def finished(result: None) -> None:
            self._stopped = True
            if timer.active():
                timer.cancel()

        return done.addCallback(finished)

    def _abandon(self) -> None:
        self._stopped = True
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        for _ in self.queue:
            self.count("dropped")
        self.queue.clear()
        if self.sending is not None:
            self.sending.cancel()
        else:
            self._sent(None)
