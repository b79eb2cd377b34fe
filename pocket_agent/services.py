"""The services the daemon runs, and how it starts and stops as a whole::

PocketAgentService    starts children in order, stops them one by one in reverse
  LogService          JSON/text log observer (first up, last down)
  DomainService       data-dir lock, projects loaded, graceful stop of connections/runs
  ListenerService*    one per ``listen`` endpoint, all serving the same Site
  TokenWatch          closes the old token's connections after ``token --rotate``
  ReadyAnnouncement   logs where everything is once the ports are open
"""

from __future__ import annotations

import os
import signal
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pocket_agent import __version__
from pocket_agent.config import Config, ConfigError, Overrides, load_config
from pocket_agent.core.errors import ClaudeNotFound
from pocket_agent.core.hub import Departure, Hub
from pocket_agent.core.registry import ProjectRegistry
from pocket_agent.errors import StartupError
from pocket_agent.net.listeners import ListenerService, describe_address, listen_plan
from pocket_agent.net.tls import ReloadableServerOptions, TLSError
from pocket_agent.ops.health import Health
from pocket_agent.ops.logs import LogService
from pocket_agent.runs.command import find_binary
from pocket_agent.runs.crashed import close_crashed_runs
from pocket_agent.runs.executor import Executor
from pocket_agent.runs.probe import ClaudeProbe
from pocket_agent.storage import DataDirLock


class DomainService(Service):
    """Lock and load before any listener opens; on the way down, SPEC §9's shutdown."""

    log = Logger()

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        lock: DataDirLock,
        registry: ProjectRegistry,
        hub: Hub,
        executor: Executor,
        health: Health,
        claude: ClaudeProbe,
    ) -> None:
        self.config = config
        self.claude = claude
        self.clock = clock
        self.lock = lock
        self.registry = registry
        self.hub = hub
        self.executor = executor
        self.health = health

    def privilegedStartService(self) -> None:
        """Lock and load before any listener opens, so no client sees a half-loaded server."""
        self.lock.acquire()
        if self.lock.stale_pid:
            self.log.warn(
                "Took over a stale lock left by pid {pid}",
                pid=self.lock.stale_pid,
                lock=str(self.lock.path),
            )
        try:
            report = self.registry.load()
        except BaseException:
            self.lock.release()
            raise
        for item in report.quarantined:
            self.log.error("Quarantined unreadable file {item}", item=item)
        for pid in report.rebuilt:
            self.log.warn("Rebuilt metadata from the project index", project_id=pid)
        for pid in report.lost:
            self.log.error("Project lost: no readable metadata and no index entry", project_id=pid)
        for pid, repair in self.registry.history_repairs.items():
            self.log.warn(
                "Repaired history",
                project_id=pid,
                torn_bytes=repair.torn_bytes,
                invalid_lines=repair.invalid_lines,
                index_rebuilt=repair.index_rebuilt,
                expired_files=repair.segments_expired,
                tmp_removed=repair.tmp_removed,
            )
        self.log.info(
            "Loaded {count} projects",
            count=report.loaded,
            data_dir=str(self.config.data_dir),
            quarantined=len(report.quarantined),
            rebuilt=len(report.rebuilt),
            tmp_removed=report.tmp_removed,
        )
        try:
            self._close_crashed_runs()
        except BaseException:
            self.lock.release()
            raise
        self._warn_without_claude()
        self.health.mark_started()
        self.hub.accepting = True
        super().privilegedStartService()

    def _warn_without_claude(self) -> None:
        """Say at start-up, not only in ``health``, that every run would fail."""
        try:
            find_binary(self.claude.binary, self.claude.environ.get("PATH"))
        except ClaudeNotFound as e:
            self.log.warn(
                "{reason}: every execute fails with CLAUDE_NOT_FOUND until it is installed"
                " or claude.binary (--claude, PA_CLAUDE_BINARY) names it",
                reason=e.message,
                binary=self.claude.binary,
            )

    def _close_crashed_runs(self) -> None:
        """Runs that a crash cut off: end what they left running and close their
        history, before any listener opens (see :mod:`pocket_agent.runs.liverun`)."""
        for crashed in close_crashed_runs(self.executor):
            swept = crashed.swept
            self.log.warn(
                "Closed run {run_id} cut off by a crash of the server:"
                " {killed} processes left, stopped with {signals}",
                project_id=crashed.project_id,
                run_id=crashed.run_id,
                killed=len(swept.found),
                signals=", ".join(swept.signals) or "nothing",
                survivors=list(swept.survivors),
                recorded=crashed.recorded,
            )

    def stopService(self) -> Deferred[Any]:
        """SPEC §9: close every connection with 1001 and stop every run with the kill
        escalation (recorded as killed, reason shutdown), all within ``timeouts.shutdown``;
        then fsync the histories and release the lock."""
        super().stopService()
        self.hub.accepting = False
        waits = [self.hub.drained(), self.executor.stop_all(), self.claude.stop()]
        self.hub.close_all(Departure.SHUTDOWN)
        limit = self.config.timeouts.shutdown
        # SIGKILL what is left a little before the limit, give up waiting at the limit.
        timers = [
            self.clock.callLater(limit * 0.8, self.executor.force_kill_all),
            self.clock.callLater(limit, self._out_of_time),
        ]
        done: Deferred[Any] = DeferredList(waits)

        def finish(result: object) -> None:
            if not self.executor.storage.ok:
                self.executor.storage.retry()  # a run's end waiting for space: one last try
            self.executor.storage.stop()
            for timer in timers:
                if timer.active():
                    timer.cancel()
            self.registry.close()
            self.lock.release()

        done.addBoth(finish)
        return done

    def _out_of_time(self) -> None:
        self.executor.force_finish_all()
        self.hub.abort_all()


