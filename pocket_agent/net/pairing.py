"""Where a phone finds this server: the listener to dial, an address it can reach, the URLs.

Shared by ``pocket-agent-server token`` (the pairing URLs and QR) and the ntfy
notifications of SPEC §12 (their ``Click`` link opens the web app at the same address).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import attrs

from pocket_agent.config import Config

from .listeners import LOOPBACK_INTERFACES, endpoint_parts
from .tls import IPAddress, interface_addresses

#: Where a default route would send a datagram (documentation ranges: nothing is sent).
_ROUTE_PROBES = (("198.51.100.1", socket.AF_INET), ("2001:db8::1", socket.AF_INET6))


@attrs.frozen
class PairingListener:
    """The listener a phone should dial, from the configured ``listen`` entries."""

    port: int | None  # None: not known from the configuration (systemd socket, port 0)
    tls: bool
    interface: str  # "" = every interface
    description: str

    @property
    def loopback_only(self) -> bool:
        return self.interface in LOOPBACK_INTERFACES

    @property
    def any_interface(self) -> bool:
        return self.interface in ("", "0.0.0.0", "::")


def pairing_listener(config: Config) -> PairingListener:
    """A TLS listener a phone can reach if there is one, else the best of the rest."""
    found: list[PairingListener] = []
    for description in config.listen:
        kind, args, kwargs = endpoint_parts(description)
        if kind not in ("ssl", "tcp", "tcp6", "systemd"):
            continue  # unix: not for phones
        port_text = "" if kind == "systemd" else kwargs.get("port") or (args[0] if args else "")
        port = int(port_text) if port_text.isdigit() and int(port_text) else None
        interface = kwargs.get("interface", "")
        if kind in ("tcp", "tcp6") and not interface and len(args) > 1:
            interface = args[1]
        tls = kind in ("ssl", "systemd")
        found.append(PairingListener(port, tls, interface.replace("\\:", ":"), description))
    if not found:
        return PairingListener(None, True, "", "")
    return min(found, key=lambda item: (not item.tls, item.loopback_only, item.port is None))


def route_address() -> IPAddress | None:
    """The source address of this machine's default route (a connected UDP socket sends
    nothing), so the usual LAN address comes first."""
    for target, family in _ROUTE_PROBES:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 9))
                address = ipaddress.ip_address(probe.getsockname()[0].split("%", 1)[0])
        except (OSError, ValueError):
            continue
        if not address.is_loopback:
            return address
    return None


def reachable_addresses(
    addresses: Iterable[IPAddress], preferred: IPAddress | None = None
) -> list[IPAddress]:
    """Addresses a phone may reach, best first: the default route's, then IPv4, then IPv6."""
    ordered = sorted(set(addresses), key=lambda ip: (ip != preferred, ip.version, ip.packed))
    return [ip for ip in ordered if not (ip.is_loopback or ip.is_link_local)]


def url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def page_url(host: str, port: int, tls: bool, fragment: str = "") -> str:
    """The web app's address (SPEC §11), e.g. ``https://192.0.2.2:8443/#token=...``."""
    url = f"{'https' if tls else 'http'}://{url_host(host)}:{port}/"
    return f"{url}#{fragment}" if fragment else url


def page_origin(config: Config) -> str | None:
    """``https://host:port`` of the web app as ``token`` would print it, for links in
    notifications; None when the port is not in the configuration (a systemd socket)."""
    listener = pairing_listener(config)
    if listener.port is None:
        return None
    if not listener.any_interface:
        host = listener.interface
    else:
        addresses = reachable_addresses(interface_addresses(), route_address())
        host = str(addresses[0]) if addresses else socket.gethostname()
    return page_url(host, listener.port, listener.tls).rstrip("/")
