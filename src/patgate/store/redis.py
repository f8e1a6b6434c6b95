"""The production store: Redis, shared by every gateway replica.

Keys, all under :data:`KEY_PREFIX` (``{...}`` is a Redis Cluster hash tag)::

    patgate:t:{<id>}              hash     one token (TokenRecord fields)
    patgate:u:{<login>}           hash     one user
    patgate:u:{<login>}:tokens    set      the user's token ids (the user's slot)
    patgate:users                 set      every login
    patgate:rl:{<key>}:<start>    string   a fixed-window rate counter with a TTL
    patgate:setting:<name>        string   a fact about the store (pepper fingerprint)
    patgate:session:{<id>}:revoked string  a page session ended by a logout (TTL)
    patgate:changes               channel  change notices: token:<id>, user:<login>

Values are strings: times ``repr(float)``, hashes hex, tuples JSON lists,
booleans ``0``/``1``; a None field is absent from its hash.

Every write that touches more than one key, or must check before it writes,
is one Lua script: atomic and one round trip. The update scripts PUBLISH
their change notice inside the script, so no write is committed without its
notice. ``resolve`` is one EVALSHA that reads the token and then its owner.

Redis Cluster: the resolve script reads a key it does not declare in KEYS
(the owner's hash, known only once the token is read), and ``create_token`` /
``create_user`` touch keys of different slots. Standalone Redis and Sentinel
are fine; a Cluster deployment would split those into one call per slot.
``delete_token`` is one call per slot already: a script on the token's hash
(which also publishes the notice), then SREM from the owner's set.

Errors: every driver error becomes StoreUnavailableError naming host:port,
never the password. Timeouts are short and the driver does not retry, so a
dead Redis is reported within about a second (never as a missing token); the
connection pool reconnects by itself on the next call once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.maint_notifications import MaintNotificationsConfig

from patgate.errors import (
    ConflictError,
    NotFoundError,
    StoreUnavailableError,
    UsageError,
)
from patgate.models import (
    Change,
    ChangeKind,
    ExpiryModel,
    TokenGrant,
    TokenRecord,
    TokenStatus,
    Usage,
    User,
)
from patgate.store.base import TOKEN_SETTINGS, RateVerdict

KEY_PREFIX = "patgate:"
USERS_KEY = f"{KEY_PREFIX}users"
CHANGES_CHANNEL = f"{KEY_PREFIX}changes"

CONNECT_TIMEOUT = 1.0
SOCKET_TIMEOUT = 2.0
HEALTH_CHECK_INTERVAL = 30
# How long changes() waits for a message before it looks at close() again.
LISTEN_TICK = 0.25
# How often changes() pings its subscription; two intervals without a word
# from Redis and the subscription is reported dead: a silent network drop
# must not leave a gateway deaf to revocations.
LIVENESS_INTERVAL = 5.0
USAGE_BATCH = 500

# KEYS: the new hash, the set that lists it, [a hash that must exist first].
# ARGV: the member to add to the set, then field/value pairs.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: the hash. ARGV: channel, notice, a field to add one to ('' for none),
# number n of field/value arguments, n field/value arguments, then the fields
# to delete (those now None).
_REPLACE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[4])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 5, 4 + n)) end
if #ARGV > 4 + n then redis.call('HDEL', KEYS[1], unpack(ARGV, 5 + n)) end
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[1], ARGV[3], 1) end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

# KEYS: the token. ARGV: channel, notice. Answers the deleted hash (flat),
# empty if there was none; the caller then takes the id out of its owner's
# set (another slot on a Cluster), which lists ignore if it fails first.
_DELETE = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return fields end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return fields
"""

