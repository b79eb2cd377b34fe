"""Tests for pocket_agent.config: defaults, layering, parsing and error messages."""

import ipaddress
import operator
import os
from pathlib import Path

import attrs
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pocket_agent.config import (
    AuthConfig,
    ClaudeConfig,
    Config,
    ConfigError,
    Limits,
    LoggingConfig,
    LogRotation,
    ManholeConfig,
    MetricsConfig,
    Overrides,
    ProjectsConfig,
    Timeouts,
    TLSConfig,
    load_config,
    parse_duration,
    parse_size,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "config.example.yaml"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home directory, so "~" expands to a known place."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def root(tmp_path: Path, home: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


def load(cwd: Path, text: str | None = None, env: dict[str, str] | None = None, **kw: object):
    """load_config from ``cwd``, with ``text`` as its config.yaml and only ``env`` set."""
    if text is not None:
        (cwd / "config.yaml").write_text(text)
    return load_config(Overrides(**kw), environ=env or {}, cwd=cwd)  # type: ignore[arg-type]


def error(cwd: Path, text: str | None = None, env: dict[str, str] | None = None, **kw: object):
    """The message of the ConfigError that load() raises, checked to be one line."""
    with pytest.raises(ConfigError) as caught:
        load(cwd, text, env, **kw)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults(root: Path, home: Path) -> None:
    assert load(root) == Config(
        root=root,
        config_file=None,
        listen=("ssl:8443",),
        tls=TLSConfig(cert=root / "certs/server.crt", key=root / "certs/server.key"),
        data_dir=root / "data",
        auth=AuthConfig(
            token_file=root / "data/auth_token",
            trust_loopback=True,
            allowed_origins=(),
            trusted_proxies=(),
        ),
        projects=ProjectsConfig(allowed_roots=(home,)),
        timeouts=Timeouts(
            execution=300.0,
            no_output=0.0,
            kill_grace=10.0,
            idle=600.0,
            ping_interval=30.0,
            pong_timeout=60.0,
            shutdown=30.0,
            permission=600.0,
        ),
        limits=Limits(
            max_connections=100,
            max_projects=100,
            max_message_size=1048576,
            max_concurrent_executions=10,
            executions_per_minute=10,
            messages_per_second=50,
            send_buffer=8388608,
        ),
        claude=ClaudeConfig(
            binary="claude",
            default_model=None,
            extra_args=(),
            env=(),
            allow_dangerous_options=False,
            approvals="phone",
        ),
        log_rotation=LogRotation(size=100_000_000, count=10000, compress=True, max_age=2592000.0),
        logging=LoggingConfig(
            level="info", format="json", file=root / "server.log", raw_output=False, trace=False
        ),
        metrics=MetricsConfig(listen=None),
        manhole=ManholeConfig(
            enabled=False,
            listen="tcp:2222:interface=127.0.0.1",
            authorized_keys=home / ".ssh/authorized_keys",
        ),
        insecure=False,
    )


def test_config_is_hashable_and_env_dict(root: Path) -> None:
    config = load(root, "claude: {env: {B: '2', A: '1'}}")
    assert config.claude.env == (("A", "1"), ("B", "2"))
    assert config.claude.env_dict == {"A": "1", "B": "2"}
    assert hash(config) == hash(load(root))


def test_example_file_equals_defaults(root: Path) -> None:
    config = load(root, config_file=str(EXAMPLE))
    assert config.config_file == EXAMPLE
    assert attrs.evolve(config, config_file=None) == load(root)


def test_example_file_documents_every_key() -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    expected = {}
    for field in attrs.fields(Config):
        if attrs.has(field.type):
            expected[field.name] = {f.name for f in attrs.fields(field.type)}
        elif field.name not in ("root", "config_file", "insecure"):
            expected[field.name] = None
    found = {k: set(v) if isinstance(v, dict) else None for k, v in document.items()}
    assert found == expected


def test_example_file_quotes_every_string() -> None:
    """Each string value is quoted, so YAML 1.1 cannot turn it into something else."""
    for line in EXAMPLE.read_text().splitlines():
        value = line.split("#")[0].partition(":")[2].strip()
        if value and value[0] not in "[{":
            assert value[0] == '"' or value in ("true", "false", "null") or value.isdigit(), line


def test_root_config_yaml_is_read(root: Path) -> None:
    config = load(root, "limits: {max_projects: 7}")
    assert config.limits.max_projects == 7
    assert config.config_file == root / "config.yaml"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "timeouts:\n  # idle: 1m\n"])
