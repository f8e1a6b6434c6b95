"""The embedded store: users, tokens and a change log in one SQLite file.

Owns the schema (versioned with ``PRAGMA user_version`` and a migration list),
the change log that gateways poll, and the translation of sqlite3 errors into
``StoreUnavailableError``.

Several processes share one file: the CLI writes, gateways read. Every
``update_token``/``delete_token``/``update_user`` inserts a ``changes`` row in
the same transaction, and :meth:`SQLiteStore.changes` polls for rows newer than
the last one it saw, so an edit made anywhere on the machine reaches every
gateway within ``poll_interval`` (SPEC.md: within 1 s). Writers prune rows
older than ``change_retention``.

All sqlite3 calls run on one worker thread per store, which opens and owns the
connection: the event loop never waits on the disk and the connection never
crosses threads. Writes are ``BEGIN IMMEDIATE`` transactions, so two processes
writing at once queue on the busy timeout instead of failing half-way.

Rate limits are counted in the ``rates`` table, so every process on the
machine shares them: one small write transaction per hit (ends of windows
are pruned about once a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

from patgate.errors import (
    ConflictError,
    NotFoundError,
    StoreUnavailableError,
    UsageError,
)
from patgate.events import WEBHOOK_LEASE, Delivery, DeliveryAttempt
from patgate.models import (
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
    merge_seen,
)
from patgate.store.base import TOKEN_SETTINGS, RateVerdict

P = ParamSpec("P")
T = TypeVar("T")

# Each migration is a list of statements run in one transaction; its position
# (1-based) is the schema version it produces. Append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE users (
            login TEXT PRIMARY KEY,
            password_hash TEXT,
            scopes TEXT NOT NULL,
            admin INTEGER NOT NULL,
            disabled INTEGER NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL REFERENCES users (login),
            token_hash BLOB NOT NULL,
            name TEXT NOT NULL,
            scopes TEXT NOT NULL,
            project TEXT,
            expiry TEXT NOT NULL,
            expires_at REAL,
            sliding_window INTEGER,
            max_lifetime INTEGER,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            updated_at REAL NOT NULL,
            last_used_at REAL,
            last_used_ip TEXT,
            use_count INTEGER NOT NULL DEFAULT 0,
            allowed_cidrs TEXT NOT NULL,
            rate_limit INTEGER,
            status TEXT NOT NULL,
            previous_hash BLOB,
            previous_hash_until REAL
        )""",
        "CREATE INDEX tokens_by_owner ON tokens (owner, created_at)",
        """CREATE TABLE changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            at REAL NOT NULL
        )""",
    ),
    (
        """CREATE TABLE settings (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
    ),
    (
        # Bumped by every update_token; usage writes check it (models.Usage).
        "ALTER TABLE tokens ADD COLUMN version INTEGER NOT NULL DEFAULT 0",
        # One fixed-window counter per (key, window), shared by every process.
        """CREATE TABLE rates (
            key TEXT NOT NULL,
            window INTEGER NOT NULL,
            ends INTEGER NOT NULL,
            hits INTEGER NOT NULL,
            PRIMARY KEY (key, window)
        ) WITHOUT ROWID""",
        "CREATE INDEX rates_by_end ON rates (ends)",
    ),
    # 4: page sessions ended by a logout, kept until they would have expired.
    (
        """CREATE TABLE revoked_sessions (
            id TEXT PRIMARY KEY,
            expires_at REAL NOT NULL
        )""",
    ),
    # 5: canaries, rotation families, last addresses; the webhook outbox.
    (
        "ALTER TABLE tokens ADD COLUMN canary INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tokens ADD COLUMN retired_hashes TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE tokens ADD COLUMN activate_on_use INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tokens ADD COLUMN last_ips TEXT NOT NULL DEFAULT '[]'",
        """CREATE TABLE outbox (
            id TEXT PRIMARY KEY,
            next_at REAL NOT NULL,
            item TEXT NOT NULL
        )""",
        "CREATE INDEX outbox_by_due ON outbox (next_at)",
        """CREATE TABLE delivery_log (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            item TEXT NOT NULL
        )""",
        """CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at REAL NOT NULL
        )""",
    ),
    # 6: observed tokens: until when, and what they were used for.
    (
        "ALTER TABLE tokens ADD COLUMN observe_until REAL",
        """CREATE TABLE observed (
            token_id TEXT NOT NULL,
            route TEXT NOT NULL,
            method TEXT NOT NULL,
            pattern TEXT NOT NULL,
            count INTEGER NOT NULL,
            last_seen REAL NOT NULL,
            PRIMARY KEY (token_id, route, method, pattern)
        ) WITHOUT ROWID""",
        """CREATE TRIGGER observed_of_deleted_token AFTER DELETE ON tokens
        BEGIN DELETE FROM observed WHERE token_id = old.id; END""",
    ),
)
# The delivery log keeps this many attempts.
DELIVERY_LOG_SIZE = 1000

USER_COLUMNS = (
    "login",
    "password_hash",
    "scopes",
    "admin",
    "disabled",
    "created_at",
    "updated_at",
)
TOKEN_COLUMNS = (
    "id",
    "owner",
    "token_hash",
    "name",
    "scopes",
    "project",
    "expiry",
    "expires_at",
    "sliding_window",
    "max_lifetime",
    "created_at",
    "created_by",
    "updated_at",
    "last_used_at",
    "last_used_ip",
    "use_count",
    "allowed_cidrs",
    "rate_limit",
    "status",
    "previous_hash",
    "previous_hash_until",
    "version",
    "canary",
    "retired_hashes",
    "activate_on_use",
    "last_ips",
    "observe_until",
)

_SELECT_TOKEN = f"SELECT {', '.join(TOKEN_COLUMNS)} FROM tokens"  # noqa: S608
_SELECT_USER = f"SELECT {', '.join(USER_COLUMNS)} FROM users"  # noqa: S608
_SELECT_GRANT = (
    f"SELECT {', '.join('t.' + c for c in TOKEN_COLUMNS)},"  # noqa: S608
    f" {', '.join('u.' + c for c in USER_COLUMNS)}"
    " FROM tokens AS t JOIN users AS u ON u.login = t.owner WHERE t.id = ?"
)
_INSERT_TOKEN = (
    f"INSERT INTO tokens ({', '.join(TOKEN_COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join(':' + c for c in TOKEN_COLUMNS)})"
)
_INSERT_USER = (
    f"INSERT INTO users ({', '.join(USER_COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join(':' + c for c in USER_COLUMNS)})"
)
_UPDATE_TOKEN = (
    f"UPDATE tokens SET {', '.join(f'{c} = :{c}' for c in TOKEN_SETTINGS)}"  # noqa: S608
    ", version = version + 1 WHERE id = :id"
)
_UPDATE_USER = (
    f"UPDATE users SET {', '.join(f'{c} = :{c}' for c in USER_COLUMNS[1:])}"  # noqa: S608
    " WHERE login = :login"
)
# SET expressions all see the row as it was, so last_used_ip is decided on the
# old last_used_at. A NULL expires_at (never expires) is never given an end,
# and the expiry moves only if no management write came since the version
# the move was computed from (SECURITY: a shortened expiry stays short).
_RECORD_USAGE = """
UPDATE tokens SET
    use_count = use_count + :count,
    last_used_ip = CASE WHEN last_used_at IS NULL OR last_used_at < :used_at
        THEN coalesce(:ip, last_used_ip) ELSE last_used_ip END,
    last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < :used_at
        THEN :used_at ELSE last_used_at END,
    expires_at = CASE WHEN :expires_at IS NOT NULL AND expires_at < :expires_at
        AND version = :version THEN :expires_at ELSE expires_at END
