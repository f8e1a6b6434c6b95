"""What forwarding needs of the config, computed once per load.

:class:`ProxyState` is everything the proxy handler reads: the gate's
:class:`~patgate.gate.Rules`, and per route a :class:`RouteTarget` (upstream
base URL, timeouts, the headers never forwarded, the ones injected). A
reload swaps it whole, between requests.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import ClientTimeout
from yarl import URL

from patgate.config import Config, RouteConfig
from patgate.gate import Rules
from patgate.web.gateway.headers import header_drops, header_key
from patgate.web.gateway.upstream import DEFAULT_TIMEOUT


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """What forwarding needs of a route, computed once per config load."""

    base: str  # upstream origin + base path, no trailing slash
    origin: URL
    timeout: ClientTimeout | None  # None: the session's DEFAULT_TIMEOUT
    drop: frozenset[str]  # folded header names never forwarded from a trusted peer
    drop_untrusted: frozenset[str]  # ... from any other peer
    inject: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ProxyState:
    """Everything the handler reads; swapped whole on a config reload."""

    config: Config
    rules: Rules
    targets: dict[str, RouteTarget]

    @classmethod
    def from_config(cls, config: Config) -> ProxyState:
        identity = {header_key(name) for name in _identity_names(config)}
        targets = {
            route.name: _target(route, frozenset(identity)) for route in config.routes
        }
        return cls(config=config, rules=Rules.from_config(config), targets=targets)


def _identity_names(config: Config) -> tuple[str, str, str]:
    names = config.identity_headers
    return (names.user, names.token_id, names.scopes)


def _target(route: RouteConfig, identity: frozenset[str]) -> RouteTarget:
    upstream = URL(route.upstream)
    names = set(identity)
    if route.auth != "none":
        names.add("authorization")
        if "header" in route.credentials and route.api_key_header:
            names.add(route.api_key_header)
    inject = tuple(
        (name, secret_text(value)) for name, value in route.upstream_headers.items()
    )
    names.update(name for name, _ in inject)
    drop, drop_untrusted = header_drops(names, route.pass_headers)
    timeout = ClientTimeout(
        total=None, sock_connect=route.connect_timeout, sock_read=route.read_timeout
    )
    return RouteTarget(
        base=str(upstream).rstrip("/"),
        origin=upstream.origin(),
        timeout=None if timeout == DEFAULT_TIMEOUT else timeout,
        drop=drop,
        drop_untrusted=drop_untrusted,
        inject=inject,
    )


def secret_text(value: object) -> str:
    """The text of a config value that may be wrapped as a Secret."""
    raw = getattr(value, "value", value)
    return raw.decode() if isinstance(raw, bytes) else str(raw)
