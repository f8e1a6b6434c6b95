"""The management API's OpenAPI 3.1 document and the request-body schemas.

The schemas here are the one description of every request body: the API
validates bodies against them (:func:`validate_body`) and the document serves
them, so what is documented is what is enforced. Routes are described by
:class:`Operation` rows that ``api.py`` registers; :func:`build_document`
turns those rows into the document, so a route cannot exist undocumented.

Pure: no aiohttp.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Schema = dict[str, Any]


class BodyError(Exception):
    """A request body that does not match its schema; the message names the field."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One documented API operation; ``path`` is relative to the API prefix."""

    method: str
    path: str
    operation_id: str
    summary: str
    status: int = 200
    request: str | None = None
    response: str | None = None
    auth: str = "login"  # "login" (reads), "change" (password needed), "none"
    parameters: tuple[str, ...] = field(default=())
    errors: tuple[int, ...] = (400, 401, 403, 404, 415, 422, 429)


def _nullable(schema: Schema) -> Schema:
    kinds = schema["type"]
    types = kinds if isinstance(kinds, list) else [kinds]
    return {**schema, "type": [*types, "null"]}


_STRING: Schema = {"type": "string"}
_DURATION: Schema = {
    "type": "string",
    "description": "Seconds, or a number and a unit s, m, h, d or w, e.g. 3600,"
    " 90s, 1h, 20d.",
}
_STRINGS: Schema = {"type": "array", "items": {"type": "string"}, "maxItems": 1000}
_CONFIRM: Schema = {
    "type": "string",
    "description": "Your password, confirming the change; needed when you are"
    " logged in with the page's session instead of HTTP Basic.",
}

_EXPIRY_FIELDS: dict[str, Schema] = {
    "expires_at": _nullable(
        {
            "type": "string",
            "description": "A hard expiry: an ISO date (end of that day, UTC) or"
            " date-time. null: never expires.",
        }
    ),
    "expires_in": _nullable(
        {**_DURATION, "description": "A hard expiry this long from now, e.g. 20d."}
    ),
    "sliding": _nullable(
        {
            **_DURATION,
            "description": "A sliding window: each use moves the expiry to now +"
            " this, e.g. 1h.",
        }
    ),
    "max_lifetime": _nullable(
        {**_DURATION, "description": "A cap on any expiry, counted from creation."}
    ),
}

_TOKEN_SETTINGS: dict[str, Schema] = {
    "name": {"type": "string", "description": "What the token is for."},
    "scopes": {
        **_STRINGS,
        "description": "Scopes, @set names, node scopes; [] or absent: * (all"
        " that the owner holds).",
    },
    **_EXPIRY_FIELDS,
    "allowed_cidrs": {**_STRINGS, "description": "Client networks; [] allows any."},
    "project": _nullable({"type": "string"}),
    "rate_limit": _nullable(
        {"type": "integer", "minimum": 1, "description": "Requests per minute."}
    ),
    "observe": _nullable(
        {
            **_DURATION,
            "description": "Note what the token is used for this long from now"
            " (7d), for GET /tokens/{token_id}/suggestion; null stops it.",
        }
    ),
}


def _object(properties: Mapping[str, Schema], required: Sequence[str] = ()) -> Schema:
    schema: Schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": dict(properties),
    }
    if required:
        schema["required"] = list(required)
    return schema