def test_empty_file_and_sections_are_defaults(root: Path, text: str) -> None:
    defaults = load(root)
    config = load(root, text)
    assert config.config_file == root / "config.yaml"
    assert attrs.evolve(config, config_file=None) == defaults


def test_missing_explicit_config_file(root: Path) -> None:
    (root / "config.yaml").write_text("limits: {max_projects: 7}")
    message = error(root, config_file="other.yaml")
    assert message == f"--config: {root / 'other.yaml'}: no such file"


def test_explicit_config_file_is_relative_to_root(tmp_path: Path, home: Path) -> None:
    (tmp_path / "r" / "conf").mkdir(parents=True)
    (tmp_path / "r" / "conf" / "pa.yaml").write_text("limits: {max_projects: 3}")
    config = load(tmp_path, root="r", config_file="conf/pa.yaml")
    assert config.root == tmp_path / "r"
    assert config.config_file == tmp_path / "r" / "conf" / "pa.yaml"
    assert config.limits.max_projects == 3


def test_root_defaults_to_process_cwd(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root)
    for variable in [name for name in os.environ if name.startswith("PA_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("PA_LOG_LEVEL", "debug")
    config = load_config()
    assert config.root == root
    assert config.logging.level == "debug"  # environ defaults to os.environ


# --- precedence ---------------------------------------------------------------------------

# (attribute, file text, environment, overrides, value after each layer:
#  default, + file, + environment, + overrides)
LAYERS = [
    (
        "logging.level",
        "logging: {level: debug}",
        {"PA_LOG_LEVEL": "ERROR"},
        {"log_level": "Warning"},
        ("info", "debug", "error", "warn"),
    ),
    (
        "claude.binary",
        "claude: {binary: claude-file}",
        {"PA_CLAUDE_BINARY": "claude-env"},
        {"claude": "/opt/claude"},
        ("claude", "claude-file", "claude-env", "/opt/claude"),
    ),
    (
        "data_dir",
        "data_dir: /d/file",
        {"PA_DATA_DIR": "/d/env"},
        {"data_dir": "/d/cli"},
        (None, Path("/d/file"), Path("/d/env"), Path("/d/cli")),
    ),
    (
        "auth.token_file",
        "data_dir: /d/file",
        {"PA_DATA_DIR": "/d/env"},
        {"data_dir": "/d/cli"},
        (None, Path("/d/file/auth_token"), Path("/d/env/auth_token"), Path("/d/cli/auth_token")),
    ),
    (
        "listen",
        "listen: ['tcp:1']",
        {},
        {"listen": ("tcp:2", "unix:/s")},
        (("ssl:8443",), ("tcp:1",), ("tcp:1",), ("tcp:2", "unix:/s")),
    ),
    (
        "limits.max_connections",
        "limits: {max_connections: 5}",
        {"PA_MAX_CONNECTIONS": "6"},
        {},
        (100, 5, 6, 6),
    ),
    (
        "timeouts.idle",
        "timeouts: {idle: 1m}",
        {"PA_IDLE_TIMEOUT": "2m"},
        {},
        (600.0, 60.0, 120.0, 120.0),
    ),
    (
        "manhole.enabled",
        "manhole: {enabled: false}",
        {"PA_ENABLE_MANHOLE": "on"},
        {},
        (False, False, True, True),
    ),
]


@pytest.mark.parametrize("layers", range(4), ids=["default", "file", "env", "overrides"])
@pytest.mark.parametrize(("attribute", "text", "env", "overrides", "expected"), LAYERS)
def test_precedence(root, layers, attribute, text, env, overrides, expected) -> None:
    config = load(
        root,
        text if layers >= 1 else None,
        env if layers >= 2 else {},
        **(overrides if layers >= 3 else {}),
    )
    want = expected[layers]
    if want is None:  # defaults that live under the root
        want = {"data_dir": root / "data", "auth.token_file": root / "data/auth_token"}[attribute]
    assert operator.attrgetter(attribute)(config) == want


def test_overrides_with_empty_listen_keep_the_file(root: Path) -> None:
    assert load(root, "listen: ['tcp:1', 'tcp:2']", listen=()).listen == ("tcp:1", "tcp:2")


def test_explicit_token_file_does_not_follow_data_dir(root: Path) -> None:
    config = load(root, "auth: {token_file: secrets/tok}", {"PA_DATA_DIR": "/d"}, data_dir="/e")
    assert config.data_dir == Path("/e")
    assert config.auth.token_file == root / "secrets/tok"


def test_insecure_override(root: Path) -> None:
    assert load(root, insecure=True).insecure is True


# --- environment --------------------------------------------------------------------------

ENVIRONMENT = [
    ("PA_LOG_LEVEL", "debug", "logging.level", "debug"),
    ("PA_LOG_FORMAT", "text", "logging.format", "text"),
    ("PA_LOG_RAW_OUTPUT", "true", "logging.raw_output", True),
    ("PA_TRACE_ENABLED", "YES", "logging.trace", True),
    ("PA_ENABLE_MANHOLE", "1", "manhole.enabled", True),
    ("PA_DATA_DIR", "/srv/pa", "data_dir", Path("/srv/pa")),
    ("PA_TLS_CERT", "/etc/pa/c.pem", "tls.cert", Path("/etc/pa/c.pem")),
    ("PA_TLS_KEY", "/etc/pa/k.pem", "tls.key", Path("/etc/pa/k.pem")),
    ("PA_CLAUDE_BINARY", "claude-beta", "claude.binary", "claude-beta"),
    ("PA_CLAUDE_MODEL", "opus", "claude.default_model", "opus"),
    ("PA_MAX_CONNECTIONS", "7", "limits.max_connections", 7),
    ("PA_MAX_PROJECTS", "8", "limits.max_projects", 8),
    ("PA_MESSAGE_SIZE_LIMIT", "2MiB", "limits.max_message_size", 2097152),
    ("PA_EXECUTION_TIMEOUT", "1h", "timeouts.execution", 3600.0),
    ("PA_IDLE_TIMEOUT", "90s", "timeouts.idle", 90.0),
    ("PA_PING_INTERVAL", "5s", "timeouts.ping_interval", 5.0),
    ("PA_PONG_TIMEOUT", "15s", "timeouts.pong_timeout", 15.0),
    ("PA_LOG_ROTATION_SIZE", "1000", "log_rotation.size", 1000),
    ("PA_LOG_ROTATION_COUNT", "500", "log_rotation.count", 500),
]


def flat(config: Config) -> dict[str, object]:
    """Every leaf setting of ``config`` by dotted key."""
    leaves: dict[str, object] = {}
    for field in attrs.fields(Config):
        value = getattr(config, field.name)
        if attrs.has(field.type):
            for name, leaf in attrs.asdict(value, recurse=False).items():
                leaves[f"{field.name}.{name}"] = leaf
        else:
            leaves[field.name] = value
    return leaves


@pytest.mark.parametrize(("variable", "text", "attribute", "expected"), ENVIRONMENT)
def test_environment_variable(root, variable, text, attribute, expected) -> None:
    config, default = flat(load(root, env={variable: text})), flat(load(root))
    assert config[attribute] == expected
    changed = {key for key in config if config[key] != default[key]}
    # Only that setting moved (and the token file, which follows data_dir).
    assert changed == {attribute} | ({"auth.token_file"} if variable == "PA_DATA_DIR" else set())


@pytest.mark.parametrize("word", ["true", "True", "1", "yes", "ON", " on "])
def test_environment_true(root: Path, word: str) -> None:
    assert load(root, env={"PA_LOG_RAW_OUTPUT": word}).logging.raw_output is True


@pytest.mark.parametrize("word", ["false", "FALSE", "0", "no", "off"])
def test_environment_false(root: Path, word: str) -> None:
    config = load(root, "logging: {raw_output: true}", {"PA_LOG_RAW_OUTPUT": word})
    assert config.logging.raw_output is False


def test_environment_bad_boolean(root: Path) -> None:
    message = error(root, env={"PA_ENABLE_MANHOLE": "maybe"})
    assert message.startswith("PA_ENABLE_MANHOLE: 'maybe' is not a boolean")


@pytest.mark.parametrize(
    ("env", "start"),
    [
        ({"PA_MAX_CONNECTIONS": "lots"}, "PA_MAX_CONNECTIONS: 'lots' is not an integer"),
        ({"PA_MAX_CONNECTIONS": "0"}, "PA_MAX_CONNECTIONS: 0 is less than 1"),
        ({"PA_IDLE_TIMEOUT": "soon"}, "PA_IDLE_TIMEOUT: 'soon' is not a duration"),
        ({"PA_MESSAGE_SIZE_LIMIT": "big"}, "PA_MESSAGE_SIZE_LIMIT: 'big' is not a size"),
        ({"PA_LOG_FORMAT": "xml"}, "PA_LOG_FORMAT: 'xml' is not one of json, text"),
    ],
)
def test_environment_bad_values(root: Path, env: dict[str, str], start: str) -> None:
    assert error(root, env=env).startswith(start)


def test_empty_and_unrelated_variables_are_ignored(root: Path) -> None:
    env = {"PA_LOG_LEVEL": "", "PA_MAX_CONNECTIONS": "", "PA_ENABLE_MANHOLE": "", "PA_BOGUS": "x"}
    assert load(root, env=env) == load(root)


# --- durations and sizes ------------------------------------------------------------------

DURATIONS = [
    (0, 0.0),
    (12, 12.0),
    (1.5, 1.5),
    ("0", 0.0),
    ("90", 90.0),
    ("30s", 30.0),
    ("10m", 600.0),
    ("1h", 3600.0),
    ("2d", 172800.0),
    ("250ms", 0.25),
    ("1h30m", 5400.0),
    ("1h 30m 15s", 5415.0),
    ("1.5h", 5400.0),
    (" 5M ", 300.0),
    ("1m500ms", 60.5),
]
BAD_DURATIONS = [
    "10x",
    "",
    "-5s",
    "s",
    "5 seconds",
    "1.2.3s",
    "h1",
    -1,
    True,
    None,
    [],
    float("nan"),
    float("inf"),
]


@pytest.mark.parametrize(("value", "seconds"), DURATIONS)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value, "k") == seconds


@pytest.mark.parametrize("value", BAD_DURATIONS)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, "timeouts.idle")
    assert str(caught.value) == f"timeouts.idle: {value!r} is not a duration (use 30s, 10m, 1h)"


