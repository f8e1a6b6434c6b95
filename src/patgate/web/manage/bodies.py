"""Request bodies of the API: JSON, size-limited, checked against the schemas."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from patgate.durations import parse_duration, parse_expiry_time
from patgate.errors import UsageError
from patgate.web.manage.endpoint import ApiError
from patgate.web.manage.openapi import BodyError, validate_body

MAX_BODY_BYTES = 64 * 1024


async def read_body(request: web.Request) -> object:
    """The parsed JSON body of a change (``endpoint`` checked its type)."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise too_large()
    data = bytearray()
    async for chunk in request.content.iter_any():
        data.extend(chunk)
        if len(data) > MAX_BODY_BYTES:
            raise too_large()
    if not data.strip():
        raise ApiError(
            400,
            "invalid_json",
            "the body is empty: send a JSON object ({} when there is nothing"
            " else to send)",
        )
    try:
        return json.loads(bytes(data))
    except (ValueError, RecursionError) as exc:
        raise ApiError(
            400, "invalid_json", f"the body is not valid JSON: {exc}"
        ) from None


def too_large() -> ApiError:
    return ApiError(
        413, "payload_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes"
    )


def fields_of(schema: str, body: object) -> dict[str, Any]:
    try:
        return validate_body(schema, body)
    except BodyError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None


def duration(field: str, text: str) -> int:
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise ApiError(422, "invalid_request", f"{field}: {exc}") from None


def expiry_args(fields: dict[str, Any], now: float) -> dict[str, Any]:
    """The service's expiry arguments for the expiry fields that were given."""
    given = [key for key in ("expires_at", "expires_in", "sliding") if key in fields]
    if len(given) > 1:
        raise ApiError(
            422,
            "invalid_request",
            f"choose one expiry: {' and '.join(given)} were both given",
        )
    args: dict[str, Any] = {}
    at = fields.get("expires_at")
    if "expires_at" in fields:
        try:
            args["expires_at"] = None if at is None else parse_expiry_time(at, now)
        except UsageError as exc:
            raise ApiError(422, "invalid_request", f"expires_at: {exc}") from None
    if "expires_in" in fields:
        within = fields["expires_in"]
        args["expires_at"] = (
            None if within is None else now + duration("expires_in", within)
        )
    for key in ("sliding", "max_lifetime"):
        if key in fields:
            value = fields[key]
            args[key] = None if value is None else duration(key, value)
    return args
