"""Incident response: revoke-before, rotation families, canaries, news of use.

- :meth:`IncidentOperations.revoke_before`: every token of a user (or of
  everyone, for admins) created before a time, revoked in one go: the
  button after a stolen laptop. Each revocation is an ordinary
  ``update_token``, so it reaches every replica within the revocation bound.
- Rotation: :meth:`~IncidentOperations.activate_rotation` ends the old value
  of an activate-on-use regeneration once the new one was used;
  :meth:`~IncidentOperations.rotation_reused` handles a value regenerated
  away that came back after its grace (``rotation_reuse`` in the config).
- :meth:`~IncidentOperations.canary_used` and
  :meth:`~IncidentOperations.usage_news` turn what the gateway saw into
  events; :meth:`~IncidentOperations.scan_expiry` emits ``token.expiring``
  at the configured lead times and ``token.expired``, each once.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from patgate.durations import format_time
from patgate.errors import PermissionDeniedError
from patgate.events import DeliveryAttempt
from patgate.models import ExpiryModel, TokenRecord, TokenStatus, UsageNews
from patgate.service.core import Actor
from patgate.service.tokens import TokenOperations

SYSTEM = "patgate"


class IncidentOperations(TokenOperations):
    async def revoke_before(
        self, actor: Actor, before: float, owner: str | None
    ) -> list[str]:
        """Revoke the active tokens of ``owner`` (None: every user's, admins
        only) created before ``before``; answers their ids."""
        if owner is None and not actor.admin:
            raise PermissionDeniedError("only an admin may revoke every user's tokens")
        owner = await self._whose(actor, owner, "revoke")
        revoked: list[str] = []
        for record in await self.store.list_tokens(owner):
            if record.created_at < before and record.status is not TokenStatus.REVOKED:
                await self._revoke(record, actor=actor.login, reason="revoked_before")
                revoked.append(record.id)
        return revoked

    async def delivery_log(
        self, actor: Actor, limit: int = 50
    ) -> list[DeliveryAttempt]:
        """The last webhook delivery attempts, newest first (admins)."""
        if not actor.admin:
            raise PermissionDeniedError("only an admin may read the delivery log")
        return await self.store.delivery_log(limit)

    async def activate_rotation(self, token_id: str) -> bool:
        """The new value of an activate-on-use regeneration was used: the old
        one dies now. False if there was nothing to do."""
        record = await self.store.get_token(token_id)
        if record is None or not record.activate_on_use:
            return False
        await self.store.update_token(
            record.with_changes(
                previous_hash=None,
                previous_hash_until=None,
                activate_on_use=False,
                updated_at=self.now(),
            )
        )
        self._audit.info(
            "token.rotation_activated", token_id=token_id, owner=record.owner
        )
        return True

    async def rotation_reused(
        self, token_id: str, policy: str, *, ip: str | None
    ) -> None:
        """A value regenerated away was presented after its grace.

        ``policy`` ``revoke`` (the default) revokes the token, every value of
        it; ``alert`` only reports it; ``ignore`` does nothing.
        """
        if policy == "ignore":
            return
        record = await self.store.get_token(token_id)
        if record is None or record.status is TokenStatus.REVOKED:
            return  # revoked already: by an earlier reuse, or by hand
        revoke = policy == "revoke"
        # Queued first, and required: a store that is down now raises, and
        # the whole incident is retried (at worst the alert comes twice).
        await self._emit(
            "token.rotation_reuse",
            required=True,
            token_id=token_id,
            owner=record.owner,
            ip=ip,
            action="revoked" if revoke else "alert",
        )
        if revoke:
            await self._revoke(record, actor=SYSTEM, reason="rotation_reuse")

    async def canary_used(
        self,
        token_id: str,
        owner: str | None,
        *,
        ip: str | None,
        method: str,
        path: str,
        user_agent: str | None,
    ) -> None:
        await self._emit(
            "canary.used",
            required=True,
            token_id=token_id,
            owner=owner,
            ip=ip,
            method=method,
            path=path,
            user_agent=user_agent,
        )

    async def usage_news(self, news: Sequence[UsageNews]) -> None:
        for item in news:
            kind = "token.first_used" if item.kind == "first_use" else "token.new_ip"
            await self._emit(kind, token_id=item.token_id, owner=item.owner, ip=item.ip)

    async def scan_expiry(self, leads: Sequence[float]) -> int:
        """Emit ``token.expiring`` for each lead time a token's expiry came
        within, and mark expired tokens (``token.expired``); each once, even
        across replicas (a claimed setting). Answers how many events."""
        now = self.now()
        emitted = 0
        for record in await self.store.list_tokens():
            if record.status is not TokenStatus.ACTIVE or record.expires_at is None:
                continue
            if now >= record.expires_at:
                if await self._first("expired", record, 0):
                    await self._observe(record, Actor(SYSTEM, admin=True))
                    emitted += 1
                continue
            ends = _fixed_end(record)
            if ends is None:
                continue
            for lead in leads:
                if now >= ends - lead and await self._first(
                    "expiring", record, lead, ends
                ):
                    await self._emit(
                        "token.expiring",
                        token_id=record.id,
                        owner=record.owner,
                        expires_at=format_time(ends),
                        lead_seconds=int(lead),
                    )
                    emitted += 1
                    break  # the shorter leads come on later scans
        return emitted

    async def _first(
        self, what: str, record: TokenRecord, lead: float, ends: float | None = None
    ) -> bool:
        """True for the one caller that claims this notice first."""
        ends = record.expires_at if ends is None else ends
        name = f"notice:{what}:{record.id}:{int(lead)}:{ends!r}"
        mine = secrets.token_hex(8)
        return await self.store.claim_setting(name, mine) == mine


def _fixed_end(record: TokenRecord) -> float | None:
    """When a token ends whatever its use: a hard expiry, or the lifetime cap
    of a sliding one (whose own expiry moves with every use: no notice)."""
    if record.expiry is ExpiryModel.HARD:
        return record.expires_at
    return record.lifetime_ends_at()
