"""Every request type, with odd values in every field, against the real daemon (SPEC §4).

Whatever a client sends, the answer is a well-formed frame with a code the client can act
on (INVALID_MESSAGE, INVALID_PATH, PROJECT_NOT_FOUND...), never INTERNAL_ERROR, and the
server log holds no traceback. One daemon serves the whole module; each example is sent
and followed by a ``health`` barrier, and every frame up to the barrier's reply is
checked, broadcasts included. Runs use the fake claude's ``echo`` scenario (prompts never
start with ``fake:``), so a run that does start ends by itself within moments.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pocket_agent.wire.envelope import MAX_REQUEST_ID_LENGTH
from pocket_agent.wire.errors import ErrorCode
from pocket_agent.wire.requests import REQUEST_TYPES
from tests.fake_claude import FAKE_CLAUDE

from .daemon import Client, Daemon, DaemonPool, connect

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

FUZZ = settings(
    # Bounded (the module takes ~25 s on 2 cores); FUZZ_EXAMPLES=5000 to hunt harder.
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BARRIER_TIMEOUT = 15.0
MAX_FRAME = 1_000_000  # below limits.max_message_size (1 MiB)
CODES = {code.value for code in ErrorCode} | {"PERMISSION_NOT_FOUND"}
# Enough headroom that no example is refused for speed: the rate limit is not under test.
CONFIG = f"""\
claude:
  binary: {json.dumps(str(FAKE_CLAUDE))}
limits:
  messages_per_second: 1000000
  executions_per_minute: 1000000
timeouts:
  execution: 20s
"""


# ------------------------------------------------------------------------ the daemon


class Fuzzed:
    """The shared daemon, its project, and the paths worth trying on it."""

    def __init__(self, daemon: Daemon, home: Path, paths: list[str]) -> None:
        self.daemon = daemon
        self.home = home
        # The crashers and their relatives, and any name at all below HOME (with
        # create: true, a few of them become projects, up to limits.max_projects).
        self.paths = mostly(
            st.sampled_from(paths), st.text(max_size=30).map(lambda t: f"{home}/{t}")
        )
        self.clients: list[Client] = []
        self.ids = itertools.count()
        owner = self.client()
        path = home / "app"
        path.mkdir()
        reply = owner.request("project_create", {"path": str(path)}, request_id="setup")
        assert reply["type"] == "project_state", reply
        self.project_id: str = reply["project_id"]

    def client(self) -> Client:
        client = connect(self.daemon)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()


def odd_paths(home: Path, root: Path) -> list[str]:
    """Directories that once made the daemon crash, and their relatives."""
    latin = os.fsencode(home) + b"/\xff\xfe"
    os.mkdir(latin)
    os.symlink(latin, os.fsencode(home / "latin"))
    (home / "loop").symlink_to(home / "loop")
    (home / "file").write_text("a file")
    locked = home / "locked"
    locked.mkdir()
    locked.chmod(0)
    h = str(home)
    return [
        "/proc/1/cwd",
        "/proc/self/cwd",
        "/proc/self/root",
        "/",
        "/etc",
        "/dev/null",
        str(root),
        str(root / "data"),
        (h + ("/" + "p" * 200) * 21)[:4100],
        h + "/" + "c" * 300,
        h + "/" + "é" * 200,
        h + "/latin",
        h + "/latin/new",
        h + "/loop",
        h + "/loop/new",
        h + "/file",
        h + "/file/new",
        h + "/locked/new",
        h + "/./app/.",
        h + "//app//",
        h + "/app/../app",
        h + "/\u202eppa",
        h + "/new\x00",
        h + "/new\n",
        "~",
        "app",
        "",
        h + "/made",  # these two may become projects (create: true)
        h + "/made-too/deeper",
    ]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    base = tmp_path_factory.mktemp("fuzz")
    root, home = base / "root", base / "home"
    root.mkdir()
    home.mkdir()
    (root / "config.yaml").write_text(CONFIG)
    paths = odd_paths(home, root)
    pool = DaemonPool()
    fuzzed = None
    try:
        fuzzed = Fuzzed(pool.start(root, home), home, paths)
        yield fuzzed
    finally:
        if fuzzed is not None:
            fuzzed.close()
        pool.close()
        (home / "locked").chmod(0o700)


# ------------------------------------------------------------------------ the values

huge_ints = st.sampled_from(
    [2**31, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**100, -(10**300), 10**4000]
)
numbers = (
    st.integers()
    | huge_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([-1, 0, 1, 0.5, -0.0, 1e308, math.nan])
)
odd_text = st.text(max_size=40) | st.text(
    st.characters(categories=("Cc", "Cf", "Cs", "Co", "Zl", "Zp", "Mn", "So")), max_size=20
)
huge_text = st.builds(
    lambda c, n: c * n,
    st.sampled_from(["x", "é", "\U0001f600", "/"]),
    st.sampled_from([129, 256, 4097, 40_000]),
)
numeric_text = st.sampled_from(
    ["0", "1", "-1", "1e3", "NaN", "Infinity", "0x10", " 5", "true", "null"]
)
scalars = st.none() | st.booleans() | numbers | odd_text | numeric_text
odd = (
    st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
        max_leaves=12,
    )
    | huge_text
)


zones = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
edge_moments = st.sampled_from(
    [datetime.min, datetime.max, datetime(1, 1, 1, 0, 30), datetime(9999, 12, 31, 23, 30)]
)
moments = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone).isoformat(),
    edge_moments | st.datetimes(),
    zones,
)
times = (
    moments
    | moments.map(lambda t: t.replace("+00:00", "Z"))
    | st.datetimes().map(datetime.isoformat)
)
seqs = st.integers(0, 5) | st.integers(0, 2**80)


def mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` three times in four: one_of flattens, so ``valid | odd`` would give
    ``valid`` one branch among odd's many, and little would get past parsing."""
    return st.integers(0, 3).flatmap(lambda i: valid if i else other)


