"""``routes:`` → a tuple of :class:`~patgate.config.model.RouteConfig`.

:class:`RouteContext` parses each route with what it needs from the rest of
the file (environment, scope sets, identity headers) and collects warnings:
names and prefixes are unique (in every letter case, unless a route is
``case_sensitive``), prefixes and path patterns canonical and free of encoded
delimiters, methods upper case, required scopes single and valid, injected
header values free of control characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from patgate.config.model import (
    CREDENTIAL_SOURCES,
    DEFAULT_QUERY_PARAMS,
    OVERRIDE_HEADERS,
    IdentityHeaders,
    MethodMap,
    RouteConfig,
    SecretHeaders,
    frozen_mapping,
)
from patgate.config.reader import (
    CLIENT_HEADERS,
    FRAMING_HEADERS,
    HOSTNAME,
    check_keys,
    check_scope,
    error_at,
    field_names,
    fold_header,
    is_ip,
    kind_of,
    locate,
    pattern_reader,
    read_bool,
    read_choice,
    read_header_name,
    read_mapping,
    read_matching,
    read_seconds,
    read_string,
    read_string_list,
    take,
)
from patgate.paths import PathError, normalise_path
from patgate.scopes import is_node_scope, path_within

_ROUTE_KEYS = field_names(RouteConfig)
# fmt: off
_TOKEN_ONLY_KEYS = (
    "methods", "paths", "scope", "credentials", "query_params", "api_key_header",
)
# fmt: on
_ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]*")
_QUERY_PARAM = re.compile(r"[A-Za-z0-9_.~-]+")
_REALM = re.compile(r"[^\"\\\x00-\x1f\x7f]+")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# SECURITY: an encoded ";", "?" or "#" in a prefix or pattern is a delimiter
# to an upstream behind a decoding hop; requests are matched as if it were
# (paths.decode_text), so a rule holding one could never be met as written.
_ENCODED_DELIMITER = re.compile(r"%(?:3B|3F|23)", re.IGNORECASE)


@dataclass
class RouteContext:
    """What parsing one route needs from the rest of the file."""

    env: Mapping[str, str]
    scope_sets: Mapping[str, tuple[str, ...]]
    identity: IdentityHeaders
    warnings: list[str]

    def parse_routes(self, value: object, where: str) -> tuple[RouteConfig, ...]:
        if not isinstance(value, list):
            raise error_at(where, f"expected a list of routes, got {kind_of(value)}")
        routes: list[RouteConfig] = []
        labels: list[str] = []
        for index, item in enumerate(value):
            label = _route_label(index, item)
            route = self.parse_route(item, label)
            _check_unique(route, label, routes, labels)
            routes.append(route)
            labels.append(label)
        return tuple(routes)

    def parse_route(self, value: object, where: str) -> RouteConfig:
        data = read_mapping(value, where)
        check_keys(data, _ROUTE_KEYS, where)
        for key in ("name", "prefix", "upstream"):
            if key not in data:
                raise error_at(where, f"missing required key {key!r}")
        auth: Literal["token", "none"] = take(data, "auth", where, _parse_auth, "token")
        if auth == "none":
            for key in _TOKEN_ONLY_KEYS:
                if key in data:
                    raise error_at(locate(where, key), "has no effect with auth: none")
        name = read_matching(
            data["name"], locate(where, "name"), _ROUTE_NAME, "route name"
        )
        prefix = _parse_prefix(data["prefix"], locate(where, "prefix"))
        route = RouteConfig(
            name=name,
            prefix=prefix,
            upstream=_parse_upstream(data["upstream"], locate(where, "upstream")),
            host=take(data, "host", where, _parse_host, None),
            strip_prefix=take(data, "strip_prefix", where, read_bool, False),
            credentials=take(
                data, "credentials", where, _parse_credentials, CREDENTIAL_SOURCES
            ),
            query_params=take(
                data, "query_params", where, _parse_query_params, DEFAULT_QUERY_PARAMS
            ),
            api_key_header=take(
                data, "api_key_header", where, self.header, "X-API-Key"
            ),
            realm=take(data, "realm", where, pattern_reader(_REALM, "realm"), ""),
            auth=auth,
            methods=take(data, "methods", where, self.method_map, frozen_mapping()),
            paths=take(data, "paths", where, self.path_rules, ()),
            scope=take(data, "scope", where, self.required_scope, None),
            error_style=take(data, "error_style", where, _parse_error_style, "json"),
            upstream_headers=take(
                data, "upstream_headers", where, self.upstream_headers, SecretHeaders()
            ),
            connect_timeout=take(data, "connect_timeout", where, read_seconds, 5.0),
            read_timeout=take(data, "read_timeout", where, read_seconds, 300.0),
            websocket=take(data, "websocket", where, read_bool, True),
            pass_headers=take(data, "pass_headers", where, _parse_pass_headers, ()),
            case_sensitive=take(data, "case_sensitive", where, read_bool, False),
        )
        self._warn_about(route, where)
        return route

    def header(
        self, value: object, where: str, reserved: frozenset[str] = CLIENT_HEADERS
    ) -> str:
        name = read_header_name(value, where, reserved)
        identity = (self.identity.user, self.identity.token_id, self.identity.scopes)
        if fold_header(name) in {fold_header(h) for h in identity}:
            raise error_at(where, f"{name!r} is one of the identity headers")
        return name

    def required_scope(self, value: object, where: str) -> str:
        scope = read_string(value, where)
        if scope.startswith("@"):
            known = scope[1:] in self.scope_sets
            raise error_at(
                where,
                f"{'scope set' if known else 'unknown scope set'} {scope!r}: a route"
                " requires one scope; sets are for granting",
            )
        if is_node_scope(scope):
            raise error_at(
                where, "node scopes restrict tokens; a route cannot require one"
            )
        return check_scope(scope, where)

    def method_map(self, value: object, where: str) -> MethodMap:
        data = read_mapping(value, where)
        result: dict[str, str] = {}
        for method, scope in data.items():
            at = locate(where, method)
            if method != "*" and not _METHOD.fullmatch(method):
                upper = method.upper()
                hint = f" (did you mean {upper!r}?)" if _METHOD.fullmatch(upper) else ""
                raise error_at(
                    at, f"invalid method name {method!r}: upper case or '*'{hint}"
                )
            result[method] = self.required_scope(scope, at)
        return frozen_mapping(result)

    def path_rules(
        self, value: object, where: str
    ) -> tuple[tuple[str, str | MethodMap], ...]:
        data = read_mapping(value, where)
        rules: list[tuple[str, str | MethodMap]] = []
        for pattern, rule in data.items():
            at = locate(where, pattern)
            _check_pattern(pattern, at)
            if isinstance(rule, dict):
                rules.append((pattern, self.method_map(rule, at)))
            else:
                rules.append((pattern, self.required_scope(rule, at)))
        return tuple(rules)

    def upstream_headers(self, value: object, where: str) -> Mapping[str, str]:
        data = read_mapping(value, where)
        result: dict[str, str] = {}
        for name, raw in data.items():
            at = locate(where, name)
            self.header(name, at, FRAMING_HEADERS)
            text = read_string(raw, at)
            # Error messages below never quote the value: it is a credential.
            missing = [n for n in _ENV_REF.findall(text) if n not in self.env]
            if missing:
                raise error_at(at, f"environment variable {missing[0]!r} is not set")
            text = _ENV_REF.sub(lambda m: self.env[m.group(1)], text)
            if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text):
                # SECURITY: CR/LF in an injected value would split the header.
                raise error_at(at, "the value holds a control character")
            result[name] = text
        return SecretHeaders(result)

    def _warn_about(self, route: RouteConfig, where: str) -> None:
        if route.auth == "none" and route.prefix == "/":
            self.warnings.append(
                f"{where}: auth: none on prefix '/' makes every path public"
            )
        fold = _folder(route.case_sensitive)
        root = fold(route.prefix.rstrip("/"))
        for pattern, _ in route.paths:
            head = fold(pattern.split("*", 1)[0])
            if not (path_within(head, root) or (root + "/").startswith(head)):
                self.warnings.append(
                    f"{where}.paths.{pattern}: never matches, it is outside the"
                    f" prefix {route.prefix!r}"
                )
        self.warnings.extend(_same_paths(route, where))


def _same_paths(route: RouteConfig, where: str) -> list[str]:
    """Warnings for patterns that name a path an earlier one names already."""
    warnings: list[str] = []
    written: dict[str, str] = {}
    folded: dict[str, str] = {}
    for pattern, _ in route.paths:
        if "*" in pattern:
            continue
        key = pattern.rstrip("/") or "/"
        if key in written:
            warnings.append(
                f"{where}.paths.{pattern}: never matches, {written[key]!r} above"
                " matches the same paths (a trailing slash does not count)"
            )
        elif not route.case_sensitive and key.lower() in folded:
            warnings.append(
                f"{where}.paths.{pattern}: {folded[key.lower()]!r} above is the"
                " same path in another letter case; a request for it needs the"
                " scopes of both (or set case_sensitive: true)"
            )
        written.setdefault(key, pattern)
        folded.setdefault(key.lower(), pattern)
    return warnings


def _route_label(index: int, item: object) -> str:
    label = f"routes[{index}]"
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        label += f" ({item['name']})"
    return label


def _folder(case_sensitive: bool) -> Callable[[str], str]:
    return (lambda text: text) if case_sensitive else str.lower


def _check_unique(
    route: RouteConfig, label: str, routes: Sequence[RouteConfig], labels: list[str]
) -> None:
    for other, other_label in zip(routes, labels, strict=True):
        if other.name == route.name:
            raise error_at(
                label, f"name {route.name!r} is already used by {other_label}"
            )
        # A case-insensitive route's prefix takes every letter case of itself.
        fold = _folder(route.case_sensitive and other.case_sensitive)
        same_prefix = fold(other.prefix.rstrip("/")) == fold(route.prefix.rstrip("/"))
        if same_prefix and other.host == route.host:
            on_host = f" on host {route.host!r}" if route.host else ""
            raise error_at(
                label,
                f"prefix {route.prefix!r}{on_host} is already routed by {other_label}",
            )


def _parse_auth(value: object, where: str) -> Literal["token", "none"]:
    return "none" if read_choice(value, where, ("token", "none")) == "none" else "token"


def _parse_error_style(value: object, where: str) -> Literal["json", "result"]:
    return (
        "result"
        if read_choice(value, where, ("json", "result")) == "result"
        else "json"
    )


def _parse_prefix(value: object, where: str) -> str:
    prefix = read_string(value, where)
    if not prefix.startswith("/"):
        raise error_at(where, f"a prefix starts with '/', got {prefix!r}")
    try:
        canonical = normalise_path(prefix)
    except PathError as exc:
        raise error_at(where, str(exc)) from None
    if canonical != prefix:
        raise error_at(where, f"write the prefix in canonical form: {canonical!r}")
    if _ENCODED_DELIMITER.search(prefix):
        raise error_at(where, "a prefix cannot hold an encoded ';', '?' or '#'")
    if prefix != "/" and path_within(prefix.rstrip("/"), "/_patgate"):
        raise error_at(where, "/_patgate/ is reserved for patgate's own endpoints")
    return prefix


def _check_pattern(pattern: str, where: str) -> None:
    if not pattern.startswith("/"):
        raise error_at(where, "a path pattern starts with '/'")
    sample = pattern.replace("*", "x")
    try:
        canonical = normalise_path(sample)
    except PathError as exc:
        raise error_at(where, str(exc)) from None
    if canonical != sample:
        raise error_at(
            where, "write the pattern in canonical form (no '//', '.', '..')"
        )
    if _ENCODED_DELIMITER.search(pattern):
        raise error_at(where, "a path pattern cannot hold an encoded ';', '?' or '#'")


def _parse_upstream(value: object, where: str) -> str:
    url = read_string(value, where)
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        raise error_at(where, f"invalid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise error_at(where, f"expected an http(s) URL with a host, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise error_at(
            where, "put upstream credentials in upstream_headers, not the URL"
        )
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise error_at(where, "an upstream URL has no query or fragment")
    if parts.path and _canonical_or_none(parts.path) != parts.path:
        raise error_at(where, "the upstream path is not in canonical form")
    return url


def _canonical_or_none(path: str) -> str | None:
    try:
        return normalise_path(path)
    except PathError:
        return None


def _parse_host(value: object, where: str) -> str:
    host = read_string(value, where).lower()
    if not HOSTNAME.fullmatch(host) and not is_ip(host, 4):
        raise error_at(where, f"expected a host name without port, got {host!r}")
    return host.rstrip(".")


def _parse_credentials(value: object, where: str) -> tuple[str, ...]:
    items = read_string_list(value, where)
    for index, item in enumerate(items):
        if item not in CREDENTIAL_SOURCES:
            raise error_at(
                locate(where, index),
                f"unknown credential source {item!r} (any of"
                f" {', '.join(CREDENTIAL_SOURCES)})",
            )
    if not items:
        raise error_at(where, "name at least one credential source")
    return tuple(dict.fromkeys(items))


def _parse_query_params(value: object, where: str) -> tuple[str, ...]:
    items = read_string_list(value, where)
    for index, item in enumerate(items):
        read_matching(item, locate(where, index), _QUERY_PARAM, "query parameter name")
    if not items:
        raise error_at(where, "name at least one query parameter")
    return tuple(dict.fromkeys(items))


def _parse_pass_headers(value: object, where: str) -> tuple[str, ...]:
    """``pass_headers``: override headers this route's upstream may still receive."""
    names: list[str] = []
    for index, item in enumerate(read_string_list(value, where)):
        folded = fold_header(item)
        if folded not in OVERRIDE_HEADERS:
            raise error_at(
                locate(where, index),
                f"{item!r} is not a header patgate drops by default (any of"
                f" {', '.join(sorted(OVERRIDE_HEADERS))})",
            )
        names.append(folded)
    return tuple(dict.fromkeys(names))