WHERE id = :id
"""

# One hit on the counter of (key, window); a later window starts again at 1.
# ``max`` keeps the window of the process whose clock is furthest on.
_TAKE_RATE = """
INSERT INTO rates (key, window, ends, hits) VALUES (:key, :window, :ends, 1)
ON CONFLICT (key, window) DO UPDATE SET
    hits = CASE WHEN excluded.ends > ends THEN 1 ELSE hits + 1 END,
    ends = max(ends, excluded.ends)
RETURNING hits, ends
"""
# How often (seconds of the callers' clock) one process deletes ended windows.
RATE_PRUNE_INTERVAL = 60.0


class SQLiteStore:
    """The Store protocol on one SQLite file (WAL), safe to share between processes.

    ``poll_interval`` is how often :meth:`changes` looks for new change rows;
    ``busy_timeout`` how long a statement waits for another process's lock
    before the store is reported unavailable.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        poll_interval: float = 0.2,
        busy_timeout: float = 5.0,
        change_retention: float = 300.0,
    ) -> None:
        self.path = Path(path)
        self.url_for_display = f"sqlite:///{path}"
        self._label = f"sqlite store {self.path.absolute()}"
        self._poll_interval = poll_interval
        self._busy_timeout = busy_timeout
        self._change_retention = change_retention
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="patgate-sqlite"
        )
        self._conn: sqlite3.Connection | None = None  # worker thread only
        self._last_prune = 0.0  # worker thread only
        self._last_rate_prune = float("-inf")  # worker thread only
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: float) -> SQLiteStore:
        """``sqlite:///relative/patgate.db`` or ``sqlite:////absolute/patgate.db``."""
        parts = urlsplit(url)
        path = unquote(parts.path[1:])
        if parts.scheme != "sqlite" or parts.netloc or parts.query or not path:
            raise UsageError(
                f"invalid SQLite store URL {url!r}: expected sqlite:///relative.db"
                " or sqlite:////absolute/path.db"
            )
        return cls(path, **options)

    # plumbing

    async def _run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(connection, ...)`` on the worker thread."""
        if self._closed:
            raise StoreUnavailableError(f"{self._label}: closed")
        loop = asyncio.get_running_loop()
        try:
            job = loop.run_in_executor(
                self._executor, lambda: self._call(fn, *args, **kwargs)
            )
        except RuntimeError as err:  # the executor was shut down by close()
            raise StoreUnavailableError(f"{self._label}: closed") from err
        return await job

    async def _write(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn`` in one write transaction: all of it is stored or none."""
        return await self._run(_in_transaction, fn, *args, **kwargs)

    def _call(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        try:
            return fn(self._connection(), *args, **kwargs)
        except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise  # a bug in this module, not an unusable store
        except sqlite3.Error as err:
            # Start the next call on a fresh connection; the file is untouched
            # (the failed transaction was rolled back).
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None
            raise StoreUnavailableError(f"{self._label}: {err}") from err

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        directory = self.path.absolute().parent
        if not directory.is_dir():
            raise StoreUnavailableError(
                f"{self._label}: directory {directory} does not exist"
            )
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None
        )
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            self._enable_wal(conn)
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL once; it stays so for every later connection.

        The switch needs the file to itself and does not wait on the busy
        handler, so two processes opening a new file at once retry here.
        """
        deadline = time.monotonic() + self._busy_timeout
        while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if _schema_version(conn) == len(MIGRATIONS):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _schema_version(conn)  # another process may have migrated
            if version > len(MIGRATIONS):
                raise StoreUnavailableError(
                    f"{self._label}: schema version {version} is newer than this"
                    f" patgate knows ({len(MIGRATIONS)}); upgrade patgate"
                )
            for number in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[number]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _note_change(self, conn: sqlite3.Connection, change: Change) -> None:
        now = time.time()
        conn.execute(
            "INSERT INTO changes (kind, key, at) VALUES (?, ?, ?)",
            (change.kind.value, change.key, now),
        )
        if now - self._last_prune > self._change_retention / 2:
            conn.execute(
                "DELETE FROM changes WHERE at < ?", (now - self._change_retention,)
            )
            self._last_prune = now

    # the Store protocol

    async def ping(self) -> None:
        await self._run(_fetch, "SELECT 1")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def close_connection() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        with contextlib.suppress(sqlite3.Error):
            await loop.run_in_executor(self._executor, close_connection)
        self._executor.shutdown(wait=False)

    async def get_setting(self, name: str) -> str | None:
        rows = await self._run(
            _fetch, "SELECT value FROM settings WHERE name = ?", name
        )
        return str(rows[0][0]) if rows else None

    async def claim_setting(self, name: str, value: str) -> str:
        return await self._write(_claim_setting, name, value)

    async def create_user(self, user: User) -> None:
        await self._write(self._create_user, user)

    def _create_user(self, conn: sqlite3.Connection, user: User) -> None:
        if _exists(conn, "SELECT 1 FROM users WHERE login = ?", user.login):
            raise ConflictError(f"user {user.login!r} already exists")
        conn.execute(_INSERT_USER, _user_row(user))

    async def get_user(self, login: str) -> User | None:
        rows = await self._run(_fetch, f"{_SELECT_USER} WHERE login = ?", login)
        return _user_from_row(rows[0]) if rows else None

    async def list_users(self) -> list[User]:
        rows = await self._run(_fetch, f"{_SELECT_USER} ORDER BY login")
        return [_user_from_row(row) for row in rows]

    async def update_user(self, user: User) -> None:
        await self._write(self._update_user, user)

    def _update_user(self, conn: sqlite3.Connection, user: User) -> None:
        if conn.execute(_UPDATE_USER, _user_row(user)).rowcount == 0:
            raise NotFoundError(f"no user {user.login!r}")
        self._note_change(conn, Change(ChangeKind.USER, user.login))

    async def create_token(self, record: TokenRecord) -> None:
        await self._write(self._create_token, record)

    def _create_token(self, conn: sqlite3.Connection, record: TokenRecord) -> None:
        if _exists(conn, "SELECT 1 FROM tokens WHERE id = ?", record.id):
            raise ConflictError(f"token {record.id!r} already exists")
        if not _exists(conn, "SELECT 1 FROM users WHERE login = ?", record.owner):
            raise NotFoundError(f"no user {record.owner!r}")
        conn.execute(_INSERT_TOKEN, _token_row(record))

    async def get_token(self, token_id: str) -> TokenRecord | None:
        rows = await self._run(_fetch, f"{_SELECT_TOKEN} WHERE id = ?", token_id)
        return _token_from_row(rows[0]) if rows else None

    async def list_tokens(self, owner: str | None = None) -> list[TokenRecord]:
        if owner is None:
            rows = await self._run(_fetch, f"{_SELECT_TOKEN} ORDER BY created_at, id")
        else:
            rows = await self._run(
                _fetch,
                f"{_SELECT_TOKEN} WHERE owner = ? ORDER BY created_at, id",
                owner,
            )
        return [_token_from_row(row) for row in rows]

    async def update_token(self, record: TokenRecord) -> None:
        await self._write(self._update_token, record)

    def _update_token(self, conn: sqlite3.Connection, record: TokenRecord) -> None:
        row = _token_row(record)
        settings = {column: row[column] for column in ("id", *TOKEN_SETTINGS)}
        if conn.execute(_UPDATE_TOKEN, settings).rowcount == 0:
            raise NotFoundError(f"no token {record.id!r}")
        self._note_change(conn, Change(ChangeKind.TOKEN, record.id))

    async def delete_token(self, token_id: str) -> TokenRecord | None:
        return await self._write(self._delete_token, token_id)

    def _delete_token(
        self, conn: sqlite3.Connection, token_id: str
    ) -> TokenRecord | None:
        rows = _fetch(conn, f"{_SELECT_TOKEN} WHERE id = ?", token_id)
        if not rows:
            return None
        conn.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
        self._note_change(conn, Change(ChangeKind.TOKEN, token_id))
        return _token_from_row(rows[0])

    async def resolve(self, token_id: str) -> TokenGrant | None:
        rows = await self._run(_fetch, _SELECT_GRANT, token_id)
        if not rows:
            return None
        split = len(TOKEN_COLUMNS)
        return TokenGrant(
            token=_token_from_row(rows[0][:split]),
            owner=_user_from_row(rows[0][split:]),
        )

    async def record_usage(self, usages: Sequence[Usage]) -> list[UsageNews]:
        if not usages:
            return []
        params = [
            {
                "id": usage.token_id,
                "count": usage.count,
                "used_at": usage.used_at,
                "ip": usage.ip,
                "expires_at": usage.expires_at,
                "version": usage.version,
            }
            for usage in usages
        ]
        return await self._write(_record_usage, params, usages)

    async def record_observed(self, usages: Sequence[Usage]) -> None:
        batch = [usage for usage in usages if usage.observed]
        if batch:
            await self._write(_record_observed, batch)

    async def observed(self, token_id: str) -> list[Observed]:
        rows = await self._run(
            _fetch,
            "SELECT route, method, pattern, count, last_seen FROM observed"
            " WHERE token_id = ? ORDER BY last_seen, route, method, pattern",
            token_id,
        )
        return [Observed.from_list(list(row)) for row in rows]

    async def enqueue_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            await self._write(_enqueue, deliveries)

    async def take_lease(self, name: str, holder: str, ttl: float, now: float) -> bool:
        return await self._write(_take_lease, name, holder, ttl, now)

    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        rows = await self._run(
            _fetch,
            "SELECT item FROM outbox WHERE next_at <= ? ORDER BY next_at LIMIT ?",
            now,
            limit,
        )
        return [Delivery.from_json(row[0]) for row in rows]

    async def finish_delivery(
        self, attempt: DeliveryAttempt, retry_at: float | None, holder: str
    ) -> bool:
        return await self._write(_finish_delivery, attempt, retry_at, holder)

    async def delivery_log(self, limit: int = 100) -> list[DeliveryAttempt]:
        rows = await self._run(
            _fetch, "SELECT item FROM delivery_log ORDER BY seq DESC LIMIT ?", limit
        )
        return [DeliveryAttempt.from_json(row[0]) for row in rows]

    async def changes(self) -> AsyncIterator[Change]:
        seen = await self._run(_last_change_seq)
        yield Change(ChangeKind.LISTENING, "")
        while True:
            await asyncio.sleep(self._poll_interval)
            if self._closed:
                return
            try:
                rows = await self._run(_changes_after, seen)
            except StoreUnavailableError:
                if self._closed:
                    return
                raise
            for seq, kind, key in rows:
                seen = seq
                change = Change.decode(f"{kind}:{key}")
                if change is not None:
                    yield change

    async def take_rate(
        self, key: str, limit: int, window: int, now: float
    ) -> RateVerdict:
        ends = (int(now // window) + 1) * window
        hits, ends = await self._run(self._take_rate, key, window, ends, now)
        if hits > limit:
            return RateVerdict(allowed=False, retry_after=ends - now)
        return RateVerdict(allowed=True)

    def _take_rate(
        self, conn: sqlite3.Connection, key: str, window: int, ends: int, now: float
    ) -> tuple[int, int]:
        """One hit in its own transaction, synced lazily.

        A counter lost to a power cut costs nothing, so this commit does not
        wait for the disk (``synchronous = NORMAL``: ~70 us instead of ~250
        us on an ext4 SSD); the next write at the connection's own setting
        syncs it with its own. WAL stays safe from corruption at NORMAL.
        """
        # Only outside a transaction may the level change.
        synchronous = int(conn.execute("PRAGMA synchronous").fetchone()[0])
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            return _in_transaction(conn, self._count_hit, key, window, ends, now)
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA synchronous = {synchronous}")

    def _count_hit(
        self, conn: sqlite3.Connection, key: str, window: int, ends: int, now: float
    ) -> tuple[int, int]:
        """The hits and end of the key's current window, this hit counted."""
        row = conn.execute(
            _TAKE_RATE, {"key": key, "window": window, "ends": ends}
        ).fetchone()
        if now - self._last_rate_prune >= RATE_PRUNE_INTERVAL:
            conn.execute("DELETE FROM rates WHERE ends <= ?", (now,))
            self._last_rate_prune = now
        return int(row[0]), int(row[1])

    async def revoke_session(self, session_id: str, expires_at: float) -> None:
        await self._write(_revoke_session, session_id, expires_at, time.time())

    async def session_revoked(self, session_id: str) -> bool:
        return await self._run(
            _exists, "SELECT 1 FROM revoked_sessions WHERE id = ?", session_id
        )


