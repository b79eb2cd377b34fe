"""Approvals and interrupts in memory (SPEC §10): the executor, the run machine and the
WebSocket protocol on a MemoryReactorClock, with claude played by the test the way the
real CLI 2.1.197 speaks its stdio control protocol (tests/fixtures/claude-cli-2.1.197-stdio)."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from pocket_agent.core.projects import Project, ProjectStatus
from tests.support import Client, FakeProcess, Harness
from tests.test_execution import INIT, RESULT, SESSION, TEXT, kinds, records, setup, start

REQUEST_ID = "91799867-5d9e-40f5-9f83-28936b3c71aa"
ERROR_RESULT = {
    "type": "result",
    "subtype": "error_during_execution",
    "is_error": True,
    "session_id": SESSION,
}


def ask(
    process: FakeProcess,
    tool: str = "Write",
    tool_input: dict[str, Any] | None = None,
    request_id: str = REQUEST_ID,
    **extra: Any,
) -> None:
    """claude asks, as the real CLI does (captured in stdio_allow.jsonl)."""
    tool_input = (
        tool_input if tool_input is not None else {"file_path": "hello.txt", "content": "hi\n"}
    )
    process.emit(
        {
            "type": "control_request",
            "request_id": request_id,
            "request": {
                "subtype": "can_use_tool",
                "tool_name": tool,
                "display_name": tool,
                "input": tool_input,
                "tool_use_id": "toolu_0022",
                **extra,
            },
        }
    )


def stdin_lines(process: FakeProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in process.stdin.splitlines()]


def control_responses(process: FakeProcess) -> list[dict[str, Any]]:
    return [
        line["response"] for line in stdin_lines(process) if line["type"] == "control_response"
    ]


def of_type(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r["message"] for r in records(messages) if r["message"]["type"] == kind]


def pending_id(messages: list[dict[str, Any]]) -> str:
    [request] = of_type(messages, "permission_request")
    return str(request["permission_id"])


def respond(client: Client, pid: str, permission_id: str, **data: Any) -> list[dict[str, Any]]:
    return client.request(
        "permission_response",
        project_id=pid,
        request_id="p1",
        data={"permission_id": permission_id, **data},
    )


def reply_of(messages: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [reply] = [m for m in messages if m["type"] == kind]
    return reply


def states(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["data"] for m in messages if m["type"] == "project_state"]


@attrs.frozen
class Asked:
    harness: Harness
    pid: str
    client: Client  # the one that ran it
    other: Client  # another follower
    process: FakeProcess
    permission_id: str


def asking(harness: Harness) -> Asked:
    """Two followers, a run, and claude asking for a Write (the ``asked`` fixture of
    tests/conftest.py)."""
    pid, [client, other] = setup(harness, followers=2)
    process, _ = start(harness, client, pid)
    process.emit(INIT, TEXT)
    client.new(), other.new()
    ask(process)
    seen = client.new()
    other.new()
    return Asked(harness, pid, client, other, process, pending_id(seen))


# ------------------------------------------------------------------ the prompt


def test_a_prompt_reaches_every_follower_with_its_preview_and_the_state(
    harness: Harness,
) -> None:
    pid, [client, other] = setup(harness, followers=2)
    stranger = harness.hello()[0]  # follows nothing: hears only that approval is awaited
    (harness.home / "app" / "hello.txt").write_text("old\n")
    process, _ = start(harness, client, pid)
    process.emit(INIT)
    client.new(), other.new(), stranger.new()
    ask(process, description="hello.txt", decision_reason="asks", blocked_path="/x")
    seen = client.new()
    assert kinds(seen) == ["agent_message:control_request", "agent_message:permission_request",
                           "project_state"]  # fmt: skip
    [request] = of_type(seen, "permission_request")
    assert request["kind"] == "tool" and request["tool_name"] == "Write"
    assert request["input"] == {"file_path": "hello.txt", "content": "hi\n"}
    assert request["tool_use_id"] == "toolu_0022"
    assert (request["description"], request["decision_reason"], request["blocked_path"]) == (
        "hello.txt",
        "asks",
        "/x",
    )
    assert request["preview"]["kind"] == "diff" and request["preview"]["path"] == "hello.txt"
    assert "-old\n+hi\n" in request["preview"]["diff"]
    assert request["expires_at"] is not None  # timeouts.permission: 10m by default
    assert REQUEST_ID not in json.dumps(request["permission_id"])  # our id, not the CLI's
    [state] = states(seen)
    assert state["state"] == "EXECUTING" and state["awaiting_approval"] is True
    assert state["pending_permissions"] == [request]
    assert other.new() == seen
    assert states(stranger.new())[0]["awaiting_approval"] is True
    # The CLI gets nothing until someone answers.
    assert control_responses(process) == []
    assert not process.stdin_closed


def test_allow_tells_the_cli_with_the_input_as_asked(asked: Asked) -> None:
    t = asked
    stranger = t.harness.hello()[0]
    stranger.new()
    replies = respond(t.client, t.pid, t.permission_id, behavior="allow")
    assert kinds(replies) == ["permission_response", "agent_message:permission_resolved",
                              "project_state"]  # fmt: skip
    assert replies[0]["request_id"] == "p1"
    assert replies[0]["data"] == {"permission_id": t.permission_id, "status": "applied"}
    [resolved] = of_type(replies, "permission_resolved")
    assert resolved["behavior"] == "allow" and resolved["reason"] == "user"
    assert resolved["by_connection_id"]
    assert "updated_input" not in resolved
    assert control_responses(t.process) == [
        {
            "subtype": "success",
            "request_id": REQUEST_ID,
            "response": {
                "behavior": "allow",
                "updatedInput": {"file_path": "hello.txt", "content": "hi\n"},
            },
        }
    ]
    assert states(replies)[0]["awaiting_approval"] is False
    assert states(replies)[0]["pending_permissions"] == []
    assert states(stranger.new())[0]["awaiting_approval"] is False
    assert kinds(t.other.new()) == ["agent_message:permission_resolved", "project_state"]
    t.process.emit(RESULT)
    t.process.exit(0)
    finished = reply_of(t.client.new(), "execution_finished")
    assert finished["data"]["outcome"] == "success"


def test_allow_with_a_changed_input_runs_the_changed_input(asked: Asked) -> None:
    t = asked
    changed = {"file_path": "hello.txt", "content": "bye\n"}
    replies = respond(t.client, t.pid, t.permission_id, behavior="allow", updated_input=changed)
    [resolved] = of_type(replies, "permission_resolved")
    assert resolved["updated_input"] == changed
    [response] = control_responses(t.process)
    assert response["response"] == {"behavior": "allow", "updatedInput": changed}


@pytest.mark.parametrize(
    ("message", "told"), [("not that file", "not that file"), (None, "Denied from the phone")]
)
def test_deny_always_carries_a_message(asked: Asked, message: str | None, told: str) -> None:
    t = asked
    data = {"behavior": "deny"} | ({"message": message} if message else {})
    replies = respond(t.client, t.pid, t.permission_id, **data)
    [resolved] = of_type(replies, "permission_resolved")
    assert (resolved["behavior"], resolved["reason"], resolved["message"]) == (
        "deny",
        "user",
        told,
    )
    [response] = control_responses(t.process)
    assert response["response"] == {"behavior": "deny", "message": told}
    # The CLI goes on with the turn; the run is not over.
    assert t.harness.app.registry.get(t.pid).status is ProjectStatus.EXECUTING


def test_a_question_is_answered_with_its_answers(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    question = {"questions": [{"question": "Proceed?", "options": [{"label": "Yes"}]}]}
    ask(process, "AskUserQuestion", question)
    permission_id = pending_id(client.new())
    replies = respond(client, pid, permission_id, behavior="allow", answers={"Proceed?": "Yes"})
    [request_kind] = [
        m["kind"] for m in of_type(harness_history(harness, pid), "permission_request")
    ]
    assert request_kind == "question"
    [response] = control_responses(process)
    assert response["response"]["updatedInput"] == {**question, "answers": {"Proceed?": "Yes"}}
    assert of_type(replies, "permission_resolved")[0]["behavior"] == "allow"


def test_a_plan_is_a_prompt_of_its_own_kind(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid, options={"permission_mode": "plan"})
    ask(process, "ExitPlanMode", {"plan": "do things"})
    [request] = of_type(client.new(), "permission_request")
    assert request["kind"] == "plan" and "preview" not in request
    respond(client, pid, request["permission_id"], behavior="deny", message="no")
    assert control_responses(process)[0]["response"] == {"behavior": "deny", "message": "no"}


def test_a_bash_prompt_previews_the_command(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process, "Bash", {"command": "touch x", "description": "make x"})
    [request] = of_type(client.new(), "permission_request")
    assert request["preview"] == {"kind": "command", "command": "touch x", "description": "make x"}


def harness_history(harness: Harness, pid: str) -> list[dict[str, Any]]:
    path = harness.config.data_dir / "projects" / pid / "logs" / "messages_current.jsonl"
    return [
        {"type": "agent_message", "data": json.loads(line)}
        for line in path.read_text().splitlines()
    ]


# ------------------------------------------------------------ first answer wins


def test_two_devices_answering_at_once_the_first_wins(asked: Asked) -> None:
    t = asked
    t.client.send("permission_response", project_id=t.pid, request_id="client",
           data={"permission_id": t.permission_id, "behavior": "allow"})  # fmt: skip
    t.other.send("permission_response", project_id=t.pid, request_id="other",
           data={"permission_id": t.permission_id, "behavior": "deny"})  # fmt: skip
    t.harness.pumps[0].flush()
    t.harness.pumps[1].flush()
    a_seen, b_seen = t.client.new(), t.other.new()
    assert reply_of(a_seen, "permission_response")["data"]["status"] == "applied"
    assert reply_of(b_seen, "permission_response")["data"] == {
        "permission_id": t.permission_id,
        "status": "already_resolved",
    }
    assert len(of_type(a_seen, "permission_resolved")) == 1
    assert of_type(b_seen, "permission_resolved") == of_type(a_seen, "permission_resolved")
    [response] = control_responses(t.process)
    assert response["response"]["behavior"] == "allow"


def test_an_answer_after_the_run_ended_is_already_resolved(asked: Asked) -> None:
    t = asked
    respond(t.client, t.pid, t.permission_id, behavior="allow")
    t.process.emit(RESULT)
    t.process.exit(0)
    t.client.new()
    [reply] = respond(t.client, t.pid, t.permission_id, behavior="deny")
    assert reply["data"]["status"] == "already_resolved"


def test_unknown_ids_and_other_projects_prompts_are_not_found(asked: Asked) -> None:
    t = asked
    other_dir = t.harness.project_dir("other")
    other = t.client.request("project_create", data={"path": str(other_dir)})[0]["project_id"]
    for target, pid_ in (("nope", t.pid), (t.permission_id, other)):
        [error] = respond(t.client, pid_, target, behavior="allow")
        assert error["type"] == "error" and error["request_id"] == "p1"
        assert error["data"]["code"] == "PERMISSION_NOT_FOUND"
        assert error["data"]["details"] == {"permission_id": target}
    assert control_responses(t.process) == []
    assert t.harness.app.registry.get(t.pid).run.pending_permissions  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"behavior": "allow", "updated_input": ["not", "an", "object"]}, "data.updated_input"),
        ({"behavior": "allow", "answers": {"Proceed?": "Yes"}}, "data.answers"),
        ({"behavior": "deny", "updated_input": {}}, "data.updated_input"),
        ({"behavior": "maybe"}, "data.behavior"),
        ({"behavior": "allow", "answers": {"q": 1}}, "data.answers"),
        ({"behavior": "allow", "remember": "yes"}, "data.remember"),
        ({"behavior": "deny", "message": 3}, "data.message"),
    ],
)
def test_bad_answers_are_refused_and_change_nothing(
    asked: Any, data: dict[str, Any], field: str
) -> None:
    t = asked
    [error] = respond(t.client, t.pid, t.permission_id, **data)
    assert error["type"] == "error" and error["data"]["code"] == "INVALID_MESSAGE"
    assert error["data"]["details"]["field"] == field
    assert control_responses(t.process) == []
    assert t.other.new() == []
    assert t.harness.app.registry.get(t.pid).settings.allowed_tools == ()
    [reply] = [m for m in respond(t.client, t.pid, t.permission_id, behavior="allow")
               if m["type"] == "permission_response"]  # fmt: skip
    assert reply["data"]["status"] == "applied"


def test_a_missing_permission_id_is_invalid(asked: Asked) -> None:
    t = asked
    [error] = t.client.request("permission_response", project_id=t.pid, data={"behavior": "allow"})
    assert error["data"]["code"] == "INVALID_MESSAGE"
    assert error["data"]["details"]["field"] == "data.permission_id"


# ----------------------------------------------------------- nothing is lost


def test_a_phone_that_rejoins_sees_the_open_prompt_and_can_answer(asked: Asked) -> None:
    t = asked
    last_seen = t.harness.app.registry.get(t.pid).last_seq - 2  # before the prompt
    t.other.disconnect()
    phone = t.harness.hello()[0]
    joined = phone.request("project_join", project_id=t.pid, data={"after_seq": last_seen})
    assert [m["type"] for m in joined] == ["project_state", "project_join", "message_history"]
    state = joined[0]["data"]
    assert state["awaiting_approval"] is True
    assert [p["permission_id"] for p in state["pending_permissions"]] == [t.permission_id]
    replayed = [r["message"]["type"] for r in joined[2]["data"]["messages"]]
    assert "permission_request" in replayed
    replies = respond(phone, t.pid, t.permission_id, behavior="allow")
    assert reply_of(replies, "permission_response")["data"]["status"] == "applied"
    assert control_responses(t.process)[0]["response"]["behavior"] == "allow"


def test_a_plain_join_and_the_project_list_show_pending_prompts(asked: Asked) -> None:
    t = asked
    phone = t.harness.hello()[0]
    [listed] = phone.one("project_list")["data"]["projects"]
    assert listed["awaiting_approval"] is True
    assert listed["pending_permissions"][0]["permission_id"] == t.permission_id
    state = phone.request("project_join", project_id=t.pid)[0]["data"]
    assert state["pending_permissions"] == listed["pending_permissions"]


def test_several_open_prompts_are_listed_oldest_first(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process, "Bash", {"command": "ls"}, request_id="r1")
    ask(process, "Bash", {"command": "pwd"}, request_id="r2")
    seen = client.new()
    # awaiting_approval flips once: every connection heard of the first prompt only
    first, second = of_type(seen, "permission_request")
    state = states(seen)[-1]
    assert [p["permission_id"] for p in state["pending_permissions"]] == [
        first["permission_id"],
        second["permission_id"],
    ]
    respond(client, pid, second["permission_id"], behavior="allow")
    assert (
        harness.app.registry.get(pid).run.pending_permissions[0]["permission_id"]
        == (  # type: ignore[union-attr]
            first["permission_id"]
        )
    )
    assert control_responses(process)[0]["request_id"] == "r2"


# ------------------------------------------------------------- clocks and timers


def test_clocks_do_not_run_while_a_human_decides(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(timeouts={"execution": 30.0, "no_output": 10.0, "permission": 0.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    harness.clock.advance(8)
    ask(process)
    permission_id = pending_id(client.new())
    assert records(client.new()) == []
    [expires] = [p["expires_at"] for p in harness.app.registry.get(pid).run.pending_permissions]  # type: ignore[union-attr]
    assert expires is None  # timeouts.permission 0: waits as long as it takes
    harness.clock.advance(3600)
    assert harness.app.registry.get(pid).status is ProjectStatus.EXECUTING
    assert harness.clock.trees[-1].signals == []
    respond(client, pid, permission_id, behavior="allow")
    harness.clock.advance(9.9)  # no_output starts over when the clocks run again
    assert harness.clock.trees[-1].signals == []
    harness.clock.advance(0.2)
    assert harness.clock.trees[-1].signals == [("leader", signal.SIGINT)]
    process.exit(1)
    assert reply_of(client.new(), "execution_finished")["data"]["outcome"] == "timeout"


def test_the_execution_clock_keeps_the_time_it_had_left(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(timeouts={"execution": 30.0, "permission": 0.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    harness.clock.advance(20)
    ask(process)
    permission_id = pending_id(client.new())
    harness.clock.advance(1000)
    respond(client, pid, permission_id, behavior="allow")
    harness.clock.advance(9.9)
    assert harness.clock.trees[-1].signals == []
    harness.clock.advance(0.2)
    assert harness.clock.trees[-1].signals == [("leader", signal.SIGINT)]


def test_an_unanswered_prompt_is_denied_at_timeouts_permission(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(timeouts={"permission": 60.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process)
    [request] = of_type(client.new(), "permission_request")
    assert request["expires_at"] == "1970-01-01T00:01:00.000Z"  # the clock started at 0
    harness.clock.advance(59.9)
    assert control_responses(process) == []
    harness.clock.advance(0.2)
    seen = client.new()
    [resolved] = of_type(seen, "permission_resolved")
    assert (resolved["behavior"], resolved["reason"]) == ("deny", "timeout")
    assert "by_connection_id" not in resolved
    [response] = control_responses(process)
    assert response["response"]["behavior"] == "deny" and response["response"]["message"]
    assert states(seen)[0]["awaiting_approval"] is False
    [reply] = respond(client, pid, request["permission_id"], behavior="allow")
    assert reply["data"]["status"] == "already_resolved"


def test_an_answered_prompt_does_not_time_out(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(timeouts={"permission": 60.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process)
    respond(client, pid, pending_id(client.new()), behavior="allow")
    harness.clock.advance(120)
    assert len(control_responses(process)) == 1
    assert of_type(client.new(), "permission_resolved") == []


# ------------------------------------------------------------ the CLI's side


def test_a_prompt_the_cli_withdraws_is_cancelled_and_not_answered(asked: Asked) -> None:
    t = asked
    t.process.emit({"type": "control_cancel_request", "request_id": REQUEST_ID})
    seen = t.client.new()
    [resolved] = of_type(seen, "permission_resolved")
    assert (resolved["behavior"], resolved["reason"]) == ("deny", "cancelled")
    assert control_responses(t.process) == []
    assert states(seen)[-1]["awaiting_approval"] is False
    t.process.emit({"type": "control_cancel_request", "request_id": "unknown"})  # ignored
    assert [r["message"]["type"] for r in records(t.client.new())] == ["control_cancel_request"]


def test_a_result_with_a_prompt_open_resolves_it(asked: Asked) -> None:
    t = asked
    t.process.emit(RESULT)
    [resolved] = of_type(t.client.new(), "permission_resolved")
    assert resolved["reason"] == "run_ended"
    assert t.process.stdin_closed


def test_claude_dying_with_a_prompt_open_resolves_it(asked: Asked) -> None:
    t = asked
    t.process.exit(1)
    seen = t.client.new()
    assert kinds(seen)[:2] == ["agent_message:permission_resolved", "project_state"]
    assert of_type(seen, "permission_resolved")[0]["reason"] == "run_ended"
    assert reply_of(seen, "execution_finished")["data"]["outcome"] == "failed"
    assert states(seen)[-1]["pending_permissions"] == []


def test_a_prompt_after_the_result_is_denied_at_once(harness: Harness) -> None:
    pid, [client] = setup(harness)
    stranger = harness.hello()[0]
    process, _ = start(harness, client, pid)
    process.emit(RESULT)
    stranger.new()
    ask(process)
    assert stranger.new() == []  # it never awaited approval: nothing to tell everyone
    seen = client.new()
    assert all(not s["awaiting_approval"] for s in states(seen))
    [resolved] = of_type(seen, "permission_resolved")
    assert (resolved["behavior"], resolved["reason"]) == ("deny", "run_ended")
    # stdin is closed after the result: nothing more can be written to it
    assert control_responses(process) == []


# ------------------------------------------------------------------- interrupt


def test_interrupt_while_a_prompt_is_pending(asked: Asked) -> None:
    t = asked
    replies = t.client.request("agent_interrupt", project_id=t.pid, request_id="i1")
    assert replies[0] == {
        "type": "agent_interrupt",
        "project_id": t.pid,
        "request_id": "i1",
        "data": {"status": "interrupting"},
    }
    [resolved] = of_type(replies, "permission_resolved")
    assert (resolved["behavior"], resolved["reason"]) == ("deny", "interrupted")
    lines = stdin_lines(t.process)
    # The interrupt is the answer: the CLI cancels the prompt itself (no deny is sent).
    assert [line["type"] for line in lines] == ["user", "control_request"]
    assert lines[1]["request"] == {"subtype": "interrupt"}
    interrupt_id = lines[1]["request_id"]
    # What the real CLI then prints (stdio_interrupt_pending.jsonl)
    t.process.emit(
        {"type": "control_cancel_request", "request_id": REQUEST_ID},
        {
            "type": "control_response",
            "response": {"subtype": "success", "request_id": interrupt_id},
        },
        ERROR_RESULT,
    )
    assert t.process.stdin_closed
    t.process.exit(1)
    seen = t.client.new()
    finished = reply_of(seen, "execution_finished")["data"]
    assert finished["outcome"] == "interrupted"
    assert finished["session_id"] == SESSION
    assert "error" not in finished
    assert [m for m in seen if m["type"] == "error"] == []
    assert states(seen)[-1]["state"] == "IDLE"
    assert t.harness.clock.trees[-1].signals == []  # no signal was needed
    # The session goes on: the next run resumes it.
    second, _ = start(t.harness, t.client, t.pid)
    assert second.args[second.args.index("--resume") + 1] == SESSION


def test_interrupt_while_streaming(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.emit(INIT, TEXT)
    [reply] = [m for m in client.request("agent_interrupt", project_id=pid)
               if m["type"] == "agent_interrupt"]  # fmt: skip
    assert reply["data"]["status"] == "interrupting"
    assert stdin_lines(process)[-1]["request"] == {"subtype": "interrupt"}
    process.emit(ERROR_RESULT)
    process.exit(1)
    assert reply_of(client.new(), "execution_finished")["data"]["outcome"] == "interrupted"
    assert harness.app.registry.get(pid).status is ProjectStatus.IDLE


def test_an_interrupt_the_cli_ignores_falls_back_to_sigint(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    client.request("agent_interrupt", project_id=pid)
    grace = harness.config.timeouts.kill_grace
    harness.clock.advance(grace - 0.1)
    assert harness.clock.trees[-1].signals == []
    harness.clock.advance(0.2)
    assert harness.clock.trees[-1].signals == [("leader", signal.SIGINT)]
    process.exit(0, signal.SIGINT)
    finished = reply_of(client.new(), "execution_finished")["data"]
    assert finished["outcome"] == "interrupted"


@pytest.mark.parametrize("approvals", ["phone", "off"])
def test_a_kill_after_the_interrupts_sigint_is_a_kill(
    make_harness: Callable[..., Harness], approvals: str
) -> None:
    """With approvals off the interrupt is the SIGINT at once; with them on, after the
    fallback. A kill then still makes the run ``killed`` (and says so)."""
    harness = make_harness(claude={"binary": "/bin/sh", "approvals": approvals})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    client.request("agent_interrupt", project_id=pid)
    harness.clock.advance(harness.config.timeouts.kill_grace + 0.1 if approvals == "phone" else 0)
    assert harness.clock.trees[-1].signals == [("leader", signal.SIGINT)]
    replies = client.request("agent_kill", project_id=pid)
    assert kinds(replies) == ["agent_kill", "agent_message:process_killed", "process_killed"]
    process.exit(0, signal.SIGINT)
    assert reply_of(client.new(), "execution_finished")["data"]["outcome"] == "killed"


def test_a_kill_after_an_interrupt_is_a_kill(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    client.request("agent_interrupt", project_id=pid)
    [reply] = [
        m for m in client.request("agent_kill", project_id=pid) if m["type"] == "agent_kill"
    ]
    assert reply["data"]["status"] == "killed"
    process.exit(0, signal.SIGINT)
    assert reply_of(client.new(), "execution_finished")["data"]["outcome"] == "killed"


def test_interrupt_without_a_run_is_idle_and_after_the_result_changes_nothing(
    harness: Harness,
) -> None:
    pid, [client] = setup(harness)
    [reply] = client.request("agent_interrupt", project_id=pid)
    assert reply["data"] == {"status": "idle"}
    process, _ = start(harness, client, pid)
    process.emit(RESULT)
    client.new()
    [reply] = client.request("agent_interrupt", project_id=pid)
    assert reply["data"] == {"status": "interrupting"}
    assert [line["type"] for line in stdin_lines(process)] == ["user"]
    process.exit(0)
    assert reply_of(client.new(), "execution_finished")["data"]["outcome"] == "success"


def test_with_approvals_off_the_cli_decides_and_interrupt_is_sigint(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(claude={"binary": "/bin/sh", "approvals": "off"})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    assert "--permission-prompt-tool" not in process.args
    client.request("agent_interrupt", project_id=pid)
    assert harness.clock.trees[-1].signals == [("leader", signal.SIGINT)]
    assert [line["type"] for line in stdin_lines(process)] == ["user"]
    process.exit(0, signal.SIGINT)
    finished = reply_of(client.new(), "execution_finished")["data"]
    assert finished["outcome"] == "interrupted"


def test_options_approvals_overrides_the_server_for_one_run(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(claude={"binary": "/bin/sh", "approvals": "off"})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid, options={"approvals": "phone"})
    assert process.args[process.args.index("--verbose") + 1 :][:2] == [
        "--permission-prompt-tool",
        "stdio",
    ]
    process.exit(1)
    client.new()
    harness.clock.advance(60)  # the per-project rate limit
    second, _ = start(harness, client, pid)
    assert "--permission-prompt-tool" not in second.args


# --------------------------------------------------------- kill and shutdown


def test_kill_while_a_prompt_is_pending_denies_it_before_the_first_signal(asked: Asked) -> None:
    t = asked
    replies = t.client.request("agent_kill", project_id=t.pid)
    assert kinds(replies) == ["agent_kill", "agent_message:permission_resolved",
                              "project_state", "agent_message:process_killed",
                              "process_killed"]  # fmt: skip
    assert of_type(replies, "permission_resolved")[0]["reason"] == "run_ended"
    [response] = control_responses(t.process)
    assert response["response"]["behavior"] == "deny"
    assert t.harness.clock.trees[-1].signals == [("leader", signal.SIGINT)]
    t.process.exit(0, signal.SIGINT)
    assert reply_of(t.client.new(), "execution_finished")["data"]["outcome"] == "killed"


def test_shutdown_while_a_prompt_is_pending_resolves_it(asked: Asked) -> None:
    t = asked
    t.harness.service.stopService()
    t.harness.pumps[0].flush()
    history = [r["data"]["message"] for r in harness_history(t.harness, t.pid)]
    resolved = [m for m in history if m["type"] == "permission_resolved"]
    assert [(m["behavior"], m["reason"]) for m in resolved] == [("deny", "run_ended")]
    assert control_responses(t.process)[0]["response"]["behavior"] == "deny"
    t.process.exit(0, signal.SIGINT)
    history = [r["data"]["message"]["type"] for r in harness_history(t.harness, t.pid)]
    assert history.index("permission_resolved") < history.index("execution_finished")


# ----------------------------------------------------------- remember and settings


def test_remember_adds_a_rule_every_later_run_gets(asked: Asked) -> None:
    t = asked
    ask(t.process, "Bash", {"command": "git status --short"}, request_id="r2")
    bash_id = pending_id([m for m in t.client.new() if "permission_request" in json.dumps(m)])
    replies = respond(t.client, t.pid, bash_id, behavior="allow", remember=True)
    assert states(replies)[-1]["settings"]["allowed_tools"] == ["Bash(git:*)"]
    project = t.harness.app.registry.get(t.pid)
    assert project.settings.allowed_tools == ("Bash(git:*)",)
    stored = json.loads(
        (t.harness.config.data_dir / "projects" / t.pid / "metadata.json").read_text()
    )
    assert stored["settings"] == {"allowed_tools": ["Bash(git:*)"], "approvals": None}
    t.process.emit(RESULT)
    t.process.exit(0)
    t.harness.clock.advance(60)
    second, _ = start(
        t.harness, t.client, t.pid, options={"allowed_tools": ["Read", "Bash(git:*)"]}
    )
    tools = second.args.index("--allowedTools")
    assert second.args[tools + 1 : tools + 3] == ["Bash(git:*)", "Read"]  # each rule once


@pytest.mark.parametrize(
    ("tool", "tool_input", "rule"),
    [
        ("Write", {"file_path": "a", "content": ""}, "Write"),
        ("Bash", {"command": "  npm   test"}, "Bash(npm:*)"),
        ("Bash", {"command": ""}, "Bash"),
        ("AskUserQuestion", {"questions": []}, None),
    ],
)
def test_the_rule_remember_adds(
    harness: Harness, tool: str, tool_input: dict[str, Any], rule: str | None
) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process, tool, tool_input)
    respond(client, pid, pending_id(client.new()), behavior="allow", remember=True)
    assert harness.app.registry.get(pid).settings.allowed_tools == ((rule,) if rule else ())


def test_remember_with_deny_adds_nothing(asked: Asked) -> None:
    t = asked
    respond(t.client, t.pid, t.permission_id, behavior="deny", remember=True)
    assert t.harness.app.registry.get(t.pid).settings.allowed_tools == ()


def test_project_settings_replace_and_survive_a_restart(harness: Harness) -> None:
    pid, [client, other] = setup(harness, followers=2)
    replies = client.request(
        "project_settings",
        project_id=pid,
        request_id="s1",
        data={"allowed_tools": ["Read", "Bash(make:*)", "Read"], "approvals": "off"},
    )
    assert [m["type"] for m in replies] == ["project_state", "project_state"]
    assert replies[0]["request_id"] == "s1"
    assert replies[0]["data"]["settings"] == {
        "allowed_tools": ["Read", "Bash(make:*)"],
        "approvals": "off",
    }
    assert states(other.new())[0]["settings"]["approvals"] == "off"
    process, _ = start(harness, client, pid)
    assert "--permission-prompt-tool" not in process.args
    tools = process.args.index("--allowedTools")
    assert process.args[tools + 1 : tools + 3] == ["Read", "Bash(make:*)"]
    meta = json.loads((harness.config.data_dir / "projects" / pid / "metadata.json").read_text())
    reloaded = Project.from_metadata(meta, pid)
    assert reloaded.settings.allowed_tools == ("Read", "Bash(make:*)")
    assert reloaded.settings.approvals == "off"
    # Only what is given is replaced.
    client.request("project_settings", project_id=pid, data={"allowed_tools": []})
    assert harness.app.registry.get(pid).settings.approvals == "off"
    assert harness.app.registry.get(pid).settings.allowed_tools == ()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"allowed_tools": "Read"}, "data.allowed_tools"),
        ({"allowed_tools": ["Read", "-p"]}, "data.allowed_tools[1]"),
        ({"allowed_tools": [""]}, "data.allowed_tools[0]"),
        ({"allowed_tools": ["a\nb"]}, "data.allowed_tools[0]"),
        ({"allowed_tools": ["x" * 257]}, "data.allowed_tools[0]"),
        ({"approvals": "sometimes"}, "data.approvals"),
    ],
)
def test_bad_settings_are_refused(harness: Harness, data: dict[str, Any], field: str) -> None:
    pid, [client] = setup(harness)
    [error] = client.request("project_settings", project_id=pid, data=data)
    assert error["data"]["code"] == "INVALID_MESSAGE"
    assert error["data"]["details"]["field"] == field
    assert harness.app.registry.get(pid).settings.allowed_tools == ()


def test_bad_stored_settings_are_dropped_not_a_reason_to_quarantine_the_project() -> None:
    base = {"id": "p1", "path": "/w", "created_at": "2024-01-01T00:00:00Z", "session_id": "s"}
    cases = [
        ({"allowed_tools": ["Read", "-x", 3]}, ("Read",), None),
        ({"allowed_tools": "Read", "approvals": "off"}, (), "off"),
        ({"approvals": "maybe"}, (), None),
        ([], (), None),
    ]
    for settings, rules, approvals in cases:
        project = Project.from_metadata({**base, "settings": settings}, "p1")
        assert (project.settings.allowed_tools, project.settings.approvals) == (rules, approvals)
        assert project.session_id == "s"
    assert Project.from_metadata(base, "p1").settings.allowed_tools == ()


def test_the_server_default_shows_in_the_settings(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(claude={"binary": "/bin/sh", "approvals": "off"})
    _, [client] = setup(harness)
    [listed] = client.one("project_list")["data"]["projects"]
    assert listed["settings"] == {"allowed_tools": [], "approvals": "off"}


def test_records_of_a_prompt_are_in_the_history_in_order(asked: Asked) -> None:
    t = asked
    respond(t.client, t.pid, t.permission_id, behavior="allow")
    history = [r["data"] for r in harness_history(t.harness, t.pid)]
    types = [r["message"]["type"] for r in history]
    at = types.index("permission_request")
    assert types[at - 1] == "control_request"  # the CLI's line is recorded as it came
    assert types[at + 1] == "permission_resolved"
    assert history[at]["direction"] == "server"
    assert history[at - 1]["direction"] == "claude"
    seqs = [r["seq"] for r in history]
    assert seqs == list(range(1, len(seqs) + 1))


# ---------------------------------------------------------------- operators


def test_metrics_count_prompts_their_ends_and_interrupted_runs(
    make_harness: Callable[..., Harness],
) -> None:
    from tests.test_metrics import scrape, value

    harness = make_harness(timeouts={"permission": 60.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process, request_id="r1")
    harness.clock.advance(12)
    respond(client, pid, pending_id(client.new()), behavior="allow")
    ask(process, request_id="r2")
    harness.clock.advance(60)  # the timeout
    client.request("agent_interrupt", project_id=pid)
    process.emit(ERROR_RESULT)
    process.exit(1)
    scraped = scrape(harness)
    assert value(scraped, "pocket_agent_permission_requests_total") == 2
    resolved = "pocket_agent_permissions_resolved_total"
    assert value(scraped, resolved, behavior="allow", reason="user") == 1
    assert value(scraped, resolved, behavior="deny", reason="timeout") == 1
    assert value(scraped, resolved, behavior="deny", reason="interrupted") == 0
    assert value(scraped, "pocket_agent_permission_wait_seconds_sum") == 72
    assert value(scraped, "pocket_agent_executions_total", status="interrupted") == 1


def test_the_log_says_who_asked_what_and_how_it_ended(asked: Asked) -> None:
    from twisted.logger import LogEvent, globalLogPublisher

    t = asked
    seen: list[LogEvent] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        t.client.request("agent_interrupt", project_id=t.pid)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    formats = [e.get("log_format") for e in seen]
    assert "Interrupt requested" in formats
    [resolved] = [e for e in seen if e.get("log_format") == "Permission {behavior} ({reason})"]
    assert (resolved["behavior"], resolved["reason"]) == ("deny", "interrupted")
    assert resolved["permission_id"] == t.permission_id and resolved["project_id"] == t.pid


def test_a_control_request_we_do_not_serve_gets_an_error_reply(harness: Harness) -> None:
    """Else the CLI would wait for an answer forever (hooks, SDK MCP servers: never asked
    for, but a CLI that sends one anyway must not hang the run)."""
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.emit(
        {"type": "control_request", "request_id": "h1", "request": {"subtype": "hook_callback"}}
    )
    seen = client.new()
    assert kinds(seen) == ["agent_message:control_request"]  # recorded, nothing asked
    [response] = control_responses(process)
    assert response["subtype"] == "error" and response["request_id"] == "h1"
    assert "hook_callback" in response["error"]


def test_remember_is_announced_with_the_resolution(asked: Asked) -> None:
    t = asked
    replies = respond(t.client, t.pid, t.permission_id, behavior="allow", remember=True)
    assert kinds(replies) == [
        "permission_response",
        "agent_message:permission_resolved",
        "project_state",
    ]
    assert states(replies)[0]["settings"]["allowed_tools"] == ["Write"]
