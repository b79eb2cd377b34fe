"""SPEC §10 with real processes: the executor on the real reactor runs the fake claude,
which speaks the CLI's stdio control protocol. Each path is checked where it shows: the
Records, the lines claude read on its stdin, the file system, and the run's outcome."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from pocket_agent.core.events import Cause
from pocket_agent.runs.options import RunOptions
from pocket_agent.runs.prompts import PermissionAnswer
from tests.test_runs_real import Follower, RealRuns

pytestmark = pytest.mark.e2e

# The fake claude in-process, also logging what it reads on stdin (no process between).
STDIN_LOGGING_CLAUDE = Path(__file__).parent / "fixtures" / "stdin_logging_claude" / "claude"
WAIT = 10.0  # a bound on every wait: a broken path fails instead of hanging the suite


def settled(d: defer.Deferred[Any]) -> defer.Deferred[Any]:
    """Fire on the reactor's next turn, not inside the delivery that fired ``d``: the bus
    queues the events a command emits while it is still delivering, so a test that
    answered from there would not see the reply yet. With the bound on the wait."""

    def next_turn(value: Any) -> defer.Deferred[Any]:
        later: defer.Deferred[Any] = defer.Deferred()
        reactor.callLater(0, later.callback, value)
        return later

    return d.addTimeout(WAIT, reactor).addCallback(next_turn)


def wait_record(
    follower: Follower, predicate: Callable[[dict[str, Any]], bool]
) -> defer.Deferred[dict[str, Any]]:
    """The first Record message (already seen or still to come) that ``predicate`` likes."""
    for record in follower.records():
        if predicate(record["message"]):
            return settled(defer.succeed(record["message"]))
    found: defer.Deferred[dict[str, Any]] = defer.Deferred()

    def check(wire: dict[str, Any]) -> None:
        if predicate(wire["data"]["message"]):
            found.callback(wire["data"]["message"])
        else:
            follower.wait_for("agent_message").addCallback(check)

    follower.wait_for("agent_message").addCallback(check)
    return settled(found)


def wait_frame(
    follower: Follower, kind: str, predicate: Callable[[dict[str, Any]], bool]
) -> defer.Deferred[dict[str, Any]]:
    """The first frame of type ``kind`` (already seen or still to come) whose data
    ``predicate`` likes."""
    for frame in follower.messages:
        if frame["type"] == kind and predicate(frame["data"]):
            return settled(defer.succeed(frame["data"]))
    found: defer.Deferred[dict[str, Any]] = defer.Deferred()

    def check(wire: dict[str, Any]) -> None:
        if predicate(wire["data"]):
            found.callback(wire["data"])
        else:
            follower.wait_for(kind).addCallback(check)

    follower.wait_for(kind).addCallback(check)
    return settled(found)


def of_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message.get("type") == kind


class Approving:
    """:class:`RealRuns` with the stdin-logging fake, and the phone's side at hand."""

    def __init__(self, tmp: Path) -> None:
        self.real = RealRuns(tmp)
        self.agent = self.real.agent
        self.project = self.real.project
        self.a, self.b = self.real.followers
        self.stdin_dir = tmp / "stdin"
        self.stdin_dir.mkdir()
        self.configure()

    def configure(self, approvals: str = "phone", **timeouts: float) -> None:
        """Read by the executor at each execute, like a SIGHUP's new values."""
        config = self.agent.executor.config
        claude = attrs.evolve(
            config.claude,
            binary=str(STDIN_LOGGING_CLAUDE),
            env=(*config.claude.env, ("FAKE_CLAUDE_STDIN_DIR", str(self.stdin_dir))),
            approvals=approvals,
        )
        self.agent.executor.config = attrs.evolve(
            config, claude=claude, timeouts=attrs.evolve(config.timeouts, **timeouts)
        )

    @property
    def path(self) -> Path:
        return self.project.path

    def execute(
        self, prompt: str, options: RunOptions | None = None
    ) -> defer.Deferred[dict[str, Any]]:
        """Fires with execution_finished's data once the final project_state reached both."""
        finished = self.b.wait_for("execution_finished")

        def then_final_state(message: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
            return self.b.wait_for("project_state").addCallback(lambda _: message["data"])

        self.agent.executor.execute(
            Cause("requester"), self.project.id, prompt, options or RunOptions()
        )
        return settled(finished.addCallback(then_final_state))

    def asked(self) -> defer.Deferred[dict[str, Any]]:
        """The first prompt, once both followers have it and the state that shows it."""
        state = wait_frame(self.b, "project_state", lambda d: bool(d["pending_permissions"]))
        return state.addCallback(lambda _: self.server("permission_request")[0])

    def respond(self, who: Follower, permission_id: str, behavior: str, **kw: Any) -> Any:
        """The reply ``who`` got (outside a delivery, events reach followers at once)."""
        answer = PermissionAnswer(permission_id, behavior, **kw)  # type: ignore[arg-type]
        self.agent.executor.approvals.respond(
            Cause(who.connection_id, "r"), self.project.id, answer
        )
        return [m for m in who.messages if m["type"] == "permission_response"][-1]

    def interrupt(self, who: Follower) -> Any:
        self.agent.executor.approvals.interrupt(Cause(who.connection_id, "i"), self.project.id)
        return [m for m in who.messages if m["type"] == "agent_interrupt"][-1]

    # ------------------------------------------------------------------ facts

    def server(self, kind: str) -> list[dict[str, Any]]:
        return [
            r["message"]
            for r in self.a.records()
            if r["direction"] == "server" and r["message"]["type"] == kind
        ]

    def seq_of(self, predicate: Callable[[dict[str, Any]], bool]) -> list[int]:
        return [r["seq"] for r in self.a.records() if predicate(r["message"])]

    def claude(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.a.claude_messages() if m["type"] == kind]

    def invocations(self) -> list[dict[str, Any]]:
        lines = self.real.argv_log.read_text().splitlines()
        return [json.loads(line) for line in lines]

    def argv(self, run: int = -1) -> list[str]:
        return list(self.invocations()[run]["argv"])

    def stdin(self, run: int = -1) -> list[dict[str, Any]]:
        """The lines the fake read on its stdin during run ``run`` (the first: the prompt)."""
        pid = self.invocations()[run]["pid"]
        text = (self.stdin_dir / f"{pid}.stdin").read_text()
        return [json.loads(line) for line in text.splitlines()]

    def control_responses(self, run: int = -1) -> list[dict[str, Any]]:
        return [line for line in self.stdin(run) if line["type"] == "control_response"]

    def cli_request_id(self) -> str:
        """The CLI's own id of its (only) can_use_tool request."""
        (request,) = self.claude("control_request")
        return str(request["request_id"])

    def tool_results(self) -> list[dict[str, Any]]:
        blocks = []
        for message in self.claude("user"):
            for block in message["message"]["content"]:
                if block.get("type") == "tool_result":
                    blocks.append(block)
        return blocks

    def errors(self) -> list[dict[str, Any]]:
        return [m for f in (self.a, self.b) for m in f.messages if m["type"] == "error"]

    def last_state(self) -> dict[str, Any]:
        states = [m["data"] for m in self.b.messages if m["type"] == "project_state"]
        return dict(states[-1])


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Approving]:
    desk = Approving(tmp_path.resolve())
    yield desk
    for cleanup in reversed(desk.real.cleanups):
        result = cleanup()
        if isinstance(result, defer.Deferred):
            pytest_twisted.blockon(result)


