"""Store URLs: the schemes patgate knows, how a Redis URL is read, how it is shown.

The one place that lists the store URL schemes (the config check and
:func:`patgate.store.open_store` both ask here) and the one function that
hides a store URL's secrets (:func:`hide_password`), for the CLI, the server
banner and the store's own error messages.

Plain Redis (``redis://``, ``rediss://``, ``unix://``) URLs are handed to
redis-py as they are; this module only checks them. Sentinel and Cluster URLs
name several hosts, which no URL parser accepts, so :func:`parse_redis_url`
reads them into a :class:`RedisUrl`.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

SQLITE = "sqlite"
REDIS = "redis"
REDIS_TLS = "rediss"
REDIS_UNIX = "unix"
SENTINEL = "redis+sentinel"
CLUSTER = "redis+cluster"
# Every scheme whose store is Redis, and every scheme a store URL may have.
REDIS_SCHEMES = (REDIS, REDIS_TLS, REDIS_UNIX, SENTINEL, CLUSTER)
STORE_SCHEMES = (SQLITE, *REDIS_SCHEMES)
EXAMPLES = (
    "sqlite:///PATH, redis://HOST:PORT/DB, rediss://..., unix:///SOCKET,"
    " redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]"
    " or redis+cluster://HOST:PORT[,HOST:PORT...]"
)

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
# Query options whose values are secrets, like the password of the URL.
SECRET_OPTIONS = ("password", "sentinel_password")


def scheme_of(url: str) -> str:
    """The scheme of ``url``, lower case; '' if it has none."""
    return url.partition("://")[0].lower() if "://" in url else ""


def hide_password(url: str) -> str:
    """``url`` with its password (and any secret query option) shown as ``***``.

    ``redis://user:secret@h:1/0`` -> ``redis://user:***@h:1/0``. Everything
    before the last ``@`` is credentials, so a password with an unescaped
    ``/``, ``@``, ``?`` or ``#`` in it is hidden too (an ``@`` in an option
    hides more than it needs to, never less). Option names are compared
    percent-decoded, as the parser reads them.
    """
    # SECURITY: a store URL may carry a password; this is the only way one
    # is shown to a person (CLI output, logs, error messages).
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if "@" in rest:
        creds, _, rest = rest.rpartition("@")
        user, colon, _ = creds.partition(":")
        rest = f"{user}:***@{rest}" if colon else f"***@{rest}"
    location, qmark, query = rest.partition("?")
    if qmark:
        pairs = [
            f"{name}=***"
            if unquote(name) in SECRET_OPTIONS and eq
            else f"{name}{eq}{v}"
            for name, eq, v in (pair.partition("=") for pair in query.split("&"))
        ]
        query = "&".join(pairs)
    return f"{scheme}{sep}{location}{qmark}{query}"


def _is_bool(text: str) -> bool:
    return text.lower() in ("true", "false", "yes", "no", "1", "0")


def is_true(text: str) -> bool:
    return text.lower() in ("true", "yes", "1")


def _is_positive(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


# The query options of a Redis store URL that patgate passes to redis-py,
# each with what its value must look like. Anything else is refused:
# redis-py would hand an unknown option to the connection as a keyword.
REDIS_URL_OPTIONS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "db": ("a database number", str.isdigit),
    "socket_timeout": ("seconds", _is_positive),
    "socket_connect_timeout": ("seconds", _is_positive),
    "health_check_interval": ("whole seconds", str.isdigit),
    "max_connections": ("a number", lambda v: v.isdigit() and int(v) > 0),
    "socket_keepalive": ("true or false", _is_bool),
    "sentinel_password": ("the sentinels' password", bool),
    "ssl_ca_certs": ("a file", bool),
    "ssl_ca_path": ("a directory", bool),
    "ssl_certfile": ("a file", bool),
    "ssl_keyfile": ("a file", bool),
    "ssl_cert_reqs": (
        "none, optional or required",
        {"none", "optional", "required"}.__contains__,
    ),
    "ssl_check_hostname": ("true or false", _is_bool),
}
# Options only some schemes take.
_ONLY_WITH = {
    "ssl_": (REDIS_TLS,),
    "sentinel_": (SENTINEL,),
    "db": (REDIS, REDIS_TLS, REDIS_UNIX),
}


@dataclass(frozen=True, slots=True)
class RedisUrl:
    """A Redis store URL, read and checked.

    ``hosts`` are the servers (plain, TLS), the sentinels (Sentinel) or the
    startup nodes (Cluster); empty for a Unix socket. ``service`` is the
    Sentinel service name. ``options`` are the query options, checked
    against :data:`REDIS_URL_OPTIONS` (``db`` moved into ``db``).
    """

    scheme: str
    hosts: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    db: int
    service: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.scheme == REDIS_TLS


class StoreUrlError(ValueError):
    """A store URL patgate cannot use; the message never holds its password."""


def parse_redis_url(url: str) -> RedisUrl:
    """Read and check a Redis store URL of any of :data:`REDIS_SCHEMES`.

    Raises StoreUrlError with one line that says what is wrong.
    """
    scheme = scheme_of(url)
    if scheme not in REDIS_SCHEMES:
        raise StoreUrlError(f"unsupported Redis store scheme {scheme!r}")
    rest = url.partition("://")[2]
    if "@" in rest.partition("?")[2] or "@" in rest.partition("#")[2]:
        # A "?" or "#" in the password: what follows would be read as options
        # (and quoted in their errors). Nothing of the URL is quoted here.
        raise StoreUrlError(
            "the store URL has an '@' after a '?' or '#': percent-encode '?'"
            " and '#' in a user name or password (%3F, %23)"
        )
    before_fragment = rest.partition("#")[0]
    location, _, query = before_fragment.partition("?")
    options = _read_options(query, scheme)
    if scheme in (SENTINEL, CLUSTER):
        return _parse_many_hosts(scheme, location, options)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # SECURITY: urllib's message quotes the "port", which a password
        # holding "/" or ":" turns into a piece of the password.
        raise StoreUrlError("invalid store URL: the port is not a number") from None
    db_text = options.pop("db", "0")
    if scheme == REDIS_UNIX:
        if not parts.path:
            raise StoreUrlError(
                "unix store URL needs a socket path: unix:///path/to.sock"
            )
        hosts: tuple[tuple[str, int], ...] = ()
    else:
        if not parts.hostname:
            raise StoreUrlError(
                f"{scheme} store URL needs a host: {scheme}://HOST:PORT/DB"
            )
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise StoreUrlError(
                "the path of a redis URL is the database number, e.g. /0"
            )
        db_text = path or db_text
        hosts = ((parts.hostname, port or DEFAULT_PORT),)
    return RedisUrl(
        scheme=scheme,
        hosts=hosts,
        username=_unquoted(parts.username),
        password=_unquoted(parts.password),
        db=int(db_text),
        options=options,
    )


def _unquoted(text: str | None) -> str | None:
    return None if text is None else unquote(text)


def _read_options(query: str, scheme: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, values in parse_qs(query, keep_blank_values=True).items():
        spec = REDIS_URL_OPTIONS.get(name)
        if spec is None:
            known = ", ".join(REDIS_URL_OPTIONS)
            raise StoreUrlError(f"unknown store URL option {name!r} (known: {known})")
        for prefix, schemes in _ONLY_WITH.items():
            if name.startswith(prefix) and scheme not in schemes:
                needs = " or ".join(f"{s}://" for s in schemes)
                raise StoreUrlError(f"store URL option {name!r} needs {needs}")
        expected, valid = spec
        if len(values) > 1 or not valid(values[0]):
            raise StoreUrlError(f"store URL option {name!r} must be {expected}")
        options[name] = values[0]
    return options


def _parse_many_hosts(scheme: str, location: str, options: dict[str, str]) -> RedisUrl:
    netloc, _, path = location.partition("/")
    username = password = None
    if "@" in netloc:
        creds, _, netloc = netloc.rpartition("@")
        user, colon, secret = creds.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    default_port = DEFAULT_SENTINEL_PORT if scheme == SENTINEL else DEFAULT_PORT
    hosts = tuple(_host_port(item, default_port) for item in netloc.split(","))
    if scheme == CLUSTER:
        if path.strip("/"):
            raise StoreUrlError(
                "a redis+cluster URL has no path: a Cluster has database 0 only"
            )
        return RedisUrl(scheme, hosts, username, password, 0, options=options)
    service, _, db_text = path.strip("/").partition("/")
    if not service:
        raise StoreUrlError(
            "a redis+sentinel URL names the service:"
            " redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]"
        )
    if db_text and not db_text.isdigit():
        raise StoreUrlError(
            "after the service, a redis+sentinel URL has the database number,"
            " e.g. /mymaster/0"
        )
    return RedisUrl(
        scheme, hosts, username, password, int(db_text or 0), service, options
    )


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    host, port_text = item, ""
    if item.startswith("["):
        host, _, after = item[1:].partition("]")
        port_text = after.removeprefix(":")
    elif ":" in item:
        host, _, port_text = item.rpartition(":")
    if not host:
        # SECURITY: never quote the item: a misplaced password lands here.
        raise StoreUrlError("store URL needs a host in every HOST:PORT")
    if port_text and (not port_text.isdigit() or int(port_text) > 65535):
        raise StoreUrlError("invalid store URL: a port is not a number up to 65535")
    return host, int(port_text) if port_text else default_port
