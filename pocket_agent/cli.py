"""``pocket-agent-server``: run the server in the foreground, or an operator subcommand.

pocket-agent-server [options]          run (same options as twistd -n pocket-agent)
pocket-agent-server token [--rotate]   show the pairing URL, fingerprint and QR code
pocket-agent-server --version
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Sequence
from typing import TextIO, TypeVar

import segno
from twisted.python import usage

from . import __version__
from .auth import TokenFile, ensure_token, new_token, write_token
from .config import Config
from .storage import DataDirLock, DataDirLocked
from .tap import (
    Options,
    build_registry,
    build_service,
    endpoint_parts,
    exit_cleanly_on_signals,
    listen_plan,
)
from .tls import TLSError, certificate_fingerprint, ensure_dev_certificate

OptionsT = TypeVar("OptionsT", bound=Options)


def parse(options: OptionsT, argv: Sequence[str], command: str) -> OptionsT | None:
    """Parsed options with their config, or None after printing the one-line error."""
    try:
        options.parseOptions(list(argv))
    except usage.UsageError as e:
        print(f"{command}: {e}", file=sys.stderr)
        return None
    return options


def run_server(argv: Sequence[str]) -> int:
    options = parse(Options(), argv, "pocket-agent-server")
    if options is None or options.config is None:
        return 2
    from twisted.internet import reactor

    service = build_service(options.config, reactor, stdout=sys.stdout)
    # Listen now, before the reactor runs: a taken port or a locked data dir ends
    # the process here with one line (StartupError is a SystemExit).
    service.privilegedStartService()
    reactor.callWhenRunning(service.startService)
    reactor.callWhenRunning(exit_cleanly_on_signals, reactor, service)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


class TokenOptions(Options):
    synopsis = "token [--rotate] [--host HOST] [options]"
    optFlags = [["rotate", None, "Make a new token (connected clients must pair again)."]]
    optParameters = [["host", None, None, "Host name or address the phone should use."]]


def pairing_host() -> str:
    """A non-loopback address of this machine from the local resolver, else its name."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET)
    except OSError:
        return name
    for info in infos:
        address = str(info[4][0])
        if not address.startswith("127."):
            return address
    return name


def pairing_url(config: Config, host: str, token: str) -> str:
    port = 8443
    for _original, endpoint, tls in listen_plan(config):
        kind, args, kwargs = endpoint_parts(endpoint)
        if tls and kind == "tcp":
            port = int(kwargs.get("port") or args[0])
            break
    return f"wss://{host}:{port}/ws?token={token}"


def token_command(argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    options = parse(TokenOptions(), argv, "pocket-agent-server token")
    if options is None or options.config is None:
        return 2
    config = options.config
    try:
        ensure_dev_certificate(config.tls.cert, config.tls.key)
        if options["rotate"]:
            write_token(config.auth.token_file, new_token())
            print(f"New token written to {config.auth.token_file}", file=out)
            print("A running server closes the connections of the old one.", file=out)
        else:
            ensure_token(config.auth.token_file)
        token = TokenFile(config.auth.token_file).current()
    except (OSError, ValueError, TLSError) as e:
        print(f"pocket-agent-server token: {e}", file=sys.stderr)
        return 1
    url = pairing_url(config, options["host"] or pairing_host(), token)
    print(f"Token:       {token}", file=out)
    print(f"URL:         {url}", file=out)
    print(f"Certificate: {config.tls.cert}", file=out)
    print(f"SHA-256:     {certificate_fingerprint(config.tls.cert)}", file=out)
    print("", file=out)
    segno.make(url, error="m").terminal(out=out, compact=True)
    return 0


class RepairOptions(Options):
    synopsis = "repair [--root DIR] [--data-dir DIR] [--config PATH]"


def repair_command(argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    """SPEC §6 start-up recovery on a stopped server's data, reading every history file."""
    options = parse(RepairOptions(), argv, "pocket-agent-server repair")
    if options is None or options.config is None:
        return 2
    config = options.config
    from twisted.internet import reactor

    lock = DataDirLock(config.data_dir / ".lock")
    try:
        lock.acquire()
    except DataDirLocked as e:
        print(f"pocket-agent-server repair: {e.message}; stop the server first", file=sys.stderr)
        return 1
    try:
        registry = build_registry(config, reactor)
        registry.run_in_thread = None  # compress here and now, in this process
        report = registry.load(full_check=True)
        registry.close()
    finally:
        lock.release()
    print(f"{config.data_dir}: {report.loaded} projects", file=out)
    for item in report.quarantined:
        print(f"  quarantined {item}", file=out)
    for pid in report.rebuilt:
        print(f"  rebuilt metadata of {pid} from the project index", file=out)
    for pid in report.lost:
        print(f"  LOST {pid}: no readable metadata and no index entry", file=out)
    if report.tmp_removed:
        print(f"  removed {report.tmp_removed} stray temporary files", file=out)
    for pid, repair in registry.history_repairs.items():
        fixes = [
            f"cut {repair.torn_bytes} torn bytes" if repair.torn_bytes else "",
            f"skipped {repair.invalid_lines} invalid lines" if repair.invalid_lines else "",
            f"expired {repair.segments_expired} old files" if repair.segments_expired else "",
            f"removed {repair.tmp_removed} temporary files" if repair.tmp_removed else "",
            f"{repair.damaged_files} damaged files (copies in data/corrupted)"
            if repair.damaged_files
            else "",
        ]
        text = ", ".join(f for f in fixes if f) or "index rebuilt"
        print(f"  history of {pid}: {text}", file=out)
    for project in registry.all():
        print(f"  {project.id} {project.path} last_seq={project.last_seq}", file=out)
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
