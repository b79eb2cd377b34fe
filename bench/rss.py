"""Where the daemon's memory goes after millions of streamed records.

    python bench/rss.py [--records 3000000] [--followers 2]       # in process
    python bench/rss.py --tracemalloc [--records 300000]           # allocation sites
    python bench/rss.py --daemon [--records 1000000]               # the real daemon

In process (default): the whole domain and transport as in bench/fanout_inmemory.py
(claude's stdout -> run -> History.append -> hub -> each follower's autobahn
connection -> an in-memory autobahn client that discards what it decodes), on the
test Harness' memory reactor. RSS (VmRSS) and glibc's ``mallinfo2`` (arena bytes in
use vs free), ``sys.getallocatedblocks()`` (live Python allocations) and the count
of gc-tracked objects by type are printed before the stream, after it, after
``gc.collect()``, after ``malloc_trim(0)`` and after the harness stops.

``--tracemalloc``: the same stream with tracemalloc on (slow, so fewer records);
the top allocation sites still alive after the stream (vs before), after gc.

``--daemon``: the real ``twistd`` daemon (TLS on 127.0.0.1, the fake claude's
``slow:<n>:<--pause>``) streams ``--records`` records to one follower over wss://
(reconnecting whenever it is dropped as a slow consumer); the daemon's RSS per run,
then, inside the idle daemon through ``gdb -p <pid> -batch`` (GIL taken with
``PyGILState_Ensure``, a script run with ``PyRun_SimpleString``; needs gdb and
ptrace rights): objects by type, ``gc.collect()`` under ``DEBUG_SAVEALL`` (what only
reference cycles held, and which attributes hold its bytes), ``malloc_trim(0)``, and
the RSS after each step. With ``--tracemalloc`` too, the daemon runs with
``PYTHONTRACEMALLOC=1`` and its top allocation sites are printed.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import LINE, proc_rss_kib

LIBC = ctypes.CDLL("libc.so.6")


class Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


LIBC.mallinfo2.restype = Mallinfo2


def mib(n: float) -> str:
    return f"{n / 2**20:7.1f} MiB"


def object_counts() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def report(label: str, pid: int | None = None) -> dict[str, float]:
    import os

    info = LIBC.mallinfo2()
    figures = {
        "rss": proc_rss_kib(pid or os.getpid()) * 1024,
        "heap": info.arena,
        "in_use": info.uordblks,
        "free": info.fordblks,
        "mmapped": info.hblkhd,
        "blocks": sys.getallocatedblocks(),
        "objects": len(gc.get_objects()),
    }
    print(
        f"{label:<28} RSS {mib(figures['rss'])} | malloc heap {mib(info.arena)}: "
        f"in use {mib(info.uordblks)}, free {mib(info.fordblks)}; mmapped {mib(info.hblkhd)} "
        f"| Python blocks {figures['blocks']:>9,} | gc objects {figures['objects']:>8,}",
        flush=True,
    )
    return figures


class Stream:
    """A Harness with one project, ``followers`` joined clients and a run under way."""

    def __init__(self, followers: int) -> None:
        from tests.support import Harness

        self.tmp = Path(tempfile.mkdtemp(prefix="pa-rss-"))
        self.harness = Harness(self.tmp)
        self.clients = [self.harness.hello()[0] for _ in range(followers)]
        path = str(self.harness.project_dir("app"))
        first = self.clients[0]
        self.project = first.request("project_create", data={"path": path})[0]["project_id"]
        for client in self.clients:
            client.request("project_join", project_id=self.project)
        self.runs = 0
        self.received = 0

    def run(self, records: int) -> None:
        """One run streaming ``records`` lines, to its end."""
        harness = self.harness
        self.clients[0].request("execute", project_id=self.project, data={"prompt": "go"})
        process = harness.clock.processes[-1]
        line = LINE + b"\n"
        batch = line * 100
        for _ in range(records // 100):
            process.protocol.outReceived(batch)
            self.flush()
        result = {"type": "result", "subtype": "success", "is_error": False, "result": "ok"}
        process.emit(result)
        process.exit(0)
        self.flush()
        harness.clock.advance(60)
        self.flush()
        self.runs += 1

    def flush(self) -> None:
        for pump in self.harness.pumps:
            pump.flush()
        self.harness.clock.advance(0.001)
        for client in self.clients:  # the test client keeps every message: forget them
            self.received += len(client.protocol.received)
            client.protocol.received.clear()

    def stop(self) -> None:
        self.harness.stop()
        self.clients = []
        shutil.rmtree(self.tmp, ignore_errors=True)


def stream_in_runs(stream: Stream, records: int, per_run: int) -> float:
    started = time.perf_counter()
    left = records
    while left > 0:
        stream.run(min(per_run, left))
        left -= per_run
    return time.perf_counter() - started


def in_process(records: int, followers: int, per_run: int) -> None:
    stream = Stream(followers)
    gc.collect()
    before_counts = object_counts()
    base = report("before the stream")
    elapsed = stream_in_runs(stream, records, per_run)
    print(
        f"streamed {records:,} records in {stream.runs} runs to {followers} followers "
        f"in {elapsed:.0f} s ({records / elapsed:,.0f}/s); frames decoded {stream.received:,}"
    )
    after = report("after the stream")
    gc.collect()
    after_gc = report("after gc.collect()")
    LIBC.malloc_trim(0)
    trimmed = report("after malloc_trim(0)")
    counts = object_counts()
    growth = [(n - before_counts.get(t, 0), t, n) for t, n in counts.items()]
    growth.sort(reverse=True)
    print("gc-tracked objects that grew over the stream (type: before -> after):")
    for diff, kind, n in growth[:12]:
        if diff > 0:
            print(f"    {kind:<32} {before_counts.get(kind, 0):>8,} -> {n:>8,} (+{diff:,})")
    stream.stop()
    gc.collect()
    LIBC.malloc_trim(0)
    stopped = report("after stop + gc + trim")
    print()
    print(
        f"RSS grew {mib(after['rss'] - base['rss'])} over the stream; gc.collect() gave back "
        f"{mib(after['rss'] - after_gc['rss'])}, malloc_trim(0) {mib(after_gc['rss'] - trimmed['rss'])}"
    )
    print(
        f"live Python blocks: {base['blocks']:,} before, {trimmed['blocks']:,} after "
        f"(+{trimmed['blocks'] - base['blocks']:,}); malloc in use "
        f"{mib(base['in_use'])} -> {mib(trimmed['in_use'])}; "
        f"after stopping everything RSS {mib(stopped['rss'])}"
    )


def with_tracemalloc(records: int, followers: int, per_run: int) -> None:
    stream = Stream(followers)
    stream.run(1000)  # warm up: imports, caches, first history file
    gc.collect()
    tracemalloc.start(8)
    before = tracemalloc.take_snapshot()
    report("before the stream")
    elapsed = stream_in_runs(stream, records, per_run)
    gc.collect()
    report(f"after {records:,} records, gc")
    after = tracemalloc.take_snapshot()
    print(f"({elapsed:.0f} s under tracemalloc)")
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diffs = after.filter_traces(filters).compare_to(before.filter_traces(filters), "lineno")
    total = sum(d.size_diff for d in diffs)
    print(f"net growth of traced memory: {total / 1024:,.0f} KiB; top sites:")
    for diff in diffs[:15]:
        frame = diff.traceback[0]
        print(
            f"    {diff.size_diff / 1024:+9.1f} KiB {diff.count_diff:+7d} blocks  "
            f"{frame.filename}:{frame.lineno}"
        )
    print("biggest still-alive sites after the stream (traceback of the top one):")
    top = after.filter_traces(filters).statistics("traceback")[:3]
    for stat in top:
        print(f"    {stat.size / 1024:,.1f} KiB in {stat.count} blocks")
        for line in stat.traceback.format()[-6:]:
            print(f"        {line}")
    tracemalloc.stop()
    stream.stop()


# ------------------------------------------------------------------ real daemon


PROBE = """
import gc, json, sys, collections, ctypes
out = {}
def figures(tag):
    out[tag] = {
        "rss_kib": int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]),
        "blocks": sys.getallocatedblocks(),
        "objects": len(gc.get_objects()),
    }
