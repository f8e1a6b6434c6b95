"""The configuration as frozen dataclasses, what ``parse_config`` returns.

Secrets never print: the pepper is a :class:`Secret`, injected upstream
header values live in a :class:`SecretHeaders` mapping whose ``repr`` hides
them, and the store URL (which may hold a Redis password) is left out of
``repr(Config)``. Nothing here reads YAML.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeVar

from patgate.tokens import DEFAULT_PREFIX

CREDENTIAL_SOURCES = ("bearer", "basic", "query", "header")
DEFAULT_QUERY_PARAMS = ("access_token", "session")
# Folded names (``reader.fold_header``) of headers that make an upstream act
# on another path or method than the one the gateway authorised (IIS,
# Symfony, Zend: X-Original-URL; Rails, Laravel, Express: the method
# overrides). Never forwarded unless a route lists them in ``pass_headers``.
# fmt: off
OVERRIDE_HEADERS = frozenset((
    "x-original-url", "x-rewrite-url", "x-original-uri", "x-envoy-original-path",
    "x-http-method-override", "x-http-method", "x-method-override",
    "x-original-method",
))
# fmt: on

MethodMap = Mapping[str, str]
T = TypeVar("T")


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """A secret from the environment; never shown by ``repr`` or ``str``."""

    value: bytes

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


class SecretHeaders(Mapping[str, str]):
    """Header name → value, read-only, with the values hidden from ``repr``."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = dict(items or {})

    def __getitem__(self, name: str) -> str:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return "SecretHeaders({" + ", ".join(f"{k!r}: '***'" for k in self) + "})"


def frozen_mapping(items: Mapping[str, T] | None = None) -> Mapping[str, T]:
    """A read-only copy of ``items``."""
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Token cache bounds; all times in seconds."""

    ttl: float = 30.0
    negative_ttl: float = 5.0
    max_entries: int = 100_000
    max_stale: float = 60.0


@dataclass(frozen=True, slots=True)
class IdentityHeaders:
    user: str = "X-Patgate-User"
    token_id: str = "X-Patgate-Token-Id"  # noqa: S105 - a header name
    scopes: str = "X-Patgate-Scopes"


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 8190
    max_url_bytes: int = 8190
    max_body_bytes: int | None = None
    failed_auth_per_minute: int = 30
    # Seconds a client has to send a request's headers (slowloris).
    header_timeout: float = 10.0
    # Password checks (API and page logins) per client address and minute,
    # right or wrong; None: the same as failed_auth_per_minute.
    logins_per_minute: int | None = None

    @property
    def login_limit(self) -> int:
        """Password checks allowed per client address and minute; 0: no limit."""
        if self.logins_per_minute is None:
            return self.failed_auth_per_minute
        return self.logins_per_minute


@dataclass(frozen=True, slots=True)
class ForwardAuthConfig:
    """``forward_auth:``: the decision endpoint for a proxy in front.

    ``path`` is where nginx ``auth_request``, Traefik ``ForwardAuth``, Caddy
    ``forward_auth`` and Envoy ``ext_authz`` (its ``path_prefix``) ask;
    ``listen`` a listener of the endpoint's own (served by a lean HTTP/1.1
    server, :mod:`patgate.web.gateway.decision_server`), None: the main one.
    """

    path: str = "/_patgate/auth"
    listen: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """One entry of ``routes:``. ``realm`` defaults to the route's name.

    ``paths`` keeps the file's order (first match wins); a value is a scope or
    a method map. Forward to ``upstream.rstrip("/") + upstream path``.
    ``case_sensitive`` says the upstream tells ``/Admin`` from ``/admin``, so
    the prefix and ``paths`` patterns need not match other letter cases.
    """

    name: str
    prefix: str
    upstream: str
    host: str | None = None
    strip_prefix: bool = False
    credentials: tuple[str, ...] = CREDENTIAL_SOURCES
    query_params: tuple[str, ...] = DEFAULT_QUERY_PARAMS
    api_key_header: str = "X-API-Key"
    realm: str = ""
    auth: Literal["token", "none"] = "token"
    methods: MethodMap = field(default_factory=frozen_mapping, hash=False)
    paths: tuple[tuple[str, str | MethodMap], ...] = field(default=(), hash=False)
    scope: str | None = None
    error_style: Literal["json", "result"] = "json"
    upstream_headers: Mapping[str, str] = field(
        default_factory=SecretHeaders, hash=False
    )
    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    websocket: bool = True
    pass_headers: tuple[str, ...] = ()  # folded names out of OVERRIDE_HEADERS
    case_sensitive: bool = False

    def __post_init__(self) -> None:
        if not self.realm:
            object.__setattr__(self, "realm", self.name)


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One entry of ``webhooks:``: where to POST which events, signed with
    ``secret``. ``events`` empty: every event."""

    url: str
    secret: Secret
    events: tuple[str, ...] = ()

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """How the outbox is delivered (``webhook_delivery:``); seconds.

    ``lease``: how long a replica that stops renewing keeps the others from
    delivering; ``first_retry`` doubles per attempt up to ``max_retry``;
    after ``attempts`` tries a delivery is given up (and logged so).
    """

    lease: float = 15.0
    timeout: float = 10.0
    attempts: int = 10
    first_retry: float = 10.0
    max_retry: float = 3600.0
    poll: float = 1.0
    expiry_scan: float = 60.0


@dataclass(frozen=True, slots=True)
class Config:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    store: str = field(default="sqlite:///./patgate.db", repr=False)
    pepper: Secret = Secret(b"")
    pepper_env: str = "PATGATE_PEPPER"
    # Where the pepper came from ("$PATGATE_PEPPER", a pepper file), for messages.
    pepper_origin: str = ""
    token_prefix: str = DEFAULT_PREFIX
    workers: int = 1
    cache: CacheConfig = CacheConfig()
    identity_headers: IdentityHeaders = IdentityHeaders()
    scope_sets: Mapping[str, tuple[str, ...]] = field(
        default_factory=frozen_mapping, hash=False
    )
    routes: tuple[RouteConfig, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    limits: Limits = Limits()
    usage_flush_interval: float = 1.0
    api: bool = True
    # Separate listeners for the management page and API, and for the ops
    # endpoints; None: served on the main listener.
    manage_listen: tuple[str, int] | None = None
    ops_listen: tuple[str, int] | None = None
    # The decision endpoint; None: not served (no forward_auth section).
    forward_auth: ForwardAuthConfig | None = None
    base_dir: str = "."
    warnings: tuple[str, ...] = ()
    webhooks: tuple[WebhookConfig, ...] = ()
    webhook_delivery: WebhookDelivery = WebhookDelivery()
    # Lead times (seconds before expiry) of the token.expiring events.
    expiry_warnings: tuple[float, ...] = (7 * 86400.0, 86400.0)
    # What a value regenerated away and presented after its grace does.
    rotation_reuse: Literal["revoke", "alert", "ignore"] = "revoke"
