"""Options and ``makeService``: the one place where the server's services are wired.

``twistd -n pocket-agent`` and ``pocket-agent-server`` both come through here::

    PocketAgentService    starts children in order, stops them one by one in reverse
      LogService          JSON/text log observer (first up, last down)
      PocketAgent         data-dir lock, projects, connections (the domain)
      ListenerService*    one per ``listen`` endpoint, all serving the same Site
      ReadyAnnouncement   logs where everything is once the ports are open
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Generator, Sequence
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IStreamServerEndpoint,
)
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.python.failure import Failure

from . import __version__
from .auth import Authenticator, TokenFile, ensure_token
from .config import Config, ConfigError, Overrides, load_config
from .errors import StartupError
from .logs import LogService
from .pathpolicy import PathPolicy
from .projects import ProjectRegistry, ProjectStore
from .server import PocketAgent
from .storage import DataDirLock
from .tls import ReloadableServerOptions, TLSError, ensure_dev_certificate
from .web import build_site
from .websocket import PocketAgentFactory

_SPLIT = re.compile(r"(?<!\\):")
LOOPBACK_INTERFACES = {"127.0.0.1", "::1", "localhost"}
SUPPORTED_ENDPOINTS = ("ssl", "tcp", "tcp6", "unix", "systemd")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Pocket Agent Server: drive the Claude Code CLI from your phone."
    optParameters = [
        ["config", "c", None, "Config file (default: <root>/config.yaml when present)."],
        ["root", "r", None, "Root directory; relative paths are relative to it (default: cwd)."],
        ["data-dir", None, None, "Data directory (default: <root>/data)."],
        ["claude", None, None, "The claude binary to run."],
        ["log-level", None, None, "debug, info, warn or error."],
    ]
    optFlags = [["insecure", None, "Allow plain tcp: listeners on non-loopback interfaces."]]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self.config: Config | None = None

    def opt_listen(self, endpoint: str) -> None:
        """Twisted endpoint string to listen on (repeatable; replaces the configured list)."""
        self["listen"].append(endpoint)

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"pocket-agent-server {__version__}")
        sys.exit(0)

    def overrides(self) -> Overrides:
        return Overrides(
            config_file=self["config"],
            root=self["root"],
            listen=tuple(self["listen"]),
            data_dir=self["data-dir"],
            claude=self["claude"],
            log_level=self["log-level"],
            insecure=bool(self["insecure"]),
        )

    def postOptions(self) -> None:
        try:
            self.config = load_config(self.overrides(), os.environ)
            listen_plan(self.config)
        except ConfigError as e:
            # Not a UsageError: twistd would print its whole usage text before the line.
            raise StartupError(str(e)) from None


def endpoint_parts(description: str) -> tuple[str, list[str], dict[str, str]]:
    kind, *rest = (part.replace("\\:", ":") for part in _SPLIT.split(description))
    args = [a for a in rest if "=" not in a]
    kwargs = dict(a.split("=", 1) for a in rest if "=" in a)
    return kind, args, kwargs


def listen_plan(config: Config) -> list[tuple[str, str, bool]]:
    """``(original, endpoint string, wrap in our TLS)`` for each listener, or ConfigError.

    ``ssl:PORT`` without its own key serves our certificate through a reloadable
    context (SIGHUP swaps it); ``systemd:`` sockets get the same TLS. Plain ``tcp:``
    is loopback-only unless the operator passes ``--insecure``.
    """
    plan = []
    for description in config.listen:
        kind, args, kwargs = endpoint_parts(description)
        if kind not in SUPPORTED_ENDPOINTS:
            raise ConfigError(
                f"listen: {description!r}: endpoint type {kind!r} is not supported "
                f"(use one of {', '.join(SUPPORTED_ENDPOINTS)})"
            )
        if kind == "ssl":
            if "privateKey" in kwargs or "certKey" in kwargs:
                plan.append((description, description, False))
            else:
                plan.append((description, "tcp:" + description[len("ssl:") :], True))
        elif kind in ("tcp", "tcp6"):
            interface = kwargs.get("interface") or (args[1] if len(args) > 1 else "")
            if interface not in LOOPBACK_INTERFACES and not config.insecure:
                raise ConfigError(
                    f"listen: {description!r} is plain text on a non-loopback interface; "
                    "use ssl: or pass --insecure"
                )
            plan.append((description, description, False))
        elif kind == "unix" and "mode" not in kwargs:
            # UNIX clients count as loopback: only the server's own user may connect.
            plan.append((description, f"{description}:mode=600", False))
        else:
            plan.append((description, description, kind == "systemd"))
    return plan


class PocketAgentService(MultiService):
    """Stops its children one after another, newest first, each finishing before the next:
    stop listening, then close connections, then release the lock, and the log last,
    so every step of the shutdown is still logged. (MultiService stops them all at once.)
    """

    log = Logger()
    agent: PocketAgent
    tls_options: ReloadableServerOptions | None = None

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except BaseException:
            self.agent.lock.release()  # a failed start leaves no stale lock behind
            raise

    def reload(self) -> None:
        """SIGHUP: swap in a renewed TLS certificate without dropping anyone."""
        if self.tls_options is None:
            return
        try:
            changed = self.tls_options.reload()
        except TLSError as e:
            self.log.error("SIGHUP: keeping the old certificate: {error}", error=str(e))
            return
        self.log.info(
            "SIGHUP: TLS certificate {what}",
            what="reloaded" if changed else "unchanged",
            fingerprint=self.tls_options.fingerprint,
        )

    @defer.inlineCallbacks
    def stopService(self) -> Generator[defer.Deferred[object], object, None]:
        Service.stopService(self)
        for service in reversed(list(self)):
            yield defer.maybeDeferred(service.stopService)


class ListenerService(Service):
    """Listen in ``privilegedStartService`` and fail start-up loudly if the port is taken.

    (``StreamServerEndpointService`` only logs a listen failure and keeps running.)
    """

    log = Logger()

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        tls: bool = False,
    ) -> None:
        self.description = description
        self.tls = tls
        self.endpoint = endpoint
        self.factory = factory
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        outcome: list[Any] = []
        self.endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise StartupError(f"listen: {self.description}: did not start listening at once")
        if isinstance(outcome[0], Failure):
            raise StartupError(f"cannot listen on {self.description}: {outcome[0].value}")
        self.port = outcome[0]
        super().privilegedStartService()

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        return defer.maybeDeferred(port.stopListening)  # type: ignore[call-overload,no-any-return]


def describe_address(listener: ListenerService) -> str:
    """``wss://127.0.0.1:8443/ws`` style, so the operator can paste it (and tests parse it)."""
    address = listener.port.getHost() if listener.port else None
    if isinstance(address, IPv4Address | IPv6Address):
        host = f"[{address.host}]" if isinstance(address, IPv6Address) else address.host
        tls = listener.tls or listener.description.startswith("ssl:")
        return f"{'wss' if tls else 'ws'}://{host}:{address.port}/ws"
    if isinstance(address, UNIXAddress):
        return f"unix:{address.name!r}"
    return listener.description


