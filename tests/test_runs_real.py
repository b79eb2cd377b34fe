"""Runs of the fake claude as a real process, on the real reactor: kills reach the whole
tree, outcomes are right, and hundreds of runs leak nothing."""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from pocket_agent.compose import App, build_app, find_setsid
from pocket_agent.config import ClaudeConfig, Overrides, ProjectsConfig, load_config
from pocket_agent.core.events import Cause, Event
from pocket_agent.core.hub import Departure
from pocket_agent.runs.options import RunOptions
from pocket_agent.runs.probe import ClaudeProbe, probe_version
from pocket_agent.runs.tree import alive
from pocket_agent.wire.translate import frames_for
from tests.fake_claude import FAKE_CLAUDE

pytestmark = pytest.mark.e2e


class Follower:
    """A follower that keeps the frames it was sent and lets a test wait for a frame type."""

    def __init__(self, name: str) -> None:
        self.connection_id = name
        self.authenticated_as = "token"
        self.messages: list[dict[str, Any]] = []
        self._waiting: list[tuple[str, defer.Deferred[dict[str, Any]]]] = []

    def deliver(self, event: Event) -> None:
        for frame in frames_for(event):
            self._keep(json.loads(frame.encode()))

    def _keep(self, wire: dict[str, Any]) -> None:
        self.messages.append(wire)
        for entry in list(self._waiting):
            if entry[0] == wire["type"]:
                self._waiting.remove(entry)
                entry[1].callback(wire)

    def wait_for(self, mtype: str) -> defer.Deferred[dict[str, Any]]:
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._waiting.append((mtype, d))
        return d

    def close(self, why: Departure) -> None:
        pass

    def abort(self) -> None:
        pass

    def records(self) -> list[dict[str, Any]]:
        return [m["data"] for m in self.messages if m["type"] == "agent_message"]

    def claude_messages(self) -> list[dict[str, Any]]:
        return [r["message"] for r in self.records() if r["direction"] == "claude"]


