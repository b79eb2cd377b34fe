"""The options of one ``execute``, already well-formed (the wire checked their types).

Policy (dangerous options, the path policy for ``add_dirs``) is applied by
:func:`pocket_agent.runs.command.apply_policy`.
"""

from __future__ import annotations

from typing import Any

import attrs

REDACTED = "<redacted>"
DANGEROUS = ("dangerously_skip_permissions", "mcp_config")
PERMISSION_MODES = ("default", "acceptEdits", "plan", "auto", "dontAsk")
APPROVALS = ("phone", "off")
BYPASS = "bypassPermissions"


@attrs.frozen
class RunOptions:
    model: str | None = None
    fallback_model: str | None = None
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    append_system_prompt: str | None = None
    add_dirs: tuple[str, ...] = ()
    mcp_config: str | None = None
    dangerously_skip_permissions: bool = False
    approvals: str | None = None  # "phone" | "off": SPEC §10, over the project's and server's

    @property
    def dangerous(self) -> list[str]:
        """The options set here that need ``claude.allow_dangerous_options``."""
        names = [n for n in DANGEROUS if getattr(self, n)]
        if self.permission_mode == BYPASS:
            names.append("permission_mode")
        return names

    def to_record(self) -> dict[str, Any]:
        """For the history: an MCP config may carry its servers' secrets, so it is not kept."""
        shown = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in attrs.asdict(self, recurse=False).items()
            if v not in (None, (), False)
        }
        if "mcp_config" in shown:
            shown["mcp_config"] = REDACTED
        return shown
