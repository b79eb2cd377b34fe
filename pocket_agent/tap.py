"""twistd's entry point: the command-line ``Options`` and ``makeService``.

``twistd -n pocket-agent`` and ``pocket-agent-server`` both parse these options; the
object graph is built in :mod:`pocket_agent.compose`.
"""

from __future__ import annotations

import os
import sys

from twisted.internet.interfaces import IReactorCore
from twisted.python import usage

from . import __version__
from .compose import build_service
from .config import Config, ConfigError, Overrides, load_config
from .errors import StartupError
from .net.listeners import listen_plan
from .services import PocketAgentService, exit_cleanly_on_signals


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


def makeService(options: Options, reactor: IReactorCore | None = None) -> PocketAgentService:
    """twistd's entry point (through the plugin)."""
    assert options.config is not None, "parseOptions() first"
    if reactor is not None:  # a test's reactor: no process-wide signal handlers
        return build_service(
            options.config, reactor, overrides=options.overrides(), environ=os.environ
        )
    from twisted.internet import reactor as global_reactor

    # The options and environment go along, so SIGHUP loads the config the same way.
    service = build_service(
        options.config, global_reactor, overrides=options.overrides(), environ=os.environ
    )
    exit_cleanly_on_signals(global_reactor, service)
    return service
