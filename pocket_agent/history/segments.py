"""History files on disk, read a chunk at a time.

Every history file (the current one, rotated ones, compressed ones) is cut into
*chunks* of at most ``CHUNK_RECORDS`` records or ``CHUNK_BYTES`` bytes. The index
keeps each chunk's first seq, first timestamp and byte offset, so a query opens one
file, seeks to one chunk and reads only what it needs. A compressed file is a
concatenation of gzip members, one per chunk (still a valid ``.gz`` for ``zcat``), so
its chunks are reachable by offset too.

Records start with a fixed header, ``{"seq":N,"timestamp":"…","run_id":…,
"direction":"…"`` (we write them), so finding a record's seq, time and direction is a
regex on its first bytes, not a JSON parse.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs

from pocket_agent.storage import atomic_write_bytes, fsync_dir

# The files of a history directory besides the rotated ones (layout: see .log).
CURRENT = "messages_current.jsonl"
CHUNKS = "current.chunks"  # chunk table of the current file, a hint for the next start
INDEX = "index.json"
# What ``gzip messages_current.jsonl`` (the seed's cleanup script) leaves: history too,
# served like a rotated file (by seq, so before the records of a newer current file).
CURRENT_GZ = CURRENT + ".gz"
# SPEC §2's rotated names, exactly: anything else in logs/ (an operator's .bak, .orig,
# editor backups...) is not history and is never read, compressed, expired or deleted.
ROTATED = re.compile(
    r"messages_([0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]{2}-[0-9]{2}-[0-9]{2})(?:-[1-9][0-9]{0,8})?"
    r"\.jsonl(?:\.gz)?",
    re.ASCII,
)

CHUNK_RECORDS = 500
CHUNK_BYTES = 1024 * 1024
HEADER = re.compile(
    rb'\{"seq":(\d+),"timestamp":"([^"]{1,40})","run_id":(?:null|"[^"]{0,100}"),"direction":"(\w{1,10})"'
)


@attrs.frozen
class Header:
    seq: int
    timestamp: str
    direction: str


def is_rotated_name(name: str) -> bool:
    """A rotated history file's name (``CURRENT_GZ`` included); the time must be real."""
    if name == CURRENT_GZ:
        return True
    match = ROTATED.fullmatch(name)
    if match is None:
        return False
    try:
        datetime.strptime(match[1], "%Y-%m-%d_%H-%M-%S")
    except ValueError:
        return False
    return True


def parse_header(line: bytes) -> Header | None:
    match = HEADER.match(line)
    if match is None:
        return None
    return Header(int(match[1]), match[2].decode(), match[3].decode())


@attrs.frozen
class Chunk:
    first_seq: int
    first_ts: str
    offset: int  # in the file as stored (compressed offset for .gz)
    # The directions present, e.g. "claude,server"; None = unknown (read it). Lets a
    # filtered query skip chunks that cannot match.
    directions: str | None = None

    def may_hold(self, direction: str | None) -> bool:
        return (
            direction is None or self.directions is None or direction in self.directions.split(",")
        )


@attrs.frozen
class Segment:
    """A rotated file, as the index describes it."""

    name: str
    first_seq: int
    last_seq: int
    first_ts: str
    last_ts: str
    records: int
    chunks: tuple[Chunk, ...]
    # Bytes on disk when indexed (None in older indexes): a file rewritten in place under
    # the same name (``jq -c . < f.bak > f``) has stale offsets and is read again.
    size: int | None = None

    @property
    def compressed(self) -> bool:
        return self.name.endswith(".gz")

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["chunks"] = [[c.first_seq, c.first_ts, c.offset, c.directions] for c in self.chunks]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Segment:
        chunks = tuple(
            Chunk(int(c[0]), str(c[1]), int(c[2]), c[3] if len(c) > 3 else None)
            for c in data["chunks"]
        )
        return cls(
            name=str(data["name"]),
            first_seq=int(data["first_seq"]),
            last_seq=int(data["last_seq"]),
            first_ts=str(data["first_ts"]),
            last_ts=str(data["last_ts"]),
            records=int(data["records"]),
            chunks=chunks,
            size=None if data.get("size") is None else int(data["size"]),
        )