def _in_transaction(
    conn: sqlite3.Connection,
    fn: Callable[Concatenate[sqlite3.Connection, P], T],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``fn(conn, ...)`` in one write transaction: all of it is stored or none."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args, **kwargs)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return result


def _revoke_session(
    conn: sqlite3.Connection, session_id: str, expires_at: float, now: float
) -> None:
    # The ended sessions of the past are pruned here, where they are added;
    # one that has expired already needs no record.
    conn.execute("DELETE FROM revoked_sessions WHERE expires_at <= ?", (now,))
    if expires_at > now:
        conn.execute(
            "INSERT OR REPLACE INTO revoked_sessions (id, expires_at) VALUES (?, ?)",
            (session_id, expires_at),
        )


def _schema_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _exists(conn: sqlite3.Connection, sql: str, *args: Any) -> bool:
    return conn.execute(sql, args).fetchone() is not None


def _fetch(conn: sqlite3.Connection, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return conn.execute(sql, args).fetchall()


def _last_change_seq(conn: sqlite3.Connection) -> int:
    seq: int | None = conn.execute("SELECT max(seq) FROM changes").fetchone()[0]
    return seq or 0


def _changes_after(conn: sqlite3.Connection, seq: int) -> list[tuple[int, str, str]]:
    return conn.execute(
        "SELECT seq, kind, key FROM changes WHERE seq > ? ORDER BY seq", (seq,)
    ).fetchall()


def _claim_setting(conn: sqlite3.Connection, name: str, value: str) -> str:
    conn.execute(
        "INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)", (name, value)
    )
    stored = conn.execute("SELECT value FROM settings WHERE name = ?", (name,))
    return str(stored.fetchone()[0])


def _record_usage(
    conn: sqlite3.Connection, params: list[dict[str, Any]], usages: Sequence[Usage]
) -> list[UsageNews]:
    # The news first, from the rows as they were before this write.
    news: list[UsageNews] = []
    for usage in usages:
        row = conn.execute(
            "SELECT owner, last_used_at, last_ips FROM tokens WHERE id = ?",
            (usage.token_id,),
        ).fetchone()
        if row is None:
            continue
        owner, last_used_at, last_ips = row
        if last_used_at is None:
            news.append(UsageNews(usage.token_id, owner, "first_use", usage.ip))
        if not usage.ips:
            continue
        old = tuple(SeenIp.from_list(item) for item in json.loads(last_ips))
        merged, fresh = merge_seen(old, usage.ips)
        news += [UsageNews(usage.token_id, owner, "new_ip", ip) for ip in fresh]
        conn.execute(
            "UPDATE tokens SET last_ips = ? WHERE id = ?",
            (json.dumps([seen.to_list() for seen in merged]), usage.token_id),
        )
    # Not the cursor: a cursor finalised on the event loop's thread would
    # reset its statement under the worker thread's feet.
    conn.executemany(_RECORD_USAGE, params)
    return news


_MERGE_OBSERVED = """
INSERT INTO observed (token_id, route, method, pattern, count, last_seen)
SELECT :id, :route, :method, :pattern, :count, :last_seen
WHERE EXISTS (SELECT 1 FROM tokens WHERE id = :id)
ON CONFLICT (token_id, route, method, pattern) DO UPDATE SET
    count = count + excluded.count,
    last_seen = max(last_seen, excluded.last_seen)
"""
# Keep the MAX_OBSERVED most recently seen of one token.
_TRIM_OBSERVED = """
DELETE FROM observed WHERE token_id = :id AND (route, method, pattern) IN (
    SELECT route, method, pattern FROM observed WHERE token_id = :id
    ORDER BY last_seen DESC, route DESC, method DESC, pattern DESC
    LIMIT -1 OFFSET :keep
)
"""


def _record_observed(conn: sqlite3.Connection, usages: Sequence[Usage]) -> None:
    for usage in usages:
        conn.executemany(
            _MERGE_OBSERVED,
            [
                {
                    "id": usage.token_id,
                    "route": seen.route,
                    "method": seen.method,
                    "pattern": seen.pattern,
                    "count": seen.count,
                    "last_seen": seen.last_seen,
                }
                for seen in usage.observed
            ],
        )
        conn.execute(_TRIM_OBSERVED, {"id": usage.token_id, "keep": MAX_OBSERVED})


def _enqueue(conn: sqlite3.Connection, deliveries: Sequence[Delivery]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO outbox (id, next_at, item) VALUES (?, ?, ?)",
        [(d.id, d.next_at, d.to_json()) for d in deliveries],
    )


def _take_lease(
    conn: sqlite3.Connection, name: str, holder: str, ttl: float, now: float
) -> bool:
    row = conn.execute(
        "SELECT holder, expires_at FROM leases WHERE name = ?", (name,)
    ).fetchone()
    if row is not None and row[0] != holder and row[1] > now:
        return False
    conn.execute(
        "INSERT OR REPLACE INTO leases (name, holder, expires_at) VALUES (?, ?, ?)",
        (name, holder, now + ttl),
    )
    return True


def _finish_delivery(
    conn: sqlite3.Connection,
    attempt: DeliveryAttempt,
    retry_at: float | None,
    holder: str,
) -> bool:
    row = conn.execute(
        "SELECT holder FROM leases WHERE name = ?", (WEBHOOK_LEASE,)
    ).fetchone()
    if row is None or row[0] != holder:
        return False
    found = conn.execute(
        "SELECT item FROM outbox WHERE id = ?", (attempt.delivery_id,)
    ).fetchone()
    if found is None:
        return False
    conn.execute("INSERT INTO delivery_log (item) VALUES (?)", (attempt.to_json(),))
    conn.execute(
        "DELETE FROM delivery_log WHERE seq <= (SELECT max(seq) FROM delivery_log) - ?",
        (DELIVERY_LOG_SIZE,),
    )
    if retry_at is None:
        conn.execute("DELETE FROM outbox WHERE id = ?", (attempt.delivery_id,))
        return True
    delivery = Delivery.from_json(found[0])
    later = Delivery(
        delivery.id,
        delivery.event_id,
        delivery.event_type,
        delivery.url,
        delivery.body,
        retry_at,
        delivery.attempts + 1,
    )
    conn.execute(
        "UPDATE outbox SET next_at = ?, item = ? WHERE id = ?",
        (retry_at, later.to_json(), delivery.id),
    )
    return True


def _user_row(user: User) -> dict[str, Any]:
    return {
        "login": user.login,
        "password_hash": user.password_hash,
        "scopes": json.dumps(list(user.scopes)),
        "admin": int(user.admin),
        "disabled": int(user.disabled),
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def _user_from_row(row: Sequence[Any]) -> User:
    data = dict(zip(USER_COLUMNS, row, strict=True))
    data["scopes"] = tuple(json.loads(data["scopes"]))
    data["admin"] = bool(data["admin"])
    data["disabled"] = bool(data["disabled"])
    return User(**data)


def _token_row(record: TokenRecord) -> dict[str, Any]:
    row = {column: getattr(record, column) for column in TOKEN_COLUMNS}
    row["scopes"] = json.dumps(list(record.scopes))
    row["allowed_cidrs"] = json.dumps(list(record.allowed_cidrs))
    row["expiry"] = record.expiry.value
    row["status"] = record.status.value
    row["canary"] = int(record.canary)
    row["activate_on_use"] = int(record.activate_on_use)
    row["retired_hashes"] = json.dumps([h.hex() for h in record.retired_hashes])
    row["last_ips"] = json.dumps([seen.to_list() for seen in record.last_ips])
    return row


def _token_from_row(row: Sequence[Any]) -> TokenRecord:
    data = dict(zip(TOKEN_COLUMNS, row, strict=True))
    data["scopes"] = tuple(json.loads(data["scopes"]))
    data["allowed_cidrs"] = tuple(json.loads(data["allowed_cidrs"]))
    data["expiry"] = ExpiryModel(data["expiry"])
    data["status"] = TokenStatus(data["status"])
    data["canary"] = bool(data["canary"])
    data["activate_on_use"] = bool(data["activate_on_use"])
    data["retired_hashes"] = tuple(
        bytes.fromhex(h) for h in json.loads(data["retired_hashes"])
    )
    data["last_ips"] = tuple(SeenIp.from_list(i) for i in json.loads(data["last_ips"]))
    return TokenRecord(**data)
