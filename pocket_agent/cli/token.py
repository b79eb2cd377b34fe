"""``pocket-agent-server token``: the pairing URL, the certificate's fingerprint, a QR code."""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from typing import TextIO

import segno

from pocket_agent.config import Config
from pocket_agent.net.auth import TokenFile, ensure_token, new_token, write_token
from pocket_agent.net.listeners import endpoint_parts, listen_plan
from pocket_agent.net.tls import TLSError, certificate_fingerprint, ensure_dev_certificate
from pocket_agent.tap import Options

from .options import parse


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
