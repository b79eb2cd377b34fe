"""The daemon under load, one command; ``--compare REF`` puts another commit beside it.

    python bench/run.py [--scenarios rtt,fanout,conns,history,startup] [--rounds N]
                        [--compare REF] [--quick] [--json FILE] [sizes...]

Each round starts a fresh daemon per scenario (``twistd -n pocket-agent``, plain
``ws://`` on ``tcp:0:interface=127.0.0.1``, loopback trust so no token, the fake claude
of *this* tree for both sides, a scratch root under /tmp, rate limits lifted) and stops
it by its pid (SIGTERM, SIGKILL after 15 s) whatever happens. The client is
``bench/load.py``: asyncio and raw RFC 6455 frames, no autobahn.

- ``rtt``: C connections (``--connections``, 10), one ``project_list`` in flight each,
  back to back for ``--seconds`` (5) over ``--projects`` projects (10), after 0.3 s
  of warm-up: requests/s, p50/p99 latency, server CPU µs per request
  (``/proc/<pid>/stat`` utime+stime before/after).
- ``fanout``: S followers (``--followers``, 50) of one project; one runs the fake's
  ``flood`` of L JSON lines (``--lines``, 5,000) of ``--line-bytes`` (450) each, which
  it prints as fast as the server reads them. Per-follower lines/s (median over
  followers, from its first to its last line), p50/p99 latency from the Record's
  ``timestamp`` (the server's reading of the line, ms precision) to arrival, server
  CPU per delivered message.
- ``conns``: N idle connections (``--conns``, 1,000), each past its ``server_hello``:
  server RSS per connection (VmRSS before/after).
- ``history``, ``startup``: the side's own ``bench/history_query.py`` and
  ``bench/startup.py`` as subprocesses (``--history-records``, ``--startup-projects``,
  ``--startup-records``; their defaults unless given), figures parsed from their output.

Next to each server figure the client's own CPU (``getrusage``) is reported, as a share
of the wall time: near 1.0 the client, not the server, was the limit.

``--compare REF``: ``git worktree add --detach`` of REF in a scratch directory; its
daemon runs with ``PYTHONPATH=<worktree>`` on this interpreter and its installed
packages (the launcher checks that ``pocket_agent`` was imported from the worktree).
Scenarios alternate A (the working tree) and B (REF) for ``--rounds`` rounds (B first
in odd rounds); the table shows per metric the median of A, of B and A/B. The
worktree is removed (``git worktree remove --force``) at the end whatever happens.

``--profile DIR``: ``py-spy record`` (``pip install py-spy``) samples each daemon of
``rtt`` and ``fanout`` while it is measured; DIR gets the raw stacks
(``<scenario>-<side>-r<round>.txt``, for ``flamegraph.pl`` or speedscope) and
``<scenario>-<side>-r<round>.top.txt``, the functions by own time.

``--trace``: the daemons run with ``logging.trace`` on (one log line per frame in and
out, as ``PA_TRACE_ENABLED=1`` does), to measure what tracing costs; ``rtt`` and
``fanout`` then also report ``trace_lines``, the frame lines the daemon wrote.

``--quick``: tiny sizes for a smoke test (C=2 for 1 s, S=2 x L=200, N=20, history
20,000 records, startup 3 x 2,000), one round unless ``--rounds`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench import load  # noqa: E402
from bench._common import proc_cpu_seconds, proc_rss_kib  # noqa: E402

PYTHON = sys.executable
FAKE_CLAUDE = REPO / "tests" / "fake_claude" / "claude"
SCENARIOS = ("rtt", "fanout", "conns", "history", "startup")
READY = re.compile(r"listening on (wss?)://127\.0\.0\.1:(\d+)/ws")
START_TIMEOUT, STOP_TIMEOUT = 60.0, 15.0
TRACED = re.compile(r"\bFrame (in|out)\b")  # a logging.trace line on the daemon's stdout

# Runs twistd with the side's code first on sys.path and says where pocket_agent came
# from, so a comparison can never silently run the working tree twice.
LAUNCH = """
import sys, pocket_agent
print("bench-launch: pocket_agent from", pocket_agent.__file__, flush=True)
from twisted.scripts.twistd import run
sys.argv = ["twistd", "-n", "--pidfile=", "pocket-agent"] + sys.argv[1:]
run()
"""

# ``bench/startup.py`` starts ``<bin>/pocket-agent-server``, which is the console script
# of the working tree's install; for each side it gets a launcher of that side's entry
# point instead (same interpreter, PYTHONPATH inherited).
STARTUP = """
import sys
from pathlib import Path
sys.path.insert(0, {code!r})
sys.argv = ["startup.py"] + sys.argv[1:]
import bench.startup as startup
startup.SERVER = Path({server!r})
startup.main()
"""


# ----------------------------------------------------------------------------- sides


class Side:
    """One commit's code: the working tree (A) or a worktree of REF (B)."""

    def __init__(self, name: str, label: str, code: Path) -> None:
        self.name, self.label, self.code = name, label, code.resolve()

    def env(self, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PA_")}
        env.update(
            HOME=str(home),
            PYTHONPATH=str(self.code),
            PATH=f"{Path(PYTHON).parent}:{os.environ.get('PATH', '')}",
            PA_LOG_FORMAT="json",
        )
        return env

    def console_script(self, directory: Path) -> Path:
        """A ``pocket-agent-server`` that runs this side's entry point."""
        project = tomllib.loads((self.code / "pyproject.toml").read_text())
        module, _, func = project["project"]["scripts"]["pocket-agent-server"].partition(":")
        script = directory / f"pocket-agent-server-{self.name}"
        script.write_text(
            f"#!{PYTHON}\nimport sys\nsys.path.insert(0, {str(self.code)!r})\n"
            f"from {module} import {func}\nsys.exit({func}())\n"
        )
        script.chmod(0o755)
        return script


class Worktree:
    """``git worktree add --detach`` of a ref in a scratch directory, removed on exit."""

    def __init__(self, ref: str, scratch: Path) -> None:
        self.ref = ref
        self.path = scratch / "ref-worktree"
        commit = git("rev-parse", "--verify", f"{ref}^{{commit}}").strip()
        self.commit = commit
        git("worktree", "add", "--detach", str(self.path), commit)

    def remove(self) -> None:
        try:
            git("worktree", "remove", "--force", str(self.path))
        except subprocess.CalledProcessError as e:
            print(f"warning: git worktree remove failed: {e.stderr}", file=sys.stderr)
            shutil.rmtree(self.path, ignore_errors=True)
            git("worktree", "prune")


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True
    ).stdout


