"""The manhole: an SSH Python shell into the running server, for the operator only.

Built from ``twisted.conch``'s pieces the way ``manhole_tap`` builds its own, but with
public-key auth (``manhole_tap`` only knows a plain-text password file) and never
telnet: ``TerminalRealm`` runs a ``ColoredManhole`` over ``namespace`` for every session,
``SSHPublicKeyChecker`` accepts the keys in ``manhole.authorized_keys`` (read at every
login, so adding a key needs no restart), and the host key is made once, mode 0600.
It listens on loopback only (:meth:`ManholeService.privilegedStartService`): reach it
from elsewhere through an SSH tunnel.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application.service import MultiService
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.interfaces import IConchUser
from twisted.conch.manhole_ssh import ConchFactory, TerminalRealm, TerminalSession
from twisted.conch.manhole_tap import chainedProtocolFactory
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pocket_agent.errors import StartupError

HOST_KEY_NAME = "manhole_host_key"
KINDS = ("tcp", "tcp6")


@implementer(IAuthorizedKeysDB)
class AuthorizedKeysFile:
    """Every key in one ``authorized_keys`` file, whatever user name the client gives:
    the key is the credential (``UNIXAuthorizedKeysFiles`` would look in that user's home)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def getAuthorizedKeys(self, avatarId: bytes) -> Iterator[Key]:
        try:
            with self.path.open("rb") as f:
                return iter(list(readAuthorizedKeyFile(f)))
        except OSError:
            return iter(())


def read_authorized_keys(path: Path) -> list[Key]:
    """The keys in ``path``, or StartupError: an enabled manhole nobody can log in to is
    a mistake the operator wants to hear about at once."""
    try:
        with path.open("rb") as f:
            found = list(readAuthorizedKeyFile(f))
    except OSError as e:
        raise StartupError(
            f"manhole.authorized_keys: cannot read {path}: {e.strerror or e}"
        ) from None
    if not found:
        raise StartupError(f"manhole.authorized_keys: {path} holds no public key")
    return found


def ensure_host_key(path: Path) -> Key:
    """The manhole's host key, made on first start (ed25519: instant, unlike the 4096-bit
    RSA key ``manhole_tap`` makes) and kept, so clients' known_hosts stays valid."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    except OSError as e:
        raise StartupError(f"manhole: cannot create host key {path}: {e.strerror}") from None
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(Key(ed25519.Ed25519PrivateKey.generate()).toString("OPENSSH"))
            f.flush()
            os.fsync(f.fileno())
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise StartupError(
                f"manhole: host key {path} is readable by others (mode {mode:o});"
                f" run: chmod 600 {path}"
            )
        key: Key = Key.fromFile(str(path))
        return key
    except (OSError, BadKeyError, ValueError) as e:
        raise StartupError(f"manhole: cannot read host key {path}: {e}") from None


class ResizableSession(TerminalSession):
    """conch's session raises on a window change (every terminal resize) and on EOF;
    this one resizes the shell and ignores EOF."""

    terminal: Any = None
    width, height = 80, 24  # `ssh -T` asks for no pty, so getPty never sets them

    def openShell(self, proto: Any) -> None:
        self.terminal = self.transportFactory(
            proto,
            self.chainedProtocolFactory(),
            IConchUser(self.original),
            self.width,
            self.height,
        )

    def windowChanged(self, newWindowSize: Any) -> None:
        self.height, self.width = newWindowSize[:2]
        if self.terminal is not None:
            self.terminal.chainedProtocol.terminalProtocol.terminalSize(self.width, self.height)

    def eofReceived(self) -> None:
        """``ssh -T`` with stdin ended: the session is over (else it would hang)."""
        if self.terminal is not None:
            self.terminal.proto.loseConnection()

    def execCommand(self, proto: Any, cmd: bytes) -> None:
        """``ssh host 'expr'``: say how to use it instead of a traceback in the log."""
        proto.write(b"the manhole is an interactive Python shell: connect without a command\r\n")
        proto.loseConnection()


class LoggingKeyChecker(SSHPublicKeyChecker):
    """A refused key is a security event: one warning line, like a refused token."""

    _log = Logger()

    def requestAvatarId(self, credentials: Any) -> Any:
        d = super().requestAvatarId(credentials)

        def refused(failure: Failure) -> Failure:
            if failure.check(UnauthorizedLogin):  # not in authorized_keys, or a bad signature
                self._log.warn(
                    "Manhole key refused",
                    user=getattr(credentials, "username", b"").decode("utf-8", "replace"),
                )
            return failure

        return d.addErrback(refused)


def manhole_factory(namespace: dict[str, Any], authorized_keys: Path, host_key: Key) -> Any:
    """An SSH factory whose every session is a Python shell over ``namespace``."""
    realm = TerminalRealm()
    realm.sessionFactory = ResizableSession
    # conch types this as the class it calls; manhole_tap's callable is what it documents.
    realm.chainedProtocolFactory = chainedProtocolFactory(namespace)  # type: ignore[assignment]
    checker = LoggingKeyChecker(AuthorizedKeysFile(authorized_keys))
    factory = ConchFactory(Portal(cast(IRealm, realm), [checker]))
    factory.noisy = False
    key_type = host_key.sshType()
    # conch's annotation says bytes, its transport uses Key objects (as manhole_tap sets).
    factory.publicKeys = {key_type: host_key.public()}
    factory.privateKeys = {key_type: host_key}  # type: ignore[dict-item]
    return factory


def require_tcp(description: str) -> None:
    """Only ``tcp:``/``tcp6:`` (checked on loopback once bound): no TLS, unix or systemd."""
    kind = description.partition(":")[0]
    if kind not in KINDS:
        raise StartupError(
            f"manhole.listen: {description!r}: use tcp: on 127.0.0.1 or ::1"
            " (e.g. tcp:2222:interface=127.0.0.1)"
        )


def is_loopback(address: object) -> bool:
    if not isinstance(address, IPv4Address | IPv6Address):
        return False
    host = address.host.partition("%")[0]
    return ipaddress.ip_address(host).is_loopback


class ManholeService(MultiService):
    """Holds the manhole's listener (a child) and refuses to start unless it is bound to
    loopback: the check is on the address actually bound, so ``interface=localhost`` or a
    missing ``interface`` (all addresses) are judged by what they really mean. Start-up
    happens before the reactor runs, so nobody can connect before the port is closed again.
    """

    log = Logger()

    def __init__(self, description: str, authorized_keys: Path, host_key: Path) -> None:
        super().__init__()
        self.description = description
        self.authorized_keys = authorized_keys
        self.host_key = host_key
        self.address: Any = None
        self.closing: Deferred[Any] | None = None  # a refused port, being closed

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        ports = [p for p in (getattr(child, "port", None) for child in self) if p is not None]
        for port in ports:
            address = port.getHost()
            if not is_loopback(address):
                self.closing = DeferredList([maybeDeferred(p.stopListening) for p in ports])
                raise StartupError(
                    f"manhole.listen: {self.description!r} is not on loopback"
                    f" ({getattr(address, 'host', address)}); the manhole listens only on"
                    " 127.0.0.1 or ::1 (reach it through an SSH tunnel)"
                )
            self.address = address

    def startService(self) -> None:
        super().startService()
        if self.address is not None:
            host = self.address.host
            self.log.info(
                "Manhole listening on {host}:{port}: ssh -p {port} admin@{host}",
                host=host,
                port=self.address.port,
                authorized_keys=str(self.authorized_keys),
                host_key=str(self.host_key),
            )
