"""What a reloaded configuration changes, and which of it the running server can take.

SIGHUP loads ``config.yaml`` again; :func:`reconcile` compares it with the running
configuration key by key and builds the configuration to run from now on: the new
value of every key that can change live, the running value of every other one (those
wait for a restart, and the operator is told so).
"""

from pathlib import Path
from typing import Any

import attrs

from .values import Config

# Keys (or sections, ending in ".") the server applies without a restart; every other
# key, including ones added later, is reported as needing one until it is listed here.
LIVE = (
    "limits.",
    "timeouts.",
    "logging.level",
    "logging.raw_output",
    "logging.trace",
    "projects.allowed_roots",
    "auth.trust_loopback",
    "auth.allowed_origins",
    "auth.trusted_proxies",
    "claude.default_model",
    "claude.extra_args",
    "claude.allow_dangerous_options",
    "claude.approvals",
    "claude.env",
    "notifications.",
)
# Where the values came from, not a setting: taken as loaded, never reported.
SILENT = ("config_file",)
# Values never written to the log (claude.env may hold API keys).
SECRET_NAMES = ("env", "token", "secret", "password")
SECRET_SUFFIXES = ("_token", "_secret", "_password")
# On a public ntfy server the topic is the password: whoever knows it can read along.
SECRET_KEYS = ("notifications.ntfy.topic",)
HIDDEN = "<hidden>"


def is_live(key: str) -> bool:
    return any(key == live or (live.endswith(".") and key.startswith(live)) for live in LIVE)


def is_secret(key: str) -> bool:
    last = key.rpartition(".")[2]
    return key in SECRET_KEYS or last in SECRET_NAMES or last.endswith(SECRET_SUFFIXES)


def show(key: str, value: object) -> str:
    """A value the way an operator would write it, secrets hidden (an unset one shows)."""
    if is_secret(key) and value is not None:
        return HIDDEN
    if isinstance(value, tuple):
        return "[" + ", ".join(show(key, item) for item in value) + "]"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return f"{value:g}s" if key.startswith("timeouts.") else f"{value:g}"
    if isinstance(value, Path):
        return str(value)
    return str(value)


@attrs.frozen
class Change:
    key: str
    old: object
    new: object
    live: bool

    @property
    def old_shown(self) -> str:
        return show(self.key, self.old)

    @property
    def new_shown(self) -> str:
        return show(self.key, self.new)


@attrs.frozen
class Reconciled:
    config: Config  # what runs from now on
    changes: tuple[Change, ...]

    @property
    def applied(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.live)

    @property
    def need_restart(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if not c.live)


def reconcile(running: Config, loaded: Config) -> Reconciled:
    """Every key whose value differs, and the configuration with the live ones applied."""
    changes: list[Change] = []
    merged = _merge(running, loaded, "", changes)
    return Reconciled(merged, tuple(changes))


def _merge(running: Any, loaded: Any, prefix: str, changes: list[Change]) -> Any:
    values = {}
    for field in attrs.fields(type(running)):
        key = prefix + field.name
        old, new = getattr(running, field.name), getattr(loaded, field.name)
        if attrs.has(type(old)) and type(old) is type(new):
            values[field.name] = _merge(old, new, key + ".", changes)
        elif key in SILENT:
            values[field.name] = new
        elif old != new:
            live = is_live(key)
            changes.append(Change(key, old, new, live))
            values[field.name] = new if live else old
        else:
            values[field.name] = old
    return attrs.evolve(running, **values)
