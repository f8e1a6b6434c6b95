"""The token life cycle: create, list, show, edit, regenerate, copy and revoke.

A token never holds more than its owner (the subset rule); someone else's
token looks exactly like no token; the anonymous leak report revokes any live
token it is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from patgate import scopes, tokens
from patgate.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    UsageError,
)
from patgate.models import TokenRecord, TokenStatus, User
from patgate.service.core import UNSET, Actor, ServiceCore, Unset
from patgate.service.expiry import (
    copied_expiry,
    edited_expiry,
    expiry_changes,
    new_expiry,
)
from patgate.service.validation import (
    MAX_LEAK_REPORT,
    MAX_NAME_LENGTH,
    validate_cidrs,
    validate_project,
    validate_rate_limit,
    validate_seconds,
    validate_text,
    validate_token_id,
)

_ID_ATTEMPTS = 5
# The longest a token may be observed for at once.
MAX_OBSERVE = 366 * 86400


def observe_until(now: float, seconds: int | None) -> float | None:
    """Until when a token is observed for ``seconds`` from ``now`` (None: not)."""
    if seconds is None:
        return None
    if not 0 < seconds <= MAX_OBSERVE:
        raise UsageError("observe: give a duration from 1s to 366d")
    return now + seconds


@dataclass(frozen=True, slots=True)
class Revoked:
    """What a revocation did: every id is revoked now; ``already`` were before."""

    ids: list[str]
    already: list[str]


class TokenOperations(ServiceCore):
    """Every operation on tokens; a user acts on their own, an admin on any."""

    async def create_token(
        self,
        actor: Actor,
        owner: str,
        *,
        name: str = "",
        scopes: Sequence[str] = (),
        expires_at: float | None = None,
        sliding: int | None = None,
        max_lifetime: int | None = None,
        allowed_cidrs: Sequence[str] = (),
        project: str | None = None,
        rate_limit: int | None = None,
        canary: bool = False,
        observe: int | None = None,
    ) -> tuple[TokenRecord, str]:
        """A new token for ``owner`` and its value, which is never available again.

        A ``canary`` looks like any other value, but the gateway refuses it
        exactly like an unknown token and reports every use (``canary.used``).
        """
        if not actor.may_act_for(owner):
            raise PermissionDeniedError(
                "only an admin may create tokens for another user"
            )
        user = await self._token_owner(owner)
        now = self.now()
        granted = self._check_subset(user, scopes)
        expiry = new_expiry(now, now, expires_at, sliding, max_lifetime)
        template = TokenRecord(
            id="",
            owner=owner,
            token_hash=b"",
            name=validate_text("name", name, MAX_NAME_LENGTH),
            scopes=granted,
            project=validate_project(project),
            expiry=expiry.model,
            expires_at=expiry.expires_at,
            sliding_window=expiry.sliding_window,
            max_lifetime=expiry.max_lifetime,
            created_at=now,
            created_by=actor.login,
            updated_at=now,
            allowed_cidrs=validate_cidrs(allowed_cidrs),
            rate_limit=validate_rate_limit(rate_limit),
            canary=canary,
            observe_until=observe_until(now, observe),
        )
        record, value = await self._insert(template)
        await self._emit(
            "token.created",
            token_id=record.id,
            owner=owner,
            actor=actor.login,
            **({"canary": True} if canary else {}),
        )
        return record, value

    async def list_tokens(
        self, actor: Actor, owner: str | None = None, expiring: int | None = None
    ) -> list[TokenRecord]:
        """Tokens of ``owner``; a user's own by default, everyone's for an admin.

        ``expiring``: only the active tokens that expire within that many
        seconds, the soonest first.
        """
        owner = await self._whose(actor, owner, "list")
        records = await self.store.list_tokens(owner)
        observed = [await self._observe(record, actor) for record in records]
        if expiring is None:
            return observed
        horizon = self.now() + (validate_seconds("expiring", expiring) or 0)
        soon = [
            r
            for r in observed
            if r.status is TokenStatus.ACTIVE
            and r.expires_at is not None
            and r.expires_at <= horizon
        ]
        return sorted(soon, key=lambda r: r.expires_at or 0.0)

    async def get_token(self, actor: Actor, token_id: str) -> TokenRecord:
        return await self._observe(await self._token(actor, token_id), actor)

    async def edit_token(
        self,
        actor: Actor,
        token_id: str,
        *,
        name: str | Unset = UNSET,
        scopes: Sequence[str] | Unset = UNSET,
        expires_at: float | Unset | None = UNSET,
        sliding: int | Unset | None = UNSET,
        max_lifetime: int | Unset | None = UNSET,
        allowed_cidrs: Sequence[str] | Unset = UNSET,
        project: str | Unset | None = UNSET,
        rate_limit: int | Unset | None = UNSET,
        observe: int | Unset | None = UNSET,
    ) -> TokenRecord:
        """Change what is given, nothing else.

        Giving ``expires_at`` or ``sliding`` replaces the expiry model (both
        None: never expires); ``max_lifetime`` alone re-caps the current one.
        """
        record = self._editable(await self._token(actor, token_id))
        now = self.now()
        changes: dict[str, object] = {}
        if name is not UNSET:
            changes["name"] = validate_text("name", name, MAX_NAME_LENGTH)
        if scopes is not UNSET:
            changes["scopes"] = self._check_subset(
                await self._token_owner(record.owner), scopes
            )
        if not (expires_at is UNSET and sliding is UNSET and max_lifetime is UNSET):
            changes.update(
                expiry_changes(
                    edited_expiry(record, now, expires_at, sliding, max_lifetime)
                )
            )
            changes["status"] = TokenStatus.ACTIVE
        if allowed_cidrs is not UNSET:
            changes["allowed_cidrs"] = validate_cidrs(allowed_cidrs)
        if project is not UNSET:
            changes["project"] = validate_project(project)
        if rate_limit is not UNSET:
            changes["rate_limit"] = validate_rate_limit(rate_limit)
        if observe is not UNSET:
            changes["observe_until"] = observe_until(now, observe)
        if not changes:
            raise UsageError("nothing to change")
        edited = record.with_changes(**changes, updated_at=now)
        await self.store.update_token(edited)
        await self._emit(
            "token.edited",
            token_id=record.id,
            owner=record.owner,
            actor=actor.login,
            fields=sorted(k for k in changes if k != "status"),
        )
        return edited

    async def regenerate_token(
        self,
        actor: Actor,
        token_id: str,
        grace: int | None = None,
        *,
        activate_on_use: bool = False,
    ) -> tuple[TokenRecord, str]:
        """A new value for the same token; the old one dies now, after
        ``grace`` seconds, or (``activate_on_use``) when the new one is first
        used. The old hash is remembered (``retired_hashes``): presented
        after that, it is a sign of theft (rotation reuse).
        """
        record = self._editable(await self._token(actor, token_id))
        grace = validate_seconds("grace period", grace)
        if grace and activate_on_use:
            raise UsageError("choose one: a grace period or activate-on-use")
        now = self.now()
        value = tokens.new_token(self.prefix, record.id, self._random_chars).value
        keep_old = bool(grace) or activate_on_use
        regenerated = record.with_changes(
            token_hash=tokens.hash_token(value, self._pepper),
            previous_hash=record.token_hash if keep_old else None,
            previous_hash_until=now + grace if grace else None,
            activate_on_use=activate_on_use,
            retired_hashes=record.retire(record.token_hash),
            updated_at=now,
        )
        await self.store.update_token(regenerated)
        await self._emit(
            "token.regenerated",
            token_id=record.id,
            owner=record.owner,
            actor=actor.login,
            grace=grace,
            **({"activate_on_use": True} if activate_on_use else {}),
        )
        return regenerated, value

    async def copy_token(self, actor: Actor, token_id: str) -> tuple[TokenRecord, str]:
        """A new token (new id and value) with the settings of ``token_id``."""
        source = await self._token(actor, token_id)
        user = await self._token_owner(source.owner)
        granted = self._check_subset(user, source.scopes)
        now = self.now()
        expiry = copied_expiry(source, now)
        template = source.with_changes(
            id="",
            token_hash=b"",
            scopes=granted,
            expiry=expiry.model,
            expires_at=expiry.expires_at,
            sliding_window=expiry.sliding_window,
            max_lifetime=expiry.max_lifetime,
            created_at=now,
            created_by=actor.login,
            updated_at=now,
            last_used_at=None,
            last_used_ip=None,
            use_count=0,
            status=TokenStatus.ACTIVE,
            previous_hash=None,
            previous_hash_until=None,
            retired_hashes=(),
            activate_on_use=False,
            last_ips=(),
        )
        record, value = await self._insert(template)
        await self._emit(
            "token.copied",
            token_id=record.id,
            source_id=source.id,
            owner=record.owner,
            actor=actor.login,
        )
        return record, value

    async def _whose(self, actor: Actor, owner: str | None, verb: str) -> str | None:
        """Whose tokens a call about many acts on: ``owner``, else the actor's
        own (an admin's None: everyone's); only an admin may name another."""
        if owner is None and not actor.admin:
            owner = actor.login
        if owner is not None:
            if not actor.may_act_for(owner):
                raise PermissionDeniedError(
                    f"only an admin may {verb} another's tokens"
                )
            await self._user(owner)
        return owner

    async def _owned_records(
        self, actor: Actor, wanted: Sequence[str], outcome: str
    ) -> list[TokenRecord]:
        """The records of ``wanted`` (distinct ids), all of them the actor's.

        All or nothing: any unknown id, or one of another owner's (which the
        actor must not learn exists), fails the whole call.
        """
        if not wanted:
            raise UsageError("no token id given")
        records: list[TokenRecord] = []
        missing: list[str] = []
        for token_id in wanted:
            validate_token_id(token_id)
            record = await self.store.get_token(token_id)
            if record is None or not actor.may_act_for(record.owner):
                missing.append(token_id)
            else:
                records.append(record)
        if missing:
            raise NotFoundError(f"no token {', '.join(missing)}; {outcome}")
        return records

    async def revoke_tokens(self, actor: Actor, token_ids: Sequence[str]) -> Revoked:
        """Revoke every id, or none when any is unknown or not the actor's.

        Revoking a revoked token is no error and no new event; the answer
        says which ones already were.
        """
        wanted = list(dict.fromkeys(token_ids))
        records = await self._owned_records(actor, wanted, "nothing revoked")
        already = [r.id for r in records if r.status is TokenStatus.REVOKED]
        for record in records:
            if record.status is not TokenStatus.REVOKED:
                await self._revoke(record, actor=actor.login)
        return Revoked(ids=wanted, already=already)

    async def report_leak(self, values: Sequence[str]) -> int:
        """Revoke every live token among ``values``; no login needed.

        Answers how many values were examined, the same whether or not any was
        live, so that the answer tells nothing about other people's tokens.
        """
        unique = list(dict.fromkeys(values))
        if len(unique) > MAX_LEAK_REPORT:
            raise UsageError(f"too many tokens: at most {MAX_LEAK_REPORT} at once")
        for value in unique:
            parsed = tokens.parse_token(value, self.prefix)
            if parsed is None:
                continue
            record = await self.store.get_token(parsed.token_id)
            if record is None or record.status is TokenStatus.REVOKED:
                continue
            if self._value_matches(record, parsed.value):
                await self._revoke(record, actor="leak-report", reason="leak_reported")
                await self._emit(
                    "token.leak_reported",
                    token_id=record.id,
                    owner=record.owner,
                    actor="leak-report",
                )
        return len(unique)

    def _check_subset(self, owner: User, requested: Sequence[str]) -> tuple[str, ...]:
        """The scopes a token keeps (``@set`` names kept, so the token follows
        the set), if ``owner`` holds them all as the sets stand now (the
        subset rule; the gateway applies it again at each request)."""
        if isinstance(requested, str):
            requested = (requested,)
        granted = scopes.name_scopes(requested, self.scope_sets)
        expanded = self._expand(granted)
        # ``*`` on a token means "whatever the owner holds", always grantable.
        missing = scopes.uncovered(
            [s for s in expanded if s != scopes.ALL], owner.scopes
        )
        if missing:
            raise PermissionDeniedError(
                f"token scopes exceed what {owner.login} holds: {', '.join(missing)}"
            )
        return granted

    async def _token_owner(self, login: str) -> User:
        user = await self._user(login)
        if user.disabled:
            raise PermissionDeniedError(f"user {login} is disabled")
        return user

    async def _token(self, actor: Actor, token_id: str) -> TokenRecord:
        validate_token_id(token_id)
        record = await self.store.get_token(token_id)
        # SECURITY: id probing; someone else's token looks exactly like none.
        if record is None or not actor.may_act_for(record.owner):
            raise NotFoundError(f"no token {token_id}")
        return record

    def _editable(self, record: TokenRecord) -> TokenRecord:
        if record.status is TokenStatus.REVOKED:
            raise ConflictError(f"token {record.id} is revoked")
        return record

    async def _insert(self, template: TokenRecord) -> tuple[TokenRecord, str]:
        """Store ``template`` under a fresh id; a taken id is retried."""
        for _ in range(_ID_ATTEMPTS):
            value = tokens.new_token(self.prefix, random_chars=self._random_chars)
            record = template.with_changes(
                id=value.token_id,
                token_hash=tokens.hash_token(value.value, self._pepper),
            )
            try:
                await self.store.create_token(record)
            except ConflictError:
                continue
            return record, value.value
        raise ConflictError("could not find a free token id; try again")

    async def _observe(self, record: TokenRecord, actor: Actor) -> TokenRecord:
        """Mark a token expired the first time an operation sees it past expiry."""
        if record.status is not TokenStatus.ACTIVE:
            return record
        if record.status_at(self.now()) is not TokenStatus.EXPIRED:
            return record
        expired = record.with_changes(status=TokenStatus.EXPIRED)
        await self.store.update_token(expired)
        await self._emit(
            "token.expired",
            token_id=record.id,
            owner=record.owner,
            actor=actor.login,
        )
        return expired

    async def _revoke(
        self, record: TokenRecord, *, actor: str, reason: str | None = None
    ) -> TokenRecord:
        """Revoke ``record`` (which must be live); answers it as stored."""
        revoked = record.with_changes(
            status=TokenStatus.REVOKED,
            previous_hash=None,
            previous_hash_until=None,
            activate_on_use=False,
            updated_at=self.now(),
        )
        await self.store.update_token(revoked)
        await self._emit(
            "token.revoked",
            token_id=record.id,
            owner=record.owner,
            actor=actor,
            reason=reason,
        )
        return revoked

    def _value_matches(self, record: TokenRecord, value: str) -> bool:
        presented = tokens.hash_token(value, self._pepper)
        current = tokens.hashes_match(record.token_hash, presented)
        previous = record.previous_hash is not None and tokens.hashes_match(
            record.previous_hash, presented
        )
        in_grace = record.activate_on_use or (
            record.previous_hash_until is not None
            and self.now() < record.previous_hash_until
        )
        return current or (previous and in_grace)
