"""Value parsers for the settings table, and the one error they all raise.

Each parser takes ``(value, key)``: the raw value as YAML (or the environment, after
``env_bool``/``env_int``) gave it, and the place it came from, which every message names.
"""

import ipaddress
import math
import re
import reprlib
from collections.abc import Callable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn


class ConfigError(Exception):
    """A bad configuration, as one line naming the key, variable or option at fault.

    Start-up prints it and exits, so it must send the operator straight to the fix.
    """


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60


def fail(key: str, value: object, problem: str) -> NoReturn:
    # reprlib keeps the message on one short line whatever the value holds.
    raise ConfigError(f"{key}: {_repr.repr(value)} {problem}")


Parse = Callable[[object, str], Any]

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
    fail(key, value, "is not a duration (use 30s, 10m, 1h)")


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
    fail(key, value, "is not a size (use 52428800, 50MB, 1MiB)")


def parse_bool(value: object, key: str) -> bool:
    """Only real booleans: a quoted "no" in YAML is a typo, not a false."""
    if isinstance(value, bool):
        return value
    fail(key, value, "is not a boolean (use true or false)")


def parse_int(value: object, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    fail(key, value, "is not an integer")


def at_least(parse: Callable[[object, str], int], minimum: int) -> Parse:
    def parse_and_check(value: object, key: str) -> int:
        number = parse(value, key)
        if number < minimum:
            fail(key, value, f"is less than {minimum}")
        return number

    return parse_and_check


def parse_string(value: object, key: str) -> str:
    if isinstance(value, str):
        return value
    fail(key, value, "is not a string")


def parse_text(value: object, key: str) -> str:
    if isinstance(value, str) and value.strip():
        return value
    fail(key, value, "is not a non-empty string")


def parse_path(value: object, key: str) -> Path:
    """A path as written; load_config expands "~" and anchors it at the root."""
    return Path(parse_text(value, key))


def parse_network(value: object, key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IP address (one host) or a CIDR network; host bits set is a typo, not a network.
    IPv4-mapped IPv6 becomes IPv4, the way the server compares a peer's address."""
    text = value.strip() if isinstance(value, str) else ""
    try:
        network = ipaddress.ip_network(text)
    except ValueError as e:
        if "host bits set" in str(e):
            shown = ipaddress.ip_network(text, strict=False)
            fail(key, value, f"has host bits set (did you mean {shown}?)")
        fail(key, value, "is not an IP address or CIDR network (like 127.0.0.1 or 10.0.0.0/8)")
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    if network.prefixlen == 0:  # every client could then write its own address
        fail(key, value, "trusts every address; list the proxies themselves")
    return network


def optional(parse: Parse) -> Parse:
    return lambda value, key: None if value is None else parse(value, key)


def list_of(item: Parse, *, non_empty: bool = False) -> Parse:
    def parse_list(value: object, key: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            fail(key, value, "is not a list")
        if non_empty and not value:
            fail(key, value, "is empty")
        return tuple(item(entry, f"{key}[{index}]") for index, entry in enumerate(value))

    return parse_list


def choice(names: Mapping[str, str]) -> Parse:
    """One of a few words, case-insensitive; ``names`` maps each accepted spelling."""
    shown = ", ".join(dict.fromkeys(names.values()))

    def parse_choice(value: object, key: str) -> str:
        if isinstance(value, str) and value.strip().lower() in names:
            return names[value.strip().lower()]
        fail(key, value, f"is not one of {shown}")

    return parse_choice


def parse_mapping(value: object, key: str) -> dict[Any, Any]:
    """A YAML mapping; a section whose keys are all commented out loads as null."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    fail(key, value, "is not a mapping")


def parse_environment(value: object, key: str) -> tuple[tuple[str, str], ...]:
    """claude.env as sorted pairs, so Config stays hashable."""
    variables = parse_mapping(value, key)
    for name, text in variables.items():
        if not isinstance(name, str) or not name or "=" in name:
            fail(key, name, "is not an environment variable name")
        if not isinstance(text, str):
            fail(f"{key}.{name}", text, "is not a string (quote it)")
    return tuple(sorted(variables.items()))


# ----------------------------------------------- environment text to YAML's types

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def env_bool(text: str, variable: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE | _FALSE:
        return word in _TRUE
    fail(variable, text, "is not a boolean (use true/false, yes/no, on/off, 1/0)")


def env_int(text: str, variable: str) -> int:
    try:
        return int(text)
    except ValueError:
        fail(variable, text, "is not an integer")
