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
from pathlib import Path
from typing import Any

import attrs

from .storage import atomic_write_bytes, fsync_dir

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

    @property
    def compressed(self) -> bool:
        return self.name.endswith(".gz")

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["chunks"] = [[c.first_seq, c.first_ts, c.offset] for c in self.chunks]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Segment:
        chunks = tuple(Chunk(int(s), str(t), int(o)) for s, t, o in data["chunks"])
        return cls(
            name=str(data["name"]),
            first_seq=int(data["first_seq"]),
            last_seq=int(data["last_seq"]),
            first_ts=str(data["first_ts"]),
            last_ts=str(data["last_ts"]),
            records=int(data["records"]),
            chunks=chunks,
        )


class ChunkBuilder:
    """Tracks chunk boundaries while records are appended to a plain file."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self._records = 0
        self._bytes = 0

    def add(self, header: Header, offset: int, size: int) -> None:
        # A fresh builder (also one resumed from hints) starts a chunk at its first record.
        if self._records == 0 or self._records >= CHUNK_RECORDS or self._bytes >= CHUNK_BYTES:
            self.chunks.append(Chunk(header.seq, header.timestamp, offset))
            self._records = self._bytes = 0
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
    """The first gzip member of ``raw`` (a chunk is exactly one member)."""
    d = zlib.decompressobj(wbits=31)
    return d.decompress(raw)


def iter_file_lines(path: Path, compressed: bool) -> Iterator[tuple[int, bytes]]:
    """``(offset of the line in the plain data, line)`` for every complete line; for
    scans and repairs, which must read everything anyway."""
    opener = gzip.open if compressed else open
    offset = 0
    with opener(path, "rb") as f:
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
            chunks.append(Chunk(chunk.first_seq, chunk.first_ts, out.tell()))
            out.write(gzip.compress(data, compresslevel=6, mtime=0))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
    fsync_dir(directory)
    source.unlink()
    return attrs.evolve(segment, name=target.name, chunks=tuple(chunks))


def scan_segment(path: Path) -> tuple[Segment | None, int]:
    """Build a segment's index entry by reading the whole file (index rebuild, repair).

    Returns the segment (None when it holds no valid record) and the number of
    invalid lines skipped. Chunk offsets of a compressed file are recomputed by
    recompressing nothing: its members are found by walking them.
    """
    compressed = path.name.endswith(".gz")
    builder = ChunkBuilder()
    first: Header | None = None
    last: Header | None = None
    records = invalid = 0
    for offset, line in iter_file_lines(path, compressed):
        header = parse_header(line) if line else None
        if header is None or not _valid_json(line):
            invalid += bool(line)
            continue
        builder.add(header, offset, len(line) + 1)
        first = first or header
        last = header
        records += 1
    if first is None or last is None:
        return None, invalid
    chunks = _member_chunks(path, builder.chunks) if compressed else builder.chunks
    return (
        Segment(
            path.name, first.seq, last.seq, first.timestamp, last.timestamp, records, tuple(chunks)
        ),
        invalid,
    )


def _member_chunks(path: Path, plain_chunks: list[Chunk]) -> list[Chunk]:
    """For a compressed file, one chunk per gzip member (found by walking the members)."""
    chunks = []
    with open(path, "rb") as f:
        raw = f.read()
    offset = 0
    while offset < len(raw):
        d = zlib.decompressobj(wbits=31)
        data = d.decompress(raw[offset:])
        header = parse_header(data)
        if header is not None:
            chunks.append(Chunk(header.seq, header.timestamp, offset))
        consumed = len(raw) - offset - len(d.unused_data)
        if consumed <= 0 or not d.eof:
            break
        offset += consumed
    return chunks or plain_chunks[:1]


def _valid_json(line: bytes) -> bool:
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