# ---------------------------------------------------------------------------- daemon


class Daemon:
    """One daemon of a side in a fresh scratch root; stopped by its pid."""

    trace = False  # --trace: logging.trace on in every daemon

    def __init__(self, side: Side, base: Path, projects: int, max_connections: int) -> None:
        self.side = side
        self.root, self.home = base / "root", base / "home"
        self.root.mkdir(parents=True)
        self.paths = []
        for i in range(projects):
            path = self.home / f"project{i:03d}"
            path.mkdir(parents=True)
            self.paths.append(str(path))
        config = {
            "listen": ["tcp:0:interface=127.0.0.1"],
            "auth": {"trust_loopback": True},
            "claude": {"binary": str(FAKE_CLAUDE)},
            "timeouts": {"idle": "1h", "execution": "30m"},
            "limits": {
                "max_connections": max_connections,
                "max_projects": max(100, projects + 1),
                "messages_per_second": 1_000_000,
                "executions_per_minute": 1000,
                "send_buffer": "256MiB",
            },
            "logging": {"level": "info", "format": "json", "trace": self.trace},
        }
        (self.root / "config.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML
        self.proc = subprocess.Popen(
            [PYTHON, "-c", LAUNCH, "--root", str(self.root)],
            cwd=self.root,
            env=side.env(self.home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.port = 0
        self.origin = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("bench-launch: pocket_agent from"):
                self.origin = line.split(" from ", 1)[1].strip()
            match = READY.search(line)
            if match and not self.port:
                self.port = int(match.group(2))
                self.ready.set()
        self.ready.set()

    def wait_ready(self) -> int:
        if not self.ready.wait(START_TIMEOUT) or not self.port:
            raise RuntimeError(f"daemon {self.pid} did not start:\n{''.join(self.lines[-40:])}")
        expected = str(self.side.code / "pocket_agent")
        if not self.origin.startswith(expected):
            raise RuntimeError(f"side {self.side.name} runs pocket_agent from {self.origin!r}")
        return self.port

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        return proc_rss_kib(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT)
        self.reader.join(STOP_TIMEOUT)


# ------------------------------------------------------------------------- scenarios


class Profiler:
    """``py-spy record`` attached to a daemon, stopped by its pid (SIGINT writes the file)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "500",
             "--nonblocking", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)
        if self.out.exists():
            top = own_time(self.out.read_text())
            self.out.with_suffix(".top.txt").write_text(top)


def own_time(collapsed: str, shown: int = 40) -> str:
    """Functions by own time (the innermost frame of each sample) and by total time
    (anywhere on the stack), from py-spy's raw output: ``frame;frame;... count``."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        # By function, not line: a recursive or multi-line function counts once a sample.
        for name in {f.split(" (", 1)[0] + " (" + f.split(" (", 1)[-1].split(":")[0] + ")"
                     for f in frames}:  # fmt: skip
            inclusive[name] = inclusive.get(name, 0) + n
        total += n
    lines = [f"{total} samples", "", "own time (by line)"]
    for table_ in (own, inclusive):
        rows = sorted(table_.items(), key=lambda kv: -kv[1])[:shown]
        lines += [f"{100 * n / max(total, 1):5.1f} %  {name}" for name, n in rows]
        if table_ is own:
            lines += ["", "total time (by function)"]
    return "\n".join(lines) + "\n"


def with_daemon(
    side: Side,
    scratch: Path,
    projects: int,
    max_connections: int,
    body: Callable[..., Any],
    profile: Path | None = None,
) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix=f"{side.name}-", dir=scratch))
    daemon = Daemon(side, base, projects, max_connections)
    profiler: Profiler | None = None
    try:
        port = daemon.wait_ready()
        if profile is not None:
            profiler = Profiler(daemon.pid, profile)
        figures: dict[str, Any] = asyncio.run(body(daemon, port))
        if Daemon.trace:
            figures["trace_lines"] = sum(bool(TRACED.search(line)) for line in daemon.lines)
        return figures
    finally:
        try:
            if profiler is not None:
                profiler.stop()
        finally:
            daemon.stop()
            shutil.rmtree(base, ignore_errors=True)


def profile_path(args: argparse.Namespace, scenario: str, side: Side) -> Path | None:
    if args.profile is None:
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    return args.profile / f"{scenario}-{side.name}-r{args.current_round}.txt"


def scenario_rtt(side: Side, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    async def body(daemon: Daemon, port: int) -> dict[str, Any]:
        admin = await load.WSClient.connect("127.0.0.1", port)
        await admin.recv()
        await load.make_projects(admin, daemon.paths)
        await admin.close()
        return await load.rtt("127.0.0.1", port, daemon.cpu, args.connections, args.seconds)

    return with_daemon(
        side, scratch, args.projects, args.connections + 50, body,
        profile_path(args, "rtt", side),
    )  # fmt: skip


def scenario_fanout(side: Side, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    async def body(daemon: Daemon, port: int) -> dict[str, Any]:
        return await load.fanout(
            "127.0.0.1", port, daemon.cpu, daemon.paths[0],
            args.followers, args.lines, args.line_bytes,
        )  # fmt: skip

    return with_daemon(
        side, scratch, 1, args.followers + 50, body, profile_path(args, "fanout", side)
    )


def scenario_conns(side: Side, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    async def body(daemon: Daemon, port: int) -> dict[str, Any]:
        return await load.conns("127.0.0.1", port, daemon.rss_kib, args.conns)

    return with_daemon(side, scratch, 0, args.conns + 50, body)


def run_script(side: Side, argv: list[str], timeout: float = 3600) -> tuple[str, float]:
    start = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="home-"))
    try:
        out = subprocess.run(
            argv, cwd=side.code, env=side.env(home), capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(argv[:3])} failed ({out.returncode}):\n{out.stderr}")
    return out.stdout, time.perf_counter() - start


def scenario_history(side: Side, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    argv = [PYTHON, str(side.code / "bench" / "history_query.py")]
    if args.history_records:
        argv += ["--records", str(args.history_records)]
    argv += ["--dir", str(scratch)]
    text, took = run_script(side, argv)
    figures: dict[str, Any] = {"wall_s": took}
    for line in text.splitlines():
        match = re.match(r"^(\S.*?)\s+([\d.]+)\s+([\d.]+)$", line)
        if match:
            name = re.sub(r"[^a-z0-9]+", "_", match.group(1).lower()).strip("_")
            figures[f"{name}_ms"] = float(match.group(2))
            figures[f"{name}_peak_mb"] = float(match.group(3))
    if len(figures) < 3:
        raise RuntimeError(f"no figures in the output of history_query.py:\n{text}")
    return figures


def scenario_startup(side: Side, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    server = side.console_script(scratch)
    code = STARTUP.format(code=str(side.code), server=str(server))
    argv = [PYTHON, "-c", code]
    if args.startup_projects:
        argv += ["--projects", str(args.startup_projects)]
    if args.startup_records:
        argv += ["--records", str(args.startup_records)]
    text, took = run_script(side, argv)
    figures: dict[str, Any] = {"wall_s": took}
    for key, pattern in (
        ("load_ms", r"load projects \+ histories.*median ([\d.]+) ms"),
        ("process_start_ms", r"process start to listening:\s+median ([\d.]+) ms"),
    ):
        match = re.search(pattern, text)
        if not match:
            raise RuntimeError(f"no {key} in the output of startup.py:\n{text}")
        figures[key] = float(match.group(1))
    return figures


RUNNERS: dict[str, Callable[[Side, Path, argparse.Namespace], dict[str, Any]]] = {
    "rtt": scenario_rtt,
    "fanout": scenario_fanout,
    "conns": scenario_conns,
    "history": scenario_history,
    "startup": scenario_startup,
}

# What the table shows per scenario: (key, label, higher is better). Everything else
# is in --json.
SHOWN = {
    "rtt": [
        ("requests_per_s", "requests/s", True),
        ("p50_ms", "p50 ms", False),
        ("p99_ms", "p99 ms", False),
        ("server_cpu_us_per_request", "server CPU µs/request", False),
        ("server_cpu_share", "server CPU share of wall", None),
        ("client_cpu_us_per_request", "client CPU µs/request", None),
        ("client_cpu_share", "client CPU share of wall", None),
    ],
    "fanout": [
        ("lines_per_s_per_follower", "lines/s per follower", True),
        ("delivered_per_s", "messages/s delivered", True),
        ("p50_ms", "p50 ms (record ts -> arrival)", False),
        ("p99_ms", "p99 ms (record ts -> arrival)", False),
        ("last_line_s_max", "s to last line (slowest)", False),
        ("server_cpu_us_per_message", "server CPU µs/message", False),
        ("server_cpu_share", "server CPU share of wall", None),
        ("client_cpu_us_per_message", "client CPU µs/message", None),
        ("client_cpu_share", "client CPU share of wall", None),
    ],
    "conns": [
        ("rss_kib_per_connection", "server RSS KiB/connection", False),
        ("alive", "connections alive", None),
        ("opened_per_s", "connections opened/s", True),
        ("client_cpu_s", "client CPU s (opening them)", None),
    ],
}


UNSHOWN = ("wall_s", "round", "loadavg_after")

# ---------------------------------------------------------------------------- output


def table(results: dict[str, dict[str, list[dict[str, Any]]]], sides: list[Side]) -> str:
    rows: list[tuple[str, ...]] = []
    header = ["scenario", "metric"] + [f"{s.name}: {s.label}" for s in sides]
    if len(sides) == 2:
        header.append("A/B")
    for scenario, by_side in results.items():
        keys = SHOWN.get(scenario)
        if keys is None:  # history/startup: every figure they print
            first = next(iter(by_side.values()))
            keys = [(k, k, False) for k in (first[0] if first else {}) if k not in UNSHOWN]
        for key, label, _ in keys:
            cells = [scenario, label]
            medians = []
            for side in sides:
                values = [r[key] for r in by_side.get(side.name, []) if key in r]
                med = statistics.median(values) if values else None
                medians.append(med)
                cells.append("-" if med is None else fmt(med))
            if len(sides) == 2:
                a, b = medians
                cells.append(f"{a / b:.2f}" if a is not None and b else "-")
            rows.append(tuple(cells))
    widths = [max(len(str(r[i])) for r in [tuple(header), *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in
                       enumerate(zip(header, widths, strict=True)))]  # fmt: skip
    lines.append("  ".join("-" * w for w in widths))
    previous = None
    for row in rows:
        shown = list(row)
        if row[0] == previous:
            shown[0] = ""
        previous = row[0]
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(shown, widths, strict=True))))  # fmt: skip
    return "\n".join(lines)


def fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# ------------------------------------------------------------------------------ main


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--compare", metavar="REF")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, metavar="FILE")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy each daemon")
    parser.add_argument("--trace", action="store_true", help="logging.trace on")
    parser.add_argument("--connections", type=int, help="rtt: C (10)")
    parser.add_argument("--seconds", type=float, help="rtt: seconds measured (5)")
    parser.add_argument("--projects", type=int, help="rtt: projects in the list (10)")
    parser.add_argument("--followers", type=int, help="fanout: S (50)")
    parser.add_argument("--lines", type=int, help="fanout: L (5000)")
    parser.add_argument("--line-bytes", type=int, default=450, help="fanout: bytes a line")
    parser.add_argument("--conns", type=int, help="conns: N (1000)")
    parser.add_argument("--history-records", type=int)
    parser.add_argument("--startup-projects", type=int)
    parser.add_argument("--startup-records", type=int)
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "rounds": 1 if quick else 3,
        "connections": 2 if quick else 10,
        "seconds": 1.0 if quick else 5.0,
        "projects": 3 if quick else 10,
        "followers": 2 if quick else 50,
        "lines": 200 if quick else 5000,
        "conns": 20 if quick else 1000,
        "history_records": 20_000 if quick else None,
        "startup_projects": 3 if quick else None,
        "startup_records": 2_000 if quick else None,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenario_list) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the daemons and the worktree go too."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    Daemon.trace = args.trace
    stop_on_sigterm()
    raise_fd_limit(args.conns + 1000)  # the daemons inherit it
    scratch = Path(tempfile.mkdtemp(prefix="pa-bench-"))
    worktree: Worktree | None = None
    sides = [Side("A", "working tree", REPO)]
    report: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "json"}}
    report["args"]["json"] = str(args.json) if args.json else None
    report["machine"] = machine()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        if args.compare:
            worktree = Worktree(args.compare, scratch)
            short = worktree.commit[:7]
            label = (
                args.compare
                if worktree.commit.startswith(args.compare)
                else f"{args.compare} ({short})"
            )
            sides.append(Side("B", label, worktree.path))
        report["sides"] = {s.name: {"label": s.label, "code": str(s.code)} for s in sides}
        for scenario in args.scenario_list:
            results[scenario] = {s.name: [] for s in sides}
            for round_ in range(args.rounds):
                order = sides if round_ % 2 == 0 else list(reversed(sides))
                for side in order:
                    started = time.perf_counter()
                    args.current_round = round_ + 1
                    figures = RUNNERS[scenario](side, scratch, args)
                    figures["round"] = round_ + 1
                    figures["loadavg_after"] = os.getloadavg()
                    results[scenario][side.name].append(figures)
                    print(
                        f"[{scenario} round {round_ + 1} {side.name}] "
                        f"{time.perf_counter() - started:.1f}s  {summary(scenario, figures)}",
                        flush=True,
                    )
        report["machine"]["loadavg_end"] = os.getloadavg()
        print()
        print(f"medians of {args.rounds} round(s); machine: {os.cpu_count()} CPUs, load "
              f"{report['machine']['loadavg_start'][0]:.2f} at start, "
              f"{report['machine']['loadavg_end'][0]:.2f} at end")  # fmt: skip
        print(table(results, sides))
    finally:
        report["results"] = results
        if args.json:
            args.json.write_text(json.dumps(report, indent=1, default=str))
        if worktree is not None:
            worktree.remove()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def summary(scenario: str, figures: dict[str, Any]) -> str:
    keys = [k for k, _, _ in SHOWN.get(scenario, [])][:4] or [
        k for k in figures if k not in UNSHOWN
    ][:4]
    return "  ".join(f"{k}={fmt(figures[k])}" for k in keys if k in figures)


if __name__ == "__main__":
    sys.exit(main())
