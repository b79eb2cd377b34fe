"""The ``client`` subcommand's command line, and where it connects when the command
line does not say: the local root's listener, token and certificate."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from twisted.python import usage

from pocket_agent import __version__
from pocket_agent.config import ConfigError, Overrides, load_config
from pocket_agent.core.projects import APPROVALS, rule_problem
from pocket_agent.net.listeners import endpoint_parts, listen_plan
from pocket_agent.wire.errors import ProtocolError
from pocket_agent.wire.requests import (
    PermissionResponseRequest,
    ProjectSettingsRequest,
    parse_options,
)

from .client_flows import TERMINAL_DENY

COMMAND = "pocket-agent-server client"


# ------------------------------------------------------------------- options


class _Common(usage.Options):
    """Accepted before and after the subcommand name."""

    optParameters = [
        ["url", None, None, "wss://host:port/ws (default: the local root's listener)."],
        ["token", None, None, "Auth token (default: <root>/data/auth_token)."],
        ["root", "r", None, "Server root directory for the defaults (default: cwd)."],
        ["config", "c", None, "Server config file (default: <root>/config.yaml)."],
        ["cafile", None, None, "Trust this CA/certificate (default: <root>/certs/server.crt)."],
    ]
    optFlags = [
        ["json", None, "One JSON frame a line on stdout, for scripts."],
        ["insecure-skip-verify", None, "Do not verify the server's certificate."],
    ]

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"pocket-agent-server {__version__}")
        sys.exit(0)


def _seq(options: usage.Options, name: str) -> int | None:
    """An optional non-negative integer option, checked here (usage's coercers are untyped)."""
    value = options[name]
    if value is None:
        return None
    if not str(value).isdigit():
        raise usage.UsageError(f"--{name} must be a non-negative integer, not {value!r}")
    return int(value)


class _Positional(_Common):
    """Subcommand options with named positional arguments (``ARGS``)."""

    ARGS: tuple[str, ...] = ()

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """Options may follow the arguments (``history PROJECT --limit 5``): usage's getopt
        stops at the first argument, so the options are moved in front first."""
        args = list(sys.argv[1:] if options is None else options)
        takes_value = {f"--{o[:-1]}" for o in self.longOpt if o.endswith("=")}
        takes_value |= {
            f"-{c}"
            for c, nxt in zip(self.shortOpt, self.shortOpt[1:] + " ", strict=True)
            if nxt == ":"
        }
        flags: list[str] = []
        positional: list[str] = []
        while args:
            arg = args.pop(0)
            if arg == "--":
                positional += args
                break
            if arg.startswith("-") and arg != "-":
                flags.append(arg)
                if arg in takes_value and args:
                    flags.append(args.pop(0))
            else:
                positional.append(arg)
        super().parseOptions([*flags, "--", *positional])

    def parseArgs(self, *args: str) -> None:
        if len(args) != len(self.ARGS):
            wanted = " ".join(name.upper() for name in self.ARGS) or "no arguments"
            raise usage.UsageError(f"expected {wanted}, got {len(args)} argument(s)")
        self.update(zip(self.ARGS, args, strict=True))


class _NoArgs(_Positional):
    pass


class _ProjectArg(_Positional):
    synopsis = "PROJECT"
    ARGS = ("project",)


class CreateOptions(_Positional):
    synopsis = "PATH [--create]"
    ARGS = ("path",)
    optFlags = [["create", None, "Make the directory when it is missing."]]


class JoinOptions(_ProjectArg):
    synopsis = "PROJECT [--after SEQ]"
    longdesc = (
        "Follows until Ctrl-C (exit 0). On a terminal each permission prompt is asked "
        "(y allows, anything else denies); otherwise, and for questions, it is shown with "
        "the command that answers it."
    )
    optParameters = [["after", None, None, "First replay every record after SEQ."]]

    def postOptions(self) -> None:
        self["after"] = _seq(self, "after")


class ExecOptions(_Positional):
    synopsis = "PROJECT PROMPT [--model M] [--permission-mode MODE] [--approvals phone|off]"
    longdesc = (
        "Exit status: 0 when the run succeeded, 130 when it was interrupted (client "
        "interrupt, a phone's Stop) or Ctrl-C left it running, 1 otherwise. On a terminal "
        "each permission prompt is asked (y allows, anything else denies); otherwise, and "
        "for questions, it is shown with the command that answers it."
    )
    ARGS = ("project", "prompt")
    optParameters = [
        ["model", None, None, "Claude model for this run."],
        ["permission-mode", None, None, "default, acceptEdits, plan, auto or dontAsk."],
        [
            "approvals",
            None,
            None,
            "phone: permission prompts wait for an answer (this terminal, a phone, "
            "client approve); off: the CLI decides alone (default: the project's setting, "
            "else the server's claude.approvals).",
        ],
    ]

    def postOptions(self) -> None:
        """The run's options through the wire's own parser: refused here as the server would."""
        options = {
            "model": self["model"],
            "permission_mode": self["permission-mode"],
            "approvals": self["approvals"],
        }
        try:
            self["options"] = parse_options(options)
        except ProtocolError as e:
            field = (e.details or {}).get("field", "options")
            raise usage.UsageError(f"{field}: {e.message}") from None


class _PermissionArgs(_Positional):
    ARGS = ("project", "permission_id")


class ApproveOptions(_PermissionArgs):
    synopsis = "PROJECT PERMISSION_ID [--remember] [--input JSON] [--answer QUESTION=ANSWER ...]"
    longdesc = "Exit 0 when applied or already resolved, 1 on an error (an unknown id)."
    optFlags = [["remember", None, "Also allow this tool (Bash: its first word) from now on."]]
    optParameters = [["input", None, None, "Run the tool with this JSON object as its input."]]

    def __init__(self) -> None:
        super().__init__()
        self["answer"] = {}

    def opt_answer(self, pair: str) -> None:
        """QUESTION=ANSWER: answer a question prompt (repeat for several questions)."""
        question, equals, answer = pair.partition("=")
        if not equals or not question:
            raise usage.UsageError(f"--answer {pair!r}: expected QUESTION=ANSWER")
        self["answer"][question] = answer

    def postOptions(self) -> None:
        updated = None
        if self["input"] is not None:
            try:
                updated = json.loads(self["input"])
            except ValueError as e:
                raise usage.UsageError(f"--input: not JSON ({e})") from None
            if not isinstance(updated, dict):
                raise usage.UsageError("--input must be a JSON object (it replaces the input)")
        self["request"] = PermissionResponseRequest(
            permission_id=self["permission_id"],
            behavior="allow",
            updated_input=updated,
            answers=dict(self["answer"]) or None,
            remember=bool(self["remember"]),
        )


class DenyOptions(_PermissionArgs):
    synopsis = "PROJECT PERMISSION_ID [--message TEXT]"
    longdesc = "Exit 0 when applied or already resolved, 1 on an error (an unknown id)."
    optParameters = [["message", "m", TERMINAL_DENY, "What Claude is told."]]

    def postOptions(self) -> None:
        if not self["message"] or "\x00" in self["message"]:
            raise usage.UsageError("--message must be non-empty text")
        self["request"] = PermissionResponseRequest(
            permission_id=self["permission_id"], behavior="deny", message=self["message"]
        )


class SettingsOptions(_ProjectArg):
    synopsis = "PROJECT [--allow RULE ...] [--clear] [--approvals phone|off]"
    longdesc = "Without options: show the settings. They apply from the project's next run on."
    optFlags = [["clear", None, "Remove every allowed_tools rule."]]
    optParameters = [["approvals", None, None, "phone (ask for each prompt) or off."]]

    def __init__(self) -> None:
        super().__init__()
        self["allow"] = []

    def opt_allow(self, rule: str) -> None:
        """Replace the allowed_tools rules (repeat for several: Read, 'Bash(git:*)')."""
        problem = rule_problem(rule)
        if problem is not None:
            raise usage.UsageError(f"--allow {rule!r}: {problem}")
        self["allow"].append(rule)

    def postOptions(self) -> None:
        approvals = self["approvals"]
        if approvals is not None and approvals not in APPROVALS:
            raise usage.UsageError(f"--approvals must be one of {', '.join(APPROVALS)}")
        if self["allow"] and self["clear"]:
            raise usage.UsageError("--allow and --clear exclude each other")
        rules = () if self["clear"] else tuple(self["allow"]) or None
        change = rules is not None or approvals is not None
        self["change"] = (
            ProjectSettingsRequest(allowed_tools=rules, approvals=approvals) if change else None
        )


class HistoryOptions(_ProjectArg):
    synopsis = "PROJECT [--limit N] [--after SEQ | --before SEQ]"
    optParameters = [
        ["limit", "n", "50", "Records per page (1-1000)."],
        ["after", None, None, "The oldest records after SEQ."],
        ["before", None, None, "The newest records before SEQ (default: the newest)."],
    ]

    def postOptions(self) -> None:
        limit = _seq(self, "limit")
        if limit is None or not 1 <= limit <= 1000:
            raise usage.UsageError("--limit must be from 1 to 1000")
        self["limit"] = limit
        self["after"], self["before"] = _seq(self, "after"), _seq(self, "before")
        if self["after"] is not None and self["before"] is not None:
            raise usage.UsageError("--after and --before exclude each other")


class ClientOptions(_Common):
    synopsis = f"{COMMAND} [--url URL] [--token TOKEN] [--json] COMMAND [ARGS]"
    subCommands: Any = [
        ["health", None, _NoArgs, "The server's health."],
        ["list", None, _NoArgs, "Every project."],
        ["create", None, CreateOptions, "Add a project directory."],
        ["join", None, JoinOptions, "Follow a project live until Ctrl-C."],
        ["exec", None, ExecOptions, "Run a prompt and stream it."],
        ["kill", None, _ProjectArg, "Kill a project's run."],
        ["interrupt", None, _ProjectArg, "Stop a project's turn; the session goes on."],
        ["approve", None, ApproveOptions, "Allow a pending permission prompt."],
        ["deny", None, DenyOptions, "Deny a pending permission prompt."],
        ["settings", None, SettingsOptions, "Show or change a project's approval settings."],
        ["history", None, HistoryOptions, "A page of a project's history."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError(
                "a command is required: " + ", ".join(c[0] for c in self.subCommands)
            )

    def common(self, name: str) -> Any:
        """A shared option, from after the command name or else from before it."""
        sub = self.subOptions
        return sub[name] if sub is not None and sub[name] else self[name]


# ------------------------------------------------------------------- target


@attrs.frozen
class Target:
    url: str
    token: str | None
    cafile: Path | None
    verify: bool = True


def local_url(listen: Sequence[tuple[str, str, bool]]) -> str:
    """The loopback URL of the first TCP listener in a ``listen_plan``."""
    for original, endpoint, tls in listen:
        kind, args, kwargs = endpoint_parts(endpoint)
        if kind not in ("tcp", "tcp6"):
            continue
        port = kwargs.get("port") or args[0]
        interface = kwargs.get("interface") or (args[1] if len(args) > 1 else "")
        host = interface if interface not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if interface == "::":
            host = "::1"
        secure = tls or original.startswith("ssl:")
        host = f"[{host}]" if ":" in host else host
        return f"{'wss' if secure else 'ws'}://{host}:{port}/ws"
    raise ConfigError("no TCP listener configured; pass --url")


def resolve_target(options: ClientOptions, environ: Mapping[str, str]) -> Target:
    """``--url``/``--token``/``--cafile``, each defaulting to the local root's own."""
    url, token, cafile = (options.common(k) for k in ("url", "token", "cafile"))
    verify = not options.common("insecure-skip-verify")
    if url is None or token is None or (cafile is None and verify):
        overrides = Overrides(config_file=options.common("config"), root=options.common("root"))
        config = load_config(overrides, environ)
        url = url or local_url(listen_plan(config))
        if token is None:
            try:
                token = config.auth.token_file.read_text().strip() or None
            except OSError:
                token = None  # loopback needs none when the server trusts it
        if cafile is None and verify and config.tls.cert.exists():
            cafile = str(config.tls.cert)
    return Target(url, token, Path(cafile) if cafile else None, verify)
