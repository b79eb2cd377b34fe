"""The web app at ``/`` in a real browser (SPEC §11), against the real daemon.

Each test runs ``node tests/browser/<scenario>.mjs`` against the daemon: the script drives
Debian's chromium through playwright-core, finds things only by the accessible names and
data attributes of the contract, fails on any console or page error, and exits non-zero
with a message (and a screenshot and DOM dump in the test's tmp dir) when a step fails.
The daemon runs on 127.0.0.1 (ephemeral port, TLS) with the fake claude.

Needs ``node`` and ``npm ci --prefix tests/browser`` (.ci/run does both, and installs
chromium when missing): without them these tests fail, they never skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .daemon import Daemon, DaemonPool, FakeClaudeRig

pytestmark = pytest.mark.e2e

BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = Path(os.environ.get("PA_CHROMIUM", "/usr/bin/chromium"))
SCENARIO_TIMEOUT = 90.0


def node() -> str:
    """The node binary, and the installed playwright-core; a clear failure otherwise."""
    binary = shutil.which("node")
    assert binary, "node is not installed (the browser tests need node >= 20)"
    assert (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(), (
        f"playwright-core is not installed: run npm ci --prefix {BROWSER_DIR}"
    )
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    return binary


class Browser:
    """Runs one scenario script against one daemon."""

    def __init__(self, daemon: Daemon, rig: FakeClaudeRig, scratch: Path) -> None:
        self.daemon = daemon
        self.rig = rig
        self.scratch = scratch

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.daemon.port}"

    def project_dir(self, name: str) -> Path:
        path = self.daemon.home / name
        path.mkdir()
        return path

    def run(self, scenario: str, *, project: Path | None = None, token: str | None = None) -> str:
        """Run ``<scenario>.mjs``; its whole output is in the failure message."""
        token = token or self.daemon.token
        env = {
            **os.environ,
            "PA_URL": f"{self.origin}/#token={token}",
            "PA_ORIGIN": self.origin,
            "PA_TOKEN": token,
            "PA_SCRATCH": str(self.scratch / scenario),
            "PA_CHROMIUM": str(CHROMIUM),
        }
        if project is not None:
            env["PA_PROJECT"] = str(project)
        try:
            done = subprocess.run(
                [node(), str(BROWSER_DIR / f"{scenario}.mjs")],
                cwd=BROWSER_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=SCENARIO_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise AssertionError(
                f"scenario {scenario} still running after {SCENARIO_TIMEOUT}s:\n"
                f"{text(e.stdout)}\n{text(e.stderr)}"
            ) from None
        output = f"{done.stdout}\n{done.stderr}"
        print(output)  # shown with -rP, and on failure
        assert done.returncode == 0, (
            f"browser scenario {scenario} failed (exit {done.returncode}):\n{output}\n"
            f"--- daemon output (tail) ---\n{self.daemon.output()[-4000:]}"
        )
        return output


def text(output: str | bytes | None) -> str:
    """What a timed-out subprocess had printed (bytes, str or None, depending)."""
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""


def start(pool: DaemonPool, base: Path) -> tuple[Daemon, FakeClaudeRig]:
    rig = FakeClaudeRig(base)
    return pool.start(base / "root", base / "home", env=rig.env), rig


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One daemon for the scenarios that each work in a project of their own."""
    base = tmp_path_factory.mktemp("browser")
    pool = DaemonPool()
    try:
        daemon, rig = start(pool, base)
        yield Browser(daemon, rig, base / "scratch")
        rig.kill_strays(exclude=[daemon.pid])
    finally:
        pool.close()


def test_pairing_by_link_and_by_typed_token(tmp_path: Path) -> None:
    """#token= pairs and is scrubbed; a wrong token shows the pairing screen, Pair fixes it.
    A daemon of its own: the wrong token counts as failed attempts from 127.0.0.1."""
    pool = DaemonPool()
    try:
        daemon, rig = start(pool, tmp_path)
        Browser(daemon, rig, tmp_path / "scratch").run("pairing")
    finally:
        pool.close()


def test_create_project_prompt_answer_and_reload(browser: Browser) -> None:
    browser.run("conversation", project=browser.project_dir("conversation"))


def test_approve_and_deny_a_write(browser: Browser) -> None:
    project = browser.project_dir("approvals")
    browser.run("approvals", project=project)
    assert (project / "allowed.txt").read_text() == "written from the phone\n"
    assert not (project / "denied.txt").exists()


def test_stop_then_kill_a_hanging_run(browser: Browser) -> None:
    browser.run("stop", project=browser.project_dir("stop"))


def test_offline_mid_run_shows_every_record_once(browser: Browser) -> None:
    browser.run("offline", project=browser.project_dir("offline"))


def test_unknown_records_and_a_five_megabyte_line_do_not_break_the_page(
    browser: Browser,
) -> None:
    browser.run("badinput", project=browser.project_dir("badinput"))


def test_load_older_on_a_long_history(browser: Browser) -> None:
    browser.run("history", project=browser.project_dir("history"))


def test_notifications_only_while_the_tab_is_hidden(browser: Browser) -> None:
    """SPEC §11: a prompt waiting and a run ending notify (project and tool/outcome named)
    only while the tab is hidden."""
    browser.run("notify", project=browser.project_dir("notify"))


def test_hostile_html_everywhere_stays_inert(browser: Browser) -> None:
    """HTML and script in Markdown, tool paths and content, preview diffs, a project path
    and frames no real server sends: nothing runs, no CSP violation, no token leak."""
    project = browser.project_dir("attack")
    (project / "<img src=x onerror=window.__xss('project')>").mkdir()
    browser.run("attack", project=project)


def test_the_approval_sheet_keeps_a_half_typed_reason(browser: Browser) -> None:
    browser.run("sheet", project=browser.project_dir("sheet"))


def test_scrolling_up_loads_older_history(browser: Browser) -> None:
    browser.run("scroll", project=browser.project_dir("scroll"))


def test_project_settings_panel_removes_a_rule_and_turns_approvals_off(browser: Browser) -> None:
    """The rule "Allow always" remembered is listed and removable from the phone, and
    approvals can be switched off for the project (another page follows both)."""
    browser.run("settings", project=browser.project_dir("settings"))
