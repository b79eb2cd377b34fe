"""``pocket-agent-server client`` without a network: what each frame shows, the argument
parsing and defaults, each subcommand's flow, and the whole client against the real
server in memory (autobahn both ends, through iosim)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.python import usage
from twisted.test import iosim

from pocket_agent.cli import client_render as render
from pocket_agent.cli.client import ClientFactory, Session
from pocket_agent.cli.client_flows import (
    AnswerFlow,
    CreateFlow,
    HistoryFlow,
    InterruptFlow,
    KillFlow,
    ListFlow,
    SettingsFlow,
)
from pocket_agent.cli.client_options import ClientOptions, local_url, resolve_target
from pocket_agent.cli.client_stream import ExecFlow, JoinFlow
from pocket_agent.runs.options import RunOptions
from pocket_agent.wire.envelope import decode_envelope, encode_envelope
from pocket_agent.wire.requests import (
    PermissionResponseRequest,
    ProjectSettingsRequest,
    Request,
    encode_request,
    parse_request,
)
from tests.support import Harness

PID = "p-1"
RUN = "r-1"


def plain(texts: list[Text]) -> list[str]:
    return [t.plain for t in texts]


def make_output(
    json_mode: bool = False, terminal: bool = False
) -> tuple[Any, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    output = render.Output(
        render.console(out, width=120, force_terminal=terminal, color_system=None),
        render.console(err, width=120, color_system=None),
        json_mode=json_mode,
    )
    return output, out, err


class FakeLink:
    """Records what a flow sends; ``answer`` is the Deferred the last ``ask`` handed out."""

    def __init__(self) -> None:
        self.sent: list[tuple[Request, str | None, str]] = []
        self.codes: list[int] = []
        self.questions: list[str] = []
        self.answer: Deferred[bool] = Deferred()

    def send(self, request: Request, project_id: str | None = None) -> str:
        request_id = f"cli-{len(self.sent) + 1}"
        self.sent.append((request, project_id, request_id))
        return request_id

    def finish(self, code: int) -> None:
        self.codes.append(code)

    def ask(self, question: str) -> Deferred[bool]:
        self.questions.append(question)
        self.answer = Deferred()
        return self.answer

    def types(self) -> list[str]:
        return [r.TYPE for r, _, _ in self.sent]

    def last(self) -> tuple[Request, str | None, str]:
        return self.sent[-1]


def feed(flow: Any, mtype: str, data: dict[str, Any] | None = None, **top: Any) -> None:
    payload = encode_envelope(mtype, data or {}, top.get("project_id"), top.get("request_id"))
    flow.frame(decode_envelope(payload), payload)


def record(seq: int, direction: str, message: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": seq,
        "timestamp": "t",
        "run_id": RUN,
        "direction": direction,
        "message": message,
    }


def assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"type": "assistant", "message": {"content": list(blocks)}}


FINISHED_OK = {
    "run_id": RUN,
    "outcome": "success",
    "exit_code": 0,
    "signal": None,
    "duration_ms": 4200,
    "cost_usd": 0.0123,
    "session_id": "s",
}


def state(value: str) -> dict[str, Any]:
    return {"id": PID, "path": "/home/me/app", "state": value, "last_seq": 3}


# ------------------------------------------------------------------ rendering


def test_assistant_text_and_tool_calls_one_line_each() -> None:
    line = assistant(
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "name": "Bash", "input": {"command": "ls -la\n/tmp"}},
        {"type": "tool_use", "name": "Write", "input": {"file_path": "/a/b.py", "content": "x"}},
        {"type": "tool_use", "name": "TodoWrite", "input": {"todos": [1, 2, 3]}},
        {"type": "tool_use", "name": "Mystery", "input": {"n": 1}},
    )
    assert plain(render.claude_lines(line)) == [
        "Let me look.",
        "⏺ Bash  ls -la /tmp",
        "⏺ Write  /a/b.py",
        "⏺ TodoWrite  3 todos",
        '⏺ Mystery  {"n": 1}',
    ]


def test_tool_results_are_one_line_and_errors_stand_out() -> None:
    line = {
        "type": "user",
        "message": {
            "content": [
                {"type": "tool_result", "content": "ok\nmore"},
                {
                    "type": "tool_result",
                    "content": [{"type": "text", "text": "boom"}],
                    "is_error": True,
                },
                {"type": "tool_result", "content": ""},
            ]
        },
    }
    shown = render.claude_lines(line)
    assert plain(shown) == ["  ↳ ok more", "  ✗ boom"]
    assert shown[1].style == "red"
    long = render.tool_result_line({"type": "tool_result", "content": "y" * 500})
    assert long is not None and len(long.plain) == len("  ↳ ") + render.RESULT_WIDTH


def test_system_and_result_lines_show_nothing() -> None:
    assert render.claude_lines({"type": "system", "subtype": "init"}) == []
    assert render.claude_lines({"type": "result", "result": "done"}) == []
    assert render.claude_lines({"type": "control_request"}) == []


def test_relayed_text_is_never_markup() -> None:
    output, out, _ = make_output()
    output.show(*render.claude_lines(assistant({"type": "text", "text": "[bold red]x[/] [link]"})))
    assert out.getvalue() == "[bold red]x[/] [link]\n"


def test_records_by_direction() -> None:
    prompt = record(1, "client", {"type": "user_prompt", "prompt": "fix it", "options": {}})
    assert plain(render.record_lines(prompt)) == ["> fix it"]
    stderr = record(2, "server", {"type": "stderr", "text": "warn\n"})
    assert plain(render.record_lines(stderr)) == ["warn"]
    killed = record(3, "server", {"type": "process_killed", "run_id": RUN})
    assert plain(render.record_lines(killed)) == ["Run killed"]
    started = record(4, "server", {"type": "execution_started", "run_id": RUN})
    assert render.record_lines(started) == []
    finished = record(5, "server", {"type": "execution_finished", **FINISHED_OK})
    assert render.record_lines(finished) == []  # live: the summary comes from the frame
    assert plain(render.record_lines(finished, seq=True)) == ["     5 ✓ success · 4.2s · $0.0123"]
    two = record(
        6, "claude", assistant({"type": "text", "text": "a"}, {"type": "text", "text": "b"})
    )
    assert plain(render.record_lines(two, seq=True)) == ["     6 a", "       b"]


def test_summary_line() -> None:
    assert render.summary_line(FINISHED_OK).plain == "✓ success · 4.2s · $0.0123"
    failed = {**FINISHED_OK, "outcome": "failed", "exit_code": 1, "cost_usd": None}
    assert (
        render.summary_line(failed, "simulated failure").plain
        == "✗ failed · 4.2s · — · exit 1 — simulated failure"
    )
    killed = {**FINISHED_OK, "outcome": "killed", "signal": "SIGKILL", "duration_ms": 125_000}
    assert render.summary_line(killed).plain == "✗ killed · 2m05s · $0.0123 · signal SIGKILL"


def test_history_footer_names_the_next_page() -> None:
    page = {
        "messages": [{}, {}],
        "first_seq": 10,
        "last_seq": 11,
        "has_more": True,
        "project_last_seq": 40,
    }
    assert render.history_footer(page, forward=False).plain == (
        "2 records (seq 10-11), project at seq 40; older: --before 10"
    )
    assert render.history_footer(page, forward=True).plain.endswith("; next page: --after 11")
    last = {**page, "has_more": False}
    assert "--" not in render.history_footer(last, forward=True).plain


def test_project_rows_keep_whole_ids_and_paths() -> None:
    output, out, _ = make_output()
    output.out.width = 40
    long_id = "43b9ee7b-821e-4562-a30d-7bf15eeb0190"
    path = "/h/" + "x" * 60
    output.show(render.project_row({"id": long_id, "path": path, "state": "IDLE", "last_seq": 5}))
    assert out.getvalue() == f"{long_id}  IDLE            5  {path}\n"


def test_json_mode_writes_frames_verbatim_and_nothing_else() -> None:
    output, out, _ = make_output(json_mode=True)
    output.frame(b'{"type":"x","data":{"a":"\xc3\xa9"}}')
    output.show(Text("human"))
    output.working("busy")
    assert out.getvalue() == '{"type":"x","data":{"a":"é"}}\n'
    assert not output.live


def test_progress_line_only_on_a_terminal() -> None:
    output, _, _ = make_output(terminal=False)
    output.working("busy")
    assert not output.live
    output, out, _ = make_output(terminal=True)
    output.working("Claude is working")
    try:
        assert output.live
        output.working("running Bash")
    finally:
        output.idle()
    assert not output.live
    assert "running Bash" in out.getvalue() or "Claude is working" in out.getvalue()


# ------------------------------------------------------------------- options


def parse(*argv: str) -> ClientOptions:
    options = ClientOptions()
    options.parseOptions(list(argv))
    return options


def test_subcommands_and_their_arguments() -> None:
    exec_ = parse("--url", "wss://h:1/ws", "exec", "p1", "do it", "--model", "opus")
    assert exec_.subCommand == "exec"
    assert (exec_.subOptions["project"], exec_.subOptions["prompt"]) == ("p1", "do it")
    assert exec_.subOptions["options"] == RunOptions(model="opus")
    assert exec_.common("url") == "wss://h:1/ws"
    history = parse("history", "p1", "--limit", "5", "--after", "7")
    assert (history.subOptions["limit"], history.subOptions["after"]) == (5, 7)
    assert history.subOptions["before"] is None
    assert parse("history", "p1").subOptions["limit"] == 50
    create = parse("create", "/x", "--create")
    assert (create.subOptions["path"], create.subOptions["create"]) == ("/x", 1)
    # Shared options work after the command name too.
    assert parse("list", "--json").common("json")
    assert (
        parse("exec", "p", "--", "-starts-with-a-dash").subOptions["prompt"]
        == "-starts-with-a-dash"
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["exec", "p"],
        ["kill"],
        ["health", "extra"],
        ["exec", "p", "x", "--permission-mode", "sideways"],
        ["history", "p", "--limit", "0"],
        ["history", "p", "--limit", "1001"],
        ["history", "p", "--after", "-1"],
        ["history", "p", "--after", "1", "--before", "9"],
        ["join", "p", "--after", "x"],
    ],
)
def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(usage.UsageError):
        parse(*argv)


def test_local_url_from_the_listen_plan() -> None:
    assert local_url([("ssl:8443", "tcp:8443", True)]) == "wss://127.0.0.1:8443/ws"
    assert local_url([("ssl:9443:interface=\\:\\:", "tcp:9443:interface=\\:\\:", True)]) == (
        "wss://[::1]:9443/ws"
    )
    assert local_url(
        [("unix:/s", "unix:/s:mode=600", False), ("tcp:7000:interface=127.0.0.1",) * 2 + (False,)]
    ) == ("ws://127.0.0.1:7000/ws")


def test_defaults_come_from_the_local_root(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text('listen: ["ssl:9555:interface=127.0.0.1"]\n')
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "auth_token").write_text("tok-123\n")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "server.crt").write_text("pem")
    target = resolve_target(parse("--root", str(tmp_path), "list"), {})
    assert (target.url, target.token, target.cafile, target.verify) == (
        "wss://127.0.0.1:9555/ws",
        "tok-123",
        tmp_path / "certs" / "server.crt",
        True,
    )
    given = resolve_target(
        parse("--url", "wss://h:1/ws", "--token", "t", "--insecure-skip-verify", "list"), {}
    )
    assert (given.url, given.token, given.cafile, given.verify) == (
        "wss://h:1/ws",
        "t",
        None,
        False,
    )


# --------------------------------------------------------------------- flows


def test_exec_streams_and_ends_with_the_summary() -> None:
    link, (output, out, _) = FakeLink(), make_output()
    flow = ExecFlow(link, output, PID, "hello", RunOptions(), interactive=False)
    flow.start()
    request, project_id, rid = link.last()
    assert parse_request(decode_envelope(encode_request(request))).TYPE == "execute"
    assert (request.prompt, project_id) == ("hello", PID)  # type: ignore[attr-defined]
    feed(flow, "project_state", state("EXECUTING"), project_id=PID)
    feed(flow, "execute", {"run_id": RUN, "status": "started"}, project_id=PID, request_id=rid)
    feed(
        flow,
        "agent_message",
        record(1, "client", {"type": "user_prompt", "prompt": "hello"}),
        project_id=PID,
    )
    feed(
        flow,
        "agent_message",
        record(2, "claude", assistant({"type": "text", "text": "Hi!"})),
        project_id=PID,
    )
    feed(flow, "execution_finished", FINISHED_OK, project_id=PID)
    assert link.codes == []  # not before the project is IDLE again
    feed(flow, "project_state", state("IDLE"), project_id=PID)
    assert link.codes == [0]
    assert out.getvalue().splitlines() == ["> hello", "Hi!", "✓ success · 4.2s · $0.0123"]


def test_exec_failure_exits_1_with_the_reason() -> None:
    link, (output, out, _) = FakeLink(), make_output()
    flow = ExecFlow(link, output, PID, "x", RunOptions(), interactive=False)
    flow.start()
    feed(flow, "execute", {"run_id": RUN}, project_id=PID, request_id=link.last()[2])
    feed(
        flow,
        "execution_finished",
        {**FINISHED_OK, "outcome": "failed", "exit_code": 1},
        project_id=PID,
    )
    feed(
        flow, "error", {"code": "EXECUTION_FAILED", "message": "simulated failure"}, project_id=PID
    )
    feed(flow, "project_state", state("ERROR"), project_id=PID)
    assert link.codes == [1]
    assert out.getvalue().strip().endswith("exit 1 — simulated failure")


def test_an_error_answering_our_request_ends_the_flow() -> None:
    link, (output, out, err) = FakeLink(), make_output()
    flow = ExecFlow(link, output, PID, "x", RunOptions(), interactive=False)
    flow.start()
    feed(flow, "error", {"code": "PROCESS_ACTIVE", "message": "busy"}, request_id=link.last()[2])
    assert link.codes == [1]
    assert "PROCESS_ACTIVE" in err.getvalue() and out.getvalue() == ""


def test_ctrl_c_without_a_terminal_detaches_and_says_the_run_goes_on() -> None:
    link, (output, _, err) = FakeLink(), make_output()
    flow = ExecFlow(link, output, PID, "x", RunOptions(), interactive=False)
    flow.start()
    feed(flow, "execute", {"run_id": RUN}, project_id=PID, request_id=link.last()[2])
    flow.interrupt()
    assert link.questions == [] and link.codes == [130]
    assert "the run goes on" in err.getvalue()
    assert [r.TYPE for r, _, _ in link.sent] == ["execute"]  # no kill


def test_ctrl_c_on_a_terminal_asks_and_kills() -> None:
    link, (output, out, _) = FakeLink(), make_output()
    flow = ExecFlow(link, output, PID, "x", RunOptions(), interactive=True)
    flow.start()
    feed(flow, "execute", {"run_id": RUN}, project_id=PID, request_id=link.last()[2])
    flow.interrupt()
    assert link.questions == ["Kill the run? [y/N] "] and link.codes == []
    link.answer.callback(True)
    request, project_id, _ = link.last()
    assert (request.TYPE, project_id) == ("agent_kill", PID)
    feed(flow, "agent_kill", {"status": "killed"}, project_id=PID, request_id=link.last()[2])
    feed(flow, "execution_finished", {**FINISHED_OK, "outcome": "killed"}, project_id=PID)
    feed(flow, "project_state", state("IDLE"), project_id=PID)
    assert link.codes == [1]
    assert "killed" in out.getvalue()


def test_ctrl_c_on_a_terminal_answered_no_detaches() -> None:
    link, (output, _, err) = FakeLink(), make_output()
    flow = ExecFlow(link, output, PID, "x", RunOptions(), interactive=True)
    flow.start()
    feed(flow, "execute", {"run_id": RUN}, project_id=PID, request_id=link.last()[2])
    flow.interrupt()
    link.answer.callback(False)
    assert link.codes == [130] and "the run goes on" in err.getvalue()
    assert [r.TYPE for r, _, _ in link.sent] == ["execute"]


def test_a_second_ctrl_c_while_asking_leaves() -> None:
    link, (output, _, _) = FakeLink(), make_output()
    flow = ExecFlow(link, output, PID, "x", RunOptions(), interactive=True)
    flow.start()
    feed(flow, "execute", {"run_id": RUN}, project_id=PID, request_id=link.last()[2])
    flow.interrupt()
    flow.interrupt()
    assert link.codes == [130]
    link.answer.callback(True)  # too late: nothing is sent
    assert [r.TYPE for r, _, _ in link.sent] == ["execute"]


def test_a_project_named_by_its_directory_is_looked_up() -> None:
    link, (output, _, err) = FakeLink(), make_output()
    flow = KillFlow(link, output, "/home/me/app")
    flow.start()
    assert link.last()[0].TYPE == "project_list"
    feed(flow, "project_list_response", {"projects": [state("IDLE")]}, request_id=link.last()[2])
    request, project_id, rid = link.last()
    assert (request.TYPE, project_id) == ("agent_kill", PID)
    feed(flow, "agent_kill", {"status": "idle"}, project_id=PID, request_id=rid)
    assert link.codes == [0]
    missing = KillFlow(link, output, "/elsewhere")
    missing.start()
    feed(
        missing, "project_list_response", {"projects": [state("IDLE")]}, request_id=link.last()[2]
    )
    assert link.codes == [0, 1] and "no project at /elsewhere" in err.getvalue()


def test_join_replays_then_follows_until_ctrl_c() -> None:
    link, (output, out, _) = FakeLink(), make_output()
    flow = JoinFlow(link, output, PID, after_seq=0)
    flow.start()
    request, project_id, rid = link.last()
    assert (request.TYPE, request.after_seq, project_id) == ("project_join", 0, PID)  # type: ignore[attr-defined]
    feed(flow, "project_state", state("IDLE"), project_id=PID, request_id=rid)
    feed(flow, "project_join", {"project_id": PID, "last_seq": 1}, project_id=PID, request_id=rid)
    feed(
        flow,
        "message_history",
        {"messages": [record(1, "client", {"prompt": "old"})]},
        request_id=rid,
    )
    feed(flow, "project_state", state("EXECUTING"), project_id=PID)
    feed(
        flow,
        "agent_message",
        record(2, "claude", assistant({"type": "text", "text": "new"})),
        project_id=PID,
    )
    feed(flow, "execution_finished", FINISHED_OK, project_id=PID)
    feed(flow, "project_state", state("IDLE"), project_id=PID)
    assert link.codes == []  # a join outlives runs
    flow.interrupt()
    assert link.codes == [0]
    assert out.getvalue().splitlines() == [
        "p-1  /home/me/app  IDLE",
        "> old",
        "new",
        "✓ success · 4.2s · $0.0123",
    ]


def test_history_sends_the_page_asked_for() -> None:
    link, (output, out, _) = FakeLink(), make_output()
    flow = HistoryFlow(link, output, PID, limit=5, after_seq=None, before_seq=9)
    flow.start()
    request, _, rid = link.last()
    assert request.to_data() == {"before_seq": 9, "limit": 5}
    page = {
        "messages": [record(8, "client", {"prompt": "p"})],
        "first_seq": 8,
        "last_seq": 8,
        "has_more": True,
        "project_last_seq": 20,
    }
    feed(flow, "message_history", page, project_id=PID, request_id=rid)
    assert link.codes == [0]
    assert out.getvalue().splitlines() == [
        "     8 > p",
        "1 records (seq 8-8), project at seq 20; older: --before 8",
    ]


def test_list_and_create() -> None:
    link, (output, out, _) = FakeLink(), make_output()
    listing = ListFlow(link, output)
    listing.start()
    feed(listing, "project_list_response", {"projects": []}, request_id=link.last()[2])
    create = CreateFlow(link, output, "/home/me/app", create=True)
    create.start()
    assert link.last()[0].to_data() == {"path": "/home/me/app", "create": True}
    # The broadcast to everyone is not our answer; the reply carries our request_id.
    feed(create, "project_created", state("IDLE"), project_id=PID)
    feed(create, "project_state", state("IDLE"), project_id=PID, request_id=link.last()[2])
    assert link.codes == [0, 0]
    assert out.getvalue().splitlines() == ["no projects", "p-1  /home/me/app  IDLE"]


# ------------------------------------------------------ permission prompts (§10)

PERM = "perm-1"
DIFF = "--- a/hello.txt\n+++ b/hello.txt\n@@ -1 +1 @@\n-old\n+new\n context"


def permission(
    permission_id: str = PERM,
    tool: str = "Write",
    tool_input: dict[str, Any] | None = None,
    preview: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "permission_request",
        "permission_id": permission_id,
        "run_id": RUN,
        "kind": "tool",
        "tool_name": tool,
        "tool_use_id": "toolu_1",
        "input": {"file_path": "hello.txt", "content": "new\n"}
        if tool_input is None
        else tool_input,
        "created_at": "2026-12-01T14:00:00Z",
        "expires_at": "2026-12-01T14:10:00Z",
        **extra,
    }
    if preview is not None:
        message["preview"] = preview
    return message


def resolved(
    permission_id: str = PERM, behavior: str = "allow", reason: str = "user", **extra: Any
) -> dict[str, Any]:
    return {
        "type": "permission_resolved",
        "permission_id": permission_id,
        "run_id": RUN,
        "behavior": behavior,
        "reason": reason,
        "resolved_at": "2026-12-01T14:01:00Z",
        **extra,
    }


def test_a_permission_request_shows_one_line_and_the_coloured_diff() -> None:
    preview = {"kind": "diff", "path": "hello.txt", "diff": DIFF, "truncated": True}
    shown = render.record_lines(record(7, "server", permission(preview=preview)))
    assert plain(shown) == [
        "⏸ tool Write  hello.txt  (id perm-1, expires 2026-12-01T14:10:00Z)",
        "    --- a/hello.txt",
        "    +++ b/hello.txt",
        "    @@ -1 +1 @@",
        "    -old",
        "    +new",
        "     context",
        "    … preview truncated",
    ]
    assert [t.style for t in shown[1:7]] == ["bold", "bold", "cyan", "red", "green", ""]
    # No diff to show (a binary file): the server's note says why.
    note = {"kind": "diff", "path": "x.bin", "diff": "", "truncated": False, "note": "binary"}
    outside = {**note, "outside_project": True}
    assert plain(render.preview_lines(note)) == ["    binary"]
    assert plain(render.preview_lines(outside))[-1] == "    outside the project directory"


def test_a_command_preview_and_a_prompt_that_never_expires() -> None:
    command = "rm -rf build\nls"
    bash = permission(
        tool="Bash",
        tool_input={"command": command, "description": "Clean"},
        preview={"kind": "command", "command": command, "description": "Clean"},
        expires_at=None,
    )
    assert plain(render.server_lines(bash)) == [
        "⏸ tool Bash  rm -rf build ls  (id perm-1, never expires)",
        "    $ rm -rf build",
        "      ls",
        "    # Clean",
    ]
    assert render.approval_question(bash) == "Allow Bash rm -rf build ls? [y/N] "


def test_questions_and_plans_say_what_they_ask() -> None:
    question = permission(
        tool="AskUserQuestion",
        kind="question",
        tool_input={"questions": [{"question": "Ship it?"}, {"question": "Tag it?"}]},
    )
    assert render.permission_line(question).plain.startswith(
        "⏸ question AskUserQuestion  Ship it? / Tag it?  (id"
    )
    plan = permission(tool="ExitPlanMode", kind="plan", tool_input={"plan": "1. a\n2. b"})
    assert render.prompt_summary(plan) == "1. a 2. b"
    assert render.approval_question({"tool_name": "Mystery", "input": {}}) == (
        "Allow Mystery {}? [y/N] "
    )


def test_a_permission_resolved_is_one_line() -> None:
    allowed = render.server_lines(resolved(by_connection_id="c-9"))
    assert plain(allowed) == ["✓ allowed perm-1 · user · by c-9"]
    assert allowed[0].style == "bold green"
    changed = resolved(by_connection_id="c-9", updated_input={"file_path": "x"})
    assert render.resolved_line(changed).plain.endswith(" · with a changed input")
    denied = resolved(behavior="deny", by_connection_id="c-2", message="not that file")
    assert render.resolved_line(denied).plain == (
        "✗ denied perm-1 · user · by c-2 — not that file"
    )
    timeout = render.resolved_line(resolved(behavior="deny", reason="timeout"))
    assert timeout.plain == "✗ denied perm-1 · timeout" and timeout.style == "bold red"


def test_an_interrupted_run_is_not_shown_as_a_failure() -> None:
    interrupted = {**FINISHED_OK, "outcome": "interrupted", "error": "stopped"}
    line = render.summary_line(interrupted, "ignored")
    assert line.plain == "⏹ interrupted · 4.2s · $0.0123"
    assert line.style == "bold yellow"


def test_settings_are_shown_one_rule_a_line() -> None:
    with_rules = {**state("IDLE"), "settings": {"allowed_tools": ["Read", "Bash(git:*)"]}}
    with_rules["settings"]["approvals"] = "phone"
    assert plain(render.settings_lines(with_rules)) == [
        "approvals      phone",
        "allowed_tools  Read",
        "allowed_tools  Bash(git:*)",
    ]
    none = {**state("IDLE"), "settings": {"allowed_tools": [], "approvals": "off"}}
    assert plain(render.settings_lines(none)) == ["approvals      off", "allowed_tools  (none)"]


def test_the_approval_subcommands_parse_into_requests() -> None:
    approve = parse(
        "approve",
        "p1",
        PERM,
        "--remember",
        "--input",
        '{"file_path": "b.txt"}',
        "--answer",
        "Ship it?=Yes",
        "--answer",
        "Where=a=b",
    )
    assert approve.subOptions["request"] == PermissionResponseRequest(
        permission_id=PERM,
        behavior="allow",
        updated_input={"file_path": "b.txt"},
        answers={"Ship it?": "Yes", "Where": "a=b"},
        remember=True,
    )
    plain_allow = parse("approve", "p1", PERM).subOptions["request"]
    assert plain_allow.to_data() == {"permission_id": PERM, "behavior": "allow"}
    deny = parse("deny", "p1", PERM, "--message", "no").subOptions["request"]
    assert deny.to_data() == {"permission_id": PERM, "behavior": "deny", "message": "no"}
    assert parse("deny", "p1", PERM).subOptions["request"].message == "Denied from the terminal"
    assert parse("interrupt", "p1").subOptions["project"] == "p1"
    settings = parse("settings", "p1", "--allow", "Read", "--allow", "Bash(git:*)")
    assert settings.subOptions["change"] == ProjectSettingsRequest(
        allowed_tools=("Read", "Bash(git:*)")
    )
    assert parse("settings", "p1", "--approvals", "off").subOptions["change"] == (
        ProjectSettingsRequest(approvals="off")
    )
    assert parse("settings", "p1", "--clear").subOptions["change"] == (
        ProjectSettingsRequest(allowed_tools=())
    )
    assert parse("settings", "p1").subOptions["change"] is None
    exec_ = parse("exec", "p1", "go", "--approvals", "off")
    assert exec_.subOptions["options"] == RunOptions(approvals="off")


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["approve", "p"], "expected PROJECT PERMISSION_ID"),
        (["approve", "p", PERM, "--input", "[1]"], "must be a JSON object"),
        (["approve", "p", PERM, "--input", "{nope"], "not JSON"),
        (["approve", "p", PERM, "--answer", "no equals sign"], "expected QUESTION=ANSWER"),
        (["approve", "p", PERM, "--answer", "=answer"], "expected QUESTION=ANSWER"),
        (["deny", "p", PERM, "--message", ""], "non-empty"),
        (["interrupt"], "expected PROJECT"),
        (["settings", "p", "--approvals", "sometimes"], "phone, off"),
        (["settings", "p", "--allow", "-rf"], "must not start with '-'"),
        (["settings", "p", "--allow", "Read", "--clear"], "exclude each other"),
        (["exec", "p", "x", "--approvals", "sometimes"], "phone, off"),
    ],
)
def test_bad_approval_arguments_are_usage_errors(argv: list[str], reason: str) -> None:
    with pytest.raises(usage.UsageError, match=re.escape(reason)):
        parse(*argv)


def started(interactive: bool, terminal: bool = False) -> tuple[FakeLink, ExecFlow, Any, Any]:
    link, (output, out, err) = FakeLink(), make_output(terminal=terminal)
    flow = ExecFlow(link, output, PID, "x", RunOptions(), interactive=interactive)
    flow.start()
    feed(flow, "execute", {"run_id": RUN}, project_id=PID, request_id=link.last()[2])
    return link, flow, out, err


def prompt_frame(flow: Any, seq: int, message: dict[str, Any]) -> None:
    feed(flow, "agent_message", record(seq, "server", message), project_id=PID)


def test_exec_on_a_terminal_asks_each_prompt_in_turn_and_sends_the_answers() -> None:
    link, flow, out, _ = started(interactive=True, terminal=True)
    live_when_asked: list[bool] = []
    ask = link.ask
    link.ask = lambda q: (live_when_asked.append(flow.out.live), ask(q))[1]  # type: ignore[method-assign]
    try:
        assert flow.out.live
        prompt_frame(flow, 5, permission())
        second = permission("perm-2", "Bash", {"command": "make test"})
        prompt_frame(flow, 6, second)
        assert link.questions == ["Allow Write hello.txt? [y/N] "]  # one at a time
        assert live_when_asked == [False]  # the progress line is not drawn over the question
        link.answer.callback(True)
        request, project_id, _ = link.last()
        assert (request, project_id) == (
            PermissionResponseRequest(permission_id=PERM, behavior="allow"),
            PID,
        )
        assert link.questions[-1] == "Allow Bash make test? [y/N] "
        link.answer.callback(False)
        assert link.last()[0] == PermissionResponseRequest(
            permission_id="perm-2", behavior="deny", message="Denied from the terminal"
        )
        feed(
            flow,
            "permission_response",
            {"permission_id": PERM, "status": "applied"},
            project_id=PID,
            request_id=link.sent[1][2],
        )
        prompt_frame(flow, 7, resolved(by_connection_id="c-1"))
        assert flow.out.live and link.codes == []
    finally:
        flow.out.idle()
    assert "⏸ tool Write  hello.txt" in out.getvalue()
    assert "✓ allowed perm-1 · user · by c-1" in out.getvalue()
    assert link.types() == ["execute", "permission_response", "permission_response"]


def test_the_progress_line_says_when_the_run_waits_for_an_answer() -> None:
    _, flow, _, _ = started(interactive=False, terminal=True)
    try:
        assert flow.out.label == "Claude is working"
        prompt_frame(flow, 5, permission())
        assert flow.out.label == "waiting for an answer"
        feed(flow, "project_state", state("EXECUTING"), project_id=PID)  # still open
        assert flow.out.label == "waiting for an answer"
        prompt_frame(flow, 6, resolved(by_connection_id="phone"))
        assert flow.out.label == "Claude is working"
    finally:
        flow.out.idle()
    assert flow.out.label is None


def test_a_prompt_resolved_elsewhere_while_asked_is_not_answered() -> None:
    link, flow, _, err = started(interactive=True)
    prompt_frame(flow, 5, permission())
    prompt_frame(flow, 6, permission("perm-2"))
    prompt_frame(flow, 7, resolved("perm-2", "deny", "timeout"))  # queued: never asked
    prompt_frame(flow, 8, resolved(by_connection_id="phone"))
    assert "resolved meanwhile" in err.getvalue()
    link.answer.callback(True)
    assert link.types() == ["execute"] and link.questions == ["Allow Write hello.txt? [y/N] "]
    assert "perm-1: answered elsewhere, not sent" in err.getvalue()
    assert link.codes == []


def test_a_late_answer_hears_already_resolved_and_the_run_goes_on() -> None:
    link, flow, out, err = started(interactive=True)
    prompt_frame(flow, 5, permission())
    link.answer.callback(True)
    rid = link.last()[2]
    feed(
        flow,
        "permission_response",
        {"permission_id": PERM, "status": "already_resolved"},
        project_id=PID,
        request_id=rid,
    )
    assert "perm-1: already resolved elsewhere" in err.getvalue()
    prompt_frame(flow, 6, permission("perm-2"))
    link.answer.callback(False)
    feed(
        flow,
        "error",
        {"code": "PERMISSION_NOT_FOUND", "message": "no such prompt"},
        project_id=PID,
        request_id=link.last()[2],
    )
    assert "error PERMISSION_NOT_FOUND: no such prompt" in err.getvalue()
    assert link.codes == []  # neither ends the run's stream
    feed(flow, "execution_finished", FINISHED_OK, project_id=PID)
    feed(flow, "project_state", state("IDLE"), project_id=PID)
    assert link.codes == [0] and "simulated" not in out.getvalue()


def test_exec_without_a_terminal_shows_the_prompt_and_keeps_waiting() -> None:
    link, flow, out, err = started(interactive=False)
    prompt_frame(
        flow,
        5,
        permission(
            preview={"kind": "diff", "path": "hello.txt", "diff": "+new", "truncated": False}
        ),
    )
    assert link.questions == [] and link.types() == ["execute"] and link.codes == []
    assert out.getvalue().splitlines() == [
        "⏸ tool Write  hello.txt  (id perm-1, expires 2026-12-01T14:10:00Z)",
        "    +new",
    ]
    assert f"client approve {PID} perm-1" in err.getvalue()
    assert f"client deny {PID} perm-1" in err.getvalue()
    prompt_frame(flow, 6, resolved(by_connection_id="phone"))
    feed(flow, "execution_finished", FINISHED_OK, project_id=PID)
    feed(flow, "project_state", state("IDLE"), project_id=PID)
    assert link.codes == [0]
    assert out.getvalue().splitlines()[2:] == [
        "✓ allowed perm-1 · user · by phone",
        "✓ success · 4.2s · $0.0123",
    ]
    # --json: the frames as they came, and no hint on stderr.
    link, (output, out, err) = FakeLink(), make_output(json_mode=True)
    flow = ExecFlow(link, output, PID, "x", RunOptions(), interactive=False)
    flow.start()
    feed(flow, "execute", {"run_id": RUN}, project_id=PID, request_id=link.last()[2])
    prompt_frame(flow, 5, permission())
    frames = [json.loads(line) for line in out.getvalue().splitlines()]
    assert frames[-1]["data"]["message"]["permission_id"] == PERM
    assert err.getvalue() == ""


def test_exec_answers_only_its_own_run_and_never_asks_a_question() -> None:
    link, flow, _, err = started(interactive=True)
    prompt_frame(flow, 5, {**permission(), "run_id": "another-run"})
    question = permission(
        tool="AskUserQuestion", kind="question", tool_input={"questions": [{"question": "Go?"}]}
    )
    prompt_frame(flow, 6, question)
    assert link.questions == []
    assert f"client approve {PID} perm-1 --answer 'QUESTION=ANSWER'" in err.getvalue()


def test_ctrl_c_while_a_prompt_is_asked_detaches() -> None:
    link, flow, _, err = started(interactive=True)
    prompt_frame(flow, 5, permission())
    flow.interrupt()
    assert link.codes == [130] and "the run goes on" in err.getvalue()
    link.answer.callback(True)  # too late: nothing is sent
    assert link.types() == ["execute"]


def test_no_prompt_is_asked_while_the_kill_question_is_on_screen() -> None:
    link, flow, out, _ = started(interactive=True)
    flow.interrupt()
    prompt_frame(flow, 5, permission())
    assert link.questions == ["Kill the run? [y/N] "]
    link.answer.callback(True)  # killing: the prompt ends with the run, no question
    assert link.types() == ["execute", "agent_kill"] and link.questions == ["Kill the run? [y/N] "]
    prompt_frame(flow, 6, resolved(behavior="deny", reason="run_ended"))
    assert "✗ denied perm-1 · run_ended" in out.getvalue()


def test_an_interrupted_run_exits_130() -> None:
    link, flow, out, _ = started(interactive=False)
    feed(flow, "execution_finished", {**FINISHED_OK, "outcome": "interrupted"}, project_id=PID)
    feed(flow, "project_state", state("IDLE"), project_id=PID)
    assert link.codes == [130]
    assert out.getvalue().splitlines() == ["⏹ interrupted · 4.2s · $0.0123"]


def joined_state(*pending: dict[str, Any]) -> dict[str, Any]:
    return {
        **state("EXECUTING"),
        "awaiting_approval": bool(pending),
        "pending_permissions": list(pending),
    }


def test_join_shows_and_asks_the_prompts_open_when_it_joins() -> None:
    link, (output, out, _) = FakeLink(), make_output()
    flow = JoinFlow(link, output, PID, after_seq=None, interactive=True)
    flow.start()
    rid = link.last()[2]
    feed(flow, "project_state", joined_state(permission()), project_id=PID, request_id=rid)
    assert link.questions == []  # not before the join is complete
    feed(flow, "project_join", {"project_id": PID, "last_seq": 5}, project_id=PID, request_id=rid)
    assert link.questions == ["Allow Write hello.txt? [y/N] "]
    link.answer.callback(True)
    assert link.last()[0] == PermissionResponseRequest(permission_id=PERM, behavior="allow")
    # A live prompt of any run of the project is asked too; a join outlives it.
    prompt_frame(flow, 6, permission("perm-2", run_id="r-2"))
    assert len(link.questions) == 2
    assert out.getvalue().splitlines()[:2] == [
        "p-1  /home/me/app  EXECUTING",
        "⏸ tool Write  hello.txt  (id perm-1, expires 2026-12-01T14:10:00Z)",
    ]


def test_rejoining_after_a_seq_shows_each_open_prompt_once_after_the_replay() -> None:
    link, (output, out, _) = FakeLink(), make_output()
    flow = JoinFlow(link, output, PID, after_seq=3, interactive=True)
    flow.start()
    rid = link.last()[2]
    older = permission("perm-0")
    pending = [permission(), permission("perm-2")]
    feed(flow, "project_state", joined_state(*pending), project_id=PID, request_id=rid)
    feed(flow, "project_join", {"project_id": PID, "last_seq": 9}, project_id=PID, request_id=rid)
    history = [
        record(4, "server", older),
        record(5, "server", resolved("perm-0", "deny", "timeout")),
        record(6, "server", pending[0]),  # perm-2 is past this page
    ]
    feed(flow, "message_history", {"messages": history}, project_id=PID, request_id=rid)
    lines = out.getvalue().splitlines()
    assert [line.split("(id ")[-1].split(",")[0] for line in lines if "⏸" in line] == [
        "perm-0",
        "perm-1",
        "perm-2",
    ]
    assert link.questions == ["Allow Write hello.txt? [y/N] "]  # perm-0 is long resolved
    link.answer.callback(False)
    assert link.sent[-1][0].permission_id == PERM  # type: ignore[attr-defined]
    assert len(link.questions) == 2
    link.answer.callback(True)
    assert link.sent[-1][0] == PermissionResponseRequest(permission_id="perm-2", behavior="allow")


def test_join_without_a_terminal_only_shows_pending_prompts() -> None:
    link, (output, out, err) = FakeLink(), make_output()
    flow = JoinFlow(link, output, PID, after_seq=None)
    flow.start()
    rid = link.last()[2]
    feed(flow, "project_state", joined_state(permission()), project_id=PID, request_id=rid)
    feed(flow, "project_join", {"project_id": PID, "last_seq": 5}, project_id=PID, request_id=rid)
    assert link.questions == [] and "client approve p-1 perm-1" in err.getvalue()
    assert "⏸ tool Write" in out.getvalue()


@pytest.mark.parametrize(
    ("argv", "status", "shown"),
    [
        (["approve", PID, PERM, "--remember"], "applied", "perm-1: allowed"),
        (["deny", PID, PERM], "applied", "perm-1: denied"),
        (["approve", PID, PERM], "already_resolved", "perm-1: already resolved"),
        (["deny", PID, PERM, "-m", "no"], "already_resolved", "perm-1: already resolved"),
    ],
)
def test_approve_and_deny_answer_one_prompt(argv: list[str], status: str, shown: str) -> None:
    link, (output, out, _) = FakeLink(), make_output()
    flow = AnswerFlow(link, output, PID, parse(*argv).subOptions["request"])
    flow.start()
    request, project_id, rid = link.last()
    assert (request.TYPE, project_id) == ("permission_response", PID)
    assert parse_request(decode_envelope(encode_request(request))) == request
    feed(
        flow,
        "permission_response",
        {"permission_id": PERM, "status": status},
        project_id=PID,
        request_id=rid,
    )
    assert link.codes == [0] and out.getvalue() == shown + "\n"


@pytest.mark.parametrize("code", ["PERMISSION_NOT_FOUND", "INVALID_MESSAGE"])
def test_approve_refused_exits_1_with_the_error(code: str) -> None:
    link, (output, out, err) = FakeLink(), make_output()
    flow = AnswerFlow(
        link, output, "/home/me/app", parse("approve", "x", PERM).subOptions["request"]
    )
    flow.start()
    feed(flow, "project_list_response", {"projects": [state("IDLE")]}, request_id=link.last()[2])
    assert link.last()[1] == PID  # the directory was looked up like the other commands do
    feed(
        flow,
        "error",
        {"code": code, "message": "refused"},
        project_id=PID,
        request_id=link.last()[2],
    )
    assert link.codes == [1] and f"error {code}: refused" in err.getvalue()
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("status", "shown"), [("interrupting", "interrupting"), ("idle", "idle: nothing was running")]
)
def test_interrupt(status: str, shown: str) -> None:
    link, (output, out, _) = FakeLink(), make_output()
    flow = InterruptFlow(link, output, PID)
    flow.start()
    request, project_id, rid = link.last()
    assert (request.TYPE, project_id) == ("agent_interrupt", PID)
    feed(flow, "agent_interrupt", {"status": status}, project_id=PID, request_id="other")
    assert link.codes == []  # not our answer
    feed(flow, "agent_interrupt", {"status": status}, project_id=PID, request_id=rid)
    assert link.codes == [0] and out.getvalue() == shown + "\n"


def with_settings(rules: list[str], approvals: str = "phone") -> dict[str, Any]:
    return {**state("IDLE"), "settings": {"allowed_tools": rules, "approvals": approvals}}


def test_settings_without_options_shows_them() -> None:
    link, (output, out, _) = FakeLink(), make_output()
    flow = SettingsFlow(link, output, PID, None)
    flow.start()
    assert link.types() == ["project_list"]  # read, never written
    other = {**with_settings(["Write"]), "id": "p-2"}
    feed(
        flow,
        "project_list_response",
        {"projects": [other, with_settings(["Read"])]},
        request_id=link.last()[2],
    )
    assert link.codes == [0]
    assert out.getvalue().splitlines() == ["approvals      phone", "allowed_tools  Read"]
    # By directory: the lookup already holds them.
    link, (output, out, _) = FakeLink(), make_output()
    flow = SettingsFlow(link, output, "/home/me/app", None)
    flow.start()
    feed(
        flow,
        "project_list_response",
        {"projects": [with_settings([], "off")]},
        request_id=link.last()[2],
    )
    assert link.types() == ["project_list"] and link.codes == [0]
    assert out.getvalue().splitlines()[0] == "approvals      off"
    # An unknown id.
    link, (output, _, err) = FakeLink(), make_output()
    flow = SettingsFlow(link, output, "p-9", None)
    flow.start()
    feed(
        flow, "project_list_response", {"projects": [with_settings([])]}, request_id=link.last()[2]
    )
    assert link.codes == [1] and "no project p-9" in err.getvalue()


def test_settings_with_options_changes_them_and_shows_the_result() -> None:
    link, (output, out, err) = FakeLink(), make_output()
    change = parse("settings", PID, "--allow", "Read", "--approvals", "off").subOptions["change"]
    flow = SettingsFlow(link, output, PID, change)
    flow.start()
    request, project_id, rid = link.last()
    assert (request.to_data(), project_id) == (
        {"allowed_tools": ["Read"], "approvals": "off"},
        PID,
    )
    feed(flow, "project_state", with_settings(["Write"]), project_id=PID)  # someone else's
    assert link.codes == []
    feed(flow, "project_state", with_settings(["Read"], "off"), project_id=PID, request_id=rid)
    assert link.codes == [0]
    assert out.getvalue().splitlines() == ["approvals      off", "allowed_tools  Read"]
    refused = SettingsFlow(link, output, PID, change)
    refused.start()
    feed(
        refused, "error", {"code": "INVALID_MESSAGE", "message": "bad"}, request_id=link.last()[2]
    )
    assert link.codes == [0, 1] and "INVALID_MESSAGE" in err.getvalue()


# --------------------------------------------------- the client, server in memory


def connect_session(harness: Harness, session: Session) -> iosim.IOPump:
    factory = ClientFactory(session, "wss://localhost:8443/ws", {}, reactor=harness.clock)
    server = harness.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    client = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8443))
    pump: iosim.IOPump = iosim.connect(
        server,
        iosim.FakeTransport(
            server,
            isServer=True,
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8443),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 50000),
        ),
        client,
        iosim.FakeTransport(client, isServer=False),
        greet=True,
    )
    harness.pumps.append(pump)
    pump.flush()
    return pump


def test_exec_against_the_real_server_in_memory(harness: Harness) -> None:
    path = harness.project_dir("app")
    results: list[int] = []

    def client(flow_of: Any, json_mode: bool = False) -> tuple[Session, iosim.IOPump, io.StringIO]:
        output, out, _ = make_output(json_mode=json_mode)
        session = Session(harness.clock, output, ask_terminal=False)
        session.flow = flow_of(session, output)
        session.done.addCallback(results.append)
        return session, connect_session(harness, session), out

    _, pump, out = client(lambda s, o: CreateFlow(s, o, str(path), create=False))
    pump.flush()
    assert results == [0], out.getvalue()
    project_id = out.getvalue().split()[0]

    _, pump, out = client(
        lambda s, o: ExecFlow(s, o, str(path), "hello", RunOptions(), interactive=False),
        json_mode=True,
    )
    process = harness.clock.processes[-1]
    process.emit(
        {"type": "system", "subtype": "init", "session_id": "s1"},
        assistant({"type": "text", "text": "hi"}),
        {"type": "result", "subtype": "success", "is_error": False, "total_cost_usd": 0.5},
    )
    process.exit(0)
    pump.flush()
    assert results == [0, 0], out.getvalue()
    frames = [json.loads(line) for line in out.getvalue().splitlines()]
    types = [f["type"] for f in frames]
    assert types[:3] == ["project_list_response", "project_state", "execute"]
    assert types[-2:] == ["execution_finished", "project_state"]
    assert frames[-2]["data"]["cost_usd"] == 0.5 and frames[-1]["project_id"] == project_id


class TerminalSession(Session):
    """A session whose person at the terminal says yes to every question at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.questions: list[str] = []

    def ask(self, question: str) -> Deferred[bool]:
        self.questions.append(question)
        return succeed(True)


