"""Approvals at their edges (SPEC §10): races, slow previews, odd control lines, the outcome
table, storage faults, huge inputs; found by attacking the core, kept as regressions."""

from __future__ import annotations

import errno
import json
import signal
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from twisted.internet.defer import Deferred

from pocket_agent.core.events import SlowConsumerDropped
from pocket_agent.core.projects import ProjectStatus
from pocket_agent.runs.approvals import rule_for
from pocket_agent.runs.control import ToolAsk
from pocket_agent.runs.prompts import Prompt
from pocket_agent.times import from_seconds
from tests.support import Harness
from tests.test_approvals import (
    ERROR_RESULT,
    REQUEST_ID,
    Asked,
    ask,
    control_responses,
    harness_history,
    of_type,
    pending_id,
    reply_of,
    respond,
    states,
    stdin_lines,
)
from tests.test_execution import INIT, RESULT, TEXT, records, setup, start
from tests.test_reliability import FullDisk, crash, history_of


def outcome(messages: list[dict[str, Any]]) -> str:
    return str(reply_of(messages, "execution_finished")["data"]["outcome"])


def run_timers(harness: Harness) -> list[Any]:
    """The delayed calls of the run engine still armed: its deadlines, the prompts'
    timers (inputs of the run machine), the process scan (autobahn's, txaio's, the
    connections' and the history's own are not the run's)."""
    ours = []
    for call in harness.clock.getDelayedCalls():
        func = getattr(call, "func", None)  # a DelayedCall's (IDelayedCall does not say)
        module = getattr(func, "__module__", "") or ""
        if module.startswith("pocket_agent.runs") or any(
            name in repr(func) for name in ("RunInputs", "RunCore")
        ):
            ours.append(call)
    return ours


class SlowPreviews:
    """An executor ``run_in_thread`` whose previews arrive when the test says so."""

    def __init__(self, harness: Harness) -> None:
        self.waiting: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []
        harness.app.executor.run_in_thread = self

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiting.append((d, fn, args))
        return d

    def finish(self, index: int = 0) -> None:
        d, fn, args = self.waiting.pop(index)
        d.callback(fn(*args))

    def fail(self, index: int = 0) -> None:
        d, _, _ = self.waiting.pop(index)
        d.errback(OSError(errno.EIO, "Input/output error"))


# --------------------------------------------------------- the CLI withdraws first


def test_an_answer_after_the_cli_withdrew_is_already_resolved_and_not_sent(asked: Asked) -> None:
    t = asked
    t.process.emit({"type": "control_cancel_request", "request_id": REQUEST_ID})
    t.client.new()
    [reply] = respond(t.client, t.pid, t.permission_id, behavior="allow")
    assert reply["data"]["status"] == "already_resolved"
    assert control_responses(t.process) == []  # the CLI owes nothing for a withdrawn one


def test_a_withdrawal_after_the_answer_changes_nothing(asked: Asked) -> None:
    t = asked
    respond(t.client, t.pid, t.permission_id, behavior="allow")
    t.process.emit({"type": "control_cancel_request", "request_id": REQUEST_ID})
    seen = t.client.new()
    assert of_type(seen, "permission_resolved") == []
    assert len(control_responses(t.process)) == 1


# ----------------------------------------------------------- a preview in the making


@pytest.fixture
def slow(harness: Harness) -> SlowPreviews:
    return SlowPreviews(harness)


def test_a_prompt_is_shown_only_once_its_preview_is_ready(
    harness: Harness, slow: SlowPreviews
) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process)
    assert of_type(client.new(), "permission_request") == []
    assert harness.app.registry.get(pid).run.pending_permissions == ()  # type: ignore[union-attr]
    slow.finish()
    [request] = of_type(client.new(), "permission_request")
    assert request["preview"]["kind"] == "diff"


