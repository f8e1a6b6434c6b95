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
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Final, Literal

from structlog.typing import FilteringBoundLogger

from patgate import passwords, scopes, tokens
from patgate.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    UsageError,
)
from patgate.logs import get_logger
from patgate.models import ExpiryModel, TokenRecord, TokenStatus, User
from patgate.store.base import Store

LOGIN_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
MAX_NAME_LENGTH = 200
MAX_PROJECT_LENGTH = 100
MAX_RATE_LIMIT = 1_000_000
MAX_LEAK_REPORT = 100
_ID_ATTEMPTS = 5
_BAD_CREDENTIALS = "invalid login or password"


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


@dataclass(frozen=True, slots=True)
class _Expiry:
    model: ExpiryModel
    expires_at: float | None
    sliding_window: int | None
    max_lifetime: int | None


def validate_login(login: str) -> str:
    if not LOGIN_PATTERN.fullmatch(login):
        raise UsageError(
            f"invalid login {login!r}: use 1-64 letters, digits, '.', '_', '@' or"
            " '-', starting with a letter or digit"
        )
    return login


def _validate_password(password: str) -> str:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise UsageError(
            f"invalid password: use {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH}"
            " characters"
        )
    return password


def _validate_text(what: str, text: str, limit: int) -> str:
    if len(text) > limit:
        raise UsageError(f"invalid {what}: longer than {limit} characters")
    if any(unicodedata.category(char).startswith("C") for char in text):
        raise UsageError(f"invalid {what}: control characters are not allowed")
    return text


def _validate_project(project: str | None) -> str | None:
    if project is None or project == "":
        return None
    return _validate_text("project", project, MAX_PROJECT_LENGTH)


def validate_cidrs(cidrs: Iterable[str]) -> tuple[str, ...]:
    """Each CIDR normalised (``10.0.0.5/24`` → ``10.0.0.0/24``), duplicates dropped."""
    result: list[str] = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise UsageError(
                f"invalid CIDR {cidr!r}: expected an address or network such as"
                " 192.0.2.0/24 or 2001:db8::/32"
            ) from None
        if str(network) not in result:
            result.append(str(network))
    return tuple(result)


def _validate_rate_limit(rate_limit: int | None) -> int | None:
    if rate_limit is None:
        return None
    if (
        isinstance(rate_limit, bool)
        or not isinstance(rate_limit, int)
        or not 0 < rate_limit <= MAX_RATE_LIMIT
    ):
        raise UsageError(
            f"invalid rate limit {rate_limit!r}: expected requests per minute,"
            f" 1 to {MAX_RATE_LIMIT}"
        )
    return rate_limit


def _validate_seconds(what: str, seconds: int | None) -> int | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise UsageError(f"invalid {what} {seconds!r}: expected a positive duration")
    return seconds


def _validate_token_id(token_id: str) -> str:
    if not tokens.looks_like_token_id(token_id):
        # SECURITY: a whole token value pasted as an id must not be echoed back.
        raise UsageError(
            f"invalid token id: expected {tokens.ID_LENGTH} letters and digits"
        )
    return token_id


def compute_expiry(
    *,
    now: float,
    origin: float,
    expires_at: float | None,
    sliding: int | None,
    max_lifetime: int | None,
) -> _Expiry:
    """The expiry model for the given inputs; ``origin`` is the creation time."""
    sliding = _validate_seconds("sliding window", sliding)
    max_lifetime = _validate_seconds("max lifetime", max_lifetime)
    if expires_at is not None and sliding is not None:
        raise UsageError(
            "choose one expiry: a fixed time (-e) or a sliding window (-a)"
        )
    cap = origin + max_lifetime if max_lifetime is not None else None
    if sliding is not None:
        moved = now + sliding
        return _Expiry(
            ExpiryModel.SLIDING,
            moved if cap is None else min(moved, cap),
            sliding,
            max_lifetime,
        )
    if expires_at is None and cap is None:
        return _Expiry(ExpiryModel.NEVER, None, None, None)
    ends = min(t for t in (expires_at, cap) if t is not None)
    return _Expiry(ExpiryModel.HARD, ends, None, max_lifetime)


