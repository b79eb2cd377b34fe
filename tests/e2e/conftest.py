"""Fixtures that start daemons and clients and always stop them again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .daemon import Client, Daemon, DaemonPool, connect


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """HOME for the daemon: the default allowed root ``~``; project dirs live in here."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The daemon's root directory (a sibling of HOME, so never a project root)."""
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def daemons() -> Iterator[DaemonPool]:
    pool = DaemonPool()
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for a module's read-only checks."""
    base = tmp_path_factory.mktemp("shared")
    pool = DaemonPool()
    try:
        yield pool.start(base / "root", base / "home")
    finally:
        pool.close()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    """``clients(daemon, **connect_kwargs)``: connected clients, all closed at teardown."""
    opened: list[Client] = []

    def open_client(daemon: Daemon, **kwargs: Any) -> Client:
        client = connect(daemon, **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()
