"""TLS material for the daemon: a development certificate, server options, SIGHUP reload.

The daemon serves ``wss://`` out of the box, so a first start with no certificate
creates a self-signed one (SAN for the host's names and addresses, within Apple's
825-day limit) instead of refusing to start. That certificate is renewed when the
machine's addresses change (a phone checks the address it dialled against the SAN)
or it nears its end. An operator's own files are never touched: only a certificate
this module made (self-signed, with our organization name) is ever rewritten.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import psutil
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion
from zope.interface import implementer

from pocket_agent.storage import atomic_write_bytes

if TYPE_CHECKING:
    from twisted.protocols.tls import TLSMemoryBIOProtocol

__all__ = [
    "DEV_CERT_LIFETIME",
    "DEV_CERT_RENEW_BEFORE",
    "IPAddress",
    "ReloadableServerOptions",
    "TLSError",
    "certificate_expiry",
    "certificate_fingerprint",
    "default_san",
    "dev_certificate_renewal",
    "ensure_dev_certificate",
    "interface_addresses",
    "is_dev_certificate",
    "load_server_options",
    "private_file_error",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Apple (iOS 13+ / macOS 10.15+) rejects locally trusted server certs valid for longer.
DEV_CERT_LIFETIME = timedelta(days=825)
#: Our own certificate is renewed when it has less than this left (``check`` warns too).
DEV_CERT_RENEW_BEFORE = timedelta(days=30)
_BACKDATE = timedelta(hours=1)  # tolerate a phone whose clock is a little behind
_CN_MAX = 64  # X.520 ub-common-name; cryptography refuses longer common names
#: What marks a certificate as ours (with issuer == subject), so we may renew it.
DEV_CERT_ORG = "Pocket Agent Server development certificate"
DevCertChange = Literal["created", "renewed"]


class TLSError(Exception):
    """A bad certificate or key, as one readable line naming the file.

    For example "certs/server.key does not match certs/server.crt": operators see it
    at startup, on SIGHUP and in ``check``, so it must say which file to fix.
    """


def default_san() -> tuple[tuple[str, ...], tuple[IPAddress, ...]]:
    """Names and addresses a phone may use to reach this host (local resolver calls only)."""
    hostname = socket.gethostname()
    names: list[str] = []
    for name in ("localhost", hostname, socket.getfqdn()):
        if _usable_dns_name(name) and name.lower() not in (n.lower() for n in names):
            names.append(name)

    found: set[IPAddress] = set(interface_addresses())
    try:
        infos = socket.getaddrinfo(hostname, None)
    except (OSError, UnicodeError):
        infos = []
    for info in infos:
        try:
            # IPv6 link-local results carry a "%scope" suffix that ip_address rejects.
            found.add(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
        except ValueError:
            continue
    loopback: list[IPAddress] = [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
    others = sorted(
        (ip for ip in found if ip not in loopback and not ip.is_unspecified),
        key=lambda ip: (ip.version, ip.packed),
    )
    return tuple(names), tuple(loopback + others)


def interface_addresses() -> tuple[IPAddress, ...]:
    """This machine's own addresses, from its interfaces (a host name often resolves
    only to 127.0.0.1), without loopback and link-local ones: a URL cannot carry those."""
    found: list[IPAddress] = []
    try:
        interfaces = psutil.net_if_addrs()
    except OSError:
        return ()
    for addresses in interfaces.values():
        for address in addresses:
            if address.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(address.address.split("%", 1)[0])
            except ValueError:
                continue
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified) and ip not in found:
                found.append(ip)
    return tuple(found)


def _usable_dns_name(name: str) -> bool:
    """A SAN dNSName must be ASCII (IDNA A-labels); skip odd things a resolver returns."""
    return bool(name) and name.isascii() and " " not in name and not name.startswith(".")


def _san_and_now(
    dns_names: Sequence[str] | None,
    ip_addresses: Sequence[IPAddress] | None,
    now: datetime | None,
) -> tuple[Sequence[str], Sequence[IPAddress], datetime]:
    if dns_names is None or ip_addresses is None:
        default_names, default_ips = default_san()
        dns_names = default_names if dns_names is None else dns_names
        ip_addresses = default_ips if ip_addresses is None else ip_addresses
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return dns_names, ip_addresses, now


def is_dev_certificate(cert: x509.Certificate) -> bool:
    """Made by :func:`ensure_dev_certificate` (self-signed, our organization name)."""
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return cert.issuer == cert.subject and [o.value for o in orgs] == [DEV_CERT_ORG]


def dev_certificate_renewal(
    cert_path: Path,
    key_path: Path,
    *,
    dns_names: Sequence[str] | None = None,
    ip_addresses: Sequence[IPAddress] | None = None,
    now: datetime | None = None,
) -> str | None:
    """Why our own certificate should be made anew (a short phrase), or None.

    None for an operator's certificate, whatever its state: that one is never touched.
    """
    try:
        leaf = _load_chain(cert_path)[0]
    except TLSError:
        return None
    if not is_dev_certificate(leaf):
        return None
    dns_names, ip_addresses, now = _san_and_now(dns_names, ip_addresses, now)
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have_names = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
        have_ips = set(san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        have_names, have_ips = set(), set()
    missing = [n for n in dns_names if n.lower() not in have_names]
    missing += [str(ip) for ip in ip_addresses if ip not in have_ips]
    if missing:
        return f"it does not cover {', '.join(missing)}"
    if leaf.not_valid_after_utc - now < DEV_CERT_RENEW_BEFORE:
        return f"it expires {leaf.not_valid_after_utc:%Y-%m-%d}"
    try:
        key = _load_key(key_path)
        if _spki(key.public_key()) != _spki(leaf.public_key()):
            return f"{key_path} does not match it"
    except TLSError as e:
        return str(e)
    return None


def ensure_dev_certificate(
    cert_path: Path,
    key_path: Path,
    *,
    dns_names: Sequence[str] | None = None,
    ip_addresses: Sequence[IPAddress] | None = None,
    now: datetime | None = None,
) -> DevCertChange | None:
    """Create a self-signed development certificate unless one is there, or renew our own
    (see :func:`dev_certificate_renewal`); what was done, or None.

    Exactly one of the two files present means the operator is mid-change (or a
    previous run crashed between the renames): refuse rather than guess.
    """
    cert_there, key_there = os.path.lexists(cert_path), os.path.lexists(key_path)
    if cert_there and key_there:
        reason = dev_certificate_renewal(
            cert_path, key_path, dns_names=dns_names, ip_addresses=ip_addresses, now=now
        )
        if reason is None:
            return None
        _write_dev_certificate(cert_path, key_path, *_san_and_now(dns_names, ip_addresses, now))
        return "renewed"
    if cert_there or key_there:
        present, missing = (cert_path, key_path) if cert_there else (key_path, cert_path)
        raise TLSError(
            f"{present} exists but {missing} does not; restore it, or remove {present} "
            "to have a development certificate generated"
        )
    _write_dev_certificate(cert_path, key_path, *_san_and_now(dns_names, ip_addresses, now))
    return "created"


def _write_dev_certificate(
    cert_path: Path,
    key_path: Path,
    dns_names: Sequence[str],
    ip_addresses: Sequence[IPAddress],
    now: datetime,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cn = f"Pocket Agent Server ({socket.gethostname()})"
    if len(cn.encode()) > _CN_MAX:
        cn = cn.encode()[: _CN_MAX - 4].decode(errors="ignore") + "...)"
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_CERT_ORG),
        ]
    )
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    san += [x509.IPAddress(ip) for ip in ip_addresses]
    if not san:
        raise ValueError("a development certificate needs at least one DNS name or IP address")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now - _BACKDATE + DEV_CERT_LIFETIME)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    # Key first: a crash in between leaves only a key, which the next start reports
    # (or, on renewal, a key that does not match our certificate: renewed again).
    atomic_write_bytes(key_path, key_pem, 0o600)
    atomic_write_bytes(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def private_file_error(path: Path) -> str | None:
    """The start-up refusal for a secret (the TLS key, the token file) that group or
    others may read, naming the ``chmod`` that fixes it; None when private or absent."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    if not mode & 0o077:
        return None
    what = "readable" if mode & 0o044 else "writable"
    return f"{path} is {what} by group or others (mode {mode:04o}); run `chmod 600 {path}`"


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TLSError(f"{path}: {what} file not found") from None
    except OSError as e:
        raise TLSError(f"{path}: cannot read {what}: {e.strerror or e}") from None


