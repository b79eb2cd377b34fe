"""Screenshots of the web app for the docs, and its first-load weight.

    python bench/screenshots.py [--out docs/screenshots]

Starts the real daemon (twistd, 127.0.0.1 port 0, TLS) with the fake claude
(tests/fake_claude), prepares three project directories in a scratch HOME, and runs
``node tests/browser/screenshots.mjs``, which drives Debian's chromium (playwright-core;
``npm ci --prefix tests/browser`` first) through pairing, the projects screen with an
approval badge, a conversation with Markdown, tool cards with an Edit diff and a Bash
command, an open approval sheet, and a failed run, and writes ``<screen>-light.png`` and
``<screen>-dark.png`` (390x844) to ``--out``. It also prints the bytes transferred on a
first load and the time until the page is connected. The daemon is stopped by its pid.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.daemon import DaemonPool, FakeClaudeRig  # noqa: E402

SHOP = '"""A tiny shop."""\n\nPRICE = 10\n\n\ndef total(count: int) -> int:\n    return count * PRICE\n'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    node = shutil.which("node")
    if node is None:
        sys.exit("node is not installed")
    with tempfile.TemporaryDirectory(prefix="pa-") as scratch:
        base = Path(scratch)
        rig = FakeClaudeRig(base)
        pool = DaemonPool()
        try:
            daemon = pool.start(base / "root", base / "home", env=rig.env)
            for name in ("notes", "tomato-tracker", "webshop"):
                (daemon.home / name).mkdir()
            (daemon.home / "webshop" / "shop.py").write_text(SHOP)
            origin = f"https://127.0.0.1:{daemon.port}"
            env = {
                **os.environ,
                "PA_URL": f"{origin}/#token={daemon.token}",
                "PA_ORIGIN": origin,
                "PA_TOKEN": daemon.token,
                "PA_HOME": str(daemon.home),
                "PA_OUT": str(out),
                "PA_SCRATCH": str(Path(tempfile.gettempdir()) / "pa-screenshots-failure"),
            }
            done = subprocess.run(
                [node, str(REPO / "tests" / "browser" / "screenshots.mjs")],
                cwd=REPO / "tests" / "browser",
                env=env,
                stdin=subprocess.DEVNULL,
                timeout=180,
                check=False,
            )
            if done.returncode:
                print(daemon.output()[-4000:], file=sys.stderr)
            rig.kill_strays(exclude=[daemon.pid])
            return done.returncode
        finally:
            pool.close()


if __name__ == "__main__":
    sys.exit(main())
