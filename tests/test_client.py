"""``pocket-agent-server client`` without a network: what each frame shows, the argument
parsing and defaults, each subcommand's flow, and the whole client against the real
server in memory (autobahn both ends, through iosim)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.test import iosim

from pocket_agent.cli import client_render as render
from pocket_agent.cli.client import ClientFactory, Session
from pocket_agent.cli.client_flows import (
    CreateFlow,
    ExecFlow,
    HistoryFlow,
    JoinFlow,
    KillFlow,
    ListFlow,
)
from pocket_agent.cli.client_options import ClientOptions, local_url, resolve_target
from pocket_agent.runs.options import RunOptions
from pocket_agent.wire.envelope import decode_envelope, encode_envelope
from pocket_agent.wire.requests import Request, encode_request, parse_request
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
    """Records what a flow sends; ``answer`` is the Deferred handed out by ``ask``."""

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
        return self.answer

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
