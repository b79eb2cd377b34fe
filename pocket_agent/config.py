"""The server's configuration: built-in defaults < config.yaml < PA_* environment < options.

Every setting is declared once, in ``_SETTINGS``: its default written the way it would be
in YAML, its parser, and its environment variable. The layers are merged as raw values and
parsed together afterwards, so a value means the same thing wherever it came from, every
error names the place the operator has to edit, and ``etc/config.example.yaml`` can be
checked against the defaults.
"""

import math
import os
import re
import reprlib
from collections.abc import Callable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, cast

import attrs
import yaml


class ConfigError(Exception):
    """A bad configuration, as one line naming the key, variable or option at fault.

    Start-up prints it and exits, so it must send the operator straight to the fix.
    """


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60


def _fail(key: str, value: object, problem: str) -> NoReturn:
    # reprlib keeps the message on one short line whatever the value holds.
    raise ConfigError(f"{key}: {_repr.repr(value)} {problem}")


_Parse = Callable[[object, str], Any]

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_DURATION_UNITS: dict[str, int | Fraction] = {
    "ms": Fraction(1, 1000),
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
}
_DURATION_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern}\s*)+")
_SIZE_UNITS = {"": 1, "b": 1} | {
    prefix + suffix: base**power
    for power, prefix in enumerate("kmgt", start=1)
    for suffix, base in (("b", 1000), ("ib", 1024))
}
_SIZE = re.compile(rf"({_NUMBER})\s*([a-z]*)")


def parse_duration(value: object, key: str) -> float:
    """Seconds from a number of seconds or a string like "30s", "10m", "1h30m", "250ms"."""
    seconds: float | Fraction | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(_NUMBER, text):
            seconds = Fraction(text)
        elif _DURATION.fullmatch(text):
            parts = _DURATION_PART.findall(text)
            seconds = sum(Fraction(n) * _DURATION_UNITS[unit] for n, unit in parts)
    if seconds is not None and seconds >= 0:  # NaN fails this too
        try:
            if math.isfinite(result := float(seconds)):
                return result
        except OverflowError:
            pass
    _fail(key, value, "is not a duration (use 30s, 10m, 1h)")


def parse_size(value: object, key: str) -> int:
    """Bytes from an int or a string like "52428800", "50MB" (10**6) or "1MiB" (2**20)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 0:
            return value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.strip().lower())
        if match and match[2] in _SIZE_UNITS:
            size = Fraction(match[1]) * _SIZE_UNITS[match[2]]
            if size.denominator == 1:
                return int(size)
    _fail(key, value, "is not a size (use 52428800, 50MB, 1MiB)")


def _bool(value: object, key: str) -> bool:
    """Only real booleans: a quoted "no" in YAML is a typo, not a false."""
    if isinstance(value, bool):
        return value
    _fail(key, value, "is not a boolean (use true or false)")


def _int(value: object, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    _fail(key, value, "is not an integer")


def _at_least(parse: Callable[[object, str], int], minimum: int) -> _Parse:
    def parse_and_check(value: object, key: str) -> int:
        number = parse(value, key)
        if number < minimum:
            _fail(key, value, f"is less than {minimum}")
        return number

    return parse_and_check


def _string(value: object, key: str) -> str:
    if isinstance(value, str):
        return value
    _fail(key, value, "is not a string")


def _text(value: object, key: str) -> str:
    if isinstance(value, str) and value.strip():
        return value
    _fail(key, value, "is not a non-empty string")


def _path(value: object, key: str) -> Path:
    """A path as written; load_config expands "~" and anchors it at the root."""
    return Path(_text(value, key))


def _optional(parse: _Parse) -> _Parse:
    return lambda value, key: None if value is None else parse(value, key)


def _list(item: _Parse, *, non_empty: bool = False) -> _Parse:
    def parse_list(value: object, key: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            _fail(key, value, "is not a list")
        if non_empty and not value:
            _fail(key, value, "is empty")
        return tuple(item(entry, f"{key}[{index}]") for index, entry in enumerate(value))

    return parse_list


def _choice(names: Mapping[str, str]) -> _Parse:
    """One of a few words, case-insensitive; ``names`` maps each accepted spelling."""
    shown = ", ".join(dict.fromkeys(names.values()))

    def parse_choice(value: object, key: str) -> str:
        if isinstance(value, str) and value.strip().lower() in names:
            return names[value.strip().lower()]
        _fail(key, value, f"is not one of {shown}")

    return parse_choice


def _mapping(value: object, key: str) -> dict[Any, Any]:
    """A YAML mapping; a section whose keys are all commented out loads as null."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    _fail(key, value, "is not a mapping")


