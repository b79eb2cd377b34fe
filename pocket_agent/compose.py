"""The one place where the object graph is built, by constructor injection.

``twistd -n pocket-agent``, ``pocket-agent-server``, ``repair`` and the tests' harness all
come through here, so what runs in tests is what runs in production::

    EventBus <- Hub, EventLog, Metrics, Push  (observers, in that order)
    ProjectRegistry (store, path policy, histories)
    Workspace, Executor                 (commands; emit events on the bus)
    Health, DomainService               (reading state; lifecycle)
    Authenticator, PocketAgentFactory, Site
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.client import Agent, HTTPConnectionPool

from .config import Config, ConfigError, Overrides
from .config.changes import Reconciled, reconcile
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
from .net.pairing import page_origin
from .net.protocol import PocketAgentFactory
from .net.site import PocketAgentSite, build_metrics_site, build_site
from .net.tls import (
    ReloadableServerOptions,
    TLSError,
    ensure_dev_certificate,
    private_file_error,
)
from .net.tokenwatch import TokenWatch
from .ops.eventlog import EventLog, RawOutputLog
from .ops.health import Health
from .ops.logs import LogService
from .ops.manhole import (
    HOST_KEY_NAME,
    ManholeService,
    ensure_host_key,
    manhole_factory,
    read_authorized_keys,
    require_tcp,
)
from .ops.metrics import Metrics
from .ops.push import TIMEOUT, Push
from .ops.systemd import systemd_service
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
        build_policy(config),
        config.limits.max_projects,
        reactor,
        config.log_rotation,
        run_in_thread,
    )


def build_policy(config: Config) -> PathPolicy:
    """The path policy of ``projects.allowed_roots`` (at start-up and on SIGHUP)."""
    return PathPolicy.build(
        config.projects.allowed_roots,
        config.root,
        config.data_dir,
        protected=(
            config.tls.cert.parent,
            config.tls.key.parent,
            config.auth.token_file.parent,
        ),
    )


@attrs.define(eq=False)
class App:
    """The built object graph (the manhole will show it, tests drive it).

    Not frozen: :meth:`reconfigure` swaps the configuration in place on SIGHUP."""

    config: Config
    bus: EventBus
    raw_log: RawOutputLog  # logging.raw_output
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
    metrics: Metrics
    push: Push  # SPEC §12 ntfy notifications (idle unless configured)
    log_service: LogService | None = None  # set by build_service (tests run without one)

    def reconfigure(self, loaded: Config) -> Reconciled:
        """SIGHUP: give every component that holds the configuration the new values of
        what can change live (they read it at use time, so the next request, run or
        connection sees them); the rest keeps its running value and is reported as
        needing a restart (:mod:`pocket_agent.config.changes`)."""
        result = reconcile(self.config, loaded)
        if not result.applied:
            return result
        new = self.config = result.config
        self.executor.config = new  # limits, timeouts and claude options of the next run
        self.service.config = new  # timeouts.shutdown
        factory = self.ws_factory
        factory.config = new  # origins, message size, send buffer, idle, rate limits
        factory.domain = attrs.evolve(factory.domain, limits=new.limits)  # server_hello
        factory.setProtocolOptions(  # autobahn copies these into each new connection
            autoPingInterval=new.timeouts.ping_interval,
            autoPingTimeout=new.timeouts.pong_timeout,
            maxFramePayloadSize=new.limits.max_message_size,
        )
        self.hub.max_connections = new.limits.max_connections
        self.hub.default_approvals = new.claude.approvals
        self.registry.max_projects = new.limits.max_projects
        self.registry.policy = build_policy(new)
        self.authenticator.trust_loopback = new.auth.trust_loopback
        self.authenticator.trusted_proxies = new.auth.trusted_proxies
        self.health.limits = new.limits
        self.raw_log.enabled = new.logging.raw_output
        self.push.config = new.notifications
        if self.log_service is not None:
            self.log_service.set_level(new.logging.level)
        return result


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
    (:func:`find_setsid`); ``run_in_thread`` compresses history and builds the previews
    of permission prompts off the calling thread (:func:`thread_pool_runner`; None: inline)."""
    environ = dict(os.environ) if environ is None else environ
    bus = EventBus()
    registry = build_registry(config, reactor, run_in_thread)
    hub = Hub(registry, config.limits.max_connections)
    bus.subscribe(hub)
    bus.subscribe(EventLog())
    raw_log = RawOutputLog(config.logging.raw_output)
    bus.subscribe(raw_log)
    metrics = Metrics(lambda: hub.connection_count, lambda: len(registry))
    bus.subscribe(metrics)
    push = build_push(config, reactor, registry, metrics)
    bus.subscribe(push)
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
        run_in_thread=run_in_thread,
    )
    hub.default_approvals = config.claude.approvals
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
    domain = Domain(
        hub,
        Workspace(registry, hub, bus),
        executor,
        health.report,
        config.limits,
        executor.approvals,
    )
    ws_factory = PocketAgentFactory(domain, bus, authenticator, config, reactor)
    return App(
        config=config,
        bus=bus,
        raw_log=raw_log,
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
        site=build_site(
            health.report,
            authenticator,
            ws_factory,
            None if config.metrics.listen else metrics,
            reactor=reactor,
        ),
        metrics=metrics,
        push=push,
    )


