"""A fake ``claude`` executable for tests; its docstring lists scenarios and env variables."""

from pathlib import Path

FAKE_CLAUDE = Path(__file__).with_name("claude")
