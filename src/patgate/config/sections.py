"""The top-level sections besides ``routes``, one ``parse_*`` reader each.

``listen``, ``store``, ``cache``, ``identity_headers``, ``scope_sets`` (expanded,
cycles refused), ``trusted_proxies``, ``limits``, and the separate listeners
``manage`` and ``ops``, and ``forward_auth``.

The store URL follows SQLAlchemy's convention for SQLite: ``sqlite:///x.db``
and ``sqlite:///./x.db`` are relative, ``sqlite:////var/lib/x.db`` is
absolute. A relative path is resolved against ``base_dir`` (the directory of
the config file, not the working directory), so ``Config.store`` always names
an absolute file.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping

from patgate import storeurl
from patgate.config.model import (
    CacheConfig,
    ForwardAuthConfig,
    IdentityHeaders,
    Limits,
)
from patgate.config.reader import (
    HOSTNAME,
    check_keys,
    check_scope,
    error_at,
    field_names,
    fold_header,
    is_ip,
    kind_of,
    locate,
    read_header_name,
    read_integer,
    read_mapping,
    read_matching,
    read_seconds,
    read_string,
    read_string_list,
    take,
)
from patgate.paths import PathError, normalise_path
from patgate.scopes import path_within
from patgate.storeurl import StoreUrlError, parse_redis_url, scheme_of


def parse_listen(value: object, where: str) -> tuple[str, int]:
    if not isinstance(value, str):
        raise error_at(
            where,
            f"expected 'host:port' as a string (e.g. 127.0.0.1:8080), got"
            f" {kind_of(value)}; quote it",
        )
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        valid_host = is_ip(host, version=6)
    else:
        valid_host = bool(HOSTNAME.fullmatch(host)) or is_ip(host, version=4)
    if not sep or not valid_host:
        raise error_at(
            where, f"expected host:port (e.g. 127.0.0.1:8080), got {value!r}"
        )
    if not port_text.isdigit() or int(port_text) > 65535:
        raise error_at(where, f"invalid port {port_text!r} (0-65535)")
    return host, int(port_text)


def parse_store(url: str, where: str, base_dir: str) -> str:
    scheme = url.partition(":")[0].lower()
    if scheme == storeurl.SQLITE:
        return _resolve_sqlite(url, where, base_dir)
    if scheme_of(url) not in storeurl.REDIS_SCHEMES:
        raise error_at(
            where,
            f"unsupported store scheme {scheme + ':' if scheme else url!r}"
            f" (expected {storeurl.EXAMPLES})",
        )
    try:
        parse_redis_url(url)
    except StoreUrlError as exc:
        raise error_at(where, str(exc)) from None
    return url


def _resolve_sqlite(url: str, where: str, base_dir: str) -> str:
    if not url.startswith("sqlite:///") or "?" in url or "#" in url:
        raise error_at(where, "expected sqlite:///PATH (e.g. sqlite:///./patgate.db)")
    path = url[len("sqlite:///") :]
    if path == ":memory:":
        return url
    if not path or path.endswith("/"):
        raise error_at(where, "the sqlite URL names no file")
    return "sqlite:///" + os.path.normpath(os.path.join(base_dir, path))


def sqlite_file(store_url: str) -> str:
    """The file (or ``:memory:``) named by a ``sqlite:///`` URL from a Config."""
    return store_url[len("sqlite:///") :]


def parse_cache(value: object, where: str) -> CacheConfig:
    data = read_mapping(value, where)
    check_keys(data, field_names(CacheConfig), where)
    default = CacheConfig()

    def zero_ok(v: object, w: str) -> float:
        return read_seconds(v, w, zero_ok=True)

    ttl = take(data, "ttl", where, read_seconds, default.ttl)
    # Unless given, max_stale is at least the ttl (an entry is trusted that
    # long anyway); given shorter, it is refused rather than quietly raised.
    max_stale = take(data, "max_stale", where, zero_ok, max(default.max_stale, ttl))
    if max_stale < ttl:
        raise error_at(
            locate(where, "max_stale"),
            f"{max_stale:g}s is shorter than cache.ttl ({ttl:g}s): a cached token"
            " is trusted for the whole ttl; set max_stale to at least the ttl"
            " or lower the ttl",
        )
    return CacheConfig(
        ttl=ttl,
        negative_ttl=take(data, "negative_ttl", where, zero_ok, default.negative_ttl),
        max_entries=take(
            data, "max_entries", where, lambda v, w: read_integer(v, w, 1), 100_000
        ),
        max_stale=max_stale,
    )


def parse_identity_headers(value: object, where: str) -> IdentityHeaders:
    data = read_mapping(value, where)
    check_keys(data, field_names(IdentityHeaders), where)
    default = IdentityHeaders()
    headers = IdentityHeaders(
        user=take(data, "user", where, read_header_name, default.user),
        token_id=take(data, "token_id", where, read_header_name, default.token_id),
        scopes=take(data, "scopes", where, read_header_name, default.scopes),
    )
    folded = {
        fold_header(name) for name in (headers.user, headers.token_id, headers.scopes)
    }
    if len(folded) != 3:
        raise error_at(where, "the three identity headers must have different names")
    return headers


