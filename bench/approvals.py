"""What a permission prompt costs the server (SPEC §10).

    python bench/approvals.py [--runs R]

1. The preview (``runs/preview.build_preview``), which the daemon builds in the reactor's
   thread pool because it reads the file and diffs it: medians for an Edit of a
   100-line file, a Write that rewrites a 4,000-line file completely (the worst case of
   the diff), a Write over a 1 MiB file (the largest read), and a Bash command.
2. One prompt end to end on the reactor thread, in memory (tests.support.Harness, two
   followers): claude's ``control_request`` line -> ``permission_request`` Record and
   ``project_state`` to both followers -> a ``permission_response`` frame from one ->
   the ``control_response`` line on claude's stdin. The preview is built inline here
   (no thread pool in the harness), for a small Write.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import median_ms, percentile
from pocket_agent.runs.preview import build_preview
from tests.support import Harness
from tests.test_execution import setup


def previews(runs: int) -> None:
    directory = Path(tempfile.mkdtemp())
    small = directory / "small.py"
    small.write_text("".join(f"line {i} = {i * i}\n" for i in range(100)))
    big = directory / "big.txt"
    big.write_text("".join(f"old line number {i}\n" for i in range(4000)))
    huge = directory / "huge.txt"
    huge.write_text("x" * 80 + "\n" * 1 + ("y" * 80 + "\n") * ((1 << 20) // 81))
    cases = {
        "Edit, 100-line file": (
            "Edit",
            {"file_path": str(small), "old_string": "line 50 ", "new_string": "line fifty "},
        ),
        "Write, 4,000 lines all changed": (
            "Write",
            {"file_path": str(big), "content": "".join(f"new {i}\n" for i in range(4000))},
        ),
        "Write over a 1 MiB file": ("Write", {"file_path": str(huge), "content": "short\n"}),
        "Bash": ("Bash", {"command": "git status --short", "description": "status"}),
    }
    print("preview build (median of", runs, "runs):")
    for name, (tool, tool_input) in cases.items():
        ms = median_ms(lambda t=tool, i=tool_input: build_preview(t, i, directory), runs=runs)
        shown = build_preview(tool, tool_input, directory)
        size = len((shown.text if shown else "").encode())
        print(f"  {name:34} {ms:8.3f} ms   preview {size:,} bytes"
              f"{' (truncated)' if shown and shown.truncated else ''}")  # fmt: skip


def round_trips(runs: int) -> None:
    harness = Harness(Path(tempfile.mkdtemp()), limits={"messages_per_second": 1_000_000})
    try:
        pid, [phone, tablet] = setup(harness, followers=2)
        phone.request("execute", project_id=pid, data={"prompt": "go"})
        process = harness.clock.processes[-1]
        phone.new(), tablet.new()
        times: list[float] = []
        for i in range(runs):
            line = {
                "type": "control_request",
                "request_id": f"r{i}",
                "request": {
                    "subtype": "can_use_tool",
                    "tool_name": "Write",
                    "input": {"file_path": "notes.txt", "content": f"note {i}\n"},
                    "tool_use_id": f"toolu_{i}",
                },
            }
            start = time.perf_counter()
            process.emit(line)
            seen = phone.new()
            tablet.new()
            [request] = [
                m["data"]["message"]
                for m in seen
                if m["type"] == "agent_message"
                and m["data"]["message"]["type"] == "permission_request"
            ]
            phone.request(
                "permission_response",
                project_id=pid,
                data={"permission_id": request["permission_id"], "behavior": "allow"},
            )
            tablet.new()
            times.append((time.perf_counter() - start) * 1e6)
            assert json.loads(process.stdin.splitlines()[-1])["response"]["request_id"] == f"r{i}"
        times.sort()
        print(f"prompt round trip in memory, 2 followers ({runs} prompts, one run):")
        print(f"  p50 {percentile(times, 50):8.0f} µs   p99 {percentile(times, 99):8.0f} µs")
    finally:
        harness.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    previews(args.runs)
    round_trips(max(args.runs, 200))


if __name__ == "__main__":
    main()
