"""/metrics render time with 100 projects, on the reactor thread as the daemon does it.

    python bench/metrics.py [--projects N] [--connections C] [--runs R]

Builds the real object graph in memory (tests.support.Harness), creates N projects,
opens C in-memory connections, plays R finished runs per outcome so every series has
values, then times (median of 51): ``Metrics.render`` alone (prometheus_client's
``generate_latest`` over the server's registry, process collector included: it reads
/proc/self) and a whole ``GET /metrics`` through twisted.web over an in-memory socket
(HTTP parsing, the token check, the response). Both block the reactor thread for
that long once per scrape.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import median_ms
from tests.support import Harness
from tests.test_web import http_get


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    harness = Harness(
        Path(tempfile.mkdtemp()),
        # the set-up sends hundreds of requests at once: no messages_per_second in the way
        limits={"max_projects": max(100, args.projects), "messages_per_second": 1_000_000},
    )
    try:
        clients = [harness.hello()[0] for _ in range(args.connections)]
        pids = []
        for i in range(args.projects):
            path = str(harness.project_dir(f"p{i}"))
            pids.append(clients[0].request("project_create", data={"path": path})[0]["project_id"])
        result = {"type": "result", "is_error": False, "total_cost_usd": 0.01}
        for i in range(args.runs):
            for exit_code in (0, 1):  # success, failed
                clients[0].request("execute", project_id=pids[i], data={"prompt": "go"})
                process = harness.clock.processes[-1]
                process.emit({**result, "is_error": bool(exit_code)})
                process.exit(exit_code)
        assert len(harness.app.registry) == args.projects

        body, _ = harness.app.metrics.render()
        render = median_ms(harness.app.metrics.render, runs=51)
        http = median_ms(lambda: http_get(harness.app.site, "/metrics"), runs=51)
        assert b"pocket_agent_projects_total %d.0" % args.projects in body
        print(
            f"{args.projects} projects, {args.connections} connections, "
            f"{2 * args.runs} finished runs; exposition {len(body):,} bytes"
        )
        print(f"Metrics.render (generate_latest)  median {render:.3f} ms")
        print(f"GET /metrics through twisted.web  median {http:.3f} ms")
    finally:
        harness.stop()


if __name__ == "__main__":
    main()
