"""``pocket-agent-server``: run the server in the foreground, or an operator subcommand.

pocket-agent-server [options]          run (same options as twistd -n pocket-agent)
pocket-agent-server token [--rotate]   show the pairing URL, fingerprint and QR code
pocket-agent-server check [--json]     diagnose a server and its files (exit 0 / 1)
pocket-agent-server repair             repair a stopped server's data
pocket-agent-server client ...         talk to a server from the command line
pocket-agent-server --version
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import cast

import attrs
from twisted.python import usage

from pocket_agent import __version__
from pocket_agent.tap import Options

from .options import parse

Command = Callable[[Sequence[str]], int]


@attrs.frozen
class Subcommand:
    """A subcommand, imported only when it runs (``client`` pulls in rich, for one)."""

    name: str
    target: str  # "module:function"; the function takes argv and returns the exit status
    help: str

    def load(self) -> Command:
        module, _, function = self.target.partition(":")
        return cast(Command, getattr(importlib.import_module(module), function))


#: Every subcommand: the dispatcher and ``--help`` both read this table.
SUBCOMMANDS = (
    Subcommand("token", "pocket_agent.cli.token:token_command", "Show the pairing URL, "
               "the certificate's fingerprint and a QR code for the phone (--rotate: new token)."),
    Subcommand("check", "pocket_agent.cli.check:check_command",
               "Diagnose the server and its files; exit status 0 when every check passes."),
    Subcommand("repair", "pocket_agent.cli.repair:repair_command",
               "Repair a stopped server's data (SPEC section 6)."),
    Subcommand("client", "pocket_agent.cli.client:client_command",
               "A command-line client: health, list, create, join, exec, kill, history."),
)  # fmt: skip
COMMANDS = {command.name: command for command in SUBCOMMANDS}


class _CommandFirst(usage.Options):
    """Stands in for a subcommand named after the server's options: it must come first."""

    def parseArgs(self, *args: str) -> None:
        pass


class ServerOptions(Options):
    """The server's options, and in ``--help`` the subcommands too."""

    synopsis = (
        "Usage: pocket-agent-server [options]\n"
        "       pocket-agent-server <command> [options]   (<command> --help for its own)"
    )
    subCommands = [(c.name, None, _CommandFirst, c.help) for c in SUBCOMMANDS]

    def postOptions(self) -> None:
        if self.subCommand is not None:
            raise usage.UsageError(
                f"put the command first: pocket-agent-server {self.subCommand} [options]"
            )
        super().postOptions()


def run_server(argv: Sequence[str]) -> int:
    options = parse(ServerOptions(), argv, "pocket-agent-server")
    if options is None or options.config is None:
        return 2
    from twisted.internet import reactor

    from pocket_agent.compose import build_service
    from pocket_agent.services import exit_cleanly_on_signals

    # The options and environment go along, so SIGHUP loads the config the same way.
    service = build_service(
        options.config,
        reactor,
        stdout=sys.stdout,
        overrides=options.overrides(),
        environ=dict(os.environ),
    )
    exit_cleanly_on_signals(reactor, service)  # before start-up: see its docstring
    # Listen now, before the reactor runs: a taken port or a locked data dir ends
    # the process here with one line (StartupError is a SystemExit).
    service.privilegedStartService()
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


def dispatch(args: list[str]) -> int:
    if args and args[0] == "--version":
        print(f"pocket-agent-server {__version__}")
        return 0
    if args and args[0] in COMMANDS:
        return COMMANDS[args[0]].load()(args[1:])
    return run_server(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        status = dispatch(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # `token | head`: the reader left. Point stdout at /dev/null so the interpreter's
        # own flush at exit does not raise again, and end quietly (as Python's docs advise).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
