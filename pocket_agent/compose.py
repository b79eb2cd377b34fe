"""The one place where the object graph is built, by constructor injection.

``twistd -n pocket-agent``, ``pocket-agent-server``, ``repair`` and the tests' harness all
come through here, so what runs in tests is what runs in production::

    EventBus <- Hub, EventLog           (observers, in that order)
    ProjectRegistry (store, path policy, histories)
    Workspace, Executor                 (commands; emit events on the bus)
    Health, DomainService               (reading state; lifecycle)
    Authenticator, PocketAgentFactory, Site
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from .config import Config
from .core.events import EventBus
from .core.hub import Hub
from .core.pathpolicy import PathPolicy
from .core.registry import ProjectRegistry
from .core.storagewatch import StorageWatch
from .core.store import ProjectStore
from .core.workspace import Workspace
from .errors import StartupError
from .history import RunInThread
from .net.auth import Authenticator, TokenFile, ensure_token
from .net.connection import Domain
from .net.listeners import ListenerService, listen_plan
from .net.protocol import PocketAgentFactory
from .net.site import PocketAgentSite, build_site
from .net.tls import ReloadableServerOptions, TLSError, ensure_dev_certificate
from .net.tokenwatch import TokenWatch
from .ops.eventlog import EventLog
from .ops.health import Health
from .ops.logs import LogService
from .runs.executor import Executor, TreeFactory
from .runs.probe import ClaudeProbe
from .services import DomainService, PocketAgentService, ReadyAnnouncement
from .storage import DataDirLock


def thread_pool_runner(reactor: Any) -> RunInThread:
    """History compression off the reactor thread, in the reactor's pool."""
    return lambda f, *args: deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)


def find_setsid() -> str | None:
    """util-linux's ``setsid``, which makes claude lead its own session and group."""
    setsid = shutil.which("setsid")
    if setsid is None:
        Logger().warn("No setsid (util-linux): claude will share the server's process group")
    return setsid


def build_registry(
    config: Config, reactor: Any, run_in_thread: RunInThread | None = None
) -> ProjectRegistry:
    """Projects and their histories as the server (and ``repair``) sees them.

    ``run_in_thread`` None compresses in the calling thread (``repair``)."""
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
        run_in_thread,
    )


@attrs.frozen
class App:
    """The built object graph (the manhole will show it, tests drive it)."""

    config: Config
    bus: EventBus
    registry: ProjectRegistry
    hub: Hub
    workspace: Workspace
    executor: Executor
    claude: ClaudeProbe
    health: Health
    lock: DataDirLock
    service: DomainService  # lock, load, graceful stop
    authenticator: Authenticator
    ws_factory: PocketAgentFactory
    site: PocketAgentSite


def build_app(
    config: Config,
    reactor: Any,
    token: Callable[[], str],
    *,
    environ: dict[str, str] | None = None,
    spawner: Any = None,
    tree_factory: TreeFactory | None = None,
    setsid: str | None = None,
    probe_versions: bool = True,
    run_in_thread: RunInThread | None = None,
) -> App:
    """Everything but the listeners. ``reactor`` is the clock and, unless ``spawner`` is
    given, what spawns claude; ``setsid`` is the binary claude runs under
    (:func:`find_setsid`); ``run_in_thread`` compresses history off the calling thread
    (:func:`thread_pool_runner`; None compresses inline)."""
    environ = dict(os.environ) if environ is None else environ
    bus = EventBus()
    registry = build_registry(config, reactor, run_in_thread)
    hub = Hub(registry, config.limits.max_connections)
    bus.subscribe(hub)
    bus.subscribe(EventLog())
    storage = StorageWatch(config.data_dir, reactor, bus)
    executor = Executor(
        config,
        registry,
        hub,
        bus,
        clock=reactor,
        spawner=spawner or reactor,
        environ=environ,
        setsid=setsid,
        tree_factory=tree_factory,
        storage=storage,
    )
    claude = ClaudeProbe(reactor, config.claude.binary, environ, probe=probe_versions)
    lock = DataDirLock(config.data_dir / ".lock")
    health = Health(reactor, config.limits, config.data_dir, lock, hub, executor, claude, storage)
    authenticator = Authenticator(
        token,
        config.auth.trust_loopback,
        reactor,
        bus,
        trusted_proxies=config.auth.trusted_proxies,
    )
    domain = Domain(hub, Workspace(registry, hub, bus), executor, health.report, config.limits)
    ws_factory = PocketAgentFactory(domain, bus, authenticator, config, reactor)
    return App(
        config=config,
        bus=bus,
        registry=registry,
        hub=hub,
        workspace=domain.workspace,
        executor=executor,
        claude=claude,
        health=health,
        lock=lock,
        service=DomainService(config, reactor, lock, registry, hub, executor, health, claude),
        authenticator=authenticator,
        ws_factory=ws_factory,
        site=build_site(health.report, authenticator, ws_factory),
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

    app = build_app(
        config,
        reactor,
        tokens.current,
        setsid=find_setsid(),
        run_in_thread=thread_pool_runner(reactor),
    )
    root = PocketAgentService(app, tls_options)
    LogService(
        config.logging.level, config.logging.format, config.logging.file, extra_stream=stdout
    ).setServiceParent(root)
    app.service.setServiceParent(root)
    for original, endpoint_string, wrap_tls in plan:
        factory: IProtocolFactory = app.site
        if wrap_tls:
            factory = TLSMemoryBIOFactory(tls_options, False, app.site)
        try:
            endpoint = serverFromString(reactor, endpoint_string)
        except (ValueError, TypeError) as e:
            raise StartupError(f"listen: {original!r}: {e}") from None
        listener = ListenerService(original, endpoint, factory, tls=wrap_tls)
        listener.setServiceParent(root)
        root.listeners.append(listener)
    TokenWatch(tokens, app.hub, reactor).setServiceParent(root)
    ReadyAnnouncement(config, root.listeners, created).setServiceParent(root)
    return root