figures("idle")
out["types"] = collections.Counter(type(o).__qualname__ for o in gc.get_objects()).most_common(12)
gc.set_debug(gc.DEBUG_SAVEALL)
gc.collect()
garbage = list(gc.garbage)
gc.garbage.clear()
gc.set_debug(0)
out["garbage"] = collections.Counter(type(o).__qualname__ for o in garbage).most_common(15)
# bytes are not gc-tracked: count those the garbage containers refer to
held = {}
for o in garbage:
    for r in gc.get_referents(o):
        if isinstance(r, (bytes, bytearray)):
            held[id(r)] = len(r)
out["garbage_bytes"] = [len(held), sum(held.values())]
# which attribute of which class holds them (directly, or through a list/deque)
def size_of(value):
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, (list, collections.deque)):
        return sum(len(v) for v in value if isinstance(v, (bytes, bytearray)))
    return 0
holders = collections.Counter()
for o in garbage:
    attrs = getattr(o, "__dict__", None)
    if isinstance(attrs, dict) and not isinstance(o, type):
        for name, value in attrs.items():
            n = size_of(value)
            if n:
                holders[type(o).__module__ + "." + type(o).__qualname__ + "." + name] += n
out["holders"] = holders.most_common(10)
mods = collections.Counter(
    type(o).__module__ + "." + type(o).__qualname__ for o in garbage
    if hasattr(o, "__dict__") and not isinstance(o, type)
)
out["garbage_instances"] = mods.most_common(15)
del garbage, held
gc.collect()
figures("after gc.collect()")
ctypes.CDLL("libc.so.6").malloc_trim(0)
figures("after malloc_trim(0)")
import tracemalloc
if tracemalloc.is_tracing():
    stats = tracemalloc.take_snapshot().statistics("lineno")[:12]
    out["tracemalloc"] = [[str(s.traceback[0]), s.size, s.count] for s in stats]