def deny_line(request_id: str, message: str) -> dict[str, Any]:
    response = {"behavior": "deny", "message": message}
    return {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    }


def allow_line(request_id: str, updated_input: dict[str, Any]) -> dict[str, Any]:
    response = {"behavior": "allow", "updatedInput": updated_input}
    return {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    }


# ---------------------------------------------------------------------- answers


@pytest_twisted.inlineCallbacks
def test_allow_writes_the_file_after_a_preview_of_the_new_file(desk: Approving) -> Any:
    done = desk.execute("fake:ask_write:new.txt:hello")
    request = yield desk.asked()
    assert (request["kind"], request["tool_name"]) == ("tool", "Write")
    assert request["input"] == {"file_path": "new.txt", "content": "hello\n"}
    preview = request["preview"]
    assert (preview["kind"], preview["path"], preview["truncated"]) == ("diff", "new.txt", False)
    assert preview["diff"].startswith("--- /dev/null\n+++ b/new.txt\n")
    assert "+hello\n" in preview["diff"]
    assert request["expires_at"] is not None  # timeouts.permission defaults to 10 minutes
    assert not (desk.path / "new.txt").exists()  # nothing before the phone says so
    state = desk.last_state()
    assert state["awaiting_approval"] is True and state["state"] == "EXECUTING"
    assert state["pending_permissions"] == [request]

    reply = desk.respond(desk.a, request["permission_id"], "allow")
    assert reply["data"] == {"permission_id": request["permission_id"], "status": "applied"}
    late = desk.respond(desk.b, request["permission_id"], "deny")
    assert late["data"]["status"] == "already_resolved"
    result = yield done

    assert result["outcome"] == "success", result
    assert (desk.path / "new.txt").read_text() == "hello\n"
    (resolved,) = desk.server("permission_resolved")
    assert (resolved["behavior"], resolved["reason"]) == ("allow", "user")
    assert resolved["by_connection_id"] == "a" and "updated_input" not in resolved
    assert desk.control_responses() == [
        allow_line(desk.cli_request_id(), {"file_path": "new.txt", "content": "hello\n"})
    ]
    asked_at = desk.seq_of(of_type("permission_request"))
    resolved_at = desk.seq_of(of_type("permission_resolved"))
    result_at = desk.seq_of(of_type("result"))
    assert asked_at < resolved_at < result_at
    final = desk.last_state()
    assert (final["state"], final["awaiting_approval"], final["pending_permissions"]) == (
        "IDLE",
        False,
        [],
    )
    assert desk.errors() == []


