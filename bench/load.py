"""The load generator of ``bench/run.py``: a minimal asyncio WebSocket client.

It does not go through autobahn (nor any WebSocket library) so that the client costs as
little CPU as it can and is not what bounds a scenario: RFC 6455 with only what the
daemon needs — the opening handshake (``Sec-WebSocket-Key``/``Accept``, the
``pocket-agent.v1`` subprotocol, no ``Origin``; on loopback no token is needed while
``auth.trust_loopback`` is on, else ``bearer.<token>`` is offered as a subprotocol),
masked client frames, unmasked server frames, text frames, fragmented messages put
together, pings answered with pongs, and the closing handshake.

Received messages are handed, undecoded, to ``WSClient.on_message(payload, when)``
(``when`` = ``time.perf_counter()`` at arrival); the default keeps them for
``recv()``. A scenario swaps in its own handler so nothing is parsed that it does not
need.

The three scenarios that talk to a daemon live here too (``rtt``, ``fanout``,
``conns``); ``bench/run.py`` starts and stops the daemons and prints the figures.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import resource
import statistics
import struct
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "pocket-agent.v1"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class ProtocolError(Exception):
    """The peer broke RFC 6455 (or the handshake failed)."""


# ------------------------------------------------------------------------- framing


def mask_bytes(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (its own inverse)."""
    n = len(payload)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little"
    )


def encode_frame(
    payload: bytes, opcode: int = OP_TEXT, *, mask: bytes | None = None, fin: bool = True
) -> bytes:
    """One frame. ``mask=None`` draws a random mask (a client's frame); ``mask=b""`` sends
    it unmasked (a server's frame, for tests)."""
    if mask is None:
        mask = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if mask:
        return head + mask + mask_bytes(payload, mask)
    return head + payload


