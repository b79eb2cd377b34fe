"""``token --rotate`` while the server runs: the old token's connections must go."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pocket_agent.core.hub import Hub

from .auth import TokenFile


class TokenWatch(Service):
    """``token --rotate`` writes a new token file: close the connections that paired
    with the old one (within ``INTERVAL``; SPEC §7). New ones already need the new one."""

    INTERVAL = 2.0
    log = Logger()

    def __init__(self, tokens: TokenFile, hub: Hub, clock: Any) -> None:
        self.tokens = tokens
        self.hub = hub
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self._known: str | None = None

    def startService(self) -> None:
        super().startService()
        self._known = self.tokens.current()
        self._loop.start(self.INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        try:
            token = self.tokens.current()
        except (OSError, ValueError) as e:
            self.log.error("Cannot read the token file: {error}", error=str(e))
            return
        if token != self._known:
            self._known = token
            closed = self.hub.revoke_token_sessions()
            self.log.warn("Token rotated: closed {n} connections that used the old one", n=closed)
