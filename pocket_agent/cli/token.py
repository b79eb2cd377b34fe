"""``pocket-agent-server token``: the pairing URL, the certificate's fingerprint, a QR code.

The URL must work from the phone: an address of this machine the phone can reach (a
host name often resolves to 127.0.0.1 only), the port the server is configured to
listen on, and a certificate whose SAN holds that address (ours is renewed when the
machine's addresses change; an operator's is never touched).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from typing import TextIO

import segno
from twisted.python import usage

from pocket_agent.compose import make_private_dir
from pocket_agent.net.auth import TokenFile, ensure_token, new_token, write_token
from pocket_agent.net.pairing import (
    PairingListener,
    page_url,
    pairing_listener,
    reachable_addresses,
    route_address,
    url_host,
)
from pocket_agent.net.tls import (
    TLSError,
    certificate_fingerprint,
    dev_certificate_renewal,
    ensure_dev_certificate,
    interface_addresses,
)
from pocket_agent.tap import Options

from .options import parse
from .server import running_server

DEFAULT_PORT = 8443
__all__ = [  # the pairing helpers live in net.pairing (notifications use them too)
    "PairingListener",
    "pairing_listener",
    "pairing_url",
    "reachable_addresses",
    "route_address",
    "token_command",
    "url_host",
    "write_qr",
]


class TokenOptions(Options):
    synopsis = "Usage: pocket-agent-server token [--rotate] [--host HOST] [--port PORT] [options]"
    optFlags = [["rotate", None, "Make a new token (connected clients must pair again)."]]
    optParameters = [["host", None, None, "Host name or address the phone should use."]]

    def __init__(self) -> None:
        super().__init__()
        self["port"] = None

    def opt_port(self, value: str) -> None:
        """Port the phone should use (default: the configured listener's)."""
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise usage.UsageError(f"--port: {value!r} is not a port number")
        self["port"] = int(value)


def pairing_url(host: str, port: int, tls: bool, token: str) -> str:
    return f"{'wss' if tls else 'ws'}://{url_host(host)}:{port}/ws?token={token}"


def write_qr(url: str, out: TextIO) -> None:
    """Dark modules on a light background, whatever the terminal's colours.

    segno's compact writer draws the *light* modules with the foreground colour, which
    a light terminal shows inverted (many scanners then fail). Two modules per
    character cell (half blocks), in explicit black on white on a terminal; as plain
    glyphs for dark modules (right on paper or a light background) when piped.
    """
    qr = segno.make(url, error="m")
    rows = [list(row) for row in qr.matrix_iter(border=4)]  # 1 = dark
    ansi = bool(getattr(out, "isatty", lambda: False)())
    glyphs = {(1, 1): "\u2588", (1, 0): "\u2580", (0, 1): "\u2584", (0, 0): " "}
    for top, bottom in zip(rows[::2], [*rows[1::2], [0] * len(rows[0])], strict=False):
        line = "".join(glyphs[pair] for pair in zip(top, bottom, strict=True))
        out.write(f"\033[30;107m{line}\033[0m\n" if ansi else f"{line}\n")


def token_command(argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    options = parse(TokenOptions(), argv, "pocket-agent-server token")
    if options is None or options.config is None:
        return 2
    config = options.config
    server = running_server(config.data_dir)
    notes: list[str] = []
    try:
        make_private_dir(config.data_dir)
        if server is None:
            change = ensure_dev_certificate(config.tls.cert, config.tls.key)
            if change == "renewed":
                notes.append(
                    f"Renewed the self-signed certificate {config.tls.cert} for this machine's "
                    "addresses: a phone that pinned the old one must pair again."
                )
        elif (why := dev_certificate_renewal(config.tls.cert, config.tls.key)) is not None:
            notes.append(
                f"The server's self-signed certificate should be renewed ({why}); "
                f"restart the server (pid {server.pid}) and it is."
            )
        if options["rotate"]:
            write_token(config.auth.token_file, new_token())
            print(f"New token written to {config.auth.token_file}", file=out)
            print("A running server closes the connections of the old one.", file=out)
        else:
            ensure_token(config.auth.token_file)
        token = TokenFile(config.auth.token_file).current()
        fingerprint = certificate_fingerprint(config.tls.cert)
    except (OSError, ValueError, TLSError) as e:
        print(f"pocket-agent-server token: {e}", file=sys.stderr)
        return 1

    listener = pairing_listener(config)
    port: int | None = options["port"] or listener.port
    if port is None:
        port = DEFAULT_PORT
        notes.append(
            f"The port of {listener.description!r} is not in the configuration: "
            f"{DEFAULT_PORT} is a guess; pass --port."
        )
    # Only the WebSocket listeners count: not the manhole's or a metrics port, and not
    # when the operator named the port (a reverse proxy on 443 forwards elsewhere).
    side_ports = {_port_of(config.manhole.listen), _port_of(config.metrics.listen)}
    served = sorted(set(server.ports) - side_ports) if server is not None else []
    if server is not None and served and port not in served and not options["port"]:
        listening = ", ".join(str(p) for p in served)
        notes.append(f"The running server (pid {server.pid}) listens on {listening}, not {port}.")
    addresses = reachable_addresses(interface_addresses(), route_address())
    if options["host"]:
        host = options["host"]
    elif listener.interface and listener.interface not in ("0.0.0.0", "::"):
        host = listener.interface
    elif addresses:
        host = str(addresses[0])
    else:
        host = socket.gethostname()
        notes.append(f"No address but loopback found: {host} may not be reachable from a phone.")
    if listener.loopback_only and not options["host"]:
        notes.append(f"{listener.description!r} is loopback only: a phone cannot reach it.")
    others = [url_host(str(ip)) for ip in addresses if str(ip) != host]

    url = pairing_url(host, port, listener.tls, token)
    page = page_url(host, port, listener.tls, f"token={token}")  # SPEC §11: what the QR opens
    print(f"Web app:     {page}", file=out)
    print(f"Token:       {token}", file=out)
    print(f"URL:         {url} (for native apps)", file=out)
    if others:
        print(f"Also here:   {', '.join(others)} (--host picks another)", file=out)
    print(f"Certificate: {config.tls.cert}", file=out)
    print(f"SHA-256:     {fingerprint}", file=out)
    for note in notes:
        print(f"Note:        {note}", file=out)
    print("", file=out)
    print("Scan this with the phone's camera: it opens the web app, already paired.", file=out)
    write_qr(page, out)
    return 0


def _port_of(description: str | None) -> int | None:
    """The port of a ``tcp:PORT:...``/``ssl:PORT`` endpoint string, else None."""
    if not description:
        return None
    for part in description.split(":")[1:]:
        if part.isdigit():
            return int(part)
        if part.startswith("port="):
            return int(part[5:]) if part[5:].isdigit() else None
    return None
