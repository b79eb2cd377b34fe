"""History: rotation, compression, expiry, queries and recovery, in memory time."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent

from pocket_agent.config import LogRotation
from pocket_agent.history import CURRENT, INDEX, History, Query, Repair, encode_record
from pocket_agent.history.segments import CHUNK_RECORDS

DIRECTIONS = ("client", "claude", "server")
DAY = 86400.0


def make(
    tmp: Path,
    clock: Clock | None = None,
    size: int = 10**9,
    count: int = 10**9,
    compress: bool = False,
    max_age: float = 0,
    run_in_thread: Any = None,
) -> History:
    history = History(
        tmp / "logs",
        clock or Clock(),
        LogRotation(size=size, count=count, compress=compress, max_age=max_age),
        tmp / "corrupted",
        run_in_thread,
    )
    history.open()
    return history


def fill(history: History, n: int, clock: Clock | None = None) -> list[dict[str, Any]]:
    written = []
    for i in range(n):
        direction = DIRECTIONS[i % 3]
        record = history.append("run-1", direction, {"type": "t", "i": i, "pad": "x" * (i % 50)})
        written.append(json.loads(record.line))
        if clock is not None:
            clock.advance(1)
    return written


def held_in(jobs: list[tuple[Any, tuple[Any, ...], Deferred[Any]]]) -> Any:
    """A run_in_thread that keeps each job for the test to run and finish by hand."""

    def run_in_thread(f: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        jobs.append((f, args, d))
        return d

    return run_in_thread


def seqs(lines: list[bytes]) -> list[int]:
    return [json.loads(line)["seq"] for line in lines]


# ------------------------------------------------------------------ invariants


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(min_value=0, max_value=120),
    count=st.integers(min_value=1, max_value=40),
    compress=st.booleans(),
    limits=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=5),
    direction=st.sampled_from([None, *DIRECTIONS]),
)
def test_paging_reads_every_record_exactly_once(
    tmp_path_factory: pytest.TempPathFactory,
    n: int,
    count: int,
    compress: bool,
    limits: list[int],
    direction: str | None,
) -> None:
    tmp = tmp_path_factory.mktemp("h")
    history = make(tmp, count=count, compress=compress)
    written = fill(history, n)
    expected = [r["seq"] for r in written if direction in (None, r["direction"])]

    # Forward, by after_seq, with changing page sizes.
    got: list[int] = []
    after = 0
    for i in range(n + 2):
        page = history.query(
            Query(after_seq=after, limit=limits[i % len(limits)], direction=direction)
        )
        got += seqs(page.lines)
        if not page.has_more:
            break
        assert page.last_seq is not None
        after = page.last_seq
    assert got == expected

    # Backward, by before_seq, newest first pages.
    got = []
    before: int | None = None
    for i in range(n + 2):
        page = history.query(
            Query(before_seq=before, limit=limits[i % len(limits)], direction=direction)
        )
        got = seqs(page.lines) + got
        if not page.has_more:
            break
        before = page.first_seq
    assert got == expected
    assert history.last_seq == n
    # Every stored line is a whole record, in seq order, in exactly one file.
    assert [json.loads(line)["seq"] for line in history.iter_all()] == list(range(1, n + 1))
    history.close()


def test_rotation_by_count_names_files_in_utc_and_never_splits(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(1_764_270_000)  # 2025-11-27T19:00:00Z
    history = make(tmp_path, clock, count=10)
    fill(history, 25)
    names = sorted(p.name for p in (tmp_path / "logs").glob("messages_*.jsonl"))
    assert names == [
        "messages_2025-11-27_19-00-00-2.jsonl",
        "messages_2025-11-27_19-00-00.jsonl",
        "messages_current.jsonl",
    ]
    for name in names:
        for line in (tmp_path / "logs" / name).read_bytes().splitlines():
            json.loads(line)
    index = json.loads((tmp_path / "logs" / INDEX).read_text())
    assert [(s["first_seq"], s["last_seq"], s["records"]) for s in index["segments"]] == [
        (1, 10, 10),
        (11, 20, 10),
    ]


def test_rotation_by_size(tmp_path: Path) -> None:
    history = make(tmp_path, size=2000)
    fill(history, 40)
    rotated = [s for s in history.segments]
    assert len(rotated) >= 2
    for segment in rotated:
        assert (tmp_path / "logs" / segment.name).stat().st_size >= 2000
        assert (tmp_path / "logs" / segment.name).stat().st_size < 2000 + 200


def test_compressed_files_are_plain_gzip(tmp_path: Path) -> None:
    history = make(tmp_path, count=CHUNK_RECORDS * 2 + 10, compress=True)
    written = fill(history, CHUNK_RECORDS * 2 + 15)
    [segment] = history.segments
    assert segment.name.endswith(".jsonl.gz")
    assert len(segment.chunks) == 3
    assert not (tmp_path / "logs" / segment.name.removesuffix(".gz")).exists()
    with gzip.open(tmp_path / "logs" / segment.name) as f:  # what zcat sees
        lines = f.read().splitlines()
    assert [json.loads(line) for line in lines] == written[: CHUNK_RECORDS * 2 + 10]


def test_compression_runs_off_the_reactor_and_reads_go_on_meanwhile(tmp_path: Path) -> None:
    jobs: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []
    history = make(tmp_path, count=10, compress=True, run_in_thread=held_in(jobs))
    fill(history, 25)
    assert len(jobs) == 1  # one at a time
    assert seqs(history.query(Query(after_seq=0, limit=30)).lines) == list(range(1, 26))
    f, args, d = jobs.pop()
    d.callback(f(*args))  # the "thread" finishes
    assert history.segments[0].compressed
    assert not (tmp_path / "logs" / history.segments[0].name.removesuffix(".gz")).exists()
    assert len(jobs) == 1  # the next one starts
    f, args, d = jobs.pop()
    d.callback(f(*args))
    assert all(s.compressed for s in history.segments)
    assert seqs(history.query(Query(after_seq=0, limit=30)).lines) == list(range(1, 26))


def test_old_rotated_files_expire(tmp_path: Path) -> None:
    clock = Clock()
    history = make(tmp_path, clock, count=10, max_age=30 * DAY)
    fill(history, 10)  # one rotated file, last record at t=0
    clock.advance(29 * DAY)
    fill(history, 10)  # rotated at t=29d: expiry runs, nothing old enough yet
    assert len(history.segments) == 2
    clock.advance(2 * DAY)
    fill(history, 10)
    assert [s.first_seq for s in history.segments] == [11, 21]
    assert len(list((tmp_path / "logs").glob("messages_*.jsonl"))) == 3  # 2 rotated + current
    assert history.query(Query(after_seq=0, limit=5)).first_seq == 11


# ---------------------------------------------------------------------- queries


def test_newest_first_page_and_has_more(tmp_path: Path) -> None:
    history = make(tmp_path, count=7)
    fill(history, 30)
    page = history.query(Query(limit=5))
    assert (seqs(page.lines), page.has_more, page.first_seq, page.last_seq) == (
        [26, 27, 28, 29, 30],
        True,
        26,
        30,
    )
    page = history.query(Query(before_seq=4, limit=5))
    assert (seqs(page.lines), page.has_more) == ([1, 2, 3], False)
    assert page.project_last_seq == 30


def test_since_is_exclusive(tmp_path: Path) -> None:
    clock = Clock()
    history = make(tmp_path, clock, count=4)
    written = fill(history, 12, clock)
    since = written[5]["timestamp"]
    page = history.query(Query(since=since, limit=3))
    assert seqs(page.lines) == [7, 8, 9] and page.has_more
    page = history.query(Query(since=since, after_seq=9, limit=10))
    assert seqs(page.lines) == [10, 11, 12] and not page.has_more


def test_after_seq_with_before_seq_is_a_range(tmp_path: Path) -> None:
    history = make(tmp_path, count=5)
    fill(history, 20)
    page = history.query(Query(after_seq=3, before_seq=9, limit=100))
    assert (seqs(page.lines), page.has_more) == ([4, 5, 6, 7, 8], False)


def test_empty_history(tmp_path: Path) -> None:
    history = make(tmp_path)
    for q in (Query(), Query(after_seq=0), Query(before_seq=5)):
        page = history.query(q)
        assert (page.lines, page.has_more, page.first_seq, page.last_seq) == (
            [],
            False,
            None,
            None,
        )


# --------------------------------------------------------------------- restarts


def test_seq_continues_after_reopen_with_and_without_index(tmp_path: Path) -> None:
    history = make(tmp_path, count=6, compress=True)
    fill(history, 20)
    history.close()
    again = make(tmp_path, count=6, compress=True)
    assert again.last_seq == 20
    assert again.append(None, "server", {"type": "x"}).seq == 21
    again.close()
    (tmp_path / "logs" / INDEX).unlink()
    third = make(tmp_path, count=6, compress=True)
    assert third.repair.index_rebuilt
    assert third.last_seq == 21
    assert seqs(list(third.iter_all())) == list(range(1, 22))
    assert seqs(third.query(Query(after_seq=5, limit=3)).lines) == [6, 7, 8]


def test_stale_index_is_rebuilt(tmp_path: Path) -> None:
    history = make(tmp_path, count=5)
    fill(history, 12)
    history.close()
    stale = (tmp_path / "logs" / INDEX).read_text()
    again = make(tmp_path, count=5)
    fill(again, 5)  # another rotation the stale index does not know
    again.close()
    (tmp_path / "logs" / INDEX).write_text(stale)
    third = make(tmp_path, count=5)
    assert third.repair.index_rebuilt
    assert seqs(list(third.iter_all())) == list(range(1, 18))


def test_torn_last_line_is_cut_and_saved(tmp_path: Path) -> None:
    history = make(tmp_path)
    fill(history, 5)
    history.close()
    with open(tmp_path / "logs" / CURRENT, "ab") as f:
        f.write(b'{"seq":6,"timestamp":"2026-01-01T00:00:00.000Z","run_id":null,"dir')
    again = make(tmp_path)
    assert again.repair.torn_bytes == 66
    assert again.last_seq == 5
    [saved] = (tmp_path / "corrupted").iterdir()
    assert saved.read_bytes().startswith(b'{"seq":6')
    assert again.append(None, "server", {"type": "x"}).seq == 6
    assert seqs(list(again.iter_all())) == [1, 2, 3, 4, 5, 6]


def test_garbage_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    history = make(tmp_path)
    fill(history, 3)
    history.close()
    with open(tmp_path / "logs" / CURRENT, "ab") as f:
        f.write(b"garbage that is not a record\n")
    again = make(tmp_path)
    assert again.repair.invalid_lines == 1
    fill(again, 2)
    page = again.query(Query(after_seq=0, limit=10))
    assert seqs(page.lines) == [1, 2, 3, 4, 5]


def test_stray_tmp_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / ".messages_x.jsonl.gz.tmp").write_bytes(b"half")
    history = make(tmp_path)
    assert history.repair.tmp_removed == 1
    assert not (tmp_path / "logs" / ".messages_x.jsonl.gz.tmp").exists()


def test_interrupted_compression_keeps_the_plain_file(tmp_path: Path) -> None:
    history = make(tmp_path, count=5)
    fill(history, 7)
    history.close()
    [segment] = history.segments
    plain = tmp_path / "logs" / segment.name
    (tmp_path / "logs" / (segment.name + ".gz")).write_bytes(
        gzip.compress(plain.read_bytes()[:10])
    )
    again = make(tmp_path, count=5)
    assert not (tmp_path / "logs" / (segment.name + ".gz")).exists()
    assert seqs(list(again.iter_all())) == list(range(1, 8))


def test_chunk_hints_survive_restarts_and_bad_hints_are_ignored(tmp_path: Path) -> None:
    history = make(tmp_path)
    fill(history, CHUNK_RECORDS * 2 + 3)
    history.close()
    hints = (tmp_path / "logs" / "current.chunks").read_text().splitlines()
    assert [h.split()[0] for h in hints] == [
        "1",
        str(CHUNK_RECORDS + 1),
        str(2 * CHUNK_RECORDS + 1),
    ]
    again = make(tmp_path)
    assert seqs(again.query(Query(after_seq=CHUNK_RECORDS + 5, limit=3)).lines) == [
        CHUNK_RECORDS + 6,
        CHUNK_RECORDS + 7,
        CHUNK_RECORDS + 8,
    ]
    again.close()
    (tmp_path / "logs" / "current.chunks").write_text("9 x 999999999\n")
    third = make(tmp_path)
    assert seqs(third.query(Query(before_seq=3, limit=5)).lines) == [1, 2]
    assert third.append(None, "server", {}).seq == CHUNK_RECORDS * 2 + 4


def test_fsync_within_a_second_while_streaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    clock = Clock()
    history = make(tmp_path, clock)
    synced.clear()
    fill(history, 3)
    assert synced == []
    clock.advance(1)
    assert len(synced) == 1
    fill(history, 1)
    clock.advance(1)
    assert len(synced) == 2


# ------------------------------------------------------- found in review (regressions)


def test_a_failed_append_leaves_no_trace_and_no_repeated_seq(tmp_path: Path) -> None:
    history = make(tmp_path)
    fill(history, 2)
    real = history._file
    assert real is not None

    class HalfThenFull:
        def __init__(self) -> None:
            self.calls = 0

        def write(self, data: Any) -> int:
            self.calls += 1
            if self.calls == 1:
                return real.write(bytes(data)[:10])
            raise OSError(28, "No space left on device")

        def fileno(self) -> int:
            return real.fileno()

    history._file = HalfThenFull()  # type: ignore[assignment]
    with pytest.raises(OSError):
        history.append(None, "server", {"type": "lost"})
    history._file = real
    assert history.append(None, "server", {"type": "kept"}).seq == 3
    lines = (tmp_path / "logs" / CURRENT).read_bytes().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]


def test_seq_never_restarts_even_when_everything_expired(tmp_path: Path) -> None:
    clock = Clock()
    history = make(tmp_path, clock, count=2, max_age=30 * DAY)
    fill(history, 2)  # rotated at once: the current file is empty
    history.close()
    clock.advance(31 * DAY)
    again = make(tmp_path, clock, count=2, max_age=30 * DAY)
    assert again.segments == []
    again.close()
    third = make(tmp_path, clock, count=2, max_age=30 * DAY)
    assert third.append(None, "server", {}).seq == 3


def test_pages_are_capped_in_bytes(tmp_path: Path) -> None:
    history = make(tmp_path)
    for _ in range(12):
        history.append(None, "claude", {"type": "user", "blob": "x" * 500_000})
    page = history.query(Query(limit=1000))
    assert page.has_more
    assert sum(len(line) for line in page.lines) <= 4 * 1024 * 1024
    assert page.last_seq == 12  # the newest are kept
    forward = history.query(Query(after_seq=0, limit=1000))
    assert forward.has_more and forward.first_seq == 1
    single = history.query(Query(after_seq=0, limit=1))
    assert len(single.lines) == 1


def test_fsync_interval_zero_syncs_every_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    history = History(
        tmp_path / "logs",
        Clock(),
        LogRotation(size=10**9, count=10**9, compress=False, max_age=0, fsync_interval=0),
        tmp_path / "corrupted",
    )
    history.open()
    synced.clear()
    fill(history, 3)
    assert len(synced) == 3


# ---------------------------------------------------- found in the second review


def test_queries_work_between_compression_and_its_installation(tmp_path: Path) -> None:
    jobs: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []
    history = make(tmp_path, count=10, compress=True, run_in_thread=held_in(jobs))
    fill(history, 15)
    f, args, d = jobs.pop()
    compressed = f(*args)  # the thread has finished; the reactor has not heard yet
    assert seqs(history.query(Query(after_seq=0, limit=20)).lines) == list(range(1, 16))
    assert seqs(history.query(Query(limit=20)).lines) == list(range(1, 16))
    d.callback(compressed)
    assert seqs(history.query(Query(after_seq=0, limit=20)).lines) == list(range(1, 16))


def test_a_failed_compression_leaves_the_file_readable_and_goes_on(tmp_path: Path) -> None:
    jobs: list[Deferred[Any]] = []

    def run_in_thread(f: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        jobs.append(d)
        return d

    history = make(tmp_path, count=5, compress=True, run_in_thread=run_in_thread)
    fill(history, 11)  # two rotated files
    jobs.pop().errback(OSError(28, "No space left on device"))
    assert len(jobs) == 1  # it moved on to the next file
    assert seqs(list(history.iter_all())) == list(range(1, 12))


def truncate_gz(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_gzip_file_neither_crashes_start_up_nor_queries(tmp_path: Path) -> None:
    history = make(tmp_path, count=CHUNK_RECORDS * 3, compress=True)
    fill(history, CHUNK_RECORDS * 3 + 5)
    history.close()
    [segment] = history.segments
    truncate_gz(tmp_path / "logs" / segment.name, 0.5)
    for page in (
        Query(limit=10),
        Query(after_seq=0, limit=1000),
        Query(before_seq=CHUNK_RECORDS * 3, limit=10),
    ):
        make(tmp_path, count=CHUNK_RECORDS * 3, compress=True).query(page)  # no exception
    (tmp_path / "logs" / INDEX).unlink()
    again = History(
        tmp_path / "logs",
        Clock(),
        LogRotation(size=10**9, count=CHUNK_RECORDS * 3, compress=True, max_age=0),
        tmp_path / "corrupted",
    )
    repair = again.open(full_check=True)
    assert repair.damaged_files == 1
    readable = seqs(list(again.iter_all()))
    assert readable[:CHUNK_RECORDS] == list(range(1, CHUNK_RECORDS + 1))  # before the damage
    assert readable[-5:] == list(range(CHUNK_RECORDS * 3 + 1, CHUNK_RECORDS * 3 + 6))
    assert (tmp_path / "corrupted" / f"{tmp_path.name}-{segment.name}").exists()
    assert again.append(None, "server", {}).seq == CHUNK_RECORDS * 3 + 6


def test_garbage_inside_a_gzip_member_is_not_fatal(tmp_path: Path) -> None:
    history = make(tmp_path, count=20, compress=True)
    fill(history, 25)
    [segment] = history.segments
    path = tmp_path / "logs" / segment.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    page = history.query(Query(limit=100))
    assert seqs(page.lines)[-5:] == [21, 22, 23, 24, 25]


def test_page_memory_is_bounded_by_the_page_not_the_limit(tmp_path: Path) -> None:
    import tracemalloc

    history = make(tmp_path)
    for _ in range(300):
        history.append(None, "claude", {"type": "user", "blob": "x" * 200_000})
    tracemalloc.start()
    page = history.query(Query(after_seq=0, limit=1000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert page.has_more and len(page.lines) < 30
    assert peak < 16 * 1024 * 1024  # 300 x 200 KB = 60 MB if it collected first


def test_a_failed_index_write_during_rotation_does_not_break_the_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pocket_agent.history.log as module  # rotate() looks write_index up there

    history = make(tmp_path, count=5)
    fill(history, 4)
    real = module.write_index
    calls = {"n": 0}

    def flaky(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        real(*args)

    monkeypatch.setattr(module, "write_index", flaky)
    fill(history, 6)  # the 5th record rotates, and the index write fails once
    assert history.last_seq == 10
    assert seqs(history.query(Query(after_seq=0, limit=20)).lines) == list(range(1, 11))
    history.close()
    assert seqs(list(make(tmp_path, count=5).iter_all())) == list(range(1, 11))


def test_filtered_queries_skip_chunks_without_that_direction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pocket_agent.history.query as module  # where queries look read_chunk up

    history = make(tmp_path, count=CHUNK_RECORDS * 4, compress=True)
    for _ in range(CHUNK_RECORDS * 4):
        history.append(None, "claude", {"type": "x"})
    history.append(None, "client", {"type": "user_prompt"})
    reads: list[int] = []
    real = module.read_chunk
    monkeypatch.setattr(module, "read_chunk", lambda *a: (reads.append(a[1]), real(*a))[1])
    page = history.query(Query(after_seq=0, limit=10, direction="client"))
    assert seqs(page.lines) == [CHUNK_RECORDS * 4 + 1]
    assert len(reads) == 1  # only the current file's chunk; the 4 claude-only chunks are skipped


def test_a_damaged_record_with_an_intact_header_is_not_served(tmp_path: Path) -> None:
    history = make(tmp_path)
    fill(history, 3)
    history.close()
    path = tmp_path / "logs" / CURRENT
    lines = path.read_bytes().splitlines()
    lines[1] = lines[1][:-5] + b"#####"
    path.write_bytes(b"\n".join(lines) + b"\n")
    again = make(tmp_path)
    page = again.query(Query(after_seq=0, limit=10))
    assert seqs(page.lines) == [1, 3]
    for line in page.lines:
        json.loads(line)


def test_hints_pointing_mid_line_are_ignored(tmp_path: Path) -> None:
    history = make(tmp_path)
    fill(history, 20)
    history.close()
    (tmp_path / "logs" / "current.chunks").write_text("7 2026-01-01T00:00:00.000Z 300\n")
    again = make(tmp_path)
    assert seqs(list(again.iter_all())) == list(range(1, 21))


def test_a_quiet_projects_current_file_expires_too(tmp_path: Path) -> None:
    clock = Clock()
    history = make(tmp_path, clock, max_age=30 * DAY)
    fill(history, 5)
    history.close()
    clock.advance(31 * DAY)
    again = make(tmp_path, clock, max_age=30 * DAY)
    assert list(again.iter_all()) == []
    assert again.append(None, "server", {}).seq == 6


def test_timestamps_never_go_back(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(1000)
    history = make(tmp_path, clock)
    first = history.append(None, "server", {})
    clock.rightNow = 10  # the wall clock steps back
    second = history.append(None, "server", {})
    assert second.timestamp >= first.timestamp


# ------------------------------------------------- files in logs/ that are not history


def seed_repair_loop(logs: Path) -> list[Path]:
    """The seed's "Repair Log Files" loop, ``cp f f.bak; jq -c . < f.bak > f``, on every
    plain log file; returns the copies it left."""
    copies = []
    for f in sorted(logs.glob("messages_*.jsonl")):
        bak = f.with_name(f.name + ".bak")
        bak.write_bytes(f.read_bytes())
        lines = [json.loads(line) for line in bak.read_bytes().splitlines()]
        f.write_bytes(
            b"".join(
                json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
                for line in lines
            )
        )
        copies.append(bak)
    return copies


def every_seq(history: History, limit: int = 1000) -> tuple[list[int], list[int]]:
    """All seqs paged forward (after_seq) and backward (before_seq), oldest first."""
    forward: list[int] = []
    after = 0
    while True:
        page = history.query(Query(after_seq=after, limit=limit))
        forward += seqs(page.lines)
        if not page.has_more:
            break
        assert page.last_seq is not None
        after = page.last_seq
    backward: list[int] = []
    before: int | None = None
    while True:
        page = history.query(Query(before_seq=before, limit=limit))
        backward = seqs(page.lines) + backward
        if not page.has_more:
            break
        before = page.first_seq
    return forward, backward


def contents(paths: list[Path]) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths}


@pytest.mark.parametrize("full_check", [False, True], ids=["start", "repair"])
def test_the_seeds_bak_copies_are_not_served_again(tmp_path: Path, full_check: bool) -> None:
    history = make(tmp_path, count=30)
    fill(history, 91)
    history.close()
    logs = tmp_path / "logs"
    assert len(list(logs.glob("messages_*.jsonl"))) == 4  # three rotated files + current
    copies = seed_repair_loop(logs)
    before = contents(copies)
    again = History(
        logs,
        Clock(),
        LogRotation(size=10**9, count=30, compress=False, max_age=0),
        tmp_path / "corrupted",
    )
    again.open(full_check=full_check)
    forward, backward = every_seq(again)
    assert forward == backward == list(range(1, 92))
    assert seqs(list(again.iter_all())) == list(range(1, 92))
    assert again.last_seq == 91
    assert again.append(None, "server", {}).seq == 92
    assert contents(copies) == before
    assert not again.repair.invalid_lines


def test_compression_leaves_operator_files_byte_identical(tmp_path: Path) -> None:
    history = make(tmp_path, count=10, compress=True)
    fill(history, 25)
    history.close()
    logs = tmp_path / "logs"
    current = (logs / CURRENT).read_bytes()
    rotated = sorted(logs.glob("messages_*.jsonl.gz"))
    plain = gzip.decompress(rotated[0].read_bytes())
    foreign = {
        f"{CURRENT}.bak": current,
        f"{CURRENT}.corrupted": current + b"not a record\n",
        rotated[0].name.removesuffix(".gz") + ".bak": plain,
        rotated[0].name.removesuffix(".gz") + ".corrupted": plain,
        rotated[1].name + ".bak": rotated[1].read_bytes(),
    }
    for name, data in foreign.items():
        (logs / name).write_bytes(data)
    again = make(tmp_path, count=10, compress=True)
    fill(again, 30)  # three more rotations, each compressed
    again.close()
    make(tmp_path, count=10, compress=True).close()  # and another start
    assert {name: (logs / name).read_bytes() for name in foreign} == foreign
    assert not [p.name for p in logs.iterdir() if p.name.endswith((".bak.gz", ".corrupted.gz"))]
    assert every_seq(make(tmp_path, count=10, compress=True)) == (
        list(range(1, 56)),
        list(range(1, 56)),
    )


def test_each_foreign_file_is_reported_once(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    names = [f"{CURRENT}.bak", "notes.txt"]
    for name in names:
        (logs / name).write_bytes(b"")
    rotation = LogRotation(size=10**9, count=5, compress=True, max_age=0)

    def warned(logged: Sequence[dict[str, Any]]) -> list[str]:
        found = [e for e in logged if e.get("file") in names]
        assert all(e["log_level"] == LogLevel.warn for e in found)
        assert all(e["project_id"] == tmp_path.name for e in found)
        assert all(e["file"] in formatEvent(e) for e in found)
        return sorted(e["file"] for e in found)

    history = History(logs, Clock(), rotation, tmp_path / "corrupted")
    with capturedLogs() as logged:
        history.open()
        fill(history, 23)  # four rotations, four compressions
        history.close()
        history.open()  # the same history opened again: already reported
    assert warned(logged) == names
    assert history.repair.foreign_files == names
    history.close()
    restarted = History(logs, Clock(), rotation, tmp_path / "corrupted")
    with capturedLogs() as logged:
        restarted.open()
        fill(restarted, 10)
    assert warned(logged) == names  # once per start
    # Reported, not repaired: no "Repaired history" warning at every start because of it.
    assert restarted.repair == Repair()


NOT_HISTORY = [
    "messages_2026-01-01_00-00-00.jsonl.bak",
    "messages_foo.jsonl",
    "messages_current.jsonl.orig",
    "messages_current.jsonl.gz.bak",
    "messages_2026-01-01_00-00-00.jsonl~",
    "messages_2026-01-01_00-00-00.jsonl.gz.orig",
    "messages_2026-01-01_00-00-00.jsonl.tmp",
    "messages_2026-01-01_00-00-00.jsonl.gz.gz",
    "messages_2026-01-01_00-00-00-.jsonl",
    "messages_2026-01-01_00-00-00-0.jsonl",
    "messages_2026-1-01_00-00-00.jsonl",
    "messages_2026-13-01_00-00-00.jsonl",
    "messages_2026-01-01_00-00-00.JSONL",
    "messages_2026-01-01 00-00-00.jsonl",
    "Messages_2026-01-01_00-00-00.jsonl",
    "messages_٢٠٢٦-01-01_00-00-00.jsonl",
    ".messages_2026-01-01_00-00-00.jsonl.swp",
    "messages.jsonl",
]


@pytest.mark.parametrize("name", NOT_HISTORY)
@pytest.mark.parametrize("full_check", [False, True], ids=["start", "repair"])
def test_names_close_to_history_names_are_left_alone(
    tmp_path: Path, name: str, full_check: bool
) -> None:
    history = make(tmp_path)
    fill(history, 3)
    history.close()
    logs = tmp_path / "logs"
    later = encode_record(500, "2026-01-01T00:00:00.000Z", None, "server", b"{}") + b"\n"
    data = (logs / CURRENT).read_bytes() + later  # records that would show if it were read
    (logs / name).write_bytes(data)
    again = History(
        logs,
        Clock(),
        LogRotation(size=10**9, count=10**9, compress=True, max_age=0),
        tmp_path / "corrupted",
    )
    with capturedLogs() as logged:
        again.open(full_check=full_check)
    assert again.last_seq == 3
    assert every_seq(again) == ([1, 2, 3], [1, 2, 3])
    assert again.repair.foreign_files == [name]
    assert [e["file"] for e in logged if "file" in e] == [name]
    fill(again, 2)
    again.rotate()
    assert (logs / name).read_bytes() == data
    assert sorted(p.name for p in logs.iterdir() if name in p.name) == [name]
    assert name not in (logs / INDEX).read_text()


@pytest.mark.parametrize(
    "name",
    [
        "messages_2026-01-01_00-00-00.jsonl",
        "messages_2026-01-01_00-00-00.jsonl.gz",
        "messages_2026-12-31_23-59-59-2.jsonl",
        "messages_2026-12-31_23-59-59-12.jsonl.gz",
        "messages_current.jsonl.gz",
    ],
)
def test_names_fixed_by_the_spec_are_history(tmp_path: Path, name: str) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    data = b"".join(
        encode_record(seq, "2026-01-01T00:00:00.000Z", None, "server", b"{}") + b"\n"
        for seq in (1, 2)
    )
    (logs / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    history = make(tmp_path)
    assert every_seq(history) == ([1, 2], [1, 2])
    assert history.repair.foreign_files == []


@pytest.mark.parametrize("keep", [False, True], ids=["gzip", "gzip-k"])
def test_a_gzipped_current_file_is_history_before_the_current_one(
    tmp_path: Path, keep: bool
) -> None:
    """What the seed's cleanup script leaves (``gzip [-k] messages_current.jsonl``)."""
    history = make(tmp_path, count=10**9, compress=True)
    fill(history, 20)
    history.close()
    logs = tmp_path / "logs"
    gz = logs / f"{CURRENT}.gz"
    gz.write_bytes(gzip.compress((logs / CURRENT).read_bytes()))
    if not keep:
        (logs / CURRENT).unlink()
    packed = gz.read_bytes()
    again = make(tmp_path, count=12, compress=True)
    assert again.last_seq == 20
    assert every_seq(again, limit=7) == (list(range(1, 21)), list(range(1, 21)))
    fill(again, 30)  # rotations, compression
    again.close()
    third = make(tmp_path, count=12, compress=True)
    for limit in (1, 7, 1000):
        assert every_seq(third, limit) == (list(range(1, 51)), list(range(1, 51)))
    assert seqs(list(third.iter_all())) == list(range(1, 51))
    assert gz.read_bytes() == packed  # never renamed, recompressed or rewritten
    assert gz.name in (logs / INDEX).read_text()