def field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly well-typed values (to get past parsing), often odd ones."""
    return mostly(valid, odd)


def data_of(fields: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: field(v) for k, v in fields.items()})


prompts = st.text(min_size=1, max_size=60).filter(lambda p: not p.startswith("fake:"))


def fields_of(paths: st.SearchStrategy[str]) -> dict[str, dict[str, st.SearchStrategy[Any]]]:
    """The fields of each request (wire/requests.py), valid values first."""
    option_values: dict[str, st.SearchStrategy[Any]] = {
        "model": st.sampled_from(["sonnet", "opus", "-x", "a\x00b"]),
        "fallback_model": st.sampled_from(["haiku", "--help"]),
        "permission_mode": st.sampled_from(["default", "plan", "bypassPermissions", "yolo"]),
        "allowed_tools": st.lists(st.sampled_from(["Read", "Bash(git *)", "-p", ""]), max_size=3),
        "disallowed_tools": st.lists(st.sampled_from(["WebFetch", "--x"]), max_size=3),
        "append_system_prompt": st.text(max_size=20),
        "add_dirs": st.lists(paths, min_size=1, max_size=3),
        "mcp_config": st.sampled_from(["{}", '{"mcpServers": {}}'])
        | st.dictionaries(odd_text, odd, max_size=2),
        "dangerously_skip_permissions": st.booleans(),
        "approvals": st.sampled_from(["phone", "off", "PHONE"]),
    }
    options = st.one_of(
        # add_dirs alone, so runs that start are rare and the path policy is reached often
        st.fixed_dictionaries({"add_dirs": option_values["add_dirs"]}),
        st.fixed_dictionaries({}, optional={k: field(v) for k, v in option_values.items()}),
        st.dictionaries(odd_text, odd, max_size=3),
    )
    return {
        "health": {},
        "health_check": {},
        "project_list": {},
        "project_create": {"path": paths, "create": st.booleans()},
        "project_delete": {},
        "project_join": {"after_seq": seqs},
        "project_leave": {},
        "execute": {"prompt": prompts, "options": options},
        "agent_kill": {},
        "agent_new_session": {},
        "agent_interrupt": {},
        "permission_response": {
            "permission_id": st.sampled_from(["", "p-1", "00000000-0000-0000-0000-000000000000"])
            | st.text(max_size=40),
            "behavior": st.sampled_from(["allow", "deny", "ALLOW", ""]),
            "message": st.text(max_size=20),
            "updated_input": st.dictionaries(odd_text, odd, max_size=3),
            "answers": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=2),
            "remember": st.booleans(),
        },
        "project_settings": {
            "allowed_tools": st.lists(
                st.sampled_from(["Read", "Bash(git:*)", "-p", "", "a\nb", "x" * 300]), max_size=3
            ),
            "approvals": st.sampled_from(["phone", "off", "never"]),
        },
        "get_messages": {
            "since": times,
            "after_seq": seqs,
            "before_seq": seqs,
            "limit": st.integers(-2, 1002),
            "direction": st.sampled_from(["client", "claude", "server", "all", "ALL"]),
        },
    }


def test_every_request_type_is_fuzzed() -> None:
    assert set(fields_of(st.just("/"))) == REQUEST_TYPES


# ------------------------------------------------------------------------ the checks


SEEN: collections.Counter[str] = collections.Counter()  # frame types and error codes


def check_frame(frame: Any, sent: Any) -> None:
    assert isinstance(frame, dict), frame
    assert isinstance(frame.get("type"), str) and frame["type"], frame
    SEEN[frame["type"]] += 1
    if frame["type"] == "error" and isinstance(frame.get("data"), dict):
        SEEN[str(frame["data"].get("code"))] += 1
    for key in ("project_id", "request_id"):
        assert key not in frame or isinstance(frame[key], str), frame
    if frame["type"] != "error":
        return
    data = frame.get("data")
    assert isinstance(data, dict), frame
    assert data.get("code") in CODES, frame
    assert isinstance(data.get("message"), str) and data["message"], frame
    assert data["code"] != ErrorCode.INTERNAL_ERROR, (sent, frame)
    details = data.get("details")
    assert details is None or isinstance(details, dict), frame
    if data["code"] == ErrorCode.INVALID_MESSAGE:
        assert isinstance(details, dict) and isinstance(details.get("field"), str), frame
    if data["code"] == ErrorCode.INVALID_PATH:
        assert isinstance(details, dict), frame
        assert isinstance(details.get("path"), str), frame
        assert isinstance(details.get("reason"), str) and details["reason"], frame


def exchange(fuzzed: Fuzzed, client: Client, text: str, request_id: str | None) -> None:
    """Send one frame, then a barrier; check every frame up to the barrier's reply, and
    up to the end of any run the frame started (so the next example finds it idle)."""
    barrier = f"barrier-{next(fuzzed.ids)}"
    client.send_raw(text)
    client.send("health", request_id=barrier)
    answered = request_id is None
    started: set[str] = set()
    finished: set[str] = set()
    barrier_seen = False
    while not barrier_seen or started - finished:
        frame = client.expect(lambda m: True, timeout=BARRIER_TIMEOUT)
        check_frame(frame, text[:2000])
        data: dict[str, Any] = frame.get("data") or {}
        if frame["type"] == "execute" and frame.get("request_id") == request_id:
            started.add(data["run_id"])
        if frame["type"] == "execution_finished":
            finished.add(data["run_id"])
        if frame.get("request_id") == barrier:
            assert frame["type"] == "health_status", frame
            barrier_seen = True
        answered = answered or frame.get("request_id") == request_id
    assert answered, f"no reply echoing {request_id!r} to {text[:2000]!r}"


def send(fuzzed: Fuzzed, client: Client, mtype: Any, data: Any, top: Mapping[str, Any]) -> None:
    frame: dict[str, Any] = {"type": mtype, **top}
    if data is not ...:
        frame["data"] = data
    text = json.dumps(frame)
    # Larger frames are closed with 1009 (SPEC §4): another test's business.
    assume(len(text.encode("utf-8", "surrogatepass")) < MAX_FRAME)
    rid = top.get("request_id")
    echoed = isinstance(rid, str) and len(rid) <= MAX_REQUEST_ID_LENGTH
    exchange(fuzzed, client, text, rid if echoed else None)


def project_ids(fuzzed: Fuzzed, real: bool) -> st.SearchStrategy[Any]:
    known = [str(uuid.uuid4()), "x" * 129, " "]
    if real:
        known.append(fuzzed.project_id)
    return st.sampled_from(known) | odd


# ------------------------------------------------------------------------ the fuzz


@pytest.fixture(scope="module")
def client(fuzzed: Fuzzed) -> Client:
    return fuzzed.client()


@pytest.fixture(scope="module")
def stranger(fuzzed: Fuzzed) -> Client:
    """Never joins the real project, so ``project_delete`` cannot fall back to it."""
    return fuzzed.client()


def crashers(fuzzed: Fuzzed) -> dict[str, list[dict[str, Any]]]:
    """The inputs that once answered INTERNAL_ERROR, tried first every time."""
    h = str(fuzzed.home)
    long_path = (h + ("/" + "p" * 200) * 21)[:4100]
    return {
        "get_messages": [
            {"since": "0001-01-01T00:00:00+01:00"},
            {"since": "9999-12-31T23:59:59-01:00"},
        ],
        "project_create": [
            {"path": "/proc/1/cwd"},
            {"path": long_path, "create": True},
            {"path": h + "/" + "c" * 300, "create": True},
            {"path": h + "/latin"},
            {"path": h + "/latin/new", "create": True},
        ],
        "execute": [
            {"prompt": "hi", "options": {"add_dirs": [h + "/latin"]}},
            {"prompt": "hi", "options": {"add_dirs": [long_path]}},
            {"prompt": "hi", "options": {"add_dirs": ["/proc/1/cwd"]}},
        ],
    }


@pytest.mark.parametrize("mtype", sorted(REQUEST_TYPES - {"project_delete"}))
def test_fields(fuzzed: Fuzzed, client: Client, mtype: str) -> None:
    def fuzz(data: dict[str, Any], pid: Any, rid: str) -> None:
        top: dict[str, Any] = {"request_id": rid}
        if pid is not None:
            top["project_id"] = pid
        send(fuzzed, client, mtype, data, top)

    for data in crashers(fuzzed).get(mtype, []):
        fuzz = example(data=data, pid=fuzzed.project_id, rid="crasher")(fuzz)
    given(
        data=data_of({**fields_of(fuzzed.paths)[mtype], "project_id": project_ids(fuzzed, True)}),
        pid=mostly(st.none() | st.just(fuzzed.project_id), project_ids(fuzzed, True)),
        rid=st.integers(0, 2**32).map(lambda i: f"r-{i}"),
    )(FUZZ(fuzz))()


def test_project_delete(fuzzed: Fuzzed, stranger: Client) -> None:
    @FUZZ
    @given(
        data=st.fixed_dictionaries({}, optional={"project_id": project_ids(fuzzed, False)}),
        pid=st.none() | project_ids(fuzzed, False),
    )
    def fuzz(data: dict[str, Any], pid: Any) -> None:
        top: dict[str, Any] = {"request_id": "d"}
        if pid is not None:
            top["project_id"] = pid
        send(fuzzed, stranger, "project_delete", data, top)

    fuzz()
    assert fuzzed.project_id in {p["id"] for p in projects(stranger)}


def test_envelope(fuzzed: Fuzzed, client: Client) -> None:
    """Odd top-level fields, and odd ``data`` that is not an object."""
    types = st.sampled_from(sorted(REQUEST_TYPES - {"project_delete", "execute"}))

    @FUZZ
    @given(
        mtype=types | odd,
        data=st.just(...) | odd,
        top=st.dictionaries(
            st.sampled_from(["project_id", "request_id", "type", "extra", "data2"]),
            odd,
            max_size=3,
        ),
    )
    def fuzz(mtype: Any, data: Any, top: dict[str, Any]) -> None:
        if mtype in ("project_delete", "execute"):
            mtype = "health"
        top.pop("type", None)
        send(fuzzed, client, mtype, data, top)

    fuzz()


def test_raw_frames(fuzzed: Fuzzed, client: Client) -> None:
    @FUZZ
    @given(
        text=st.text(max_size=200)
        | st.sampled_from(['{"type":', "[]", "null", '{"type":"health"', '{"type":1e999}'])
        | odd.map(json.dumps)
    )
    def fuzz(text: str) -> None:
        exchange(fuzzed, client, text, None)

    fuzz()


# ------------------------------------------------------------------------ afterwards


def projects(client: Client) -> list[dict[str, Any]]:
    reply = client.request("project_list", request_id="list")
    assert reply["type"] == "project_list_response", reply
    result: list[dict[str, Any]] = reply["data"]["projects"]
    return result


def test_after_the_fuzz(fuzzed: Fuzzed) -> None:
    """Last in the module: health still answers, no run is left going, and the log holds
    no traceback (nor any error-level entry)."""
    client = fuzzed.client()
    for project in projects(client):
        if project["state"] == "EXECUTING":
            pid: str = project["id"]
            client.request("agent_kill", project_id=pid, request_id="kill")

            def finished(m: dict[str, Any], pid: str = pid) -> bool:
                return m.get("type") == "execution_finished" and m.get("project_id") == pid

            client.expect(finished, timeout=BARRIER_TIMEOUT)
    # Not vacuous: examples got past parsing, to the path policy, history and runs.
    for reached in ("INVALID_PATH", "PROJECT_NOT_FOUND", "message_history", "execute"):
        assert SEEN[reached] > 0, (reached, SEEN)
    health = client.request("health", request_id="last")
    assert health["type"] == "health_status", health
    assert health["data"]["executions"]["active"] == 0, health
    log = fuzzed.daemon.root / "server.log"
    bad = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        entry = json.loads(line)
        if (
            "traceback" in entry
            or "Traceback" in line
            or entry.get("level") in ("error", "critical")
        ):
            bad.append(entry)
    assert bad == [], json.dumps(bad, indent=1)[:20_000]
