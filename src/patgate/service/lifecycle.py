"""The end of a token's life and its renewal: remove, purge, renew.

Removing deletes the record (it leaves every list); purging removes the dead
ones (revoked, expired) in bulk; renewing gives a token a new expiry and a new
value in one write, as ``token edit -e`` then ``token regenerate`` would. The
store forgets a removed token, the audit log does not: each removal emits one
event that carries what the record said.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from patgate import tokens
from patgate.durations import format_time
from patgate.errors import UsageError
from patgate.models import ExpiryModel, TokenRecord, TokenStatus
from patgate.service.core import UNSET, Actor, Unset
from patgate.service.expiry import Expiry, edited_expiry, expiry_changes
from patgate.service.tokens import TokenOperations
from patgate.service.validation import validate_seconds

DEFAULT_RENEWAL = 30 * 86400
"""How long a renewed hard token lives when no expiry is given (as the page's
new-token form: 30 days)."""


@dataclass(frozen=True, slots=True)
class Purge:
    """Which dead tokens to purge; ``older_than`` counts from revocation or
    expiry (seconds; None: any age)."""

    revoked: bool = False
    expired: bool = False
    older_than: int | None = None
    owner: str | None = None

    def matches(self, record: TokenRecord, now: float) -> bool:
        status = record.status_at(now)
        if status is TokenStatus.REVOKED and self.revoked:
            died = record.updated_at
        elif status is TokenStatus.EXPIRED and self.expired:
            died = record.expires_at or record.updated_at
        else:
            return False
        return self.older_than is None or died <= now - self.older_than


class TokenLifecycle(TokenOperations):
    """Remove, purge and renew, on top of the other token operations."""

    async def remove_tokens(
        self, actor: Actor, token_ids: Sequence[str]
    ) -> list[TokenRecord]:
        """Delete every id, or none when any is unknown or not the actor's.

        A live token is revoked first (``token.revoked``), so it stops working
        everywhere; then it is deleted (``token.removed``). Answers the
        records as they were last, revoked.
        """
        wanted = list(dict.fromkeys(token_ids))
        records = await self._owned_records(actor, wanted, "nothing removed")
        removed = []
        for record in records:
            if record.status is not TokenStatus.REVOKED:
                record = await self._revoke(record, actor=actor.login)
            await self._delete(record, actor.login, "token.removed")
            removed.append(record)
        return removed

    async def purge_tokens(
        self, actor: Actor, purge: Purge, *, dry_run: bool = False
    ) -> list[TokenRecord]:
        """Delete the revoked and/or expired tokens ``purge`` names (only
        answer them with ``dry_run``).

        Admins purge anyone's (or one owner's); a user only their own.
        """
        if not (purge.revoked or purge.expired):
            raise UsageError("say what to purge: revoked, expired or both")
        validate_seconds("age", purge.older_than)
        owner = await self._whose(actor, purge.owner, "purge")
        now = self.now()
        dead = [
            record
            for record in await self.store.list_tokens(owner)
            if purge.matches(record, now)
        ]
        if not dry_run:
            for record in dead:
                await self._delete(record, actor.login, "token.purged")
        return dead

    async def renew_token(
        self,
        actor: Actor,
        token_id: str,
        *,
        expires_at: float | Unset | None = UNSET,
        sliding: int | Unset | None = UNSET,
        max_lifetime: int | Unset | None = UNSET,
    ) -> tuple[TokenRecord, str]:
        """A new expiry and a new value; the old value dies at once.

        Without ``expires_at``/``sliding`` the token keeps its expiry model:
        a hard token expires :data:`DEFAULT_RENEWAL` from now, a sliding one
        gets a fresh window, ``never`` stays never. ``max_lifetime`` still
        counts from creation.
        """
        record = self._editable(await self._token(actor, token_id))
        now = self.now()
        expiry = self._renewed_expiry(record, now, expires_at, sliding, max_lifetime)
        value = tokens.new_token(self.prefix, record.id, self._random_chars).value
        renewed = record.with_changes(
            **expiry_changes(expiry),
            status=TokenStatus.ACTIVE,
            token_hash=tokens.hash_token(value, self._pepper),
            previous_hash=None,
            previous_hash_until=None,
            updated_at=now,
        )
        await self.store.update_token(renewed)
        self._audit.info(
            "token.renewed",
            token_id=record.id,
            owner=record.owner,
            actor=actor.login,
            expires_at=format_time(renewed.expires_at),
        )
        return renewed, value

    def _renewed_expiry(
        self,
        record: TokenRecord,
        now: float,
        expires_at: float | Unset | None,
        sliding: int | Unset | None,
        max_lifetime: int | Unset | None,
    ) -> Expiry:
        if expires_at is UNSET and sliding is UNSET:
            expires_at, sliding = None, None
            if record.expiry is ExpiryModel.SLIDING:
                sliding = record.sliding_window
            elif record.expiry is ExpiryModel.HARD:
                expires_at = now + DEFAULT_RENEWAL
        cap = record.max_lifetime if max_lifetime is UNSET else max_lifetime
        if cap is not None and record.created_at + cap <= now:
            raise UsageError(
                f"token {record.id} is past its max lifetime"
                f" ({format_time(record.created_at + cap)}); renew it without"
                " the cap or make a new token"
            )
        return edited_expiry(record, now, expires_at, sliding, max_lifetime)

    async def _delete(self, record: TokenRecord, actor: str, event: str) -> None:
        deleted = await self.store.delete_token(record.id)
        if deleted is None:
            return  # removed meanwhile, by another process; audited there
        now = self.now()
        self._audit.info(
            event,
            token_id=record.id,
            owner=record.owner,
            actor=actor,
            name=record.name,
            status=record.status_at(now).value,
            scopes=list(record.scopes),
            created_at=format_time(record.created_at),
            created_by=record.created_by,
            expires_at=format_time(record.expires_at),
            last_used_at=format_time(record.last_used_at),
        )
