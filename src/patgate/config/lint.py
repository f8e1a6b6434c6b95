"""Config lint: what a valid gateway.yaml may not mean (``patgate config check``).

:func:`lint_config` looks at a parsed :class:`~patgate.config.model.Config`
for rules that parse but probably do not do what their author meant:

- a ``paths`` pattern that an earlier one shadows (every path it matches, the
  earlier one matches first, for every method);
- a token route with no scope rule at all (any valid token passes);
- a ``methods`` map without ``"*"`` and no ``scope`` (the other methods pass
  with no scope; the warning names them);
- an ``auth: none`` prefix under or over a token route's prefix (one route
  opens or wraps a subtree of the other);
- query credentials on a route that clients reach without TLS in front (the
  gateway listens on a public address and trusts no proxy to terminate TLS):
  the token travels in clear in the URL, which proxies and browsers log.

Each :class:`LintWarning` names the route and the key. Pure: the parsed
config in, warnings out; :mod:`patgate.cli.serve` prints them, and
``--strict`` makes them a failure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from patgate.config.model import Config, RouteConfig
from patgate.scopes import path_within

__all__ = ["LintWarning", "lint_config"]

# The methods a warning about unscoped methods names: HTTP's and WebDAV's.
KNOWN_METHODS = (
    "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LintWarning:
    """One finding: ``route`` is ``routes[i] (name)``, ``key`` the key in it."""

    route: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.route}.{self.key}" if self.key else self.route
        return f"{where}: {self.message}"


def lint_config(config: Config) -> list[LintWarning]:
    """Every finding of the module docstring, route by route, in file order."""
    labels = {
        route.name: f"routes[{index}] ({route.name})"
        for index, route in enumerate(config.routes)
    }
    found: list[LintWarning] = []
    for route in config.routes:
        label = labels[route.name]
        if route.auth == "none":
            found.extend(_public_overlaps(route, label, config.routes, labels))
            continue
        found.extend(_shadowed_paths(route, label))
        found.extend(_scope_rules(route, label))
        found.extend(_query_in_clear(route, label, config))
    return found


def _scope_rules(route: RouteConfig, label: str) -> Iterator[LintWarning]:
    if not route.methods and not route.paths and route.scope is None:
        yield LintWarning(
            label,
            "",
            "no scope rule (methods, paths or scope): any valid token passes",
        )
        return
    if (
        route.methods
        and "*" not in route.methods
        and route.scope is None
        and not _paths_decide_everything(route)
    ):
        listed = set(route.methods)
        if "GET" in listed:
            listed.add("HEAD")  # HEAD needs GET's scope as well
        open_methods = [m for m in KNOWN_METHODS if m not in listed]
        also = " (unless a paths rule names them)" if route.paths else ""
        yield LintWarning(
            label,
            "methods",
            f'no "*" entry and no scope: {", ".join(open_methods)} and any other'
            f' method pass with no scope{also}; add "*": <scope>',
        )


def _paths_decide_everything(route: RouteConfig) -> bool:
    """Whether a ``paths`` rule decides for every path and method of the route
    (a scope, or a method map with ``"*"``, on a pattern covering the prefix),
    so the ``methods`` map is never reached."""
    fold = _folder(route.case_sensitive)
    everything = fold(route.prefix.rstrip("/") + "/*")
    return any(
        (isinstance(rule, str) or "*" in rule)
        and _glob_covers(fold(pattern), everything)
        for pattern, rule in route.paths
    )


def _shadowed_paths(route: RouteConfig, label: str) -> Iterator[LintWarning]:
    fold: Callable[[str], str] = (
        (lambda text: text) if route.case_sensitive else str.lower
    )
    earlier: list[str] = []
    for pattern, rule in route.paths:
        for before in earlier:
            exact = "*" not in pattern and "*" not in before
            if not exact and _glob_covers(fold(before), fold(pattern)):
                yield LintWarning(
                    label,
                    f"paths.{pattern}",
                    f"never decides: {before!r} above matches every path it does"
                    " (first match wins; put the narrower pattern first)",
                )
                break
        # A method map without "*" lets the search go on for other methods.
        if isinstance(rule, str) or "*" in rule:
            earlier.append(pattern)


def _public_overlaps(
    route: RouteConfig,
    label: str,
    routes: Sequence[RouteConfig],
    labels: dict[str, str],
) -> Iterator[LintWarning]:
    for other in routes:
        if other.auth == "none" or not _same_hosts(route, other):
            continue
        fold = _folder(route.case_sensitive and other.case_sensitive)
        mine, theirs = fold(route.prefix.rstrip("/")), fold(other.prefix.rstrip("/"))
        other_label = labels[other.name]
        if path_within(mine, theirs):
            yield LintWarning(
                label,
                "auth",
                f"auth: none under {other_label}'s prefix {other.prefix!r}: this"
                " subtree of a protected route is public",
            )
        elif path_within(theirs, mine):
            yield LintWarning(
                label,
                "auth",
                f"auth: none over {other_label}'s prefix {other.prefix!r}: a"
                " spelling or upstream mapping that misses the protected prefix"
                " lands on this public route's upstream",
            )


def _query_in_clear(
    route: RouteConfig, label: str, config: Config
) -> Iterator[LintWarning]:
    if "query" not in route.credentials or config.trusted_proxies:
        return
    if _loopback(config.listen_host):
        return
    names = ", ".join(route.query_params)
    yield LintWarning(
        label,
        "credentials",
        f"query credentials ({names}) on {config.listen_host}:"
        f"{config.listen_port} with no trusted proxy (TLS) in front: tokens"
        " travel in clear in URLs; drop query or put a TLS proxy in"
        " trusted_proxies",
    )


def _same_hosts(first: RouteConfig, second: RouteConfig) -> bool:
    """Whether some Host reaches both (a host-less route takes every host)."""
    return first.host is None or second.host is None or first.host == second.host


def _folder(case_sensitive: bool) -> Callable[[str], str]:
    return (lambda text: text) if case_sensitive else str.lower


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _glob_covers(wide: str, narrow: str) -> bool:
    """Whether every path ``narrow`` matches, ``wide`` matches too.

    ``*`` matches any run of characters, ``/`` included; a final ``/*`` also
    matches the bare parent (:mod:`patgate.routing`).
    """
    narrows = [narrow]
    if narrow.endswith("/*"):
        narrows.append(narrow[:-2])
    wides = [wide]
    if wide.endswith("/*"):
        wides.append(wide[:-2])
    return all(any(_covers(w, n) for w in wides) for n in narrows)


@lru_cache(maxsize=1024)
def _covers(wide: str, narrow: str) -> bool:
    """Pattern inclusion: a ``*`` of ``narrow`` can stand for anything, so only
    a ``*`` of ``wide`` may take it; a literal must meet the same literal."""
    if not wide:
        return not narrow
    if wide[0] == "*":
        return any(_covers(wide[1:], narrow[i:]) for i in range(len(narrow) + 1))
    if not narrow or narrow[0] == "*" or narrow[0] != wide[0]:
        return False
    return _covers(wide[1:], narrow[1:])
