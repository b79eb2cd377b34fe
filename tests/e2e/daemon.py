"""Run the real daemon as a subprocess and talk to it over real TLS sockets.

The daemon is started through its twistd plugin (``twistd -n pocket-agent``), listens
on an ephemeral port on 127.0.0.1, and announces ``listening on wss://127.0.0.1:<port>/ws``
on stdout; a reader thread feeds every stdout line into a queue so waiting for that
line has a hard deadline and never sleeps. Every process started here is stopped by
its pid (SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import websocket

BIN_DIR = Path(sys.executable).parent
TWISTD = BIN_DIR / "twistd"
CONSOLE_SCRIPT = BIN_DIR / "pocket-agent-server"
LOOPBACK_LISTEN = "ssl:0:interface=127.0.0.1"
READY = re.compile(r"listening on wss://127\.0\.0\.1:(\d+)/ws")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
RECV_TIMEOUT = 10.0
WS_PROTOCOL = "pocket-agent.v1"
FORWARDED_FOR = "X-Forwarded-For: 203.0.113.9"


def daemon_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment with HOME redirected, JSON logs, and no stray PA_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PA_")}
    env["HOME"] = str(home)
    env["PA_LOG_FORMAT"] = "json"
    env.update(extra or {})
    return env


class DaemonExited(AssertionError):
    pass


class Daemon:
    """One ``twistd -n pocket-agent`` process; stdout and stderr are merged."""

    def __init__(
        self,
        root: Path,
        home: Path,
        *,
        listen: str = LOOPBACK_LISTEN,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.home = home
        root.mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        args = [str(TWISTD), "-n", "--pidfile=", "pocket-agent"]
        args += ["--root", str(root), "--listen", listen]
        self.proc = subprocess.Popen(
            args,
            cwd=root,
            env=daemon_env(home, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self.pid = self.proc.pid
        self.port: int | None = None
        self._lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"daemon-{self.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    # ------------------------------------------------------------------ output

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first stdout line matching ``pattern``; fails at the deadline or at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no line matching {pattern.pattern!r} within {timeout}s:\n{self.output()}"
                )
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=STOP_TIMEOUT)
                raise DaemonExited(
                    f"daemon exited with {self.proc.returncode} before printing "
                    f"{pattern.pattern!r}:\n{self.output()}"
                )
            match = pattern.search(line)
            if match:
                return match

    def wait_ready(self, timeout: float = START_TIMEOUT) -> int:
        self.port = int(self.wait_for_line(READY, timeout).group(1))
        return self.port

    def output(self) -> str:
        """Everything printed so far (all of it once the process has exited)."""
        if self.proc.poll() is not None:
            self._reader.join(timeout=STOP_TIMEOUT)
        return "".join(self._lines)

    # --------------------------------------------------------------- lifecycle

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        """Exit status of a process expected to end on its own; killed (and failed) if not."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"daemon {self.pid} still running after {timeout}s:\n{self.output()}"
            ) from None

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to ``timeout``, SIGKILL when it is not gone by then."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)

    def close(self) -> None:
        """Finaliser: make sure the process is gone and its pipe drained."""
        try:
            self.terminate()
        except subprocess.TimeoutExpired:
            pass
        finally:
            self.kill()
            self._reader.join(timeout=STOP_TIMEOUT)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    # -------------------------------------------------------------------- files

    @property
    def cert(self) -> Path:
        return self.root / "certs" / "server.crt"

    @property
    def token(self) -> str:
        return (self.root / "data" / "auth_token").read_text().strip()

    @property
    def lock(self) -> Path:
        return self.root / "data" / ".lock"

    def tls_context(self) -> ssl.SSLContext:
        return tls_context(self.cert)

    @property
    def url(self) -> str:
        assert self.port is not None, "wait_ready() first"
        return f"wss://127.0.0.1:{self.port}/ws"


