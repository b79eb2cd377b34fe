"""Where the server listens: endpoint strings checked, opened loudly, described plainly."""

from __future__ import annotations

import re
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from pocket_agent.config import Config, ConfigError
from pocket_agent.errors import StartupError

_SPLIT = re.compile(r"(?<!\\):")
LOOPBACK_INTERFACES = {"127.0.0.1", "::1", "localhost"}
SUPPORTED_ENDPOINTS = ("ssl", "tcp", "tcp6", "unix", "systemd")


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
