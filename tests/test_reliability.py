"""Faults the domain must survive, in memory: a swapped directory, a full disk, a crash
(issue 8, holes 1-3). The same faults against the real daemon: tests/e2e/test_faults.py."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pocket_agent.core.projects import ProjectStatus
from pocket_agent.core.storagewatch import RETRY_INTERVAL, StorageFailed, StorageRecovered
from pocket_agent.runs.liverun import LIVE_RUN, LiveRun, LiveRunFile
from tests.support import Client, Harness
from tests.test_execution import INIT, RESULT, TEXT, kinds, setup, start

# ------------------------------------------------------------ directory swap


def test_a_directory_replaced_by_a_symlink_to_root_starts_nothing(harness: Harness) -> None:
    pid, [client] = setup(harness)
    path = harness.home / "app"
    path.rmdir()
    path.symlink_to("/")
    replies = client.request("execute", project_id=pid, request_id="r1", data={"prompt": "x"})
    assert harness.clock.processes == []
    error = next(m for m in replies if m["type"] == "error")
    assert error["request_id"] == "r1"
    assert error["data"]["code"] == "INVALID_PATH"
    assert "now resolves to /" in error["data"]["message"]
    [state] = [m["data"] for m in replies if m["type"] == "project_state"]
    assert state["state"] == "ERROR" and "now resolves to /" in state["error_details"]
    assert "execute" not in kinds(replies)
    meta = json.loads((harness.config.data_dir / "projects" / pid / "metadata.json").read_text())
    assert "now resolves to /" in meta["error_details"]  # survives a restart


def test_a_swapped_parent_directory_is_caught_too(harness: Harness) -> None:
    clients = [harness.hello()[0]]
    inner = harness.project_dir("outer/inner")
    pid = clients[0].request("project_create", data={"path": str(inner)})[0]["project_id"]
    outer = harness.home / "outer"
    os.rename(outer, harness.home / "outer-moved")
    (harness.home / "elsewhere" / "inner").mkdir(parents=True)
    outer.symlink_to(harness.home / "elsewhere")
    replies = clients[0].request("execute", project_id=pid, data={"prompt": "x"})
    assert harness.clock.processes == []
    error = next(m["data"] for m in replies if m["type"] == "error")
    assert error["code"] == "INVALID_PATH" and "elsewhere/inner" in error["message"]


def test_a_deleted_directory_is_an_error_not_a_crash(harness: Harness) -> None:
    pid, [client] = setup(harness)
    (harness.home / "app").rmdir()
    replies = client.request("execute", project_id=pid, data={"prompt": "x"})
    error = next(m["data"] for m in replies if m["type"] == "error")
    assert error["code"] == "INVALID_PATH" and "no longer exists" in error["message"]
    assert harness.app.registry.get(pid).status is ProjectStatus.ERROR


def test_the_directory_claude_runs_in_is_the_one_checked(harness: Harness) -> None:
    """Swapped after the check: claude still starts in the directory that was checked
    (the server holds it open), not in what the path names now."""
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    path = harness.home / "app"
    os.rename(path, harness.home / "app-held")
    path.symlink_to("/")
    assert process.workdir() == str(harness.home / "app-held")
    assert process.child_fds is not None
    held = process.child_fds[3]
    process.emit(INIT, RESULT)
    process.exit(0)
    with pytest.raises(OSError):
        os.fstat(held)  # closed once the run ended: no descriptor leaks


# ------------------------------------------------------------------ full disk


class FullDisk:
    """The project's history and the storage probe fail with ENOSPC while ``full``."""

    def __init__(self, harness: Harness, pid: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        self.attempts = 0
        history = harness.app.registry.history(pid)
        append = history.append
        storage = harness.app.executor.storage
        probe = storage._probe

        def failing_append(*args: Any, **kwargs: Any) -> Any:
            if self.full:
                self.attempts += 1
                raise OSError(errno.ENOSPC, "No space left on device")
            return append(*args, **kwargs)

        def failing_probe() -> None:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            probe()

        monkeypatch.setattr(history, "append", failing_append)
        monkeypatch.setattr(storage, "_probe", failing_probe)


def storage_errors(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "error" and m["data"]["code"] == "STORAGE_ERROR"]


def test_a_full_disk_mid_run_stops_the_run_and_tells_everyone_once(
    make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = make_harness()
    pid, clients = setup(harness, followers=2)
    disk = FullDisk(harness, pid, monkeypatch)
    process, _ = start(harness, clients[0], pid)
    for client in clients:
        client.new()
    process.emit(INIT)
    disk.full = True
    process.emit(*[TEXT] * 50)
    tree = harness.clock.trees[-1]
    assert tree.signals[0] == ("leader", 2)  # SIGINT: the §5 escalation has begun
    assert disk.attempts == 1  # later lines are counted, not tried one by one
    for client in clients:
        assert len(storage_errors(client.new())) == 1
    assert len(harness.events.of(StorageFailed)) == 1
    assert harness.app.health.report()["status"] == "degraded"
    assert "No space left" in harness.app.health.report()["storage"]["error"]

    process.emit(RESULT)
    process.exit(1)
    for client in clients:
        messages = client.new()
        [finished] = [m["data"] for m in messages if m["type"] == "execution_finished"]
        assert finished["outcome"] == "failed" and finished["reason"] == "storage"
        state = [m["data"] for m in messages if m["type"] == "project_state"][-1]
        assert state["state"] == "ERROR"
        assert "51 records of this run were not stored" in state["error_details"]

    # Space comes back: the end is written by the retry, health is whole again.
    disk.full = False
    harness.clock.advance(RETRY_INTERVAL)
    assert len(harness.events.of(StorageRecovered)) == 1
    assert harness.app.health.report()["storage"] == {"writable": True, "error": None}
    lines = [json.loads(line) for line in harness.app.registry.history(pid).iter_all()]
    assert lines[-1]["message"]["type"] == "execution_finished"
    assert lines[-1]["message"]["reason"] == "storage"
    seqs = [line["seq"] for line in lines]
    assert seqs == list(range(1, len(seqs) + 1))  # what was written is intact
    assert not (harness.config.data_dir / "projects" / pid / LIVE_RUN).exists()
    second, _ = start(harness, clients[0], pid)  # usable again
    assert second is not process


def test_a_full_disk_is_logged_once_not_once_per_line(
    make_harness: Callable[..., Harness],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from twisted.logger import globalLogPublisher

    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        harness = make_harness()
        pid, [client] = setup(harness)
        disk = FullDisk(harness, pid, monkeypatch)
        process, _ = start(harness, client, pid)
        disk.full = True
        process.emit(*[TEXT] * 200)
        process.exit(1)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    failures = [e for e in logged if e.get("log_failure") is not None]
    assert failures == []
    storage = [e for e in logged if "Cannot write the data directory" in e.get("log_format", "")]
    assert len(storage) == 1


def test_an_execute_while_the_disk_is_full_is_refused_cleanly(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid, [client] = setup(harness)
    disk = FullDisk(harness, pid, monkeypatch)
    disk.full = True
    replies = client.request("execute", project_id=pid, data={"prompt": "x"})
    assert {m["type"] for m in replies} == {"error"}
    assert {m["data"]["code"] for m in replies} == {"STORAGE_ERROR"}
    assert harness.clock.processes == []
    assert not (harness.config.data_dir / "projects" / pid / LIVE_RUN).exists()


# ---------------------------------------------------------------------- crash


def crash(harness: Harness) -> None:
    """What SIGKILL leaves: no shutdown, no execution_finished, the lock let go."""
    harness.app.registry.close()
    harness.app.lock.release()
    harness.service.running = False


def history_of(harness: Harness, client: Client, pid: str) -> list[dict[str, Any]]:
    replies = client.request("get_messages", project_id=pid, data={"limit": 1000})
    [page] = [m["data"] for m in replies if m["type"] == "message_history"]
    return [r["message"] | {"_run_id": r["run_id"], "_seq": r["seq"]} for r in page["messages"]]


def test_a_run_cut_off_by_a_crash_is_closed_at_the_next_start(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    first = make_harness()
    pid, [client] = setup(first)
    process, replies = start(first, client, pid)
    run_id = next(m["data"]["run_id"] for m in replies if m["type"] == "execute")
    process.emit(INIT, TEXT)
    live = LiveRunFile(first.config.data_dir / "projects" / pid).read()
    assert live is not None and live.run_id == run_id and live.pid == process.pid
    crash(first)

    second = make_harness()
    [client] = [second.hello()[0]]
    messages = history_of(second, client, pid)
    assert [m["type"] for m in messages][-1] == "execution_finished"
    end = messages[-1]
    assert (end["run_id"], end["outcome"], end["reason"]) == (run_id, "killed", "server_crash")
    assert [m["_seq"] for m in messages] == list(range(1, len(messages) + 1))
    assert not (second.config.data_dir / "projects" / pid / LIVE_RUN).exists()
    assert second.app.registry.get(pid).status is ProjectStatus.IDLE
    start(second, client, pid)  # and a new run starts


def test_a_run_whose_end_was_written_is_not_closed_twice(
    make_harness: Callable[..., Harness],
) -> None:
    """The crash came between execution_finished and the removal of the live file."""
    first = make_harness()
    pid, [client] = setup(first)
    process, replies = start(first, client, pid)
    run_id = next(m["data"]["run_id"] for m in replies if m["type"] == "execute")
    process.emit(INIT, RESULT)
    process.exit(0)
    LiveRunFile(first.config.data_dir / "projects" / pid).write(LiveRun(run_id, 0.0, None))
    crash(first)

    second = make_harness()
    client = second.hello()[0]
    ends = [m for m in history_of(second, client, pid) if m["type"] == "execution_finished"]
    assert [e["outcome"] for e in ends] == ["success"]
    assert not (second.config.data_dir / "projects" / pid / LIVE_RUN).exists()


def test_a_pending_end_is_written_before_the_next_runs_records(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Space came back but the retry has not run yet: the next execute writes the old
    run's end first, so the history never shows a run starting inside another."""
    pid, [client] = setup(harness)
    disk = FullDisk(harness, pid, monkeypatch)
    process, replies = start(harness, client, pid)
    first_run = next(m["data"]["run_id"] for m in replies if m["type"] == "execute")
    disk.full = True
    process.emit(INIT)
    process.exit(1)  # its execution_finished cannot be written either
    disk.full = False
    start(harness, client, pid)
    lines = [json.loads(line) for line in harness.app.registry.history(pid).iter_all()]
    types = [(line["run_id"], line["message"]["type"]) for line in lines]
    end = types.index((first_run, "execution_finished"))
    assert types[end + 1][1] == "user_prompt" and types[end + 1][0] != first_run
    harness.clock.advance(RETRY_INTERVAL)  # nothing left to retry: not written twice
    lines = [json.loads(line) for line in harness.app.registry.history(pid).iter_all()]
    ends = [x for x in lines if x["message"]["type"] == "execution_finished"]
    assert [e["run_id"] for e in ends] == [first_run]


@pytest.mark.parametrize("live_file", ["missing", "damaged"])
def test_a_cut_off_run_without_a_usable_live_file_is_closed_from_the_history(
    make_harness: Callable[..., Harness], live_file: str
) -> None:
    """A crash before the live-run file existed, a server older than it, a torn file:
    the history's last Record belongs to a run with no end, and that is enough."""
    first = make_harness()
    pid, [client] = setup(first)
    process, replies = start(first, client, pid)
    run_id = next(m["data"]["run_id"] for m in replies if m["type"] == "execute")
    process.emit(INIT, TEXT)
    path = first.config.data_dir / "projects" / pid / LIVE_RUN
    if live_file == "missing":
        path.unlink()
    else:
        path.write_text("{not json")
    crash(first)

    second = make_harness()
    client = second.hello()[0]
    end = history_of(second, client, pid)[-1]
    assert (end["type"], end["run_id"], end["reason"]) == (
        "execution_finished",
        run_id,
        "server_crash",
    )
    assert not path.exists()


def test_a_successful_run_whose_end_cannot_be_written_is_an_error(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid, [client] = setup(harness)
    disk = FullDisk(harness, pid, monkeypatch)
    process, _ = start(harness, client, pid)
    process.emit(INIT, TEXT, RESULT)
    disk.full = True
    process.exit(0)
    messages = client.new()
    assert [m["data"]["outcome"] for m in messages if m["type"] == "execution_finished"] == [
        "success"
    ]
    state = [m["data"] for m in messages if m["type"] == "project_state"][-1]
    assert state["state"] == "ERROR"
    assert "could not be recorded yet: No space left" in state["error_details"]


def test_a_stored_end_is_never_written_twice(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry stored the end, then fsync failed: the next retry must not add it again."""
    pid, [client] = setup(harness)
    disk = FullDisk(harness, pid, monkeypatch)
    process, _ = start(harness, client, pid)
    disk.full = True
    process.emit(INIT)
    process.exit(1)
    disk.full = False
    history = harness.app.registry.history(pid)
    sync = history.sync
    calls = {"n": 0}

    def failing_sync() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EIO, "Input/output error")
        sync()

    monkeypatch.setattr(history, "sync", failing_sync)
    for _ in range(3):
        harness.clock.advance(RETRY_INTERVAL)
    lines = [json.loads(line) for line in history.iter_all()]
    assert [x["message"]["type"] for x in lines].count("execution_finished") == 1


def test_a_full_disk_at_start_up_does_not_keep_the_server_down(
    make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash and a full disk often come together: the server must still start, and
    close the cut-off run once space is back."""
    from pocket_agent.history import History

    first = make_harness()
    pid, [client] = setup(first)
    process, _ = start(first, client, pid)
    process.emit(INIT, TEXT)
    crash(first)

    append = History.append
    full = {"on": True}

    def failing_append(self: History, *args: Any, **kwargs: Any) -> Any:
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return append(self, *args, **kwargs)

    monkeypatch.setattr(History, "append", failing_append)
    second = make_harness()  # starts: no exception
    storage = second.app.executor.storage
    assert second.app.health.report()["status"] == "degraded"
    assert (second.config.data_dir / "projects" / pid / LIVE_RUN).exists()
    full["on"] = False
    second.clock.advance(RETRY_INTERVAL)
    assert storage.ok
    client = second.hello()[0]
    end = history_of(second, client, pid)[-1]
    assert (end["type"], end["reason"]) == ("execution_finished", "server_crash")
    assert not (second.config.data_dir / "projects" / pid / LIVE_RUN).exists()