@pytest_twisted.inlineCallbacks
def test_allow_with_updated_input_writes_what_the_phone_said(desk: Approving) -> Any:
    done = desk.execute("fake:ask_write:new.txt:hello")
    request = yield desk.asked()
    changed = {"file_path": "new.txt", "content": "changed on the phone\n"}
    desk.respond(desk.a, request["permission_id"], "allow", updated_input=changed)
    result = yield done
    assert result["outcome"] == "success"
    assert (desk.path / "new.txt").read_text() == "changed on the phone\n"
    (resolved,) = desk.server("permission_resolved")
    assert (resolved["behavior"], resolved["updated_input"]) == ("allow", changed)
    assert desk.control_responses() == [allow_line(desk.cli_request_id(), changed)]


@pytest_twisted.inlineCallbacks
def test_deny_reaches_the_cli_and_the_run_still_succeeds(desk: Approving) -> Any:
    done = desk.execute("fake:ask_write:new.txt:hello")
    request = yield desk.asked()
    desk.respond(desk.b, request["permission_id"], "deny", message="not that file")
    result = yield done
    assert result["outcome"] == "success"
    assert not (desk.path / "new.txt").exists()
    (resolved,) = desk.server("permission_resolved")
    assert (resolved["behavior"], resolved["reason"], resolved["message"]) == (
        "deny",
        "user",
        "not that file",
    )
    assert resolved["by_connection_id"] == "b"
    assert desk.control_responses() == [deny_line(desk.cli_request_id(), "not that file")]
    (tool_result,) = desk.tool_results()
    assert (tool_result["is_error"], tool_result["content"]) == (True, "not that file")
    assert len(desk.claude("result")[0]["permission_denials"]) == 1
    assert desk.errors() == []


@pytest_twisted.inlineCallbacks
def test_an_edit_prompt_previews_the_change_and_allowed_makes_it(desk: Approving) -> Any:
    (desk.path / "app.py").write_text("import os\nx = 1\nprint(x)\n")
    done = desk.execute("fake:ask_edit:app.py:x = 1:x = 2")
    request = yield desk.asked()
    assert request["tool_name"] == "Edit"
    preview = request["preview"]
    assert (preview["kind"], preview["path"]) == ("diff", "app.py")
    diff = preview["diff"]
    assert diff.startswith("--- a/app.py\n+++ b/app.py\n")
    assert "\n-x = 1\n+x = 2\n" in diff and " import os\n" in diff
    assert (desk.path / "app.py").read_text() == "import os\nx = 1\nprint(x)\n"
    desk.respond(desk.a, request["permission_id"], "allow")
    result = yield done
    assert result["outcome"] == "success"
    assert (desk.path / "app.py").read_text() == "import os\nx = 2\nprint(x)\n"
    assert desk.control_responses() == [allow_line(desk.cli_request_id(), request["input"])]


