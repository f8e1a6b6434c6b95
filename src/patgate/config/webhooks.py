"""The incident-response sections of ``gateway.yaml``.

``webhooks:`` (a list of ``{url, secret, events}``), ``webhook_delivery:``
(lease, timeout, retries), ``expiry_warnings:`` (lead times of the
``token.expiring`` events) and ``rotation_reuse:`` (revoke, alert or ignore).
A webhook secret may name environment variables (``${HOOK_SECRET}``); it is
never quoted in an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal, cast
from urllib.parse import urlsplit

from patgate.config.model import Secret, WebhookConfig, WebhookDelivery
from patgate.config.reader import (
    check_keys,
    error_at,
    field_names,
    kind_of,
    locate,
    read_integer,
    read_mapping,
    read_seconds,
    read_string,
    read_string_list,
    take,
)
from patgate.events import EVENT_TYPES

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REUSE = ("revoke", "alert", "ignore")


def parse_webhooks(
    value: object, where: str, *, env: Mapping[str, str]
) -> tuple[WebhookConfig, ...]:
    if not isinstance(value, list):
        raise error_at(where, f"expected a list, got {kind_of(value)}")
    return tuple(_webhook(item, locate(where, i), env) for i, item in enumerate(value))


def _webhook(value: object, where: str, env: Mapping[str, str]) -> WebhookConfig:
    data = read_mapping(value, where)
    check_keys(data, ("url", "secret", "events"), where)
    for key in ("url", "secret"):
        if key not in data:
            raise error_at(where, f"{key} is required")
    url = read_string(data["url"], locate(where, "url"))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise error_at(locate(where, "url"), "expected an http:// or https:// URL")
    at = locate(where, "secret")
    text = read_string(data["secret"], at)
    missing = [n for n in _ENV_REF.findall(text) if n not in env]
    if missing:
        raise error_at(at, f"environment variable {missing[0]!r} is not set")
    text = _ENV_REF.sub(lambda m: env[m.group(1)], text)
    if not text:
        raise error_at(at, "must not be empty")
    events: list[str] = take(data, "events", where, read_string_list, [])
    for i, name in enumerate(events):
        if name not in EVENT_TYPES:
            raise error_at(
                locate(locate(where, "events"), i),
                f"unknown event {name!r}; expected one of {', '.join(EVENT_TYPES)}",
            )
    return WebhookConfig(url, Secret(text.encode()), tuple(events))


def parse_webhook_delivery(value: object, where: str) -> WebhookDelivery:
    data = read_mapping(value, where)
    keys = field_names(WebhookDelivery)
    check_keys(data, keys, where)
    default = WebhookDelivery()
    seconds = {
        key: take(data, key, where, read_seconds, getattr(default, key))
        for key in keys
        if key != "attempts"
    }
    attempts = take(
        data, "attempts", where, lambda v, w: read_integer(v, w, 1, 100), 10
    )
    if seconds["lease"] <= seconds["timeout"]:
        # Else a slow endpoint outlives the lease and another replica sends
        # the same event while the first still waits for its answer.
        raise error_at(
            locate(where, "lease"), "must be longer than webhook_delivery.timeout"
        )
    return WebhookDelivery(attempts=attempts, **seconds)


def parse_lead_times(value: object, where: str) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise error_at(where, f"expected a list such as [7d, 1d], got {kind_of(value)}")
    leads = {read_seconds(item, locate(where, i)) for i, item in enumerate(value)}
    return tuple(sorted(leads, reverse=True))


def parse_reuse(value: object, where: str) -> Literal["revoke", "alert", "ignore"]:
    text = read_string(value, where)
    if text not in _REUSE:
        raise error_at(where, f"expected revoke, alert or ignore, got {text!r}")
    return cast(Literal["revoke", "alert", "ignore"], text)