def build_push(config: Config, reactor: Any, registry: ProjectRegistry, metrics: Metrics) -> Push:
    """SPEC §12: the ntfy observer, its links to the web app at the address ``token``
    prints, its HTTP client with a connection per notification (nothing kept open)."""

    def project_path(project_id: str) -> str | None:
        project = registry.find(project_id)
        return str(project.path) if project is not None else None

    agent = Agent(
        reactor, connectTimeout=TIMEOUT, pool=HTTPConnectionPool(reactor, persistent=False)
    )
    return Push(
        config.notifications,
        agent,
        reactor,
        project_path=project_path,
        origin=functools.cache(lambda: page_origin(config)),  # probes addresses: once
        count=metrics.notification,
    )


def metrics_listen_plan(config: Config) -> tuple[str, str, bool] | None:
    """``metrics.listen`` checked as ``listen`` entries are (plain ``tcp:`` only on
    loopback unless ``--insecure``; ``ssl:`` served with our certificate)."""
    if not config.metrics.listen:
        return None
    try:
        [entry] = listen_plan(attrs.evolve(config, listen=(config.metrics.listen,)))
    except ConfigError as e:
        raise StartupError(f"metrics.{e}") from None
    return entry


def make_private_dir(path: Path) -> None:
    """The data dir (histories, the token) is for the server's user only: created 0700,
    and one of ours found wider is narrowed."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, 0o700)


def build_service(
    config: Config,
    reactor: Any,
    stdout: Any = None,
    *,
    overrides: Overrides | None = None,
    environ: Mapping[str, str] | None = None,
) -> PocketAgentService:
    """Everything the server runs, not yet started. Raises StartupError with one line.

    ``overrides`` and ``environ``: the command line and environment ``config`` was
    loaded with, which SIGHUP loads ``config.yaml`` with again."""
    plan = listen_plan(config)
    metrics_plan = metrics_listen_plan(config)
    created = []
    try:
        make_private_dir(config.data_dir)
        change = ensure_dev_certificate(config.tls.cert, config.tls.key)
        if change is not None:
            created.append(f"{change} self-signed certificate {config.tls.cert}")
        # Secrets others can read stop start-up, before ensure_token would tighten one.
        for secret in (config.tls.key, config.auth.token_file):
            if (loose := private_file_error(secret)) is not None:
                raise StartupError(loose)
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
    root = PocketAgentService(app, tls_options, overrides=overrides, environ=environ)
    app.log_service = LogService(
        config.logging.level, config.logging.format, config.logging.file, extra_stream=stdout
    )
    app.log_service.setServiceParent(root)
    if config.notifications.enabled:  # says so at start; stops after the runs (their last
        app.push.setServiceParent(root)  # notifications); observing needs no service
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
    if metrics_plan is not None:  # its own listener, not among the WebSocket ones
        original, endpoint_string, wrap_tls = metrics_plan
        metrics_site: IProtocolFactory = build_metrics_site(app.metrics, reactor)
        if wrap_tls:
            metrics_site = TLSMemoryBIOFactory(tls_options, False, metrics_site)
        try:
            endpoint = serverFromString(reactor, endpoint_string)
        except (ValueError, TypeError) as e:
            raise StartupError(f"metrics.listen: {original!r}: {e}") from None
        ListenerService(original, endpoint, metrics_site, tls=wrap_tls).setServiceParent(root)
    TokenWatch(tokens, app.hub, reactor).setServiceParent(root)
    if config.manhole.enabled:
        build_manhole(config, app, root, reactor, created).setServiceParent(root)
    ReadyAnnouncement(config, root.listeners, created).setServiceParent(root)
    notifier = systemd_service(os.environ, reactor)
    if notifier is not None:  # last: READY=1 once all is up, STOPPING=1 first on the way down
        notifier.setServiceParent(root)
    return root


def build_manhole(
    config: Config, app: App, root: PocketAgentService, reactor: Any, created: list[str]
) -> ManholeService:
    """The SSH manhole over the live objects; its listener is not a WebSocket one."""
    listen = config.manhole.listen
    require_tcp(listen)
    read_authorized_keys(config.manhole.authorized_keys)
    host_key_path = config.data_dir / HOST_KEY_NAME
    if not host_key_path.exists():
        created.append(f"manhole host key {host_key_path}")
    namespace: dict[str, Any] = {
        "app": app,
        "config": config,
        "registry": app.registry,
        "executor": app.executor,
        "hub": app.hub,
        "bus": app.bus,
        "health": app.health,
        "reactor": reactor,
        "service": root,
    }
    host_key = ensure_host_key(host_key_path)
    factory = manhole_factory(namespace, config.manhole.authorized_keys, host_key)
    try:
        endpoint = serverFromString(reactor, listen)
    except (ValueError, TypeError) as e:
        raise StartupError(f"manhole.listen: {listen!r}: {e}") from None
    manhole = ManholeService(listen, config.manhole.authorized_keys, host_key_path)
    ListenerService(f"manhole {listen}", endpoint, factory).setServiceParent(manhole)
    return manhole
