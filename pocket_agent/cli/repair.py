"""``pocket-agent-server repair``: SPEC §6's start-up recovery on a stopped server's data."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from pocket_agent.compose import build_registry
from pocket_agent.storage import DataDirLock, DataDirLocked
from pocket_agent.tap import Options

from .options import parse


class RepairOptions(Options):
    synopsis = "repair [--root DIR] [--data-dir DIR] [--config PATH]"


def repair_command(argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    """SPEC §6 start-up recovery on a stopped server's data, reading every history file."""
    options = parse(RepairOptions(), argv, "pocket-agent-server repair")
    if options is None or options.config is None:
        return 2
    config = options.config
    from twisted.internet import reactor

    lock = DataDirLock(config.data_dir / ".lock")
    try:
        lock.acquire()
    except DataDirLocked as e:
        print(f"pocket-agent-server repair: {e.message}; stop the server first", file=sys.stderr)
        return 1
    try:
        # No thread pool: compress here and now, in this process.
        registry = build_registry(config, reactor, run_in_thread=None)
        report = registry.load(full_check=True)
        registry.close()
    finally:
        lock.release()
    print(f"{config.data_dir}: {report.loaded} projects", file=out)
    for item in report.quarantined:
        print(f"  quarantined {item}", file=out)
    for pid in report.rebuilt:
        print(f"  rebuilt metadata of {pid} from the project index", file=out)
    for pid in report.lost:
        print(f"  LOST {pid}: no readable metadata and no index entry", file=out)
    if report.tmp_removed:
        print(f"  removed {report.tmp_removed} stray temporary files", file=out)
    for pid, repair in registry.history_repairs.items():
        fixes = [
            f"cut {repair.torn_bytes} torn bytes" if repair.torn_bytes else "",
            f"skipped {repair.invalid_lines} invalid lines" if repair.invalid_lines else "",
            f"expired {repair.segments_expired} old files" if repair.segments_expired else "",
            f"removed {repair.tmp_removed} temporary files" if repair.tmp_removed else "",
            f"{repair.damaged_files} damaged files (copies in data/corrupted)"
            if repair.damaged_files
            else "",
        ]
        text = ", ".join(f for f in fixes if f) or "index rebuilt"
        print(f"  history of {pid}: {text}", file=out)
    for project in registry.all():
        print(f"  {project.id} {project.path} last_seq={project.last_seq}", file=out)
    return 0
