"""Start-up time with 100 projects each holding 100,000 records.

    python bench/startup.py [--projects N] [--records N]

Builds one project's history (rotated, compressed), copies it to every project,
then measures (median of 5) the in-process load of all projects and histories
(``ProjectRegistry.load``), and the wall time from starting ``pocket-agent-server``
(a new process, listening on 127.0.0.1 port 0) to its "listening on" line; the
server is stopped with SIGTERM by its pid. Target (issue 4): under 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.task import Clock

from bench._common import build_history
from pocket_agent.compose import build_registry
from pocket_agent.config import Overrides, load_config

SERVER = Path(sys.executable).parent / "pocket-agent-server"


def prepare(root: Path, home: Path, projects: int, records: int) -> None:
    template = root / "template" / "logs"
    build_history(template, records).close()
    data = root / "data" / "projects"
    for i in range(projects):
        pid = str(uuid.uuid4())
        path = home / f"p{i:03d}"
        path.mkdir(parents=True)
        (data / pid).mkdir(parents=True)
        shutil.copytree(template, data / pid / "logs")
        meta = {"id": pid, "path": str(path), "created_at": "2026-01-01T00:00:00.000Z",
                "last_active": "2026-01-01T00:00:00.000Z", "session_id": None}  # fmt: skip
        (data / pid / "metadata.json").write_text(json.dumps(meta))
    shutil.rmtree(root / "template")


def load_once(root: Path, home: Path) -> float:
    config = load_config(Overrides(root=str(root)), environ={"HOME": str(home)})
    registry = build_registry(config, Clock())
    start = time.perf_counter()
    registry.load()
    elapsed = time.perf_counter() - start
    registry.close()
    return elapsed


def process_once(root: Path, home: Path) -> float:
    env = {**os.environ, "HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(SERVER), "--root", str(root), "--listen", "ssl:0:interface=127.0.0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "listening on" in line:
                return time.perf_counter() - start
        raise RuntimeError("the server exited before listening")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, home = Path(tmp) / "root", Path(tmp) / "home"
        start = time.perf_counter()
        prepare(root, home, args.projects, args.records)
        total = args.projects * args.records
        print(
            f"prepared {args.projects} projects x {args.records:,} records ({total:,}) in {time.perf_counter() - start:.1f}s"
        )
        loads = [load_once(root, home) for _ in range(5)]
        print(
            f"load projects + histories (in process): median {statistics.median(loads) * 1000:.0f} ms"
        )
        starts = [process_once(root, home) for _ in range(5)]
        print(
            f"process start to listening:             median {statistics.median(starts) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