class PocketAgentService(MultiService):
    """Stops its children one after another, newest first, each finishing before the next:
    stop listening, then close connections, then release the lock, and the log last,
    so every step of the shutdown is still logged. (MultiService stops them all at once.)
    """

    log = Logger()

    def __init__(
        self,
        app: Any = None,
        tls_options: ReloadableServerOptions | None = None,
        *,
        overrides: Overrides | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``app``: the object graph (``compose.App``), kept for the manhole and tests.
        ``overrides``/``environ``: what the configuration was loaded with (None: no
        options, the process's environment now), kept so SIGHUP loads it the same way."""
        super().__init__()
        self.app = app
        self.domain: DomainService | None = app.service if app is not None else None
        self.tls_options = tls_options
        self.listeners: list[ListenerService] = []
        self.environ = dict(os.environ if environ is None else environ)
        self.overrides = overrides or Overrides()
        if app is not None:
            config: Config = app.config
            # The root as resolved at start-up: a relative --root (and --config, which
            # is relative to it) must not move with the working directory.
            self.overrides = attrs.evolve(self.overrides, root=str(config.root))

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except BaseException as e:
            if self.domain is not None:
                self.domain.lock.release()  # a failed start leaves no stale lock behind
            # The one line goes to stderr too; server.log must not just stop mid-start.
            reason = e.message if isinstance(e, StartupError) else repr(e)
            self.log.error("Start-up failed: {reason}", reason=reason)
            for child in self:
                if isinstance(child, LogService):
                    child.detach()
            raise

    def reload(self) -> None:
        """SIGHUP: apply what changed in the configuration, and swap in a renewed TLS
        certificate, without dropping anyone. A line per changed key (and per problem),
        then always one closing line, so every SIGHUP shows in the log."""
        configuration = self.reload_config()
        certificate = self.reload_certificate()
        self.log.info(
            "SIGHUP: TLS certificate {certificate}, {configuration}",
            configuration=configuration,
            certificate=certificate,
            fingerprint=self.tls_options.fingerprint if self.tls_options else None,
        )

    def reload_config(self) -> str:
        """Load the configuration as at start-up and apply what can change live; a bad
        one is logged like a start-up error and the running one kept."""
        if self.app is None:
            return "no configuration to reload"
        try:
            loaded = load_config(self.overrides, self.environ)
            listen_plan(loaded)
        except ConfigError as e:
            self.log.error("SIGHUP: keeping the running configuration: {error}", error=str(e))
            return "running configuration kept"
        result = self.app.reconfigure(loaded)
        for change in result.applied:
            self.log.info(
                "SIGHUP: {key} changed: {old} → {new}",
                key=change.key,
                old=change.old_shown,
                new=change.new_shown,
            )
        for change in result.need_restart:
            self.log.warn(
                "SIGHUP: {key} changed ({old} → {new}) but needs a restart; still {old}",
                key=change.key,
                old=change.old_shown,
                new=change.new_shown,
            )
        if not result.changes:
            return "configuration unchanged"
        return (
            f"configuration reloaded ({len(result.applied)} applied,"
            f" {len(result.need_restart)} waiting for a restart)"
        )

    def reload_certificate(self) -> str:
        if self.tls_options is None:
            return "not used"
        try:
            changed = self.tls_options.reload()
        except TLSError as e:
            self.log.error("SIGHUP: keeping the old certificate: {error}", error=str(e))
            return "kept"
        return "reloaded" if changed else "unchanged"

    @defer.inlineCallbacks
    def stopService(self) -> Generator[defer.Deferred[object], object, None]:
        Service.stopService(self)
        logged = False
        for service in reversed(list(self)):
            if isinstance(service, LogService):  # the last line it writes
                logged = self._log_stopped()
            yield defer.maybeDeferred(service.stopService)
        if not logged:
            self._log_stopped()

    def _log_stopped(self) -> bool:
        self.log.info("Pocket Agent Server {version} stopped", version=__version__)
        return True


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


def exit_cleanly_on_signals(reactor: Any, service: PocketAgentService | None = None) -> None:
    """SIGTERM/SIGINT stop the reactor and the process then exits 0 (SPEC §9); SIGHUP
    reloads.

    Twisted's own handlers remember the signal and twistd re-raises it at exit, so a
    graceful shutdown would end as "killed by SIGTERM" (status 143); they are installed
    when the reactor starts, so ours go in at once (a SIGTERM during start-up must not
    kill the process with the lock held) and again right after Twisted's. Only the
    real entry points call this, never tests.
    """
    relay = SignalRelay(reactor, service)
    relay.install()
    # Twisted installs its handlers in its own "during startup" trigger, added when the
    # reactor was made: ours, added after it, run right after it.
    reactor.addSystemEventTrigger("during", "startup", relay.install)


class SignalRelay:
    """The signal handler only hands the signal to the reactor thread.

    A handler runs between any two bytecodes of the main thread, possibly in the middle
    of a log write: logging (or anything else that takes a lock or writes a buffered
    file) from inside it can fail with a reentrant-call error, and the reactor then
    never stops. ``callFromThread`` only appends to a queue and writes a byte to the
    waker pipe, which is safe there; the logging and the stopping happen on the reactor.
    """

    log = Logger()

    def __init__(self, reactor: Any, service: PocketAgentService | None = None) -> None:
        self.reactor = reactor
        self.service = service
        self.stopping = False

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.handler)

    def handler(self, signum: int, frame: object) -> None:
        # Before the reactor runs this only queues: the call runs on its first turn.
        self.reactor.callFromThread(self.received, signum)

    def received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            if self.service is not None:
                self.service.reload()
            return
        if self.stopping:
            self.log.info("Received {signal} again, already shutting down", signal=name)
            return
        self.stopping = True
        self.log.info("Received {signal}, shutting down", signal=name)
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass  # already on its way down (a failed start-up stops it too)