@pytest.mark.parametrize("value", [10**400, "1" + "0" * 400, "1" + "0" * 400 + "d"])
def test_parse_duration_rejects_overflow(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^k: .* is not a duration"):
        parse_duration(value, "k")


SIZES = [
    (0, 0),
    (52428800, 52428800),
    ("52428800", 52428800),
    ("10B", 10),
    ("50MB", 50_000_000),
    ("1MiB", 1048576),
    ("1mib", 1048576),
    ("8KiB", 8192),
    ("2kb", 2000),
    ("1GB", 10**9),
    ("1GiB", 2**30),
    ("1.5KB", 1500),
    (" 1 MiB ", 1048576),
]
BAD_SIZES = ["", "MB", "-1", "1XB", "1.5B", "0x10", "1e6", -1, 1.5, True, None, ["1MB"]]


@pytest.mark.parametrize(("value", "size"), SIZES)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value, "k") == size


@pytest.mark.parametrize("value", BAD_SIZES)
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_size(value, "limits.send_buffer")
    expected = f"limits.send_buffer: {value!r} is not a size (use 52428800, 50MB, 1MiB)"
    assert str(caught.value) == expected


SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "kib": 2**10,
    "mb": 10**6,
    "mib": 2**20,
    "gb": 10**9,
    "gib": 2**30,
}
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@given(
    st.integers(min_value=0, max_value=10**12), st.sampled_from(sorted(SIZE_UNITS)), st.booleans()
)
def test_parse_size_round_trip(number: int, unit: str, upper: bool) -> None:
    text = f"{number}{unit.upper() if upper else unit}"
    assert parse_size(text, "k") == number * SIZE_UNITS[unit]
    assert parse_size(number * SIZE_UNITS[unit], "k") == number * SIZE_UNITS[unit]


