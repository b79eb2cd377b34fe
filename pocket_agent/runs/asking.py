"""A run's permission prompts (SPEC §10): from the CLI's control lines to open prompts,
and the answers back on its stdin.

The run machine decides *when* (a prompt opens ``awaiting_approval``, a stop closes
them all); this is *what*: building the preview before a prompt is shown, the timer of
``timeouts.permission``, the ``control_response`` the CLI is owed, and the sink's
Records. A prompt the CLI withdraws while its preview is being built is dropped unseen.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pocket_agent.times import from_seconds

from .channel import StdinChannel
from .control import (
    ToolAsk,
    Unsupported,
    Withdrawn,
    allow_line,
    deny_line,
    error_line,
    read_control,
)
from .prompts import Decision, OpenPrompts, Prompt, Resolution

Previewer = Callable[[str, Mapping[str, Any]], "Deferred[Mapping[str, Any] | None]"]


class ControlInputs(Protocol):
    """The machine inputs the CLI's control lines become."""

    def permission_asked(self, prompt: Prompt) -> None: ...
    def permission_withdrawn(self, request_id: str) -> None: ...


class PromptInputs(Protocol):
    def permission_answered(self, permission_id: str, decision: Decision) -> None: ...


class PromptSink(Protocol):
    """``flipped``: whether the run started or stopped awaiting approval with this one."""

    def permission_opened(self, prompt: Prompt, flipped: bool) -> None:
        """A prompt is open (``awaiting_approval`` holds while any is)."""

    def permission_closed(self, prompt: Prompt, decision: Decision, flipped: bool) -> None:
        """A prompt is decided, whoever decided it; the CLI has been told unless it cannot
        hear it (gone) or cancels it itself (an interrupt)."""


class RunPrompts:
    log = Logger()

    def __init__(
        self,
        run_id: str,
        clock: IReactorTime,
        timeout: float,
        sink: PromptSink,
        previewer: Previewer,
    ) -> None:
        """``timeout``: ``timeouts.permission`` (0: a prompt waits as long as the run)."""
        self.run_id = run_id
        self.clock = clock
        self.timeout = timeout
        self.sink = sink
        self.previewer = previewer
        self.open = OpenPrompts()
        self.stdin: StdinChannel | None = None  # once claude is spawned
        self.closed = False  # the run is over: a preview that comes late is dropped
        self._preparing: dict[str, bool] = {}  # CLI request id -> withdrawn meanwhile

    def control(self, machine: ControlInputs, message: dict[str, Any]) -> None:
        control = read_control(message)
        if isinstance(control, ToolAsk):
            self._prepare(machine, control)
        elif isinstance(control, Unsupported):
            if self.stdin is not None:
                self.stdin.write_line(error_line(control.request_id, control.error))
        elif isinstance(control, Withdrawn):
            if control.request_id in self._preparing:
                self._preparing[control.request_id] = True
            else:
                machine.permission_withdrawn(control.request_id)

    def _prepare(self, machine: ControlInputs, ask: ToolAsk) -> None:
        """Build the preview (it reads the file), then the prompt is asked of the machine;
        one the CLI withdrew meanwhile is dropped unseen."""
        self._preparing[ask.request_id] = False

        def failed(failure: Any) -> None:
            self.log.failure("Building the preview of {tool} failed", failure, tool=ask.tool_name)

        def ready(preview: Mapping[str, Any] | None) -> None:
            if self._preparing.pop(ask.request_id, True) or self.closed:
                return
            created = from_seconds(self.clock.seconds())
            limit = self.timeout
            expires = from_seconds(self.clock.seconds() + limit) if limit > 0 else None
            prompt = Prompt(str(uuid.uuid4()), self.run_id, ask, created, expires, preview)
            machine.permission_asked(prompt)

        d = maybeDeferred(self.previewer, ask.tool_name, ask.input)
        d.addErrback(failed)
        d.addCallback(ready)
        d.addErrback(lambda f: self.log.failure("Asking for {tool} failed", f, tool=ask.tool_name))

    def open_prompt(self, prompt: Prompt, inputs: PromptInputs) -> None:
        self.open.add(prompt)
        if self.timeout > 0:
            prompt.timer = self.clock.callLater(
                self.timeout,
                inputs.permission_answered,
                prompt.permission_id,
                Decision.deny(Resolution.TIMEOUT),
            )
        self.sink.permission_opened(prompt, flipped=len(self.open) == 1)

    def answer(self, permission_id: str, decision: Decision) -> bool:
        """Tell the CLI and record it; False when the prompt is not open (any more)."""
        prompt = self.open.pop(permission_id)
        if prompt is None:
            return False
        self._tell(prompt, decision)
        self.sink.permission_closed(prompt, decision, flipped=not self.open)
        return True

    def refuse(self, prompt: Prompt, reason: Resolution) -> None:
        """A prompt that comes too late (the run is ending): recorded, and denied at once."""
        decision = Decision.deny(reason)
        self.sink.permission_opened(prompt, flipped=False)  # never open: nobody could answer
        self._tell(prompt, decision)
        self.sink.permission_closed(prompt, decision, flipped=False)

    def close_all(self, reason: Resolution, tell: bool) -> None:
        """Resolve every open prompt as a deny, before an interrupt or the first signal;
        ``tell`` False when the CLI cannot hear it or cancels them itself (interrupt)."""
        for prompt in self.open:
            decision = Decision.deny(reason)
            self.open.pop(prompt.permission_id)
            if tell:
                self._tell(prompt, decision)
            self.sink.permission_closed(prompt, decision, flipped=not self.open)

    def withdraw(self, request_id: str) -> bool:
        prompt = self.open.by_request(request_id)
        if prompt is None:
            return False
        self.open.pop(prompt.permission_id)
        self.sink.permission_closed(
            prompt, Decision.deny(Resolution.CANCELLED), flipped=not self.open
        )
        return True

    def _tell(self, prompt: Prompt, decision: Decision) -> None:
        if self.stdin is None:
            return
        request_id = prompt.ask.request_id
        if decision.behavior == "allow":
            updated = decision.updated_input
            self.stdin.write_line(
                allow_line(request_id, prompt.ask.input if updated is None else updated)
            )
        else:
            self.stdin.write_line(deny_line(request_id, decision.message))
