"""The production store: Redis, shared by every gateway replica.

Keys, all under :data:`KEY_PREFIX` (``{...}`` is a Redis Cluster hash tag)::

    patgate:t:{<id>}              hash     one token (TokenRecord fields)
    patgate:t:{<id>}:observed     hash     route\tmethod\tpattern -> [count, last seen]
    patgate:u:{<login>}           hash     one user
    patgate:u:{<login>}:tokens    set      the user's token ids (the user's slot)
    patgate:users                 set      every login
    patgate:rl:{<key>}:<start>    string   a fixed-window rate counter with a TTL
    patgate:setting:<name>        string   a fact about the store (pepper fingerprint)
    patgate:session:{<id>}:revoked string  a page session ended by a logout (TTL)
    patgate:changes               channel  change notices: token:<id>, user:<login>
    patgate:{outbox}:due          zset     webhook delivery ids by due time
    patgate:{outbox}:items        hash     delivery id -> the delivery (JSON)
    patgate:{outbox}:log          list     the last delivery attempts (JSON)
    patgate:{outbox}:lease:<name> string   who delivers the outbox (a TTL)

The outbox keys share one hash tag, so each outbox script touches one
Cluster slot; the last addresses of a token live in its own hash
(``last_ips``), written by a script of that one key. An observed token's
requests are in a hash beside it with the same hash tag, merged and trimmed
by one script of the two keys (one slot); it goes with the token when the
token is deleted, and expires OBSERVED_TTL after its last write.

Values are strings: times ``repr(float)``, hashes hex, tuples JSON lists,
booleans ``0``/``1``; a None field is absent from its hash.

Every call keeps to the keys of one hash slot, so the same code runs on one
server, behind Sentinel and on a Cluster. A write that must check before it
writes is one Lua script: atomic and one round trip. The update scripts
PUBLISH their change notice inside the script, so no write is committed
without its notice. Creating a user or a token is two steps in two slots:
the index entry first (``patgate:users``; the owner's token set, with the
check that the owner exists), then the record; an index may name a record a
crash kept from being written, and readers skip it. ``resolve`` is one
EVALSHA that reads the token and then its owner, except on a Cluster, where
the owner is in another slot and it is two reads. A usage batch is one
script call, one per slot on a Cluster. The key names never changed, so
existing plain-Redis data needs no migration.

Set-ups (:func:`_client_for`): one server (``redis://``, ``rediss://``,
``unix://``); Sentinel, through redis-py's ``Sentinel.master_for``, which
asks the sentinels for the master on every new connection and so follows a
failover by itself; Cluster, through redis-py's ``RedisCluster``, whose
change subscription is on one node picked at random (a classic PUBLISH
reaches every node).
``delete_token`` is one call per slot: a script on the token's hash (which
also publishes the notice), then SREM from the owner's set.

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
import random
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.maint_notifications import MaintNotificationsConfig

from patgate.errors import (
    ConflictError,
    NotFoundError,
    StoreUnavailableError,
    UsageError,
)
from patgate.events import WEBHOOK_LEASE, Delivery, DeliveryAttempt
from patgate.models import (
    MAX_LAST_IPS,
    MAX_OBSERVED,
    Change,
    ChangeKind,
    ExpiryModel,
    Observed,
    SeenIp,
    TokenGrant,
    TokenRecord,
    TokenStatus,
    Usage,
    UsageNews,
    User,
)
from patgate.store.base import TOKEN_SETTINGS, RateVerdict
from patgate.storeurl import (
    CLUSTER,
    SENTINEL,
    RedisUrl,
    StoreUrlError,
    hide_password,
    is_true,
    parse_redis_url,
)

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
# How long close() waits for running changes() iterators to end.
CLOSE_WAIT = 5.0
USAGE_BATCH = 500

# KEYS: the new hash. ARGV: its field/value pairs.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: a user, the set of the user's token ids (one slot). ARGV: a token id.
_LIST_UNDER_USER = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
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

# KEYS: the token, its observed hash. ARGV: channel, notice. Answers the
# deleted hash (flat), empty if there was none; the caller then takes the id
# out of its owner's set (another slot on a Cluster), which lists ignore if
# it fails first.
_DELETE = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return fields end
redis.call('DEL', KEYS[1], KEYS[2])
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


# KEYS: one token. ARGV: the new addresses (JSON [[ip, first, last]...]),
# how many to keep. Runs before the usage write of the same flush, so a
# token without last_used_at was never used. Answers false for an unknown
# token, else {owner, '1' if first use else '0', each new address...}.
_RECORD_IPS = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return false end
local first = redis.call('HEXISTS', KEYS[1], 'last_used_at') == 0
local reply = {owner, first and '1' or '0'}
local new = cjson.decode(ARGV[1])
if #new == 0 then return reply end
local seen = {}
local raw = redis.call('HGET', KEYS[1], 'last_ips')
if raw then seen = cjson.decode(raw) end
local index = {}
for _, item in ipairs(seen) do index[item[1]] = item end
for _, item in ipairs(new) do
    local known = index[item[1]]
    if known then
        item[2] = math.min(known[2], item[2])
        item[3] = math.max(known[3], item[3])
        for i, old in ipairs(seen) do
            if old == known then table.remove(seen, i) break end
        end
    else
        table.insert(reply, item[1])
    end
    index[item[1]] = item
    table.insert(seen, item)
end
-- By last seen; a tie keeps the order above (the one seen again is later).
local position = {}
for i, item in ipairs(seen) do position[item] = i end
table.sort(seen, function(a, b)
    if a[3] ~= b[3] then return a[3] < b[3] end
    return position[a] < position[b]
end)
local keep = {}
for i = math.max(1, #seen - tonumber(ARGV[2]) + 1), #seen do
    table.insert(keep, seen[i])
end
redis.call('HSET', KEYS[1], 'last_ips', cjson.encode(keep))
return reply
"""