def test_a_preview_that_fails_still_asks_without_one(harness: Harness, slow: SlowPreviews) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process)
    slow.fail()
    [request] = of_type(client.new(), "permission_request")
    assert "preview" not in request
    respond(client, pid, request["permission_id"], behavior="allow")
    assert control_responses(process)[0]["response"]["behavior"] == "allow"


def test_withdrawn_while_the_preview_is_built_is_never_shown(
    harness: Harness, slow: SlowPreviews
) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process)
    process.emit({"type": "control_cancel_request", "request_id": REQUEST_ID})
    slow.finish()
    seen = client.new()
    assert of_type(seen, "permission_request") == of_type(seen, "permission_resolved") == []
    assert control_responses(process) == []
    process.emit(RESULT)
    process.exit(0)
    assert outcome(client.new()) == "success"


def test_a_kill_while_the_preview_is_built_denies_the_late_prompt(
    harness: Harness, slow: SlowPreviews
) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process)
    client.request("agent_kill", project_id=pid)
    slow.finish()
    seen = client.new()
    [resolved] = of_type(seen, "permission_resolved")
    assert (resolved["behavior"], resolved["reason"]) == ("deny", "run_ended")
    assert control_responses(process)[0]["response"]["behavior"] == "deny"
    assert states(seen)[-1]["pending_permissions"] == []
    process.exit(0, signal.SIGINT)
    assert outcome(client.new()) == "killed"


def test_an_interrupt_while_the_preview_is_built(harness: Harness, slow: SlowPreviews) -> None:
    """The CLI cancels what it asked on an interrupt: the prompt is dropped unseen."""
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process)
    client.request("agent_interrupt", project_id=pid)
    process.emit({"type": "control_cancel_request", "request_id": REQUEST_ID})
    slow.finish()
    assert of_type(client.new(), "permission_request") == []
    process.emit(ERROR_RESULT)
    process.exit(1)
    assert outcome(client.new()) == "interrupted"


def test_a_result_while_the_preview_is_built(harness: Harness, slow: SlowPreviews) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process)
    process.emit(RESULT)
    slow.finish()  # stdin is closed: the deny cannot be written, the record says it
    [resolved] = of_type(client.new(), "permission_resolved")
    assert resolved["reason"] == "run_ended"
    assert process.stdin_closed and control_responses(process) == []
    process.exit(0)
    assert outcome(client.new()) == "success"


def test_a_preview_that_comes_after_the_run_is_dropped(
    harness: Harness, slow: SlowPreviews
) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process)
    process.exit(1)
    assert outcome(client.new()) == "failed"
    slow.finish()
    assert client.new() == []
    assert harness.app.registry.get(pid).status is ProjectStatus.ERROR


def test_a_shutdown_while_the_preview_is_built_finishes(
    harness: Harness, slow: SlowPreviews
) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process)
    harness.service.stopService()
    slow.finish()
    assert control_responses(process)[0]["response"]["behavior"] == "deny"
    process.exit(0, signal.SIGINT)
    history = [r["data"]["message"] for r in harness_history(harness, pid)]
    types = [m["type"] for m in history]
    assert types.index("permission_resolved") < types.index("execution_finished")


# ---------------------------------------------------------------- several prompts


