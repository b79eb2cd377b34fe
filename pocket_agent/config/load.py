"""The settings table, and the layers merged over it: defaults < config.yaml < PA_* < options.

Every setting is declared once, in ``_SETTINGS``: its default written the way it would be
in YAML, its parser, and its environment variable. The layers are merged as raw values and
parsed together afterwards, so a value means the same thing wherever it came from, every
error names the place the operator has to edit, and ``etc/config.example.yaml`` can be
checked against the defaults.
"""

import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, cast

import attrs
import yaml

from .parse import (
    ConfigError,
    Parse,
    at_least,
    choice,
    env_bool,
    env_int,
    fail,
    list_of,
    optional,
    parse_bool,
    parse_duration,
    parse_environment,
    parse_int,
    parse_mapping,
    parse_network,
    parse_path,
    parse_size,
    parse_string,
    parse_text,
)
from .values import Config, NtfyConfig, Overrides

_NTFY_KEYS = ("url", "topic", "token")
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,64}")  # ntfy's own rule for a topic name
NOTIFICATION_EVENTS = ("approval_needed", "run_finished", "run_failed")


def parse_ntfy(value: object, key: str) -> NtfyConfig:
    """SPEC §12 ``notifications.ntfy``: off (url null), or an http(s) URL and a topic.

    Credentials go in ``token``, never in the URL (which the log may show)."""
    fields = parse_mapping(value, key)
    for name in fields:
        if name not in _NTFY_KEYS:
            raise ConfigError(f"{key}.{name}: unknown key")
    url = optional(parse_text)(fields.get("url"), f"{key}.url")
    topic = optional(parse_text)(fields.get("topic"), f"{key}.topic")
    token = optional(parse_text)(fields.get("token"), f"{key}.token")
    if url is None:
        return NtfyConfig(url=None, topic=topic, token=token)
    parts = urllib.parse.urlsplit(url.strip())
    if parts.username is not None or parts.password is not None:  # value not shown
        raise ConfigError(f"{key}.url: has credentials in it; put the token in {key}.token")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"{key}.url", url, "is not an http:// or https:// URL")
    if parts.query or parts.fragment:
        fail(f"{key}.url", url, "has a query or fragment (the topic goes in topic)")
    if topic is None:
        raise ConfigError(f"{key}.topic: must be set when {key}.url is")
    if not _TOPIC.fullmatch(topic):
        fail(f"{key}.topic", topic, "is not a topic name (letters, digits, - and _; 1-64)")
    if token is not None and (token != token.strip() or any(ord(c) < 33 for c in token)):
        raise ConfigError(f"{key}.token: has spaces or control characters")  # value not shown
    return NtfyConfig(url=url.strip().rstrip("/"), topic=topic, token=token)


class _Setting(NamedTuple):
    default: object  # as it would be written in config.yaml
    parse: Parse
    env: str | None = None


_COUNT = at_least(parse_int, 1)
_POSITIVE_SIZE = at_least(parse_size, 1)
_LEVELS = {"debug": "debug", "info": "info", "warn": "warn", "warning": "warn", "error": "error"}
_FORMATS = {"json": "json", "text": "text"}
_APPROVALS = {"phone": "phone", "off": "off"}
_EVENTS = {name: name for name in NOTIFICATION_EVENTS}

