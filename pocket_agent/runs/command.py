"""From validated run options to the exact argv, environment and cwd of ``claude``.

Pure functions over the config, so every flag and every refusal is unit-tested
without spawning anything.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

from pocket_agent.config import ClaudeConfig
from pocket_agent.core.errors import (
    ClaudeNotFound,
    InvalidOption,
    OptionPathRefused,
    PathRefused,
)
from pocket_agent.core.pathpolicy import os_reason, utf8_encodable

from .options import REDACTED, RunOptions

BASE_FLAGS = ("-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose")
PROMPT_TOOL = ("--permission-prompt-tool", "stdio")
# Markers that make a nested claude believe it runs inside another Claude Code session.
INHERITED_MARKERS = ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT")


def apply_policy(
    options: RunOptions, allow_dangerous: bool, resolve_dir: Callable[[str], Path]
) -> RunOptions:
    """The server's rules on top of well-formed options; ``add_dirs`` come back resolved.

    It runs before anything changes, so every refusal is an answer, never a run that
    starts and then fails: a dangerous option is InvalidOption, an ``add_dirs`` entry
    the path policy (or the file system: EACCES, ENAMETOOLONG, a name that is not UTF-8)
    refuses is OptionPathRefused, a path error that names the option."""
    dangerous = options.dangerous
    if dangerous and not allow_dangerous:
        raise InvalidOption(
            dangerous[0], "dangerous options are disabled (claude.allow_dangerous_options)"
        )
    resolved = []
    for raw_dir in options.add_dirs:
        try:
            resolved.append(str(resolve_dir(raw_dir)))
        except PathRefused as e:
            raise OptionPathRefused("add_dirs", e.path, e.reason) from None
        except OSError as e:  # the resolver's business, but be sure
            reason = f"cannot be resolved: {os_reason(e)}"
            raise OptionPathRefused("add_dirs", _shown(raw_dir), reason) from None
        except UnicodeError:
            raise OptionPathRefused("add_dirs", _shown(raw_dir), "not valid UTF-8") from None
        if not utf8_encodable(resolved[-1]):
            reason = "resolves to a name that is not UTF-8"
            raise OptionPathRefused("add_dirs", _shown(raw_dir), reason)
    return attrs.evolve(options, add_dirs=tuple(resolved))


def _shown(raw: str) -> str:
    """A path as a client can be sent it back (no lone surrogates)."""
    return raw.encode("utf-8", "replace").decode()


def build_argv(
    binary: str,
    claude: ClaudeConfig,
    options: RunOptions,
    session_id: str | None,
    approvals: bool = False,
) -> list[str]:
    """``approvals``: the CLI's permission prompts come to us on stdout (SPEC §10)."""
    argv = [binary, *BASE_FLAGS]
    if approvals:
        argv += PROMPT_TOOL
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
    """The executable to run, or ClaudeNotFound."""
    if "/" in binary:
        found: str | None = (
            binary if os.access(binary, os.X_OK) and Path(binary).is_file() else None
        )
    else:
        found = shutil.which(binary, path=path)
    if found is None:
        raise ClaudeNotFound(binary)
    return found