# KEYS: one token, its observed hash. ARGV: how many to keep, seconds to
# keep them, then JSON [[route, method, pattern, count, last seen]...].
# Skips an unknown token; drops the least recently seen beyond the limit.
_RECORD_OBSERVED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, item in ipairs(cjson.decode(ARGV[3])) do
    local field = item[1] .. '\t' .. item[2] .. '\t' .. item[3]
    local count, last = item[4], item[5]
    local raw = redis.call('HGET', KEYS[2], field)
    if raw then
        local known = cjson.decode(raw)
        count = count + known[1]
        last = math.max(last, known[2])
    end
    redis.call('HSET', KEYS[2], field, cjson.encode({count, last}))
end
local keep = tonumber(ARGV[1])
if redis.call('HLEN', KEYS[2]) > keep then
    local flat = redis.call('HGETALL', KEYS[2])
    local items = {}
    for i = 1, #flat, 2 do
        table.insert(items, {flat[i], cjson.decode(flat[i + 1])[2]})
    end
    table.sort(items, function(a, b)
        if a[2] ~= b[2] then return a[2] < b[2] end
        return a[1] < b[1]
    end)
    for i = 1, #items - keep do redis.call('HDEL', KEYS[2], items[i][1]) end
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS: due, items. ARGV: id, due time, item; repeated. A known id is kept.
_ENQUEUE = """
for i = 1, #ARGV, 3 do
    if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
        redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
    end
end
return 1
"""

# KEYS: the lease. ARGV: holder, time to live (ms).
_TAKE_LEASE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: due, items. ARGV: now, limit.
_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(ids))
"""

# KEYS: lease, due, items, log. ARGV: holder, delivery id, attempt (JSON),
# retry time or '', log size.
_FINISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local raw = redis.call('HGET', KEYS[3], ARGV[2])
if not raw then return 0 end
redis.call('LPUSH', KEYS[4], ARGV[3])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[5]) - 1)
if ARGV[4] == '' then
    redis.call('HDEL', KEYS[3], ARGV[2])
    redis.call('ZREM', KEYS[2], ARGV[2])
    return 1
end
local item = cjson.decode(raw)
item[6] = tonumber(ARGV[4])
item[7] = item[7] + 1
redis.call('HSET', KEYS[3], ARGV[2], cjson.encode(item))
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
return 1
"""

