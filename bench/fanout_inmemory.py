"""Records through the whole domain and transport, in memory, per second.

    python bench/fanout_inmemory.py [--records N] [--followers F]

The fake claude's stdout (played by the benchmark) -> the run machine -> the executor
-> History.append -> the event bus -> the hub -> each follower's connection ->
autobahn framing -> an in-memory autobahn client that decodes every frame (iosim),
all on one thread, with the garbage collector off while timing. The client side is
counted too, so compare commits with it
(checkout A, run, checkout B, run), not with a real network. Median of 5 runs.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import LINE
from tests.support import Harness


def one_run(records: int, followers: int) -> float:
    harness = Harness(Path(tempfile.mkdtemp()))
    try:
        clients = [harness.hello()[0] for _ in range(followers)]
        path = str(harness.project_dir("app"))
        pid = clients[0].request("project_create", data={"path": path})[0]["project_id"]
        for client in clients:
            client.request("project_join", project_id=pid)
        clients[0].request("execute", project_id=pid, data={"prompt": "go"})
        process = harness.clock.processes[-1]
        line = LINE + b"\n"
        gc.collect()
        gc.disable()  # the collector's timing is noise here, not a property of the code
        started = time.perf_counter()
        for i in range(records):
            process.protocol.outReceived(line)
            if i % 100 == 99:
                for pump in harness.pumps:
                    pump.flush()
        for pump in harness.pumps:
            pump.flush()
        elapsed = time.perf_counter() - started
        gc.enable()
        got = sum(m["type"] == "agent_message" for m in clients[-1].protocol.received)
        assert got >= records, got
        return records / elapsed
    finally:
        harness.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--followers", type=int, default=2)
    args = parser.parse_args()
    rates = [one_run(args.records, args.followers) for _ in range(5)]
    print(
        f"{args.records} records to {args.followers} followers: "
        f"median {statistics.median(rates):,.0f} records/s "
        f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})"
    )


if __name__ == "__main__":
    main()