def test_a_seq_held_by_two_files_is_served_once(tmp_path: Path) -> None:
    """Rule: the copy in the file that comes first (by first seq, the current file last)."""
    history = make(tmp_path, count=30)
    fill(history, 70)
    history.close()
    logs = tmp_path / "logs"
    lines = list(history.iter_all())
    # A restored backup under a name of its own, overlapping two rotated files and current.
    restored = logs / "messages_1969-12-31_23-59-59.jsonl"
    restored.write_bytes(b"".join(line + b"\n" for line in lines[19:65]))
    again = make(tmp_path, count=30)
    assert again.last_seq == 70
    for limit in (1, 3, 10, 25, 46, 1000):
        assert every_seq(again, limit) == (list(range(1, 71)), list(range(1, 71)))
    assert seqs(again.query(Query(after_seq=15, before_seq=50, limit=1000)).lines) == list(
        range(16, 50)
    )
    assert seqs(again.query(Query(after_seq=0, limit=1000)).lines) == list(range(1, 71))
    assert seqs(list(again.iter_all())) == list(range(1, 71))
    assert again.append(None, "server", {}).seq == 71


def test_a_file_rewritten_in_place_is_indexed_again(tmp_path: Path) -> None:
    """``jq -c . < f.bak > f`` on a rotated file: same name, other bytes, stale offsets."""
    history = make(tmp_path, count=10)
    for i in range(25):
        history.append("r", "claude", {"type": "t", "i": i}, b'{"type": "t",  "i": %d}' % i)
    history.close()
    seed_repair_loop(tmp_path / "logs")
    again = make(tmp_path, count=10)
    assert again.repair.index_rebuilt
    assert every_seq(again, limit=4) == (list(range(1, 26)), list(range(1, 26)))
    assert all(b'"i":' in line for line in again.iter_all())


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(min_value=1, max_value=80),
    count=st.integers(min_value=1, max_value=30),
    compress=st.booleans(),
    copies=st.lists(st.tuples(st.integers(0, 79), st.integers(1, 80)), min_size=1, max_size=3),
    limit=st.integers(min_value=1, max_value=30),
)
def test_overlapping_files_page_every_seq_exactly_once(
    tmp_path_factory: pytest.TempPathFactory,
    n: int,
    count: int,
    compress: bool,
    copies: list[tuple[int, int]],
    limit: int,
) -> None:
    tmp = tmp_path_factory.mktemp("h")
    history = make(tmp, count=count, compress=compress)
    fill(history, n)
    history.close()
    lines = list(history.iter_all())
    for i, (start, length) in enumerate(copies):
        part = lines[start : start + length]
        if part:  # a restored slice under a rotated name of its own
            path = tmp / "logs" / f"messages_1969-12-31_23-59-59-{i + 2}.jsonl"
            path.write_bytes(b"".join(line + b"\n" for line in part))
    again = make(tmp, count=count, compress=compress)
    assert every_seq(again, limit) == (list(range(1, n + 1)), list(range(1, n + 1)))
    assert again.append(None, "server", {}).seq == n + 1


def test_a_failed_rotation_neither_loses_the_record_nor_stops_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The line is written, then the rotation hits a full disk: append returns the
    Record (the caller must not count it as lost) and the next append still works."""
    import errno as _errno

    from pocket_agent.history import log as log_module

    clock = Clock()
    clock.advance(1_800_000_000)
    rotation = LogRotation(size=10**9, count=3, compress=False, max_age=0)
    history = History(tmp_path / "logs", clock, rotation, tmp_path / "corrupted")
    (tmp_path / "logs").mkdir()
    history.open()
    real_replace = log_module.os.replace
    failing = {"on": True}

    def replace(src: Any, dst: Any) -> None:
        if failing["on"]:
            raise OSError(_errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(log_module.os, "replace", replace)
    records = [history.append(None, "server", {"n": i}) for i in range(5)]
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    failing["on"] = False
    history.append(None, "server", {"n": 5})  # rotates now
    assert [json.loads(line)["seq"] for line in history.iter_all()] == [1, 2, 3, 4, 5, 6]
    history.close()