def test_one_prompt_times_out_while_another_is_answered_and_clocks_wait_for_both(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(timeouts={"execution": 30.0, "no_output": 0.0, "permission": 60.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    harness.clock.advance(10)  # 20 s of the run left
    ask(process, "Bash", {"command": "ls"}, request_id="r1")
    harness.clock.advance(30)
    ask(process, "Bash", {"command": "pwd"}, request_id="r2")
    second = of_type(client.new(), "permission_request")[1]["permission_id"]
    harness.clock.advance(30.1)  # r1 times out; r2 still open: still awaiting
    seen = client.new()
    assert [m["reason"] for m in of_type(seen, "permission_resolved")] == ["timeout"]
    assert states(seen)[-1]["awaiting_approval"] is True
    harness.clock.advance(25)  # the clocks stay paused while r2 is open
    assert harness.clock.trees[-1].signals == []
    respond(client, pid, second, behavior="allow")
    assert [r["request_id"] for r in control_responses(process)] == ["r1", "r2"]
    harness.clock.advance(19.9)
    assert harness.clock.trees[-1].signals == []
    harness.clock.advance(0.2)
    assert harness.clock.trees[-1].signals == [("leader", signal.SIGINT)]


# ---------------------------------------------------------------- interrupts


def test_interrupt_twice_sends_one_interrupt(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    first = reply_of(client.request("agent_interrupt", project_id=pid), "agent_interrupt")
    second = reply_of(client.request("agent_interrupt", project_id=pid), "agent_interrupt")
    assert first["data"] == second["data"] == {"status": "interrupting"}
    sent = [line for line in stdin_lines(process) if line["type"] == "control_request"]
    assert len(sent) == 1
    process.emit(ERROR_RESULT)
    process.exit(1)
    assert outcome(client.new()) == "interrupted"


def test_a_success_result_after_the_interrupt_is_still_interrupted(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    client.request("agent_interrupt", project_id=pid)
    process.emit(RESULT)
    process.exit(0)
    assert outcome(client.new()) == "interrupted"


def test_an_interrupted_run_that_exits_without_a_result_is_interrupted(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    client.request("agent_interrupt", project_id=pid)
    process.exit(1)
    messages = client.new()
    assert outcome(messages) == "interrupted"
    assert [m for m in messages if m["type"] == "error"] == []


def test_a_kill_after_the_interrupt_fell_back_to_sigint_is_a_kill(harness: Harness) -> None:
    """SPEC §10: an interrupt accepted before the result is ``interrupted``, also when the
    SIGINT fallback was needed; a kill after it makes it ``killed``."""
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    client.request("agent_interrupt", project_id=pid)
    harness.clock.advance(harness.config.timeouts.kill_grace + 0.1)  # the SIGINT fallback
    assert harness.clock.trees[-1].signals == [("leader", signal.SIGINT)]
    kill = client.request("agent_kill", project_id=pid)
    assert reply_of(kill, "agent_kill")["data"]["status"] == "killed"
    process.exit(0, signal.SIGINT)
    assert outcome(client.new()) == "killed"


def test_with_approvals_off_a_kill_after_the_interrupt_is_a_kill(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(claude={"binary": "/bin/sh", "approvals": "off"})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    client.request("agent_interrupt", project_id=pid)
    kill = client.request("agent_kill", project_id=pid)
    assert reply_of(kill, "agent_kill")["data"]["status"] == "killed"
    process.exit(0, signal.SIGINT)
    assert outcome(client.new()) == "killed"


def test_a_kill_after_the_interrupt_then_its_result_is_interrupted(harness: Harness) -> None:
    """The interrupt's result came first: the kill is only the way out."""
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    client.request("agent_interrupt", project_id=pid)
    process.emit(ERROR_RESULT)
    client.request("agent_kill", project_id=pid)
    process.exit(0, signal.SIGINT)
    assert outcome(client.new()) == "interrupted"


def test_an_interrupt_after_a_kill_changes_nothing(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    client.request("agent_kill", project_id=pid)
    client.request("agent_interrupt", project_id=pid)
    assert [line["type"] for line in stdin_lines(process)] == ["user"]
    process.exit(0, signal.SIGINT)
    assert outcome(client.new()) == "killed"


def test_an_interrupt_during_a_timeout_stop_stays_a_timeout(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(timeouts={"execution": 5.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    harness.clock.advance(5.1)
    client.request("agent_interrupt", project_id=pid)
    process.exit(0, signal.SIGINT)
    assert outcome(client.new()) == "timeout"


def test_a_prompt_asked_while_interrupting_is_denied_as_interrupted(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    client.request("agent_interrupt", project_id=pid)
    client.new()
    ask(process)
    [resolved] = of_type(client.new(), "permission_resolved")
    assert (resolved["behavior"], resolved["reason"]) == ("deny", "interrupted")
    assert control_responses(process)[0]["response"]["behavior"] == "deny"


def test_a_shutdown_while_interrupting_is_killed(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    client.request("agent_interrupt", project_id=pid)
    harness.service.stopService()
    process.exit(0, signal.SIGINT)
    history = [r["data"]["message"] for r in harness_history(harness, pid)]
    assert history[-1]["type"] == "execution_finished" and history[-1]["outcome"] == "killed"


# ------------------------------------------------------------------ the timers


@pytest.mark.parametrize(
    "ending",
    ["allow_then_result", "timeout_then_result", "interrupt", "kill", "fallback", "exit"],
)
def test_no_run_timer_is_left_armed_after_the_run(
    make_harness: Callable[..., Harness], ending: str
) -> None:
    harness = make_harness(timeouts={"permission": 60.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process)
    permission_id = pending_id(client.new())
    assert len(run_timers(harness)) == 2  # the prompt's timeout and the process scan
    if ending == "allow_then_result":
        respond(client, pid, permission_id, behavior="allow")
        process.emit(RESULT)
        process.exit(0)
    elif ending == "timeout_then_result":
        harness.clock.advance(60.1)
        process.emit(RESULT)
        process.exit(0)
    elif ending == "interrupt":
        client.request("agent_interrupt", project_id=pid)
        process.emit(ERROR_RESULT)
        process.exit(1)
    elif ending == "kill":
        client.request("agent_kill", project_id=pid)
        process.exit(0, signal.SIGINT)
    elif ending == "fallback":
        client.request("agent_interrupt", project_id=pid)
        harness.clock.advance(harness.config.timeouts.kill_grace + 0.1)
        process.exit(0, signal.SIGINT)
    else:
        process.exit(1)
    client.new()
    assert harness.app.registry.get(pid).run is None
    assert run_timers(harness) == []


def test_output_while_awaiting_does_not_restart_a_stopped_clock(
    make_harness: Callable[..., Harness],
) -> None:
    """Lines the CLI prints while a prompt is open (a second ask) leave the clocks paused."""
    harness = make_harness(timeouts={"execution": 0.0, "no_output": 10.0, "permission": 0.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process, request_id="r1")
    process.emit(TEXT, TEXT)
    harness.clock.advance(3600)
    assert harness.clock.trees[-1].signals == []


# ------------------------------------------------------------------- answers


def test_an_empty_updated_input_replaces_the_input(asked: Asked) -> None:
    t = asked
    respond(t.client, t.pid, t.permission_id, behavior="allow", updated_input={})
    [response] = control_responses(t.process)
    assert response["response"] == {"behavior": "allow", "updatedInput": {}}


def test_answers_are_added_to_a_changed_input(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    question = {"questions": [{"question": "Which?", "options": [{"label": "A"}]}]}
    ask(process, "AskUserQuestion", question)
    changed = {"questions": [], "note": "x"}
    respond(
        client,
        pid,
        pending_id(client.new()),
        behavior="allow",
        updated_input=changed,
        answers={"Which?": "A"},
    )
    [response] = control_responses(process)
    assert response["response"]["updatedInput"] == {**changed, "answers": {"Which?": "A"}}


def test_remember_on_a_question_or_a_plan_adds_nothing(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process, "ExitPlanMode", {"plan": "p"})
    respond(client, pid, pending_id(client.new()), behavior="allow", remember=True)
    assert harness.app.registry.get(pid).settings.allowed_tools == ()


def test_an_answer_for_another_projects_prompt_does_not_touch_it(asked: Asked) -> None:
    t = asked
    other_dir = t.harness.project_dir("other")
    other = t.client.request("project_create", data={"path": str(other_dir)})[0]["project_id"]
    [error] = respond(t.client, other, t.permission_id, behavior="deny")
    assert error["data"]["code"] == "PERMISSION_NOT_FOUND"
    assert t.harness.app.registry.get(t.pid).run.pending_permissions  # type: ignore[union-attr]
    assert control_responses(t.process) == []


@pytest.mark.parametrize(
    ("command", "unsafe"),
    [("*", "*"), ("ls,Write", ","), ("git:*)", ")"), ("a(b", "(")],
)
def test_remember_never_makes_a_rule_wider_than_the_command(command: str, unsafe: str) -> None:
    """``Bash(<first word>:*)`` is a prefix rule the CLI parses: a first word with glob or
    list syntax in it (the model chose it) must not become a wider or a second rule."""
    ask_ = ToolAsk("r", "Bash", {"command": f"{command} -x"})
    prompt = Prompt("p", "run", ask_, from_seconds(0), None)
    rule = rule_for(prompt)
    assert rule is None or unsafe not in rule.removeprefix("Bash(").removesuffix(":*)")


# --------------------------------------------------------------- the CLI's odd lines


@pytest.mark.parametrize(
    "request_",
    [
        {"subtype": "can_use_tool", "input": {}},  # no tool_name
        {"subtype": "can_use_tool", "tool_name": "Write", "input": "x"},  # input not an object
        {"subtype": "can_use_tool", "tool_name": 3, "input": {}},
        "not an object",
    ],
)
def test_a_malformed_can_use_tool_gets_an_error_and_asks_nobody(
    harness: Harness, request_: Any
) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.emit({"type": "control_request", "request_id": "bad", "request": request_})
    seen = client.new()
    assert of_type(seen, "permission_request") == []
    [response] = control_responses(process)
    assert response["subtype"] == "error" and response["request_id"] == "bad"
    assert harness.app.registry.get(pid).run.pending_permissions == ()  # type: ignore[union-attr]


@pytest.mark.parametrize("request_id", [None, 7, ""])
def test_a_control_request_without_a_usable_id_is_only_recorded(
    harness: Harness, request_id: Any
) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    line: dict[str, Any] = {
        "type": "control_request",
        "request": {"subtype": "can_use_tool", "tool_name": "Write", "input": {}},
    }
    if request_id is not None:
        line["request_id"] = request_id
    process.emit(line)
    assert [r["message"]["type"] for r in records(client.new())] == ["control_request"]
    assert control_responses(process) == []


def test_a_can_use_tool_without_a_tool_use_id_is_asked(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    process.emit(
        {
            "type": "control_request",
            "request_id": "r",
            "request": {
                "subtype": "can_use_tool",
                "tool_name": "Bash",
                "input": {"command": "ls"},
            },
        }
    )
    [request] = of_type(client.new(), "permission_request")
    assert request["tool_use_id"] is None
    assert set(request) >= {"type", "permission_id", "run_id", "kind", "tool_name", "input"}
    assert set(request) >= {"created_at", "expires_at"}


def test_the_resolved_record_has_the_spec_fields(asked: Asked) -> None:
    t = asked
    replies = respond(t.client, t.pid, t.permission_id, behavior="allow")
    [resolved] = of_type(replies, "permission_resolved")
    spec = {"type", "permission_id", "behavior", "reason", "by_connection_id", "resolved_at"}
    assert spec <= set(resolved)
    assert resolved["resolved_at"].endswith("Z")


# ------------------------------------------------------------- project life


def test_delete_and_new_session_are_refused_while_awaiting(asked: Asked) -> None:
    t = asked
    for kind in ("project_delete", "agent_new_session"):
        [error] = t.client.request(kind, project_id=t.pid)
        assert error["data"]["code"] == "PROCESS_ACTIVE"
    assert t.harness.app.registry.get(t.pid).run.pending_permissions  # type: ignore[union-attr]


def test_settings_during_a_run_apply_from_the_next_run_only(asked: Asked) -> None:
    t = asked
    replies = t.client.request(
        "project_settings", project_id=t.pid, data={"approvals": "off", "allowed_tools": ["Read"]}
    )
    assert states(replies)[0]["pending_permissions"]  # the open prompt is still shown
    respond(t.client, t.pid, t.permission_id, behavior="allow")
    assert control_responses(t.process)[0]["response"]["behavior"] == "allow"
    t.client.request("agent_interrupt", project_id=t.pid)
    # This run was started with approvals: its interrupt is still the stdio one.
    assert stdin_lines(t.process)[-1]["request"] == {"subtype": "interrupt"}
    t.process.emit(ERROR_RESULT)
    t.process.exit(1)
    assert outcome(t.client.new()) == "interrupted"
    t.harness.clock.advance(60)
    second, _ = start(t.harness, t.client, t.pid)
    assert "--permission-prompt-tool" not in second.args
    assert "Read" in second.args


def test_reloading_timeouts_permission_keeps_the_open_prompts_deadline(asked: Asked) -> None:
    t = asked
    harness = t.harness
    [expires] = [
        p["expires_at"]
        for p in harness.app.registry.get(t.pid).run.pending_permissions  # type: ignore[union-attr]
    ]
    loaded = attrs.evolve(
        harness.config,
        timeouts=attrs.evolve(harness.config.timeouts, permission=5.0),
        claude=attrs.evolve(harness.config.claude, approvals="off"),
    )
    harness.app.reconfigure(loaded)
    harness.clock.advance(10)
    assert control_responses(t.process) == []  # still the 10 minutes it was asked with
    [listed] = t.client.one("project_list")["data"]["projects"]
    assert [p["expires_at"] for p in listed["pending_permissions"]] == [expires]
    assert listed["settings"]["approvals"] == "off"  # the server default, shown now
    respond(t.client, t.pid, t.permission_id, behavior="allow")
    assert control_responses(t.process)[0]["response"]["behavior"] == "allow"


# ------------------------------------------------------------- storage faults


def test_a_full_disk_when_the_prompt_is_recorded_stops_the_run_and_denies_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid, [client] = setup(harness)
    disk = FullDisk(harness, pid, monkeypatch)
    process, _ = start(harness, client, pid)
    process.emit(INIT)
    client.new()
    original = harness.app.registry.history(pid).append

    def full_from_the_prompt(run_id: Any, direction: str, message: Any, raw: Any = None) -> Any:
        if message.get("type") == "permission_request":
            disk.full = True
        return original(run_id, direction, message, raw)

    monkeypatch.setattr(harness.app.registry.history(pid), "append", full_from_the_prompt)
    ask(process)
    assert harness.clock.trees[-1].signals == [("leader", signal.SIGINT)]
    # The CLI hears a deny: nobody could have seen the prompt.
    assert control_responses(process)[0]["response"]["behavior"] == "deny"
    assert harness.app.registry.get(pid).run.pending_permissions == ()  # type: ignore[union-attr]
    process.exit(0, signal.SIGINT)
    messages = client.new()
    finished = reply_of(messages, "execution_finished")["data"]
    assert (finished["outcome"], finished["reason"]) == ("failed", "storage")
    assert states(messages)[-1]["awaiting_approval"] is False


def test_a_full_disk_when_the_answer_is_recorded_still_tells_the_cli(
    asked: Asked, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = asked
    disk = FullDisk(t.harness, t.pid, monkeypatch)
    disk.full = True
    replies = respond(t.client, t.pid, t.permission_id, behavior="allow")
    assert reply_of(replies, "permission_response")["data"]["status"] == "applied"
    # The answer reached the CLI before its Record failed; the run then stops.
    assert control_responses(t.process)[0]["response"]["behavior"] == "allow"
    assert t.harness.clock.trees[-1].signals == [("leader", signal.SIGINT)]
    t.process.exit(0, signal.SIGINT)
    assert outcome(t.client.new()) == "failed"


def test_a_remember_that_cannot_be_saved_changes_nothing(
    asked: Asked, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = asked
    registry = t.harness.app.registry

    def refuse(project: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(registry, "save", refuse)
    replies = respond(t.client, t.pid, t.permission_id, behavior="allow", remember=True)
    [error] = [m for m in replies if m.get("request_id") == "p1"]
    assert error["type"] == "error" and error["data"]["code"] == "STORAGE_ERROR"
    assert of_type(replies, "permission_resolved") == []
    assert control_responses(t.process) == []
    assert registry.get(t.pid).settings.allowed_tools == ()
    monkeypatch.undo()
    replies = respond(t.client, t.pid, t.permission_id, behavior="allow")
    assert reply_of(replies, "permission_response")["data"]["status"] == "applied"


def test_a_prompt_open_at_a_crash_is_resolved_in_the_history(
    make_harness: Callable[..., Harness],
) -> None:
    """A phone reading the history after a crash must not see a prompt open forever."""
    first = make_harness()
    pid, [client] = setup(first)
    process, _ = start(first, client, pid)
    ask(process)
    permission_id = pending_id(client.new())
    crash(first)
    second = make_harness()
    reader = second.hello()[0]
    messages = history_of(second, reader, pid)
    resolved = [m for m in messages if m["type"] == "permission_resolved"]
    assert [m["permission_id"] for m in resolved] == [permission_id]
    assert resolved[0]["reason"] == "run_ended"


# ------------------------------------------------------------------ huge inputs


def sizes(messages: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(m["type"], len(json.dumps(m))) for m in messages]


def test_a_huge_write_is_shown_with_a_capped_preview(harness: Harness) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    content = "x" * (5 * 1024 * 1024)
    ask(process, "Write", {"file_path": "big.txt", "content": content})
    [request] = of_type(client.new(), "permission_request")
    preview = request["preview"]
    assert preview["truncated"] is True
    assert len(preview["diff"].encode()) <= 65536
    respond(client, pid, request["permission_id"], behavior="allow")
    [response] = control_responses(process)
    assert response["response"]["updatedInput"]["content"] == content


def test_a_paused_follower_survives_one_big_write_prompt(harness: Harness) -> None:
    """A 3 MiB Write within the default 8 MiB send buffer: the phone must still get it.
    The input goes out three times (the CLI's control_request Record, the
    permission_request Record and the project_state's pending_permissions)."""
    pid, [client, phone] = setup(harness, followers=2)
    process, _ = start(harness, client, pid)
    client.new(), phone.new()
    phone.server.budget.pauseProducing()  # a phone on a slow link
    ask(process, "Write", {"file_path": "big.txt", "content": "x" * (3 * 1024 * 1024)})
    harness.clock.advance(0)
    phone.pump.flush()
    assert harness.events.of(SlowConsumerDropped) == []
    assert not phone.protocol.closed


def test_pending_permissions_cut_long_input_strings_for_every_connection(
    harness: Harness,
) -> None:
    """The state goes to every connection (the projects screen), again on every change
    while the prompt is open: long strings of the input are cut there, and the
    Record keeps the whole input."""
    pid, [client] = setup(harness)
    stranger = harness.hello()[0]
    stranger.new()
    process, _ = start(harness, client, pid)
    content = "y" * (2 * 1024 * 1024)
    ask(process, "Write", {"file_path": "big.txt", "content": content})
    [(kind, size)] = sizes(stranger.new())
    assert kind == "project_state" and size < 100_000
    seen = client.new()
    [request] = of_type(seen, "permission_request")
    assert request["input"]["content"] == content and "input_truncated" not in request
    [pending] = [m for m in seen if m["type"] == "project_state"][-1]["data"][
        "pending_permissions"
    ]
    assert pending["input_truncated"] is True
    assert pending["input"]["file_path"] == "big.txt"
    assert (
        pending["input"]["content"].startswith("yyyy") and len(pending["input"]["content"]) < 5000
    )
    assert pending["permission_id"] == request["permission_id"]


# ------------------------------------------------------------------- more races


def test_an_interrupt_from_one_phone_beats_an_answer_from_another(asked: Asked) -> None:
    t = asked
    t.client.request("agent_interrupt", project_id=t.pid)
    replies = respond(t.other, t.pid, t.permission_id, behavior="allow")
    assert reply_of(replies, "permission_response")["data"]["status"] == "already_resolved"
    # Nothing but the interrupt went to the CLI: it cancels the prompt itself.
    assert control_responses(t.process) == []


def test_previews_that_finish_out_of_order_are_listed_as_they_open(
    harness: Harness, slow: SlowPreviews
) -> None:
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process, "Bash", {"command": "ls"}, request_id="r1")
    ask(process, "Bash", {"command": "pwd"}, request_id="r2")
    slow.finish(1)  # r2's preview first
    slow.finish(0)
    pending = harness.app.registry.get(pid).run.pending_permissions  # type: ignore[union-attr]
    assert [p["input"]["command"] for p in pending] == ["pwd", "ls"]
    for request in of_type(client.new(), "permission_request"):
        respond(client, pid, request["permission_id"], behavior="allow")
    assert sorted(r["request_id"] for r in control_responses(process)) == ["r1", "r2"]


def test_a_prompt_refused_on_the_way_out_is_not_announced_to_strangers(
    harness: Harness, slow: SlowPreviews
) -> None:
    pid, [client] = setup(harness)
    stranger = harness.hello()[0]
    process, _ = start(harness, client, pid)
    ask(process)
    client.request("agent_kill", project_id=pid)
    stranger.new()
    slow.finish()
    assert stranger.new() == []  # awaiting_approval never flipped
    assert of_type(client.new(), "permission_resolved")[0]["reason"] == "run_ended"


def test_a_shutdown_out_of_time_while_awaiting_resolves_the_prompt_first(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(timeouts={"shutdown": 10.0})
    pid, [client] = setup(harness)
    process, _ = start(harness, client, pid)
    ask(process)
    harness.service.stopService()
    harness.clock.advance(11)  # claude never exits: the shutdown gives up on it
    history = [r["data"]["message"] for r in harness_history(harness, pid)]
    types = [m["type"] for m in history]
    assert types.count("permission_resolved") == 1
    assert types.index("permission_resolved") < types.index("execution_finished")
    assert history[-1]["outcome"] == "killed"
    assert run_timers(harness) == []


def test_an_interrupt_with_two_prompts_open_flips_awaiting_once(harness: Harness) -> None:
    pid, [client] = setup(harness)
    stranger = harness.hello()[0]
    process, _ = start(harness, client, pid)
    ask(process, "Bash", {"command": "ls"}, request_id="r1")
    ask(process, "Bash", {"command": "pwd"}, request_id="r2")
    assert [s["awaiting_approval"] for s in states(stranger.new())] == [True]
    seen = client.request("agent_interrupt", project_id=pid)
    reasons = [m["reason"] for m in of_type(seen, "permission_resolved")]
    assert reasons == ["interrupted", "interrupted"]
    assert [s["awaiting_approval"] for s in states(stranger.new())] == [False]
    assert control_responses(process) == []  # the CLI cancels both itself


def test_an_oversized_answer_closes_that_connection_and_changes_nothing(asked: Asked) -> None:
    t = asked
    limit = t.harness.config.limits.max_message_size
    huge = {"file_path": "hello.txt", "content": "z" * (limit + 1)}
    respond(t.client, t.pid, t.permission_id, behavior="allow", updated_input=huge)
    assert t.client.protocol.closed and t.client.protocol.close_code == 1009
    assert control_responses(t.process) == []
    assert t.harness.app.registry.get(t.pid).run.pending_permissions  # type: ignore[union-attr]
    replies = respond(t.other, t.pid, t.permission_id, behavior="deny")
    assert reply_of(replies, "permission_response")["data"]["status"] == "applied"
