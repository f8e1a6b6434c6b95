"""Who sent a request, and by which name it reached this gateway.

- Trusted proxies (``trusted_proxies``): only their ``X-Forwarded-*`` are
  believed. :class:`Client` is the peer, whether it is such a proxy, and the
  client's address (the last untrusted ``X-Forwarded-For`` hop behind one).
- ``Host`` must be ``host[:port]`` (:func:`valid_host`).
- :class:`ClientOrigin`: the scheme and the ``host[:port]`` names by which the
  client reached us, for what must name this gateway (a WebDAV
  ``Destination``, a browser's ``Origin``).

Pure: headers are any case-insensitive multi-mapping (:class:`HeaderMap`).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import SplitResult, urlsplit


class HeaderMap(Protocol):
    """Request headers, looked up case-insensitively (aiohttp's qualify)."""

    def get(self, key: str, /) -> str | None: ...

    def getall(self, key: str, default: Sequence[str], /) -> Sequence[str]: ...

    def __contains__(self, key: object, /) -> bool: ...


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Networks(tuple[Network, ...]):
    """``trusted_proxies``, parsed; hashed once.

    It keys the cache of :func:`_in_networks`, asked several times a
    request, and an address network hashes in Python (~0.3 us each).
    """

    _hash: int

    def __new__(cls, networks: Iterable[Network] = ()) -> Networks:
        made = super().__new__(cls, networks)
        made._hash = tuple.__hash__(made)
        return made

    def __hash__(self) -> int:
        return self._hash


DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# name[:port], IPv4[:port] or [IPv6][:port]; the port may be empty (RFC 3986).
_HOST = re.compile(
    r"(?:(?:[A-Za-z0-9_-]+\.)*[A-Za-z0-9_-]+\.?|\[(?P<ip6>[0-9A-Fa-f:.]+)\])"
    r"(?::(?P<port>[0-9]{0,5}))?"
)


def parse_networks(cidrs: Iterable[str]) -> Networks:
    return Networks(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def is_trusted(ip: str | None, networks: Networks) -> bool:
    if not ip or not networks:
        return False
    return _in_networks(ip, networks)


@functools.lru_cache(maxsize=4096)
def _in_networks(ip: str, networks: Networks) -> bool:
    """Cached: parsing an address costs more than the rest of a decision's
    client check, and a handful of proxies and clients ask again and again."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def client_address(
    peer: str | None, headers: HeaderMap, trusted: Networks
) -> str | None:
    """The client's IP: the peer, or the last untrusted X-Forwarded-For hop."""
    if not is_trusted(peer, trusted):
        return peer
    return _behind(peer, headers, trusted)


def _behind(peer: str | None, headers: HeaderMap, trusted: Networks) -> str | None:
    """The last untrusted X-Forwarded-For hop sent by ``peer``, a trusted proxy."""
    hops = [
        hop.strip()
        for value in headers.getall("X-Forwarded-For", ())
        for hop in value.split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            return hop
    return peer


@dataclass(slots=True)  # made per request: not frozen, which costs more
class Client:
    """The peer of a connection and the client behind it."""

    peer: str | None
    trusted: bool  # the peer is one of trusted_proxies
    ip: str | None  # the client's address (the peer unless trusted)

    @classmethod
    def of(cls, peer: str | None, headers: HeaderMap, trusted: Networks) -> Client:
        if not trusted or not is_trusted(peer, trusted):
            return cls(peer, False, peer)
        return cls(peer, True, _behind(peer, headers, trusted))


@functools.lru_cache(maxsize=1024)
def valid_host(host: str) -> bool:
    """True when ``host`` is ``host[:port]`` and nothing else.

    SECURITY: a Host that is a list (``other, secure.example.com``), holds
    spaces, userinfo, a path or a second port is one name to the router and
    another to an upstream reading ``X-Forwarded-Host``: it would dodge a
    host-bound route. Names are DNS-like labels; one trailing dot is the
    same name (the router drops it too). Cached: Host rarely varies.
    """
    match = _HOST.fullmatch(host)
    if match is None:
        return False
    port = match.group("port")
    if port and int(port) > 65535:
        return False
    literal = match.group("ip6")
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class ClientOrigin:
    """The scheme and the host[:port] names by which the client reached us."""

    scheme: str
    authorities: tuple[tuple[str, int | None], ...]

    @classmethod
    def of(cls, scheme: str, headers: HeaderMap, peer_trusted: bool) -> ClientOrigin:
        """From Host, and X-Forwarded-Host/-Proto when a trusted proxy sent them."""
        names = list(headers.getall("Host", ()))
        if peer_trusted:
            forwarded = headers.get("X-Forwarded-Host") or ""
            names.extend(part.strip() for part in forwarded.split(","))
            proto = headers.get("X-Forwarded-Proto") or ""
            scheme = proto.split(",", 1)[0].strip().lower() or scheme
        port = DEFAULT_PORTS.get(scheme)
        authorities = tuple(
            (host, explicit or port)
            for host, explicit in map(_split_authority, names)
            if host
        )
        return cls(scheme, authorities)

    @property
    def hosts(self) -> list[str]:
        """The names as ``host[:port]`` texts (default ports left out)."""
        default = DEFAULT_PORTS.get(self.scheme)
        return [
            host if port in (None, default) else f"{_bracket(host)}:{port}"
            for host, port in self.authorities
        ]

    def names_other_server(self, value: str) -> bool:
        """Whether the URL ``value`` names a server (host, port, scheme) but us.

        A path (``/dav/x``) or a URI without a host (a lock token such as
        ``opaquelocktoken:...``) names no server. Userinfo is never ours.
        """
        try:
            url = split_url(value)
            host = url.hostname
            port = url.port
        except ValueError:
            return True
        if host is None:
            return False
        scheme = url.scheme.lower() or self.scheme
        if scheme != self.scheme or "@" in url.netloc:
            return True
        port = port or DEFAULT_PORTS.get(scheme)
        return (host.lower().rstrip("."), port) not in self.authorities


def split_url(value: str) -> SplitResult:
    """``value`` split into its parts, the path still percent-encoded.

    Raises ValueError for what is not a URL (a bad port, a bad IPv6 literal).
    """
    parts = urlsplit(value)
    _ = parts.port  # raises ValueError on a malformed port
    return parts


def _split_authority(value: str) -> tuple[str, int | None]:
    """``(name, port)`` of a Host value (already checked by ``valid_host``)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        digits = rest[1:]
    else:
        host, _, digits = value.partition(":")
    return host.lower().rstrip("."), int(digits) if digits.isdigit() else None


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
