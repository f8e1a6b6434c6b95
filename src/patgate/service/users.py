"""The user life cycle: add, list, show, change, disable and enable users.

Also password authentication for the API: :meth:`UserOperations.authenticate`
gives one answer for every kind of failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from patgate import passwords
from patgate.errors import (
    AuthenticationError,
    ConflictError,
    PermissionDeniedError,
)
from patgate.models import User
from patgate.service.core import Actor, ServiceCore
from patgate.service.validation import (
    LOGIN_PATTERN,
    MAX_PASSWORD_LENGTH,
    validate_login,
    validate_password,
)

_BAD_CREDENTIALS = "invalid login or password"


class UserOperations(ServiceCore):
    """Every operation on users; only an admin manages users other than themself."""

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

    async def set_admin(self, actor: Actor, login: str, admin: bool) -> User:
        """Grant or take the admin flag; an admin cannot drop their own."""
        self._require_admin(actor)
        if not admin and login == actor.login:
            raise PermissionDeniedError("an admin cannot take their own admin flag")
        user = await self._user(login)
        if user.admin == admin:
            return user
        changed = replace(user, admin=admin, updated_at=self.now())
        await self.store.update_user(changed)
        self._audit.info(
            "user.admin_granted" if admin else "user.admin_revoked",
            login=login,
            actor=actor.login,
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

    def _require_admin(self, actor: Actor) -> None:
        if not actor.admin:
            raise PermissionDeniedError("only an admin may manage users")


async def _hash_password(password: str) -> str:
    # argon2 takes ~0.1 s of CPU and releases the GIL: keep the event loop free.
    return await asyncio.to_thread(passwords.hash_password, validate_password(password))