_SETTINGS: dict[str, _Setting] = {
    "listen": _Setting(["ssl:8443"], list_of(parse_text, non_empty=True)),
    "tls.cert": _Setting("certs/server.crt", parse_path, "PA_TLS_CERT"),
    "tls.key": _Setting("certs/server.key", parse_path, "PA_TLS_KEY"),
    "data_dir": _Setting("data", parse_path, "PA_DATA_DIR"),
    "auth.token_file": _Setting(None, optional(parse_path)),  # null: <data_dir>/auth_token
    "auth.trust_loopback": _Setting(True, parse_bool),
    "auth.allowed_origins": _Setting([], list_of(parse_text)),
    "auth.trusted_proxies": _Setting([], list_of(parse_network)),
    "projects.allowed_roots": _Setting(["~"], list_of(parse_path)),
    "timeouts.execution": _Setting("5m", parse_duration, "PA_EXECUTION_TIMEOUT"),
    "timeouts.no_output": _Setting(0, parse_duration),
    "timeouts.kill_grace": _Setting("10s", parse_duration),
    "timeouts.idle": _Setting("10m", parse_duration, "PA_IDLE_TIMEOUT"),
    "timeouts.ping_interval": _Setting("30s", parse_duration, "PA_PING_INTERVAL"),
    "timeouts.pong_timeout": _Setting("60s", parse_duration, "PA_PONG_TIMEOUT"),
    "timeouts.shutdown": _Setting("30s", parse_duration),
    "timeouts.permission": _Setting("10m", parse_duration, "PA_PERMISSION_TIMEOUT"),
    "limits.max_connections": _Setting(100, _COUNT, "PA_MAX_CONNECTIONS"),
    "limits.max_projects": _Setting(100, _COUNT, "PA_MAX_PROJECTS"),
    "limits.max_message_size": _Setting("1MiB", _POSITIVE_SIZE, "PA_MESSAGE_SIZE_LIMIT"),
    "limits.max_concurrent_executions": _Setting(10, _COUNT),
    "limits.executions_per_minute": _Setting(10, _COUNT),
    "limits.messages_per_second": _Setting(50, _COUNT),
    "limits.send_buffer": _Setting("8MiB", _POSITIVE_SIZE),
    "claude.binary": _Setting("claude", parse_text, "PA_CLAUDE_BINARY"),
    "claude.default_model": _Setting(None, optional(parse_text), "PA_CLAUDE_MODEL"),
    "claude.extra_args": _Setting([], list_of(parse_string)),
    "claude.env": _Setting({}, parse_environment),
    "claude.allow_dangerous_options": _Setting(False, parse_bool),
    "claude.approvals": _Setting("phone", choice(_APPROVALS)),
    "log_rotation.size": _Setting("100MB", _POSITIVE_SIZE, "PA_LOG_ROTATION_SIZE"),
    "log_rotation.count": _Setting(10000, _COUNT, "PA_LOG_ROTATION_COUNT"),
    "log_rotation.compress": _Setting(True, parse_bool),
    "log_rotation.max_age": _Setting("30d", parse_duration),
    "log_rotation.fsync_interval": _Setting("1s", parse_duration),
    "logging.level": _Setting("info", choice(_LEVELS), "PA_LOG_LEVEL"),
    "logging.format": _Setting("json", choice(_FORMATS), "PA_LOG_FORMAT"),
    "logging.file": _Setting("server.log", optional(parse_path)),
    "logging.raw_output": _Setting(False, parse_bool, "PA_LOG_RAW_OUTPUT"),
    "logging.trace": _Setting(False, parse_bool, "PA_TRACE_ENABLED"),
    "metrics.listen": _Setting(None, optional(parse_text)),
    "manhole.enabled": _Setting(False, parse_bool, "PA_ENABLE_MANHOLE"),
    "manhole.listen": _Setting("tcp:2222:interface=127.0.0.1", parse_text),
    "manhole.authorized_keys": _Setting("~/.ssh/authorized_keys", parse_path),
    "notifications.ntfy": _Setting({"url": None, "topic": None, "token": None}, parse_ntfy),
    "notifications.events": _Setting(list(NOTIFICATION_EVENTS), list_of(choice(_EVENTS))),
}
_SECTIONS = {key.partition(".")[0] for key in _SETTINGS if "." in key}
# Environment values are text; these settings need it turned into YAML's types first.
_FROM_ENV: dict[Parse, Callable[[str, str], object]] = {parse_bool: env_bool, _COUNT: env_int}
# Overrides attribute -> setting; the option is named "--" + attribute with dashes.
_OVERRIDES = {
    "listen": "listen",
    "data_dir": "data_dir",
    "claude": "claude.binary",
    "log_level": "logging.level",
}