class FrameParser:
    """Bytes in, ``(fin, opcode, payload)`` out; frames may be split anywhere."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bool, int, bytes]]:
        buf = self.buffer
        buf += data
        frames = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            masked = b1 & 0x80
            if masked:
                head += 4
            if end - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            if masked:
                payload = mask_bytes(payload, bytes(buf[pos + head - 4 : pos + head]))
            if b0 & 0x70:
                raise ProtocolError("reserved bits set (no extension was negotiated)")
            frames.append((bool(b0 & 0x80), b0 & 0x0F, payload))
            pos += head + n
        if pos:
            del buf[:pos]
        return frames


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


# -------------------------------------------------------------------------- client


class WSClient(asyncio.Protocol):
    """One client connection. ``await WSClient.connect(host, port)`` gives it open."""

    def __init__(self, host: str, port: int, path: str, token: str | None) -> None:
        self.host, self.port, self.path, self.token = host, port, path, token
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.parser = FrameParser()
        self.handshake = bytearray()
        self.fragments: list[bytes] = []
        self.fragment_opcode = 0
        self.close_sent = False
        self.close_code: int | None = None
        self.inbox: deque[bytes] = deque()
        self.arrived = asyncio.Event()
        self.on_message: Callable[[bytes, float], None] = self._keep

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str = "/ws", token: str | None = None
    ) -> WSClient:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(lambda: cls(host, port, path, token), host, port)
        await client.opened
        return client

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        protocols = SUBPROTOCOL + (f", bearer.{self.token}" if self.token else "")
        request = (
            f"GET {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocols}\r\n"
            "\r\n"
        )
        transport.write(request.encode("ascii"))

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.handshake += data
            end = self.handshake.find(b"\r\n\r\n")
            if end < 0:
                return
            head, rest = bytes(self.handshake[:end]), bytes(self.handshake[end + 4 :])
            try:
                self._check_handshake(head)
            except ProtocolError as e:
                self.opened.set_exception(e)
                assert self.transport is not None
                self.transport.abort()
                return
            self.opened.set_result(None)
            data = rest
            if not data:
                return
        when = time.perf_counter()
        for fin, opcode, payload in self.parser.feed(data):
            if opcode == OP_TEXT or opcode == OP_BINARY:
                if fin:
                    self.on_message(payload, when)
                else:
                    self.fragment_opcode, self.fragments = opcode, [payload]
            elif opcode == OP_CONT:
                self.fragments.append(payload)
                if fin:
                    message, self.fragments = b"".join(self.fragments), []
                    self.on_message(message, when)
            elif opcode == OP_PING:
                self._write(encode_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                if not self.close_sent:
                    self.close_sent = True
                    self._write(encode_frame(payload[:2], OP_CLOSE))
                assert self.transport is not None
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ProtocolError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.arrived.set()

    def _check_handshake(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise ProtocolError(f"handshake refused: {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != accept_key(self.key):
            raise ProtocolError("bad Sec-WebSocket-Accept")
        if headers.get("sec-websocket-protocol") != SUBPROTOCOL:
            raise ProtocolError(f"subprotocol {headers.get('sec-websocket-protocol')!r}")

    # sending and receiving

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def send_text(self, text: str | bytes) -> None:
        self._write(encode_frame(text.encode() if isinstance(text, str) else text))

    def send_json(self, message: dict[str, Any]) -> None:
        self.send_text(json.dumps(message, separators=(",", ":")))

    def _keep(self, payload: bytes, when: float) -> None:
        self.inbox.append(payload)
        self.arrived.set()

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message kept by the default handler, decoded."""
        deadline = time.monotonic() + timeout
        while not self.inbox:
            if self.closed.done():
                raise ConnectionError(f"closed by the server (code {self.close_code})")
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), max(0.0, deadline - time.monotonic()))
        message = json.loads(self.inbox.popleft())
        assert isinstance(message, dict)
        return message

    async def expect(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = await self.recv(max(0.0, deadline - time.monotonic()))
            if predicate(message):
                return message

    async def close(self, timeout: float = 2.0) -> None:
        """Closing handshake (1000); the socket is aborted if the server does not answer."""
        if not self.close_sent:
            self.close_sent = True
            self._write(encode_frame(struct.pack("!H", 1000), OP_CLOSE))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()


# ---------------------------------------------------------------------- scenarios


def self_cpu() -> float:
    """This process' user + system CPU seconds so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (0 for an empty list)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[min(len(ordered), int(rank)) - 1]


async def open_many(host: str, port: int, n: int, parallel: int = 32) -> list[WSClient]:
    """``n`` connections, each past its ``server_hello``, at most ``parallel`` at a time
    being opened (Twisted listens with a backlog of 50)."""
    gate = asyncio.Semaphore(parallel)

    async def one() -> WSClient:
        async with gate:
            client = await WSClient.connect(host, port)
            hello = await client.recv()
            if hello.get("type") != "server_hello":
                raise ProtocolError(f"expected server_hello, got {hello}")
            return client

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def close_all(clients: list[WSClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def request(client: WSClient, type_: str, request_id: str, **fields: Any) -> dict[str, Any]:
    client.send_json({"type": type_, "request_id": request_id, **fields})
    return await client.expect(lambda m: m.get("request_id") == request_id)


async def make_projects(client: WSClient, paths: list[str]) -> list[str]:
    ids = []
    for i, path in enumerate(paths):
        reply = await request(client, "project_create", f"p{i}", data={"path": path})
        if reply.get("type") == "error":
            raise RuntimeError(f"project_create {path}: {reply}")
        ids.append(reply["project_id"])
    return ids


async def rtt(
    host: str, port: int, server_cpu: Callable[[], float], connections: int, seconds: float
) -> dict[str, Any]:
    """``connections`` clients, each with one ``project_list`` in flight, back to back."""
    clients = await open_many(host, port, connections)
    latencies: list[list[float]] = [[] for _ in clients]
    request_frame = encode_frame(b'{"type":"project_list","request_id":"r"}')
    loop = asyncio.get_running_loop()

    async def drive(i: int, client: WSClient, stop_at: float) -> None:
        # One reply per request (project_list answers only its requester); the frame is
        # built once and re-sent with the same mask, which the server does not mind.
        box: list[asyncio.Future[float]] = []

        def on_message(payload: bytes, when: float) -> None:
            if box and not box[0].done():
                box[0].set_result(when)

        client.on_message = on_message
        own = latencies[i]
        transport = client.transport
        assert transport is not None
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                break
            future = loop.create_future()
            box[:] = [future]
            transport.write(request_frame)
            got = await future
            own.append(got - sent)

    try:
        # warm-up: a short spell not counted
        await asyncio.gather(
            *(drive(i, c, time.perf_counter() + 0.3) for i, c in enumerate(clients))
        )
        for own in latencies:
            own.clear()
        cpu0, mine0, t0 = server_cpu(), self_cpu(), time.perf_counter()
        stop_at = t0 + seconds
        await asyncio.gather(*(drive(i, c, stop_at) for i, c in enumerate(clients)))
        elapsed = time.perf_counter() - t0
        cpu1, mine1 = server_cpu(), self_cpu()
    finally:
        await close_all(clients)
    everything = [x for own in latencies for x in own]
    n = len(everything)
    return {
        "requests": n,
        "seconds": elapsed,
        "requests_per_s": n / elapsed,
        "p50_ms": pct(everything, 50) * 1000,
        "p99_ms": pct(everything, 99) * 1000,
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_us_per_request": (cpu1 - cpu0) / n * 1e6 if n else 0.0,
        "server_cpu_share": (cpu1 - cpu0) / elapsed,
        "client_cpu_s": mine1 - mine0,
        "client_cpu_us_per_request": (mine1 - mine0) / n * 1e6 if n else 0.0,
        "client_cpu_share": (mine1 - mine0) / elapsed,
    }


def _epoch_ms(stamp: bytes, cache: dict[bytes, float]) -> float:
    """``2026-12-01T15:19:45.123Z`` as epoch seconds; the part up to the second cached."""
    whole = stamp[:19]
    base = cache.get(whole)
    if base is None:
        base = datetime.fromisoformat(whole.decode() + "+00:00").timestamp()
        cache[whole] = base
    return base + int(stamp[20:23]) / 1000


async def fanout(
    host: str,
    port: int,
    server_cpu: Callable[[], float],
    project_path: str,
    followers: int,
    lines: int,
    line_bytes: int,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """``followers`` clients join one project; one of them runs the fake claude's
    ``flood`` of ``lines`` JSON lines; every follower reads them all.

    Latency: the Record's own ``timestamp`` (the server stamps it when it has read the
    line from claude's stdout, to the millisecond) to the frame's arrival at the
    follower (wall clock, the same machine). The fake's flood lines carry no timestamp
    of their own (it writes them in 1 MiB blocks as fast as the pipe takes them, so a
    print time would mostly measure the pipe). Also kept: each follower's arrival time
    of its last line relative to the moment ``execute`` was sent.
    """
    clients = await open_many(host, port, followers)
    marker = b'"type":"flood"'
    ts_key = b'"timestamp":"'
    done = asyncio.get_running_loop().create_future()
    remaining = [followers]
    per: list[dict[str, Any]] = []

    def recorder(slot: dict[str, Any]) -> Callable[[bytes, float], None]:
        stamps = slot["stamps"]
        arrivals = slot["arrivals"]

        def on_message(payload: bytes, when: float) -> None:
            if marker in payload:
                i = payload.find(ts_key) + 13
                stamps.append(payload[i : i + 24])
                arrivals.append(when)
                if len(arrivals) == lines:
                    remaining[0] -= 1
                    if not remaining[0] and not done.done():
                        done.set_result(None)

        return on_message

    try:
        project = (await make_projects(clients[0], [project_path]))[0]
        for i, client in enumerate(clients):
            await request(client, "project_join", f"j{i}", project_id=project)
            client.inbox.clear()
        for client in clients:
            slot: dict[str, Any] = {"stamps": [], "arrivals": []}
            per.append(slot)
            client.on_message = recorder(slot)
        prompt = f"fake:flood:{lines * line_bytes}:{line_bytes}"
        cpu0, mine0 = server_cpu(), self_cpu()
        t0 = time.perf_counter()
        clients[0].send_json(
            {
                "type": "execute",
                "request_id": "x",
                "project_id": project,
                "data": {"prompt": prompt},
            }
        )
        await asyncio.wait_for(done, timeout)
        elapsed = time.perf_counter() - t0
        cpu1, mine1 = server_cpu(), self_cpu()
    finally:
        await close_all(clients)
    cache: dict[bytes, float] = {}
    to_wall = time.time() - time.perf_counter()  # perf_counter readings as epoch seconds
    rates, latencies, finish = [], [], []
    for slot in per:
        arrivals = slot["arrivals"]
        first, last = arrivals[0], arrivals[-1]
        rates.append((len(arrivals) - 1) / (last - first) if last > first else 0.0)
        finish.append(last - t0)
        for stamp, when in zip(slot["stamps"], arrivals, strict=True):
            latencies.append(when + to_wall - _epoch_ms(stamp, cache))
    delivered = followers * lines
    return {
        "followers": followers,
        "lines": lines,
        "line_bytes": line_bytes,
        "seconds": elapsed,
        "lines_per_s_per_follower": statistics.median(rates),
        "lines_per_s_per_follower_min": min(rates),
        "delivered_per_s": delivered / elapsed,
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
        "last_line_s_median": statistics.median(finish),
        "last_line_s_max": max(finish),
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_us_per_message": (cpu1 - cpu0) / delivered * 1e6,
        "server_cpu_share": (cpu1 - cpu0) / elapsed,
        "client_cpu_s": mine1 - mine0,
        "client_cpu_us_per_message": (mine1 - mine0) / delivered * 1e6,
        "client_cpu_share": (mine1 - mine0) / elapsed,
    }


async def conns(
    host: str, port: int, server_rss_kib: Callable[[], int], connections: int, settle: float = 1.0
) -> dict[str, Any]:
    """RSS of the server before and after ``connections`` idle connections are open."""
    warm = await open_many(host, port, 4)  # first connections import lazily: not counted
    await close_all(warm)
    await asyncio.sleep(settle)
    before = server_rss_kib()
    mine0, t0 = self_cpu(), time.perf_counter()
    clients = await open_many(host, port, connections)
    opened = time.perf_counter() - t0
    mine1 = self_cpu()
    try:
        await asyncio.sleep(settle)
        after = server_rss_kib()
        alive = sum(not c.closed.done() for c in clients)
    finally:
        await close_all(clients)
    return {
        "connections": connections,
        "alive": alive,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_kib_per_connection": (after - before) / connections,
        "open_seconds": opened,
        "opened_per_s": connections / opened,
        "client_cpu_s": mine1 - mine0,
    }
