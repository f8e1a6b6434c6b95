"""The token and user life cycle, shared by the CLI and the REST API.

:class:`TokenService` owns every management rule: who may act on which token
(an :class:`Actor` is passed to each operation), the subset rule, expiry
models, validation of names, CIDRs and rate limits, and one audit event per
change. It talks only to a :class:`~patgate.store.base.Store`; time and
randomness are parameters.

Decisions the spec leaves open:

- ``max_lifetime`` caps every expiry model, counted from ``created_at``: a
  sliding token never slides past it, a hard expiry later than it is cut to it,
  and a token with only ``max_lifetime`` is a hard token expiring then.
- ``copy_token`` gives the copy a fresh expiry of the same model: a hard token
  keeps its total lifetime (``expires_at - created_at``) counted from now, a
  sliding one starts a new window, ``never`` stays never.
- ``report_leak`` answers the number of values it examined, whatever they were,
  so the answer never tells which values were live.
- A token past its expiry is marked ``expired`` in the store the first time an
  operation sees it, which emits ``token.expired`` once.

The package: :mod:`~patgate.service.core` (Actor, UNSET, the shared state),
:mod:`~patgate.service.users`, :mod:`~patgate.service.tokens` and
:mod:`~patgate.service.lifecycle` (remove, purge, renew),
:mod:`~patgate.service.observing` (observe, then suggest): the parts of
:class:`TokenService`, :mod:`~patgate.service.expiry` (expiry
models, pure) and :mod:`~patgate.service.validation` (input checks). Import
every name from here.
"""

from __future__ import annotations

from patgate.service.core import UNSET, Actor, Unset
from patgate.service.expiry import compute_expiry
from patgate.service.incidents import IncidentOperations
from patgate.service.lifecycle import Purge, TokenLifecycle
from patgate.service.observing import ObserveOperations
from patgate.service.tokens import Revoked
from patgate.service.users import UserOperations
from patgate.service.validation import (
    LOGIN_PATTERN,
    MAX_LEAK_REPORT,
    MAX_NAME_LENGTH,
    MAX_PASSWORD_LENGTH,
    MAX_PROJECT_LENGTH,
    MAX_RATE_LIMIT,
    MIN_PASSWORD_LENGTH,
    validate_cidrs,
    validate_login,
)

__all__ = [
    "LOGIN_PATTERN",
    "MAX_LEAK_REPORT",
    "MAX_NAME_LENGTH",
    "MAX_PASSWORD_LENGTH",
    "MAX_PROJECT_LENGTH",
    "MAX_RATE_LIMIT",
    "MIN_PASSWORD_LENGTH",
    "UNSET",
    "Actor",
    "Purge",
    "Revoked",
    "TokenService",
    "Unset",
    "compute_expiry",
    "validate_cidrs",
    "validate_login",
]


class TokenService(
    UserOperations, TokenLifecycle, IncidentOperations, ObserveOperations
):
    """Users and tokens: every management operation, checked and audited."""