class RealRuns:
    """An agent on the real reactor with one project and two followers."""

    def __init__(self, tmp: Path) -> None:
        self.cleanups: list[Callable[[], object]] = []
        self.tmp = tmp
        self.home = self.tmp / "home"
        (self.home / "app").mkdir(parents=True)
        self.pidfile = self.tmp / "children.pids"
        self.argv_log = self.tmp / "argv.jsonl"
        self.agent = self.make_agent()
        self.project = self.agent.registry.create(str(self.home / "app"), False)[0]
        self.cleanups.append(self._kill_leftovers)
        self.followers = [Follower("a"), Follower("b")]
        for follower in self.followers:
            self.agent.hub.connect(follower)
            self.agent.hub.subscribe(follower, self.project.id, None)

    def make_agent(self, **timeouts: float) -> App:
        config = load_config(Overrides(root=str(self.tmp / "root")), environ={})
        config = attrs.evolve(
            config,
            # 200 runs back to back in one project: not what the rate limit is about.
            limits=attrs.evolve(config.limits, executions_per_minute=10_000),
            projects=ProjectsConfig(allowed_roots=(self.home,)),
            claude=ClaudeConfig(
                binary=str(FAKE_CLAUDE),
                default_model=None,
                extra_args=(),
                env=(
                    ("FAKE_CLAUDE_LOG", str(self.argv_log)),
                    ("FAKE_CLAUDE_PIDFILE", str(self.pidfile)),
                    ("HOME", str(self.home)),
                    # `env python3` straight to this interpreter, not through a slow shim.
                    ("PATH", f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"),
                ),
                allow_dangerous_options=False,
                approvals="phone",
            ),
            timeouts=attrs.evolve(
                config.timeouts, **{"kill_grace": 0.5, "execution": 30.0, **timeouts}
            ),
        )
        app = build_app(config, reactor, lambda: "t" * 43, setsid=find_setsid())
        app.service.privilegedStartService()
        app.service.startService()
        self.cleanups.append(lambda: self._stop(app))
        return app

    def _stop(self, app: App) -> defer.Deferred[Any] | None:
        if not app.service.running:
            return None
        for follower in getattr(self, "followers", []):
            app.hub.disconnect(follower)
        return app.service.stopService()

    def _kill_leftovers(self) -> None:
        """Whatever a failing test left behind dies here, by pid."""
        pids = self.child_pids() if self.pidfile.exists() else []
        if self.argv_log.exists():  # the fake claudes themselves
            pids += [json.loads(line)["pid"] for line in self.argv_log.read_text().splitlines()]
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def run_prompt(
        self, prompt: str, watcher: Follower | None = None
    ) -> defer.Deferred[dict[str, Any]]:
        """Start a run; fire with its execution_finished data once the final state has
        reached ``watcher`` (by default the last follower, so every follower has it)."""
        watcher = watcher or self.followers[-1]
        finished = watcher.wait_for("execution_finished")

        def then_final_state(message: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
            final = watcher.wait_for("project_state")
            return final.addCallback(lambda _: message["data"])

        # A requester that is not one of the followers: they see only the broadcast.
        self.agent.executor.execute(Cause("requester"), self.project.id, prompt, RunOptions())
        return finished.addCallback(then_final_state)

    def child_pids(self) -> list[int]:
        return [int(line) for line in self.pidfile.read_text().split()]

    def kill_when_started(self, count: int) -> None:
        """Kill the run once the fake has reported ``count`` children started."""

        def check(message: dict[str, Any]) -> None:
            claude = self.followers[0].claude_messages()
            started = [m for m in claude if "started" in json.dumps(m)]
            if len(started) >= count:
                self.agent.executor.kill(Cause("test"), self.project.id)
            else:
                self.followers[0].wait_for("agent_message").addCallback(check)

        self.followers[0].wait_for("agent_message").addCallback(check)


@pytest.fixture
def real(tmp_path: Path) -> Iterator[RealRuns]:
    runs = RealRuns(tmp_path.resolve())
    yield runs
    for cleanup in reversed(runs.cleanups):
        result = cleanup()
        if isinstance(result, defer.Deferred):
            pytest_twisted.blockon(result)


@pytest_twisted.inlineCallbacks
def test_full_run_seen_identically_and_session_resumed(real: RealRuns) -> Any:
    result = yield real.run_prompt("fake:replay:hello")
    assert result["outcome"] == "success", result
    a, b = real.followers
    assert a.messages == b.messages
    seqs = [r["seq"] for r in a.records()]
    assert seqs == list(range(1, len(seqs) + 1))
    kinds = [m["type"] for m in a.claude_messages()]
    assert kinds == ["system", "assistant", "result"]
    session_id = result["session_id"]
    assert real.agent.registry.get(real.project.id).session_id == session_id
    meta = json.loads(
        (real.agent.registry.store.project_dir(real.project.id) / "metadata.json").read_text()
    )
    assert meta["session_id"] == session_id
    second = yield real.run_prompt("again")
    assert second["outcome"] == "success"
    argvs = [json.loads(line)["argv"] for line in real.argv_log.read_text().splitlines()]
    assert "--resume" not in argvs[0]
    assert argvs[1][argvs[1].index("--resume") + 1] == session_id
    assert second["session_id"] == session_id


@pytest_twisted.inlineCallbacks
def test_kill_reaches_grandchildren_in_and_out_of_the_group(real: RealRuns) -> Any:
    real.kill_when_started(2)
    result = yield real.run_prompt("fake:tree")
    assert result["outcome"] == "killed"
    pids = real.child_pids()
    assert len(pids) == 2
    assert [pid for pid in pids if alive(pid)] == []


@pytest_twisted.inlineCallbacks
def test_a_child_that_ignores_int_and_term_still_dies(real: RealRuns) -> Any:
    real.kill_when_started(2)
    result = yield real.run_prompt("fake:stubborn")
    assert (result["outcome"], result["signal"]) == ("killed", "SIGKILL")
    assert [pid for pid in real.child_pids() if alive(pid)] == []


@pytest_twisted.inlineCallbacks
def test_timeout(real: RealRuns) -> Any:
    config = real.agent.executor.config
    real.agent.executor.config = attrs.evolve(
        config, timeouts=attrs.evolve(config.timeouts, execution=1.0)
    )
    result = yield real.run_prompt("fake:hang")
    assert (result["outcome"], result["reason"]) == ("timeout", "timeout")
    errors = [m for m in real.followers[0].messages if m["type"] == "error"]
    assert errors[-1]["data"]["code"] == "EXECUTION_TIMEOUT"


@pytest_twisted.inlineCallbacks
def test_failure_with_is_error(real: RealRuns) -> Any:
    result = yield real.run_prompt("fake:fail")
    assert result["outcome"] == "failed"
    assert "simulated failure" in result["error"]
    assert real.followers[0].messages[-1]["data"]["state"] == "ERROR"


@pytest_twisted.inlineCallbacks
def test_not_logged_in_fails_with_a_clear_error(real: RealRuns) -> Any:
    result = yield real.run_prompt("fake:not_logged_in")
    assert result["outcome"] == "failed"
    assert result["error"] == "Not logged in · Please run /login"


@pytest_twisted.inlineCallbacks
def test_five_megabyte_line_delivered_intact(real: RealRuns) -> Any:
    result = yield real.run_prompt("fake:big_line:5000000")
    assert result["outcome"] == "success"
    big = [m for m in real.followers[1].claude_messages() if m["type"] == "user"]
    content = json.dumps(big[0])
    assert "x" * 5_000_000 in content
    log = real.agent.registry.history(real.project.id).path
    assert max(len(line) for line in log.read_bytes().splitlines()) > 5_000_000


@pytest_twisted.inlineCallbacks
def test_non_json_line_is_raw_output(real: RealRuns) -> Any:
    result = yield real.run_prompt("fake:non_json")
    assert result["outcome"] == "success"
    raw = [r["message"] for r in real.followers[0].records() if r["direction"] == "server"]
    assert {"type": "raw_output", "line": "this is not json {"} in raw


@pytest_twisted.inlineCallbacks
def test_lingering_after_result_is_stopped_and_succeeds(real: RealRuns) -> Any:
    result = yield real.run_prompt("fake:linger")
    assert result["outcome"] == "success"
    assert result["duration_ms"] >= 500  # waited kill_grace before stopping it


@pytest_twisted.inlineCallbacks
def test_a_follower_that_leaves_mid_run_does_not_stop_it(real: RealRuns) -> Any:
    first_part = real.followers[1].wait_for("agent_message")
    done = real.run_prompt("fake:slow:3:0.2", watcher=real.followers[0])
    yield first_part
    real.agent.hub.disconnect(real.followers[1])
    result = yield done
    assert result["outcome"] == "success"
    parts = [m for m in real.followers[0].claude_messages() if m["type"] == "assistant"]
    assert len(parts) == 3


@pytest_twisted.inlineCallbacks
def test_two_hundred_runs_leave_no_zombie_and_no_descriptor(real: RealRuns) -> Any:
    result = yield real.run_prompt("warm up")  # first-use allocations are not leaks
    gc.collect()  # descriptors other tests left to the garbage collector go first
    fds_before = len(os.listdir("/proc/self/fd"))
    for i in range(200):
        result = yield real.run_prompt(f"run {i}")
        assert result["outcome"] == "success", result
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= fds_before
    assert zombies_of(os.getpid()) == []
    assert real.agent.registry.get(real.project.id).last_seq == 201 * 6


def zombies_of(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            fields = raw[raw.rfind(b")") + 2 :].split()
            if fields[0] == b"Z" and int(fields[1]) == parent:
                found.append(int(entry))
    return found


@pytest_twisted.inlineCallbacks
def test_version_probe(real: RealRuns) -> Any:
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    version = yield probe_version(reactor, str(FAKE_CLAUDE), env)
    assert version == "2.1.197 (Claude Code)"
    hanging = real.tmp / "hanging-claude"
    hanging.write_text("#!/bin/sh\nexec sleep 60\n")
    hanging.chmod(0o755)
    version = yield probe_version(reactor, str(hanging), env, timeout=0.3)
    assert version is None
    status = real.agent.claude.status()
    assert (status["available"], status["path"]) == (True, str(FAKE_CLAUDE))


@pytest_twisted.inlineCallbacks
def test_a_version_probe_still_running_ends_with_the_server(real: RealRuns) -> Any:
    """A stop right after start: the hanging ``--version`` probe is killed and reaped."""
    hanging = real.tmp / "hanging-claude"
    hanging.write_text("#!/bin/sh\nexec sleep 60\n")
    hanging.chmod(0o755)
    probe = ClaudeProbe(reactor, str(hanging), {"PATH": os.environ.get("PATH", "")})
    assert probe.status()["version"] is None  # starts the probe
    pids = [p.process.pid for p in probe._running if p.process is not None]
    assert len(pids) == 1 and alive(pids[0])
    yield probe.stop()
    assert not alive(pids[0])
    assert probe._running == set()
    probe.status()
    assert probe._running == set()  # no new probe once stopped
