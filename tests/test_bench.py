"""bench/load.py's framing in memory, and bench/run.py --quick against the real daemon."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bench.load import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameParser,
    ProtocolError,
    accept_key,
    encode_frame,
    mask_bytes,
)

REPO = Path(__file__).resolve().parent.parent


def test_accept_key_of_rfc6455_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_masked_frame_round_trip() -> None:
    frame = encode_frame(b'{"type":"health"}', mask=b"\x37\xfa\x21\x3d")
    assert frame[0] == 0x81  # FIN + text
    assert frame[1] == 0x80 | 17  # masked, 7-bit length
    assert frame[2:6] == b"\x37\xfa\x21\x3d"
    assert frame[6:] != b'{"type":"health"}'
    assert FrameParser().feed(frame) == [(True, OP_TEXT, b'{"type":"health"}')]


def test_rfc6455_masked_hello() -> None:
    # RFC 6455 section 5.7: a masked "Hello"
    frame = bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(b"Hello", mask=bytes.fromhex("37fa213d")) == frame
    assert FrameParser().feed(frame) == [(True, OP_TEXT, b"Hello")]


def test_random_mask_differs_and_unmasks() -> None:
    one, two = encode_frame(b"x" * 40), encode_frame(b"x" * 40)
    assert one[1] & 0x80 and two[1] & 0x80
    assert FrameParser().feed(one + two) == [(True, OP_TEXT, b"x" * 40)] * 2


@pytest.mark.parametrize(
    ("size", "length_bytes"),
    [(125, b"\x7d"), (126, b"\x7e\x00\x7e"), (65535, b"\x7e\xff\xff"), (65536, None)],
)
def test_length_encodings(size: int, length_bytes: bytes | None) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    server = encode_frame(payload, mask=b"")
    if length_bytes is None:  # 64-bit length
        assert server[1] == 127 and struct.unpack("!Q", server[2:10])[0] == size
    else:
        assert server[1 : 1 + len(length_bytes)] == length_bytes
    assert FrameParser().feed(server) == [(True, OP_TEXT, payload)]
    client = encode_frame(payload)
    assert FrameParser().feed(client) == [(True, OP_TEXT, payload)]


def test_64_kib_and_bigger_payloads_fed_in_pieces() -> None:
    small, big = os.urandom(64 * 1024), os.urandom(3 * 64 * 1024 + 17)
    stream = encode_frame(small, mask=b"") + encode_frame(big, mask=b"\x01\x02\x03\x04")
    parser = FrameParser()
    got = []
    for i in range(0, len(stream), 1000):  # split anywhere, headers included
        got += parser.feed(stream[i : i + 1000])
    assert got == [(True, OP_TEXT, small), (True, OP_TEXT, big)]
    assert not parser.buffer


def test_one_byte_at_a_time_and_control_frames() -> None:
    stream = (
        encode_frame(b"ping!", OP_PING, mask=b"")
        + encode_frame(b"part", OP_TEXT, mask=b"", fin=False)
        + encode_frame(struct.pack("!H", 1000), OP_CLOSE, mask=b"")
    )
    parser = FrameParser()
    got = []
    for i in range(len(stream)):
        got += parser.feed(stream[i : i + 1])
    assert got == [
        (True, OP_PING, b"ping!"),
        (False, OP_TEXT, b"part"),
        (True, OP_CLOSE, b"\x03\xe8"),
    ]


def test_mask_is_its_own_inverse_and_reserved_bits_refused() -> None:
    data = os.urandom(1001)
    assert mask_bytes(mask_bytes(data, b"abcd"), b"abcd") == data
    assert mask_bytes(b"", b"abcd") == b""
    with pytest.raises(ProtocolError):
        FrameParser().feed(b"\xc1\x01x")  # RSV1 without an extension


@pytest.mark.e2e
def test_quick_run_against_the_real_daemon(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, str(REPO / "bench" / "run.py"), "--quick"]
    argv += ["--scenarios", "rtt,fanout,conns", "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "requests/s" in done.stdout
    report = json.loads(out.read_text())
    results = report["results"]
    [rtt] = results["rtt"]["A"]
    assert rtt["requests"] > 0 and rtt["requests_per_s"] > 0
    assert 0 < rtt["p50_ms"] <= rtt["p99_ms"]
    assert rtt["server_cpu_us_per_request"] > 0 and "client_cpu_us_per_request" in rtt
    [fanout] = results["fanout"]["A"]
    assert fanout["followers"] == 2 and fanout["lines"] == 200
    assert fanout["lines_per_s_per_follower"] > 0 and fanout["p99_ms"] >= fanout["p50_ms"]
    # /proc counts CPU in 10 ms ticks, and the quick fan-out (400 messages) now takes the
    # server less than one: 0 is a measurement here, a negative figure would be a bug.
    assert fanout["server_cpu_us_per_message"] >= 0 and "client_cpu_share" in fanout
    [conns] = results["conns"]["A"]
    assert conns["connections"] == conns["alive"] == 20
    assert conns["rss_after_kib"] > 0 and "rss_kib_per_connection" in conns
    assert report["machine"]["cpus"] and "B" not in results["rtt"]
