"""Observe, then suggest: what an observed token did, the scopes that would
cover it, and narrowing the token to them (:mod:`patgate.observe`)."""

from __future__ import annotations

from patgate.models import Observed, TokenRecord
from patgate.observe import Suggestion, narrow, suggest
from patgate.routing import Router
from patgate.scopes import ScopeSets
from patgate.service.core import Actor
from patgate.service.tokens import TokenOperations


class ObserveOperations(TokenOperations):
    """The suggestion of an observed token, and applying it."""

    async def observations(
        self, actor: Actor, token_id: str
    ) -> tuple[TokenRecord, list[Observed]]:
        """The token and what it was observed doing (someone else's: not found)."""
        record = await self.get_token(actor, token_id)
        return record, await self.store.observed(record.id)

    async def suggestion(
        self, actor: Actor, token_id: str, router: Router
    ) -> tuple[TokenRecord, Suggestion]:
        """The smallest scopes covering what the token did, on ``router``'s routes."""
        record, observed = await self.observations(actor, token_id)
        return record, suggest(observed, router)

    async def apply_suggestion(
        self, actor: Actor, token_id: str, router: Router
    ) -> TokenRecord:
        """Narrow the token to its suggestion, never past what it holds.

        ConflictError when nothing was observed or nothing would be left.
        """
        record, found = await self.suggestion(actor, token_id, router)
        narrowed = narrow(record.scopes, found, ScopeSets(self.scope_sets))
        return await self.edit_token(actor, record.id, scopes=narrowed)
