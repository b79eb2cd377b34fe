"""Runs that a crash of the server cut off, closed at the next start.

Before any listener opens (``DomainService.privilegedStartService``): what each
``live-run.json`` names is swept (:func:`.liverun.sweep`) and the run gets its
``execution_finished`` (killed, ``server_crash``). See ``docs/runs.rst``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable

import attrs

from pocket_agent.core.projects import Project
from pocket_agent.history import MAX_PAGE, Query
from pocket_agent.times import parse_time, rfc3339

from .executor import SERVER_CRASH, Executor, pending_end
from .liverun import LiveRun, LiveRunFile, SweepResult, sweep
from .outcome import Outcome, RunResult
from .prompts import Resolution
from .recorder import RunRecorder


@attrs.frozen
class CrashedRun:
    """A run that a crash of the server cut off, as start-up found it."""

    project_id: str
    run_id: str
    swept: SweepResult
    recorded: bool  # its execution_finished was written now (not found already)


def close_crashed_runs(
    executor: Executor, wait: Callable[[float], None] = time.sleep
) -> list[CrashedRun]:
    """Before listening: end what runs cut off by a crash left running (the §5
    escalation) and give each its ``execution_finished`` (killed, server_crash).

    A run is cut off when its project has a ``live-run.json``, or when the last
    Record of the history belongs to a run and is not its end (nothing is recorded
    after a run's end): the latter also closes runs cut off before the live-run
    file was written, or by a server older than it."""
    closed = []
    grace = max(executor.config.timeouts.kill_grace, 0.1)
    for project in executor.registry.all():
        live_file = LiveRunFile(executor.registry.store.project_dir(project.id))
        live = live_file.read()
        unfinished = _unfinished_run(executor, project)
        if live is None and unfinished is None:
            continue
        if live is None or not live.run_id:  # none, or damaged: what the history says
            run_id, last_at = unfinished or ("", executor.clock.seconds())
            live = LiveRun(run_id, last_at, None)
        swept = sweep(live, grace, wait=wait)
        recorded = unfinished is not None and unfinished[0] == live.run_id
        if recorded:
            result = RunResult(
                run_id=live.run_id,
                outcome=Outcome.KILLED,
                exit_code=None,
                signal=None,
                duration_ms=max(0, int((executor.clock.seconds() - live.started_at) * 1000)),
                cost_usd=None,
                session_id=project.session_id,
                error="the server stopped without ending this run",
                reason=SERVER_CRASH,
            )
            recorder = RunRecorder(executor, project, live.run_id)
            end = {"type": "execution_finished", **result.as_record()}
            try:
                # SPEC §10: the run's end resolves what it left open, before the end.
                for permission_id in _open_prompts(executor, project, live.run_id):
                    resolved = {
                        "type": "permission_resolved",
                        "permission_id": permission_id,
                        "run_id": live.run_id,
                        "behavior": "deny",
                        "reason": str(Resolution.RUN_ENDED),
                        "resolved_at": rfc3339(executor.registry.now()),
                    }
                    recorder.publish(recorder.store("server", resolved))
                recorder.publish(recorder.store("server", end))
            except OSError as e:
                # A full disk must not keep the server down: the end waits for space
                # (with the live-run file, should the server stop before that).
                executor.storage.failed(project.id, e)
                executor.storage.later(
                    pending_end(project.id), functools.partial(recorder.finish_later, end)
                )
                closed.append(CrashedRun(project.id, live.run_id, swept, False))
                continue
        try:
            executor.registry.history(project.id).sync()
            live_file.remove()
        except OSError as e:
            executor.storage.failed(project.id, e)
        closed.append(CrashedRun(project.id, live.run_id, swept, recorded))
    return closed


def _open_prompts(executor: Executor, project: Project, run_id: str) -> list[str]:
    """The permission prompts of ``run_id`` that have no ``permission_resolved``, oldest
    first: the run's server Records, read back from the end to its start."""
    history = executor.registry.history(project.id)
    asked: list[str] = []  # newest first
    resolved: set[str] = set()
    before: int | None = None
    while True:
        page = history.query(Query(before_seq=before, limit=MAX_PAGE, direction="server"))
        for line in reversed(page.lines):
            record = json.loads(line)
            message = record.get("message", {})
            kind, permission_id = message.get("type"), message.get("permission_id")
            if record.get("run_id") != run_id or kind == "execution_started":
                return [p for p in reversed(asked) if p not in resolved]
            if kind == "permission_resolved":
                resolved.add(permission_id)
            elif kind == "permission_request" and isinstance(permission_id, str):
                asked.append(permission_id)
        if not page.has_more or page.first_seq is None:
            return [p for p in reversed(asked) if p not in resolved]
        before = page.first_seq


def _unfinished_run(executor: Executor, project: Project) -> tuple[str, float] | None:
    """(run id, time of its last Record) when the history's last Record belongs to
    a run that has no end."""
    page = executor.registry.history(project.id).query(Query(limit=1))
    if not page.lines:
        return None
    last = json.loads(page.lines[-1])
    run_id = last.get("run_id")
    if not isinstance(run_id, str) or last.get("message", {}).get("type") == (
        "execution_finished"
    ):
        return None
    try:
        at = parse_time(last.get("timestamp")).timestamp()
    except ValueError:
        at = executor.clock.seconds()
    return run_id, at
