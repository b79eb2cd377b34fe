"""systemd's ``Type=notify`` protocol (sd_notify(3)), so ``systemctl start`` returns only
once the server really serves, and the watchdog restarts a server whose reactor hangs.

The protocol is one ``KEY=VALUE`` datagram on the unix socket named by ``$NOTIFY_SOCKET``
(a leading ``@`` names an abstract socket). That is a single ``sendto``, so it is written
on the standard library: the PyPI ``sdnotify`` package (no release since 2017, untyped)
would add a dependency for the same call and swallows every send error silently.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger


def socket_address(value: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as ``sendto`` wants it: ``@name`` is the abstract ``\\0name``."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled
    advises), or None when systemd asks for none or asks another process (``$WATCHDOG_PID``)."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    watched = environ.get("WATCHDOG_PID", "")
    if watched and watched != str(pid):
        return None
    return int(usec) / 2_000_000


class Notifier:
    """Sends sd_notify datagrams; a failed send is logged, never raised (a notification
    that cannot be delivered must not take the server down)."""

    log = Logger()

    def __init__(self, address: str | bytes) -> None:
        self.address = address

    def send(self, *fields: str) -> bool:
        # A socket per message (a few, and one per watchdog period): no descriptor is held
        # open for the server's lifetime, and none leaks into claude's children.
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as e:
            self.log.warn("Could not notify systemd: {error}", error=str(e), fields=list(fields))
            return False
        return True


class SystemdNotifyService(Service):
    """Placed last in the service tree: it starts after every listener is up and the
    ready line is logged (READY=1), and is the first to stop (STOPPING=1)."""

    log = Logger()

    def __init__(
        self, notifier: Notifier, clock: IReactorTime, watchdog: float | None = None
    ) -> None:
        self.notifier = notifier
        self.clock = clock
        self.watchdog = watchdog
        self.pinger: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self.notifier.send("READY=1", "STATUS=Serving", f"MAINPID={os.getpid()}")
        if self.watchdog is not None:
            self.pinger = LoopingCall(self.notifier.send, "WATCHDOG=1")
            self.pinger.clock = self.clock
            # The first ping goes with READY: systemd's watchdog runs from exec, so a
            # long start-up must not leave it a whole period short.
            self.pinger.start(self.watchdog, now=True)
        self.log.info(
            "Notified systemd: ready", watchdog_s=self.watchdog, socket=repr(self.notifier.address)
        )

    def stopService(self) -> None:
        super().stopService()
        self.notifier.send("STOPPING=1", "STATUS=Shutting down")
        if self.pinger is not None and self.pinger.running:
            self.pinger.stop()
        self.pinger = None


def systemd_service(
    environ: Mapping[str, str], clock: IReactorTime, pid: int | None = None
) -> SystemdNotifyService | None:
    """The notifier when systemd started us with ``Type=notify``, else None (nothing to do)."""
    value = environ.get("NOTIFY_SOCKET", "")
    if not value:
        return None
    interval = watchdog_interval(environ, os.getpid() if pid is None else pid)
    return SystemdNotifyService(Notifier(socket_address(value)), clock, interval)
