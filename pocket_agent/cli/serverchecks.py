"""``check``'s questions to the server itself: does it run, does its port answer, and
what does its ``/health`` say. From the outside, on loopback, with the token file."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
from typing import Any

import attrs

from pocket_agent.config import Config
from pocket_agent.net.auth import TokenFile
from pocket_agent.net.listeners import endpoint_parts
from pocket_agent.net.tls import TLSError, certificate_fingerprint
from pocket_agent.ops.health import LOW_DISK_BYTES

from .checkresult import Check, size
from .server import ServerState

CONNECT_TIMEOUT = 2.0
HEALTH_TIMEOUT = 5.0


def _loopback_for(address: str) -> str:
    """Where to knock for a listener bound to ``address`` (a wildcard: our loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(address, address)


def configured_ports(config: Config) -> list[tuple[str, int]]:
    """(address to knock at, port) for each configured TCP listener with a fixed port."""
    found = []
    for description in config.listen:
        kind, args, kwargs = endpoint_parts(description)
        if kind not in ("ssl", "tcp", "tcp6"):
            continue
        port_text = kwargs.get("port") or (args[0] if args else "")
        if not port_text.isdigit() or not int(port_text):
            continue
        interface = kwargs.get("interface", "").replace("\\:", ":")
        default = "::" if kind == "tcp6" else "0.0.0.0"
        found.append((_loopback_for(interface or default), int(port_text)))
    return found


@attrs.frozen
class HealthAnswer:
    url: str
    code: int
    body: dict[str, Any]
    fingerprint: str | None  # of the certificate the server presented (TLS only)


def fetch_health(host: str, port: int, tls: bool, token: str | None) -> HealthAnswer:
    """``GET /health`` on loopback. TLS is not verified here: the answer is compared with
    the configured certificate instead (the operator's may not name 127.0.0.1)."""
    conn: http.client.HTTPConnection
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=HEALTH_TIMEOUT, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=HEALTH_TIMEOUT)
    try:
        conn.connect()
        fingerprint = None
        if isinstance(conn.sock, ssl.SSLSocket):
            der = conn.sock.getpeercert(binary_form=True)
            if der:
                fingerprint = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", "/health", headers=headers)
        response = conn.getresponse()
        raw = response.read(1 << 20)
    finally:
        conn.close()
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValueError(f"HTTP {response.status}, not a /health answer") from None
    if not isinstance(body, dict):
        raise ValueError(f"HTTP {response.status}, not a /health answer")
    url = f"{'https' if tls else 'http'}://{_hostport(host, port)}/health"
    return HealthAnswer(url, response.status, body, fingerprint)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ServerChecks:
    """Server running, port listening, ``/health``: each a method returning one Check."""

    def __init__(self, config: Config, state: ServerState) -> None:
        self.config = config
        self.state = state

    def server(self) -> Check:
        state, lock = self.state, self.config.data_dir / ".lock"
        if state.alive:
            return Check(
                "server", "server running", "pass", f"pid {state.pid} ({lock})", {"pid": state.pid}
            )
        if state.pid is not None:
            detail = f"not running: {lock} names pid {state.pid}, which is gone (a crash?)"
        else:
            detail = f"not running (no {lock})"
        return Check("server", "server running", "fail", detail, {"pid": None})

    def targets(self) -> list[tuple[str, int]]:
        """Where the server listens: its own sockets when it runs, else the configuration."""
        if self.state.listening:
            return [(_loopback_for(host), port) for host, port in self.state.listening]
        return configured_ports(self.config)

    def port(self) -> Check:
        targets = self.targets()
        if not targets:
            return Check(
                "port",
                "port listening",
                "warn",
                "no TCP port in the configuration to check (unix:, systemd:, port 0)",
            )
        ok, refused = [], []
        for host, port in targets:
            try:
                socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
                ok.append(f"{_hostport(host, port)}")
            except OSError as e:
                refused.append(f"{_hostport(host, port)} ({e.strerror or e})")
        data = {"listening": ok, "refused": refused}
        if refused:
            return Check(
                "port", "port listening", "fail", "nothing answers on " + ", ".join(refused), data
            )
        configured = {port for _host, port in configured_ports(self.config)}
        ports = {port for _host, port in targets}
        if configured and not configured & ports:
            listed = ", ".join(str(p) for p in sorted(configured))
            return Check(
                "port",
                "port listening",
                "warn",
                f"{', '.join(ok)}, but the configuration says {listed}",
                data,
            )
        return Check("port", "port listening", "pass", ", ".join(ok), data)

    def health(self) -> Check:
        try:
            token: str | None = TokenFile(self.config.auth.token_file).current()
        except (OSError, ValueError):
            token = None  # loopback trust may still answer in full
        try:
            pinned: str | None = certificate_fingerprint(self.config.tls.cert)
        except TLSError:
            pinned = None
        errors = []
        for host, port in self.targets():
            for tls in (True, False):
                try:
                    answer = fetch_health(host, port, tls, token)
                except (OSError, http.client.HTTPException, ValueError) as e:
                    errors.append(f"{'https' if tls else 'http'}://{_hostport(host, port)}: {e}")
                    if isinstance(e, ConnectionRefusedError):
                        break  # nothing listens: plain HTTP would be refused too
                    continue
                return self._judge(answer, pinned)
        detail = "; ".join(errors) or "no port to ask"
        return Check("health", "/health", "fail", detail)

    def _judge(self, answer: HealthAnswer, pinned: str | None) -> Check:
        body, status = answer.body, answer.body.get("status")
        data = {"url": answer.url, "http_status": answer.code, "health": body}
        if answer.code == 401:
            return Check(
                "health",
                "/health",
                "fail",
                f"{answer.url}: the token in {self.config.auth.token_file} was refused",
                data,
            )
        detail = f"{answer.url}: {status}"
        if "version" in body:
            detail += f", version {body['version']}, up {body.get('uptime_s', 0):.0f} s"
        if status != "healthy":
            reasons = []
            if not body.get("claude", {}).get("available", True):
                reasons.append("claude not found")
            if body.get("storage", {}).get("writable") is False:
                reasons.append(f"data dir not writable: {body['storage'].get('error')}")
            free = body.get("disk", {}).get("free_bytes")
            if isinstance(free, int) and free < LOW_DISK_BYTES:
                reasons.append(f"low disk: {size(free)} free")
            return Check(
                "health",
                "/health",
                "fail",
                detail + (f" ({'; '.join(reasons)})" if reasons else ""),
                data,
            )
        if answer.fingerprint and pinned and answer.fingerprint != pinned:
            return Check(
                "health",
                "/health",
                "warn",
                detail + f"; but it serves another "
                f"certificate than {self.config.tls.cert}: SIGHUP the server to "
                "load it",
                data,
            )
        return Check("health", "/health", "pass", detail, data)