class ReadyAnnouncement(Service):
    """One log line, once every port is open, telling the operator where everything is."""

    log = Logger()

    def __init__(self, config: Config, listeners: Sequence[ListenerService], created: list[str]):
        self.config = config
        self.listeners = listeners
        self.created = created

    def startService(self) -> None:
        super().startService()
        addresses = ", ".join(describe_address(listener) for listener in self.listeners)
        config = self.config
        self.log.info(
            "Pocket Agent Server {version} listening on {addresses}",
            version=__version__,
            addresses=addresses,
            root=str(config.root),
            data_dir=str(config.data_dir),
            certificate=str(config.tls.cert),
            token_file=str(config.auth.token_file),
            log_file=str(config.logging.file) if config.logging.file else None,
            created=", ".join(self.created) or None,
        )
        self.log.info(
            "Run `pocket-agent-server token` in {root} to show the pairing URL and QR code",
            root=str(config.root),
        )


class TokenWatch(Service):
    """``token --rotate`` writes a new token file: close the connections that paired
    with the old one (within ``INTERVAL``; SPEC §7). New ones already need the new one."""

    INTERVAL = 2.0
    log = Logger()

    def __init__(self, tokens: TokenFile, agent: PocketAgent, clock: Any) -> None:
        self.tokens = tokens
        self.agent = agent
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self._known: str | None = None

    def startService(self) -> None:
        super().startService()
        self._known = self.tokens.current()
        self._loop.start(self.INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        try:
            token = self.tokens.current()
        except (OSError, ValueError) as e:
            self.log.error("Cannot read the token file: {error}", error=str(e))
            return
        if token != self._known:
            self._known = token
            closed = self.agent.revoke_token_sessions()
            self.log.warn("Token rotated: closed {n} connections that used the old one", n=closed)


def build_registry(config: Config, reactor: Any) -> ProjectRegistry:
    """Projects and their histories as the server (and ``repair``) sees them."""
    return ProjectRegistry(
        ProjectStore(config.data_dir),
        PathPolicy.build(
            config.projects.allowed_roots,
            config.root,
            config.data_dir,
            protected=(
                config.tls.cert.parent,
                config.tls.key.parent,
                config.auth.token_file.parent,
            ),
        ),
        config.limits.max_projects,
        reactor,
        config.log_rotation,
        # Compression of rotated history files runs off the reactor thread.
        lambda f, *args: deferToThreadPool(reactor, reactor.getThreadPool(), f, *args),
    )


def build_service(config: Config, reactor: Any, stdout: Any = None) -> PocketAgentService:
    """Everything the server runs, not yet started. Raises StartupError with one line."""
    plan = listen_plan(config)
    created = []
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        if ensure_dev_certificate(config.tls.cert, config.tls.key):
            created.append(f"self-signed certificate {config.tls.cert}")
        if ensure_token(config.auth.token_file):
            created.append(f"auth token {config.auth.token_file}")
        tokens = TokenFile(config.auth.token_file)
        tokens.current()  # a damaged token file stops start-up, not every later login
        tls_options = ReloadableServerOptions(config.tls.cert, config.tls.key)
    except (OSError, ValueError, TLSError) as e:
        raise StartupError(str(e)) from None

    registry = build_registry(config, reactor)
    agent = PocketAgent(config, registry, reactor, DataDirLock(config.data_dir / ".lock"))
    authenticator = Authenticator(tokens.current, config.auth.trust_loopback, reactor)
    authenticator.on_failure = lambda credentials, verdict: Logger().warn(
        "Authentication failed",
        peer=credentials.peer,
        verdict=verdict.value,
        token_presented=credentials.token is not None,
    )
    site = build_site(
        agent, authenticator, PocketAgentFactory(agent, authenticator, config, reactor)
    )

    root = PocketAgentService()
    LogService(
        config.logging.level, config.logging.format, config.logging.file, extra_stream=stdout
    ).setServiceParent(root)
    agent.setServiceParent(root)
    listeners = []
    for original, endpoint_string, wrap_tls in plan:
        factory: IProtocolFactory = site
        if wrap_tls:
            factory = TLSMemoryBIOFactory(tls_options, False, site)
        try:
            endpoint = serverFromString(reactor, endpoint_string)
        except (ValueError, TypeError) as e:
            raise StartupError(f"listen: {original!r}: {e}") from None
        listener = ListenerService(original, endpoint, factory, tls=wrap_tls)
        listener.setServiceParent(root)
        listeners.append(listener)
    TokenWatch(tokens, agent, reactor).setServiceParent(root)
    ReadyAnnouncement(config, listeners, created).setServiceParent(root)
    root.agent = agent
    root.tls_options = tls_options
    root.listeners = listeners  # type: ignore[attr-defined]
    return root


def exit_cleanly_on_signals(reactor: Any, service: PocketAgentService | None = None) -> None:
    """SIGTERM/SIGINT stop the reactor and the process then exits 0 (SPEC §9).

    Twisted's own handlers remember the signal and twistd re-raises it at exit, so a
    graceful shutdown would end as "killed by SIGTERM" (status 143). Installed once
    the reactor runs, after Twisted's, and only by the real entry points, never in tests.
    """
    log = Logger()

    def handler(signum: int, frame: object) -> None:
        log.info("Received {signal}, shutting down", signal=signal.Signals(signum).name)
        reactor.callFromThread(reactor.stop)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)
    if service is not None:

        def hangup(signum: int, frame: object) -> None:
            reactor.callFromThread(service.reload)

        signal.signal(signal.SIGHUP, hangup)


def makeService(options: Options, reactor: IReactorCore | None = None) -> PocketAgentService:
    """twistd's entry point (through the plugin)."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    assert options.config is not None, "parseOptions() first"
    service = build_service(options.config, reactor)
    reactor.callWhenRunning(exit_cleanly_on_signals, reactor, service)
    return service