REQUEST_SCHEMAS: dict[str, Schema] = {
    "TokenCreate": _object(
        {
            **_TOKEN_SETTINGS,
            "owner": {"type": "string", "description": "Admins only: whose token."},
            "canary": {
                "type": "boolean",
                "description": "A trap: refused like an unknown token, every use"
                " reported (canary.used).",
            },
            "password": _CONFIRM,
        }
    ),
    "TokenEdit": _object(
        {**_TOKEN_SETTINGS, "name": _nullable(_STRING), "password": _CONFIRM}
    ),
    "Regenerate": _object(
        {
            "grace": _nullable(
                {
                    **_DURATION,
                    "description": "Keep the old value working this long.",
                }
            ),
            "activate_on_use": {
                "type": "boolean",
                "description": "Keep the old value working until the new one is"
                " first used (not with grace).",
            },
            "password": _CONFIRM,
        }
    ),
    "Confirm": _object({"password": _CONFIRM}),
    "RevokeBefore": _object(
        {
            "before": {
                "type": "string",
                "description": "An ISO date (its start, UTC) or date-time, or"
                " now: tokens created before it are revoked.",
            },
            "owner": {
                "type": "string",
                "description": "Whose tokens (default: yours).",
            },
            "all_users": {
                "type": "boolean",
                "description": "Admins: every user's tokens.",
            },
            "password": _CONFIRM,
        },
        ["before"],
    ),
    "RevokeMany": _object({"ids": _STRINGS, "password": _CONFIRM}, ["ids"]),
    "RemoveMany": _object({"ids": _STRINGS, "password": _CONFIRM}, ["ids"]),
    "Purge": _object(
        {
            "revoked": {"type": "boolean", "description": "Purge revoked tokens."},
            "expired": {"type": "boolean", "description": "Purge expired tokens."},
            "older_than": _nullable(
                {
                    **_DURATION,
                    "description": "Only tokens revoked or expired at least this"
                    " long ago, e.g. 30d.",
                }
            ),
            "owner": {
                "type": "string",
                "description": "Only this user's (admins; a user purges their own).",
            },
            "password": _CONFIRM,
        }
    ),
    "Renew": _object({**_EXPIRY_FIELDS, "password": _CONFIRM}),
    "LeakReport": _object(
        {"tokens": {**_STRINGS, "maxItems": 100}},
        ["tokens"],
    ),
    "UserCreate": _object(
        {
            "login": _STRING,
            "password": _nullable(
                {**_STRING, "description": "The new user's password (8+ chars)."}
            ),
            "scopes": {**_STRINGS, "description": "What the user may grant."},
            "admin": {"type": "boolean"},
        },
        ["login"],
    ),
    "UserEdit": _object(
        {
            "scopes": _STRINGS,
            "admin": {"type": "boolean"},
            "disabled": {"type": "boolean"},
            "password": {**_STRING, "description": "A new password for the user."},
        }
    ),
    "Login": _object({"login": _STRING, "password": _STRING}, ["login", "password"]),
    "Logout": _object({}),
}

_TIME = _nullable({"type": "string", "format": "date-time"})

_OBSERVED: Schema = {
    "type": "object",
    "description": "Requests of one route, method and path pattern (ids: *).",
    "properties": {
        "route": _STRING,
        "method": _STRING,
        "path": _STRING,
        "count": {"type": "integer"},
        "last_seen": _TIME,
    },
}

