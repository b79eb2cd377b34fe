"""The wheel carries the twistd plugin, and twistd finds it once installed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.e2e
def test_wheel_contains_the_plugin_and_no_namespace_init(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True,
        timeout=120,
    )  # fmt: skip
    [wheel] = tmp_path.glob("pocket_agent_server-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/pocket_agent_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names
    assert "pocket_agent/tap.py" in names
    assert "pocket_agent/py.typed" in names


@pytest.mark.e2e
def test_installed_twistd_lists_the_plugin() -> None:
    out = subprocess.run(
        [str(BIN / "twistd"), "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "pocket-agent" in out