# KEYS: the token. ARGV: head and tail of the owner's key around the login.
_RESOLVE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return false end
return {
    redis.call('HGETALL', KEYS[1]),
    redis.call('HGETALL', ARGV[1] .. owner .. ARGV[2]),
}
"""

# KEYS: tokens. ARGV: per token used_at, ip or '', count, expires_at or '',
# the settings version expires_at was computed from.
# EXISTS first: a usage for a deleted or unknown id must not create a hash.
# SECURITY: the expiry moves only while the token is at that version, so a
# slide computed before an edit cannot undo a shortened expiry.
_RECORD_USAGE = """
for i, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then
        local used_at, ip = ARGV[i * 5 - 4], ARGV[i * 5 - 3]
        local count, expires_at = ARGV[i * 5 - 2], ARGV[i * 5 - 1]
        redis.call('HINCRBY', key, 'use_count', count)
        local last = redis.call('HGET', key, 'last_used_at')
        if not last or tonumber(last) < tonumber(used_at) then
            redis.call('HSET', key, 'last_used_at', used_at)
            if ip ~= '' then redis.call('HSET', key, 'last_used_ip', ip) end
        end
        if expires_at ~= '' then
            local version = redis.call('HGET', key, 'version') or '0'
            local current = redis.call('HGET', key, 'expires_at')
            if current and tonumber(version) == tonumber(ARGV[i * 5])
                and tonumber(current) < tonumber(expires_at) then
                redis.call('HSET', key, 'expires_at', expires_at)
            end
        end
    end