RESPONSE_SCHEMAS: dict[str, Schema] = {
    "Token": {
        "type": "object",
        "properties": {
            "id": _STRING,
            "name": _STRING,
            "owner": _STRING,
            "scopes": _STRINGS,
            "project": _nullable(_STRING),
            "expiry": {"enum": ["never", "hard", "sliding"]},
            "expires_at": _TIME,
            "sliding_window": _nullable(_STRING),
            "max_lifetime": _nullable(_STRING),
            "created_at": _TIME,
            "created_by": _STRING,
            "updated_at": _TIME,
            "last_used_at": _TIME,
            "last_used_ip": _nullable(_STRING),
            "use_count": {"type": "integer"},
            "allowed_cidrs": _STRINGS,
            "rate_limit": _nullable({"type": "integer"}),
            "status": {"enum": ["active", "revoked", "expired"]},
            "canary": {"type": "boolean"},
            "activate_on_use": {
                "type": "boolean",
                "description": "The old value works until the new one is used.",
            },
            "observe_until": _TIME,
            "last_ips": {
                "type": "array",
                "description": "The last 5 distinct client addresses, the most"
                " recent first.",
                "items": {
                    "type": "object",
                    "properties": {
                        "ip": _STRING,
                        "first_seen": _TIME,
                        "last_seen": _TIME,
                    },
                },
            },
        },
    },
    "Suggestion": {
        "type": "object",
        "description": "The least scopes covering what an observed token did.",
        "properties": {
            "id": _STRING,
            "scopes": {**_STRINGS, "description": "What the token holds now."},
            "observe_until": _TIME,
            "observing": {"type": "boolean"},
            "suggestion": {
                "type": "object",
                "properties": {
                    "scopes": {
                        **_STRINGS,
                        "description": "The suggested scopes (plain, then node).",
                    },
                    "covers": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "scope": _STRING,
                                "requests": {"type": "array", "items": _OBSERVED},
                            },
                        },
                    },
                    "unscoped": {"type": "array", "items": _OBSERVED},
                    "unknown_routes": {"type": "array", "items": _OBSERVED},
                },
            },
        },
    },
    "RevokedBefore": {
        "type": "object",
        "properties": {"revoked": _STRINGS, "count": {"type": "integer"}},
    },
    "DeliveryList": {
        "type": "object",
        "properties": {
            "deliveries": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "delivery_id": _STRING,
                        "event_id": _STRING,
                        "event_type": _STRING,
                        "url": _STRING,
                        "attempt": {"type": "integer"},
                        "at": _TIME,
                        "ok": {"type": "boolean"},
                        "status": _nullable({"type": "integer"}),
                        "error": _STRING,
                        "final": {"type": "boolean"},
                    },
                },
            }
        },
    },
    "NewToken": {
        "allOf": [
            {"$ref": "#/components/schemas/Token"},
            {
                "type": "object",
                "properties": {
                    "token": {
                        "type": "string",
                        "description": "The value: shown this once, never again.",
                    }
                },
            },
        ]
    },
    "TokenList": {
        "type": "object",
        "properties": {
            "tokens": {"type": "array", "items": {"$ref": "#/components/schemas/Token"}}
        },
    },
    "Revoked": {
        "type": "object",
        "properties": {"revoked": _STRINGS, "already_revoked": _STRINGS},
    },
    "Removed": {"type": "object", "properties": {"removed": _STRINGS}},
    "Purged": {
        "type": "object",
        "properties": {
            "purged": {"type": "array", "items": {"$ref": "#/components/schemas/Token"}}
        },
    },
    "LeakReceived": {
        "type": "object",
        "properties": {"status": _STRING, "examined": {"type": "integer"}},
    },
    "User": {
        "type": "object",
        "properties": {
            "login": _STRING,
            "scopes": _STRINGS,
            "admin": {"type": "boolean"},
            "disabled": {"type": "boolean"},
            "has_password": {"type": "boolean"},
            "created_at": _TIME,
            "updated_at": _TIME,
        },
    },
    "UserList": {
        "type": "object",
        "properties": {
            "users": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}
        },
    },
    "Session": {
        "type": "object",
        "properties": {
            "user": {"$ref": "#/components/schemas/User"},
            "csrf": {
                "type": "string",
                "description": "Send it back in the X-Patgate-CSRF header.",
            },
        },
    },
    "ScopeChoices": {
        "type": "object",
        "properties": {
            "held": _STRINGS,
            "scope_sets": {"type": "array", "items": {"type": "object"}},
            "scopes": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": _STRING, "message": _STRING},
    },
    "OpenAPI": {"type": "object"},
    "Empty": {"type": "object"},
}

_ERROR_TEXT = {
    400: "Malformed or empty JSON, or a malformed request.",
    401: "Not logged in, wrong login or password, or a disabled user.",
    403: "Not allowed: not an admin, scopes beyond what the owner holds, or a"
    " change from another origin (Origin or Sec-Fetch-Site).",
    404: "No such token or user (someone else's token looks the same).",
    409: "Conflict: already exists, or the token is revoked.",
    413: "The body is too large.",
    415: "A change without a JSON body (Content-Type: application/json).",
    422: "A field has the wrong type, is unknown, or is invalid.",
    429: "Too many password checks from this address; see Retry-After.",
    503: "The token store is unavailable; retry shortly.",
}

_PARAMETERS: dict[str, Schema] = {
    "token_id": {
        "name": "token_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9A-Za-z]{8}$"},
        "description": "The token's public id (never its value).",
    },
    "login": {
        "name": "login",
        "in": "path",
        "required": True,
        "schema": _STRING,
    },
    "owner": {
        "name": "owner",
        "in": "query",
        "required": False,
        "schema": _STRING,
        "description": "Admins: list this user's tokens (default: everyone's).",
    },
    "expiring": {
        "name": "expiring",
        "in": "query",
        "required": False,
        "schema": _DURATION,
        "description": "Only active tokens that expire within this (7d),"
        " the soonest first.",
    },
    "limit": {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
        "description": "How many (default 50), newest first.",
    },
}