OUTBOX = f"{KEY_PREFIX}{{outbox}}"
OUTBOX_DUE = f"{OUTBOX}:due"
OUTBOX_ITEMS = f"{OUTBOX}:items"
OUTBOX_LOG = f"{OUTBOX}:log"
DELIVERY_LOG_SIZE = 1000


def lease_key(name: str) -> str:
    return f"{OUTBOX}:lease:{name}"


def token_key(token_id: str) -> str:
    return f"{KEY_PREFIX}t:{{{token_id}}}"


_USER_KEY_HEAD = f"{KEY_PREFIX}u:{{"
_USER_KEY_TAIL = "}"


def observed_key(token_id: str) -> str:
    """The observed requests of a token (its hash tag: the token's slot)."""
    return f"{token_key(token_id)}:observed"


# An observed hash outlives its last write by this long (seconds).
OBSERVED_TTL = 90 * 86400


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

    ``client`` must decode responses (``decode_responses=True``); a
    RedisCluster client makes the store keep to one slot per call.
    ``secrets`` are strings never to show in a message (the passwords).
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        url_for_display: str,
        secrets: Sequence[str] = (),
        liveness_interval: float = LIVENESS_INTERVAL,
        also_close: Sequence[Redis] = (),
        node_options: Mapping[str, Any] | None = None,
        startup_hosts: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.url_for_display = url_for_display
        self._liveness_interval = liveness_interval
        self._label = f"redis store {url_for_display.partition('://')[2]}"
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self._secrets = tuple(secret for secret in secrets if secret)
        self._also_close = tuple(also_close)
        # How to connect to one node of a Cluster (its change subscription).
        self._node_options = dict(node_options or {})
        self._startup_hosts = tuple(startup_hosts)
        self._closed = False
        # Running changes() iterators; close() lets them end first, since a
        # pool closed under a subscription makes redis-py reconnect it.
        self._subscriptions = 0
        self._no_subscriptions = asyncio.Event()
        self._no_subscriptions.set()
        self._create = client.register_script(_CREATE)
        self._list_under_user = client.register_script(_LIST_UNDER_USER)
        self._replace = client.register_script(_REPLACE)
        self._delete = client.register_script(_DELETE)
        self._resolve = client.register_script(_RESOLVE)
        self._record_usage = client.register_script(_RECORD_USAGE)
        self._take_rate = client.register_script(_TAKE_RATE)
        self._record_ips = client.register_script(_RECORD_IPS)
        self._record_observed = client.register_script(_RECORD_OBSERVED)
        self._enqueue = client.register_script(_ENQUEUE)
        self._take_lease = client.register_script(_TAKE_LEASE)
        self._due = client.register_script(_DUE)
        self._finish = client.register_script(_FINISH)

    @classmethod
    def from_url(
        cls, url: str, *, liveness_interval: float = LIVENESS_INTERVAL
    ) -> RedisStore:
        """Any Redis store URL of :mod:`patgate.storeurl`: plain, TLS, Unix
        socket, Sentinel or Cluster.

        Options in the URL's query (``?socket_timeout=5``) override the defaults.
        """
        display = hide_password(url)
        try:
            parsed = parse_redis_url(url)
            client, sentinels = _client_for(url, parsed)
            node_options = {
                **_client_options(parsed),
                "username": parsed.username,
                "password": parsed.password,
            }
        except (StoreUrlError, ValueError) as err:
            reason = str(err)
            for secret in _secrets_of(url):
                reason = reason.replace(secret, "***")
            raise UsageError(f"invalid Redis store URL {display}: {reason}") from None
        return cls(
            client,
            url_for_display=display,
            secrets=_secrets_of(url),
            liveness_interval=liveness_interval,
            also_close=sentinels,
            node_options=node_options,
            startup_hosts=parsed.hosts,
        )

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
        except (RedisError, RedisClusterException, OSError) as err:
            # RedisClusterException (no Cluster node answers) is no RedisError.
            reason = str(err) or type(err).__name__
            for secret in self._secrets:
                # SECURITY: never let a password from the URL into a message.
                reason = reason.replace(secret, "***")
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
        if self._subscriptions:
            # Each ends within a LISTEN_TICK, as it sees _closed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_subscriptions.wait(), 4 * LISTEN_TICK)
        for client in (self._client, *self._also_close):
            await _close_quietly(client)

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
            # The list of logins first: it may name a user not (yet) created,
            # which readers skip, but never misses one that exists. One slot
            # per call (Redis Cluster).
            await self._client.sadd(USERS_KEY, user.login)
            created = await self._create(
                keys=[user_key(user.login)], args=_flatten(fields)
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
            # Users are never deleted, so once the owner is checked (in the
            # owner's slot, together with listing the id under it) the token
            # can be written in its own slot. A listed id whose token does
            # not exist, or belongs to someone else, is skipped by readers.
            listed = await self._list_under_user(
                keys=[user_key(record.owner), user_tokens_key(record.owner)],
                args=[record.id],
            )
            if listed == 0:
                raise NotFoundError(f"no user {record.owner!r}")
            created = await self._create(
                keys=[token_key(record.id)], args=_flatten(fields)
            )
        if created == 0:
            raise ConflictError(f"token {record.id!r} already exists")

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
            found = await self._hgetall_many([token_key(tid) for tid in set(ids)])
        records = [
            _token_from_fields(fields)
            for fields in found
            if fields and (owner is None or fields["owner"] == owner)
        ]
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
                keys=[token_key(token_id), observed_key(token_id)],
                args=[CHANGES_CHANNEL, notice.encode()],
            )
            if not flat:
                return None
            record = _token_from_fields(_pairs(flat))
            await self._client.srem(user_tokens_key(record.owner), token_id)
        return record

    async def resolve(self, token_id: str) -> TokenGrant | None:
        if self._cluster:
            return await self._resolve_in_two(token_id)
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

    async def _resolve_in_two(self, token_id: str) -> TokenGrant | None:
        """resolve on a Cluster: the token and its owner live in two slots.

        Two reads, not one snapshot; each is the record as it is now, and a
        change between them is announced by its notice like any other.
        """
        with self._errors():
            token_fields = _text(await self._client.hgetall(token_key(token_id)))
            if not token_fields:
                return None
            owner_fields = _text(
                await self._client.hgetall(user_key(token_fields["owner"]))
            )
        if not owner_fields:
            return None
        return TokenGrant(
            token=_token_from_fields(token_fields),
            owner=_user_from_fields(owner_fields),
        )

    async def record_usage(self, usages: Sequence[Usage]) -> list[UsageNews]:
        if not usages:
            return []
        news = await self._record_ips_of(usages)
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
            keys = [token_key(usage.token_id) for usage in batch]
            calls += self._one_slot_calls(keys, args, per_key=5)
        with self._errors():
            await self._evalsha_pipelined(self._record_usage, calls)
        return news

    async def _record_ips_of(self, usages: Sequence[Usage]) -> list[UsageNews]:
        """Merge the new addresses, one script per token (one slot each)."""
        calls = [
            (
                [token_key(usage.token_id)],
                [json.dumps([s.to_list() for s in usage.ips]), str(MAX_LAST_IPS)],
            )
            for usage in usages
        ]
        with self._errors():
            replies = await self._evalsha_pipelined(self._record_ips, calls)
        news: list[UsageNews] = []
        for usage, reply in zip(usages, replies, strict=True):
            if not reply:
                continue
            owner, first, *fresh = reply
            if first == "1":
                news.append(UsageNews(usage.token_id, owner, "first_use", usage.ip))
            news += [UsageNews(usage.token_id, owner, "new_ip", ip) for ip in fresh]
        return news

    async def record_observed(self, usages: Sequence[Usage]) -> None:
        calls = [
            (
                [token_key(usage.token_id), observed_key(usage.token_id)],
                [
                    str(MAX_OBSERVED),
                    str(OBSERVED_TTL),
                    json.dumps([seen.to_list() for seen in usage.observed]),
                ],
            )
            for usage in usages
            if usage.observed
        ]
        if not calls:
            return
        with self._errors():
            await self._evalsha_pipelined(self._record_observed, calls)

    async def observed(self, token_id: str) -> list[Observed]:
        with self._errors():
            fields = _text(await self._client.hgetall(observed_key(token_id)))
        found = []
        for field, raw in fields.items():
            route, method, pattern = field.split("\t", 2)
            count, last_seen = json.loads(raw)
            found.append(Observed(route, method, pattern, int(count), float(last_seen)))
        return sorted(found, key=lambda s: (s.last_seen, s.key))

    # the webhook outbox

    async def enqueue_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        args: list[str] = []
        for delivery in deliveries:
            args += [delivery.id, repr(delivery.next_at), delivery.to_json()]
        with self._errors():
            await self._enqueue(keys=[OUTBOX_DUE, OUTBOX_ITEMS], args=args)

    async def take_lease(self, name: str, holder: str, ttl: float, now: float) -> bool:
        with self._errors():
            taken = await self._take_lease(
                keys=[lease_key(name)], args=[holder, max(1, int(ttl * 1000))]
            )
        return bool(taken)

    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        with self._errors():
            items = await self._due(
                keys=[OUTBOX_DUE, OUTBOX_ITEMS], args=[repr(now), limit]
            )
        return [Delivery.from_json(item) for item in items if item]

    async def finish_delivery(
        self, attempt: DeliveryAttempt, retry_at: float | None, holder: str
    ) -> bool:
        args = [
            holder,
            attempt.delivery_id,
            attempt.to_json(),
            "" if retry_at is None else repr(retry_at),
            str(DELIVERY_LOG_SIZE),
        ]
        keys = [lease_key(WEBHOOK_LEASE), OUTBOX_DUE, OUTBOX_ITEMS, OUTBOX_LOG]
        with self._errors():
            done = await self._finish(keys=keys, args=args)
        return bool(done)

    async def delivery_log(self, limit: int = 100) -> list[DeliveryAttempt]:
        with self._errors():
            items = _texts(await self._client.lrange(OUTBOX_LOG, 0, limit - 1))
        return [DeliveryAttempt.from_json(item) for item in items]

    async def changes(self) -> AsyncIterator[Change]:
        try:
            async with self._subscription() as pubsub:
                with self._errors():
                    await pubsub.subscribe(CHANGES_CHANNEL)
                async for message in self._messages(pubsub):
                    if message["type"] == "subscribe":
                        yield Change(ChangeKind.LISTENING, "")
                    elif message["type"] == "message":
                        change = Change.decode(message["data"])
                        if change is not None:
                            yield change
        except StoreUnavailableError:
            if self._closed:
                return
            raise

    @contextlib.asynccontextmanager
    async def _subscription(self) -> AsyncIterator[PubSub]:
        """A PubSub of its own (on a Cluster, on a node client of its own),
        closed after, and counted for close()."""
        node: Redis | None = None
        self._subscriptions += 1
        self._no_subscriptions.clear()
        try:
            with self._errors():
                node = await self._subscription_client()
            pubsub = (node or self._client).pubsub()
            try:
                yield pubsub
            finally:
                await _close_quietly(pubsub)
        finally:
            try:
                if node is not None:
                    await _close_quietly(node)
            finally:
                self._subscriptions -= 1
                if not self._subscriptions:
                    self._no_subscriptions.set()

    async def _subscription_client(self) -> Redis | None:
        """On a Cluster, a client of one node to subscribe on; else None.

        A Cluster passes a classic PUBLISH to every node, so any node (a
        replica too) hears every notice. Each subscription picks one at
        random among the nodes the cluster client knows (the URL's until it
        has loaded the slot map: this does not load it), so after a node is
        lost the next attempt lands on another.
        """
        if not isinstance(self._client, RedisCluster):
            return None
        if self._client.nodes_manager.default_node is not None:
            hosts = [(node.host, int(node.port)) for node in self._client.get_nodes()]
        else:
            hosts = list(self._startup_hosts)
        host, port = random.choice(hosts)  # noqa: S311 - not a secret
        return Redis(host=host, port=port, **self._node_options)

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

    def _one_slot_calls(
        self, keys: list[str], args: list[str], *, per_key: int
    ) -> list[tuple[list[str], list[str]]]:
        """One script call for ``keys`` (each with ``per_key`` arguments), or
        on a Cluster one call per hash slot among them."""
        if not self._cluster:
            return [(keys, args)]
        by_slot: dict[int, tuple[list[str], list[str]]] = {}
        for index, key in enumerate(keys):
            slot_keys, slot_args = by_slot.setdefault(key_slot(key.encode()), ([], []))
            slot_keys.append(key)
            slot_args += args[index * per_key : (index + 1) * per_key]
        return list(by_slot.values())

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
    ) -> list[Any]:
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
                replies: list[Any] = await pipe.execute()
                return replies
            except NoScriptError:
                if attempt:
                    raise
                await self._client.script_load(script.script)
        return []  # not reached: the second NoScriptError is raised

    async def _messages(self, pubsub: PubSub) -> AsyncIterator[dict[str, Any]]:
        """Every message on ``pubsub`` (subscribe confirmations too), until close().

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
                yield message
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


async def _close_quietly(closable: Redis | RedisCluster | PubSub) -> None:
    with contextlib.suppress(RedisError, RedisClusterException, OSError):
        await closable.aclose()


def _secrets_of(url: str) -> list[str]:
    """The passwords in ``url`` (percent-decoded, as the driver has them)."""
    try:
        parsed = parse_redis_url(url)
    except StoreUrlError:
        return []
    found = [parsed.password or "", parsed.options.get("sentinel_password", "")]
    return [secret for secret in found if secret]


def _client_options(parsed: RedisUrl) -> dict[str, Any]:
    """The connection settings every kind of Redis client gets."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        # No driver retries: a dead Redis must be reported fast (the
        # gateway answers 503 and serves from its cache meanwhile), and
        # a blind retry could apply a create or a count twice.
        "retry": Retry(NoBackoff(), 0),
        # With these on ("auto", the default) redis-py skips its check
        # for pooled connections the server closed, so after a Redis
        # restart every idle connection failed one call (a 503).
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        # No client_name: CLIENT SETNAME is one more command a
        # least-privilege ACL user would need (docs/redis.md).
    }
    for name, value in parsed.options.items():
        if name in ("socket_timeout", "socket_connect_timeout"):
            options[name] = float(value)
        elif name in ("health_check_interval", "max_connections"):
            options[name] = int(value)
        elif name == "socket_keepalive":
            options[name] = is_true(value)
    return options


