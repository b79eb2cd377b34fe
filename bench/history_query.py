"""get_messages on 1,000,000 records in rotated, compressed files.

    python bench/history_query.py [--records N] [--dir DIR]

Prints the median time and the peak memory (tracemalloc) of: the newest 100, a
middle page forward (after_seq), a middle page backward (before_seq), and a
filtered page. Targets (issue 4): under 50 ms each, under 20 MB peak.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import build_history, median_ms
from pocket_agent.history import Query


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        start = time.perf_counter()
        history = build_history(Path(tmp) / "logs", args.records)
        built = time.perf_counter() - start
        files = len(history.segments)
        size = sum((Path(tmp) / "logs" / s.name).stat().st_size for s in history.segments)
        print(
            f"built {args.records:,} records in {built:.1f}s: {files} rotated files, {size / 1e6:.1f} MB compressed"
        )
        middle = args.records // 2
        cases = {
            "newest 100": Query(limit=100),
            "middle 100 (after_seq)": Query(after_seq=middle, limit=100),
            "middle 100 (before_seq)": Query(before_seq=middle, limit=100),
            "oldest 1000 (after_seq=0)": Query(after_seq=0, limit=1000),
            "newest 100 client-only (rare)": Query(
                limit=100, direction="client", before_seq=args.records - 5000
            ),
        }
        print(f"{'query':34} {'median ms':>10} {'peak MB':>9}")
        for name, q in cases.items():
            ms = median_ms(lambda q=q: history.query(q))
            tracemalloc.start()
            history.query(q)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"{name:34} {ms:10.2f} {peak / 1e6:9.2f}")
        history.close()


if __name__ == "__main__":
    main()
