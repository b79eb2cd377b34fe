"""The stdout line splitter under arbitrary chunking, and lenient parsing."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from pocket_agent.runs.streamjson import LineSplitter, parse_line, user_message


def split(chunks: list[bytes], max_line: int = 1 << 20) -> list[tuple[str, bytes, int]]:
    out: list[tuple[str, bytes, int]] = []
    splitter = LineSplitter(
        lambda line: out.append(("line", line, len(line))),
        lambda head, size: out.append(("overflow", head, size)),
        max_line=max_line,
    )
    for chunk in chunks:
        splitter.feed(chunk)
    splitter.finish()
    return out


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


@given(
    lines=st.lists(st.binary(max_size=50).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    cuts=st.lists(st.integers(min_value=0), max_size=30),
    trailing_newline=st.booleans(),
)
def test_any_chunking_gives_the_same_lines(
    lines: list[bytes], cuts: list[int], trailing_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    expected = [line for line in data.split(b"\n")]
    if data.endswith(b"\n") or not data:
        expected = expected[:-1]
    got = [line for kind, line, _ in split(chunked(data, cuts))]
    assert got == expected


@given(cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_overlong_lines_are_reported_once_with_their_size(cuts: list[int]) -> None:
    data = b"short\n" + b"x" * 100 + b"\nafter\n"
    got = split(chunked(data, cuts), max_line=64)
    assert got == [("line", b"short", 5), ("overflow", b"x" * 64, 100), ("line", b"after", 5)]


def test_a_five_megabyte_line_arrives_whole() -> None:
    big = json.dumps({"type": "user", "blob": "y" * 5_000_000}).encode()
    chunks = [big[i : i + 65536] for i in range(0, len(big), 65536)] + [b"\n"]
    [(kind, line, size)] = split(chunks, max_line=16 * 1024 * 1024)
    assert (kind, size) == ("line", len(big))
    assert parse_line(line) == json.loads(big)


def test_parse_line_is_lenient() -> None:
    assert parse_line(b'{"type": "result"}') == {"type": "result"}
    assert parse_line(b"not json") is None
    assert parse_line(b"[1, 2]") is None
    assert parse_line(b"\xff\xfe") is None
    assert parse_line(b"") is None


def test_user_message_is_one_stream_json_line() -> None:
    line = user_message('say "hi"\nplease')
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": 'say "hi"\nplease'}]},
    }