_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def parse_scope_sets(value: object, where: str) -> dict[str, tuple[str, ...]]:
    data = read_mapping(value, where)
    raw: dict[str, list[str]] = {}
    for name, members in data.items():
        at = locate(where, name)
        read_matching(name, where, _SET_NAME, "scope set name")
        raw[name] = read_string_list(members, at)
        if not raw[name]:
            # SECURITY: expanding an empty set yields no scopes, which the
            # token service reads as "*" (full access).
            raise error_at(at, "a scope set needs at least one scope")
    return {name: _expand_set(name, raw, where, ()) for name in raw}


def _expand_set(
    name: str, raw: Mapping[str, list[str]], where: str, stack: tuple[str, ...]
) -> tuple[str, ...]:
    if name in stack:
        raise error_at(locate(where, name), "scope sets refer to each other in a cycle")
    result: list[str] = []
    for index, member in enumerate(raw[name]):
        at = locate(locate(where, name), index)
        if member.startswith("@"):
            if member[1:] not in raw:
                raise error_at(at, f"unknown scope set {member!r}")
            found = _expand_set(member[1:], raw, where, (*stack, name))
        else:
            found = (check_scope(member, at),)
        result.extend(scope for scope in found if scope not in result)
    return tuple(result)


def parse_networks(value: object, where: str) -> tuple[str, ...]:
    networks = []
    for index, item in enumerate(read_string_list(value, where)):
        try:
            networks.append(str(ipaddress.ip_network(item.strip())))
        except ValueError as exc:
            raise error_at(locate(where, index), f"invalid CIDR: {exc}") from None
    return tuple(networks)


def parse_limits(value: object, where: str) -> Limits:
    data = read_mapping(value, where)
    keys = field_names(Limits)
    check_keys(data, keys, where)
    default = Limits()

    def positive(v: object, w: str) -> int:
        return read_integer(v, w, 1)

    def optional(v: object, w: str) -> int | None:
        return None if v is None else read_integer(v, w, 0)

    return Limits(
        max_header_bytes=take(data, keys[0], where, positive, default.max_header_bytes),
        max_url_bytes=take(data, keys[1], where, positive, default.max_url_bytes),
        max_body_bytes=take(data, keys[2], where, optional, None),
        failed_auth_per_minute=take(
            data, keys[3], where, lambda v, w: read_integer(v, w, 0), 30
        ),
        header_timeout=take(
            data, "header_timeout", where, read_seconds, default.header_timeout
        ),
        logins_per_minute=take(data, "logins_per_minute", where, optional, None),
    )


def parse_listener(value: object, where: str) -> tuple[str, int]:
    """``manage:`` or ``ops:``: ``{listen: host:port}``, a listener of its own."""
    data = read_mapping(value, where)
    check_keys(data, ("listen",), where)
    if "listen" not in data:
        raise error_at(where, "needs listen: host:port (e.g. 127.0.0.1:8090)")
    return parse_listen(data["listen"], locate(where, "listen"))


# Paths under /_patgate/ that patgate serves itself: the page, its files, the
# API and the ops endpoints. The decision endpoint takes any other.
_OWN_PATHS = (
    "/_patgate/api",
    "/_patgate/static",
    "/_patgate/healthz",
    "/_patgate/readyz",
    "/_patgate/metrics",
)


def parse_forward_auth(value: object, where: str) -> ForwardAuthConfig:
    """``forward_auth: {path: /_patgate/auth, listen: host:port}`` (``{}`` or
    null: the default path, on the main listener).

    The path is canonical, under ``/_patgate/`` (where no route can be, so
    the endpoint never hides one) and none of patgate's own endpoints there.
    """
    data = {} if value is None else read_mapping(value, where)
    check_keys(data, field_names(ForwardAuthConfig), where)
    default = ForwardAuthConfig()
    path = take(data, "path", where, read_string, default.path)
    at = locate(where, "path")
    try:
        canonical = normalise_path(path) if path.startswith("/") else ""
    except PathError as exc:
        raise error_at(at, str(exc)) from None
    if canonical != path or path.endswith("/") or "?" in path or "%" in path:
        raise error_at(
            at, f"expected a plain path such as /_patgate/auth, got {path!r}"
        )
    if not path_within(path, "/_patgate") or path == "/_patgate":
        raise error_at(
            at,
            f"{path!r} is not under /_patgate/ (where no route can be,"
            " so the endpoint never hides one)",
        )
    for own in _OWN_PATHS:
        if path_within(path, own):
            raise error_at(at, f"{own} is one of patgate's own endpoints")
    listen = None
    if "listen" in data:
        listen = parse_listen(data["listen"], locate(where, "listen"))
    return ForwardAuthConfig(path=path, listen=listen)
