"""A project's Record stream: append, sync, rotate, compress, expire, query.

Layout in ``data/projects/<id>/logs/``::

    messages_current.jsonl                  records being appended
    current.chunks                          chunk table of the current file (a hint)
    messages_2026-11-27_19-40-01.jsonl.gz   rotated files (UTC), gzip member per chunk
    index.json                              first/last seq and time + chunks per file

Only SPEC §2's exact names (and ``messages_current.jsonl.gz``) are history: anything else
there is an operator's file, never touched (:func:`.segments.is_rotated_name`).
One Record per line, ``seq`` per project from 1, never repeated across rotations and
restarts. Claude's own line is embedded byte for byte. Queries read only the chunks
they need, so their memory is bounded by the page, not by the history. Loading the
files at start-up, and repairing them, is :mod:`.recovery`'s job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pocket_agent.config import LogRotation
from pocket_agent.storage import fsync_dir
from pocket_agent.times import rfc3339

from .query import Page, Query, Source, run_query
from .recovery import Repair, hint_line, recover
from .segments import (
    CHUNKS,
    CURRENT,
    INDEX,
    Chunk,
    ChunkBuilder,
    Header,
    Segment,
    compress_segment,
    parse_header,
    read_chunk,
    write_index,
)

RunInThread = Callable[..., Deferred[Any]]


@attrs.frozen
class Record:
    seq: int
    timestamp: str
    run_id: str | None
    direction: str  # client | claude | server
    message: dict[str, Any] = attrs.field(eq=False, repr=False)
    line: bytes = attrs.field(repr=False)  # the JSON object, no newline


def encode_record(
    seq: int, timestamp: str, run_id: str | None, direction: str, message_json: bytes
) -> bytes:
    head = json.dumps(
        {"seq": seq, "timestamp": timestamp, "run_id": run_id, "direction": direction},
        separators=(",", ":"),
    )
    return head[:-1].encode() + b',"message":' + message_json + b"}"


class History:
    log = Logger()

    def __init__(
        self,
        directory: Path,
        clock: IReactorTime,
        rotation: LogRotation,
        corrupted_dir: Path,
        run_in_thread: RunInThread | None = None,
    ) -> None:
        self.directory = directory
        self.path = directory / CURRENT
        self.clock = clock
        self.rotation = rotation
        self.corrupted_dir = corrupted_dir
        self.run_in_thread: RunInThread = run_in_thread or (lambda f, *a: maybeDeferred(f, *a))
        self.sync_interval = rotation.fsync_interval
        self.last_seq = 0
        self.segments: list[Segment] = []
        self._file: BinaryIO | None = None
        self._size = 0
        self._chunks = ChunkBuilder()
        self._chunks_file: BinaryIO | None = None
        self._first: Header | None = None
        self._last: Header | None = None
        self._sync_call: IDelayedCall | None = None
        self._compressing: Deferred[Any] | None = None
        self.repair = Repair()
        self._floor = 0
        self._uncompressible: set[str] = set()
        self._rotation_failing = False

    # ---------------------------------------------------------------- open/close

    def open(self, full_check: bool = False) -> Repair:
        """Recover and load (see :func:`.recovery.recover`). ``full_check`` (the ``repair``
        command) also reads every rotated file to rebuild the index and count invalid lines."""
        found = recover(
            self.directory, self.corrupted_dir, self.repair, self.log, full_check, self._floor
        )
        self.segments = found.segments
        self._floor = found.floor
        if found.current is not None:  # no current file: keep what we have (empty at first)
            self._chunks = found.current.chunks
            self._first = found.current.first
            self._last = found.current.last
        self.last_seq = max(
            self._last.seq if self._last else 0,
            max((s.last_seq for s in self.segments), default=0),
            self._floor,
        )
        # Unbuffered: a failed write is rolled back at once and never reappears later.
        self._file = open(self.path, "ab", buffering=0)
        self._size = self._file.tell()
        self._chunks_file = open(self.directory / CHUNKS, "ab")
        self.expire()
        self._compress_pending()
        return self.repair

    def close(self) -> None:
        self.sync()
        for f in (self._file, self._chunks_file):
            if f is not None:
                f.close()
        self._file = self._chunks_file = None

    # -------------------------------------------------------------------- append

    def append(
        self,
        run_id: str | None,
        direction: str,
        message: dict[str, Any],
        message_json: bytes | None = None,
    ) -> Record:
        """Write one Record (flushed to the OS) and return it; ``message_json`` is
        Claude's exact line."""
        if self._file is None:
            self.open()
        assert self._file is not None and self._chunks_file is not None
        seq = self.last_seq + 1
        timestamp = rfc3339(datetime.fromtimestamp(self.clock.seconds(), UTC))
        if self._last is not None and timestamp < self._last.timestamp:
            timestamp = self._last.timestamp  # the wall clock stepped back: never go back
        raw = message_json
        if raw is None:
            raw = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
        line = encode_record(seq, timestamp, run_id, direction, raw)
        header = Header(seq, timestamp, direction)
        self._write_all(line + b"\n")
        chunks_before = len(self._chunks.chunks)
        self._chunks.add(header, self._size, len(line) + 1)
        if len(self._chunks.chunks) != chunks_before:
            self._write_hint(self._chunks.chunks[-1])
        self._size += len(line) + 1
        self._first = self._first or header
        self._last = header
        self.last_seq = seq
        if self.sync_interval <= 0:
            self.sync()
        elif self._sync_call is None:
            self._sync_call = self.clock.callLater(self.sync_interval, self.sync)
        record = Record(seq, timestamp, run_id, direction, message, line)
        if self._size >= self.rotation.size or self._current_records >= self.rotation.count:
            self._rotate_after_append()
        return record

    def _rotate_after_append(self) -> None:
        """The Record is stored: a rotation that fails (a full disk) must not make the
        caller believe it is not, nor lose the current file. Tried again at the next
        append; logged once until it succeeds."""
        try:
            self.rotate()
        except OSError:
            if not self._rotation_failing:
                self.log.failure("Rotating the history in {dir} failed", dir=str(self.directory))
            self._rotation_failing = True
            self._reopen()
        else:
            self._rotation_failing = False

    def _reopen(self) -> None:
        """After a failed rotation: appends go on into a current file, whatever step
        of the rotation failed (a stale index is rebuilt at the next start)."""
        if self._file is None or self._file.closed:
            self._file = open(self.path, "ab", buffering=0)
            self._size = self._file.tell()
        if self._chunks_file is None or self._chunks_file.closed:
            self._chunks_file = open(self.directory / CHUNKS, "ab")

    def _write_all(self, data: bytes) -> None:
        """The whole line or nothing: a partial write is cut off again before raising,
        so a failed append leaves no trace and its seq is reused by the next one."""
        assert self._file is not None
        view = memoryview(data)
        try:
            while view:
                written = self._file.write(view)
                view = view[written or 0 :]
        except OSError:
            os.ftruncate(self._file.fileno(), self._size)
            raise

    def _write_hint(self, chunk: Chunk) -> None:
        """Hints only speed up the next start; losing one is harmless (it is validated)."""
        assert self._chunks_file is not None
        try:
            self._chunks_file.write(hint_line(chunk))
            self._chunks_file.flush()
        except OSError:
            self.log.failure("Could not write a chunk hint in {dir}", dir=str(self.directory))

    @property
    def _current_records(self) -> int:
        # Seqs are contiguous, so no counter has to survive a restart.
        return self.last_seq - self._first.seq + 1 if self._first and self._last else 0

    def sync(self) -> None:
        if self._sync_call is not None:
            if self._sync_call.active():
                self._sync_call.cancel()
            self._sync_call = None
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    # -------------------------------------------------------------------- rotate

    def rotate(self) -> None:
        """Close the current file as a rotated one; a Record is never split."""
        if self._first is None or self._last is None or self._file is None:
            return
        self.sync()
        name = self._rotated_name()
        segment = Segment(
            name=name,
            first_seq=self._first.seq,
            last_seq=self._last.seq,
            first_ts=self._first.timestamp,
            last_ts=self._last.timestamp,
            records=self._current_records,
            chunks=tuple(self._chunks.chunks),
            size=self._size,
        )
        self._file.close()
        assert self._chunks_file is not None
        self._chunks_file.close()
        os.replace(self.path, self.directory / name)
        # From here on the rename has happened: whatever fails next, the history must
        # go on with a fresh current file (a stale index is rebuilt at the next start).
        self.segments.append(segment)
        self._size = 0
        self._chunks = ChunkBuilder()
        self._first = self._last = None
        self._file = open(self.path, "ab", buffering=0)
        self._chunks_file = open(self.directory / CHUNKS, "wb")
        try:
            write_index(self.directory / INDEX, self.segments, self.last_seq)
            fsync_dir(self.directory)
        except OSError:
            self.log.failure("Could not write the history index in {dir}", dir=str(self.directory))
        self.log.info("Rotated {name}", name=name, records=segment.records)
        self.expire()
        self._compress_pending()

    def _rotated_name(self) -> str:
        stamp = datetime.fromtimestamp(self.clock.seconds(), UTC).strftime("%Y-%m-%d_%H-%M-%S")
        taken = {s.name.removesuffix(".gz") for s in self.segments}
        name, n = f"messages_{stamp}.jsonl", 1
        while name in taken or (self.directory / name).exists():
            n += 1
            name = f"messages_{stamp}-{n}.jsonl"
        return name

    def _compress_pending(self) -> None:
        """Compress rotated files one at a time, off the reactor thread."""
        if not self.rotation.compress or self._compressing is not None:
            return
        pending = [
            s for s in self.segments if not s.compressed and s.name not in self._uncompressible
        ]
        if not pending:
            return
        segment = pending[0]
        d = self.run_in_thread(compress_segment, self.directory, segment)
        self._compressing = d

        def installed(compressed: Segment) -> None:
            self._compressing = None
            if self._file is None:  # closed meanwhile (project deleted, shutdown)
                return
            if segment in self.segments:
                self.segments[self.segments.index(segment)] = compressed
                write_index(self.directory / INDEX, self.segments, self.last_seq)
                (self.directory / segment.name).unlink(missing_ok=True)
            else:  # expired meanwhile
                (self.directory / compressed.name).unlink(missing_ok=True)
            self._compress_pending()

        def failed(failure: Any) -> None:
            self._compressing = None
            self.log.failure("Compressing {name} failed", failure, name=segment.name)
            # Leave it plain (still readable); try the others.
            self._uncompressible.add(segment.name)
            self._compress_pending()

        d.addCallbacks(installed, failed)

    def expire(self) -> int:
        """Delete history whose newest record is older than ``max_age`` (a quiet
        project's current file too: it is rotated first, then goes with the rest)."""
        if self.rotation.max_age <= 0:
            return 0
        cutoff = rfc3339(datetime.fromtimestamp(self.clock.seconds() - self.rotation.max_age, UTC))
        if self._last is not None and self._last.timestamp < cutoff and self._file is not None:
            self.rotate()  # calls expire() again with the current file among the old ones
            return self.repair.segments_expired
        old = [s for s in self.segments if s.last_ts < cutoff]
        if not old:
            return 0
        self.segments = [s for s in self.segments if s not in old]
        write_index(self.directory / INDEX, self.segments, self.last_seq)
        for segment in old:
            (self.directory / segment.name).unlink(missing_ok=True)
        self.repair.segments_expired += len(old)
        return len(old)

    # --------------------------------------------------------------------- query

    def query(self, q: Query) -> Page:
        """One page of records (see :mod:`.query`), each seq at most once."""
        sources = self._sources()
        by_first = sorted(sources, key=_first_seq)
        if not _overlapping(by_first):
            return run_query(sources, q, self.last_seq)
        # Files that overlap (a restored backup, ``gzip -k``): a forward page must meet
        # them by first seq, a backward one (it reads them in reverse) by last seq, so
        # that each page is a run of seqs without a hole; its repeats are then dropped.
        ordered = by_first if q.forward else sorted(sources, key=lambda s: s[3])
        return _distinct(run_query(ordered, q, self.last_seq))

    def _sources(self) -> list[Source]:
        """(path, chunks, compressed, last_seq, last_ts) of every file, oldest first."""
        sources = [
            (self.directory / s.name, list(s.chunks), s.compressed, s.last_seq, s.last_ts)
            for s in self.segments
        ]
        if self._last is not None:
            sources.append(
                (self.path, list(self._chunks.chunks), False, self._last.seq, self._last.timestamp)
            )
        return sources

    def iter_all(self) -> Iterator[bytes]:
        """Every record line, oldest first, each seq once (for tests and repair)."""
        top = 0
        for path, chunks, compressed, _, _ in sorted(self._sources(), key=_first_seq):
            for i in range(len(chunks)):
                for line in read_chunk(path, i, chunks, compressed):
                    header = parse_header(line)
                    if header is None:
                        yield line
                    elif header.seq > top:
                        top = header.seq
                        yield line


def _first_seq(source: Source) -> int:
    chunks = source[1]
    return chunks[0].first_seq if chunks else 0


def _overlapping(sources: list[Source]) -> bool:
    """Whether two files (in order of first seq) hold the same seq: rare, and checked
    from the index alone."""
    top = 0
    for _, chunks, _, last_seq, _ in sources:
        if chunks and chunks[0].first_seq <= top:
            return True
        top = max(top, last_seq)
    return False


def _distinct(page: Page) -> Page:
    """Each seq once, in seq order (the first copy met is kept). A page read from
    overlapping files may come out shorter than its limit; ``has_more`` still holds, so
    paging on from its first or last seq neither skips nor repeats a record."""
    lines: dict[int, bytes] = {}
    for line in page.lines:
        header = parse_header(line)
        if header is not None:
            lines.setdefault(header.seq, line)
    order = sorted(lines)
    return attrs.evolve(
        page,
        lines=[lines[seq] for seq in order],
        first_seq=order[0] if order else None,
        last_seq=order[-1] if order else None,
    )
