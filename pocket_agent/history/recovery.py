"""Loading a history from disk, repairing what a crash or a bad disk left behind.

``History.open`` calls :func:`recover` before it appends anything, so appending and
querying can trust what they find: stray temporary files are gone, a torn last line is
cut off (and saved under ``data/corrupted/``), the index matches the rotated files
(what does not match is rebuilt from the files), and the current file's chunk table
comes from its hint file when the hints check out, else from a scan. A damaged file
stays in place, its readable part is served, and the operator gets a copy.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import attrs
from twisted.logger import Logger

from .segments import (
    CHUNKS,
    CURRENT,
    CURRENT_GZ,
    INDEX,
    Chunk,
    ChunkBuilder,
    Header,
    Segment,
    is_rotated_name,
    parse_header,
    read_index,
    scan_segment,
    write_index,
)


@attrs.define
class Repair:
    """What opening (or ``repair``) had to fix in one project's history."""

    torn_bytes: int = 0
    invalid_lines: int = 0
    index_rebuilt: bool = False
    segments_expired: int = 0
    tmp_removed: int = 0
    damaged_files: int = 0
    # Files in logs/ that are not history (an operator's copies): left alone and reported
    # once; not a fix, so not part of the comparison that decides a repair happened.
    foreign_files: list[str] = attrs.field(factory=list, eq=False)


@attrs.frozen
class Current:
    """The current file as loaded: its chunk table and its first and last record."""

    chunks: ChunkBuilder
    first: Header | None
    last: Header | None


@attrs.frozen
class Loaded:
    """What :func:`recover` found, for the history to take over."""

    segments: list[Segment]  # the rotated files, oldest first
    floor: int  # seq never to go below: the index's last_seq (the one given if unreadable)
    current: Current | None  # None: there is no current file


def recover(
    directory: Path,
    corrupted_dir: Path,
    repair: Repair,
    log: Logger,
    full_check: bool = False,
    floor: int = 0,
) -> Loaded:
    """Repair and load ``directory``, counting every fix in ``repair``.

    ``full_check`` (the ``repair`` command) also reads every rotated file to rebuild the
    index and count invalid lines. ``floor`` is kept when the index is unreadable.
    ``log`` is the history's own logger, so the warnings name the history.
    """
    return _Recovery(directory, corrupted_dir, repair, log).run(full_check, floor)


def hint_line(chunk: Chunk) -> bytes:
    """One line of the hint file (``CHUNKS``); the history appends one per new chunk."""
    return f"{chunk.first_seq} {chunk.first_ts} {chunk.offset}\n".encode()