@pytest_twisted.inlineCallbacks
def test_remembered_bash_rule_is_passed_to_the_next_run_which_is_not_asked(
    desk: Approving,
) -> Any:
    done = desk.execute("fake:ask_bash:git status")
    request = yield desk.asked()
    assert request["preview"] == {
        "kind": "command",
        "command": "git status",
        "description": "Run the test's command",
    }
    argv = desk.argv()
    at = argv.index("--verbose")
    assert argv[at + 1 : at + 3] == ["--permission-prompt-tool", "stdio"]
    assert "--allowedTools" not in argv
    desk.respond(desk.a, request["permission_id"], "allow", remember=True)
    assert desk.agent.registry.get(desk.project.id).settings.allowed_tools == ("Bash(git:*)",)
    meta = json.loads(
        (desk.agent.registry.store.project_dir(desk.project.id) / "metadata.json").read_text()
    )
    assert meta["settings"]["allowed_tools"] == ["Bash(git:*)"]
    assert desk.last_state()["settings"]["allowed_tools"] == ["Bash(git:*)"]
    result = yield done
    assert result["outcome"] == "success"
    assert desk.tool_results()[-1]["content"] == "fake output of: git status"

    requests_before = len(desk.server("permission_request"))
    control_before = len(desk.claude("control_request"))
    second = yield desk.execute("fake:ask_bash:git log --oneline")
    assert second["outcome"] == "success"
    argv = desk.argv()
    assert argv[argv.index("--allowedTools") + 1] == "Bash(git:*)"
    assert len(desk.server("permission_request")) == requests_before  # not asked again
    assert len(desk.claude("control_request")) == control_before
    assert desk.control_responses() == []
    assert desk.tool_results()[-1]["content"] == "fake output of: git log --oneline"


@pytest_twisted.inlineCallbacks
def test_a_question_is_answered_with_answers(desk: Approving) -> Any:
    done = desk.execute("fake:ask_question:Ship it?")
    request = yield desk.asked()
    assert (request["kind"], request["tool_name"]) == ("question", "AskUserQuestion")
    assert "preview" not in request
    desk.respond(desk.a, request["permission_id"], "allow", answers={"Ship it?": "Yes"})
    result = yield done
    assert result["outcome"] == "success"
    expected = {**request["input"], "answers": {"Ship it?": "Yes"}}
    assert desk.control_responses() == [allow_line(desk.cli_request_id(), expected)]
    (answered,) = desk.tool_results()
    assert '"Ship it?"="Yes"' in answered["content"]


# ------------------------------------------------------------------- interrupts


@pytest_twisted.inlineCallbacks
def test_interrupt_while_a_prompt_is_pending_keeps_the_session(desk: Approving) -> Any:
    done = desk.execute("fake:ask_write:new.txt")
    request = yield desk.asked()
    reply = desk.interrupt(desk.a)
    assert reply["data"] == {"status": "interrupting"}
    result = yield done
    assert result["outcome"] == "interrupted", result
    (resolved,) = desk.server("permission_resolved")
    assert (resolved["permission_id"], resolved["behavior"], resolved["reason"]) == (
        request["permission_id"],
        "deny",
        "interrupted",
    )
    stdin = desk.stdin()
    interrupts = [line for line in stdin if line["type"] == "control_request"]
    assert [line["request"] for line in interrupts] == [{"subtype": "interrupt"}]
    (ack,) = desk.claude("control_response")  # the stdio interrupt did it, not a SIGINT
    assert ack["response"] == {"subtype": "success", "request_id": interrupts[0]["request_id"]}
    assert desk.control_responses() == []  # the CLI cancels its request itself
    (cancel,) = desk.claude("control_cancel_request")
    assert cancel["request_id"] == desk.cli_request_id()
    assert desk.claude("result")[-1]["terminal_reason"] == "aborted_tools"
    assert not (desk.path / "new.txt").exists()
    assert desk.errors() == []
    assert desk.last_state()["state"] == "IDLE"
    assert desk.last_state()["pending_permissions"] == []

    session_id = result["session_id"]
    assert session_id is not None
    again = yield desk.execute("again")
    assert again["outcome"] == "success"
    argv = desk.argv()
    assert argv[argv.index("--resume") + 1] == session_id
    assert again["session_id"] == session_id


@pytest_twisted.inlineCallbacks
def test_interrupt_while_streaming(desk: Approving) -> Any:
    done = desk.execute("fake:hang")
    yield wait_record(desk.a, of_type("assistant"))
    assert desk.interrupt(desk.b)["data"] == {"status": "interrupting"}
    result = yield done
    assert result["outcome"] == "interrupted", result
    (request,) = [line for line in desk.stdin() if line["type"] == "control_request"]
    (ack,) = desk.claude("control_response")
    assert ack["response"] == {"subtype": "success", "request_id": request["request_id"]}
    assert desk.claude("result")[-1]["terminal_reason"] == "aborted_streaming"
    assert desk.server("permission_request") == []
    assert desk.errors() == []
    assert desk.last_state()["state"] == "IDLE"