def build_document(operations: Sequence[Operation], server_url: str) -> Schema:
    """The OpenAPI 3.1 document for ``operations``."""
    paths: dict[str, dict[str, Schema]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "patgate management API",
            "version": "1",
            "description": "Personal access tokens and users. Log in with HTTP"
            " Basic (login and password); a token is never accepted here. Every"
            " change needs your password: Basic credentials, or the page's"
            " session plus a `password` field and the X-Patgate-CSRF header."
            " Every POST, PATCH and DELETE needs a JSON body (Content-Type:"
            " application/json; `{}` at least) and, from a browser, this"
            " API's own origin.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": {**REQUEST_SCHEMAS, **RESPONSE_SCHEMAS},
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "patgate_session",
                    "description": "The web page's session (named"
                    " __Secure-patgate_session over HTTPS); needs X-Patgate-CSRF.",
                },
            },
        },
    }


def _operation(op: Operation) -> Schema:
    doc: Schema = {"operationId": op.operation_id, "summary": op.summary}
    if op.parameters:
        doc["parameters"] = [_PARAMETERS[name] for name in op.parameters]
    if op.request is not None:
        doc["requestBody"] = {
            # Every change carries a JSON body, {} at least (web.origin).
            "required": True,
            "content": {"application/json": {"schema": _ref(op.request)}},
        }
    responses: Schema = {str(op.status): _response(op)}
    for status in op.errors:
        responses[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    doc["responses"] = responses
    doc["security"] = [] if op.auth == "none" else [{"basic": []}, {"session": []}]
    return doc


def _response(op: Operation) -> Schema:
    if op.response is None:
        return {"description": "Done."}
    return {
        "description": "Success.",
        "content": {"application/json": {"schema": _ref(op.response)}},
    }


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


# --------------------------------------------------------------------------
# Validating a body against one of REQUEST_SCHEMAS

_JSON_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def validate_body(name: str, body: object) -> dict[str, Any]:
    """``body`` checked against ``REQUEST_SCHEMAS[name]``; BodyError names the field."""
    schema = REQUEST_SCHEMAS[name]
    if not isinstance(body, dict):
        raise BodyError(f"the body must be a JSON object, not {_kind(body)}")
    properties: dict[str, Schema] = schema["properties"]
    for key in body:
        if key not in properties:
            known = ", ".join(properties)
            raise BodyError(f"unknown field {key!r} (known fields: {known})")
    for key in schema.get("required", ()):
        if key not in body:
            raise BodyError(f"{key}: this field is required")
    for key, value in body.items():
        _check(key, value, properties[key])
    return dict(body)


def _check(where: str, value: object, schema: Schema) -> None:
    kinds = schema["type"]
    allowed = kinds if isinstance(kinds, list) else [kinds]
    if not any(_is_type(value, kind) for kind in allowed):
        wanted = " or ".join(_type_word(kind) for kind in allowed)
        raise BodyError(f"{where}: expected {wanted}, got {_kind(value)}")
    if isinstance(value, list):
        limit = schema.get("maxItems")
        if limit is not None and len(value) > limit:
            raise BodyError(f"{where}: at most {limit} items")
        for index, item in enumerate(value):
            _check(f"{where}[{index}]", item, schema["items"])
    if isinstance(value, int) and not isinstance(value, bool):
        low = schema.get("minimum")
        if low is not None and value < low:
            raise BodyError(f"{where}: must be at least {low}")


def _is_type(value: object, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    python = {
        "string": str,
        "boolean": bool,
        "array": list,
        "object": dict,
        "null": type(None),
    }[kind]
    return isinstance(value, python)


def _type_word(kind: str) -> str:
    return {
        "string": "a string",
        "integer": "an integer",
        "boolean": "true or false",
        "array": "an array",
        "object": "an object",
        "null": "null",
    }[kind]


def _kind(value: object) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)
