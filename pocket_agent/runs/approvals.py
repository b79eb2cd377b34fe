"""The phone's side of SPEC §10: answering permission prompts, interrupting a turn, and
the project settings that shape later runs.

Commands like the executor's: checked first (nothing changes on a refusal), answered
through the event stream, then applied to the run, whose machine records and announces
what follows. Which prompt is open is the run's business (``Run.prompt``); this desk
only remembers which ids it issued, so a late answer hears ``already_resolved``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import attrs
from twisted.logger import Logger

from pocket_agent.core.errors import InvalidField, PermissionNotFound
from pocket_agent.core.events import Answered, Cause, EventBus, ProjectChanged
from pocket_agent.core.hub import Hub
from pocket_agent.core.projects import Project, ProjectSettings, rule_problem
from pocket_agent.core.registry import ProjectRegistry
from pocket_agent.core.storagewatch import StorageError

from .control import DEFAULT_DENY
from .events import InterruptAnswer, PermissionAnswered, RunInterrupted, SettingsAnswer
from .prompts import Decision, PermissionAnswer, Prompt, PromptKind

if TYPE_CHECKING:
    from .run import Run

# Ids issued since the start, kept so that late answers hear "already_resolved"; the
# oldest are forgotten past this many (they then hear PERMISSION_NOT_FOUND).
REMEMBERED_IDS = 100_000
# A command's first word that can stand in a rule as itself: no wildcard, separator,
# parenthesis or quote the CLI's rule syntax would read.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./+@-]*")


class Approvals:
    log = Logger()

    def __init__(
        self,
        registry: ProjectRegistry,
        hub: Hub,
        bus: EventBus,
        storage_failed: Callable[[str, OSError], StorageError],
    ) -> None:
        """``storage_failed(project_id, error)`` turns an OSError into the refusal."""
        self.registry = registry
        self.hub = hub
        self.bus = bus
        self._storage_failed = storage_failed
        self._issued: dict[str, str] = {}  # permission id -> project id

    def issued(self, prompt_id: str, project_id: str) -> None:
        self._issued[prompt_id] = project_id
        if len(self._issued) > REMEMBERED_IDS:
            del self._issued[next(iter(self._issued))]

    # ------------------------------------------------------------------ commands

    def respond(self, cause: Cause, project_id: str, answer: PermissionAnswer) -> None:
        """The first answer wins, from whichever device; later ones are told so."""
        project = self.registry.get(project_id)
        run = cast("Run | None", project.run)
        prompt = run.prompt(answer.permission_id) if run is not None else None
        if run is None or prompt is None:
            if self._issued.get(answer.permission_id) != project_id:
                raise PermissionNotFound(answer.permission_id)
            self._answer(cause, project_id, answer.permission_id, "already_resolved")
            return
        decision = decide(prompt, answer, cause.connection_id)
        if answer.remember and decision.behavior == "allow":
            rule = rule_for(prompt)
            if rule is not None:
                # Announced with the resolution's project_state, right after the answer.
                self._save(project, project.settings.remembering(rule))
        self._answer(cause, project_id, answer.permission_id, "applied")
        run.answer(answer.permission_id, decision)

    def interrupt(self, cause: Cause, project_id: str) -> None:
        project = self.registry.get(project_id)
        run = cast("Run | None", project.run)
        self.bus.emit(
            Answered(cause, InterruptAnswer(project_id, "idle" if run is None else "interrupting"))
        )
        if run is not None and run.interrupt():
            self.bus.emit(RunInterrupted(project_id, run.run_id))  # the event log says it

    def settings(
        self,
        cause: Cause,
        project_id: str,
        allowed_tools: tuple[str, ...] | None,
        approvals: str | None,
    ) -> None:
        """Replace what is given; it applies from the next run on."""
        project = self.registry.get(project_id)
        settings = project.settings
        if allowed_tools is not None:
            settings = attrs.evolve(settings, allowed_tools=tuple(dict.fromkeys(allowed_tools)))
        if approvals is not None:
            settings = attrs.evolve(settings, approvals=approvals)
        self._save(project, settings)
        snapshot = self.hub.snapshot(project)
        self.bus.emit(Answered(cause, SettingsAnswer(snapshot)))
        self.bus.emit(ProjectChanged(snapshot))

    # ------------------------------------------------------------------ helpers

    def _answer(self, cause: Cause, project_id: str, permission_id: str, status: str) -> None:
        self.bus.emit(Answered(cause, PermissionAnswered(project_id, permission_id, status)))

    def _save(self, project: Project, settings: ProjectSettings) -> None:
        """Stored before anything is said; a refused write changes nothing."""
        previous = project.settings
        project.settings = settings
        try:
            self.registry.save(project)
        except OSError as e:
            project.settings = previous
            raise self._storage_failed(project.id, e) from None


def decide(prompt: Prompt, answer: PermissionAnswer, connection_id: str) -> Decision:
    """What the CLI will be told; InvalidField (and nothing changes) for an answer that
    does not fit the prompt."""
    if answer.answers is not None and prompt.kind is not PromptKind.QUESTION:
        raise InvalidField("data.answers", f"only for a question; this prompt is a {prompt.kind}")
    if answer.behavior == "deny":
        for name in ("updated_input", "answers"):
            if getattr(answer, name) is not None:
                raise InvalidField(f"data.{name}", "only with behavior allow")
        message = answer.message or DEFAULT_DENY  # the CLI takes a deny without one as malformed
        return Decision("deny", message=message, by_connection_id=connection_id)
    updated: dict[str, Any] = dict(
        answer.updated_input if answer.updated_input is not None else prompt.ask.input
    )
    if answer.answers is not None:
        updated["answers"] = dict(answer.answers)
    return Decision("allow", updated_input=updated, by_connection_id=connection_id)


def rule_for(prompt: Prompt) -> str | None:
    """The ``allowed_tools`` rule that ``remember`` adds: the tool, or for Bash the
    command's first word (``Bash(git:*)``); None for questions and plans."""
    if prompt.kind is not PromptKind.TOOL:
        return None
    rule = prompt.ask.tool_name
    if rule == "Bash":
        command = prompt.ask.input.get("command")
        words = command.split() if isinstance(command, str) else []
        if not words:
            return rule
        if not _PLAIN_WORD.fullmatch(words[0]):
            # The model wrote the command: a "*", "," or ")" in the rule would allow
            # more than the person approved ("Bash(*:*)"), so nothing is remembered.
            return None
        rule = f"Bash({words[0]}:*)"
    return rule if rule_problem(rule) is None else None