class DaemonPool:
    """Starts daemons and stops every one of them, by pid, at teardown."""

    def __init__(self) -> None:
        self.daemons: list[Daemon] = []

    def start(
        self,
        root: Path,
        home: Path,
        *,
        listen: str = LOOPBACK_LISTEN,
        env: Mapping[str, str] | None = None,
        wait_ready: bool = True,
    ) -> Daemon:
        daemon = Daemon(root, home, listen=listen, env=env)
        self.daemons.append(daemon)
        if wait_ready:
            daemon.wait_ready()
        return daemon

    def close(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.close()


def run_console(
    args: Sequence[str], home: Path, cwd: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """``pocket-agent-server ARGS`` with the same environment the daemon gets."""
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        cwd=cwd,
        env=daemon_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ------------------------------------------------------------------------- TLS


def tls_context(cert: Path) -> ssl.SSLContext:
    """Trust exactly the server's self-signed certificate, with hostname checking."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    return ctx


def sha256_fingerprint(cert: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def https_get(
    port: int, path: str, ctx: ssl.SSLContext, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=RECV_TIMEOUT)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


# ------------------------------------------------------------------- WebSocket


class ServerClosed(AssertionError):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"the server closed the connection: {code} {reason!r}")
        self.code = code
        self.reason = reason


class Client:
    """A websocket-client connection exchanging JSON envelopes.

    Messages read while looking for another one are kept in a backlog, so a test can
    wait for a reply and still check the broadcasts that arrived before it.
    """

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.backlog: list[dict[str, Any]] = []
        self.hello: dict[str, Any] | None = None

    def send(self, type_: str, data: Mapping[str, Any] | None = None, **top: Any) -> None:
        message: dict[str, Any] = {"type": type_, **top}
        if data is not None:
            message["data"] = dict(data)
        self.ws.send(json.dumps(message))

    def send_raw(self, text: str) -> None:
        self.ws.send(text)

    def _read(self, timeout: float) -> dict[str, Any]:
        """The next text message from the socket; ServerClosed on a close frame."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no message within {timeout}s; backlog: {self.backlog}")
            self.ws.settimeout(remaining)
            frame = self.ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
                reason = frame.data[2:].decode("utf-8", "replace")
                try:
                    self.ws.send_close()
                except (OSError, websocket.WebSocketException):
                    pass
                raise ServerClosed(code, reason)
            if frame.opcode == websocket.ABNF.OPCODE_PING:
                self.ws.pong(frame.data)
                continue
            if frame.opcode == websocket.ABNF.OPCODE_TEXT:
                assert frame.fin, "the server fragmented a message"
                message = json.loads(frame.data.decode("utf-8"))
                assert isinstance(message, dict), message
                return message

    def expect(
        self,
        predicate: Callable[[dict[str, Any]], bool] | str,
        timeout: float = RECV_TIMEOUT,
    ) -> dict[str, Any]:
        """The first message (backlog first) matching ``predicate`` or of that type."""
        if isinstance(predicate, str):
            wanted = predicate
            predicate = lambda m: m.get("type") == wanted  # noqa: E731
        for i, message in enumerate(self.backlog):
            if predicate(message):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(max(0.0, deadline - time.monotonic()))
            if predicate(message):
                return message
            self.backlog.append(message)

    def replies(self, request_id: str, count: int, timeout: float = RECV_TIMEOUT) -> list[Any]:
        """The next ``count`` messages echoing ``request_id``, in arrival order."""
        return [
            self.expect(lambda m: m.get("request_id") == request_id, timeout) for _ in range(count)
        ]

    def request(
        self,
        type_: str,
        data: Mapping[str, Any] | None = None,
        *,
        request_id: str,
        timeout: float = RECV_TIMEOUT,
        **top: Any,
    ) -> dict[str, Any]:
        """Send a request and return its (first) direct reply."""
        self.send(type_, data, request_id=request_id, **top)
        return self.replies(request_id, 1, timeout)[0]

    def wait_close(self, timeout: float = RECV_TIMEOUT) -> ServerClosed:
        """Read until the server's close frame; returns it (code, reason)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.backlog.append(self._read(max(0.0, deadline - time.monotonic())))
            except ServerClosed as closed:
                return closed

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except (OSError, websocket.WebSocketException):
            pass
        finally:
            self.ws.shutdown()


def ws_connect(
    daemon: Daemon,
    *,
    headers: Sequence[str] = (),
    subprotocols: Sequence[str] | None = None,
    query: str = "",
    timeout: float = RECV_TIMEOUT,
) -> websocket.WebSocket:
    """Open a verified wss:// connection (no Origin header, like the native app)."""
    return websocket.create_connection(
        daemon.url + query,
        sslopt={"context": daemon.tls_context()},
        header=list(headers),
        subprotocols=list(subprotocols) if subprotocols else None,
        suppress_origin=True,
        http_no_proxy=["127.0.0.1"],
        timeout=timeout,
    )


def connect(daemon: Daemon, **kwargs: Any) -> Client:
    """Connect and read the ``server_hello`` (available as ``client.hello``)."""
    client = Client(ws_connect(daemon, **kwargs))
    try:
        client.hello = client.expect("server_hello")
    except BaseException:
        client.close()
        raise
    return client


# ------------------------------------------------------------------- processes


class Proc:
    """A process identified by pid *and* start time (``/proc/<pid>/stat`` field 22), so
    a pid the kernel has handed to somebody else never passes for it."""

    def __init__(self, pid: int, starttime: int) -> None:
        self.pid = pid
        self.starttime = starttime

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        """The process now running under ``pid``; None when there is none (or a zombie)."""
        stat = proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return None
        return cls(pid, int(stat[19]))

    def state(self) -> str | None:
        """Its state letter (``Z`` for a zombie), None once it is gone or the pid reused."""
        stat = proc_stat(self.pid)
        if stat is None or int(stat[19]) != self.starttime:
            return None
        return stat[0]

    def gone(self) -> bool:
        """Neither alive nor a zombie."""
        return self.state() in (None, "X")

    def kill(self) -> None:
        """SIGKILL, only while it is still this very process."""
        if self.state() not in (None, "Z", "X"):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def __repr__(self) -> str:
        return f"Proc({self.pid}, state={self.state()!r})"


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name ([0] state, [1] ppid,
    [2] pgrp, [19] start time), or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].decode().split()