end
return #KEYS
"""

# KEYS: the window's counter. ARGV: its time to live in seconds.
_TAKE_RATE = """
local hits = redis.call('INCR', KEYS[1])
if hits == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return hits
"""


def token_key(token_id: str) -> str:
    return f"{KEY_PREFIX}t:{{{token_id}}}"


_USER_KEY_HEAD = f"{KEY_PREFIX}u:{{"
_USER_KEY_TAIL = "}"


def user_key(login: str) -> str:
    return f"{_USER_KEY_HEAD}{login}{_USER_KEY_TAIL}"


def user_tokens_key(login: str) -> str:
    return f"{user_key(login)}:tokens"


def setting_key(name: str) -> str:
    return f"{KEY_PREFIX}setting:{name}"


def rate_key(key: str, window: int, window_start: int) -> str:
    """The counter of ``key`` for one window; limits with other windows stay apart."""
    return f"{KEY_PREFIX}rl:{{{key}}}:{window}:{window_start}"


class RedisStore:
    """The Store protocol on Redis; :meth:`from_url` is the usual way in.

    ``client`` must decode responses (``decode_responses=True``).
    """

    def __init__(
        self,
        client: Redis,
        *,
        url_for_display: str,
        liveness_interval: float = LIVENESS_INTERVAL,
    ) -> None:
        self.url_for_display = url_for_display
        self._liveness_interval = liveness_interval
        self._label = f"redis store {url_for_display.partition('://')[2]}"
        self._client = client
        self._password = client.connection_pool.connection_kwargs.get("password")
        self._closed = False
        self._create = client.register_script(_CREATE)
        self._replace = client.register_script(_REPLACE)
        self._delete = client.register_script(_DELETE)
        self._resolve = client.register_script(_RESOLVE)
        self._record_usage = client.register_script(_RECORD_USAGE)
        self._take_rate = client.register_script(_TAKE_RATE)

    @classmethod
    def from_url(
        cls, url: str, *, liveness_interval: float = LIVENESS_INTERVAL
    ) -> RedisStore:
        """``redis://[:password@]host:port/db``, ``rediss://...`` or ``unix:///path``.

        Options in the URL's query (``?socket_timeout=5``) override the defaults.
        """
        display = _display_url(url)
        try:
            client = Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=SOCKET_TIMEOUT,
                health_check_interval=HEALTH_CHECK_INTERVAL,
                # No driver retries: a dead Redis must be reported fast (the
                # gateway answers 503 and serves from its cache meanwhile), and
                # a blind retry could apply a create or a count twice.
                retry=Retry(NoBackoff(), 0),
                client_name="patgate",
                # With these on ("auto", the default) redis-py skips its check
                # for pooled connections the server closed, so after a Redis
                # restart every idle connection failed one call (a 503).
                maint_notifications_config=MaintNotificationsConfig(enabled=False),
            )
        except ValueError as err:
            raise UsageError(f"invalid Redis store URL {display}: {err}") from None
        return cls(client, url_for_display=display, liveness_interval=liveness_interval)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn every driver error into StoreUnavailableError.

        Also re-raise a cancellation the driver swallowed: redis-py sends with
        ``asyncio.wait_for``, which on Python 3.11 drops a cancel that lands as
        the send completes. The task still counts the request, so compare.
        """
        if self._closed:
            raise StoreUnavailableError(f"{self._label}: closed")
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            yield
        except (RedisError, OSError) as err:
            reason = str(err) or type(err).__name__
            if self._password:
                # SECURITY: never let a password from the URL into a message.
                reason = reason.replace(self._password, "***")
            raise StoreUnavailableError(f"{self._label}: {reason}") from None
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError

    # the Store protocol

    async def ping(self) -> None:
        with self._errors():
            await self._client.ping()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()

    async def get_setting(self, name: str) -> str | None:
        with self._errors():
            value = await self._client.get(setting_key(name))
        return None if value is None else str(value)

    async def claim_setting(self, name: str, value: str) -> str:
        with self._errors():
            # SET NX and GET are one round trip each; SET ... NX GET (Redis
            # 7) would be one, but 6.2 servers are still common.
            await self._client.set(setting_key(name), value, nx=True)
            stored = await self._client.get(setting_key(name))
        if stored is None:
            raise StoreUnavailableError(f"{self._label}: setting {name} vanished")
        return str(stored)

    async def create_user(self, user: User) -> None:
        fields = _user_fields(user)
        with self._errors():
            created = await self._create(
                keys=[user_key(user.login), USERS_KEY],
                args=[user.login, *_flatten(fields)],
            )
        if created == 0:
            raise ConflictError(f"user {user.login!r} already exists")

    async def get_user(self, login: str) -> User | None:
        with self._errors():
            fields = _text(await self._client.hgetall(user_key(login)))
        return _user_from_fields(fields) if fields else None

    async def list_users(self) -> list[User]:
        with self._errors():
            logins = _texts(await self._client.smembers(USERS_KEY))
            found = await self._hgetall_many([user_key(login) for login in logins])
        users = [_user_from_fields(fields) for fields in found if fields]
        return sorted(users, key=lambda user: user.login)

    async def update_user(self, user: User) -> None:
        notice = Change(ChangeKind.USER, user.login)
        replaced = await self._replace_hash(
            user_key(user.login), _user_fields(user), notice, counter=""
        )
        if not replaced:
            raise NotFoundError(f"no user {user.login!r}")

    async def create_token(self, record: TokenRecord) -> None:
        fields = _token_fields(record)
        with self._errors():
            created = await self._create(
                keys=[
                    token_key(record.id),
                    user_tokens_key(record.owner),
                    user_key(record.owner),
                ],
                args=[record.id, *_flatten(fields)],
            )
        if created == 0:
            raise ConflictError(f"token {record.id!r} already exists")
        if created == -1:
            raise NotFoundError(f"no user {record.owner!r}")

    async def get_token(self, token_id: str) -> TokenRecord | None:
        with self._errors():
            fields = _text(await self._client.hgetall(token_key(token_id)))
        return _token_from_fields(fields) if fields else None

    async def list_tokens(self, owner: str | None = None) -> list[TokenRecord]:
        with self._errors():
            if owner is None:
                logins = _texts(await self._client.smembers(USERS_KEY))
                pipe = self._client.pipeline(transaction=False)
                for login in logins:
                    pipe.smembers(user_tokens_key(login))
                ids = [tid for members in await pipe.execute() for tid in members]
            else:
                ids = _texts(await self._client.smembers(user_tokens_key(owner)))
            found = await self._hgetall_many([token_key(tid) for tid in ids])
        records = [_token_from_fields(fields) for fields in found if fields]
        return sorted(records, key=lambda record: (record.created_at, record.id))

    async def update_token(self, record: TokenRecord) -> None:
        fields = _token_fields(record)
        settings = {name: fields.get(name) for name in TOKEN_SETTINGS}
        notice = Change(ChangeKind.TOKEN, record.id)
        replaced = await self._replace_hash(
            token_key(record.id), settings, notice, counter="version"
        )
        if not replaced:
            raise NotFoundError(f"no token {record.id!r}")

    async def delete_token(self, token_id: str) -> TokenRecord | None:
        notice = Change(ChangeKind.TOKEN, token_id)
        with self._errors():
            flat = await self._delete(
                keys=[token_key(token_id)], args=[CHANGES_CHANNEL, notice.encode()]
            )
            if not flat:
                return None
            record = _token_from_fields(_pairs(flat))
            await self._client.srem(user_tokens_key(record.owner), token_id)
        return record

    async def resolve(self, token_id: str) -> TokenGrant | None:
        with self._errors():
            reply = await self._resolve(
                keys=[token_key(token_id)], args=[_USER_KEY_HEAD, _USER_KEY_TAIL]
            )
        if not reply or not reply[1]:
            return None
        token_fields, owner_fields = (_pairs(flat) for flat in reply)
        return TokenGrant(
            token=_token_from_fields(token_fields),
            owner=_user_from_fields(owner_fields),
        )

    async def record_usage(self, usages: Sequence[Usage]) -> None:
        if not usages:
            return
        calls = []
        for start in range(0, len(usages), USAGE_BATCH):
            batch = usages[start : start + USAGE_BATCH]
            args: list[str] = []
            for usage in batch:
                args += [
                    repr(usage.used_at),
                    usage.ip or "",
                    str(usage.count),
                    "" if usage.expires_at is None else repr(usage.expires_at),
                    str(usage.version),
                ]
            calls.append(([token_key(usage.token_id) for usage in batch], args))
        with self._errors():
            await self._evalsha_pipelined(self._record_usage, calls)

    async def changes(self) -> AsyncIterator[Change]:
        pubsub = self._client.pubsub()
        try:
            with self._errors():
                await pubsub.subscribe(CHANGES_CHANNEL)
            async for message in self._messages(pubsub):
                change = Change.decode(message)
                if change is not None:
                    yield change
        except StoreUnavailableError:
            if self._closed:
                return
            raise
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def take_rate(
        self, key: str, limit: int, window: int, now: float
    ) -> RateVerdict:
        start = int(now // window) * window
        ends_in = start + window - now
        with self._errors():
            hits = await self._take_rate(
                keys=[rate_key(key, window, start)], args=[math.ceil(ends_in) + 1]
            )
        if int(hits) > limit:
            return RateVerdict(allowed=False, retry_after=ends_in)
        return RateVerdict(allowed=True)

    # helpers

    async def _replace_hash(
        self, key: str, fields: dict[str, str | None], notice: Change, *, counter: str
    ) -> bool:
        """Write ``fields``, add one to the ``counter`` field ('' for none) and
        publish ``notice``, atomically."""
        present = _flatten(fields)
        absent = [name for name, value in fields.items() if value is None]
        args = [
            CHANGES_CHANNEL,
            notice.encode(),
            counter,
            str(len(present)),
            *present,
            *absent,
        ]
        with self._errors():
            replaced = await self._replace(keys=[key], args=args)
        return bool(replaced)

    async def _hgetall_many(self, keys: list[str]) -> list[dict[str, str]]:
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        found: list[dict[str, str]] = await pipe.execute()
        return found

    async def _evalsha_pipelined(
        self, script: AsyncScript, calls: list[tuple[list[str], list[str]]]
    ) -> None:
        """Run ``script`` once per (KEYS, ARGV) call, all in one round trip.

        A pipeline cannot fall back from EVALSHA to EVAL by itself, so after a
        Redis restart (empty script cache) the script is loaded and the
        pipeline sent again.
        """
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            try:
                await pipe.execute()
                return
            except NoScriptError:
                if attempt:
                    raise
                await self._client.script_load(script.script)

    async def _messages(self, pubsub: PubSub) -> AsyncIterator[str]:
        """The data of every message on ``pubsub``, until close().

        Raises StoreUnavailableError when the connection drops or stops
        answering its pings.
        """
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        while not self._closed:
            with self._errors():
                message = await pubsub.get_message(timeout=LISTEN_TICK)
                now = loop.time()
                if now - pinged >= self._liveness_interval:
                    await pubsub.ping()
                    pinged = now
            if message is not None:
                heard = now
                if message["type"] == "message":
                    yield message["data"]
            elif now - heard > 2 * self._liveness_interval:
                raise StoreUnavailableError(
                    f"{self._label}: the change subscription stopped answering"
                )

    # the web page's sessions ended before their expiry (logout)

    async def revoke_session(self, session_id: str, expires_at: float) -> None:
        # Redis forgets the record when the session would have expired; one
        # that has expired already needs no record.
        ttl = math.ceil(expires_at - time.time())
        if ttl <= 0:
            return
        with self._errors():
            await self._client.set(revoked_session_key(session_id), "1", ex=ttl)

    async def session_revoked(self, session_id: str) -> bool:
        with self._errors():
            return bool(await self._client.exists(revoked_session_key(session_id)))


def revoked_session_key(session_id: str) -> str:
    return f"{KEY_PREFIX}session:{{{session_id}}}:revoked"


def _display_url(url: str) -> str:
    """``url`` without credentials: ``redis://host:port/db`` or ``unix:///path``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UsageError(
            "invalid Redis store URL: expected redis://host:port/db"
        ) from None
    query_db = parse_qs(parts.query).get("db", ["0"])[0]
    if parts.scheme == "unix":
        return f"unix://{parts.path}?db={query_db}"
    db = parts.path.strip("/") or query_db
    return f"{parts.scheme}://{parts.hostname or 'localhost'}:{port or 6379}/{db}"


def _text(fields: Mapping[Any, Any]) -> dict[str, str]:
    """A hash as read with ``decode_responses=True``: text in, text out."""
    return cast(dict[str, str], fields)


def _texts(members: Iterable[Any]) -> list[str]:
    return cast(list[str], list(members))


def _flatten(fields: dict[str, str | None]) -> list[str]:
    """Field/value pairs for HSET; None fields are left out (absent)."""
    return [
        item
        for name, value in fields.items()
        if value is not None
        for item in (name, value)
    ]


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _optional(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _user_fields(user: User) -> dict[str, str | None]:
    return {
        "login": user.login,
        "password_hash": user.password_hash,
        "scopes": json.dumps(list(user.scopes)),
        "admin": "1" if user.admin else "0",
        "disabled": "1" if user.disabled else "0",
        "created_at": repr(user.created_at),
        "updated_at": repr(user.updated_at),
    }


def _user_from_fields(fields: dict[str, str]) -> User:
    return User(
        login=fields["login"],
        password_hash=fields.get("password_hash"),
        scopes=tuple(json.loads(fields["scopes"])),
        admin=fields["admin"] == "1",
        disabled=fields["disabled"] == "1",
        created_at=float(fields["created_at"]),
        updated_at=float(fields["updated_at"]),
    )


def _token_fields(record: TokenRecord) -> dict[str, str | None]:
    return {
        "id": record.id,
        "owner": record.owner,
        "token_hash": record.token_hash.hex(),
        "name": record.name,
        "scopes": json.dumps(list(record.scopes)),
        "project": record.project,
        "expiry": record.expiry.value,
        "expires_at": _optional(record.expires_at),
        "sliding_window": _optional(record.sliding_window),
        "max_lifetime": _optional(record.max_lifetime),
        "created_at": repr(record.created_at),
        "created_by": record.created_by,
        "updated_at": repr(record.updated_at),
        "last_used_at": _optional(record.last_used_at),
        "last_used_ip": record.last_used_ip,
        "use_count": str(record.use_count),
        "allowed_cidrs": json.dumps(list(record.allowed_cidrs)),
        "rate_limit": _optional(record.rate_limit),
        "status": record.status.value,
        "previous_hash": (
            None if record.previous_hash is None else record.previous_hash.hex()
        ),
        "previous_hash_until": _optional(record.previous_hash_until),
        "version": str(record.version),
    }


def _token_from_fields(fields: dict[str, str]) -> TokenRecord:
    def number(name: str) -> float | None:
        value = fields.get(name)
        return None if value is None else float(value)

    def integer(name: str) -> int | None:
        value = fields.get(name)
        return None if value is None else int(value)

    previous = fields.get("previous_hash")
    return TokenRecord(
        id=fields["id"],
        owner=fields["owner"],
        token_hash=bytes.fromhex(fields["token_hash"]),
        name=fields["name"],
        scopes=tuple(json.loads(fields["scopes"])),
        project=fields.get("project"),
        expiry=ExpiryModel(fields["expiry"]),
        expires_at=number("expires_at"),
        sliding_window=integer("sliding_window"),
        max_lifetime=integer("max_lifetime"),
        created_at=float(fields["created_at"]),
        created_by=fields["created_by"],
        updated_at=float(fields["updated_at"]),
        last_used_at=number("last_used_at"),
        last_used_ip=fields.get("last_used_ip"),
        use_count=int(fields.get("use_count", "0")),
        allowed_cidrs=tuple(json.loads(fields["allowed_cidrs"])),
        rate_limit=integer("rate_limit"),
        status=TokenStatus(fields["status"]),
        previous_hash=None if previous is None else bytes.fromhex(previous),
        previous_hash_until=number("previous_hash_until"),
        version=int(fields.get("version", "0")),
    )