class ChunkBuilder:
    """Tracks chunk boundaries while records are appended to a plain file."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self._records = 0
        self._bytes = 0
        self._directions: set[str] = set()

    def add(self, header: Header, offset: int, size: int) -> None:
        # A fresh builder (also one resumed from hints) starts a chunk at its first record.
        if self._records == 0 or self._records >= CHUNK_RECORDS or self._bytes >= CHUNK_BYTES:
            self.chunks.append(Chunk(header.seq, header.timestamp, offset, header.direction))
            self._records = self._bytes = 0
            self._directions = {header.direction}
        elif header.direction not in self._directions:
            self._directions.add(header.direction)
            last = self.chunks[-1]
            if last.directions is not None:
                merged = ",".join(sorted(self._directions))
                self.chunks[-1] = attrs.evolve(last, directions=merged)
        self._records += 1
        self._bytes += size


# ------------------------------------------------------------------------- reading


def read_chunk(
    path: Path, chunk_index: int, chunks: tuple[Chunk, ...] | list[Chunk], compressed: bool
) -> list[bytes]:
    """The complete lines of one chunk (a torn trailing line is left out)."""
    start = chunks[chunk_index].offset
    end = chunks[chunk_index + 1].offset if chunk_index + 1 < len(chunks) else None
    with open(path, "rb") as f:
        f.seek(start)
        raw = f.read() if end is None else f.read(end - start)
    data = _gunzip_member(raw) if compressed else raw
    lines = data.split(b"\n")
    return [line for line in lines[:-1] if line]  # the part after the last \n is torn or empty


def _gunzip_member(raw: bytes) -> bytes:
    """The first gzip member of ``raw`` (a chunk is exactly one member); from a damaged
    member, what could be decompressed before the damage."""
    d = zlib.decompressobj(wbits=31)
    out = []
    view = memoryview(raw)
    try:
        for start in range(0, len(view), 65536):
            out.append(d.decompress(view[start : start + 65536]))
            if d.eof:
                break
    except zlib.error:
        pass
    return b"".join(out)


def walk_members(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """``(offset, data, intact)`` of each gzip member in a file, in one linear pass; stops
    after the first damaged member (truncated or corrupt), yielding what it held."""
    with open(path, "rb") as f:
        raw = f.read()
    view = memoryview(raw)
    offset = 0
    while offset < len(view):
        d = zlib.decompressobj(wbits=31)
        out = []
        fed = offset
        try:
            while not d.eof and fed < len(view):
                block = view[fed : fed + 65536]
                fed += len(block)
                out.append(d.decompress(block))
        except zlib.error:
            yield offset, b"".join(out), False
            return
        if not d.eof:
            yield offset, b"".join(out), False
            return
        yield offset, b"".join(out), True
        offset = fed - len(d.unused_data)


def iter_file_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for every complete line of a plain file (scans and repairs)."""
    offset = 0
    with open(path, "rb") as f:
        pending = b""
        while True:
            block = f.read(1024 * 1024)
            if not block:
                break
            pending += block
            lines = pending.split(b"\n")
            pending = lines.pop()
            for line in lines:
                yield offset, line
                offset += len(line) + 1


# ------------------------------------------------------------------------- writing


def compress_segment(directory: Path, segment: Segment) -> Segment:
    """Write ``<name>.gz`` as one gzip member per chunk, then drop the plain file.

    Runs in a thread: it touches only these two files, and the index entry it
    returns is installed by the reactor thread.
    """
    source = directory / segment.name
    target = directory / f"{segment.name}.gz"
    tmp = directory / f".{segment.name}.gz.tmp"
    chunks = []
    with open(source, "rb") as src, open(tmp, "wb") as out:
        offsets = [c.offset for c in segment.chunks] + [None]
        for chunk, end in zip(segment.chunks, offsets[1:], strict=True):
            src.seek(chunk.offset)
            data = src.read() if end is None else src.read(end - chunk.offset)
            chunks.append(attrs.evolve(chunk, offset=out.tell()))
            out.write(gzip.compress(data, compresslevel=6, mtime=0))
        out.flush()
        os.fsync(out.fileno())
        size = out.tell()
    os.replace(tmp, target)
    fsync_dir(directory)
    # The plain file is deleted by the reactor thread once the index points at the .gz:
    # a query running meanwhile still finds what the index names.
    return attrs.evolve(segment, name=target.name, chunks=tuple(chunks), size=size)


@attrs.frozen
class Scan:
    segment: Segment | None  # None when the file holds no valid record
    invalid_lines: int
    damaged: bool  # a gzip member was truncated or corrupt: the rest is unreadable


def scan_segment(path: Path) -> Scan:
    """Build a rotated file's index entry by reading all of it (index rebuild, repair).

    Never raises for damaged content: complete valid lines before the damage are kept.
    """
    compressed = path.name.endswith(".gz")
    size = path.stat().st_size
    builder = ChunkBuilder()
    first: Header | None = None
    last: Header | None = None
    records = invalid = 0
    damaged = False

    def take(line: bytes, offset: int, member_offset: int | None) -> None:
        nonlocal first, last, records, invalid
        header = parse_header(line) if line else None
        if header is None or not valid_json(line):
            invalid += bool(line)
            return
        if member_offset is not None:  # compressed: one chunk per gzip member
            if not builder.chunks or builder.chunks[-1].offset != member_offset:
                builder.chunks.append(Chunk(header.seq, header.timestamp, member_offset, None))
        else:
            builder.add(header, offset, len(line) + 1)
        first = first or header
        last = header
        records += 1

    if compressed:
        for member_offset, data, intact in walk_members(path):
            damaged = damaged or not intact
            lines = data.split(b"\n")
            for line in lines[:-1]:
                take(line, 0, member_offset)
            invalid += bool(lines[-1])  # a line cut off by the damage
    else:
        for offset, line in iter_file_lines(path):
            take(line, offset, None)
    if first is None or last is None:
        return Scan(None, invalid, damaged)
    segment = Segment(
        path.name,
        first.seq,
        last.seq,
        first.timestamp,
        last.timestamp,
        records,
        tuple(builder.chunks),
        size,
    )
    return Scan(segment, invalid, damaged)


def valid_json(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def write_index(path: Path, segments: list[Segment], last_seq: int) -> None:
    """``last_seq`` is a floor for the next start: even when every file has expired,
    seq must not start again at 1."""
    payload = {"version": 1, "last_seq": last_seq, "segments": [s.to_json() for s in segments]}
    atomic_write_bytes(path, json.dumps(payload, separators=(",", ":")).encode())


def read_index(path: Path) -> tuple[list[Segment], int] | None:
    try:
        data = json.loads(path.read_bytes())
        return [Segment.from_json(s) for s in data["segments"]], int(data.get("last_seq", 0))
    except (OSError, ValueError, KeyError, TypeError):
        return None
