"""Reading YAML values with their location, each failure one precise ConfigError.

The strict loader (duplicate keys refused), locations (``routes[1].methods``),
typed readers (strings, numbers, durations, lists, mappings with known keys)
and the readers of the names a configuration is made of: header names, host
names, scopes. Every reader takes ``(value, where)`` and returns the value or
raises :class:`~patgate.errors.ConfigError` naming ``where``.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any, TypeVar

import yaml

from patgate.durations import parse_duration
from patgate.errors import ConfigError, UsageError
from patgate.scopes import canonical_scope

T = TypeVar("T")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int | float | bool) and key in seen:
            # SECURITY: a second "GET:" silently replacing the first would
            # change what a route requires without anyone noticing.
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_yaml(text: str) -> object:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {' '.join(str(exc).split())}") from None


def locate(where: str, key: str | int) -> str:
    """Where ``key`` of the value at ``where`` is: ``routes[1]``, ``cache.ttl``."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def error_at(where: str, message: str) -> ConfigError:
    """The error to raise for the value at ``where``."""
    return ConfigError(f"{where}: {message}" if where else message)


def kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def read_mapping(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise error_at(where, f"expected a mapping, got {kind_of(value)}")
    for key in value:
        if not isinstance(key, str):
            raise error_at(where, f"keys must be strings, got {key!r}")
    return value


def check_keys(
    data: Mapping[str, object],
    allowed: Sequence[str],
    where: str,
    hints: Mapping[str, str] | None = None,
) -> None:
    for key in data:
        if key in allowed:
            continue
        hint = (hints or {}).get(key)
        if hint is None:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
        known = hint or "known keys: " + ", ".join(allowed)
        label = f"{where}: unknown key" if where else "unknown top-level key"
        raise ConfigError(f"{label} {key!r} ({known})")


def read_string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise error_at(where, f"expected a string, got {kind_of(value)}")
    return value


def read_matching(
    value: object, where: str, pattern: re.Pattern[str], what: str
) -> str:
    text = read_string(value, where)
    if not pattern.fullmatch(text):
        raise error_at(where, f"invalid {what} {text!r}")
    return text


def read_bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise error_at(where, f"expected true or false, got {kind_of(value)}")
    return value


def read_integer(value: object, where: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise error_at(where, f"expected a whole number, got {kind_of(value)}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise error_at(where, f"must be {bound}, got {value}")
    return value


_ZERO_DURATION = re.compile(r"\s*0+\s*[smhdw]?\s*")


def read_seconds(value: object, where: str, *, zero_ok: bool = False) -> float:
    """A duration (``30s``, ``5m``) or a plain number of seconds."""
    if isinstance(value, str):
        if zero_ok and _ZERO_DURATION.fullmatch(value):
            return 0.0  # "0s" as well as 0: zero is allowed here
        try:
            return float(parse_duration(value))
        except UsageError as exc:
            raise error_at(where, str(exc)) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error_at(where, f"expected a duration such as 30s, got {kind_of(value)}")
    if value < 0 or (value == 0 and not zero_ok) or value != value:
        raise error_at(where, f"must be {'>= 0' if zero_ok else '> 0'}, got {value}")
    return float(value)


def read_string_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise error_at(where, f"expected a list, got {kind_of(value)}")
    return [read_string(item, locate(where, i)) for i, item in enumerate(value)]


def read_choice(value: object, where: str, options: tuple[str, str]) -> str:
    text = read_string(value, where)
    if text not in options:
        raise error_at(where, f"expected {options[0]} or {options[1]}, got {text!r}")
    return text


def pattern_reader(pattern: re.Pattern[str], what: str) -> Callable[[object, str], str]:
    return lambda value, where: read_matching(value, where, pattern, what)


# Sections left empty in YAML ("routes:" with every route commented out) are
# null; they mean the same as leaving the key out.
# fmt: off
_SECTIONS = frozenset((
    "cache", "identity_headers", "scope_sets", "routes", "trusted_proxies",
    "limits", "methods", "paths", "upstream_headers",
))
# fmt: on


def field_names(cls: type) -> tuple[str, ...]:
    """The YAML keys of a section: the names of its dataclass fields."""
    return tuple(item.name for item in fields(cls))


def take(
    data: Mapping[str, object],
    key: str,
    where: str,
    read: Callable[[object, str], T],
    default: T,
) -> T:
    """``data[key]`` read by ``read``, or ``default`` when absent (or null)."""
    if key not in data or (data[key] is None and key in _SECTIONS):
        return default
    return read(data[key], locate(where, key))


# The names a configuration is made of: headers, hosts, scopes.

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*\.?")


# Headers that frame the message or that the gateway itself sets: never
# configurable. Identity and API-key headers may not be Authorization or
# Cookie either; injected upstream headers may (that is what they are for).
# fmt: off
FRAMING_HEADERS = frozenset((
    "connection", "content-length", "content-type", "destination", "host",
    "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "x-forwarded-for",
    "x-forwarded-host", "x-forwarded-proto",
))
# fmt: on
CLIENT_HEADERS = FRAMING_HEADERS | {"authorization", "cookie"}


def read_header_name(
    value: object, where: str, reserved: frozenset[str] = CLIENT_HEADERS
) -> str:
    name = read_matching(value, where, _HEADER_NAME, "header name")
    if fold_header(name) in reserved:
        raise error_at(where, f"{name!r} is a header patgate must not take over")
    return name


@functools.lru_cache(maxsize=4096)
def fold_header(header: str) -> str:
    """A header name as the most lenient upstream reads it: case, '-', '_', '.' folded.

    WSGI and CGI turn '-' into '_' (so ``X_Patgate_User`` is
    ``X-Patgate-User`` to them) and PHP turns '.' into '_' as well
    (``X.Patgate.User``). SECURITY: every decision to strip or keep a
    header compares names folded by this one function (spoofed identity).
    Cached: the gateway folds every header name of every request.
    """
    return header.lower().replace("_", "-").replace(".", "-")


def is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def check_scope(scope: str, where: str) -> str:
    """``scope`` in canonical form (node paths too), or a ConfigError."""
    try:
        return canonical_scope(scope)
    except UsageError as exc:
        raise error_at(where, str(exc)) from None