class TokenService:
    """Users and tokens: every management operation, checked and audited."""

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
    ) -> None:
        self.store = store
        self.prefix = prefix
        self._pepper = pepper
        self.scope_sets: Mapping[str, Sequence[str]] = scope_sets or {}
        self._clock = clock
        self._random_chars = random_chars
        self._audit = audit if audit is not None else get_logger("patgate.audit")

    def now(self) -> float:
        return self._clock()

    # users

    async def add_user(
        self,
        actor: Actor,
        login: str,
        *,
        admin: bool = False,
        scopes: Sequence[str] = ("*",),
        password: str | None = None,
    ) -> User:
        """Create a user; without a password the user cannot log in to the API."""
        self._require_admin(actor)
        validate_login(login)
        granted = self._expand(scopes)
        password_hash = None
        if password is not None:
            password_hash = await _hash_password(password)
        now = self.now()
        user = User(
            login=login,
            password_hash=password_hash,
            scopes=granted,
            admin=admin,
            created_at=now,
            updated_at=now,
        )
        try:
            await self.store.create_user(user)
        except ConflictError:
            raise ConflictError(f"user {login} already exists") from None
        self._audit.info(
            "user.created", login=login, actor=actor.login, admin=admin, scopes=granted
        )
        return user

    async def list_users(self, actor: Actor) -> list[User]:
        self._require_admin(actor)
        return await self.store.list_users()

    async def get_user(self, actor: Actor, login: str) -> User:
        if not actor.may_act_for(login):
            raise PermissionDeniedError("only an admin may see other users")
        return await self._user(login)

    async def set_password(self, actor: Actor, login: str, password: str) -> User:
        if not actor.may_act_for(login):
            raise PermissionDeniedError("only an admin may change another's password")
        user = await self._user(login)
        changed = replace(
            user, password_hash=await _hash_password(password), updated_at=self.now()
        )
        await self.store.update_user(changed)
        self._audit.info("user.password_changed", login=login, actor=actor.login)
        return changed

    async def disable_user(self, actor: Actor, login: str) -> User:
        """Stop the user and, at once, every token of theirs."""
        return await self._set_disabled(actor, login, disabled=True)

    async def enable_user(self, actor: Actor, login: str) -> User:
        return await self._set_disabled(actor, login, disabled=False)

    async def set_user_scopes(
        self, actor: Actor, login: str, scopes: Sequence[str]
    ) -> User:
        """Replace what the user may grant; their ``*`` tokens follow at once."""
        self._require_admin(actor)
        user = await self._user(login)
        granted = self._expand(scopes)
        changed = replace(user, scopes=granted, updated_at=self.now())
        await self.store.update_user(changed)
        self._audit.info(
            "user.scopes_changed", login=login, actor=actor.login, scopes=granted
        )
        return changed

    async def authenticate(self, login: str, password: str) -> User:
        """The user whose login and password these are; one error for every failure."""
        user = None
        if LOGIN_PATTERN.fullmatch(login) and len(password) <= MAX_PASSWORD_LENGTH:
            user = await self.store.get_user(login)
        stored_hash = user.password_hash if user is not None else None
        # SECURITY: login enumeration; unknown, disabled and password-less users
        # get the same answer after the same work as a wrong password.
        if not await asyncio.to_thread(
            passwords.verify_password, stored_hash, password
        ):
            raise AuthenticationError(_BAD_CREDENTIALS)
        if user is None or user.disabled or stored_hash is None:
            raise AuthenticationError(_BAD_CREDENTIALS)
        if passwords.needs_rehash(stored_hash):
            user = replace(user, password_hash=await _hash_password(password))
            await self.store.update_user(user)
        return user

    async def _set_disabled(self, actor: Actor, login: str, *, disabled: bool) -> User:
        self._require_admin(actor)
        user = await self._user(login)
        if user.disabled == disabled:
            return user
        changed = replace(user, disabled=disabled, updated_at=self.now())
        await self.store.update_user(changed)
        event = "user.disabled" if disabled else "user.enabled"
        self._audit.info(event, login=login, actor=actor.login)
        return changed

    async def _user(self, login: str) -> User:
        validate_login(login)
        user = await self.store.get_user(login)
        if user is None:
            raise NotFoundError(f"no user {login}")
        return user

    # tokens

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
    ) -> tuple[TokenRecord, str]:
        """A new token for ``owner`` and its value, which is never available again."""
        if not actor.may_act_for(owner):
            raise PermissionDeniedError(
                "only an admin may create tokens for another user"
            )
        user = await self._token_owner(owner)
        now = self.now()
        granted = self._check_subset(user, scopes)
        expiry = self._new_expiry(now, now, expires_at, sliding, max_lifetime)
        template = TokenRecord(
            id="",
            owner=owner,
            token_hash=b"",
            name=_validate_text("name", name, MAX_NAME_LENGTH),
            scopes=granted,
            project=_validate_project(project),
            expiry=expiry.model,
            expires_at=expiry.expires_at,
            sliding_window=expiry.sliding_window,
            max_lifetime=expiry.max_lifetime,
            created_at=now,
            created_by=actor.login,
            updated_at=now,
            allowed_cidrs=validate_cidrs(allowed_cidrs),
            rate_limit=_validate_rate_limit(rate_limit),
        )
        record, value = await self._insert(template)
        self._audit.info(
            "token.created", token_id=record.id, owner=owner, actor=actor.login
        )
        return record, value

    async def list_tokens(
        self, actor: Actor, owner: str | None = None
    ) -> list[TokenRecord]:
        """Tokens of ``owner``; a user's own by default, everyone's for an admin."""
        if owner is None and not actor.admin:
            owner = actor.login
        if owner is not None:
            if not actor.may_act_for(owner):
                raise PermissionDeniedError("only an admin may list another's tokens")
            await self._user(owner)
        records = await self.store.list_tokens(owner)
        return [await self._observe(record, actor) for record in records]

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
    ) -> TokenRecord:
        """Change what is given, nothing else.

        Giving ``expires_at`` or ``sliding`` replaces the expiry model (both
        None: never expires); ``max_lifetime`` alone re-caps the current one.
        """
        record = self._editable(await self._token(actor, token_id))
        now = self.now()
        changes: dict[str, object] = {}
        if name is not UNSET:
            changes["name"] = _validate_text("name", name, MAX_NAME_LENGTH)
        if scopes is not UNSET:
            changes["scopes"] = self._check_subset(
                await self._token_owner(record.owner), scopes
            )
        if not (expires_at is UNSET and sliding is UNSET and max_lifetime is UNSET):
            changes.update(
                _expiry_changes(
                    self._edited_expiry(record, now, expires_at, sliding, max_lifetime)
                )
            )
            changes["status"] = TokenStatus.ACTIVE
        if allowed_cidrs is not UNSET:
            changes["allowed_cidrs"] = validate_cidrs(allowed_cidrs)
        if project is not UNSET:
            changes["project"] = _validate_project(project)
        if rate_limit is not UNSET:
            changes["rate_limit"] = _validate_rate_limit(rate_limit)
        if not changes:
            raise UsageError("nothing to change")
        edited = record.with_changes(**changes, updated_at=now)
        await self.store.update_token(edited)
        self._audit.info(
            "token.edited",
            token_id=record.id,
            owner=record.owner,
            actor=actor.login,
            fields=sorted(k for k in changes if k != "status"),
        )
        return edited

    async def regenerate_token(
        self, actor: Actor, token_id: str, grace: int | None = None
    ) -> tuple[TokenRecord, str]:
        """A new value for the same token; the old one dies now or after ``grace`` s."""
        record = self._editable(await self._token(actor, token_id))
        grace = _validate_seconds("grace period", grace)
        now = self.now()
        value = tokens.new_token(self.prefix, record.id, self._random_chars).value
        regenerated = record.with_changes(
            token_hash=tokens.hash_token(value, self._pepper),
            previous_hash=record.token_hash if grace else None,
            previous_hash_until=now + grace if grace else None,
            updated_at=now,
        )
        await self.store.update_token(regenerated)
        self._audit.info(
            "token.regenerated",
            token_id=record.id,
            owner=record.owner,
            actor=actor.login,
            grace=grace,
        )
        return regenerated, value

    async def copy_token(self, actor: Actor, token_id: str) -> tuple[TokenRecord, str]:
        """A new token (new id and value) with the settings of ``token_id``."""
        source = await self._token(actor, token_id)
        user = await self._token_owner(source.owner)
        granted = self._check_subset(user, source.scopes)
        now = self.now()
        expiry = _copied_expiry(source, now)
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
        )
        record, value = await self._insert(template)
        self._audit.info(
            "token.copied",
            token_id=record.id,
            source_id=source.id,
            owner=record.owner,
            actor=actor.login,
        )
        return record, value

    async def revoke_tokens(self, actor: Actor, token_ids: Sequence[str]) -> list[str]:
        """Revoke every id, or none when any is unknown or not the actor's."""
        wanted = list(dict.fromkeys(token_ids))
        if not wanted:
            raise UsageError("no token id given")
        records: list[TokenRecord] = []
        missing: list[str] = []
        for token_id in wanted:
            _validate_token_id(token_id)
            record = await self.store.get_token(token_id)
            if record is None or not actor.may_act_for(record.owner):
                missing.append(token_id)
            else:
                records.append(record)
        if missing:
            raise NotFoundError(f"no token {', '.join(missing)}; nothing revoked")
        for record in records:
            if record.status is not TokenStatus.REVOKED:
                await self._revoke(record, actor=actor.login)
        return wanted

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
                self._audit.info(
                    "token.leak_reported",
                    token_id=record.id,
                    owner=record.owner,
                    actor="leak-report",
                )
        return len(unique)

    # helpers

    def _require_admin(self, actor: Actor) -> None:
        if not actor.admin:
            raise PermissionDeniedError("only an admin may manage users")

    def _expand(self, requested: Sequence[str]) -> tuple[str, ...]:
        if isinstance(requested, str):
            requested = (requested,)
        return scopes.expand_scopes(requested, self.scope_sets)

    def _check_subset(self, owner: User, requested: Sequence[str]) -> tuple[str, ...]:
        """The expanded scopes, if ``owner`` holds them all (the subset rule)."""
        granted = self._expand(requested)
        # ``*`` on a token means "whatever the owner holds", always grantable.
        missing = scopes.uncovered(
            [s for s in granted if s != scopes.ALL], owner.scopes
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
        _validate_token_id(token_id)
        record = await self.store.get_token(token_id)
        # SECURITY: id probing; someone else's token looks exactly like none.
        if record is None or not actor.may_act_for(record.owner):
            raise NotFoundError(f"no token {token_id}")
        return record

    def _editable(self, record: TokenRecord) -> TokenRecord:
        if record.status is TokenStatus.REVOKED:
            raise ConflictError(f"token {record.id} is revoked")
        return record

    def _new_expiry(
        self,
        now: float,
        origin: float,
        expires_at: float | None,
        sliding: int | None,
        max_lifetime: int | None,
    ) -> _Expiry:
        expiry = compute_expiry(
            now=now,
            origin=origin,
            expires_at=expires_at,
            sliding=sliding,
            max_lifetime=max_lifetime,
        )
        if expiry.expires_at is not None and expiry.expires_at <= now:
            raise UsageError("the expiry is in the past")
        return expiry

    def _edited_expiry(
        self,
        record: TokenRecord,
        now: float,
        expires_at: float | Unset | None,
        sliding: int | Unset | None,
        max_lifetime: int | Unset | None,
    ) -> _Expiry:
        if expires_at is UNSET and sliding is UNSET:
            # Keep the model, re-cap it.
            expires_at = (
                record.expires_at if record.expiry is ExpiryModel.HARD else None
            )
            sliding = record.sliding_window
        else:
            expires_at = None if expires_at is UNSET else expires_at
            sliding = None if sliding is UNSET else sliding
        if max_lifetime is UNSET:
            max_lifetime = record.max_lifetime
        return self._new_expiry(
            now, record.created_at, expires_at, sliding, max_lifetime
        )

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
        self._audit.info(
            "token.expired",
            token_id=record.id,
            owner=record.owner,
            actor=actor.login,
        )
        return expired

    async def _revoke(
        self, record: TokenRecord, *, actor: str, reason: str | None = None
    ) -> None:
        revoked = record.with_changes(
            status=TokenStatus.REVOKED,
            previous_hash=None,
            previous_hash_until=None,
            updated_at=self.now(),
        )
        await self.store.update_token(revoked)
        self._audit.info(
            "token.revoked",
            token_id=record.id,
            owner=record.owner,
            actor=actor,
            reason=reason,
        )

    def _value_matches(self, record: TokenRecord, value: str) -> bool:
        presented = tokens.hash_token(value, self._pepper)
        current = tokens.hashes_match(record.token_hash, presented)
        previous = record.previous_hash is not None and tokens.hashes_match(
            record.previous_hash, presented
        )
        in_grace = (
            record.previous_hash_until is not None
            and self.now() < record.previous_hash_until
        )
        return current or (previous and in_grace)


async def _hash_password(password: str) -> str:
    # argon2 takes ~0.1 s of CPU and releases the GIL: keep the event loop free.
    return await asyncio.to_thread(
        passwords.hash_password, _validate_password(password)
    )


def _expiry_changes(expiry: _Expiry) -> dict[str, object]:
    return {
        "expiry": expiry.model,
        "expires_at": expiry.expires_at,
        "sliding_window": expiry.sliding_window,
        "max_lifetime": expiry.max_lifetime,
    }


def _copied_expiry(source: TokenRecord, now: float) -> _Expiry:
    """A fresh expiry of the same model as ``source``, counted from ``now``."""
    if source.expiry is ExpiryModel.SLIDING:
        return compute_expiry(
            now=now,
            origin=now,
            expires_at=None,
            sliding=source.sliding_window,
            max_lifetime=source.max_lifetime,
        )
    if source.expiry is ExpiryModel.HARD and source.expires_at is not None:
        lifetime = max(source.expires_at - source.created_at, 1.0)
        return _Expiry(ExpiryModel.HARD, now + lifetime, None, source.max_lifetime)
    return _Expiry(ExpiryModel.NEVER, None, None, None)