def _environment(value: object, key: str) -> tuple[tuple[str, str], ...]:
    """claude.env as sorted pairs, so Config stays hashable."""
    variables = _mapping(value, key)
    for name, text in variables.items():
        if not isinstance(name, str) or not name or "=" in name:
            _fail(key, name, "is not an environment variable name")
        if not isinstance(text, str):
            _fail(f"{key}.{name}", text, "is not a string (quote it)")
    return tuple(sorted(variables.items()))


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _env_bool(text: str, variable: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE | _FALSE:
        return word in _TRUE
    _fail(variable, text, "is not a boolean (use true/false, yes/no, on/off, 1/0)")


def _env_int(text: str, variable: str) -> int:
    try:
        return int(text)
    except ValueError:
        _fail(variable, text, "is not an integer")


class _Setting(NamedTuple):
    default: object  # as it would be written in config.yaml
    parse: _Parse
    env: str | None = None


_COUNT = _at_least(_int, 1)
_POSITIVE_SIZE = _at_least(parse_size, 1)
_LEVELS = {"debug": "debug", "info": "info", "warn": "warn", "warning": "warn", "error": "error"}
_FORMATS = {"json": "json", "text": "text"}

_SETTINGS: dict[str, _Setting] = {
    "listen": _Setting(["ssl:8443"], _list(_text, non_empty=True)),
    "tls.cert": _Setting("certs/server.crt", _path, "PA_TLS_CERT"),
    "tls.key": _Setting("certs/server.key", _path, "PA_TLS_KEY"),
    "data_dir": _Setting("data", _path, "PA_DATA_DIR"),
    "auth.token_file": _Setting(None, _optional(_path)),  # null: <data_dir>/auth_token
    "auth.trust_loopback": _Setting(True, _bool),
    "auth.allowed_origins": _Setting([], _list(_text)),
    "projects.allowed_roots": _Setting(["~"], _list(_path)),
    "timeouts.execution": _Setting("5m", parse_duration, "PA_EXECUTION_TIMEOUT"),
    "timeouts.no_output": _Setting(0, parse_duration),
    "timeouts.kill_grace": _Setting("10s", parse_duration),
    "timeouts.idle": _Setting("10m", parse_duration, "PA_IDLE_TIMEOUT"),
    "timeouts.ping_interval": _Setting("30s", parse_duration, "PA_PING_INTERVAL"),
    "timeouts.pong_timeout": _Setting("60s", parse_duration, "PA_PONG_TIMEOUT"),
    "timeouts.shutdown": _Setting("30s", parse_duration),
    "limits.max_connections": _Setting(100, _COUNT, "PA_MAX_CONNECTIONS"),
    "limits.max_projects": _Setting(100, _COUNT, "PA_MAX_PROJECTS"),
    "limits.max_message_size": _Setting("1MiB", _POSITIVE_SIZE, "PA_MESSAGE_SIZE_LIMIT"),
    "limits.max_concurrent_executions": _Setting(10, _COUNT),
    "limits.executions_per_minute": _Setting(10, _COUNT),
    "limits.messages_per_second": _Setting(50, _COUNT),
    "limits.send_buffer": _Setting("8MiB", _POSITIVE_SIZE),
    "claude.binary": _Setting("claude", _text, "PA_CLAUDE_BINARY"),
    "claude.default_model": _Setting(None, _optional(_text), "PA_CLAUDE_MODEL"),
    "claude.extra_args": _Setting([], _list(_string)),
    "claude.env": _Setting({}, _environment),
    "claude.allow_dangerous_options": _Setting(False, _bool),
    "log_rotation.size": _Setting("100MB", _POSITIVE_SIZE, "PA_LOG_ROTATION_SIZE"),
    "log_rotation.count": _Setting(10000, _COUNT, "PA_LOG_ROTATION_COUNT"),
    "log_rotation.compress": _Setting(True, _bool),
    "log_rotation.max_age": _Setting("30d", parse_duration),
    "log_rotation.fsync_interval": _Setting("1s", parse_duration),
    "logging.level": _Setting("info", _choice(_LEVELS), "PA_LOG_LEVEL"),
    "logging.format": _Setting("json", _choice(_FORMATS), "PA_LOG_FORMAT"),
    "logging.file": _Setting("server.log", _optional(_path)),
    "logging.raw_output": _Setting(False, _bool, "PA_LOG_RAW_OUTPUT"),
    "logging.trace": _Setting(False, _bool, "PA_TRACE_ENABLED"),
    "metrics.listen": _Setting(None, _optional(_text)),
    "manhole.enabled": _Setting(False, _bool, "PA_ENABLE_MANHOLE"),
    "manhole.listen": _Setting("tcp:2222:interface=127.0.0.1", _text),
    "manhole.authorized_keys": _Setting("~/.ssh/authorized_keys", _path),
}
_SECTIONS = {key.partition(".")[0] for key in _SETTINGS if "." in key}
# Environment values are text; these settings need it turned into YAML's types first.
_FROM_ENV: dict[_Parse, Callable[[str, str], object]] = {_bool: _env_bool, _COUNT: _env_int}
# Overrides attribute -> setting; the option is named "--" + attribute with dashes.
_OVERRIDES = {
    "listen": "listen",
    "data_dir": "data_dir",
    "claude": "claude.binary",
    "log_level": "logging.level",
}


@attrs.frozen(kw_only=True)
class TLSConfig:
    cert: Path
    key: Path


@attrs.frozen(kw_only=True)
class AuthConfig:
    token_file: Path
    trust_loopback: bool
    allowed_origins: tuple[str, ...]


@attrs.frozen(kw_only=True)
class ProjectsConfig:
    allowed_roots: tuple[Path, ...]


@attrs.frozen(kw_only=True)
class Timeouts:
    """All in seconds; no_output 0 means off."""

    execution: float
    no_output: float
    kill_grace: float
    idle: float
    ping_interval: float
    pong_timeout: float
    shutdown: float


@attrs.frozen(kw_only=True)
class Limits:
    max_connections: int
    max_projects: int
    max_message_size: int  # bytes
    max_concurrent_executions: int
    executions_per_minute: int
    messages_per_second: int
    send_buffer: int  # bytes


@attrs.frozen(kw_only=True)
class ClaudeConfig:
    """``binary`` is a bare name (looked up on PATH) or an absolute path."""

    binary: str
    default_model: str | None
    extra_args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # sorted pairs, so the config stays hashable
    allow_dangerous_options: bool

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


@attrs.frozen(kw_only=True)
class LogRotation:
    size: int  # bytes
    count: int  # messages per file
    compress: bool
    max_age: float  # seconds
    fsync_interval: float = 1.0  # seconds; 0 = fsync every record


@attrs.frozen(kw_only=True)
class LoggingConfig:
    level: str  # debug | info | warn | error
    format: str  # json | text
    file: Path | None
    raw_output: bool
    trace: bool


@attrs.frozen(kw_only=True)
class MetricsConfig:
    listen: str | None  # None: /metrics on the main site


@attrs.frozen(kw_only=True)
class ManholeConfig:
    enabled: bool
    listen: str
    authorized_keys: Path


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration; every path in it is absolute."""

    root: Path
    config_file: Path | None
    listen: tuple[str, ...]
    tls: TLSConfig
    data_dir: Path
    auth: AuthConfig
    projects: ProjectsConfig
    timeouts: Timeouts
    limits: Limits
    claude: ClaudeConfig
    log_rotation: LogRotation
    logging: LoggingConfig
    metrics: MetricsConfig
    manhole: ManholeConfig
    insecure: bool


@attrs.frozen
class Overrides:
    """The command-line layer; None or empty means the option was not given."""

    config_file: str | None = None
    root: str | None = None
    listen: tuple[str, ...] = ()  # non-empty replaces the configured list
    data_dir: str | None = None
    claude: str | None = None  # claude.binary
    log_level: str | None = None
    insecure: bool = False


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

    for name, value in _mapping(document, f"{source}: top level").items():
        if name in _SECTIONS:
            for sub, sub_value in _mapping(value, f"{source}: {name}").items():
                add(f"{name}.{sub}", sub_value)
        else:
            add(str(name), value)
    return layer


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for key, setting in _SETTINGS.items():
        text = environ.get(setting.env) if setting.env else None
        if setting.env and text:  # an empty variable counts as unset
            layer[key] = (_FROM_ENV.get(setting.parse, _string)(text, setting.env), setting.env)
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
