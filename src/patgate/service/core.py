"""What every management operation shares.

:class:`Actor` (who acts), the :data:`UNSET` marker of ``edit_token`` and
:class:`ServiceCore`: the store, the clock, the pepper, the scope sets, the
audit log and the look-ups both users and tokens need.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal

from structlog.typing import FilteringBoundLogger

from patgate import scopes, tokens
from patgate.errors import NotFoundError, StoreUnavailableError
from patgate.events import Event
from patgate.logs import get_logger
from patgate.models import User
from patgate.service.validation import validate_login
from patgate.store.base import Store
from patgate.webhooks import Publisher


class _Unset(Enum):
    UNSET = "unset"


UNSET: Final = _Unset.UNSET
"""Marks an :meth:`TokenService.edit_token` argument that was not given."""

Unset = Literal[_Unset.UNSET]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performs an operation: an admin acts on anyone, a user on themself."""

    login: str
    admin: bool = False

    @classmethod
    def from_user(cls, user: User) -> Actor:
        return cls(login=user.login, admin=user.admin)

    def may_act_for(self, login: str) -> bool:
        return self.admin or self.login == login


class ServiceCore:
    """The state and look-ups shared by the user and the token operations."""

    def __init__(
        self,
        store: Store,
        *,
        prefix: str = tokens.DEFAULT_PREFIX,
        pepper: bytes = b"",
        scope_sets: Mapping[str, Sequence[str]] | None = None,
        clock: Callable[[], float] = time.time,
        random_chars: tokens.RandomChars = tokens.random_base62,
        audit: FilteringBoundLogger | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self._pepper = pepper
        self.scope_sets: Mapping[str, Sequence[str]] = scope_sets or {}
        self._clock = clock
        self._random_chars = random_chars
        self._audit = audit if audit is not None else get_logger("patgate.audit")
        self.publisher = publisher or Publisher(store, audit=self._audit)

    def now(self) -> float:
        return self._clock()

    async def _emit(
        self, event_type: str, *, required: bool = False, **data: object
    ) -> Event:
        """Audit-log an event and queue it for the webhooks.

        The change it reports is made already: an outbox that cannot be
        written loses the webhook delivery (logged), never the change. An
        incident's event (``required``) is the only trace of what happened,
        so a store that is down raises, and the incident is acted on later.
        """
        event = Event(event_type, self.now(), data)
        try:
            await self.publisher.publish([event])
        except StoreUnavailableError as exc:
            if required:
                raise
            self._audit.warning(
                "event_not_queued", event_id=event.id, type=event_type, error=str(exc)
            )
        return event

    async def _user(self, login: str) -> User:
        validate_login(login)
        user = await self.store.get_user(login)
        if user is None:
            raise NotFoundError(f"no user {login}")
        return user

    def _expand(self, requested: Sequence[str]) -> tuple[str, ...]:
        if isinstance(requested, str):
            requested = (requested,)
        return scopes.expand_scopes(requested, self.scope_sets)