json.dump(out, open(OUT, "w"), indent=1)
"""


def gdb_python(pid: int, code: str, out: Path) -> dict[str, Any]:
    """Run ``code`` inside the idle daemon (GIL taken through gdb), reading ``out``."""
    script = out.with_suffix(".py")
    script.write_text(f"OUT = {str(out)!r}\n" + code)
    gdb = shutil.which("gdb")
    if gdb is None:
        return {"error": "gdb not found"}
    run = f'exec(open("{script}").read())'.replace('"', '\\"')
    subprocess.run(
        [
            gdb,
            "-p",
            str(pid),
            "-batch",
            "-ex",
            "call (int) PyGILState_Ensure()",
            "-ex",
            f'call (int) PyRun_SimpleString("{run}")',
            "-ex",
            "call (void) PyGILState_Release($1)",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        return json.loads(out.read_text())
    except (OSError, ValueError) as e:
        return {"error": str(e)}


def show_probe(label: str, probe: dict[str, Any]) -> None:
    if "error" in probe:
        print(f"{label}: probe failed: {probe['error']}")
        return
    for tag in ("idle", "after gc.collect()", "after malloc_trim(0)"):
        f = probe[tag]
        print(
            f"{label}, {tag:<21} RSS {mib(f['rss_kib'] * 1024)} | Python blocks "
            f"{f['blocks']:>9,} | gc objects {f['objects']:>8,}"
        )


def daemon(records: int, per_run: int, pause: float, trace: bool) -> None:
    import websocket

    from bench.soak import Closed, Conn, Daemon, write_config

    base = Path(tempfile.mkdtemp(prefix="pa-rss-daemon-"))
    root, home = base / "root", base / "home"
    root.mkdir()
    (home / "app").mkdir(parents=True)
    write_config(root, "8MiB")
    env = {"PYTHONTRACEMALLOC": "1"} if trace else {}
    server = Daemon(root, home, root / "daemon.out", env)
    try:
        port = server.wait_ready()
        token = (root / "data" / "auth_token").read_text().strip()
        ctx = ssl.create_default_context(cafile=str(root / "certs" / "server.crt"))
        conn = Conn(f"wss://127.0.0.1:{port}/ws", ctx, token)
        conn.send("project_create", {"path": str(home / "app")}, request_id="c")
        project = None
        while project is None:
            message = conn.recv(10)
            if message and message.get("request_id") == "c":
                project = message["project_id"]
        time.sleep(1)
        before = gdb_python(server.pid, PROBE, base / "before.json")
        show_probe("in the daemon, before the stream", before)
        start = proc_rss_kib(server.pid) * 1024
        print(f"daemon {server.pid}: RSS before {mib(start)}", flush=True)
        streamed, started, drops = 0, time.perf_counter(), 0
        while streamed < records:
            n = min(per_run, records - streamed)
            conn.send("execute", {"prompt": f"fake:slow:{n}:{pause}"}, project_id=project)
            finished = False
            while True:
                try:
                    payload = conn.recv_raw(60)
                except (OSError, websocket.WebSocketException, Closed) as e:
                    if isinstance(e, TimeoutError):
                        raise
                    # Dropped as a slow consumer: reconnect and follow again; the
                    # join's project_state tells whether the run has ended meanwhile.
                    drops += 1
                    conn.close()
                    conn = Conn(f"wss://127.0.0.1:{port}/ws", ctx, token)
                    conn.send("project_join", project_id=project)
                    finished = True
                    continue
                if payload is None:
                    raise TimeoutError("the run stalled")
                if payload.startswith(b'{"type":"agent_message"'):
                    streamed += 1
                    continue
                message = json.loads(payload)
                kind = message.get("type")
                if kind == "execution_finished":
                    finished = True
                elif finished and kind == "project_state":
                    if message["data"]["state"] != "EXECUTING":
                        break
            rate = streamed / (time.perf_counter() - started)
            rss = proc_rss_kib(server.pid) * 1024
            print(
                f"  {streamed:>9,} records ({rate:,.0f}/s, follower dropped {drops}x): "
                f"RSS {mib(rss)}",
                flush=True,
            )
        conn.close()
        time.sleep(2)
        idle = proc_rss_kib(server.pid) * 1024
        print(f"idle after {streamed:,} records: RSS {mib(idle)}")
        after = gdb_python(server.pid, PROBE, base / "after.json")
        show_probe("in the daemon, after the stream", after)
        types_before = dict(before.get("types", []))
        print("  gc-tracked objects by type (before -> after the stream):")
        for kind, n in after.get("types", []):
            print(f"    {kind:<28} {types_before.get(kind, '?'):>8} -> {n:>8}")
        if "garbage" in after:
            count, size = after["garbage_bytes"]
            print(
                f"  unreachable cycles freed by gc.collect() refer to {count} bytes objects "
                f"({size / 2**20:.1f} MiB); the cycles' objects by type:"
            )
            for kind, n in after["garbage"]:
                print(f"    {kind:<28} {n:>8}")
            print("  bytes held by attribute (directly or in a list/deque):")
            for holder, n in after.get("holders", []):
                print(f"    {holder:<70} {n / 2**20:8.2f} MiB")
            print("  class instances in those cycles:")
            for kind, n in after["garbage_instances"]:
                print(f"    {kind:<60} {n:>6}")
        for site, size, count in after.get("tracemalloc", []):
            print(f"    {size / 1024:10.1f} KiB {count:7d} blocks  {site}")
        trimmed = after.get("after malloc_trim(0)", {}).get("rss_kib", 0) * 1024
        print(
            f"RSS grew {mib(idle - start)}; after gc + malloc_trim in the daemon "
            f"{mib(trimmed)}, still {mib(trimmed - start)} above the start"
        )
    except (OSError, websocket.WebSocketException) as e:
        print(f"error: {type(e).__name__}: {e}")
    finally:
        status = server.stop()
        print(f"daemon {server.pid} stopped, exit status {status}")
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--followers", type=int, default=2)
    parser.add_argument("--per-run", type=int, default=100_000, help="records per run")
    parser.add_argument("--pause", type=float, default=0.0002, help="--daemon: s per line")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--daemon", action="store_true")
    args = parser.parse_args()
    if args.daemon:
        daemon(args.records or 1_000_000, args.per_run, args.pause, args.tracemalloc)
    elif args.tracemalloc:
        with_tracemalloc(args.records or 300_000, args.followers, args.per_run)
    else:
        in_process(args.records or 3_000_000, args.followers, args.per_run)


if __name__ == "__main__":
    main()
