"""The exception tree of patgate.

Exceptions are for what cannot be an ordinary outcome: a broken config, bad
input to a management command, a store that is down. A refused request at the
gateway is a ``Decision``, not an exception.

::

    PatgateError
    ├── ConfigError              gateway.yaml is broken (names the key)
    ├── UsageError               bad input to a command or API call (exit 2, 400/422)
    ├── NotFoundError            no such user or token (exit 1, 404)
    ├── ConflictError            the user or token already exists (exit 1, 409)
    ├── PermissionDeniedError    not allowed: subset rule, not owner (exit 1, 403)
    ├── AuthenticationError      wrong login or password (exit 1, 401)
    └── StoreUnavailableError    the store cannot be reached (exit 1, 503)
"""


class PatgateError(Exception):
    """Base class; ``str(err)`` is one line meant for a person."""


class ConfigError(PatgateError):
    """The configuration is invalid; the message names the key and the reason."""


class UsageError(PatgateError):
    """The input to a command or API call is malformed."""


class NotFoundError(PatgateError):
    """The named user or token does not exist."""


class ConflictError(PatgateError):
    """The user or token to create already exists."""


class PermissionDeniedError(PatgateError):
    """The caller may not do this (subset rule, someone else's token, not admin)."""


class AuthenticationError(PatgateError):
    """The login or password is wrong, or the user is disabled."""


class StoreUnavailableError(PatgateError):
    """The store could not be reached; the operation may be retried."""
