"""Runs in memory: the execute flow, outcomes, kills and shutdown, with claude played by the test."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import pytest

from pocket_agent.core.events import SlowConsumerDropped
from pocket_agent.core.projects import ProjectStatus
from tests.support import Client, FakeProcess, Harness

SESSION = "1c354969-65b5-46b2-afc9-a7921a2306e3"
INIT = {"type": "system", "subtype": "init", "session_id": SESSION, "tools": []}
TEXT = {
    "type": "assistant",
    "message": {"content": [{"type": "text", "text": "hi"}]},
    "session_id": SESSION,
}
RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "total_cost_usd": 0.25,
    "session_id": SESSION,
}


def setup(harness: Harness, followers: int = 1) -> tuple[str, list[Client]]:
    clients = [harness.hello()[0] for _ in range(followers)]
    path = harness.project_dir("app")
    pid = clients[0].request("project_create", data={"path": str(path)})[0]["project_id"]
    for client in clients:
        client.request("project_join", project_id=pid)
        client.new()
    return pid, clients


def start(
    harness: Harness, client: Client, pid: str, prompt: str = "hello", **data: Any
) -> tuple[FakeProcess, list[dict[str, Any]]]:
    replies = client.request(
        "execute", project_id=pid, request_id="x1", data={"prompt": prompt, **data}
    )
    assert harness.clock.processes, replies
    return harness.clock.processes[-1], replies


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    out = []
    for m in messages:
        if m["type"] == "agent_message":
            out.append(f"agent_message:{m['data']['message']['type']}")
        else:
            out.append(m["type"])
    return out


def records(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["data"] for m in messages if m["type"] == "agent_message"]


def finish_ok(harness: Harness, process: FakeProcess) -> None:
    process.emit(INIT, TEXT, RESULT)
    process.exit(0)


# ----------------------------------------------------------------- the command


def test_command_line_env_and_cwd(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, replies = start(harness, client, pid, 'say "hi"')
    run_id = next(r["data"]["run_id"] for r in replies if r["type"] == "execute")
    setsid = harness.app.executor.setsid
    argv = [
        *([setsid] if setsid else []),
        "/bin/sh",
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-prompt-tool",  # claude.approvals: phone (SPEC §10) by default
        "stdio",
    ]
    assert process.args == argv
    assert process.executable == argv[0]
    # claude starts in the directory the server holds open (checked at this run)
    assert process.child_fds is not None
    assert [process.child_fds[fd] for fd in (0, 1, 2)] == ["w", "r", "r"]
    assert process.workdir() == str(harness.home / "app")
    assert process.env["PWD"] == str(harness.home / "app")
    assert process.env["POCKET_AGENT_RUN_ID"] == run_id  # marks everything the run starts
    assert process.env["NO_COLOR"] == "1"
    assert process.env["PATH"] == "/usr/bin:/bin"
    assert json.loads(process.stdin) == {
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": 'say "hi"'}]},
    }
    assert not process.stdin_closed  # open until the result line


def test_session_is_resumed_on_the_next_run(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    finish_ok(harness, process)
    second, _ = start(harness, client, pid)
    assert second.args[-2:] == ["--resume", SESSION]
    assert "-c" not in second.args


def test_options_become_flags(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(
        claude={"binary": "/bin/sh", "default_model": "sonnet", "extra_args": ("--max-turns", "3")}
    )
    pid, [client] = setup(harness)
    extra = harness.project_dir("lib")
    options = {
        "fallback_model": "haiku",
        "permission_mode": "acceptEdits",
        "allowed_tools": ["Read", "Bash(git *)"],
        "disallowed_tools": ["WebFetch"],
        "append_system_prompt": "be brief",
        "add_dirs": [str(extra)],
    }
    process, _ = start(harness, client, pid, options=options)
    base = process.args.index("--verbose") + 1
    assert process.args[base:] == [
        "--permission-prompt-tool", "stdio",
        "--model", "sonnet",
        "--fallback-model", "haiku",
        "--permission-mode", "acceptEdits",
        "--append-system-prompt", "be brief",
        "--allowedTools", "Read", "Bash(git *)",
        "--disallowedTools", "WebFetch",
        "--add-dir", str(extra),
        "--max-turns", "3",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"colour": "red"}, "data.options.colour"),
        ({"model": 3}, "data.options.model"),
        ({"permission_mode": "yolo"}, "data.options.permission_mode"),
        ({"permission_mode": "bypassPermissions"}, "data.options.permission_mode"),
        ({"dangerously_skip_permissions": True}, "data.options.dangerously_skip_permissions"),
        ({"mcp_config": "{}"}, "data.options.mcp_config"),
        ({"allowed_tools": "Read"}, "data.options.allowed_tools"),
        ({"add_dirs": "/etc"}, "data.options.add_dirs"),  # ill-typed: not a list
    ],
)
def test_bad_and_dangerous_options_are_refused(
    harness: Harness, options: dict[str, Any], field: str
) -> None:
    pid, [client] = setup(harness)
    error = client.one("execute", project_id=pid, data={"prompt": "x", "options": options})
    assert error["data"]["code"] == "INVALID_MESSAGE"
    assert error["data"]["details"]["field"] == field
    assert harness.clock.processes == []
    assert harness.app.registry.get(pid).status is ProjectStatus.IDLE


@pytest.mark.parametrize(
    ("add_dir", "reason"),
    [
        ("/etc", "outside the allowed roots"),
        ("relative", "must be an absolute path"),
        ("{home}/a/../b", "must not contain '..' segments"),
        ("{home}/missing", "does not exist"),
    ],
)
def test_add_dirs_the_path_policy_refuses_are_invalid_path(
    harness: Harness, add_dir: str, reason: str
) -> None:
    """SPEC §4: a path error is INVALID_PATH wherever the path is; details still name
    the field, as for any refused field."""
    pid, [client] = setup(harness)
    add_dir = add_dir.format(home=harness.home)
    options = {"add_dirs": [str(harness.project_dir("lib")), add_dir]}
    error = client.one("execute", project_id=pid, data={"prompt": "x", "options": options})
    assert error["data"]["code"] == "INVALID_PATH"
    details = error["data"]["details"]
    assert details["field"] == "data.options.add_dirs"
    assert details["path"] == add_dir
    assert details["reason"].startswith(reason)
    assert harness.clock.processes == []
    assert harness.app.registry.get(pid).status is ProjectStatus.IDLE


def test_dangerous_options_when_allowed(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(claude={"binary": "/bin/sh", "allow_dangerous_options": True})
    pid, [client] = setup(harness)
    options = {
        "dangerously_skip_permissions": True,
        "mcp_config": {"mcpServers": {}},
        "permission_mode": "bypassPermissions",
    }
    process, _ = start(harness, client, pid, options=options)
    assert "--dangerously-skip-permissions" in process.args
    assert process.args[process.args.index("--mcp-config") + 1] == '{"mcpServers": {}}'
    recorded = json.loads(
        (harness.config.data_dir / "projects" / pid / "logs" / "messages_current.jsonl")
        .read_text()
        .splitlines()[1]
    )
    assert (
        recorded["message"]["argv"][recorded["message"]["argv"].index("--mcp-config") + 1]
        == "<redacted>"
    )
    prompt = json.loads(
        (harness.config.data_dir / "projects" / pid / "logs" / "messages_current.jsonl")
        .read_text()
        .splitlines()[0]
    )
    assert prompt["message"]["options"]["mcp_config"] == "<redacted>"
    assert process.args[process.args.index("--permission-mode") + 1] == "bypassPermissions"


# ------------------------------------------------------------------- the flow


def test_a_full_run_in_order_for_every_follower(harness: Harness) -> None:
    pid, [client, other] = setup(harness, followers=2)
    process, replies = start(harness, client, pid)
    assert kinds(replies) == [
        "project_state",
        "execute",
        "agent_message:user_prompt",
        "agent_message:execution_started",
    ]
    assert replies[0]["data"]["state"] == "EXECUTING"
    assert replies[1]["request_id"] == "x1"
    run_id = replies[1]["data"]["run_id"]
    assert replies[1]["data"] == {"run_id": run_id, "status": "started"}
    finish_ok(harness, process)
    rest = client.new()
    assert kinds(rest) == [
        "agent_message:system",
        "project_update",
        "agent_message:assistant",
        "agent_message:result",
        "agent_message:execution_finished",
        "execution_finished",
        "project_state",
    ]
    assert rest[1]["data"] == {"session_id": SESSION}
    finished = rest[5]["data"]
    assert finished["outcome"] == "success"
    assert (finished["exit_code"], finished["signal"], finished["cost_usd"]) == (0, None, 0.25)
    assert finished["session_id"] == SESSION and finished["run_id"] == run_id
    assert rest[-1]["data"]["state"] == "IDLE"
    # Every follower sees the same frames; the other one just has no execute ack.
    seen_by_other = other.new()
    assert [m for m in seen_by_other] == [m for m in replies + rest if m["type"] != "execute"]
    # Records are contiguous from 1 and carry claude's lines exactly.
    recs = records(replies + rest)
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert {r["run_id"] for r in recs} == {run_id}
    assert [r["direction"] for r in recs] == [
        "client",
        "server",
        "claude",
        "claude",
        "claude",
        "server",
    ]
    assert recs[0]["message"] == {"type": "user_prompt", "prompt": "hello", "options": {}}
    assert [r["message"] for r in recs[2:5]] == [INIT, TEXT, RESULT]


def test_records_are_written_to_the_project_log(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, replies = start(harness, client, pid)
    finish_ok(harness, process)
    live = records(replies + client.new())
    log = harness.config.data_dir / "projects" / pid / "logs" / "messages_current.jsonl"
    stored = [json.loads(line) for line in log.read_text().splitlines()]
    assert stored == live


def test_seq_continues_across_runs_and_a_restart(
    make_harness: Callable[..., Harness], tmp_path: Any
) -> None:
    harness = make_harness()
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    finish_ok(harness, process)
    last = harness.app.registry.get(pid).last_seq
    assert last == 6
    harness.stop()
    again = make_harness()
    assert again.app.registry.get(pid).last_seq == last
    client2, _ = again.hello()
    process, replies = start(again, client2, pid)
    assert records(replies)[0]["seq"] == last + 1


def test_session_id_is_stored_in_metadata(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.emit(INIT)
    meta = json.loads((harness.config.data_dir / "projects" / pid / "metadata.json").read_text())
    assert meta["session_id"] == SESSION


def test_execute_joins_the_requester(harness: Harness) -> None:
    client, _ = harness.hello()
    pid = client.request("project_create", data={"path": str(harness.project_dir("app"))})[0][
        "project_id"
    ]
    _process, replies = start(harness, client, pid)
    assert kinds(replies)[:2] == ["project_state", "execute"]
    assert harness.app.hub.follows(client.server.connection, pid)


def test_non_json_and_stderr_become_server_records(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.emit(INIT, b"not json at all {")
    process.stderr("warning: something\n")
    process.emit(RESULT)
    process.exit(0)
    recs = [r["message"] for r in records(client.new())]
    assert {"type": "raw_output", "line": "not json at all {"} in recs
    assert {"type": "stderr", "text": "warning: something\n"} in recs
    assert recs[-1]["outcome"] == "success"


def test_control_messages_are_tolerated(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    control = {
        "type": "control_request",
        "request_id": "r",
        "request": {"subtype": "can_use_tool"},
    }
    process.emit(INIT, control, {"type": "control_response", "response": {}}, RESULT)
    process.exit(0)
    recs = [r["message"] for r in records(client.new())]
    assert control in recs
    assert recs[-1]["outcome"] == "success"


# --------------------------------------------------------------------- outcomes


def outcome_of(harness: Harness, client: Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    messages = client.new()
    [finished] = [m["data"] for m in messages if m["type"] == "execution_finished"]
    errors = [m["data"] for m in messages if m["type"] == "error"]
    return finished, errors


def test_is_error_result_fails_even_with_exit_zero(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.emit(INIT, {**RESULT, "is_error": True, "result": "Not logged in · Please run /login"})
    process.exit(0)
    finished, [error] = outcome_of(harness, client)
    assert finished["outcome"] == "failed"
    assert finished["error"] == "Not logged in · Please run /login"
    assert error["code"] == "EXECUTION_FAILED"
    state = harness.app.registry.get(pid)
    assert (state.status, state.error_details) == (
        ProjectStatus.ERROR,
        "Not logged in · Please run /login",
    )


def test_non_zero_exit_without_result_fails_with_stderr(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.stderr("Error: When using --print, --output-format=stream-json requires --verbose\n")
    process.exit(1)
    finished, [error] = outcome_of(harness, client)
    assert finished["outcome"] == "failed"
    assert finished["exit_code"] == 1
    assert "requires --verbose" in finished["error"]
    assert error["code"] == "EXECUTION_FAILED"


def test_good_result_but_non_zero_exit_fails(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.emit(INIT, RESULT)
    process.exit(3)
    finished, _ = outcome_of(harness, client)
    assert finished["outcome"] == "failed"


def test_exit_zero_without_result_fails(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.exit(0)
    finished, _ = outcome_of(harness, client)
    assert (finished["outcome"], finished["error"]) == ("failed", "claude exited without a result")


def test_result_closes_stdin_and_a_lingering_process_is_stopped(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.emit(INIT, RESULT)
    assert process.stdin_closed
    tree = harness.clock.trees[-1]
    harness.clock.advance(harness.config.timeouts.kill_grace - 0.1)
    assert tree.signals == []
    harness.clock.advance(0.1)
    assert tree.signals == [("leader", signal.SIGINT)]
    process.exit(0)
    finished, errors = outcome_of(harness, client)
    assert finished["outcome"] == "success"  # the result line decides
    assert errors == []


def test_kill_escalates_int_term_kill(harness: Harness) -> None:
    pid, [client, other] = setup(harness, followers=2)
    process, _ = start(harness, client, pid)
    process.emit(INIT)
    client.new()
    other.new()
    ack = client.request("agent_kill", project_id=pid, request_id="k")
    assert kinds(ack) == ["agent_kill", "agent_message:process_killed", "process_killed"]
    assert ack[0]["data"] == {"status": "killed"} and ack[0]["request_id"] == "k"
    assert kinds(other.new()) == ["agent_message:process_killed", "process_killed"]
    tree = harness.clock.trees[-1]
    grace = harness.config.timeouts.kill_grace
    assert tree.signals == [("leader", signal.SIGINT)]
    # A second kill is idempotent: no second announcement, no restart of the escalation.
    assert kinds(client.request("agent_kill", project_id=pid)) == ["agent_kill"]
    harness.clock.advance(grace)
    assert tree.signals[-1] == ("all", signal.SIGTERM)
    harness.clock.advance(grace)
    assert tree.signals[-1] == ("all", signal.SIGKILL)
    process.exit(-1, signal=signal.SIGKILL)
    finished, errors = outcome_of(harness, client)
    assert (finished["outcome"], finished["signal"], finished["reason"]) == (
        "killed",
        "SIGKILL",
        "user",
    )
    assert errors == []  # a kill the user asked for is not an error
    assert harness.app.registry.get(pid).status is ProjectStatus.IDLE


def test_kill_without_a_run_is_idle(harness: Harness) -> None:
    pid, [client] = setup(harness)
    assert client.one("agent_kill", project_id=pid)["data"] == {"status": "idle"}


def test_kill_answered_by_a_clean_exit_needs_no_escalation(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    client.request("agent_kill", project_id=pid)
    process.emit({**RESULT, "is_error": True, "subtype": "error_during_execution"})
    process.exit(0)
    tree = harness.clock.trees[-1]
    harness.clock.advance(100)
    assert tree.signals == [("leader", signal.SIGINT)]
    finished, _ = outcome_of(harness, client)
    assert finished["outcome"] == "killed"


def test_leftovers_are_swept_after_claude_exits(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    tree = harness.clock.trees[-1]
    tree.left = {777: 777}
    finish_ok(harness, process)
    assert tree.signals == [("all", signal.SIGTERM)]
    assert client.new()[-1]["type"] != "project_state"  # not finished while 777 lives
    harness.clock.advance(harness.config.timeouts.kill_grace)
    assert tree.signals[-1] == ("all", signal.SIGKILL)
    tree.left = {}
    harness.clock.advance(0.05)
    finished, _ = outcome_of(harness, client)
    assert finished["outcome"] == "success"


def test_execution_timeout(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(timeouts={"execution": 60.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.emit(INIT)
    harness.clock.advance(60)
    assert harness.clock.trees[-1].signals == [("leader", signal.SIGINT)]
    process.exit(0)
    finished, [error] = outcome_of(harness, client)
    assert (finished["outcome"], finished["reason"]) == ("timeout", "timeout")
    assert error["code"] == "EXECUTION_TIMEOUT"
    assert harness.app.registry.get(pid).status is ProjectStatus.ERROR


def test_no_output_watchdog(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(timeouts={"no_output": 20.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    harness.clock.advance(15)
    process.emit(INIT)  # output resets the watchdog
    harness.clock.advance(15)
    assert harness.clock.trees[-1].signals == []
    harness.clock.advance(5)
    assert harness.clock.trees[-1].signals == [("leader", signal.SIGINT)]
    process.exit(0)
    finished, [_error] = outcome_of(harness, client)
    assert (finished["outcome"], finished["reason"]) == ("timeout", "no_output")


# ---------------------------------------------------------------------- refusals


def test_second_execute_delete_and_new_session_while_running(harness: Harness) -> None:
    pid, [client] = setup(harness)
    start(harness, client, pid)
    for mtype, data in (
        ("execute", {"prompt": "again"}),
        ("project_delete", {}),
        ("agent_new_session", {}),
    ):
        error = client.one(mtype, project_id=pid, data=data)
        assert error["data"]["code"] == "PROCESS_ACTIVE", mtype
    assert len(harness.clock.processes) == 1


def test_concurrency_limit(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(limits={"max_concurrent_executions": 1})
    client, _ = harness.hello()
    a = client.request("project_create", data={"path": str(harness.project_dir("a"))})[0][
        "project_id"
    ]
    b = client.request("project_create", data={"path": str(harness.project_dir("b"))})[0][
        "project_id"
    ]
    client.new()
    start(harness, client, a)
    error = client.one("execute", project_id=b, data={"prompt": "x"})
    assert error["data"]["code"] == "RESOURCE_LIMIT"
    assert error["data"]["details"] == {"resource": "executions", "limit": 1}


def test_missing_binary_is_claude_not_found(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(claude={"binary": "/nonexistent/claude"})
    pid, [client] = setup(harness)
    error = client.one("execute", project_id=pid, data={"prompt": "x"})
    assert error["data"]["code"] == "CLAUDE_NOT_FOUND"
    assert harness.app.registry.get(pid).status is ProjectStatus.IDLE


def test_spawn_failure_is_claude_not_found(harness: Harness) -> None:
    pid, [client] = setup(harness)
    harness.clock.spawn_error = OSError(8, "Exec format error")
    replies = client.request("execute", project_id=pid, data={"prompt": "x"})
    finished = [m["data"] for m in replies if m["type"] == "execution_finished"]
    errors = [m["data"]["code"] for m in replies if m["type"] == "error"]
    assert finished[0]["outcome"] == "failed"
    assert errors == ["CLAUDE_NOT_FOUND"]
    assert replies[-1]["data"]["state"] == "ERROR"


@pytest.mark.parametrize(
    "data", [{}, {"prompt": ""}, {"prompt": 5}, {"prompt": "x", "options": []}]
)
def test_bad_execute_requests(harness: Harness, data: dict[str, Any]) -> None:
    pid, [client] = setup(harness)
    error = client.one("execute", project_id=pid, data=data)
    assert error["data"]["code"] == "INVALID_MESSAGE"


# ------------------------------------------------------------------- sessions


def test_new_session_forgets_the_session(harness: Harness) -> None:
    pid, [client, other] = setup(harness, followers=2)
    process, _ = start(harness, client, pid)
    finish_ok(harness, process)
    client.new()
    other.new()
    replies = client.request("agent_new_session", project_id=pid, request_id="n")
    assert kinds(replies) == [
        "agent_new_session",
        "agent_message:session_reset",
        "session_reset",
        "project_state",
    ]
    assert replies[0]["data"] == {"old_session_id": SESSION, "status": "reset"}
    assert replies[-1]["data"]["session_id"] is None
    assert kinds(other.new()) == kinds(replies)[1:]
    second, _ = start(harness, client, pid)
    assert "--resume" not in second.args


# --------------------------------------------------------------- disconnects


def test_a_follower_leaving_mid_run_does_not_stop_it(harness: Harness) -> None:
    pid, [client, other] = setup(harness, followers=2)
    process, _ = start(harness, client, pid)
    process.emit(INIT)
    client.disconnect()
    process.emit(TEXT, RESULT)
    process.exit(0)
    finished = [m for m in other.new() if m["type"] == "execution_finished"]
    assert finished[0]["data"]["outcome"] == "success"
    assert harness.clock.trees[-1].signals == []


def test_health_counts_active_runs(harness: Harness) -> None:
    pid, [client] = setup(harness)
    start(harness, client, pid)
    assert client.one("health")["data"]["executions"] == {"active": 1, "max": 10}


# ------------------------------------------------------------------- shutdown


def test_shutdown_kills_runs_and_records_it(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.emit(INIT)
    done = harness.service.stopService()
    tree = harness.clock.trees[-1]
    assert tree.signals == [("leader", signal.SIGINT)]
    assert not done.called
    process.exit(0)
    client.pump.flush()
    assert done.called
    log = harness.config.data_dir / "projects" / pid / "logs" / "messages_current.jsonl"
    last = json.loads(log.read_text().splitlines()[-1])["message"]
    assert (last["type"], last["outcome"], last["reason"]) == (
        "execution_finished",
        "killed",
        "shutdown",
    )
    assert not (harness.config.data_dir / ".lock").exists()


def test_shutdown_out_of_time_kills_at_once(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(timeouts={"shutdown": 5.0, "kill_grace": 10.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    done = harness.service.stopService()
    harness.clock.advance(5)
    assert harness.clock.trees[-1].signals[-1] == ("all", signal.SIGKILL)
    process.exit(-1, signal=signal.SIGKILL)
    client.pump.flush()
    assert done.called


def test_a_slow_follower_is_dropped_and_nobody_else_slows(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(limits={"send_buffer": 10_000})
    pid, [client, slow] = setup(harness, followers=2)
    process, _ = start(harness, client, pid)
    slow.server.budget.pauseProducing()  # its socket buffer is full from now on
    big = {"type": "assistant", "message": {"content": [{"type": "text", "text": "x" * 3000}]}}
    for _ in range(5):
        process.emit(big)
    harness.clock.advance(0)
    slow.pump.flush()
    assert slow.protocol.closed
    assert harness.app.hub.connection_count == 1
    assert harness.app.executor.runs()  # the run goes on
    process.emit(RESULT)
    process.exit(0)
    received = [m for m in client.new() if m["type"] == "agent_message"]
    assert len([m for m in received if m["data"]["message"] == big]) == 5
    assert len(harness.events.of(SlowConsumerDropped)) == 1


def test_a_paused_follower_within_budget_keeps_everything(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(limits={"send_buffer": 1_000_000})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    client.server.budget.pauseProducing()
    finish_ok(harness, process)
    client.server.budget.resumeProducing()
    assert [m["type"] for m in client.new()][-1] == "project_state"
    assert not client.protocol.closed


# ------------------------------------------------------- found in review (regressions)


@pytest.mark.parametrize(
    "options",
    [
        {"allowed_tools": ["Read", "--permission-mode", "bypassPermissions"]},
        {"disallowed_tools": ["X", "--dangerously-skip-permissions"]},
        {"model": "--settings=/tmp/hooks.json"},
        {"append_system_prompt": "-p"},
    ],
)
def test_option_values_cannot_smuggle_flags(harness: Harness, options: dict[str, Any]) -> None:
    pid, [client] = setup(harness)
    error = client.one("execute", project_id=pid, data={"prompt": "x", "options": options})
    assert error["data"]["code"] == "INVALID_MESSAGE"
    assert "must not start with '-'" in error["data"]["message"]
    assert harness.clock.processes == []


def test_a_survivor_that_cannot_be_killed_does_not_hang_the_run(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    tree = harness.clock.trees[-1]
    tree.left = {999: 999}  # never goes away (EPERM, or stuck in the kernel)
    finish_ok(harness, process)
    grace = harness.config.timeouts.kill_grace
    harness.clock.advance(grace)  # SIGKILL
    harness.clock.advance(grace + 0.1)  # one more grace: give up on it
    finished, _ = outcome_of(harness, client)
    assert finished["outcome"] == "success"
    assert tree.signals[-1] == ("all", signal.SIGKILL)
    assert harness.app.executor.runs() == []


def test_zero_kill_grace_still_escalates(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(timeouts={"kill_grace": 0.0})
    pid, [client] = setup(harness)
    _process, _ = start(harness, client, pid)
    client.request("agent_kill", project_id=pid)
    harness.clock.advance(0.1)
    harness.clock.advance(0.1)
    assert [s for _, s in harness.clock.trees[-1].signals] == [
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGKILL,
    ]


def test_a_result_just_before_the_execution_timeout_still_succeeds(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(timeouts={"execution": 60.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    harness.clock.advance(55)
    process.emit(INIT, RESULT)
    harness.clock.advance(6)  # the CLI winds down past the limit
    process.exit(0)
    finished, errors = outcome_of(harness, client)
    assert finished["outcome"] == "success"
    assert errors == []


def test_kill_after_claude_exited_does_not_change_the_outcome(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    tree = harness.clock.trees[-1]
    tree.left = {777: 777}  # keeps the sweep going for a moment
    finish_ok(harness, process)
    client.request("agent_kill", project_id=pid)
    assert ("leader", signal.SIGINT) not in tree.signals  # its pid is not ours any more
    tree.left = {}
    harness.clock.advance(0.05)
    finished, _ = outcome_of(harness, client)
    assert finished["outcome"] == "success"


def test_a_failing_disk_at_start_does_not_leave_the_project_executing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid, [client] = setup(harness)
    history = harness.app.registry.history(pid)

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(history, "append", full)
    replies = client.request("execute", project_id=pid, request_id="r1", data={"prompt": "x"})
    # Refused before anything is announced: no "started" that no end would follow. The
    # reply, and the project's followers (this client too) hear of the storage failure.
    assert [(m["type"], m.get("request_id")) for m in replies] == [
        ("error", None),
        ("error", "r1"),
    ]
    assert {m["data"]["code"] for m in replies} == {"STORAGE_ERROR"}
    assert "No space left on device" in replies[1]["data"]["message"]
    assert harness.clock.processes == []
    monkeypatch.undo()
    assert harness.app.executor.runs() == []
    assert harness.app.registry.get(pid).status is ProjectStatus.IDLE
    start(harness, client, pid)  # usable again


def test_a_failing_disk_at_the_end_does_not_leave_the_project_executing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.emit(INIT, RESULT)

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(harness.app.registry, "save", full)
    waiting = harness.app.executor.finished(pid)
    process.exit(0)
    assert waiting.called
    assert harness.app.executor.runs() == []
    assert harness.app.registry.get(pid).status is not ProjectStatus.EXECUTING
    monkeypatch.undo()
    client.new()
    assert client.request("project_delete", project_id=pid)[0]["type"] == "project_delete"


def test_claude_dying_inside_spawn(harness: Harness) -> None:
    pid, [client] = setup(harness)
    harness.clock.exit_at_spawn = 127
    replies = client.request("execute", project_id=pid, data={"prompt": "x"})
    finished = [m["data"] for m in replies if m["type"] == "execution_finished"]
    assert finished and finished[0]["outcome"] == "failed"
    assert replies[-1]["type"] == "project_state" and replies[-1]["data"]["state"] == "ERROR"
    assert harness.app.executor.runs() == []


def test_a_last_line_without_newline_comes_before_the_end(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.emit(INIT, RESULT)
    process.protocol.outReceived(b"trailing words")
    process.exit(0)
    kinds_seen = kinds(client.new())
    assert kinds_seen.index("agent_message:raw_output") < kinds_seen.index("execution_finished")
    assert kinds_seen[-1] == "project_state"


def test_shutdown_never_waits_longer_than_its_limit(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(timeouts={"shutdown": 10.0, "kill_grace": 30.0})
    pid, [client] = setup(harness)
    _process, _ = start(harness, client, pid)
    tree = harness.clock.trees[-1]
    done = harness.service.stopService()
    client.pump.flush()
    harness.clock.advance(8)
    assert tree.signals[-1] == ("all", signal.SIGKILL)
    assert not done.called  # claude has not even exited
    harness.clock.advance(2)
    assert done.called
    log = harness.config.data_dir / "projects" / pid / "logs" / "messages_current.jsonl"
    last = json.loads(log.read_text().splitlines()[-1])["message"]
    assert (last["type"], last["outcome"]) == ("execution_finished", "killed")
