"""Tests of the fake ``claude`` executable (tests/fake_claude/claude), with real processes."""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_claude import FAKE_CLAUDE

FIXTURES = Path(__file__).parent / "fixtures"
OFFLINE = FIXTURES / "claude-cli-2.1.197-offline"
CONVERSATIONS = FIXTURES / "conversations"
SJ = ["-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]
TIMEOUT = 10.0
INTERRUPTED = "[Request interrupted by user]"


def user_line(text: str) -> bytes:
    message = {"role": "user", "content": [{"type": "text", "text": text}]}
    return (json.dumps({"type": "user", "message": message}) + "\n").encode()


def text_of(line: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in line["message"]["content"] if b["type"] == "text")


def is_gone(pid: int) -> bool:
    """No such process, or only a zombie left."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_gone(pid: int, timeout: float = TIMEOUT) -> bool:
    """Wait for a process that is not our child to exit: a pidfd becomes readable then."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    return bool(readable) or is_gone(pid)


def recorded_turns(name: str) -> list[list[dict[str, Any]]]:
    turns: list[list[dict[str, Any]]] = []
    for raw in (CONVERSATIONS / f"{name}.jsonl").read_text().splitlines():
        if not raw.strip():
            continue
        wrapper = json.loads(raw)
        if wrapper["direction"] == "client":
            turns.append([])
        elif wrapper["direction"] == "claude":
            turns[-1].append(wrapper["message"]["content"])
    return turns


class Run:
    """One fake claude process (leading its own session, like the server starts it)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [str(FAKE_CLAUDE), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.stderr_chunks: list[bytes] = []
        self.readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.put(raw)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while chunk := os.read(fd, 65536):
            self.stderr_chunks.append(chunk)

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(user_line(text))
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def raw_line(self) -> bytes | None:
        """The next stdout line (with its newline), or None at EOF."""
        try:
            return self.lines.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError("no stdout line from the fake in time") from None

    def line(self) -> dict[str, Any]:
        raw = self.raw_line()
        assert raw is not None, "unexpected EOF on the fake's stdout"
        assert raw.endswith(b"\n")
        obj: dict[str, Any] = json.loads(raw)
        return obj

    def until_result(self) -> list[dict[str, Any]]:
        out = [self.line()]
        while out[-1]["type"] != "result":
            out.append(self.line())
        return out

    def wait(self, timeout: float = TIMEOUT) -> int:
        rc = self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout)
        return rc

    def rest(self) -> list[bytes]:
        """After exit: the stdout lines not read yet."""
        out = []
        while (raw := self.raw_line()) is not None:
            out.append(raw)
        return out

    @property
    def stderr(self) -> str:
        return b"".join(self.stderr_chunks).decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:  # stdin with unflushed data to a dead process
                    pass


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.cwd = tmp_path / "cwd"
        self.home.mkdir()
        self.cwd.mkdir()
        self.pidfile = tmp_path / "pids"
        self.log = tmp_path / "log.jsonl"
        self.runs: list[Run] = []
        self.pids: list[int] = []  # grandchildren to kill at the end

    def env(self, **extra: str) -> dict[str, str]:
        # Put this interpreter first on PATH: `env python3` then skips slow shims.
        path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        return {"PATH": path, "HOME": str(self.home), **extra}

    def start(self, *args: str, **extra: str) -> Run:
        run = Run(list(args), self.env(**extra), self.cwd)
        self.runs.append(run)
        return run

    def run(
        self, *args: str, stdin: bytes = b"", **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FAKE_CLAUDE), *args],
            input=stdin.decode(),
            capture_output=True,
            text=True,
            env=self.env(**extra),
            cwd=self.cwd,
            timeout=TIMEOUT,
        )

    def child_pids(self) -> list[int]:
        pids = [int(p) for p in self.pidfile.read_text().split()]
        self.pids.extend(pids)
        return pids

    def cleanup(self) -> None:
        for run in self.runs:
            run.stop()
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Env]:
    env = Env(tmp_path)
    yield env
    env.cleanup()


# ----- command line -----


def offline(name: str) -> str:
    return (OFFLINE / name).read_text()


def test_version(fake: Env) -> None:
    done = fake.run("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, "2.1.197 (Claude Code)\n", "")
    assert fake.run("-v").stdout == "2.1.197 (Claude Code)\n"


@pytest.mark.parametrize(
    ("args", "fixture"),
    [
        (["-p", "hi", "--output-format", "stream-json"], "sj_noverbose"),
        (
            ["-p", "--input-format", "stream-json", "--output-format", "stream-json"],
            "sj_noverbose",
        ),
        (["-p", "hi", "--permission-mode", "nope"], "badmode"),
        ([*SJ, "--session-id", "not-a-uuid"], "badsession"),
    ],
)
def test_argument_errors_match_the_real_cli(fake: Env, args: list[str], fixture: str) -> None:
    done = fake.run(*args)
    assert done.returncode == 1
    assert done.stdout == offline(f"{fixture}.stdout") == ""
    assert done.stderr == offline(f"{fixture}.stderr")


def test_unknown_flag(fake: Env) -> None:
    done = fake.run(*SJ, "--bogus-flag", "x")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "error: unknown option '--bogus-flag'\n"


@pytest.mark.parametrize(
    "flags", [["--dangerously-skip-permissions"], ["--permission-mode", "bypassPermissions"]]
)
def test_root_refuses_to_skip_permissions_unless_sandboxed(fake: Env, flags: list[str]) -> None:
    done = fake.run(*SJ, *flags, stdin=user_line("hi"), FAKE_CLAUDE_EUID="0")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == offline("bypass.stderr")
    done = fake.run(*SJ, *flags, stdin=user_line("hi"), IS_SANDBOX="1", FAKE_CLAUDE_EUID="0")
    assert done.returncode == 0
    assert json.loads(done.stdout.splitlines()[0])["permissionMode"] == "bypassPermissions"
    done = fake.run(*SJ, *flags, stdin=user_line("hi"), FAKE_CLAUDE_EUID="1000")
    assert done.returncode == 0  # not root: no refusal


def test_flags_are_accepted_and_logged(fake: Env) -> None:
    args = [
        *SJ,
        "--model",
        "sonnet",
        "--fallback-model",
        "haiku",
        "--permission-mode",
        "acceptEdits",
        "--allowedTools",
        "Read",
        "Edit",
        "--disallowed-tools",
        "Bash",
        "--append-system-prompt",
        "be brief",
        "--add-dir",
        "/tmp",
        "/var",
        "--mcp-config",
        '{"mcpServers":{}}',
        "--strict-mcp-config",
        "--include-partial-messages",
        "--replay-user-messages",
    ]
    done = fake.run(
        *args,
        stdin=user_line("hi"),
        FAKE_CLAUDE_LOG=str(fake.log),
        NO_COLOR="1",
        CLAUDE_CODE_X="y",
        FAKE_CLAUDE_OTHER="z",
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(raw) for raw in done.stdout.splitlines()]
    init = lines[0]
    assert (init["model"], init["permissionMode"]) == ("sonnet", "acceptEdits")
    assert "Bash" not in init["tools"] and "Read" in init["tools"]
    assert lines[1]["type"] == "user" and lines[1]["message"]["content"][0]["text"] == "hi"
    assert {"stream_event", "assistant"} <= {line["type"] for line in lines}
    assert lines[-1]["type"] == "result"
    (record,) = [json.loads(raw) for raw in fake.log.read_text().splitlines()]
    assert record["argv"] == args
    assert record["cwd"] == str(fake.cwd)
    assert record["env"] == {
        "HOME": str(fake.home),
        "NO_COLOR": "1",
        "CLAUDE_CODE_X": "y",
        "FAKE_CLAUDE_OTHER": "z",
        "FAKE_CLAUDE_LOG": str(fake.log),
    }


# ----- turns over stdin -----


def test_eof_without_prompt_prints_nothing(fake: Env) -> None:
    done = fake.run(*SJ)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_echo_turn_stays_alive_until_stdin_closes(fake: Env) -> None:
    run = fake.start(*SJ)
    run.send("hello there")
    init, assistant, result = run.until_result()
    assert init["type"] == "system" and init["subtype"] == "init"
    assert init["cwd"] == str(fake.cwd)
    assert init["model"] == "claude-opus-4-8[1m]" and init["permissionMode"] == "default"
    assert init["claude_code_version"] == "2.1.197" and init["apiKeySource"] == "none"
    sid = init["session_id"]
    assert uuid.UUID(sid)
    assert assistant["type"] == "assistant" and text_of(assistant) == "You said: hello there"
    assert result["subtype"] == "success" and result["is_error"] is False
    assert result["result"] == "You said: hello there"
    assert assistant["session_id"] == result["session_id"] == sid
    assert run.proc.poll() is None  # still waiting for more input
    run.close_stdin()
    assert run.wait() == 0
    assert run.rest() == []
    assert (fake.home / ".fake-claude" / "sessions" / sid).is_file()


def test_two_prompts_two_results_one_init(fake: Env) -> None:
    run = fake.start(*SJ, "--session-id", "12345678-1234-4234-8234-123456789abc")
    run.send("one")
    first = run.until_result()
    run.send("two")
    second = run.until_result()
    run.close_stdin()
    assert run.wait() == 0
    assert [line["type"] for line in first] == ["system", "assistant", "result"]
    assert [line["type"] for line in second] == ["assistant", "result"]
    assert second[-1]["result"] == "You said: two"
    ids = {line["session_id"] for line in first + second}
    assert ids == {"12345678-1234-4234-8234-123456789abc"}


def test_resume_keeps_the_session_id(fake: Env) -> None:
    done = fake.run(*SJ, stdin=user_line("first"))
    sid = json.loads(done.stdout.splitlines()[0])["session_id"]
    done = fake.run(*SJ, "--resume", sid, stdin=user_line("second"))
    assert done.returncode == 0
    assert {json.loads(raw)["session_id"] for raw in done.stdout.splitlines()} == {sid}
    done = fake.run(*SJ, "-r", sid, stdin=user_line("third"))
    assert json.loads(done.stdout.splitlines()[-1])["session_id"] == sid


def test_resume_of_an_unknown_session(fake: Env) -> None:
    sid = "11111111-2222-3333-4444-555555555555"
    done = fake.run(*SJ, "--resume", sid, stdin=user_line("hi"))
    assert done.returncode == 1
    (line,) = done.stdout.splitlines()
    result = json.loads(line)
    real = json.loads(offline("resume_missing.stdout"))
    assert result.keys() == real.keys()
    assert {k: v for k, v in result.items() if k != "uuid"} == {
        k: v for k, v in real.items() if k != "uuid"
    }
    assert done.stderr == offline("resume_missing.stderr")


def test_replay_hello_turn_1_equals_the_recording(fake: Env) -> None:
    done = fake.run(*SJ, stdin=user_line("fake:replay:hello"))
    assert done.returncode == 0
    init, *lines = [json.loads(raw) for raw in done.stdout.splitlines()]
    assert init["subtype"] == "init"
    expected = [c for c in recorded_turns("hello")[0] if c.get("subtype") != "init"]
    assert lines == [{**c, "session_id": init["session_id"]} for c in expected]


def test_replay_every_turn_of_tomato_tracker(fake: Env) -> None:
    turns = recorded_turns("tomato_tracker")
    assert len(turns) == 5
    run = fake.start(*SJ)
    for number, recorded in enumerate(turns, 1):
        run.send(f"fake:replay:tomato_tracker:{number}")
        lines = run.until_result()
        if number == 1:
            sid = lines.pop(0)["session_id"]
        expected = [{**c, "session_id": sid} for c in recorded if c.get("subtype") != "init"]
        if expected[-1]["type"] == "result":
            assert lines == expected
        else:  # turn 3 was recorded without a result line: the fake adds one
            assert lines[:-1] == expected
            assert lines[-1]["type"] == "result" and lines[-1]["is_error"] is False
    run.close_stdin()
    assert run.wait() == 0


def test_not_logged_in_like_the_real_offline_cli(fake: Env) -> None:
    done = fake.run(*SJ, stdin=user_line("hi"), FAKE_CLAUDE_SCENARIO="not_logged_in")
    assert done.returncode == 1
    ours = [json.loads(raw) for raw in done.stdout.splitlines()]
    real = [json.loads(raw) for raw in offline("sj_verbose.stdout").splitlines()]
    assert [line["type"] for line in ours] == [line["type"] for line in real]
    for mine, theirs in zip(ours[1:], real[1:], strict=True):
        assert mine.keys() == theirs.keys()
    assert ours[1]["error"] == "authentication_failed"
    assert text_of(ours[1]) == "Not logged in · Please run /login"
    assert ours[2]["subtype"] == "success" and ours[2]["is_error"] is True
    assert ours[2]["result"] == "Not logged in · Please run /login"


def test_big_line(fake: Env) -> None:
    run = fake.start(*SJ)
    run.send("fake:big_line:5000000")
    assert run.line()["subtype"] == "init"
    raw = run.raw_line()
    assert raw is not None and 5_000_000 < len(raw) < 5_001_000
    big = json.loads(raw)
    assert big["type"] == "user"
    assert big["message"]["content"][0]["content"] == "x" * 5_000_000
    assert run.line()["type"] == "result"
    run.close_stdin()
    assert run.wait() == 0


def test_non_json_line(fake: Env) -> None:
    done = fake.run(*SJ, stdin=user_line("fake:non_json"))
    lines = done.stdout.splitlines()
    assert lines[2] == "this is not json {"
    assert [json.loads(lines[i])["type"] for i in (0, 1, 3)] == ["system", "assistant", "result"]
    assert done.returncode == 0


@pytest.mark.parametrize(
    ("scenario", "rc", "types", "stderr"),
    [
        ("fail", 1, ["system", "result"], ""),
        ("exit:3", 3, ["system"], "fatal: simulated crash\n"),
        ("stderr:3", 0, ["system", "result"], "warning line 1\nwarning line 2\nwarning line 3\n"),
        ("slow:3:0.05", 0, ["system", "assistant", "assistant", "assistant", "result"], ""),
        ("no_such_scenario", 1, ["system", "result"], ""),
    ],
)
def test_simple_scenarios(
    fake: Env, scenario: str, rc: int, types: list[str], stderr: str
) -> None:
    done = fake.run(*SJ, stdin=user_line(f"fake:{scenario}"))
    lines = [json.loads(raw) for raw in done.stdout.splitlines()]
    assert ([line["type"] for line in lines], done.returncode, done.stderr) == (types, rc, stderr)
    if types[-1] == "result":
        assert lines[-1]["is_error"] is (rc != 0)
    if scenario == "fail":
        assert lines[-1]["subtype"] == "error_during_execution"
        assert lines[-1]["errors"] == ["simulated failure"]


def test_session_scenario_changes_the_id(fake: Env) -> None:
    run = fake.start(*SJ)
    run.send("hi")
    first = run.until_result()
    run.send("fake:session:abc-123")
    second = run.until_result()
    run.send("again")
    third = run.until_result()
    run.close_stdin()
    assert run.wait() == 0
    assert first[0]["session_id"] != "abc-123"
    assert {line["session_id"] for line in second + third} == {"abc-123"}
    assert (fake.home / ".fake-claude" / "sessions" / "abc-123").is_file()


# ----- signals and children -----


def test_sigint_during_a_turn(fake: Env) -> None:
    run = fake.start(*SJ)
    run.send("fake:hang")
    assert run.line()["subtype"] == "init"
    assert run.line()["type"] == "assistant"
    os.kill(run.pid, signal.SIGINT)
    interrupted, result = run.line(), run.line()
    assert text_of(interrupted) == INTERRUPTED
    assert result["type"] == "result" and result["is_error"] is True
    assert result["subtype"] == "error_during_execution"
    assert run.wait() == 0
    assert run.rest() == []


def test_sigint_while_idle_and_sigterm(fake: Env) -> None:
    run = fake.start(*SJ)
    run.send("hi")
    run.until_result()
    os.kill(run.pid, signal.SIGINT)
    assert run.wait() == 0
    assert run.rest() == []
    run = fake.start(*SJ)
    run.send("fake:slow:2:30")
    run.line(), run.line()
    os.kill(run.pid, signal.SIGTERM)
    assert run.wait() == -signal.SIGTERM
    assert run.rest() == []


def test_deaf_ignores_sigint_but_not_sigterm(fake: Env) -> None:
    run = fake.start(*SJ)
    run.send("fake:deaf")
    run.line(), run.line()
    os.kill(run.pid, signal.SIGINT)
    with pytest.raises(subprocess.TimeoutExpired):
        run.proc.wait(timeout=0.2)
    os.kill(run.pid, signal.SIGTERM)
    assert run.wait() == -signal.SIGTERM
    assert run.rest() == []


def test_linger_ignores_eof_until_sigint(fake: Env) -> None:
    run = fake.start(*SJ)
    run.send("fake:linger")
    assert run.until_result()[-1]["is_error"] is False
    run.close_stdin()
    with pytest.raises(subprocess.TimeoutExpired):
        run.proc.wait(timeout=0.2)
    os.kill(run.pid, signal.SIGINT)
    assert run.wait() == 0


def test_sigint_kills_the_setsid_grandchild(fake: Env) -> None:
    run = fake.start(*SJ, FAKE_CLAUDE_PIDFILE=str(fake.pidfile))
    run.send("fake:setsid_grandchild")
    run.line()
    started = run.line()
    (pid,) = fake.child_pids()
    assert text_of(started) == f"started {pid}"
    assert os.getsid(pid) == pid != os.getsid(run.pid)
    os.kill(run.pid, signal.SIGINT)
    assert text_of(run.line()) == INTERRUPTED
    assert run.line()["is_error"] is True
    assert run.wait() == 1
    assert wait_gone(pid)


def test_sigint_leaves_the_grandchild_in_the_group(fake: Env) -> None:
    run = fake.start(*SJ, FAKE_CLAUDE_PIDFILE=str(fake.pidfile))
    run.send("fake:grandchild")
    run.line()
    started = run.line()
    (pid,) = fake.child_pids()
    assert text_of(started) == f"started {pid}"
    assert os.getpgid(pid) == run.pid
    os.kill(run.pid, signal.SIGINT)
    assert run.until_result()[-1]["is_error"] is True
    assert run.wait() == 1
    assert not is_gone(pid)  # the server has to kill it; the cleanup does here


def test_stubborn_only_dies_on_sigkill(fake: Env) -> None:
    run = fake.start(*SJ, FAKE_CLAUDE_PIDFILE=str(fake.pidfile))
    run.send("fake:stubborn")
    run.line()
    texts = [text_of(run.line()), text_of(run.line())]
    pids = fake.child_pids()
    assert texts == [f"started {pid}" for pid in pids]
    assert os.getpgid(pids[0]) == run.pid and os.getsid(pids[1]) == pids[1]
    for pid in (run.pid, *pids):
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        run.proc.wait(timeout=0.3)
    assert not any(is_gone(pid) for pid in pids)
    os.kill(run.pid, signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    assert run.rest() == []
    assert not any(is_gone(pid) for pid in pids)


def test_silent_prints_nothing(fake: Env) -> None:
    run = fake.start(*SJ)
    run.send("fake:silent")
    with pytest.raises(subprocess.TimeoutExpired):
        run.proc.wait(timeout=0.2)
    assert run.lines.empty()
    os.kill(run.pid, signal.SIGINT)
    assert run.wait() == 0
    assert run.rest() == []


# ----- the kill-tree scenarios -----

MARKER = "POCKET_AGENT_RUN_ID=run-under-test"


def environ_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/environ").read_bytes().decode("utf-8", "replace").split("\0")


def stat_of(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state is [0], ppid [1])."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def test_ignore_term_child_survives_sigint_and_sigterm(fake: Env) -> None:
    run = fake.start(
        *SJ, FAKE_CLAUDE_PIDFILE=str(fake.pidfile), POCKET_AGENT_RUN_ID="run-under-test"
    )
    run.send("fake:ignore_term_child")
    assert run.line()["subtype"] == "init"
    started = run.line()
    (pid,) = fake.child_pids()
    assert text_of(started) == f"started {pid}"
    assert os.getpgid(pid) == run.pid and os.getsid(pid) == os.getsid(run.pid)
    assert MARKER in environ_of(pid)
    os.kill(run.pid, signal.SIGINT)  # the fake itself reacts as usual...
    assert text_of(run.line()) == INTERRUPTED
    assert run.line()["is_error"] is True
    assert run.wait() == 1
    os.kill(pid, signal.SIGINT)  # ...its child does not
    os.kill(pid, signal.SIGTERM)
    assert not wait_gone(pid, timeout=0.3)
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)


def test_double_fork_grandchild_escapes_the_fake(fake: Env) -> None:
    run = fake.start(
        *SJ, FAKE_CLAUDE_PIDFILE=str(fake.pidfile), POCKET_AGENT_RUN_ID="run-under-test"
    )
    run.send("fake:double_fork")
    assert run.line()["subtype"] == "init"
    started = run.line()
    (pid,) = fake.child_pids()
    assert text_of(started) == f"started {pid}"
    # Reparented away (the middle process is gone), in a session of its own.
    assert int(stat_of(pid)[1]) != run.pid
    sid = os.getsid(pid)
    assert sid == os.getpgid(pid) != pid  # the middle's new session and group
    assert sid not in (os.getsid(run.pid), os.getsid(0))
    assert not any(
        int(stat_of(int(p))[1]) == run.pid
        for p in os.listdir("/proc")
        if p.isdigit() and not is_gone(int(p))
    ), "the fake still has a child"
    assert MARKER in environ_of(pid)
    for fd in ("0", "1", "2"):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == os.devnull
    os.kill(run.pid, signal.SIGINT)  # the fake lost track of it: SIGINT leaves it running
    assert text_of(run.line()) == INTERRUPTED
    assert run.line()["is_error"] is True
    assert run.wait() == 0
    assert run.rest() == []
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    assert not wait_gone(pid, timeout=0.3)
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)


def test_children_inherit_the_whole_environment(fake: Env) -> None:
    run = fake.start(
        *SJ, FAKE_CLAUDE_PIDFILE=str(fake.pidfile), POCKET_AGENT_RUN_ID="run-under-test"
    )
    run.send("fake:tree")
    run.line(), run.line(), run.line()
    for pid in fake.child_pids():
        assert MARKER in environ_of(pid)
        assert f"HOME={fake.home}" in environ_of(pid)


def test_flood_one_line(fake: Env) -> None:
    run = fake.start(*SJ)
    run.send("fake:flood:3000000")
    assert run.line()["subtype"] == "init"
    assert text_of(run.line()) == "flooding 3000000 bytes"
    raw = run.raw_line()
    assert raw == b"x" * 2_999_999 + b"\n"
    result = run.line()
    assert (result["type"], result["result"], result["is_error"]) == (
        "result",
        "flooded 3000000 bytes",
        False,
    )
    run.close_stdin()
    assert run.wait() == 0
    assert run.rest() == []


def test_flood_lines(fake: Env) -> None:
    run = fake.start(*SJ)
    run.send("fake:flood:1000050:1000")
    run.line()
    assert text_of(run.line()) == "flooding 1000050 bytes"
    raws = [run.raw_line() for _ in range(1000)]
    assert all(raw is not None for raw in raws)
    sizes = [len(raw) for raw in raws if raw is not None]
    assert sizes == [1000] * 999 + [1050]
    assert {json.loads(raw)["type"] for raw in raws if raw is not None} == {"flood"}
    assert run.line()["result"] == "flooded 1000050 bytes"
    run.close_stdin()
    assert run.wait() == 0


@pytest.mark.parametrize("arg", ["0", "3:1", "100:10", "100:200", "100:64:loud"])
def test_flood_bad_arguments(fake: Env, arg: str) -> None:
    done = fake.run(*SJ, stdin=user_line(f"fake:flood:{arg}"))
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["type"] == "result" and result["is_error"] is True
    assert "bad scenario" in result["errors"][0]
    assert done.returncode == 1


class Drain:
    """Reads a flood off the fake's stdout as fast as it comes, keeping only its head
    and tail, so gigabytes cost no memory."""

    def __init__(self, proc: subprocess.Popen[bytes], keep: int = 1 << 16) -> None:
        assert proc.stdout is not None
        # Its own descriptor: the Popen may close (or the collector finalise) stdout
        # while this thread still reads, and the number could then be another file's.
        self.fd = os.dup(proc.stdout.fileno())
        self.keep = keep
        self.head = b""
        self.tail = b""
        self.total = 0
        self.flooding = threading.Event()  # the flood's bytes are coming
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while chunk := os.read(self.fd, 1 << 20):
                self.total += len(chunk)
                if len(self.head) < self.keep:
                    self.head += chunk[: self.keep - len(self.head)]
                    if b"flooding" in self.head and b"x" * 1024 in self.head:
                        self.flooding.set()
                self.tail = (self.tail + chunk)[-self.keep :]
        finally:
            os.close(self.fd)


def start_flood(fake: Env, scenario: str) -> tuple[subprocess.Popen[bytes], Drain]:
    proc = subprocess.Popen(
        [str(FAKE_CLAUDE), *SJ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=fake.env(),
        cwd=fake.cwd,
        start_new_session=True,
    )
    fake.pids.append(proc.pid)
    drain = Drain(proc)
    assert proc.stdin is not None
    proc.stdin.write(user_line(scenario))
    proc.stdin.flush()
    assert drain.flooding.wait(TIMEOUT), drain.head
    return proc, drain


def test_flood_sigint_ends_the_cut_line_and_interrupts(fake: Env) -> None:
    proc, drain = start_flood(fake, f"fake:flood:{1 << 40}")  # a TiB: never done in time
    try:
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT) == 0
        drain.thread.join(TIMEOUT)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
    lines = drain.tail.split(b"\n")
    assert lines[-1] == b""
    interrupted, result = json.loads(lines[-3]), json.loads(lines[-2])
    assert text_of(interrupted) == INTERRUPTED
    assert result["type"] == "result" and result["is_error"] is True
    assert set(lines[-4]) == {ord("x")}  # the flood line, cut short and ended
    assert drain.total < 1 << 40


def test_flood_deaf_ignores_sigint_but_not_sigterm(fake: Env) -> None:
    proc, _drain = start_flood(fake, f"fake:flood:{1 << 40}:65536:deaf")
    try:
        os.kill(proc.pid, signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.3)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == -signal.SIGTERM
    finally:
        assert proc.stdin is not None
        proc.stdin.close()


def test_version_hang(fake: Env) -> None:
    proc = subprocess.Popen(
        [str(FAKE_CLAUDE), "--version"],
        stdout=subprocess.PIPE,
        env=fake.env(FAKE_CLAUDE_VERSION_HANG="1", FAKE_CLAUDE_PIDFILE=str(fake.pidfile)),
        cwd=fake.cwd,
    )
    fake.pids.append(proc.pid)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        assert not ready, "--version answered"
        assert fake.pidfile.read_text() == f"{proc.pid}\n"
        os.kill(proc.pid, signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == -signal.SIGTERM
        assert proc.stdout.read() == b""
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


# ----- the stdio control protocol (--permission-prompt-tool stdio) -----

STDIO = FIXTURES / "claude-cli-2.1.197-stdio"
ASK = [*SJ, "--permission-prompt-tool", "stdio"]


def captured(name: str) -> list[dict[str, Any]]:
    """The frames of a capture of the real CLI, each {"dir", "line"}."""
    rows = [json.loads(raw) for raw in (STDIO / name).read_text().splitlines() if raw.strip()]
    return [row for row in rows if "dir" in row]


def captured_line(name: str, pred: Any) -> dict[str, Any]:
    line: dict[str, Any] = next(r["line"] for r in captured(name) if pred(r["line"]))
    return line


def send_json(run: Run, obj: dict[str, Any]) -> None:
    assert run.proc.stdin is not None
    run.proc.stdin.write((json.dumps(obj) + "\n").encode())
    run.proc.stdin.flush()


def answer(
    run: Run, request_id: str, response: dict[str, Any] | None = None, **extra: Any
) -> None:
    body: dict[str, Any] = {"subtype": "success", "request_id": request_id, **extra}
    if response is not None:
        body["response"] = response
    send_json(run, {"type": "control_response", "response": body})


def interrupt(run: Run, request_id: str = "req_int_1") -> None:
    send_json(
        run,
        {"type": "control_request", "request_id": request_id, "request": {"subtype": "interrupt"}},
    )


def until_type(run: Run, kind: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Lines up to (not including) the first of type kind, and that line."""
    before = []
    while (line := run.line())["type"] != kind:
        before.append(line)
    return before, line


def tool_results(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        block
        for line in lines
        if line["type"] == "user"
        for block in line["message"]["content"]
        if block.get("type") == "tool_result"
    ]


def shape(value: Any) -> Any:
    """Keys (in order) and value types, recursively; lists by their first element."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def same_result_shape(mine: dict[str, Any], real: dict[str, Any]) -> bool:
    """A result's keys are among the real one's (the fake leaves out the ttft_* timings),
    with the same types (a cost may be an int 0); modelUsage and denials not compared deep."""
    assert [k for k in real if k in mine] == list(mine)
    for key, value in mine.items():
        assert type(value) is type(real[key]) or key == "total_cost_usd", key
    for denial in mine["permission_denials"]:
        assert list(denial) == ["tool_name", "tool_use_id", "tool_input"]
    return True


def asked(run: Run) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    before, request = until_type(run, "control_request")
    assert request["request"]["subtype"] == "can_use_tool"
    tool_use = before[-1]["message"]["content"][0]
    assert tool_use["type"] == "tool_use"
    assert request["request"]["tool_use_id"] == tool_use["id"]
    assert request["request"]["input"] == tool_use["input"]
    assert str(uuid.UUID(request["request_id"])) == request["request_id"]
    return before, request


def test_permission_prompt_tool_flag_adds_the_prompt_tools(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("hi")
    init = run.line()
    real = captured_line("stdio_allow.jsonl", lambda line: line.get("subtype") == "init")
    for tool in ("AskUserQuestion", "EnterPlanMode", "ExitPlanMode"):
        assert tool in init["tools"] and tool in real["tools"]
    run.until_result()
    run.close_stdin()
    assert run.wait() == 0
    plain = fake.start(*SJ)
    plain.send("hi")
    assert "AskUserQuestion" not in plain.line()["tools"]


def test_allow_writes_the_file(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("fake:ask_write:hello.txt:hi")
    _, request = asked(run)
    assert request["request"]["tool_name"] == "Write"
    assert request["request"]["input"] == {"file_path": "hello.txt", "content": "hi\n"}
    assert not (fake.cwd / "hello.txt").exists()
    answer(
        run,
        request["request_id"],
        {"behavior": "allow", "updatedInput": request["request"]["input"]},
    )
    lines = run.until_result()
    (result_block,) = tool_results(lines)
    assert "is_error" not in result_block
    assert result_block["content"].startswith("File created successfully at: hello.txt")
    assert text_of(lines[-2]) == "All done. "
    assert lines[-1]["subtype"] == "success" and lines[-1]["permission_denials"] == []
    assert (fake.cwd / "hello.txt").read_text() == "hi\n"
    run.close_stdin()
    assert run.wait() == 0


def test_allow_with_an_updated_input_writes_the_modified_content(fake: Env) -> None:
    target = fake.cwd / "abs.txt"
    run = fake.start(*ASK)
    run.send(f"fake:ask_write:{target}:asked")
    _, request = asked(run)
    answer(
        run,
        request["request_id"],
        {"behavior": "allow", "updatedInput": {"file_path": str(target), "content": "changed\n"}},
    )
    lines = run.until_result()
    assert lines[-1]["subtype"] == "success"
    assert target.read_text() == "changed\n"
    (user,) = [line for line in lines if line["type"] == "user"]
    assert user["tool_use_result"]["content"] == "changed\n"


def test_allow_with_empty_updated_input_uses_the_asked_input(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("fake:ask_write:empty.txt:as asked")
    _, request = asked(run)
    answer(run, request["request_id"], {"behavior": "allow", "updatedInput": {}})
    run.until_result()
    assert (fake.cwd / "empty.txt").read_text() == "as asked\n"


@pytest.mark.parametrize(
    ("response", "capture"),
    [
        ({"behavior": "allow"}, "extra_allow_noinput.jsonl"),
        ({"behavior": "deny"}, "extra_deny_nomsg.jsonl"),
    ],
)
def test_malformed_answer_is_a_zod_deny(fake: Env, response: dict[str, Any], capture: str) -> None:
    run = fake.start(*ASK)
    run.send("fake:ask_write:z.txt")
    _, request = asked(run)
    answer(run, request["request_id"], response)
    lines = run.until_result()
    (block,) = tool_results(lines)
    real = tool_results([r["line"] for r in captured(capture) if r["dir"] == "stdout"])[0]
    assert block["content"] == real["content"]  # the very ZodError text
    assert block["is_error"] is True and list(block) == list(real)
    assert lines[-1]["subtype"] == "success"
    assert [d["tool_name"] for d in lines[-1]["permission_denials"]] == ["Write"]
    assert not (fake.cwd / "z.txt").exists()
    run.close_stdin()
    assert run.wait() == 0


def test_deny_with_a_message(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("fake:ask_edit:f.txt:one:uno")
    (fake.cwd / "f.txt").write_text("one two\n")
    _, request = asked(run)
    assert request["request"]["tool_name"] == "Edit"
    answer(run, request["request_id"], {"behavior": "deny", "message": "Denied from phone"})
    lines = run.until_result()
    (block,) = tool_results(lines)
    assert (block["content"], block["is_error"]) == ("Denied from phone", True)
    user = next(line for line in lines if line["type"] == "user")
    assert user["tool_use_result"] == "Error: Denied from phone"
    assert text_of(lines[-2]) == "All done. "
    denial = lines[-1]["permission_denials"][0]
    assert denial["tool_use_id"] == request["request"]["tool_use_id"]
    assert (fake.cwd / "f.txt").read_text() == "one two\n"


def test_edit_allowed_changes_the_file(fake: Env) -> None:
    (fake.cwd / "f.txt").write_text("one two\n")
    run = fake.start(*ASK)
    run.send("fake:ask_edit:f.txt:one:uno")
    _, request = asked(run)
    answer(
        run,
        request["request_id"],
        {"behavior": "allow", "updatedInput": request["request"]["input"]},
    )
    lines = run.until_result()
    user = next(line for line in lines if line["type"] == "user")
    assert user["tool_use_result"]["structuredPatch"][0]["lines"] == ["-one two", "+uno two"]
    assert (fake.cwd / "f.txt").read_text() == "uno two\n"


def test_error_reply_denies_and_unknown_request_id_is_ignored(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("fake:ask_bash:touch never")
    _, request = asked(run)
    assert request["request"]["blocked_path"] == str(fake.cwd / "never")
    answer(run, "not-a-pending-id", {"behavior": "allow", "updatedInput": {}})
    send_json(
        run,
        {
            "type": "control_response",
            "response": {"subtype": "error", "request_id": request["request_id"], "error": "nope"},
        },
    )
    lines = run.until_result()
    (block,) = tool_results(lines)  # the unknown id got nothing, the error reply a deny
    assert block["content"] == "Tool permission request failed: Error: nope"
    assert not (fake.cwd / "never").exists()


def test_unknown_request_id_then_the_real_answer(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("fake:ask_bash:rm -rf /")
    _, request = asked(run)
    answer(run, str(uuid.uuid4()), {"behavior": "deny", "message": "wrong one"})
    answer(run, request["request_id"], {"behavior": "allow", "updatedInput": {}})
    lines = run.until_result()
    (block,) = tool_results(lines)
    assert block == {
        "tool_use_id": request["request"]["tool_use_id"],
        "type": "tool_result",
        "content": "fake output of: rm -rf /",
        "is_error": False,
    }
    assert lines[-1]["permission_denials"] == []


def test_eof_while_pending_denies_and_exits_0(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("fake:ask_write:eof.txt")
    asked(run)
    run.close_stdin()
    lines = run.until_result()
    (block,) = tool_results(lines)
    assert block["content"].endswith("Tool permission stream closed before response received")
    assert lines[-1]["subtype"] == "success"
    assert run.wait() == 0
    assert run.rest() == []
    assert not (fake.cwd / "eof.txt").exists()


def test_sigint_while_pending(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("fake:ask_write:int.txt")
    _, request = asked(run)
    os.kill(run.pid, signal.SIGINT)
    cancel = run.line()
    assert cancel == {"type": "control_cancel_request", "request_id": request["request_id"]}
    rejected, text, result = run.line(), run.line(), run.line()
    assert tool_results([rejected])[0]["is_error"] is True
    assert rejected["tool_use_result"] == "User rejected tool use"
    assert text_of(text) == "[Request interrupted by user for tool use]"
    assert (result["type"], result["subtype"]) == ("result", "error_during_execution")
    assert result["terminal_reason"] == "aborted_tools"
    assert run.wait() == 0
    assert run.rest() == []


def test_interrupt_while_pending_keeps_the_process_and_session(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("fake:ask_write:int.txt")
    before, request = asked(run)
    session = before[0]["session_id"]
    interrupt(run, "req_int_1")
    cancel, reply = run.line(), run.line()
    assert cancel == {"type": "control_cancel_request", "request_id": request["request_id"]}
    assert reply == {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": "req_int_1"},
    }
    lines = run.until_result()
    assert lines[0]["tool_use_result"] == "User rejected tool use"
    assert text_of(lines[1]) == "[Request interrupted by user for tool use]"
    assert lines[-1]["subtype"] == "error_during_execution" and lines[-1]["is_error"] is True
    assert run.proc.poll() is None  # still alive, reading stdin
    answer(run, request["request_id"], {"behavior": "allow", "updatedInput": {}})  # too late
    run.send("hello again")
    again = run.until_result()
    assert [line["type"] for line in again] == ["assistant", "result"]
    assert again[-1]["session_id"] == session and again[-1]["result"] == "You said: hello again"
    run.close_stdin()
    assert run.wait() == 0
    assert not (fake.cwd / "int.txt").exists()


def test_interrupt_while_streaming(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("fake:slow:5:30")
    assert run.line()["subtype"] == "init"
    assert text_of(run.line()) == "part 1/5"
    interrupt(run, "req_int_7")
    reply, text, result = run.line(), run.line(), run.line()
    assert reply["response"] == {"subtype": "success", "request_id": "req_int_7"}
    assert text["type"] == "user" and text_of(text) == INTERRUPTED
    assert result["subtype"] == "error_during_execution"
    assert result["terminal_reason"] == "aborted_streaming" and result["stop_reason"] is None
    run.send("next")
    assert run.until_result()[-1]["result"] == "You said: next"
    run.close_stdin()
    assert run.wait() == 0


def test_interrupt_while_idle_is_acknowledged(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("hi")
    run.until_result()
    interrupt(run, "idle_1")
    assert run.line()["response"] == {"subtype": "success", "request_id": "idle_1"}
    run.close_stdin()
    assert run.wait() == 0
    assert run.rest() == []


def test_two_prompts_in_one_turn(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("fake:ask_twice")
    _, first = asked(run)
    assert first["request"]["input"]["command"] == "touch first.txt"
    answer(run, first["request_id"], {"behavior": "allow", "updatedInput": {}})
    between, second = asked(run)
    assert tool_results(between)[0]["content"] == "fake output of: touch first.txt"
    assert second["request_id"] != first["request_id"]
    assert second["request"]["input"]["command"] == "touch second.txt"
    answer(run, second["request_id"], {"behavior": "deny", "message": "no second"})
    lines = run.until_result()
    assert tool_results(lines)[0]["content"] == "no second"
    assert lines[-1]["num_turns"] == 3
    assert [d["tool_use_id"] for d in lines[-1]["permission_denials"]] == [
        second["request"]["tool_use_id"]
    ]


def test_question_answered(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("fake:ask_question:Proceed?")
    _, request = asked(run)
    assert request["request"]["tool_name"] == "AskUserQuestion"
    updated = {**request["request"]["input"], "answers": {"Proceed?": "Yes"}}
    answer(run, request["request_id"], {"behavior": "allow", "updatedInput": updated})
    lines = run.until_result()
    (block,) = tool_results(lines)
    assert block["content"] == (
        'Your questions have been answered: "Proceed?"="Yes". '
        "You can now continue with these answers in mind."
    )
    assert lines[0]["tool_use_result"]["answers"] == {"Proceed?": "Yes"}


@pytest.mark.parametrize("approve", [True, False])
def test_plan_approve_or_reject(fake: Env, approve: bool) -> None:
    run = fake.start(*ASK, "--permission-mode", "plan")
    run.send("fake:ask_plan:do things")
    _, request = asked(run)
    assert request["request"]["tool_name"] == "ExitPlanMode"
    assert request["request"]["input"] == {"plan": "do things"}
    if approve:
        answer(
            run,
            request["request_id"],
            {"behavior": "allow", "updatedInput": {"plan": "do things"}},
        )
    else:
        answer(run, request["request_id"], {"behavior": "deny", "message": "Not this plan"})
    lines = run.until_result()
    (block,) = tool_results(lines)
    if approve:
        assert block["content"].startswith("User has approved your plan.")
        assert block["content"].endswith("## Approved Plan (edited by user):\ndo things")
        assert lines[-1]["permission_denials"] == []
    else:
        assert (block["content"], block["is_error"]) == ("Not this plan", True)
        assert lines[-1]["permission_denials"][0]["tool_name"] == "ExitPlanMode"


def test_plan_outside_plan_mode_is_an_error_without_prompt(fake: Env) -> None:
    run = fake.start(*ASK)
    run.send("fake:ask_plan:do things")
    lines = run.until_result()
    assert all(line["type"] != "control_request" for line in lines)
    real = tool_results([r["line"] for r in captured("extra_plan_default.jsonl")])[0]
    (block,) = tool_results(lines)
    assert (block["content"], block["is_error"]) == (real["content"], True)


def test_without_the_prompt_tool_the_cli_denies_on_its_own(fake: Env) -> None:
    run = fake.start(*SJ)
    run.send("fake:ask_write:nope.txt")
    lines = run.until_result()
    assert all(line["type"] != "control_request" for line in lines)
    (block,) = tool_results(lines)
    assert block["content"] == (
        "Claude requested permissions to write to nope.txt, but you haven't granted it yet."
    )
    run.send("fake:ask_bash:touch x")
    (block,) = tool_results(run.until_result())
    assert block["content"] == (
        "Claude requested permissions to use Bash, but you haven't granted it yet."
    )
    assert not (fake.cwd / "nope.txt").exists()


def test_allowed_tools_and_accept_edits_skip_the_prompt(fake: Env) -> None:
    run = fake.start(*ASK, "--permission-mode", "acceptEdits", "--allowedTools", "Bash(touch:*)")
    run.send("fake:ask_write:auto.txt")
    lines = run.until_result()
    assert all(line["type"] != "control_request" for line in lines)
    assert (fake.cwd / "auto.txt").read_text() == "hi\n"
    run.send("fake:ask_bash:touch y")
    assert all(line["type"] != "control_request" for line in run.until_result())
    run.send("fake:ask_bash:rm y")
    _, request = asked(run)
    answer(run, request["request_id"], {"behavior": "deny", "message": "no"})
    run.until_result()


def test_control_lines_have_the_real_shapes(fake: Env) -> None:
    """Keys (and their order) and value types of the fake's control lines and of the lines
    around them equal those of the real CLI's."""

    def real(name: str, pred: Any) -> dict[str, Any]:
        return captured_line(name, pred)

    def is_request(line: dict[str, Any]) -> bool:
        return line["type"] == "control_request" and line["request"]["subtype"] == "can_use_tool"

    def is_result_user(line: dict[str, Any]) -> bool:
        return line["type"] == "user" and "tool_use_result" in line

    (fake.cwd / "e.txt").write_text("one two\n")
    cases = [
        ([], "fake:ask_write:w.txt", "stdio_allow.jsonl", "allow"),
        ([], "fake:ask_write:d.txt", "stdio_deny.jsonl", "deny"),
        ([], "fake:ask_edit:e.txt:one:uno", "extra_edit.jsonl", "allow"),
        ([], "fake:ask_bash:touch b", "extra_bash2.jsonl", "allow"),
        ([], "fake:ask_question:Proceed?", "extra_ask.jsonl", "allow"),
        (["--permission-mode", "plan"], "fake:ask_plan:p", "extra_plan.jsonl", "allow"),
    ]
    for extra, prompt, capture, behavior in cases:
        run = fake.start(*ASK, *extra)
        run.send(prompt)
        before, request = asked(run)
        tool = request["request"]["tool_name"]
        asked_id = real(capture, is_request)["request"]["tool_use_id"]
        assert shape(before[-1]) == shape(
            real(
                capture,
                lambda x: (
                    x["type"] == "assistant" and x["message"]["content"][0].get("name") == tool  # noqa: B023
                ),
            )
        ), capture
        assert shape(request) == shape(real(capture, is_request)), capture
        real_answer = real(capture, lambda x: x["type"] == "control_response")
        if behavior == "allow":
            updated = dict(request["request"]["input"])
            if "questions" in updated:
                updated["answers"] = {"Proceed?": "Yes"}
            response = {"behavior": "allow", "updatedInput": updated}
        else:
            response = {"behavior": "deny", "message": "Denied from phone"}
        mine = {
            "type": "control_response",
            "response": {
                "subtype": "success",
                "request_id": request["request_id"],
                "response": response,
            },
        }
        assert shape(mine) == shape(real_answer), capture
        send_json(run, mine)
        lines = run.until_result()
        user = next(line for line in lines if line["type"] == "user")
        real_user = real(
            capture,
            lambda x: is_result_user(x) and tool_results([x])[0]["tool_use_id"] == asked_id,  # noqa: B023
        )
        assert shape(user) == shape(real_user), capture
        real_result = real(capture, lambda x: x["type"] == "result")
        assert set(lines[-1]) <= set(real_result), capture  # no ttft_* timings in the fake
        for key, value in lines[-1].items():
            assert type(value) is type(real_result[key]) or key == "total_cost_usd", key
        for denial in lines[-1]["permission_denials"]:
            assert list(denial) == ["tool_name", "tool_use_id", "tool_input"]
        run.close_stdin()
        assert run.wait() == 0
    # the interrupt: the cancel, the reply, the rejected tool_result, the text and the result
    run = fake.start(*ASK)
    run.send("fake:ask_write:i.txt")
    asked(run)
    interrupt(run)
    capture = [
        r["line"] for r in captured("stdio_interrupt_pending.jsonl") if r["dir"] == "stdout"
    ]
    after = capture[[line["type"] for line in capture].index("control_cancel_request") :]
    mine_lines = [run.line() for _ in after]
    assert [shape(line) for line in mine_lines[:-1]] == [shape(line) for line in after[:-1]]
    assert same_result_shape(mine_lines[-1], after[-1])
    # while streaming
    run = fake.start(*ASK)
    run.send("fake:slow:3:30")
    run.line(), run.line()
    interrupt(run)
    capture = [r["line"] for r in captured("stdio_interrupt_stream.jsonl") if r["dir"] == "stdout"]
    after = capture[1:]
    mine_lines = [run.line() for _ in after]
    assert [shape(line) for line in mine_lines[:-1]] == [shape(line) for line in after[:-1]]
    assert same_result_shape(mine_lines[-1], after[-1])