def proc_environ(pid: int) -> list[str]:
    """The environment a process was started with ([] when unreadable, e.g. a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return []
    return raw.decode("utf-8", "replace").split("\0")


def processes_with_env(entry: str, exclude: Sequence[int] = ()) -> list[int]:
    """Pids of the live processes whose environment holds ``entry`` ("NAME=value")."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in exclude and entry in proc_environ(int(name)):
            found.append(int(name))
    return found


def wait_gone(procs: Sequence[Proc], timeout: float, interval: float = 0.01) -> list[Proc]:
    """Poll until every process is gone (no event tells us when a foreign process has
    exited); returns those still there at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if not p.gone()]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(interval)


def read_pids(path: Path) -> list[int]:
    """The pids in a FAKE_CLAUDE_PIDFILE ([] before the first one is written)."""
    try:
        return [int(word) for word in path.read_text().split()]
    except FileNotFoundError:
        return []


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file such as FAKE_CLAUDE_LOG ([] before it exists)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class FakeClaudeRig:
    """The environment that runs the daemon with the fake claude (tests/fake_claude),
    its pid file and invocation log, and a ``/proc`` scan for every process that
    environment reached: FAKE_CLAUDE_PIDFILE=<this rig's file> is inherited by the
    daemon, each claude it starts (``--version`` probes included) and their children."""

    def __init__(self, base: Path, extra: Mapping[str, str] | None = None) -> None:
        from tests.fake_claude import FAKE_CLAUDE

        self.pidfile = base / "fake-claude.pids"
        self.log = base / "fake-claude.jsonl"
        self.marker = f"FAKE_CLAUDE_PIDFILE={self.pidfile}"
        self.env = {
            "PA_CLAUDE_BINARY": str(FAKE_CLAUDE),
            "PATH": f"{BIN_DIR}:{os.environ.get('PATH', '')}",
            "FAKE_CLAUDE_PIDFILE": str(self.pidfile),
            "FAKE_CLAUDE_LOG": str(self.log),
            **(extra or {}),
        }

    def run_pids(self) -> list[int]:
        """Pids of the fake's run invocations (with -p), oldest first."""
        return [int(r["pid"]) for r in read_jsonl(self.log) if "-p" in r["argv"]]

    def strays(self, exclude: Sequence[int] = ()) -> list[int]:
        """Live processes carrying this rig's environment, ``exclude`` (daemons) aside."""
        return processes_with_env(self.marker, exclude)

    def kill_strays(self, exclude: Sequence[int] = ()) -> None:
        for pid in self.strays(exclude):
            proc = Proc.of(pid)
            if proc is not None:
                proc.kill()


def said(message: dict[str, Any]) -> str:
    """The text of an agent_message carrying an assistant line, else ""."""
    if message.get("type") != "agent_message":
        return ""
    line = message["data"]["message"]
    if line.get("type") != "assistant":
        return ""
    return "".join(b.get("text", "") for b in line["message"]["content"] if b["type"] == "text")