_NO_OVERRIDES = Overrides()
_Layer = dict[str, tuple[object, str]]  # dotted key -> (raw value, where it came from)


def _absolute(root: Path, path: str | Path) -> Path:
    """Expand "~", anchor at root, normalise; symlinks are kept as the operator wrote them."""
    return Path(os.path.abspath(root / os.path.expanduser(path)))


def _anchor(value: object, root: Path) -> Any:
    if isinstance(value, Path):
        return _absolute(root, value)
    if isinstance(value, tuple):
        return tuple(_anchor(item, root) for item in value)
    return value


def _read_file(overrides: Overrides, root: Path) -> tuple[Path | None, str, object]:
    """(path, name used in messages, parsed YAML) of the config file, if there is one."""
    if overrides.config_file:
        path, source = _absolute(root, overrides.config_file), overrides.config_file
    else:
        path, source = root / "config.yaml", "config.yaml"
        if not path.exists():
            return None, source, None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"--config: {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{source}: cannot read {path}: {e.strerror}") from None
    try:
        return path, source, yaml.safe_load(data)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None


def _file_layer(document: object, source: str) -> _Layer:
    """The file's settings by dotted key; unknown keys are refused, not ignored."""
    layer: _Layer = {}

    def add(key: str, value: object) -> None:
        if key not in _SETTINGS:
            raise ConfigError(f"{source}: {key}: unknown key")
        layer[key] = (value, f"{source}: {key}")

    for name, value in parse_mapping(document, f"{source}: top level").items():
        if name in _SECTIONS:
            for sub, sub_value in parse_mapping(value, f"{source}: {name}").items():
                add(f"{name}.{sub}", sub_value)
        else:
            add(str(name), value)
    return layer


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for key, setting in _SETTINGS.items():
        text = environ.get(setting.env) if setting.env else None
        if setting.env and text:  # an empty variable counts as unset
            from_env = _FROM_ENV.get(setting.parse, parse_string)
            layer[key] = (from_env(text, setting.env), setting.env)
    return layer


def _override_layer(overrides: Overrides) -> _Layer:
    layer: _Layer = {}
    for name, key in _OVERRIDES.items():
        value = getattr(overrides, name)
        if value:
            raw = list(value) if isinstance(value, tuple | list) else value
            layer[key] = (raw, "--" + name.replace("_", "-"))
    return layer


def _build(values: Mapping[str, Any], **fields: Any) -> Config:
    """Config from dotted keys: a section field takes the keys under its name."""
    for field in attrs.fields(Config):
        section = field.type
        if isinstance(section, type) and attrs.has(section):
            names = (f.name for f in attrs.fields(section))
            fields[field.name] = section(**{n: values[f"{field.name}.{n}"] for n in names})
        elif field.name in values:
            fields[field.name] = values[field.name]
    return Config(**fields)


def load_config(
    overrides: Overrides = _NO_OVERRIDES,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """Merge defaults, the config file, PA_* variables and overrides; raise ConfigError."""
    root = _absolute(Path.cwd() if cwd is None else cwd, overrides.root or ".")
    config_file, source, document = _read_file(overrides, root)
    raw: _Layer = {key: (setting.default, key) for key, setting in _SETTINGS.items()}
    raw |= _file_layer(document, source)
    raw |= _env_layer(os.environ if environ is None else environ)
    raw |= _override_layer(overrides)
    values = {key: _anchor(_SETTINGS[key].parse(*raw[key]), root) for key in _SETTINGS}
    if values["auth.token_file"] is None:
        values["auth.token_file"] = cast(Path, values["data_dir"]) / "auth_token"
    binary = cast(str, values["claude.binary"])
    if os.sep in binary:  # a path, not a name on PATH: anchor it like every other path
        values["claude.binary"] = str(_absolute(root, binary))
    return _build(values, root=root, config_file=config_file, insecure=overrides.insecure)
