"""From an ``execute`` request to the exact argv, environment and cwd of ``claude``.

Pure functions over the config, so every flag and every refusal is unit-tested
without spawning anything.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .config import ClaudeConfig
from .protocol import ErrorCode, ProtocolError, invalid

REDACTED = "<redacted>"
BASE_FLAGS = ("-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose")
PERMISSION_MODES = ("default", "acceptEdits", "plan", "auto", "dontAsk")
DANGEROUS = ("dangerously_skip_permissions", "mcp_config")
# Markers that make a nested claude believe it runs inside another Claude Code session.
INHERITED_MARKERS = ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT")


@attrs.frozen
class RunOptions:
    """The validated ``execute`` options; ``to_wire`` is what the client Record shows."""

    model: str | None = None
    fallback_model: str | None = None
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    append_system_prompt: str | None = None
    add_dirs: tuple[str, ...] = ()
    mcp_config: str | None = None
    dangerously_skip_permissions: bool = False

    def to_wire(self) -> dict[str, Any]:
        """For the history: an MCP config may carry its servers' secrets, so it is not kept."""
        wire = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in attrs.asdict(self, recurse=False).items()
            if v not in (None, (), False)
        }
        if "mcp_config" in wire:
            wire["mcp_config"] = REDACTED
        return wire


def _text(field: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str) or not value or "\x00" in value:
            raise invalid(f"data.options.{field}", "must be a non-empty string")
        if value.startswith("-"):
            # The CLI's list flags read values until the next "-…" word, so such a
            # value would smuggle in a flag of the client's choosing.
            raise invalid(f"data.options.{field}", "must not start with '-'")
        return value

    return parse


def _texts(field: str) -> Callable[[object], tuple[str, ...]]:
    one = _text(field)

    def parse(value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise invalid(f"data.options.{field}", "must be a list of strings")
        return tuple(one(v) for v in value)

    return parse


def _permission_mode(value: object) -> str:
    if value == "bypassPermissions":
        return value
    if value not in PERMISSION_MODES:
        raise invalid(
            "data.options.permission_mode", f"must be one of {', '.join(PERMISSION_MODES)}"
        )
    return str(value)


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise invalid("data.options.dangerously_skip_permissions", "must be a boolean")
    return value


def _mcp_config(value: object) -> str:
    if isinstance(value, dict):
        import json

        return json.dumps(value)
    return _text("mcp_config")(value)


_PARSERS: dict[str, Callable[[object], Any]] = {
    "model": _text("model"),
    "fallback_model": _text("fallback_model"),
    "permission_mode": _permission_mode,
    "allowed_tools": _texts("allowed_tools"),
    "disallowed_tools": _texts("disallowed_tools"),
    "append_system_prompt": _text("append_system_prompt"),
    "add_dirs": _texts("add_dirs"),
    "mcp_config": _mcp_config,
    "dangerously_skip_permissions": _flag,
}


def parse_options(
    raw: object, allow_dangerous: bool, resolve_dir: Callable[[str], Path]
) -> RunOptions:
    """Validate ``data.options``; ``resolve_dir`` applies the project path policy to add_dirs."""
    if raw is None:
        return RunOptions()
    if not isinstance(raw, dict):
        raise invalid("data.options", "must be a JSON object")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        parser = _PARSERS.get(name)
        if parser is None:
            raise invalid(f"data.options.{name}", "unknown option")
        if value is None:
            continue
        values[name] = parser(value)
    dangerous = [n for n in DANGEROUS if values.get(n)]
    if values.get("permission_mode") == "bypassPermissions":
        dangerous.append("permission_mode")
    if dangerous and not allow_dangerous:
        raise invalid(
            f"data.options.{dangerous[0]}",
            "dangerous options are disabled (claude.allow_dangerous_options)",
        )
    if "add_dirs" in values:
        resolved = []
        for raw_dir in values["add_dirs"]:
            try:
                resolved.append(str(resolve_dir(raw_dir)))
            except ProtocolError as e:
                reason = (e.details or {}).get("reason", e.message)
                raise invalid("data.options.add_dirs", f"{raw_dir!r}: {reason}") from None
        values["add_dirs"] = tuple(resolved)
    return RunOptions(**values)


def build_argv(
    binary: str, claude: ClaudeConfig, options: RunOptions, session_id: str | None
) -> list[str]:
    argv = [binary, *BASE_FLAGS]
    if session_id:
        argv += ["--resume", session_id]  # never -c: it takes no argument in the real CLI
    model = options.model or claude.default_model
    if model:
        argv += ["--model", model]
    if options.fallback_model:
        argv += ["--fallback-model", options.fallback_model]
    if options.permission_mode:
        argv += ["--permission-mode", options.permission_mode]
    if options.append_system_prompt:
        argv += ["--append-system-prompt", options.append_system_prompt]
    if options.mcp_config:
        argv += ["--mcp-config", options.mcp_config]
    if options.dangerously_skip_permissions:
        argv.append("--dangerously-skip-permissions")
    # The variadic flags last but before extra_args, each list closed by the next flag.
    for flag, values in (
        ("--allowedTools", options.allowed_tools),
        ("--disallowedTools", options.disallowed_tools),
        ("--add-dir", options.add_dirs),
    ):
        if values:
            argv += [flag, *values]
    argv += claude.extra_args
    return argv


def printable_argv(argv: list[str]) -> list[str]:
    """The argv as recorded in history: the value of ``--mcp-config`` left out."""
    shown = list(argv)
    for i, arg in enumerate(shown[:-1]):
        if arg == "--mcp-config":
            shown[i + 1] = REDACTED
    return shown


def build_env(claude: ClaudeConfig, inherited: Mapping[str, str]) -> dict[str, str]:
    """The server's environment + ``claude.env`` + ``NO_COLOR=1``.

    Always an explicit dict: ``spawnProcess`` without ``env`` gives an empty environment.
    """
    env = {k: v for k, v in inherited.items() if k not in INHERITED_MARKERS}
    env.update(claude.env_dict)
    env["NO_COLOR"] = "1"
    return env


def find_binary(binary: str, path: str | None) -> str:
    """The executable to run, or CLAUDE_NOT_FOUND saying why."""
    if "/" in binary:
        found: str | None = (
            binary if os.access(binary, os.X_OK) and Path(binary).is_file() else None
        )
    else:
        found = shutil.which(binary, path=path)
    if found is None:
        raise ProtocolError(
            ErrorCode.CLAUDE_NOT_FOUND,
            f"the claude binary {binary!r} was not found or is not executable",
            {"binary": binary},
        )
    return found
