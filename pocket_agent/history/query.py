"""One page of a project's history: the query language of ``get_messages``.

A query walks the history's files (*sources*) chunk by chunk, from the chunk where its
bound falls, and stops as soon as the page is full, so its cost and memory follow the
page, not the history.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import attrs

from .segments import Chunk, parse_header, read_chunk, valid_json

MAX_PAGE = 1000  # records in one page
# One page is one WebSocket frame: keep it well below a connection's send buffer.
MAX_PAGE_BYTES = 4 * 1024 * 1024

Source = tuple[Path, list[Chunk], bool, int, str]  # path, chunks, compressed, last seq, last time


@attrs.frozen
class Query:
    after_seq: int | None = None
    since: str | None = None  # normalised RFC 3339 (exclusive)
    before_seq: int | None = None
    limit: int = 100
    direction: str | None = None  # None = all

    @property
    def forward(self) -> bool:
        return self.after_seq is not None or self.since is not None


@attrs.frozen
class Page:
    """One ``get_messages`` answer: complete record lines, oldest first."""

    lines: list[bytes]
    has_more: bool
    first_seq: int | None
    last_seq: int | None
    project_last_seq: int


def run_query(sources: list[Source], q: Query, last_seq: int) -> Page:
    """At most ``limit`` records and about ``MAX_PAGE_BYTES`` (always at least one
    record); ``has_more`` says whether more matching records exist beyond the page."""
    page = _PageBuilder(max(1, min(q.limit, MAX_PAGE)))
    if q.forward:
        _forward(sources, q, page)
        lines = page.lines
    else:
        _backward(sources, q, page, last_seq)
        lines = page.lines[::-1]
    first = parse_header(lines[0]) if lines else None
    last = parse_header(lines[-1]) if lines else None
    return Page(
        lines=lines,
        has_more=page.more,
        first_seq=first.seq if first else None,
        last_seq=last.seq if last else None,
        project_last_seq=last_seq,
    )


def _forward(sources: list[Source], q: Query, page: _PageBuilder) -> None:
    after = q.after_seq or 0
    since = q.since or ""
    for path, chunks, compressed, last_seq, last_ts in sources:
        if last_seq <= after or last_ts <= since or not chunks:
            continue
        start = max(
            bisect.bisect_right([c.first_seq for c in chunks], after + 1) - 1,
            bisect.bisect_right([c.first_ts for c in chunks], since) - 1 if since else 0,
            0,
        )
        for i in range(start, len(chunks)):
            if not chunks[i].may_hold(q.direction):
                continue
            for line in read_chunk(path, i, chunks, compressed):
                header = parse_header(line)
                if header is None:
                    continue
                if q.before_seq is not None and header.seq >= q.before_seq:
                    return
                if header.seq <= after or header.timestamp <= since:
                    continue
                if q.direction and header.direction != q.direction:
                    continue
                if page.full_with(line):
                    return


def _backward(sources: list[Source], q: Query, page: _PageBuilder, last_seq: int) -> None:
    before = q.before_seq if q.before_seq is not None else last_seq + 1
    for path, chunks, compressed, _last_seq, _ in reversed(sources):
        if not chunks or chunks[0].first_seq >= before:
            continue
        start = bisect.bisect_left([c.first_seq for c in chunks], before) - 1
        for i in range(start, -1, -1):
            if not chunks[i].may_hold(q.direction):
                continue
            for line in reversed(read_chunk(path, i, chunks, compressed)):
                header = parse_header(line)
                if header is None or header.seq >= before:
                    continue
                if q.direction and header.direction != q.direction:
                    continue
                if page.full_with(line):
                    return


class _PageBuilder:
    """Collects a page as lines are found, never holding more than the page."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: list[bytes] = []
        self.size = 0
        self.more = False

    def full_with(self, line: bytes) -> bool:
        """Take ``line`` if it fits; True once the page is full (and more exist)."""
        if len(self.lines) >= self.limit or (
            self.lines and self.size + len(line) > MAX_PAGE_BYTES
        ):
            self.more = True
            return True
        if not valid_json(line):  # a damaged record is skipped, never served
            return False
        self.lines.append(line)
        self.size += len(line)
        return False