@given(st.dictionaries(st.sampled_from(sorted(DURATION_UNITS)), st.integers(0, 10**6), min_size=1))
def test_parse_duration_round_trip(parts: dict[str, int]) -> None:
    text = "".join(f"{n}{unit}" for unit, n in parts.items())
    seconds = sum(n * DURATION_UNITS[unit] for unit, n in parts.items())
    assert parse_duration(text, "k") == seconds
    assert parse_duration(seconds, "k") == seconds


@given(st.integers(min_value=0, max_value=10**9))
def test_parse_duration_milliseconds(number: int) -> None:
    assert parse_duration(f"{number}ms", "k") == number / 1000


# --- bad files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus: 1", "config.yaml: bogus: unknown key"),
        ("limits: {max_conections: 5}", "config.yaml: limits.max_conections: unknown key"),
        ("root: /x", "config.yaml: root: unknown key"),
        ("insecure: true", "config.yaml: insecure: unknown key"),
        ("timeouts: {idle: 10x}", "config.yaml: timeouts.idle: '10x' is not a duration"),
        ("- a", "config.yaml: top level: ['a'] is not a mapping"),
        ("timeouts: [1, 2]", "config.yaml: timeouts: [1, 2] is not a mapping"),
        ("auth: {trust_loopback: 'yes'}", "config.yaml: auth.trust_loopback: 'yes' is not a bool"),
        ("manhole: {enabled: 1}", "config.yaml: manhole.enabled: 1 is not a boolean"),
        ("limits: {max_connections: 0}", "config.yaml: limits.max_connections: 0 is less than 1"),
        ("limits: {max_projects: -1}", "config.yaml: limits.max_projects: -1 is less than 1"),
        ("limits: {max_projects: '5'}", "config.yaml: limits.max_projects: '5' is not an integer"),
        (
            "limits: {max_concurrent_executions: true}",
            "config.yaml: limits.max_concurrent_executions: True is not an integer",
        ),
        ("log_rotation: {count: 1.5}", "config.yaml: log_rotation.count: 1.5 is not an integer"),
        ("log_rotation: {size: 0}", "config.yaml: log_rotation.size: 0 is less than 1"),
        ("limits: {send_buffer: lots}", "config.yaml: limits.send_buffer: 'lots' is not a size"),
        ("listen: []", "config.yaml: listen: [] is empty"),
        ("listen: 'ssl:8443'", "config.yaml: listen: 'ssl:8443' is not a list"),
        ("listen: ['']", "config.yaml: listen[0]: '' is not a non-empty string"),
        ("listen: ['tcp:1', 2]", "config.yaml: listen[1]: 2 is not a non-empty string"),
        ("data_dir: {a: 1}", "config.yaml: data_dir: {'a': 1} is not a non-empty string"),
        ("tls: {cert: null}", "config.yaml: tls.cert: None is not a non-empty string"),
        ("claude: {env: {FOO: 1}}", "config.yaml: claude.env.FOO: 1 is not a string"),
        ("claude: {env: [a]}", "config.yaml: claude.env: ['a'] is not a mapping"),
        ("claude: {extra_args: [1]}", "config.yaml: claude.extra_args[0]: 1 is not a string"),
        ("claude: {extra_args: '-v'}", "config.yaml: claude.extra_args: '-v' is not a list"),
        ("claude: {binary: ''}", "config.yaml: claude.binary: '' is not a non-empty string"),
        ("logging: {level: verbose}", "config.yaml: logging.level: 'verbose' is not one of"),
        ("logging: {level: off}", "config.yaml: logging.level: False is not one of"),
        ("logging: {format: xml}", "config.yaml: logging.format: 'xml' is not one of json, text"),
        ("metrics: {listen: 9090}", "config.yaml: metrics.listen: 9090 is not a non-empty"),
        (
            "projects: {allowed_roots: '~'}",
            "config.yaml: projects.allowed_roots: '~' is not a list",
        ),
        ("a: 1\n\tb: 2", "config.yaml: not valid YAML at line 2: found character"),
    ],
)
def test_bad_file(root: Path, text: str, message: str) -> None:
    assert error(root, text).startswith(message)


