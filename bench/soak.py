"""Soak: the real daemon under connection churn, runs and a slow consumer, sampled.

    python bench/soak.py [--duration 600] [--connections 50] [--sample 10]

Starts ``twistd -n pocket-agent`` on ``ssl:0:interface=127.0.0.1`` with the fake claude
(tests/fake_claude/claude) and a small ``limits.send_buffer``, then, until
``--duration`` has passed:

- ``--connections`` WebSocket connections churn: connect (bearer token from
  ``data/auth_token``; ``trust_loopback`` is off), join their project (half of them
  each of the two) with ``after_seq`` (the last seq that connection saw there; 0 the
  first time, which replays the first 1000 records), read for 2-8 s while checking
  that seqs have no gap and no duplicate, disconnect, wait 0.2-1.5 s, again;
- two drivers keep one run going in each of two projects (``--scenarios``, played
  one after another, so two runs are always streaming);
- one slow consumer follows the first project with a tiny receive buffer and reads
  one frame every ``--slow-read`` seconds, so the server drops it (close 1013 or a
  reset); it reconnects 2 s later with ``after_seq``;
- a ``health`` request goes out every second on its own connection (its round trip).

Every ``--sample`` seconds one line: the daemon's RSS (VmRSS) and open fds (from
/proc), the number of its children, and for the interval the p50/p99/max of the
``health`` round trip and of the delay from a Record's ``timestamp`` to its arrival
at a live follower (ms precision: the server's timestamps are milliseconds), plus
the counts. A summary follows. Everything it starts is stopped by pid at the end;
it listens only on 127.0.0.1. Daemon output goes to <tmp>/root/daemon.out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import websocket

from bench._common import percentile, proc_children, proc_cpu_seconds, proc_fds, proc_rss_kib
from tests.fake_claude import FAKE_CLAUDE

BIN_DIR = Path(sys.executable).parent
TWISTD = BIN_DIR / "twistd"
READY = re.compile(r"listening on wss://127\.0\.0\.1:(\d+)/ws")
SUBPROTOCOL = "pocket-agent.v1"
DEFAULT_SCENARIOS = "slow:400:0.005,replay:tomato_tracker,slow:200:0.02,big_line:100000"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 40.0


# --------------------------------------------------------------------------- daemon


class Daemon:
    """One twistd process; its merged stdout/stderr go to a file through a reader thread."""

    def __init__(
        self, root: Path, home: Path, out: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PA_")}
        env.update(extra_env or {})
        env["HOME"] = str(home)
        env["PA_LOG_FORMAT"] = "json"
        env["PATH"] = f"{BIN_DIR}:{env.get('PATH', '')}"  # the fake runs on python3
        args = [str(TWISTD), "-n", "--pidfile=", "pocket-agent", "--root", str(root)]
        args += ["--listen", "ssl:0:interface=127.0.0.1"]
        self.proc = subprocess.Popen(
            args,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        self.root = root
        self.port: int | None = None
        self.ready = threading.Event()
        self._out = out
        self._reader = threading.Thread(target=self._read, name="daemon-out", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self._out.open("wb") as out:
            for line in self.proc.stdout:
                out.write(line)
                if self.port is None:
                    match = READY.search(line.decode("utf-8", "replace"))
                    if match:
                        self.port = int(match.group(1))
                        self.ready.set()
        self.ready.set()  # EOF: wake the waiter, which sees port is None

    def wait_ready(self) -> int:
        self.ready.wait(START_TIMEOUT)
        if self.port is None:
            self.stop()
            raise SystemExit(f"daemon did not start; see {self._out}")
        return self.port

    def stop(self) -> int | None:
        """SIGTERM and wait (graceful shutdown); SIGKILL if it is not gone in time."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)
        self._reader.join(timeout=STOP_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def write_config(root: Path, send_buffer: str) -> None:
    config = {
        "auth": {"trust_loopback": False},
        "limits": {
            "max_connections": 200,
            "send_buffer": send_buffer,
            "executions_per_minute": 100_000,
            "messages_per_second": 50,
        },
        "claude": {"binary": str(FAKE_CLAUDE)},
        "timeouts": {"kill_grace": "2s", "shutdown": "30s"},
    }
    # JSON is YAML.
    (root / "config.yaml").write_text(json.dumps(config, indent=2) + "\n")


# --------------------------------------------------------------------------- stats


class Stats:
    """Counters and latency samples shared by the worker threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_examples: dict[str, str] = {}
        self.delay_ms: list[float] = []
        self.health_ms: list[float] = []
        self.all_delay_ms: list[float] = []
        self.all_health_ms: list[float] = []
        self.slow_drop_after_s: list[float] = []

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def error(self, kind: str, detail: str = "") -> None:
        with self.lock:
            self.errors[kind] += 1
            self.error_examples.setdefault(kind, detail[:300])

    def delays(self, values: list[float]) -> None:
        with self.lock:
            self.delay_ms.extend(values)

    def health(self, value: float) -> None:
        with self.lock:
            self.health_ms.append(value)

    def take(self) -> tuple[list[float], list[float], Counter[str], int]:
        with self.lock:
            delay, self.delay_ms = self.delay_ms, []
            health, self.health_ms = self.health_ms, []
            self.all_delay_ms.extend(delay)
            self.all_health_ms.extend(health)
            return delay, health, Counter(self.counts), sum(self.errors.values())


def record_delay_ms(record: dict[str, Any], now: float) -> float:
    stamp = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
    return (now - stamp) * 1000


# --------------------------------------------------------------------------- clients


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class Conn:
    """A websocket-client connection carrying JSON envelopes."""

    def __init__(self, url: str, ctx: ssl.SSLContext, token: str, rcvbuf: int = 0) -> None:
        sockopt: tuple[tuple[int, int, int], ...] = ()
        if rcvbuf:
            sockopt = ((socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf),)
        self.ws = websocket.create_connection(
            url,
            sslopt={"context": ctx},
            header=[f"Authorization: Bearer {token}"],
            subprotocols=[SUBPROTOCOL],
            suppress_origin=True,
            http_no_proxy=["127.0.0.1"],
            timeout=10,
            sockopt=sockopt,
        )
        hello = self.recv(10)
        if hello is None or hello.get("type") != "server_hello":
            raise RuntimeError(f"expected server_hello, got {hello!r}")

    def send(self, type_: str, data: dict[str, Any] | None = None, **top: Any) -> None:
        message: dict[str, Any] = {"type": type_, **top}
        if data is not None:
            message["data"] = data
        self.ws.send(json.dumps(message))

    def recv(self, timeout: float) -> dict[str, Any] | None:
        """The next message, None at the timeout, Closed on a close frame."""
        self.ws.settimeout(timeout)
        try:
            opcode, frame = self.ws.recv_data_frame()
        except websocket.WebSocketTimeoutException:
            return None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            raise Closed(code, data[2:].decode("utf-8", "replace"))
        message = json.loads(frame.data)
        assert isinstance(message, dict)
        return message

    def recv_raw(self, timeout: float) -> bytes | None:
        """The next text payload undecoded, None at the timeout, Closed on a close frame."""
        self.ws.settimeout(timeout)
        try:
            opcode, frame = self.ws.recv_data_frame()
        except websocket.WebSocketTimeoutException:
            return None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            raise Closed(code, data[2:].decode("utf-8", "replace"))
        return bytes(frame.data)

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except (OSError, websocket.WebSocketException):
            pass
        finally:
            try:
                self.ws.shutdown()
            except OSError:
                pass


class World:
    def __init__(self, url: str, ctx: ssl.SSLContext, token: str, stats: Stats) -> None:
        self.url = url
        self.ctx = ctx
        self.token = token
        self.stats = stats
        self.stop = threading.Event()  # churn, slow consumer, health: stop now
        self.stop_runs = threading.Event()  # drivers: start no more runs
        self.projects: list[str] = []

    def connect(self, rcvbuf: int = 0) -> Conn:
        conn = Conn(self.url, self.ctx, self.token, rcvbuf)
        self.stats.add("connections")
        return conn


def request(conn: Conn, type_: str, data: dict[str, Any] | None = None, **top: Any) -> Any:
    request_id = f"r{next(_ids)}"
    conn.send(type_, data, request_id=request_id, **top)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = conn.recv(deadline - time.monotonic())
        if message is not None and message.get("request_id") == request_id:
            return message
    raise TimeoutError(f"no reply to {type_}")


_ids = itertools.count(1)


class SeqCheck:
    """Follows one join: history then live Records, with no gap and no duplicate."""

    def __init__(self, after_seq: int) -> None:
        self.expected: int | None = after_seq + 1
        self.last = after_seq

    def see(self, seq: int, stats: Stats) -> None:
        if self.expected is not None and seq != self.expected:
            kind = "duplicate seq" if seq < self.expected else "gap in seqs"
            stats.error(kind, f"expected {self.expected}, got {seq}")
        self.expected = seq + 1
        self.last = max(self.last, seq)


def follow(
    world: World, conn: Conn, project: str, after_seq: int, seconds: float, live: bool = True
) -> int:
    """Join with after_seq and read for ``seconds``; returns the last seq seen."""
    stats = world.stats
    check = SeqCheck(after_seq)
    conn.send("project_join", {"after_seq": after_seq}, project_id=project, request_id="j")
    deadline = time.monotonic() + seconds
    records = 0
    delays: list[float] = []
    try:
        while not world.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            message = conn.recv(min(1.0, remaining))
            if message is None:
                continue
            kind = message.get("type")
            if kind == "message_history" and message.get("request_id") == "j":
                data = message["data"]
                for record in data["messages"]:
                    check.see(record["seq"], stats)
                stats.add("history records", len(data["messages"]))
                if data.get("has_more"):
                    stats.add("history has_more")
                    check.expected = None
            elif kind == "agent_message" and message.get("project_id") == project:
                now = time.time()
                record = message["data"]
                check.see(record["seq"], stats)
                records += 1
                if live:
                    delays.append(record_delay_ms(record, now))
            elif kind == "error":
                stats.error(f"error {message['data'].get('code')}", json.dumps(message))
    finally:
        stats.add("live records", records)
        stats.delays(delays)
    return check.last


def churner(world: World, rng: random.Random, index: int) -> None:
    """Like a phone: one project (the index decides which), rejoined after each gap."""
    last: dict[str, int] = {}
    project = world.projects[index % len(world.projects)]
    while not world.stop.is_set():
        conn: Conn | None = None
        try:
            conn = world.connect()
            last[project] = follow(world, conn, project, last.get(project, 0), rng.uniform(2, 8))
        except Closed as closed:
            world.stats.error(f"churner closed {closed.code}", closed.reason)
        except (OSError, websocket.WebSocketException, TimeoutError, RuntimeError) as e:
            world.stats.error(f"churner {type(e).__name__}", str(e))
        finally:
            if conn is not None:
                conn.close()
        world.stop.wait(rng.uniform(0.2, 1.5))


def slow_consumer(world: World, read_every: float, rcvbuf: int) -> None:
    stats = world.stats
    project = world.projects[0]
    last = 0
    while not world.stop.is_set():
        conn: Conn | None = None
        joined = time.monotonic()
        try:
            conn = world.connect(rcvbuf=rcvbuf)
            check = SeqCheck(last)
            conn.send("project_join", {"after_seq": last}, project_id=project)
            while not world.stop.is_set():
                message = conn.recv(1.0)
                if message is not None and message.get("type") == "agent_message":
                    check.see(message["data"]["seq"], stats)
                    last = check.last
                elif message is not None and message.get("type") == "message_history":
                    for record in message["data"]["messages"]:
                        check.see(record["seq"], stats)
                    last = check.last
                    if message["data"].get("has_more"):
                        check.expected = None
                world.stop.wait(read_every)
        except Closed as closed:
            if closed.code == 1013:
                stats.add("slow consumer dropped (1013)")
                stats.slow_drop_after_s.append(time.monotonic() - joined)
            else:
                stats.error(f"slow consumer closed {closed.code}", closed.reason)
        except (OSError, websocket.WebSocketException) as e:
            # The server aborts the connection when it cannot even take the close frame.
            stats.add(f"slow consumer dropped ({type(e).__name__})")
            stats.slow_drop_after_s.append(time.monotonic() - joined)
        except (TimeoutError, RuntimeError) as e:
            stats.error(f"slow consumer {type(e).__name__}", str(e))
        finally:
            if conn is not None:
                conn.close()
        world.stop.wait(2.0)


def driver(world: World, project: str, scenarios: list[str]) -> None:
    """Keeps one run going in ``project``: execute, read to the end, execute again."""
    stats = world.stats
    conn: Conn | None = None
    plays = itertools.cycle(scenarios)
    try:
        conn = world.connect()
        while not world.stop_runs.is_set():
            scenario = next(plays)
            conn.send("execute", {"prompt": f"fake:{scenario}"}, project_id=project)
            finished = False
            records = 0
            delays: list[float] = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                message = conn.recv(1.0)
                if message is None:
                    continue
                kind = message.get("type")
                if kind == "agent_message":
                    records += 1
                    delays.append(record_delay_ms(message["data"], time.time()))
                elif kind == "execution_finished":
                    finished = True
                    outcome = message["data"]["outcome"]
                    stats.add(f"runs {outcome}")
                    if outcome != "success":
                        stats.error(f"run {outcome}", json.dumps(message["data"]))
                elif finished and kind == "project_state":
                    if message["data"]["state"] != "EXECUTING":
                        break
                elif kind == "error":
                    code = message["data"].get("code")
                    stats.error(f"driver error {code}", json.dumps(message))
                    if code in ("PROCESS_ACTIVE", "RESOURCE_LIMIT"):
                        world.stop_runs.wait(0.5)
                        break
            else:
                stats.error("run did not end within 120 s", scenario)
            stats.add("records streamed", records)
            stats.delays(delays)
    except Closed as closed:
        stats.error(f"driver closed {closed.code}", closed.reason)
    except (OSError, websocket.WebSocketException, TimeoutError, RuntimeError) as e:
        stats.error(f"driver {type(e).__name__}", str(e))
    finally:
        if conn is not None:
            conn.close()


def health_pinger(world: World) -> None:
    stats = world.stats
    conn: Conn | None = None
    try:
        conn = world.connect()
        while not world.stop.wait(1.0):
            started = time.perf_counter()
            reply = request(conn, "health")
            stats.health((time.perf_counter() - started) * 1000)
            if reply.get("type") != "health_status":
                stats.error("health reply", json.dumps(reply))
    except Closed as closed:
        stats.error(f"health closed {closed.code}", closed.reason)
    except (OSError, websocket.WebSocketException, TimeoutError, RuntimeError) as e:
        stats.error(f"health {type(e).__name__}", str(e))
    finally:
        if conn is not None:
            conn.close()


# --------------------------------------------------------------------------- main


def fmt_pct(values: list[float]) -> str:
    if not values:
        return "     -/     -/     -"
    return f"{percentile(values, 50):6.1f}/{percentile(values, 99):6.1f}/{max(values):6.1f}"


class Sampler:
    """One line per sample: RSS, fds, children, CPU share of the daemon and of this
    process (the clients) since the last sample, latencies and counts."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.last = (time.monotonic(), proc_cpu_seconds(pid), time.process_time())
        self.daemon_cpu: list[float] = []

    def line(
        self, elapsed: float, delay: list[float], health: list[float], counts: Counter[str]
    ) -> tuple[str, int, int]:
        rss = proc_rss_kib(self.pid)
        fds = proc_fds(self.pid)
        kids = len(proc_children(self.pid))
        now = (time.monotonic(), proc_cpu_seconds(self.pid), time.process_time())
        wall = max(1e-6, now[0] - self.last[0])
        daemon_cpu = (now[1] - self.last[1]) / wall * 100
        own_cpu = (now[2] - self.last[2]) / wall * 100
        self.last = now
        self.daemon_cpu.append(daemon_cpu)
        drops = sum(v for k, v in counts.items() if k.startswith("slow consumer dropped"))
        line = (
            f"{elapsed:6.0f}s rss {rss / 1024:6.1f} MiB fds {fds:3d} kids {kids} "
            f"cpu daemon {daemon_cpu:3.0f}% clients {own_cpu:3.0f}% | "
            f"health ms p50/p99/max {fmt_pct(health)} | "
            f"delay ms p50/p99/max {fmt_pct(delay)} n={len(delay)} | "
            f"records {counts['records streamed']} conns {counts['connections']} "
            f"drops {drops}"
        )
        return line, rss, fds


def threads(world: World, args: argparse.Namespace) -> Iterator[threading.Thread]:
    scenarios = args.scenarios.split(",")
    for i, project in enumerate(world.projects):
        # The two projects play the list from different starting points.
        rotated = scenarios[i % len(scenarios) :] + scenarios[: i % len(scenarios)]
        yield threading.Thread(target=driver, args=(world, project, rotated), name=f"run{i}")
    for i in range(args.connections):
        rng = random.Random(i)
        yield threading.Thread(target=churner, args=(world, rng, i), name=f"churn{i}")
    yield threading.Thread(
        target=slow_consumer, args=(world, args.slow_read, args.slow_rcvbuf), name="slow"
    )
    yield threading.Thread(target=health_pinger, args=(world,), name="health")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (600)")
    parser.add_argument("--connections", type=int, default=50, help="churning connections")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--scenarios", default=DEFAULT_SCENARIOS, help="fake claude scenarios")
    parser.add_argument("--send-buffer", default="64KiB", help="limits.send_buffer")
    parser.add_argument("--slow-read", type=float, default=0.5, help="slow consumer: s/frame")
    parser.add_argument("--slow-rcvbuf", type=int, default=4096, help="slow consumer SO_RCVBUF")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="pa-soak-"))
    root, home = base / "root", base / "home"
    root.mkdir()
    for name in ("p1", "p2"):
        (home / name).mkdir(parents=True)
    write_config(root, args.send_buffer)
    daemon = Daemon(root, home, root / "daemon.out")
    workers: list[threading.Thread] = []
    world: World | None = None
    try:
        port = daemon.wait_ready()
        token = (root / "data" / "auth_token").read_text().strip()
        ctx = ssl.create_default_context(cafile=str(root / "certs" / "server.crt"))
        stats = Stats()
        world = World(f"wss://127.0.0.1:{port}/ws", ctx, token, stats)
        setup = world.connect()
        for name in ("p1", "p2"):
            reply = request(setup, "project_create", {"path": str(home / name)})
            world.projects.append(reply["project_id"])
        setup.close()
        print(
            f"daemon pid {daemon.pid} on 127.0.0.1:{port}; {args.connections} churning "
            f"connections, 2 runs at a time ({args.scenarios}), 1 slow consumer "
            f"(send_buffer {args.send_buffer}), {args.duration:.0f} s; output in {base}",
            flush=True,
        )
        start_rss, start_fds = proc_rss_kib(daemon.pid), proc_fds(daemon.pid)
        print(f"     0s rss {start_rss / 1024:7.1f} MiB fds {start_fds:4d} (before load)")
        started = time.monotonic()
        sampler = Sampler(daemon.pid)
        workers = list(threads(world, args))
        for worker in workers:
            worker.start()
        rss_seen, fds_seen = [start_rss], [start_fds]
        next_sample = started + args.sample
        end = started + args.duration
        while True:
            now = time.monotonic()
            world.stop.wait(max(0.0, min(next_sample, end) - now))
            now = time.monotonic()
            if daemon.proc.poll() is not None:
                stats.error("daemon exited", f"status {daemon.proc.returncode}")
                break
            if now >= next_sample or now >= end:
                delay, health, counts, _ = stats.take()
                line, rss, fds = sampler.line(now - started, delay, health, counts)
                rss_seen.append(rss)
                fds_seen.append(fds)
                print(line, flush=True)
                next_sample += args.sample
            if now >= end:
                break
        # Wind down: no new runs, the churn stops, the runs under way finish.
        world.stop_runs.set()
        world.stop.set()
        for worker in workers:
            worker.join(timeout=130)
        alive = [w.name for w in workers if w.is_alive()]
        if alive:
            stats.error("threads still running", ", ".join(alive))
        settle = time.monotonic() + 5
        while proc_children(daemon.pid) and time.monotonic() < settle:
            time.sleep(0.2)
        delay, health, counts, _ = stats.take()
        final_line, end_rss, end_fds = sampler.line(
            time.monotonic() - started, delay, health, counts
        )
        print(final_line.replace("s rss", "s rss(idle)", 1), flush=True)
        rss_seen.append(end_rss)
        fds_seen.append(end_fds)
        summary(stats, daemon, rss_seen, fds_seen, time.monotonic() - started)
        cpu = sampler.daemon_cpu[:-1] or sampler.daemon_cpu
        print(f"  daemon CPU per sample: mean {sum(cpu) / len(cpu):.0f}%, max {max(cpu):.0f}%")
    finally:
        if world is not None:
            world.stop_runs.set()
            world.stop.set()
        stop_all(daemon)
        for worker in workers:
            worker.join(timeout=5)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