def _client_for(url: str, parsed: RedisUrl) -> tuple[Redis | RedisCluster, list[Redis]]:
    """The client for ``parsed``, and for Sentinel the clients of the sentinels
    (the store closes them too)."""
    options = _client_options(parsed)
    if parsed.scheme == SENTINEL:
        sentinel_options = {
            name: options[name] for name in ("socket_connect_timeout", "socket_timeout")
        }
        sentinel_options["password"] = parsed.options.get("sentinel_password")
        sentinel_options["decode_responses"] = True
        sentinel = Sentinel(
            list(parsed.hosts),
            sentinel_kwargs=sentinel_options,
            username=parsed.username,
            password=parsed.password,
            db=parsed.db,
            **options,
        )
        assert parsed.service is not None  # parse_redis_url checks it
        master: Redis = sentinel.master_for(parsed.service, redis_class=Redis)
        return master, list(sentinel.sentinels)
    if parsed.scheme == CLUSTER:
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in parsed.hosts],
            username=parsed.username,
            password=parsed.password,
            # A master lost takes its slots away; the others keep serving.
            require_full_coverage=False,
            **options,
        )
        return cluster, []
    # Plain, TLS or Unix socket: redis-py reads the URL itself.
    return Redis.from_url(url, **options), []


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
        "canary": "1" if record.canary else "0",
        "retired_hashes": json.dumps([h.hex() for h in record.retired_hashes]),
        "activate_on_use": "1" if record.activate_on_use else "0",
        "last_ips": json.dumps([seen.to_list() for seen in record.last_ips]),
        "observe_until": _optional(record.observe_until),
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
        canary=fields.get("canary") == "1",
        retired_hashes=tuple(
            bytes.fromhex(h) for h in json.loads(fields.get("retired_hashes", "[]"))
        ),
        activate_on_use=fields.get("activate_on_use") == "1",
        last_ips=_seen_ips(fields.get("last_ips")),
        observe_until=number("observe_until"),
    )


def _seen_ips(raw: str | None) -> tuple[SeenIp, ...]:
    # cjson writes an empty list as {}.
    items = json.loads(raw) if raw else []
    return tuple(SeenIp.from_list(item) for item in items or ())
