"""Tests for pocket_agent.tls: the development certificate, loading, and live reload.

Handshakes run fully in memory (twisted.test.iosim pumps bytes between two
TLSMemoryBIOProtocols), so no sockets and no reactor are involved.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient

from pocket_agent.net.tls import (
    DEV_CERT_LIFETIME,
    ReloadableServerOptions,
    TLSError,
    certificate_expiry,
    certificate_fingerprint,
    default_san,
    dev_certificate_renewal,
    ensure_dev_certificate,
    interface_addresses,
    is_dev_certificate,
    load_server_options,
    private_file_error,
)

LOCAL_IPS = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def make_pair(
    directory: Path, names: tuple[str, ...] = ("localhost",), now: datetime | None = None
) -> tuple[Path, Path]:
    cert, key = directory / "certs" / "server.crt", directory / "certs" / "server.key"
    assert ensure_dev_certificate(cert, key, dns_names=names, ip_addresses=LOCAL_IPS, now=now)
    return cert, key


def read_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# --- generation -------------------------------------------------------------------------


def test_generated_certificate_is_a_self_signed_p256_server_cert(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "certs" / "server.crt", tmp_path / "certs" / "server.key"
    ips = [ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "192.0.2.7", "100.64.1.2")]
    created = ensure_dev_certificate(
        cert_path,
        key_path,
        dns_names=["localhost", "pocket.example"],
        ip_addresses=ips,
        now=NOW,
    )
    assert created == "created"

    cert = read_cert(cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "pocket.example"]
    assert san.get_values_for_type(x509.IPAddress) == ips

    # Self-signed: issuer is the subject and the signature verifies with its own key.
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        f"Pocket Agent Server ({socket.gethostname()})"
    )
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "Pocket Agent Server development certificate"
    )

    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())

    # Apple refuses locally trusted server certs valid for more than 825 days.
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(days=825)
    assert cert.not_valid_before_utc <= NOW - timedelta(minutes=59)
    assert cert.not_valid_after_utc > NOW + timedelta(days=824)

    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == cert.public_key()

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert DEV_CERT_LIFETIME == timedelta(days=825)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_file_modes_are_exact_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        cert_path, key_path = make_pair(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    # No temp files left behind next to them.
    assert sorted(p.name for p in cert_path.parent.iterdir()) == ["server.crt", "server.key"]


def test_key_file_is_never_created_with_wider_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file the module creates is born 0600, exclusively (chmod afterwards is too late)."""
    created: list[tuple[int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            created.append((flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    make_pair(tmp_path)
    assert len(created) == 2
    for flags, mode in created:
        assert flags & os.O_EXCL
        assert mode == 0o600


def test_default_san_includes_loopback_and_host_name() -> None:
    names, ips = default_san()
    assert names[0] == "localhost"
    assert ips[:2] == (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))
    hostname = socket.gethostname()
    assert hostname in names or not hostname.isascii()
    assert len(set(ips)) == len(ips)
    assert len({n.lower() for n in names}) == len(names)
    assert default_san() == (names, ips)


def test_default_san_dedupes_sorts_and_survives_resolver_quirks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fake_getaddrinfo(host: str, port: object) -> list[tuple[Any, ...]]:
        assert host == "pocket-host"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.1.20", 0)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::1%eth0", 0, 0, 2)),
            (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.168.1.20", 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0)),
        ]

    monkeypatch.setattr(socket, "gethostname", lambda: "pocket-host")
    monkeypatch.setattr(socket, "getfqdn", lambda *a: "pocket-host.lan")
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(psutil, "net_if_addrs", dict)
    names, ips = default_san()
    assert names == ("localhost", "pocket-host", "pocket-host.lan")
    assert [str(ip) for ip in ips] == ["127.0.0.1", "::1", "10.0.0.5", "192.168.1.20", "fe80::1"]

    def failing(*a: object) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", failing)
    monkeypatch.setattr(socket, "getfqdn", lambda *a: "localhost")
    names, ips = default_san()
    assert names == ("localhost", "pocket-host")
    assert [str(ip) for ip in ips] == ["127.0.0.1", "::1"]


def test_defaults_cover_localhost_and_loopback(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    assert ensure_dev_certificate(cert_path, key_path)
    san = read_cert(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "localhost" in san.value.get_values_for_type(x509.DNSName)
    ips = san.value.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("127.0.0.1") in ips and ipaddress.ip_address("::1") in ips


def test_ensure_is_idempotent(tmp_path: Path) -> None:
    cert_path, key_path = make_pair(tmp_path)
    before = (cert_path.read_bytes(), key_path.read_bytes())
    mtimes = (cert_path.stat().st_mtime_ns, key_path.stat().st_mtime_ns)
    again = ensure_dev_certificate(
        cert_path, key_path, dns_names=["localhost"], ip_addresses=LOCAL_IPS
    )
    assert again is None
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before
    assert (cert_path.stat().st_mtime_ns, key_path.stat().st_mtime_ns) == mtimes


@pytest.mark.parametrize("keep", ["cert", "key"])
def test_one_file_missing_is_refused_and_left_alone(tmp_path: Path, keep: str) -> None:
    cert_path, key_path = make_pair(tmp_path)
    kept, gone = (cert_path, key_path) if keep == "cert" else (key_path, cert_path)
    gone.unlink()
    content = kept.read_bytes()
    with pytest.raises(TLSError) as info:
        ensure_dev_certificate(cert_path, key_path)
    assert str(kept) in str(info.value) and str(gone) in str(info.value)
    assert kept.read_bytes() == content
    assert not gone.exists()


def test_default_san_holds_the_interface_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host name that resolves to 127.0.0.1 only must not leave the LAN address out."""
    monkeypatch.setattr(socket, "gethostname", lambda: "vm")
    monkeypatch.setattr(socket, "getfqdn", lambda *a: "vm")
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda *a: [(socket.AF_INET, 1, 6, "", ("127.0.0.1", 0))]
    )
    interfaces = {
        "lo": [snic(socket.AF_INET, "127.0.0.1"), snic(socket.AF_INET6, "::1")],
        "eth0": [
            snic(socket.AF_INET, "192.0.2.2"),
            snic(socket.AF_INET6, "fd00::2"),
            snic(socket.AF_INET6, "fe80::fc:ff:fe00:1%eth0"),
            snic(psutil.AF_LINK, "02:fc:00:00:00:01"),
        ],
    }
    monkeypatch.setattr(psutil, "net_if_addrs", lambda: interfaces)
    assert [str(ip) for ip in interface_addresses()] == ["192.0.2.2", "fd00::2"]
    names, ips = default_san()
    assert names == ("localhost", "vm")
    assert [str(ip) for ip in ips] == ["127.0.0.1", "::1", "192.0.2.2", "fd00::2"]


def snic(family: int, address: str) -> Any:
    """What psutil.net_if_addrs lists (only the fields interface_addresses reads)."""
    return SimpleNamespace(family=family, address=address)


def san_ips(path: Path) -> list[str]:
    san = read_cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)]


def test_our_certificate_is_renewed_when_the_addresses_change(tmp_path: Path) -> None:
    cert_path, key_path = make_pair(tmp_path, now=NOW)
    old = certificate_fingerprint(cert_path)
    lan = [*LOCAL_IPS, ipaddress.ip_address("192.0.2.2")]
    why = dev_certificate_renewal(
        cert_path, key_path, dns_names=["localhost"], ip_addresses=lan, now=NOW
    )
    assert why == "it does not cover 192.0.2.2"
    change = ensure_dev_certificate(
        cert_path, key_path, dns_names=["localhost"], ip_addresses=lan, now=NOW
    )
    assert change == "renewed"
    assert san_ips(cert_path) == ["127.0.0.1", "::1", "192.0.2.2"]
    assert certificate_fingerprint(cert_path) != old
    load_server_options(cert_path, key_path)  # the new key goes with the new certificate
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    # An address that went away is no reason: the SAN only has to cover the current ones.
    assert (
        ensure_dev_certificate(
            cert_path, key_path, dns_names=["localhost"], ip_addresses=LOCAL_IPS, now=NOW
        )
        is None
    )


def renew_ours(cert: Path, key: Path, now: datetime, check_only: bool = False) -> str | None:
    """With the SAN of make_pair, so only the date or the key can be the reason."""
    if check_only:
        return dev_certificate_renewal(
            cert, key, dns_names=["localhost"], ip_addresses=LOCAL_IPS, now=now
        )
    return ensure_dev_certificate(
        cert, key, dns_names=["localhost"], ip_addresses=LOCAL_IPS, now=now
    )


def test_our_certificate_is_renewed_before_it_expires(tmp_path: Path) -> None:
    cert_path, key_path = make_pair(tmp_path, now=NOW)
    late = NOW + DEV_CERT_LIFETIME - timedelta(days=29)
    assert renew_ours(cert_path, key_path, late - timedelta(days=2), check_only=True) is None
    assert renew_ours(cert_path, key_path, late) == "renewed"
    assert certificate_expiry(cert_path) > late + timedelta(days=800)


def test_our_certificate_with_a_foreign_key_is_renewed(tmp_path: Path) -> None:
    """A crash between the key's and the certificate's rename leaves a mismatched pair."""
    cert_path, key_path = make_pair(tmp_path)
    other = ec.generate_private_key(ec.SECP256R1())
    key_path.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert renew_ours(cert_path, key_path, NOW, check_only=True) == (
        f"{key_path} does not match it"
    )
    assert renew_ours(cert_path, key_path, NOW) == "renewed"
    load_server_options(cert_path, key_path)


def test_an_operator_certificate_is_never_renewed(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("pocket.example")
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert_path))
    leaf.private_key_pem.write_to_path(str(key_path))
    before = cert_path.read_bytes()
    far = NOW + timedelta(days=3650)  # expired, and covering none of our addresses
    assert not is_dev_certificate(read_cert(cert_path))
    assert dev_certificate_renewal(cert_path, key_path, now=far) is None
    assert ensure_dev_certificate(cert_path, key_path, now=far) is None
    assert cert_path.read_bytes() == before
    assert is_dev_certificate(read_cert(make_pair(tmp_path / "ours")[0]))


@pytest.mark.parametrize(("mode", "word"), [(0o644, "readable"), (0o640, "readable"),
                                            (0o620, "writable")])  # fmt: skip
def test_private_file_error_names_the_chmod(tmp_path: Path, mode: int, word: str) -> None:
    path = tmp_path / "server.key"
    path.write_text("secret")
    os.chmod(path, mode)
    error = private_file_error(path)
    assert error is not None
    assert f"is {word} by group or others (mode {mode:04o})" in error
    assert error.endswith(f"run `chmod 600 {path}`")
    os.chmod(path, 0o600)
    assert private_file_error(path) is None
    assert private_file_error(tmp_path / "missing") is None


# --- loading ----------------------------------------------------------------------------


def test_mismatched_key_and_cert_are_refused_naming_both(tmp_path: Path) -> None:
    cert_a, _ = make_pair(tmp_path / "a")
    _, key_b = make_pair(tmp_path / "b")
    with pytest.raises(TLSError, match=re.escape(f"{key_b} does not match {cert_a}")):
        load_server_options(cert_a, key_b)
    with pytest.raises(TLSError, match="does not match"):
        ReloadableServerOptions(cert_a, key_b)


@pytest.mark.parametrize("broken", ["cert", "key"])
@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a pem at all\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
)
def test_garbage_files_are_refused_naming_the_file(
    tmp_path: Path, broken: str, content: bytes
) -> None:
    cert_path, key_path = make_pair(tmp_path)
    target = cert_path if broken == "cert" else key_path
    target.write_bytes(content)
    with pytest.raises(TLSError) as info:
        load_server_options(cert_path, key_path)
    assert str(target) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_encrypted_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    cert_path, key_path = make_pair(tmp_path)
    missing = tmp_path / "nope.crt"
    with pytest.raises(TLSError, match=re.escape(str(missing))):
        load_server_options(missing, key_path)
    with pytest.raises(TLSError, match=re.escape(str(missing))):
        certificate_fingerprint(missing)

    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TLSError, match=re.escape(f"{key_path}: private key is encrypted")):
        load_server_options(cert_path, key_path)


def test_fingerprint_and_expiry_match_cryptography(tmp_path: Path) -> None:
    cert_path, _ = make_pair(tmp_path, now=NOW)
    cert = read_cert(cert_path)
    fingerprint = certificate_fingerprint(cert_path)
    assert re.fullmatch(r"[0-9A-F]{2}(:[0-9A-F]{2}){31}", fingerprint)
    assert fingerprint.replace(":", "").lower() == cert.fingerprint(hashes.SHA256()).hex()

    expiry = certificate_expiry(cert_path)
    assert expiry == cert.not_valid_after_utc
    assert expiry.utcoffset() == timedelta(0)
    assert expiry == NOW - timedelta(hours=1) + timedelta(days=825)


def test_options_refuse_anything_below_tls_1_2(tmp_path: Path) -> None:
    options = load_server_options(*make_pair(tmp_path))
    # set_options(0) adds nothing and returns the flags already set on the context.
    flags = options.getContext().set_options(0)
    assert flags & SSL.OP_NO_TLSv1 and flags & SSL.OP_NO_TLSv1_1
    assert not flags & SSL.OP_NO_TLSv1_2


# --- handshakes in memory ---------------------------------------------------------------


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Recorder(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason

    def peer_certificate(self) -> x509.Certificate:
        assert self.transport is not None
        peer = self.transport.getPeerCertificate()  # type: ignore[attr-defined]
        assert peer is not None
        return peer.to_cryptography()


def tls_connect(
    server_creator: object, trust_pem: bytes, hostname: str = "localhost"
) -> tuple[Recorder, IOPump]:
    """A verifying TLS client talking to an echo server wrapped the way the daemon wraps it."""
    clock = Clock()
    server_factory = TLSMemoryBIOFactory(
        server_creator,  # type: ignore[arg-type]
        False,
        Factory.forProtocol(Echo),
        clock=clock,
    )
    recorder = Recorder()
    client_factory = TLSMemoryBIOFactory(
        optionsForClientTLS(hostname, trustRoot=Certificate.loadPEM(trust_pem)),
        True,
        Factory.forProtocol(lambda: recorder),
        clock=clock,
    )
    addr = IPv4Address("TCP", "127.0.0.1", 8443)
    _, _, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(addr),
        lambda: client_factory.buildProtocol(addr),
        clock=clock,
    )
    return recorder, pump


def echo(recorder: Recorder, pump: IOPump, payload: bytes) -> bytes:
    assert recorder.transport is not None
    before = len(recorder.received)
    recorder.transport.write(payload)
    pump.flush()
    return recorder.received[before:]


def test_handshake_and_echo_through_reloadable_options(tmp_path: Path) -> None:
    cert_path, key_path = make_pair(tmp_path, names=("localhost",))
    server = ReloadableServerOptions(cert_path, key_path)
    assert IOpenSSLServerConnectionCreator.providedBy(server)
    assert server.fingerprint == certificate_fingerprint(cert_path)

    recorder, pump = tls_connect(server, cert_path.read_bytes())
    assert echo(recorder, pump, b"hello over tls") == b"hello over tls"
    assert recorder.lost is None
    assert recorder.peer_certificate() == read_cert(cert_path)


def test_client_rejects_a_name_missing_from_the_san(tmp_path: Path) -> None:
    cert_path, key_path = make_pair(tmp_path, names=("localhost",))
    recorder, pump = tls_connect(
        ReloadableServerOptions(cert_path, key_path), cert_path.read_bytes(), "elsewhere.example"
    )
    echo(recorder, pump, b"x")
    assert recorder.received == b""
    assert recorder.lost is not None


def test_chain_after_the_leaf_is_sent_to_clients(tmp_path: Path) -> None:
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("localhost")
    cert_path, key_path = tmp_path / "chain.crt", tmp_path / "chain.key"
    cert_path.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    key_path.write_bytes(leaf.private_key_pem.bytes())

    # The client trusts only the root, so this works only if the intermediate is sent.
    recorder, pump = tls_connect(load_server_options(cert_path, key_path), root.cert_pem.bytes())
    assert echo(recorder, pump, b"chained") == b"chained"
    assert recorder.peer_certificate() == x509.load_pem_x509_certificate(
        leaf.cert_chain_pems[0].bytes()
    )
    assert certificate_fingerprint(cert_path) == ":".join(
        f"{b:02X}" for b in recorder.peer_certificate().fingerprint(hashes.SHA256())
    )


def replace_pair(cert_path: Path, key_path: Path) -> None:
    cert_path.unlink()
    key_path.unlink()
    assert ensure_dev_certificate(
        cert_path, key_path, dns_names=["localhost"], ip_addresses=LOCAL_IPS
    )


def test_reload_serves_the_new_certificate_to_new_connections_only(tmp_path: Path) -> None:
    cert_path, key_path = make_pair(tmp_path)
    old_pem = cert_path.read_bytes()
    server = ReloadableServerOptions(cert_path, key_path)
    old_fingerprint = server.fingerprint
    old_options = server.options

    before, before_pump = tls_connect(server, old_pem)
    assert echo(before, before_pump, b"one") == b"one"

    assert server.reload() is False  # same files: nothing changed
    replace_pair(cert_path, key_path)
    new_pem = cert_path.read_bytes()
    assert server.reload() is True
    assert server.fingerprint == certificate_fingerprint(cert_path) != old_fingerprint
    assert server.options is not old_options

    # The connection made before the reload keeps working on its old certificate.
    assert echo(before, before_pump, b"two") == b"two"
    assert before.peer_certificate() == x509.load_pem_x509_certificate(old_pem)

    # A new handshake sees the new certificate...
    after, after_pump = tls_connect(server, new_pem)
    assert echo(after, after_pump, b"three") == b"three"
    assert after.peer_certificate() == x509.load_pem_x509_certificate(new_pem)

    # ...so a client still pinning the old one is refused,
    stale, stale_pump = tls_connect(server, old_pem)
    assert echo(stale, stale_pump, b"four") == b""
    assert stale.lost is not None

    # while the replaced options object is still a usable server config.
    kept, kept_pump = tls_connect(old_options, old_pem)
    assert echo(kept, kept_pump, b"five") == b"five"


@pytest.mark.parametrize("damage", ["garbage", "mismatch", "missing"])
def test_failed_reload_keeps_the_old_certificate(tmp_path: Path, damage: str) -> None:
    cert_path, key_path = make_pair(tmp_path)
    old_pem = cert_path.read_bytes()
    server = ReloadableServerOptions(cert_path, key_path)
    fingerprint = server.fingerprint

    if damage == "garbage":
        cert_path.write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
    elif damage == "mismatch":
        other_cert, _ = make_pair(tmp_path / "other")
        cert_path.write_bytes(other_cert.read_bytes())
    else:
        key_path.unlink()
    with pytest.raises(TLSError):
        server.reload()

    assert server.fingerprint == fingerprint
    recorder, pump = tls_connect(server, old_pem)
    assert echo(recorder, pump, b"still here") == b"still here"
    assert recorder.peer_certificate() == x509.load_pem_x509_certificate(old_pem)