class _Recovery:
    def __init__(self, directory: Path, corrupted_dir: Path, repair: Repair, log: Logger) -> None:
        self.directory = directory
        self.path = directory / CURRENT
        self.corrupted_dir = corrupted_dir
        self.repair = repair
        self.log = log

    def run(self, full_check: bool, floor: int) -> Loaded:
        self.directory.mkdir(parents=True, exist_ok=True)
        for tmp in self.directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            self.repair.tmp_removed += 1
        rotated = self._history_files()
        self._cut_torn_tail()
        segments, floor = self._load_segments(rotated, full_check, floor)
        current = self._load_current(full_check)
        self._report_overlaps(segments, current)
        return Loaded(segments, floor, current)

    def _history_files(self) -> set[str]:
        """The rotated files, by SPEC §2's exact names; every other file but our own
        bookkeeping is the operator's: reported (once per history), never touched."""
        rotated = set()
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                if name in (CURRENT, INDEX, CHUNKS) and entry.is_file():
                    continue
                if is_rotated_name(name) and entry.is_file():
                    rotated.add(name)
                elif name not in self.repair.foreign_files:
                    self.repair.foreign_files.append(name)
                    self.log.warn(
                        "{file} in the history of project {project_id} is not a history file:"
                        " left alone (never read, compressed, expired or deleted)",
                        file=name,
                        project_id=self.directory.parent.name,
                        directory=str(self.directory),
                    )
        self.repair.foreign_files.sort()
        return rotated

    def _report_overlaps(self, segments: list[Segment], current: Current | None) -> None:
        """Two files holding the same seqs (a restored backup, ``gzip -k``): the history
        serves each seq once, but one of them is probably a copy the operator should know of."""
        spans = [(s.first_seq, s.last_seq, s.name) for s in segments]
        if current is not None and current.first is not None and current.last is not None:
            spans.append((current.first.seq, current.last.seq, CURRENT))
        top, top_name = 0, ""
        for first, last, name in sorted(spans):
            if first <= top:
                self.log.warn(
                    "History files {file} and {other} of project {project_id} hold the same"
                    " seqs; each of them is served once",
                    file=name,
                    other=top_name,
                    project_id=self.directory.parent.name,
                )
            if last > top:
                top, top_name = last, name

    def _cut_torn_tail(self) -> None:
        """A crash mid-write leaves a last line without ``\\n``: move it aside."""
        try:
            f = open(self.path, "rb+")
        except FileNotFoundError:
            return
        with f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            start = max(0, size - 64 * 1024)
            keep = 0
            while True:
                f.seek(start)
                block = f.read(size - start)
                cut = block.rfind(b"\n")
                if cut >= 0:
                    keep = start + cut + 1
                    break
                if start == 0:
                    break
                start = max(0, start - 64 * 1024)
            f.seek(keep)
            torn = f.read()
            self.corrupted_dir.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
            saved = self.corrupted_dir / f"{self.directory.parent.name}-torn-{stamp}.bin"
            saved.write_bytes(torn)
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            self.repair.torn_bytes += len(torn)
            self.log.warn(
                "Cut a torn last line ({size} bytes) from {path}; saved as {saved}",
                size=len(torn),
                path=str(self.path),
                saved=str(saved),
            )

    def _load_segments(
        self, on_disk: set[str], full_check: bool, floor: int
    ) -> tuple[list[Segment], int]:
        stored = read_index(self.directory / INDEX)
        if stored is not None:
            floor = stored[1]
        index = None if full_check or stored is None else stored[0]
        # An entry is trusted while its file has the size it was indexed with.
        known = {s.name: s for s in index or [] if s.name in on_disk and self._unchanged(s)}
        if index is not None and len(known) == len(index) == len(on_disk):
            return index, floor
        # Missing, unreadable or stale: rebuild what does not match from the files.
        segments = []
        for name in sorted(on_disk):
            if name != CURRENT_GZ and name.endswith(".gz") and name[:-3] in on_disk:
                (self.directory / name).unlink()  # a compression interrupted by a crash
                continue
            segment = known.get(name)
            if segment is None:
                scan = scan_segment(self.directory / name)
                self.repair.invalid_lines += scan.invalid_lines
                if scan.damaged:
                    self._keep_copy_of_damaged(name)
                segment = scan.segment
            if segment is not None:
                segments.append(segment)
        segments.sort(key=lambda s: (s.first_seq, s.name))
        self.repair.index_rebuilt = True
        write_index(self.directory / INDEX, segments, floor)
        return segments, floor

    def _unchanged(self, segment: Segment) -> bool:
        if segment.size is None:
            return True
        try:
            return (self.directory / segment.name).stat().st_size == segment.size
        except OSError:
            return False

    def _keep_copy_of_damaged(self, name: str) -> None:
        """A damaged rotated file stays in place (its readable part is indexed and
        served); the operator gets a copy of all of it under data/corrupted/."""
        self.repair.damaged_files += 1
        self.corrupted_dir.mkdir(parents=True, exist_ok=True)
        copy = self.corrupted_dir / f"{self.directory.parent.name}-{name}"
        shutil.copyfile(self.directory / name, copy)
        self.log.error(
            "Damaged history file {name}: records after the damage are unreadable; copy in {copy}",
            name=name,
            copy=str(copy),
        )

    def _load_current(self, full_check: bool) -> Current | None:
        """Chunk table of the current file from its hint file, then scan only the last chunk."""
        if not self.path.exists():
            (self.directory / CHUNKS).unlink(missing_ok=True)
            return None
        size = self.path.stat().st_size
        chunks = [] if full_check else self._read_chunk_hints(size)
        start = chunks[-1].offset if chunks else 0
        builder = ChunkBuilder()
        builder.chunks = chunks[:-1]
        first: Header | None = None
        last: Header | None = None
        with open(self.path, "rb") as f:
            f.seek(start)
            offset = start
            for line in f:
                header = parse_header(line)
                if header is None:
                    self.repair.invalid_lines += 1
                else:
                    builder.add(header, offset, len(line))
                    first = first or header
                    last = header
                offset += len(line)
        if builder.chunks:  # the scan may have started at the last chunk: ask the first
            c = builder.chunks[0]
            first = Header(c.first_seq, c.first_ts, "")
        if not chunks:
            with open(self.directory / CHUNKS, "wb") as hints:
                hints.write(b"".join(hint_line(c) for c in builder.chunks))
        return Current(builder, first, last)

    def _read_chunk_hints(self, size: int) -> list[Chunk]:
        chunks: list[Chunk] = []
        try:
            text = (self.directory / CHUNKS).read_text()
        except OSError:
            return []
        for line in text.splitlines():
            parts = line.split(" ")
            try:
                chunk = Chunk(int(parts[0]), parts[1], int(parts[2]))
            except (IndexError, ValueError):
                return []
            if chunk.offset >= size or (chunks and chunk.offset <= chunks[-1].offset):
                return []  # stale hints: scan the whole file instead
            chunks.append(chunk)
        if chunks and (chunks[0].offset != 0 or not self._hints_match(chunks)):
            return []
        return chunks

    def _hints_match(self, chunks: list[Chunk]) -> bool:
        """Each hint must point at the start of the record it names."""
        with open(self.path, "rb") as f:
            for chunk in chunks:
                f.seek(max(0, chunk.offset - 1))
                head = f.read(257 if chunk.offset else 256)
                if chunk.offset:
                    if head[:1] != b"\n":
                        return False
                    head = head[1:]
                header = parse_header(head)
                if header is None or header.seq != chunk.first_seq:
                    return False
        return True