@pytest_twisted.inlineCallbacks
def test_an_interrupt_without_a_result_falls_back_to_sigint_after_kill_grace(
    desk: Approving,
) -> Any:
    """``silent`` acknowledges the interrupt but prints no result (nothing was under way
    that it knew of): kill_grace later the SIGINT of the escalation ends it, and the
    interrupt accepted before any result still decides the outcome."""
    done = desk.execute("fake:silent")
    yield wait_record(desk.a, of_type("execution_started"))
    assert desk.interrupt(desk.a)["data"] == {"status": "interrupting"}
    result = yield done
    assert result["outcome"] == "interrupted", result
    assert result["duration_ms"] >= 500  # kill_grace: the CLI had its chance first
    assert result["exit_code"] == 0  # the fake's quiet exit on SIGINT, no SIGTERM needed
    (request,) = [line for line in desk.stdin() if line["type"] == "control_request"]
    (ack,) = desk.claude("control_response")
    assert ack["response"] == {"subtype": "success", "request_id": request["request_id"]}
    assert desk.claude("result") == []
    assert desk.errors() == []


@pytest_twisted.inlineCallbacks
def test_kill_while_a_prompt_is_pending_resolves_it_first(desk: Approving) -> Any:
    done = desk.execute("fake:ask_write:new.txt")
    request = yield desk.asked()
    desk.agent.executor.kill(Cause("a", "k"), desk.project.id)
    result = yield done
    assert (result["outcome"], result["reason"]) == ("killed", "user")
    (resolved,) = desk.server("permission_resolved")
    assert (resolved["permission_id"], resolved["behavior"], resolved["reason"]) == (
        request["permission_id"],
        "deny",
        "run_ended",
    )
    resolved_at = desk.seq_of(of_type("permission_resolved"))
    killed_at = desk.seq_of(of_type("process_killed"))
    assert len(killed_at) == 1 and resolved_at < killed_at
    # The deny is written just before the SIGINT; the fake may take the signal before it
    # reads the line (it then cancels the request itself). Never is anything allowed.
    stopped = deny_line(desk.cli_request_id(), "The run was stopped")
    assert desk.control_responses() in ([], [stopped])
    assert not (desk.path / "new.txt").exists()
    assert desk.errors() == []  # a kill the user asked for is not an error
    assert desk.last_state()["state"] == "IDLE"


@pytest_twisted.inlineCallbacks
def test_an_unanswered_prompt_is_denied_at_the_permission_timeout(desk: Approving) -> Any:
    desk.configure(permission=0.5)
    done = desk.execute("fake:ask_write:new.txt")
    request = yield desk.asked()
    assert request["expires_at"] is not None
    result = yield done
    assert result["outcome"] == "success"
    assert result["duration_ms"] >= 500
    (resolved,) = desk.server("permission_resolved")
    assert (resolved["behavior"], resolved["reason"]) == ("deny", "timeout")
    assert "by_connection_id" not in resolved
    message = "Nobody answered this permission prompt in time"
    assert desk.control_responses() == [deny_line(desk.cli_request_id(), message)]
    assert desk.tool_results()[0]["content"] == message
    assert not (desk.path / "new.txt").exists()
    late = desk.respond(desk.a, request["permission_id"], "allow")
    assert late["data"]["status"] == "already_resolved"


# ------------------------------------------------------------------ approvals off


@pytest_twisted.inlineCallbacks
def test_approvals_off_for_a_run_leaves_the_cli_to_deny_on_its_own(desk: Approving) -> Any:
    result = yield desk.execute("fake:ask_write:new.txt", RunOptions(approvals="off"))
    assert result["outcome"] == "success"
    assert "--permission-prompt-tool" not in desk.argv()
    assert desk.server("permission_request") == []
    assert desk.claude("control_request") == []
    (tool_result,) = desk.tool_results()
    assert tool_result["content"] == (
        "Claude requested permissions to write to new.txt, but you haven't granted it yet."
    )
    assert desk.control_responses() == []
    assert not (desk.path / "new.txt").exists()


@pytest_twisted.inlineCallbacks
def test_approvals_off_in_the_config_interrupt_falls_back_to_sigint(desk: Approving) -> Any:
    desk.configure(approvals="off")
    done = desk.execute("fake:hang")
    yield wait_record(desk.a, of_type("assistant"))
    assert "--permission-prompt-tool" not in desk.argv()
    assert desk.interrupt(desk.a)["data"] == {"status": "interrupting"}
    result = yield done
    assert result["outcome"] == "interrupted", result
    # The fake reacts to SIGINT only: its interrupted result says it got one.
    assert desk.claude("result")[-1]["subtype"] == "error_during_execution"
    assert [line["type"] for line in desk.stdin()] == ["user"]  # no control request
    assert desk.errors() == []
    assert desk.last_state()["state"] == "IDLE"