def stop_all(daemon: Daemon) -> None:
    """Stop the daemon by pid, then any child of it still alive (by pid)."""
    children = proc_children(daemon.pid)
    status = daemon.stop()
    print(f"daemon {daemon.pid} stopped, exit status {status}")
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
            print(f"killed a leftover child {pid} of the daemon")
        except ProcessLookupError:
            pass


def summary(stats: Stats, daemon: Daemon, rss: list[int], fds: list[int], elapsed: float) -> None:
    counts = stats.counts
    drops = {k: v for k, v in counts.items() if k.startswith("slow consumer dropped")}
    log = daemon.root / "server.log"
    logged_drops = 0
    if log.exists():
        with log.open(encoding="utf-8", errors="replace") as f:
            logged_drops = sum("Dropping a slow consumer" in line for line in f)
    after = stats.slow_drop_after_s
    print()
    print(f"summary after {elapsed:.0f} s")
    print(
        f"  RSS MiB: start {rss[0] / 1024:.1f}, end (idle) {rss[-1] / 1024:.1f}, "
        f"max {max(rss) / 1024:.1f}"
    )
    print(f"  open fds: start {fds[0]}, end (idle) {fds[-1]}, max {max(fds)}")
    print(
        f"  health round trip ms p50/p99/max {fmt_pct(stats.all_health_ms)} "
        f"(n={len(stats.all_health_ms)})"
    )
    print(
        f"  record timestamp -> live follower ms p50/p99/max {fmt_pct(stats.all_delay_ms)} "
        f"(n={len(stats.all_delay_ms)})"
    )
    runs = {k: v for k, v in counts.items() if k.startswith("runs ")}
    print(f"  runs: {dict(runs)}; records streamed {counts['records streamed']}")
    print(
        f"  frames to followers: live {counts['live records']}, "
        f"replayed on join {counts['history records']} "
        f"(joins that hit has_more {counts['history has_more']})"
    )
    print(f"  connections made {counts['connections']}")
    print(
        f"  slow consumer dropped {sum(drops.values())} {dict(drops)}; server.log "
        f"'Dropping a slow consumer' {logged_drops}"
        + (f"; dropped after {min(after):.1f}-{max(after):.1f} s" if after else "")
    )
    print(f"  errors {sum(stats.errors.values())}")
    for kind, n in stats.errors.most_common():
        print(f"    {n:5d} {kind}: {stats.error_examples.get(kind, '')}")


if __name__ == "__main__":
    main()
