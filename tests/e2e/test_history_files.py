"""An operator's files beside the history (the seed's ``.bak`` copies) against the real daemon."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.test_history import seed_repair_loop

from .daemon import Client, DaemonPool, run_console
from .test_runs import FAKE_ENV, run_until_idle

pytestmark = pytest.mark.e2e

ENV = {**FAKE_ENV, "PA_LOG_ROTATION_COUNT": "10"}  # compress is on by default


def stored_seqs(logs: Path) -> list[int]:
    """Every seq in the history files, read straight from the disk. A ``.gz`` beside its
    plain file is a compression the shutdown cut short (the index still names the
    plain file, and the next start deletes the ``.gz``): it is not counted."""
    seqs = []
    for path in logs.glob("messages_*.jsonl*"):
        twin = path.with_suffix("")
        # messages_current.jsonl.gz is no twin: an operator's gzip of it is history too.
        if path.suffix == ".gz" and twin.name != "messages_current.jsonl" and twin.exists():
            continue
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        seqs += [json.loads(line)["seq"] for line in data.splitlines()]
    return sorted(seqs)


def run(client: Client, pid: str, prompt: str) -> None:
    client.send("execute", {"prompt": prompt}, project_id=pid, request_id="x")
    run_until_idle(client)


def all_messages(client: Client, pid: str, **query: Any) -> list[int]:
    reply = client.request(
        "get_messages", {"limit": 1000, **query}, project_id=pid, request_id="g"
    )
    assert reply["type"] == "message_history", reply
    assert not reply["data"]["has_more"]
    return [m["seq"] for m in reply["data"]["messages"]]


def test_operator_copies_in_logs_are_neither_served_nor_touched(
    daemons: DaemonPool, root: Path, home: Path, clients: Callable[..., Client]
) -> None:
    daemon = daemons.start(root, home, env=ENV)
    client = clients(daemon)
    (home / "app").mkdir()
    pid = client.request("project_create", {"path": str(home / "app")}, request_id="c")[
        "project_id"
    ]
    client.request("project_join", project_id=pid, request_id="j")
    run(client, pid, "fake:slow:25:0")
    client.close()
    assert daemon.terminate() == 0

    logs = root / "data" / "projects" / pid / "logs"
    seqs = stored_seqs(logs)
    assert len(seqs) > 25 and seqs == list(range(1, len(seqs) + 1))
    copies = seed_repair_loop(logs)  # cp f f.bak; jq -c . < f.bak > f
    [rotated, *_] = sorted(logs.glob("messages_*.jsonl.gz"))
    copies.append(logs / f"{rotated.name}.bak")
    copies[-1].write_bytes(rotated.read_bytes())
    copies.append(logs / f"{rotated.name.removesuffix('.gz')}.corrupted")
    copies[-1].write_bytes(gzip.decompress(rotated.read_bytes()))
    foreign = {p.name: p.read_bytes() for p in copies}
    assert "messages_current.jsonl.bak" in foreign

    repaired = run_console(["repair", "--root", str(root)], home, root)
    assert repaired.returncode == 0, repaired.stderr
    assert f"last_seq={len(seqs)}" in repaired.stdout

    again = daemons.start(root, home, env=ENV)
    phone = clients(again)
    assert all_messages(phone, pid, after_seq=0) == seqs  # each record exactly once
    assert all_messages(phone, pid) == seqs  # newest first, the same
    phone.request("project_join", project_id=pid, request_id="j")
    run(phone, pid, "fake:slow:15:0")  # more rotations and compressions
    later = all_messages(phone, pid, after_seq=0)
    assert later == list(range(1, len(later) + 1)) and len(later) > len(seqs) + 15
    phone.close()
    assert again.terminate() == 0

    assert {name: (logs / name).read_bytes() for name in foreign} == foreign
    assert not [p.name for p in logs.iterdir() if p.name.endswith((".bak.gz", ".corrupted.gz"))]
    # Reported once, at the restart, naming the file and the project. (Start-up events
    # reach twistd's output; server.log only gets what is logged after start-up.)
    output = again.output()
    for name in foreign:
        assert output.count(f"{name} in the history of project {pid} is not a history") == 1
