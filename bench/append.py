"""Append throughput of Records while a run streams.

    python bench/append.py [--records N]

Measures, for typical Claude lines (~450 bytes): History.append alone (flush to the
OS per record, rotation every 10,000 records, compression off the clock as it runs
in a thread in the server), and the whole streaming path of a run: stdout bytes ->
line splitter -> parse -> History.append -> agent_message encoded for 2 followers.
Target (issue 4): at least 50,000 records/s. Median of 5 runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.task import Clock

from bench._common import LINE, MESSAGE
from pocket_agent.config import LogRotation
from pocket_agent.history import History
from pocket_agent.runs.streamjson import LineSplitter, parse_line
from pocket_agent.wire.messages import AgentMessage

ROTATION = LogRotation(size=100_000_000, count=10_000, compress=False, max_age=0)


def history_in(tmp: str) -> History:
    history = History(Path(tmp) / "logs", Clock(), ROTATION, Path(tmp) / "corrupted")
    history.open()
    return history


def append_only(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        history = history_in(tmp)
        start = time.perf_counter()
        for _ in range(n):
            history.append("run", "claude", MESSAGE, LINE)
        history.sync()
        elapsed = time.perf_counter() - start
        history.close()
    return n / elapsed


def streaming_path(n: int, followers: int = 2) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        history = history_in(tmp)
        sent = [0]

        def on_line(line: bytes) -> None:
            message = parse_line(line)
            assert message is not None
            record = history.append("run", "claude", message, line)
            frame = AgentMessage("project", record.line)
            for _ in range(followers):
                sent[0] += len(frame.encode())

        splitter = LineSplitter(on_line, lambda head, size: None)
        blob = (LINE + b"\n") * 1000
        start = time.perf_counter()
        for _ in range(n // 1000):
            for i in range(0, len(blob), 65536):  # pipe-sized reads
                splitter.feed(blob[i : i + 65536])
        history.sync()
        elapsed = time.perf_counter() - start
        history.close()
    return (n // 1000 * 1000) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    for name, fn in (
        ("History.append", append_only),
        ("stdout -> history -> 2 followers", streaming_path),
    ):
        rates = [fn(args.records) for _ in range(5)]
        print(
            f"{name:34} {statistics.median(rates):>10,.0f} records/s (min {min(rates):,.0f}, max {max(rates):,.0f})"
        )


if __name__ == "__main__":
    main()
