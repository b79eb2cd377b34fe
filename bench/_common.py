"""Shared by the benchmarks: realistic records and a quick way to build big histories."""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from twisted.internet.task import Clock

from pocket_agent.config import LogRotation
from pocket_agent.history import History

# A typical assistant line from the recorded conversations (about 450 bytes).
LINE = json.dumps(
    {
        "type": "assistant",
        "message": {
            "id": "msg_012AXPE2NXyc2KgD6DC6h2j8",
            "model": "claude-opus-4-20250514",
            "role": "assistant",
            "content": [
                {
                    "type": "text",
                    "text": "I'm doing well, thank you! How can I help you with your coding tasks today?",
                }
            ],
            "stop_reason": None,
            "usage": {
                "input_tokens": 3,
                "output_tokens": 22,
                "cache_creation_input_tokens": 14194,
            },
        },
        "parent_tool_use_id": None,
        "session_id": "15aa8498-9d20-4fcb-8459-9190f477322e",
    },
    separators=(",", ":"),
).encode()
MESSAGE = json.loads(LINE)
ROTATION = LogRotation(size=100_000_000, count=10_000, compress=True, max_age=0)


WORDS = "the a to of and in is it you that for on with as this be are or not file test run".split()


def varied_line(i: int, rng: random.Random) -> bytes:
    """LINE with a different text each time, so compression is not flattered."""
    text = " ".join(rng.choice(WORDS) for _ in range(12)) + f" #{i}"
    return LINE.replace(
        b"I'm doing well, thank you! How can I help you with your coding tasks today?",
        text.encode(),
    )


def build_history(directory: Path, records: int, rotation: LogRotation = ROTATION) -> History:
    clock = Clock()
    clock.advance(1_764_000_000)
    history = History(directory, clock, rotation, directory.parent / "corrupted")
    history.open()
    rng = random.Random(7)
    directions = ("claude",) * 18 + ("server", "client")
    for i in range(records):
        line = varied_line(i, rng)
        history.append("run", directions[i % 20], MESSAGE, line)
        if i % 100 == 0:
            clock.advance(1)
    history.sync()
    return history


def median_ms(fn: Callable[[], object], runs: int = 21) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


# ------------------------------------------------------------- process figures (/proc)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[min(len(ordered), int(rank)) - 1]


def proc_rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def proc_fds(pid: int) -> int:
    """How many file descriptors a process has open (0 when it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return 0


def proc_children(pid: int) -> list[int]:
    """Every living descendant of ``pid``, from the parent links in /proc/*/stat."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields and fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(kids)
        frontier.extend(kids)
    return found


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except FileNotFoundError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
