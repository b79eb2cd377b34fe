"""``pocket-agent-server``: run the server in the foreground, or an operator subcommand.

pocket-agent-server [options]          run (same options as twistd -n pocket-agent)
pocket-agent-server token [--rotate]   show the pairing URL, fingerprint and QR code
pocket-agent-server repair             repair a stopped server's data
pocket-agent-server --version
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from pocket_agent import __version__
from pocket_agent.compose import build_service
from pocket_agent.services import exit_cleanly_on_signals
from pocket_agent.tap import Options

from .options import parse
from .repair import repair_command
from .token import token_command


def run_server(argv: Sequence[str]) -> int:
    options = parse(Options(), argv, "pocket-agent-server")
    if options is None or options.config is None:
        return 2
    from twisted.internet import reactor

    service = build_service(options.config, reactor, stdout=sys.stdout)
    exit_cleanly_on_signals(reactor, service)  # before start-up: see its docstring
    # Listen now, before the reactor runs: a taken port or a locked data dir ends
    # the process here with one line (StartupError is a SystemExit).
    service.privilegedStartService()
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "token": token_command,
    "repair": repair_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--version":
        print(f"pocket-agent-server {__version__}")
        return 0
    if args and args[0] in COMMANDS:
        return COMMANDS[args[0]](args[1:])
    return run_server(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