def test_errors_name_the_explicit_config_file(root: Path) -> None:
    (root / "pa.yaml").write_text("limits: {max_conections: 5}")
    assert error(root, config_file="pa.yaml") == "pa.yaml: limits.max_conections: unknown key"


def test_long_values_stay_short(root: Path) -> None:
    message = error(root, "logging: {level: '" + "x\n" * 500 + "'}")
    assert len(message) < 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"log_level": "loud"}, "--log-level: 'loud' is not one of debug, info, warn, error"),
        ({"listen": ("tcp:1", "")}, "--listen[1]: '' is not a non-empty string"),
        ({"claude": " "}, "--claude: ' ' is not a non-empty string"),
    ],
)
def test_bad_overrides(root: Path, overrides: dict[str, object], message: str) -> None:
    assert error(root, **overrides) == message


# --- paths --------------------------------------------------------------------------------


def test_relative_paths_are_relative_to_root(tmp_path: Path, home: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text(
        "tls: {cert: c/s.crt, key: /abs/s.key}\n"
        "data_dir: d/../store\n"
        "auth: {token_file: t/tok}\n"
        "logging: {file: logs/pa.log}\n"
        "projects: {allowed_roots: [code, /srv/p, '~/work', '~']}\n"
        "manhole: {authorized_keys: '~/keys'}\n"
    )
    config = load(tmp_path, root="r")
    root = tmp_path / "r"
    assert config.root == root
    assert config.tls == TLSConfig(cert=root / "c/s.crt", key=Path("/abs/s.key"))
    assert config.data_dir == root / "store"
    assert config.auth.token_file == root / "t/tok"
    assert config.logging.file == root / "logs/pa.log"
    assert config.projects.allowed_roots == (root / "code", Path("/srv/p"), home / "work", home)
    assert config.manhole.authorized_keys == home / "keys"


def test_paths_from_environment_and_overrides_are_relative_to_root(root: Path) -> None:
    config = load(root, env={"PA_TLS_CERT": "x/c.pem"}, data_dir="store")
    assert config.tls.cert == root / "x/c.pem"
    assert config.data_dir == root / "store"
    assert config.auth.token_file == root / "store/auth_token"


def test_symlinks_are_not_resolved(tmp_path: Path, home: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    config = load(tmp_path / "link")
    assert config.root == tmp_path / "link"
    assert config.data_dir == tmp_path / "link" / "data"


def test_logging_file_null_means_no_file(root: Path) -> None:
    assert load(root, "logging: {file: null}").logging.file is None


def test_claude_binary_path_is_anchored(root: Path) -> None:
    assert load(root, claude="claude").claude.binary == "claude"  # looked up on PATH
    assert load(root, claude="/usr/bin/claude").claude.binary == "/usr/bin/claude"
    assert load(root, claude="bin/claude").claude.binary == str(root / "bin/claude")


def test_claude_settings(root: Path) -> None:
    text = (
        "claude: {default_model: sonnet, extra_args: ['--debug', ''],"
        " allow_dangerous_options: true}"
    )
    claude = load(root, text).claude
    assert (claude.default_model, claude.extra_args, claude.allow_dangerous_options) == (
        "sonnet",
        ("--debug", ""),
        True,
    )


# --- auth.trusted_proxies -----------------------------------------------------------------


def test_trusted_proxies_are_addresses_and_networks(root: Path) -> None:
    text = (
        "auth:\n"
        "  trusted_proxies: ['127.0.0.1', ' 10.0.0.0/8 ', '::1', '2001:db8::/32',"
        " '::ffff:192.0.2.7']\n"
    )
    proxies = load(root, text).auth.trusted_proxies
    assert proxies == (
        ipaddress.IPv4Network("127.0.0.1/32"),
        ipaddress.IPv4Network("10.0.0.0/8"),
        ipaddress.IPv6Network("::1/128"),
        ipaddress.IPv6Network("2001:db8::/32"),
        ipaddress.IPv4Network("192.0.2.7/32"),  # IPv4-mapped: compared as IPv4, like peers
    )
    assert hash(load(root, text)) == hash(load(root, text))  # the config stays hashable


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "auth: {trusted_proxies: '127.0.0.1'}",
            "config.yaml: auth.trusted_proxies: '127.0.0.1' is not a list",
        ),
        (
            "auth: {trusted_proxies: ['127.0.0.1', nginx]}",
            "config.yaml: auth.trusted_proxies[1]: 'nginx' is not an IP address or CIDR network",
        ),
        (
            "auth: {trusted_proxies: ['10.0.0.1/8']}",
            "config.yaml: auth.trusted_proxies[0]: '10.0.0.1/8' has host bits set"
            " (did you mean 10.0.0.0/8?)",
        ),
        (
            "auth: {trusted_proxies: ['1.2.3.4/33']}",
            "config.yaml: auth.trusted_proxies[0]: '1.2.3.4/33' is not an IP address",
        ),
        (
            "auth: {trusted_proxies: [2130706433]}",  # ipaddress would take it as 127.0.0.1
            "config.yaml: auth.trusted_proxies[0]: 2130706433 is not an IP address",
        ),
        (
            "auth: {trusted_proxies: [null]}",
            "config.yaml: auth.trusted_proxies[0]: None is not an IP address",
        ),
        (
            "auth: {trusted_proxies: ['0.0.0.0/0']}",
            "config.yaml: auth.trusted_proxies[0]: '0.0.0.0/0' trusts every address",
        ),
        (
            "auth: {trusted_proxies: ['::/0']}",
            "config.yaml: auth.trusted_proxies[0]: '::/0' trusts every address",
        ),
        (
            "auth: {trusted_proxies: ['::ffff:0.0.0.0/96']}",
            "config.yaml: auth.trusted_proxies[0]: '::ffff:0.0.0.0/96' trusts every address",
        ),
    ],
)
def test_bad_trusted_proxies(root: Path, text: str, message: str) -> None:
    assert error(root, text).startswith(message)