def test_prompts_answered_and_a_run_interrupted_against_the_real_server(
    harness: Harness,
) -> None:
    """exec on a terminal allows claude's Write (the CLI reads an allow with its input),
    ``client settings`` and ``client interrupt`` from a second session; exec exits 130."""
    path = harness.project_dir("app")
    results: list[int] = []

    def client(flow_of: Any, session_class: type[Session] = Session) -> tuple[Any, io.StringIO]:
        output, out, _ = make_output()
        session = session_class(harness.clock, output, ask_terminal=True)
        session.flow = flow_of(session, output)
        session.done.addCallback(results.append)
        connect_session(harness, session).flush()
        return session, out

    client(lambda s, o: CreateFlow(s, o, str(path), create=False))
    exec_session, exec_out = client(
        lambda s, o: ExecFlow(s, o, str(path), "write it", RunOptions(), interactive=True),
        TerminalSession,
    )
    process = harness.clock.processes[-1]
    assert "--permission-prompt-tool" in process.args
    write = {"file_path": "hello.txt", "content": "hi\n"}
    process.emit(
        {"type": "system", "subtype": "init", "session_id": "s1"},
        {
            "type": "control_request",
            "request_id": "cli-req-1",
            "request": {"subtype": "can_use_tool", "tool_name": "Write", "input": write,
                        "tool_use_id": "toolu_1"},
        },
    )  # fmt: skip
    for pump in harness.pumps:
        pump.flush()
    assert exec_session.questions == ["Allow Write hello.txt? [y/N] "]
    lines = [json.loads(line) for line in process.stdin.splitlines()]
    assert lines[-1]["response"]["response"] == {"behavior": "allow", "updatedInput": write}
    assert "✓ allowed" in exec_out.getvalue()

    _, out = client(lambda s, o: SettingsFlow(s, o, str(path), None))
    assert results == [0, 0] and "approvals      phone" in out.getvalue()
    _, out = client(lambda s, o: InterruptFlow(s, o, str(path)))
    assert results == [0, 0, 0] and out.getvalue() == "interrupting\n"
    interrupt = [json.loads(line) for line in process.stdin.splitlines()][-1]
    assert interrupt["request"] == {"subtype": "interrupt"}
    process.emit(
        {"type": "control_response",
         "response": {"subtype": "success", "request_id": interrupt["request_id"]}},
        {"type": "result", "subtype": "error_during_execution", "is_error": True,
         "session_id": "s1"},
    )  # fmt: skip
    process.exit(1)
    for pump in harness.pumps:
        pump.flush()
    assert results == [0, 0, 0, 130], exec_out.getvalue()
    assert "⏹ interrupted" in exec_out.getvalue()
