"""``pocket-agent-server token``: the address, the port, the QR code, and ``--help``."""

from __future__ import annotations

import io
import ipaddress
import re
from pathlib import Path

import attrs
import pytest
from cryptography import x509

from pocket_agent.cli import main as main_module
from pocket_agent.cli import token as token_module
from pocket_agent.cli.token import (
    PairingListener,
    pairing_listener,
    pairing_url,
    reachable_addresses,
    token_command,
    write_qr,
)
from pocket_agent.config import Config
from pocket_agent.net import pairing, tls
from pocket_agent.net.pairing import page_origin, page_url
from pocket_agent.net.tls import ensure_dev_certificate
from tests.support import make_config

LAN = ipaddress.ip_address("192.0.2.2")
ULA = ipaddress.ip_address("fd00::2")
OTHER = ipaddress.ip_address("198.51.100.7")


def with_listen(config: Config, *listen: str) -> Config:
    return attrs.evolve(config, listen=listen)


def test_the_listener_a_phone_should_dial(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert pairing_listener(config) == PairingListener(8443, True, "", "ssl:8443")
    picked = pairing_listener(
        with_listen(
            config, "tcp:8080:interface=127.0.0.1", "ssl:9443:interface=127.0.0.1", "ssl:9444"
        )
    )
    assert picked == PairingListener(9444, True, "", "ssl:9444")  # TLS, reachable
    own_key = pairing_listener(with_listen(config, "ssl:port=7443:privateKey=k.pem"))
    assert (own_key.port, own_key.tls) == (7443, True)
    plain = pairing_listener(with_listen(config, "tcp:8080:interface=192.0.2.2", "unix:/x"))
    assert plain == PairingListener(8080, False, "192.0.2.2", "tcp:8080:interface=192.0.2.2")
    assert pairing_listener(with_listen(config, "systemd:domain=INET:index=0")).port is None
    assert pairing_listener(with_listen(config, "ssl:0")).port is None
    assert pairing_listener(with_listen(config, "ssl:8443:interface=127.0.0.1")).loopback_only


def test_addresses_best_first_without_loopback_or_link_local() -> None:
    found = [ULA, OTHER, LAN, ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("fe80::1")]
    assert reachable_addresses(found) == [LAN, OTHER, ULA]
    assert reachable_addresses(found, preferred=OTHER) == [OTHER, LAN, ULA]


def test_pairing_url() -> None:
    assert pairing_url("192.0.2.2", 9443, True, "t") == "wss://192.0.2.2:9443/ws?token=t"
    assert pairing_url("fd00::2", 8443, True, "t") == "wss://[fd00::2]:8443/ws?token=t"
    assert pairing_url("pocket.lan", 8080, False, "t") == "ws://pocket.lan:8080/ws?token=t"


def test_page_url() -> None:
    """SPEC §11: the web app's address, with the token in the fragment (never sent)."""
    assert page_url("192.0.2.2", 9443, True, "token=t") == "https://192.0.2.2:9443/#token=t"
    assert page_url("fd00::2", 8443, True, "token=t") == "https://[fd00::2]:8443/#token=t"
    assert page_url("127.0.0.1", 8080, False) == "http://127.0.0.1:8080/"


def qr_lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_qr_has_dark_modules_on_a_light_background() -> None:
    """Glyphs are the dark modules: the quiet zone is blank, the finder's top edge solid."""
    out = io.StringIO()
    write_qr("wss://192.0.2.2:8443/ws?token=abc", out)
    lines = qr_lines(out)
    width = len(lines[0])
    assert lines[0] == lines[1] == " " * width  # 4 light module rows of quiet zone
    # Module rows 4 and 5: the finder's top edge (7 dark), then dark, 5 light, dark.
    assert lines[2][:4] == "    "
    assert lines[2][4:11] == "█▀▀▀▀▀█"
    assert lines[-1].strip() == "" or set(lines[-1][:4]) == {" "}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_qr_on_a_terminal_is_black_on_white_whatever_its_theme() -> None:
    out = Terminal()
    write_qr("wss://192.0.2.2:8443/ws?token=abc", out)
    plain = io.StringIO()
    write_qr("wss://192.0.2.2:8443/ws?token=abc", plain)
    for line, bare in zip(qr_lines(out), qr_lines(plain), strict=True):
        assert line == f"\033[30;107m{bare}\033[0m"


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose name resolves to 127.0.0.1 only, on a LAN and with an IPv6 ULA."""
    monkeypatch.setattr(tls, "interface_addresses", lambda: (ULA, LAN))
    monkeypatch.setattr(token_module, "interface_addresses", lambda: (ULA, LAN))
    monkeypatch.setattr(token_module, "route_address", lambda: LAN)
    monkeypatch.setattr(pairing, "interface_addresses", lambda: (ULA, LAN))
    monkeypatch.setattr(pairing, "route_address", lambda: LAN)


@pytest.mark.usefixtures("machine")
def test_token_shows_a_reachable_address_and_the_configured_port(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "config.yaml").write_text('listen: ["ssl:9443"]\n')
    out = io.StringIO()
    assert token_command(["--root", str(root)], out) == 0
    text = out.getvalue()
    token = (root / "data" / "auth_token").read_text().strip()
    lines = text.splitlines()
    assert lines[0] == f"Web app:     https://192.0.2.2:9443/#token={token}"  # what users scan
    assert f"URL:         wss://192.0.2.2:9443/ws?token={token} (for native apps)\n" in text
    assert "Also here:   [fd00::2] (--host picks another)\n" in text
    san = x509.load_pem_x509_certificate((root / "certs" / "server.crt").read_bytes())
    ips = san.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {LAN, ULA} <= set(ips.get_values_for_type(x509.IPAddress))

    out = io.StringIO()
    assert token_command(["--root", str(root), "--host", "pocket.lan", "--port", "443"], out) == 0
    assert (
        f"URL:         wss://pocket.lan:443/ws?token={token} (for native apps)\n" in out.getvalue()
    )
    assert f"Web app:     https://pocket.lan:443/#token={token}\n" in out.getvalue()


@pytest.mark.usefixtures("machine")
def test_token_renews_our_certificate_for_a_new_address(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ensure_dev_certificate(
        config.tls.cert,
        config.tls.key,
        dns_names=["localhost"],
        ip_addresses=[ipaddress.ip_address("127.0.0.1")],
    )
    old = config.tls.cert.read_bytes()
    out = io.StringIO()
    assert token_command(["--root", str(config.root)], out) == 0
    assert config.tls.cert.read_bytes() != old
    assert "Note:        Renewed the self-signed certificate" in out.getvalue()
    fingerprint = re.search(r"SHA-256:\s+(\S+)", out.getvalue())
    assert fingerprint is not None and fingerprint.group(1) == tls.certificate_fingerprint(
        config.tls.cert
    )


@pytest.mark.usefixtures("machine")
def test_token_names_a_loopback_only_listener(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    out = io.StringIO()
    args = ["--root", str(config.root), "--listen", "ssl:8443:interface=127.0.0.1"]
    assert token_command(args, out) == 0
    assert "URL:         wss://127.0.0.1:8443/ws?token=" in out.getvalue()
    assert "Web app:     https://127.0.0.1:8443/#token=" in out.getvalue()
    assert "is loopback only: a phone cannot reach it" in out.getvalue()


def test_token_refuses_a_bad_port(tmp_path: Path) -> None:
    assert token_command(["--root", str(tmp_path), "--port", "http"]) == 2


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main_module.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    commands = text.split("Commands:")[1]
    for name in ("token", "check", "repair", "client"):
        assert re.search(rf"^\s+{name}\s+\S", commands, re.MULTILINE), name
    assert set(main_module.COMMANDS) == {"token", "check", "repair", "client"}


def test_a_command_after_options_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_module.main(["--root", "/tmp", "check"]) == 2
    assert "put the command first: pocket-agent-server check" in capsys.readouterr().err


def test_every_subcommand_target_loads() -> None:
    for command in main_module.SUBCOMMANDS:
        assert callable(command.load()), command.name


@pytest.mark.usefixtures("machine")
def test_the_manhole_port_is_not_taken_for_the_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The running server listens on its WebSocket port and on the manhole's: only the
    first counts, and a port the operator named (a proxy's 443) is not second-guessed."""
    from pocket_agent.cli.server import ServerState

    config = make_config(tmp_path)
    (config.root / "config.yaml").write_text(
        'manhole: {listen: "tcp:12222:interface=127.0.0.1"}\n'
    )
    assert token_command(["--root", str(config.root)], io.StringIO()) == 0  # makes the files
    state = ServerState(4242, True, (("127.0.0.1", 12222), ("0.0.0.0", 8443)))
    monkeypatch.setattr(token_module, "running_server", lambda data_dir: state)
    out = io.StringIO()
    assert token_command(["--root", str(config.root)], out) == 0
    assert "listens on" not in out.getvalue()
    out = io.StringIO()
    assert token_command(["--root", str(config.root), "--port", "443"], out) == 0
    assert "listens on" not in out.getvalue()
    assert ":443/ws?token=" in out.getvalue()
    moved = ServerState(4242, True, (("127.0.0.1", 12222), ("0.0.0.0", 9443)))
    monkeypatch.setattr(token_module, "running_server", lambda data_dir: moved)
    out = io.StringIO()
    assert token_command(["--root", str(config.root)], out) == 0
    assert "listens on 9443, not 8443" in out.getvalue()


@pytest.mark.usefixtures("machine")
def test_the_qr_code_opens_the_web_app(tmp_path: Path) -> None:
    """The phone's camera opens the page already paired, so the QR holds the https URL."""
    config = make_config(tmp_path)
    out = io.StringIO()
    assert token_command(["--root", str(config.root)], out) == 0
    token = config.auth.token_file.read_text().strip()
    expected = io.StringIO()
    write_qr(f"https://192.0.2.2:8443/#token={token}", expected)
    assert out.getvalue().endswith(expected.getvalue())
    assert "it opens the web app" in out.getvalue()


@pytest.mark.usefixtures("machine")
def test_page_origin_for_links_in_notifications(tmp_path: Path) -> None:
    """SPEC §12's Click link: the address and port ``token`` would print."""
    config = make_config(tmp_path)
    assert page_origin(config) == "https://192.0.2.2:8443"
    assert page_origin(with_listen(config, "ssl:9443:interface=fd00\\:\\:2")) == (
        "https://[fd00::2]:9443"
    )
    assert page_origin(with_listen(config, "tcp:8080:interface=127.0.0.1")) == (
        "http://127.0.0.1:8080"
    )
    assert page_origin(with_listen(config, "systemd:domain=INET:index=0")) is None
