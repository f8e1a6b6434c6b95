"""gateway.yaml → a frozen :class:`Config`, with precise errors.

:func:`parse_config` is pure (text, environment and base directory in, Config
out) and refuses anything it does not understand: unknown keys (with a "did
you mean"), wrong types, duplicate YAML keys, invalid scopes, paths that are
not canonical. Every :class:`~patgate.errors.ConfigError` is one line that
names where the problem is, e.g. ``routes[1] (paas).methods.GET: invalid
scope 'a b': ...``. :func:`load_config` finds and reads the file.

This module owns the top level and the environment (``$PATGATE_CONFIG``,
``$PATGATE_STORE``, the pepper); ``$PATGATE_STORE`` overrides ``store`` and is
resolved like it. The rest of the package:

- :mod:`~patgate.config.model`: the frozen dataclasses; secrets never print.
- :mod:`~patgate.config.reader`: located YAML value readers and their errors.
- :mod:`~patgate.config.sections`: listen, store URL, cache, identity headers,
  scope sets, trusted proxies, limits.
- :mod:`~patgate.config.routes`: ``routes:``.

Import every name from here (``from patgate.config import Config``); the
submodules are the package's own layout.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import partial

# Importable from patgate.config since before the split, though not in __all__.
from patgate.config.model import CREDENTIAL_SOURCES as CREDENTIAL_SOURCES
from patgate.config.model import (
    CacheConfig,
    Config,
    ForwardAuthConfig,
    IdentityHeaders,
    Limits,
    MethodMap,
    RouteConfig,
    Secret,
    SecretHeaders,
    WebhookConfig,
    WebhookDelivery,
    frozen_mapping,
)
from patgate.config.reader import (
    check_keys,
    load_yaml,
    pattern_reader,
    read_bool,
    read_integer,
    read_mapping,
    read_seconds,
    read_string,
    take,
)
from patgate.config.routes import RouteContext
from patgate.config.sections import (
    parse_cache,
    parse_forward_auth,
    parse_identity_headers,
    parse_limits,
    parse_listen,
    parse_listener,
    parse_networks,
    parse_scope_sets,
    parse_store,
    sqlite_file,
)
from patgate.config.webhooks import (
    parse_lead_times,
    parse_reuse,
    parse_webhook_delivery,
    parse_webhooks,
)
from patgate.errors import ConfigError
from patgate.tokens import DEFAULT_PREFIX, PREFIX_PATTERN

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "STORE_ENV",
    "CacheConfig",
    "Config",
    "ForwardAuthConfig",
    "IdentityHeaders",
    "Limits",
    "MethodMap",
    "RouteConfig",
    "Secret",
    "SecretHeaders",
    "WebhookConfig",
    "WebhookDelivery",
    "load_config",
    "parse_config",
    "parse_store",
    "sqlite_file",
]

CONFIG_ENV = "PATGATE_CONFIG"
STORE_ENV = "PATGATE_STORE"
DEFAULT_CONFIG_PATH = "./gateway.yaml"

# fmt: off
_TOP_KEYS = (
    "listen", "store", "pepper_env", "token_prefix", "workers", "cache",
    "identity_headers", "scope_sets", "routes", "trusted_proxies", "limits",
    "usage_flush_interval", "api", "manage", "ops", "forward_auth", "webhooks",
    "webhook_delivery", "expiry_warnings", "rotation_reuse",
)
# fmt: on
_TOP_HINTS = {
    "pepper": "the pepper is read from the environment variable named by"
    " pepper_env, never from the file",
    "route": "did you mean 'routes'?",
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NO_SETS: dict[str, tuple[str, ...]] = {}
_NO_ROUTES: tuple[RouteConfig, ...] = ()


def parse_config(text: str, env: Mapping[str, str], base_dir: str) -> Config:
    """The Config in ``text``; raises ConfigError naming the faulty key.

    ``env`` supplies ``$PATGATE_STORE``, the pepper and ``${NAME}`` values of
    ``upstream_headers``; ``base_dir`` anchors relative SQLite paths.
    """
    loaded = load_yaml(text)
    data = {} if loaded is None else read_mapping(loaded, "the configuration")
    check_keys(data, _TOP_KEYS, "", _TOP_HINTS)
    base_dir = os.path.abspath(base_dir)
    warnings: list[str] = []
    host, port = take(data, "listen", "", parse_listen, ("127.0.0.1", 8080))
    pepper_env = take(
        data, "pepper_env", "", pattern_reader(_ENV_NAME, "variable name"), ""
    )
    pepper_env = pepper_env or "PATGATE_PEPPER"
    # An empty pepper is not a warning here: an SQLite store may get one from
    # its pepper file (patgate.pepper), a Redis store cannot.
    pepper = env.get(pepper_env, "")
    identity = take(
        data, "identity_headers", "", parse_identity_headers, IdentityHeaders()
    )
    scope_sets = take(data, "scope_sets", "", parse_scope_sets, _NO_SETS)
    context = RouteContext(env, scope_sets, identity, warnings)
    routes = take(data, "routes", "", context.parse_routes, _NO_ROUTES)
    if not routes:
        warnings.append("no routes: the gateway will answer 404 to every request")
    manage = take(data, "manage", "", parse_listener, None)
    ops = take(data, "ops", "", parse_listener, None)
    trusted: tuple[str, ...] = take(data, "trusted_proxies", "", parse_networks, ())
    forward_auth = None
    if "forward_auth" in data:
        forward_auth = parse_forward_auth(data["forward_auth"], "forward_auth")
        if not trusted:
            raise ConfigError(
                "forward_auth: the decision endpoint answers only the proxies in"
                " trusted_proxies, and the list is empty; add the address of"
                " the proxy in front (e.g. trusted_proxies: [127.0.0.1/32])"
            )
    _check_distinct(
        {
            "listen": (host, port),
            "manage.listen": manage,
            "ops.listen": ops,
            "forward_auth.listen": forward_auth.listen if forward_auth else None,
        }
    )
    return Config(
        listen_host=host,
        listen_port=port,
        store=_parse_store_setting(data, env, base_dir),
        pepper=Secret(pepper.encode("utf-8")),
        pepper_env=pepper_env,
        pepper_origin=f"${pepper_env}" if pepper else "",
        token_prefix=take(
            data, "token_prefix", "", pattern_reader(PREFIX_PATTERN, "prefix"), ""
        )
        or DEFAULT_PREFIX,
        workers=take(data, "workers", "", lambda v, w: read_integer(v, w, 1, 1024), 1),
        cache=take(data, "cache", "", parse_cache, CacheConfig()),
        identity_headers=identity,
        scope_sets=frozen_mapping(scope_sets),
        routes=routes,
        trusted_proxies=trusted,
        limits=take(data, "limits", "", parse_limits, Limits()),
        usage_flush_interval=take(data, "usage_flush_interval", "", read_seconds, 1.0),
        api=take(data, "api", "", read_bool, True),
        manage_listen=manage,
        ops_listen=ops,
        forward_auth=forward_auth,
        base_dir=base_dir,
        warnings=tuple(warnings),
        webhooks=take(data, "webhooks", "", partial(parse_webhooks, env=env), ()),
        webhook_delivery=take(
            data, "webhook_delivery", "", parse_webhook_delivery, WebhookDelivery()
        ),
        expiry_warnings=take(
            data, "expiry_warnings", "", parse_lead_times, (7 * 86400.0, 86400.0)
        ),
        rotation_reuse=take(data, "rotation_reuse", "", parse_reuse, "revoke"),
    )


def _check_distinct(listeners: Mapping[str, tuple[str, int] | None]) -> None:
    """Each listener needs an address of its own (port 0: the kernel picks one)."""
    seen: dict[tuple[str, int], str] = {}
    for name, address in listeners.items():
        if address is None or address[1] == 0:
            continue
        if address in seen:
            raise ConfigError(
                f"{name}: {address[0]}:{address[1]} is already {seen[address]};"
                " each listener needs an address of its own"
            )
        seen[address] = name


def _parse_store_setting(
    data: Mapping[str, object], env: Mapping[str, str], base_dir: str
) -> str:
    if env.get(STORE_ENV):
        return parse_store(env[STORE_ENV], f"${STORE_ENV}", base_dir)
    raw = take(data, "store", "", read_string, "sqlite:///./patgate.db")
    return parse_store(raw, "store", base_dir)


def load_config(path: str | None = None, env: Mapping[str, str] = os.environ) -> Config:
    """Read and parse the config: ``path`` (``--config``), else
    ``$PATGATE_CONFIG``, else ``./gateway.yaml``. Errors name the file."""
    explicit = True
    if path:
        chosen, origin = path, ""
    elif env.get(CONFIG_ENV):
        chosen, origin = env[CONFIG_ENV], f" (from ${CONFIG_ENV})"
    else:
        chosen, origin, explicit = DEFAULT_CONFIG_PATH, "", False
    try:
        with open(chosen, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        if not explicit:
            raise ConfigError(
                f"no configuration: {DEFAULT_CONFIG_PATH} not found (pass --config"
                f" PATH or set ${CONFIG_ENV})"
            ) from None
        raise ConfigError(f"{chosen}{origin}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"{chosen}{origin}: cannot read: {reason}") from None
    base_dir = os.path.dirname(os.path.abspath(chosen))
    try:
        return parse_config(text, env, base_dir)
    except ConfigError as exc:
        raise ConfigError(f"{chosen}: {exc}") from None