def _load_chain(cert_path: Path) -> list[x509.Certificate]:
    data = _read(cert_path, "certificate")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSError(f"{cert_path}: not a PEM certificate") from None
    return chain


def _load_key(key_path: Path) -> Any:
    data = _read(key_path, "private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSError(f"{key_path}: private key is encrypted; it must be unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TLSError(f"{key_path}: not a PEM private key") from None


def _spki(public_key: Any) -> bytes:
    return cast(
        bytes,
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def _fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _load(cert_path: Path, key_path: Path) -> tuple[CertificateOptions, str]:
    chain = _load_chain(cert_path)
    key = _load_key(key_path)
    leaf = chain[0]
    try:
        matches = _spki(key.public_key()) == _spki(leaf.public_key())
    except (ValueError, UnsupportedAlgorithm):
        matches = False
    if not matches:
        raise TLSError(f"{key_path} does not match {cert_path}")
    # pyOpenSSL 26 deprecates its own X509/PKey wrappers and takes cryptography objects;
    # Twisted only hands these on to SSL.Context, but still annotates the old types.
    options = CertificateOptions(
        privateKey=cast(Any, key),
        certificate=cast(Any, leaf),
        extraCertChain=cast(Any, chain[1:]),
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
    try:
        # Build the context now so OpenSSL's complaints surface here, not on the first client.
        options.getContext()
    except SSL.Error as e:
        raise TLSError(f"{cert_path}, {key_path}: OpenSSL refused them: {e}") from None
    return options, _fingerprint(leaf)


def load_server_options(cert_path: Path, key_path: Path) -> CertificateOptions:
    """Server TLS options (TLS 1.2+) from PEM files; the cert file may also hold the chain."""
    return _load(cert_path, key_path)[0]


def certificate_fingerprint(cert_path: Path) -> str:
    """SHA-256 of the leaf, as shown next to the pairing QR code so the phone can pin it."""
    return _fingerprint(_load_chain(cert_path)[0])


def certificate_expiry(cert_path: Path) -> datetime:
    """The leaf's notAfter (aware, UTC), for the `check` command."""
    return _load_chain(cert_path)[0].not_valid_after_utc


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableServerOptions:
    """A server context factory whose certificate SIGHUP can swap without restarting listeners.

    TLSMemoryBIOFactory binds ``serverConnectionForTLS`` once, at construction; passing
    a CertificateOptions would freeze its certificate for the listener's lifetime. This
    object stays put and delegates each new connection to the current options, while
    established connections keep the context they were created with.
    """

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self._cert_path = cert_path
        self._key_path = key_path
        self._options, self._fingerprint = _load(cert_path, key_path)

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the certificate new connections get."""
        return self._fingerprint

    @property
    def options(self) -> CertificateOptions:
        """The CertificateOptions new connections are currently created from."""
        return self._options

    def reload(self) -> bool:
        """Re-read the files; True if the leaf changed. On TLSError the old one stays in use."""
        options, fingerprint = _load(self._cert_path, self._key_path)
        changed = fingerprint != self._fingerprint
        self._options, self._fingerprint = options, fingerprint
        return changed

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        """IOpenSSLServerConnectionCreator: a connection from whatever options are current."""
        return self._options.serverConnectionForTLS(tlsProtocol)
