"""raybot's state: the audit log, modal drafts, dedup keys, cluster locks, approvals, scheduled reverts, follows.

`Store` is the interface; `SqliteStore` implements it on one SQLite file (a PostgreSQL backend for
several replicas can implement the same Protocol later). SQLite is used through the stdlib driver on
ONE dedicated worker thread owned by the store: every statement runs there, so the event loop never
blocks on disk I/O or `busy_timeout`, and SQLite sees exactly one connection per store.

Several stores (processes, or replicas) may share one file: everything that must be exactly-once —
dedup claims, lock acquisition, approval and schedule decisions, outcome transitions — is a single
atomic statement (upsert or compare-and-set `UPDATE … WHERE … RETURNING`), never read-then-write.

All times come from the injected `clock` (epoch seconds), so expiry is testable without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

Outcome = Literal["pending", "done", "failed", "unknown"]
ApprovalStatus = Literal["pending", "approved", "rejected", "expired", "void", "applied"]
ScheduleStatus = Literal["scheduled", "done", "cancelled", "failed"]
FollowStatus = Literal["following", "done", "failed", "timeout", "cancelled"]

MIN_CLAIM_TTL = 600.0  # the issue: exactly-once keys live at least 10 minutes
BUSY_TIMEOUT_MS = 5000
LOCK_RECHECK_SECONDS = 0.5  # how often a waiter re-reads a lock held by another process
MAX_DRAFT_KEY = 64

# Which outcome a change may move to from which: a record is written "pending" before the cloud is
# called; "unknown" is what a restart finds, and may still be reconciled to what really happened.
_OUTCOME_SOURCES: dict[str, tuple[str, ...]] = {
    "done": ("pending", "unknown"),
    "failed": ("pending", "unknown"),
    "unknown": ("pending",),
}

T = TypeVar("T")


class StoreError(Exception):
    """The store cannot do what was asked: bad database URL, schema too new, a refused transition, I/O."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class NewChange(_Frozen):
    """A change attempt as the flow knows it before calling UpdateRayCluster."""

    user_id: str
    channel_id: str
    alias: str
    workspace: str
    cluster_id: str
    region: str
    action: str  # resize | autoscale | edit | undo | revert | start | stop
    summary: str
    team_id: str | None = None
    thread_ts: str | None = None
    root_ts: str | None = None
    spec_before: dict[str, Any] | None = None  # editable fields as read (wire form)
    body: dict[str, Any] | None = None  # the UpdateRayCluster body sent
    diff: list[dict[str, Any]] = Field(default_factory=list)  # [{"path","before","after"}]
    undo_of: int | None = None  # the change this one undoes/reverts
    approval_id: int | None = None

    @field_validator("diff", mode="before")
    @classmethod
    def _plain_diff(cls, value: Any) -> Any:
        # The planner hands DiffEntry models; the log keeps plain JSON.
        if isinstance(value, list | tuple):
            return [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        return value


class ChangeRecord(_Frozen):
    """One row of the audit log."""

    id: int
    created_at: float
    updated_at: float
    team_id: str | None
    user_id: str
    channel_id: str
    thread_ts: str | None
    root_ts: str | None
    alias: str
    workspace: str
    cluster_id: str
    region: str
    action: str
    summary: str
    spec_before: dict[str, Any] | None
    body: dict[str, Any] | None
    diff: list[dict[str, Any]]
    outcome: Outcome
    request_id: str | None
    error_code: str | None
    error_message: str | None
    undo_of: int | None = None
    approval_id: int | None = None
    finished_at: float | None = None  # when it became done or failed


class Approval(_Frozen):
    """A change waiting for (or past) a second person's decision."""

    id: int
    created_at: float
    expires_at: float
    requester_id: str
    channel_id: str
    thread_ts: str | None
    root_ts: str | None
    alias: str
    action: str
    summary: str
    request: dict[str, Any]  # whatever the flow needs to apply it later
    spec_before: dict[str, Any]
    status: ApprovalStatus
    decided_by: str | None
    decided_at: float | None
    reason: str | None


class Schedule(_Frozen):
    """A revert due at `due_at` (a temporary resize) of the change `change_id`."""

    id: int
    created_at: float
    due_at: float
    change_id: int
    alias: str
    channel_id: str
    thread_ts: str | None
    status: ScheduleStatus
    finished_at: float | None
    note: str | None


class Follow(_Frozen):
    """raybot following change `change_id` until the cluster settles (bot/follow.py), looking again at `next_at`.

    `wanted` is `bot.follow.Wanted` as JSON; `attempt` counts the looks made so far.
    """

    id: int
    change_id: int
    alias: str
    channel_id: str
    thread_ts: str | None
    root_ts: str | None
    wanted: dict[str, Any]
    started_at: float
    deadline_at: float
    next_at: float
    attempt: int
    status: FollowStatus
    last_summary: str | None
    finished_at: float | None


class LockHolder(_Frozen):
    """Who holds a cluster's lock; `holder` is the opaque token only the holder knows."""

    cluster_key: str
    holder: str
    user_id: str
    summary: str
    acquired_at: float
    expires_at: float


class LockBusy(Exception):
    """Waited for a cluster's lock and did not get it; `holder` says who has it."""

    def __init__(self, holder: LockHolder) -> None:
        self.holder = holder
        super().__init__(f"{holder.cluster_key} is locked by {holder.user_id}: {holder.summary}")


class Store(Protocol):
    """The state store raybot's flow talks to; SQLite now, PostgreSQL later."""

    async def close(self) -> None: ...

    # audit
    async def record_pending(self, change: NewChange) -> ChangeRecord: ...
    async def set_thread(self, change_id: int, *, root_ts: str, thread_ts: str) -> None: ...
    async def record_outcome(
        self,
        change_id: int,
        outcome: Outcome,
        *,
        request_id: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> ChangeRecord: ...
    async def get_change(self, change_id: int) -> ChangeRecord | None: ...
    async def pending_changes(self) -> list[ChangeRecord]: ...
    async def history(self, alias: str, limit: int = 10) -> list[ChangeRecord]: ...

    # exactly-once
    async def claim(self, key: str, *, ttl: float = MIN_CLAIM_TTL) -> bool: ...

    # locks
    async def acquire_lock(
        self, cluster_key: str, *, user_id: str, summary: str, wait: float = 5.0, ttl: float = 120.0
    ) -> str: ...
    async def release_lock(self, cluster_key: str, holder: str) -> None: ...
    async def refresh_lock(self, cluster_key: str, holder: str, *, ttl: float = 120.0) -> bool: ...

    # drafts
    async def put_draft(
        self, data: dict[str, Any], *, user_id: str, ttl: float = 3600.0, key: str | None = None
    ) -> str: ...
    async def get_draft(self, key: str) -> dict[str, Any] | None: ...
    async def delete_draft(self, key: str) -> None: ...

    # approvals
    async def create_approval(
        self,
        *,
        requester_id: str,
        channel_id: str,
        alias: str,
        action: str,
        summary: str,
        request: dict[str, Any],
        spec_before: dict[str, Any],
        expires_at: float,
        thread_ts: str | None = None,
        root_ts: str | None = None,
    ) -> Approval: ...
    async def get_approval(self, approval_id: int) -> Approval | None: ...
    async def decide_approval(
        self, approval_id: int, status: str, *, by: str | None, reason: str | None = None, expected: str = "pending"
    ) -> Approval | None: ...
    async def set_approval_message(self, approval_id: int, *, root_ts: str, thread_ts: str) -> None: ...
    async def expired_approvals(self, now: float) -> list[Approval]: ...
    async def next_approval_expiry(self) -> float | None: ...

    # scheduled reverts
    async def schedule(
        self, *, change_id: int, due_at: float, alias: str, channel_id: str, thread_ts: str | None
    ) -> Schedule: ...
    async def due_schedules(self, now: float) -> list[Schedule]: ...
    async def next_due_at(self) -> float | None: ...
    async def finish_schedule(
        self, schedule_id: int, status: str, *, note: str | None = None, expected: str = "scheduled"
    ) -> Schedule | None: ...
    async def get_schedule(self, schedule_id: int) -> Schedule | None: ...

    # following changes until the cluster settles
    async def start_follow(
        self,
        *,
        change_id: int,
        alias: str,
        channel_id: str,
        thread_ts: str | None,
        root_ts: str | None,
        wanted: dict[str, Any],
        deadline_at: float,
        next_at: float,
    ) -> Follow: ...
    async def due_follows(self, now: float) -> list[Follow]: ...
    async def next_follow_at(self) -> float | None: ...
    async def reschedule_follow(
        self, follow_id: int, *, next_at: float, attempt: int, last_summary: str | None
    ) -> None: ...
    async def finish_follow(
        self, follow_id: int, status: str, *, last_summary: str | None = None, expected: str = "following"
    ) -> Follow | None: ...
    async def get_follow(self, follow_id: int) -> Follow | None: ...

    async def purge_expired(self) -> int: ...


# --- schema -----------------------------------------------------------------------------------------

# Each migration is a sequence of statements; version N is MIGRATIONS[N - 1]. Append only: a released
# migration is never edited, because databases in the field already ran it.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE approvals (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            requester_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_ts TEXT,
            root_ts TEXT,
            alias TEXT NOT NULL,
            action TEXT NOT NULL,
            summary TEXT NOT NULL,
            request TEXT NOT NULL,
            spec_before TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending','approved','rejected','expired','void','applied')),
            decided_by TEXT,
            decided_at REAL,
            reason TEXT
        )""",
        """CREATE TABLE changes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            team_id TEXT,
            user_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_ts TEXT,
            root_ts TEXT,
            alias TEXT NOT NULL,
            workspace TEXT NOT NULL,
            cluster_id TEXT NOT NULL,
            region TEXT NOT NULL,
            action TEXT NOT NULL,
            summary TEXT NOT NULL,
            spec_before TEXT,
            body TEXT,
            diff TEXT NOT NULL,
            outcome TEXT NOT NULL CHECK (outcome IN ('pending','done','failed','unknown')),
            request_id TEXT,
            error_code TEXT,
            error_message TEXT,
            undo_of INTEGER REFERENCES changes(id),
            approval_id INTEGER REFERENCES approvals(id),
            finished_at REAL
        )""",
        "CREATE INDEX changes_by_alias ON changes (alias, created_at DESC, id DESC)",
        "CREATE INDEX changes_by_outcome ON changes (outcome)",
        """CREATE TABLE dedup_keys (
            key TEXT PRIMARY KEY,
            claimed_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""",
        """CREATE TABLE locks (
            cluster_key TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            user_id TEXT NOT NULL,
            summary TEXT NOT NULL,
            acquired_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""",
        """CREATE TABLE drafts (
            key TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            data TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""",
        """CREATE TABLE schedules (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at REAL NOT NULL,
            due_at REAL NOT NULL,
            change_id INTEGER NOT NULL REFERENCES changes(id),
            alias TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_ts TEXT,
            status TEXT NOT NULL CHECK (status IN ('scheduled','done','cancelled','failed')),
            finished_at REAL,
            note TEXT
        )""",
        "CREATE INDEX schedules_due ON schedules (status, due_at)",
    ),
    (
        """CREATE TABLE follows (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            change_id INTEGER NOT NULL REFERENCES changes(id),
            alias TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_ts TEXT,
            root_ts TEXT,
            wanted TEXT NOT NULL,
            started_at REAL NOT NULL,
            deadline_at REAL NOT NULL,
            next_at REAL NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL CHECK (status IN ('following','done','failed','timeout','cancelled')),
            last_summary TEXT,
            finished_at REAL
        )""",
        "CREATE INDEX follows_due ON follows (status, next_at)",
        # One change is followed at most once at a time, whichever replica starts it.
        "CREATE UNIQUE INDEX follows_one_per_change ON follows (change_id) WHERE status = 'following'",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

_JSON_COLUMNS = frozenset({"spec_before", "body", "diff", "request", "data", "wanted"})


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _row(row: sqlite3.Row) -> dict[str, Any]:
    return {k: (json.loads(row[k]) if k in _JSON_COLUMNS and row[k] is not None else row[k]) for k in row.keys()}


def _schema_version(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(version)


def migrate(conn: sqlite3.Connection, now: float, migrations: Sequence[Sequence[str]] = MIGRATIONS) -> tuple[int, int]:
    """Bring the schema up to date in one transaction; returns (version found, version now).

    Raises StoreError when the database was written by a newer raybot (it would not understand it).
    `BEGIN IMMEDIATE` takes the write lock first, so two processes starting together migrate once.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        found = _schema_version(conn)
        if found > len(migrations):
            raise StoreError(
                f"the database has schema version {found}, newer than this raybot knows ({len(migrations)}): "
                "upgrade raybot, or point RAYBOT_DATABASE at another database"
            )
        for version in range(found + 1, len(migrations) + 1):
            for statement in migrations[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, now))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found, len(migrations)


# --- the SQLite backend ------------------------------------------------------------------------------


class SqliteStore:
    """`Store` on one SQLite file, every call on the store's own single worker thread.

    Construct, then `await open()` (or use `open_store`). `sleep` paces the re-check of a lock held by
    another process; waiters for a lock held in this process are woken by `release_lock` directly.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lock_recheck: float = LOCK_RECHECK_SECONDS,
        migrations: Sequence[Sequence[str]] = MIGRATIONS,
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._sleep = sleep
        self._lock_recheck = lock_recheck
        self._migrations = migrations
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._closed = False
        self._held: dict[str, str] = {}  # cluster_key -> token this instance holds
        self._released: dict[str, asyncio.Event] = {}  # cluster_key -> set at the next release here

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect, switch on WAL and foreign keys, and apply missing migrations."""
        if self._executor is not None:
            raise StoreError("store is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raybot-store")
        try:
            await self._call(self._connect)
        except BaseException:
            await self.close()
            raise

    def _connect(self, _unopened: None) -> None:
        # isolation_level=None: no implicit transactions; each statement commits unless we BEGIN.
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: an audit record written "pending" must survive a power cut right after the cloud call.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn, self._clock(), self._migrations)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        """Close the connection and stop the worker thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(sqlite3.Error):
            await loop.run_in_executor(executor, self._disconnect)
        await asyncio.to_thread(executor.shutdown, True)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def _call(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(connection)` on the worker thread; sqlite3 errors become StoreError."""
        if self._closed or self._executor is None:
            raise StoreError("the store is closed")

        def run() -> T:
            try:
                return fn(self._conn)
            except sqlite3.Error as exc:
                raise StoreError(f"database error on {self.path}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    # audit ------------------------------------------------------------------------------------------

    async def record_pending(self, change: NewChange) -> ChangeRecord:
        """Write the attempt as "pending"; do this before UpdateRayCluster is called."""
        now = self._clock()
        values = change.model_dump()
        columns = list(values)
        params = [_dumps(values[c]) if c in _JSON_COLUMNS else values[c] for c in columns]
        columns += ["created_at", "updated_at", "outcome"]
        params += [now, now, "pending"]
        sql = f"INSERT INTO changes ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) RETURNING *"
        row = await self._call(lambda conn: conn.execute(sql, params).fetchone())
        return ChangeRecord.model_validate(_row(row))

    async def set_thread(self, change_id: int, *, root_ts: str, thread_ts: str) -> None:
        now = self._clock()
        count = await self._call(
            lambda conn: (
                conn.execute(
                    "UPDATE changes SET root_ts = ?, thread_ts = ?, updated_at = ? WHERE id = ?",
                    (root_ts, thread_ts, now, change_id),
                ).rowcount
            )
        )
        if count == 0:
            raise StoreError(f"no change {change_id}")

    async def record_outcome(
        self,
        change_id: int,
        outcome: Outcome,
        *,
        request_id: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> ChangeRecord:
        """Move a change from pending (or unknown, when reconciled) to `outcome`; StoreError otherwise."""
        sources = _OUTCOME_SOURCES.get(outcome)
        if sources is None:
            raise ValueError(f"a change cannot be set to {outcome!r}; one of {sorted(_OUTCOME_SOURCES)}")
        now = self._clock()
        finished = now if outcome in ("done", "failed") else None

        def update(conn: sqlite3.Connection) -> tuple[sqlite3.Row | None, str | None]:
            row = conn.execute(
                f"""UPDATE changes SET outcome = ?, request_id = ?, error_code = ?, error_message = ?,
                    updated_at = ?, finished_at = ?
                    WHERE id = ? AND outcome IN ({", ".join("?" * len(sources))}) RETURNING *""",
                (outcome, request_id, error_code, error_message, now, finished, change_id, *sources),
            ).fetchone()
            if row is not None:
                return row, None
            current = conn.execute("SELECT outcome FROM changes WHERE id = ?", (change_id,)).fetchone()
            return None, None if current is None else current[0]

        row, current = await self._call(update)
        if row is None:
            if current is None:
                raise StoreError(f"no change {change_id}")
            raise StoreError(f"change {change_id} is {current}; it cannot become {outcome}")
        return ChangeRecord.model_validate(_row(row))

    async def get_change(self, change_id: int) -> ChangeRecord | None:
        row = await self._call(lambda conn: conn.execute("SELECT * FROM changes WHERE id = ?", (change_id,)).fetchone())
        return None if row is None else ChangeRecord.model_validate(_row(row))

    async def pending_changes(self) -> list[ChangeRecord]:
        """Changes still "pending", oldest first: at start-up these were interrupted mid-flight."""
        rows = await self._call(
            lambda conn: conn.execute("SELECT * FROM changes WHERE outcome = 'pending' ORDER BY id").fetchall()
        )
        return [ChangeRecord.model_validate(_row(r)) for r in rows]

    async def history(self, alias: str, limit: int = 10) -> list[ChangeRecord]:
        """The latest `limit` changes of one cluster alias, newest first."""
        if limit < 1:
            return []
        rows = await self._call(
            lambda conn: conn.execute(
                "SELECT * FROM changes WHERE alias = ? ORDER BY created_at DESC, id DESC LIMIT ?", (alias, limit)
            ).fetchall()
        )
        return [ChangeRecord.model_validate(_row(r)) for r in rows]

    # exactly-once -----------------------------------------------------------------------------------

    async def claim(self, key: str, *, ttl: float = MIN_CLAIM_TTL) -> bool:
        """True for the first claimant of `key` within `ttl` seconds (≥ 600), False for every later one."""
        if ttl < MIN_CLAIM_TTL:
            raise ValueError(f"dedup keys live at least {MIN_CLAIM_TTL:.0f} s; ttl={ttl} is too short")
        if not key:
            raise ValueError("an empty dedup key")
        now = self._clock()
        # One statement: a live key is left alone (no row returned); an expired one is taken over.
        row = await self._call(
            lambda conn: conn.execute(
                """INSERT INTO dedup_keys (key, claimed_at, expires_at) VALUES (?, ?, ?)
                   ON CONFLICT (key) DO UPDATE SET claimed_at = excluded.claimed_at, expires_at = excluded.expires_at
                   WHERE dedup_keys.expires_at <= excluded.claimed_at
                   RETURNING key""",
                (key, now, now + ttl),
            ).fetchone()
        )
        return row is not None

    # locks ------------------------------------------------------------------------------------------

    async def acquire_lock(
        self, cluster_key: str, *, user_id: str, summary: str, wait: float = 5.0, ttl: float = 120.0
    ) -> str:
        """Take the cluster's lock, waiting up to `wait` seconds; returns the token for `release_lock`.

        A lock past its `expires_at` is stale (its holder died) and is taken over. Raises LockBusy
        with the holder when the wait runs out.
        """
        if wait < 0 or ttl <= 0:
            raise ValueError("wait must be ≥ 0 and ttl > 0")
        deadline = self._clock() + wait
        while True:
            # Take the wake-up event before looking, so a release between the look and the wait is not lost.
            released = self._released.setdefault(cluster_key, asyncio.Event())
            token = secrets.token_urlsafe(16)
            now = self._clock()
            holder = await self._call(
                partial(
                    self._try_lock,
                    cluster_key=cluster_key,
                    token=token,
                    user_id=user_id,
                    summary=summary,
                    now=now,
                    ttl=ttl,
                )
            )
            if holder.holder == token:
                self._held[cluster_key] = token
                return token
            now = self._clock()
            remaining = deadline - now
            if remaining <= 0:
                raise LockBusy(holder)
            step = min(remaining, max(holder.expires_at - now, 0.0))
            if self._held.get(cluster_key) != holder.holder:
                # Held by another process: its release cannot wake us, so look again now and then.
                step = min(step, self._lock_recheck)
            await self._wait_released(released, step)

    @staticmethod
    def _try_lock(
        conn: sqlite3.Connection, *, cluster_key: str, token: str, user_id: str, summary: str, now: float, ttl: float
    ) -> LockHolder:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                """INSERT INTO locks (cluster_key, holder, user_id, summary, acquired_at, expires_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (cluster_key) DO UPDATE SET holder = excluded.holder, user_id = excluded.user_id,
                       summary = excluded.summary, acquired_at = excluded.acquired_at,
                       expires_at = excluded.expires_at
                   WHERE locks.expires_at <= excluded.acquired_at""",
                (cluster_key, token, user_id, summary, now, now + ttl),
            )
            row = conn.execute("SELECT * FROM locks WHERE cluster_key = ?", (cluster_key,)).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return LockHolder.model_validate(dict(row))

    async def _wait_released(self, released: asyncio.Event, seconds: float) -> None:
        wake = asyncio.ensure_future(released.wait())
        nap = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({wake, nap}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (wake, nap):
                task.cancel()

    async def release_lock(self, cluster_key: str, holder: str) -> None:
        """Release the lock if `holder` still holds it (a stale lock taken over is not touched)."""
        try:
            await self._call(
                lambda conn: (
                    conn.execute(
                        "DELETE FROM locks WHERE cluster_key = ? AND holder = ?", (cluster_key, holder)
                    ).rowcount
                )
            )
        finally:
            if self._held.get(cluster_key) == holder:
                del self._held[cluster_key]
            released = self._released.pop(cluster_key, None)
            if released is not None:
                released.set()

    async def refresh_lock(self, cluster_key: str, holder: str, *, ttl: float = 120.0) -> bool:
        """Push the holder's expiry to now + ttl; False when `holder` no longer holds the lock."""
        now = self._clock()
        count = await self._call(
            lambda conn: (
                conn.execute(
                    "UPDATE locks SET expires_at = ? WHERE cluster_key = ? AND holder = ? AND expires_at > ?",
                    (now + ttl, cluster_key, holder, now),
                ).rowcount
            )
        )
        return count == 1

    # drafts -----------------------------------------------------------------------------------------

    async def put_draft(
        self, data: dict[str, Any], *, user_id: str, ttl: float = 3600.0, key: str | None = None
    ) -> str:
        """Keep modal state server-side; returns its key (new and random unless `key` is given)."""
        if key is None:
            key = secrets.token_urlsafe(24)
        elif not key or len(key) > MAX_DRAFT_KEY:
            raise ValueError(f"a draft key is 1–{MAX_DRAFT_KEY} characters")
        now = self._clock()
        text = _dumps(data)
        await self._call(
            lambda conn: conn.execute(
                """INSERT INTO drafts (key, user_id, data, created_at, expires_at) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (key) DO UPDATE SET user_id = excluded.user_id, data = excluded.data,
                       created_at = excluded.created_at, expires_at = excluded.expires_at""",
                (key, user_id, text, now, now + ttl),
            )
        )
        return key

    async def get_draft(self, key: str) -> dict[str, Any] | None:
        now = self._clock()
        row = await self._call(
            lambda conn: conn.execute("SELECT data FROM drafts WHERE key = ? AND expires_at > ?", (key, now)).fetchone()
        )
        return None if row is None else json.loads(row[0])

    async def delete_draft(self, key: str) -> None:
        await self._call(lambda conn: conn.execute("DELETE FROM drafts WHERE key = ?", (key,)))

    # approvals --------------------------------------------------------------------------------------

    async def create_approval(
        self,
        *,
        requester_id: str,
        channel_id: str,
        alias: str,
        action: str,
        summary: str,
        request: dict[str, Any],
        spec_before: dict[str, Any],
        expires_at: float,
        thread_ts: str | None = None,
        root_ts: str | None = None,
    ) -> Approval:
        now = self._clock()
        row = await self._call(
            lambda conn: conn.execute(
                """INSERT INTO approvals (created_at, expires_at, requester_id, channel_id, thread_ts, root_ts,
                       alias, action, summary, request, spec_before, status)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending') RETURNING *""",
                (
                    now,
                    expires_at,
                    requester_id,
                    channel_id,
                    thread_ts,
                    root_ts,
                    alias,
                    action,
                    summary,
                    _dumps(request),
                    _dumps(spec_before),
                ),
            ).fetchone()
        )
        return Approval.model_validate(_row(row))

    async def get_approval(self, approval_id: int) -> Approval | None:
        row = await self._call(
            lambda conn: conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        )
        return None if row is None else Approval.model_validate(_row(row))

    async def _due(self, table: str, status: str, column: str, now: float) -> list[dict[str, Any]]:
        """Rows of `table` in `status` whose `column` time is at or before `now`, earliest first."""
        rows = await self._call(
            lambda conn: conn.execute(
                f"SELECT * FROM {table} WHERE status = ? AND {column} <= ? ORDER BY {column}, id", (status, now)
            ).fetchall()
        )
        return [_row(r) for r in rows]

    async def _earliest(self, table: str, status: str, column: str) -> float | None:
        """The earliest `column` time of the rows of `table` in `status`; None when there are none."""
        row = await self._call(
            lambda conn: conn.execute(f"SELECT MIN({column}) FROM {table} WHERE status = ?", (status,)).fetchone()
        )
        return row[0]

    async def expired_approvals(self, now: float) -> list[Approval]:
        """Requests still pending past their expiry, oldest first (to be closed as expired)."""
        return [Approval.model_validate(r) for r in await self._due("approvals", "pending", "expires_at", now)]

    async def next_approval_expiry(self) -> float | None:
        return await self._earliest("approvals", "pending", "expires_at")

    async def decide_approval(
        self, approval_id: int, status: str, *, by: str | None, reason: str | None = None, expected: str = "pending"
    ) -> Approval | None:
        """Move the approval from `expected` to `status` atomically; None when it was not `expected`.

        A later step without a person (`by=None`, e.g. approved → applied) keeps who decided and when.
        """
        _check_status(status, ApprovalStatus)
        now = self._clock()
        row = await self._call(
            lambda conn: conn.execute(
                """UPDATE approvals SET status = ?,
                       decided_at = CASE WHEN ? IS NOT NULL OR decided_at IS NULL THEN ? ELSE decided_at END,
                       decided_by = COALESCE(?, decided_by), reason = COALESCE(?, reason)
                   WHERE id = ? AND status = ? RETURNING *""",
                (status, by, now, by, reason, approval_id, expected),
            ).fetchone()
        )
        return None if row is None else Approval.model_validate(_row(row))

    async def set_approval_message(self, approval_id: int, *, root_ts: str, thread_ts: str) -> None:
        count = await self._call(
            lambda conn: (
                conn.execute(
                    "UPDATE approvals SET root_ts = ?, thread_ts = ? WHERE id = ?", (root_ts, thread_ts, approval_id)
                ).rowcount
            )
        )
        if count == 0:
            raise StoreError(f"no approval {approval_id}")

    # scheduled reverts ------------------------------------------------------------------------------

    async def schedule(
        self, *, change_id: int, due_at: float, alias: str, channel_id: str, thread_ts: str | None
    ) -> Schedule:
        """Remember to revert change `change_id` at `due_at` (status "scheduled")."""
        now = self._clock()
        row = await self._call(
            lambda conn: conn.execute(
                """INSERT INTO schedules (created_at, due_at, change_id, alias, channel_id, thread_ts, status)
                   VALUES (?, ?, ?, ?, ?, ?, 'scheduled') RETURNING *""",
                (now, due_at, change_id, alias, channel_id, thread_ts),
            ).fetchone()
        )
        return Schedule.model_validate(_row(row))

    async def due_schedules(self, now: float) -> list[Schedule]:
        """Scheduled reverts due at or before `now`, earliest first."""
        return [Schedule.model_validate(r) for r in await self._due("schedules", "scheduled", "due_at", now)]

    async def next_due_at(self) -> float | None:
        return await self._earliest("schedules", "scheduled", "due_at")

    async def finish_schedule(
        self, schedule_id: int, status: str, *, note: str | None = None, expected: str = "scheduled"
    ) -> Schedule | None:
        """Move the schedule from `expected` to `status` atomically; None when it was not `expected`."""
        _check_status(status, ScheduleStatus)
        now = self._clock()
        row = await self._call(
            lambda conn: conn.execute(
                """UPDATE schedules SET status = ?, finished_at = ?, note = COALESCE(?, note)
                   WHERE id = ? AND status = ? RETURNING *""",
                (status, now, note, schedule_id, expected),
            ).fetchone()
        )
        return None if row is None else Schedule.model_validate(_row(row))

    async def get_schedule(self, schedule_id: int) -> Schedule | None:
        row = await self._call(
            lambda conn: conn.execute("SELECT * FROM schedules WHERE id = ?", (schedule_id,)).fetchone()
        )
        return None if row is None else Schedule.model_validate(_row(row))

    # following changes ------------------------------------------------------------------------------

    async def start_follow(
        self,
        *,
        change_id: int,
        alias: str,
        channel_id: str,
        thread_ts: str | None,
        root_ts: str | None,
        wanted: dict[str, Any],
        deadline_at: float,
        next_at: float,
    ) -> Follow:
        """Start following change `change_id` (status "following", no look made yet), first look at `next_at`.

        A change already being followed is not followed twice: that follow is returned as it is.
        """
        now = self._clock()
        text = _dumps(wanted)

        def start(conn: sqlite3.Connection) -> sqlite3.Row:
            row = conn.execute(
                """INSERT INTO follows (change_id, alias, channel_id, thread_ts, root_ts, wanted, started_at,
                       deadline_at, next_at, attempt, status)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 'following')
                   ON CONFLICT (change_id) WHERE status = 'following' DO NOTHING
                   RETURNING *""",
                (change_id, alias, channel_id, thread_ts, root_ts, text, now, deadline_at, next_at),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT * FROM follows WHERE change_id = ? AND status = 'following'", (change_id,)
                ).fetchone()
            return row

        return Follow.model_validate(_row(await self._call(start)))

    async def due_follows(self, now: float) -> list[Follow]:
        """Follows whose next look is due at or before `now`, earliest first."""
        return [Follow.model_validate(r) for r in await self._due("follows", "following", "next_at", now)]

    async def next_follow_at(self) -> float | None:
        """When the earliest look of any follow is due; None when nothing is followed."""
        return await self._earliest("follows", "following", "next_at")

    async def reschedule_follow(
        self, follow_id: int, *, next_at: float, attempt: int, last_summary: str | None
    ) -> None:
        """Set the next look of a follow still "following"; a finished one (e.g. by another replica) is left alone."""
        await self._call(
            lambda conn: conn.execute(
                """UPDATE follows SET next_at = ?, attempt = ?, last_summary = COALESCE(?, last_summary)
                   WHERE id = ? AND status = 'following'""",
                (next_at, attempt, last_summary, follow_id),
            )
        )

    async def finish_follow(
        self, follow_id: int, status: str, *, last_summary: str | None = None, expected: str = "following"
    ) -> Follow | None:
        """Move the follow from `expected` to `status` atomically; None when it was not `expected`.

        Only the caller that gets the Follow back says so in Slack, so the thread gets one answer.
        """
        _check_status(status, FollowStatus)
        if status == "following":
            raise ValueError("a follow is finished as done, failed, timeout or cancelled, not following")
        now = self._clock()
        row = await self._call(
            lambda conn: conn.execute(
                """UPDATE follows SET status = ?, finished_at = ?, last_summary = COALESCE(?, last_summary)
                   WHERE id = ? AND status = ? RETURNING *""",
                (status, now, last_summary, follow_id, expected),
            ).fetchone()
        )
        return None if row is None else Follow.model_validate(_row(row))

    async def get_follow(self, follow_id: int) -> Follow | None:
        row = await self._call(lambda conn: conn.execute("SELECT * FROM follows WHERE id = ?", (follow_id,)).fetchone())
        return None if row is None else Follow.model_validate(_row(row))

    async def purge_expired(self) -> int:
        """Delete dedup keys and drafts past their ttl; returns how many rows went."""
        now = self._clock()

        def purge(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                gone = conn.execute("DELETE FROM dedup_keys WHERE expires_at <= ?", (now,)).rowcount
                gone += conn.execute("DELETE FROM drafts WHERE expires_at <= ?", (now,)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return gone

        return await self._call(purge)


def _check_status(status: str, allowed: Any) -> None:
    values = get_args(allowed)
    if status not in values:
        raise ValueError(f"status {status!r} is not one of {', '.join(values)}")


@contextlib.asynccontextmanager
async def cluster_lock(
    store: Store, cluster_key: str, *, user_id: str, summary: str, wait: float = 5.0, ttl: float = 120.0
) -> AsyncIterator[str]:
    """Hold the cluster's lock for the body of an `async with`; LockBusy when it cannot be had."""
    token = await store.acquire_lock(cluster_key, user_id=user_id, summary=summary, wait=wait, ttl=ttl)
    try:
        yield token
    finally:
        await store.release_lock(cluster_key, token)


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def sqlite_path(database: str) -> str:
    """The SQLite file a RAYBOT_DATABASE value names: a plain path or `sqlite:///path`.

    `sqlite:///rel.db` is relative, `sqlite:////abs/x.db` absolute (SQLAlchemy's convention).
    The message for an unsupported URL names only its scheme: the rest may carry a password.
    """
    if not database:
        raise StoreError("RAYBOT_DATABASE is empty: give a SQLite file path")
    match = _SCHEME.match(database)
    if match is None:
        return database
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        path = database[len("sqlite:///") :] if database.startswith("sqlite:///") else ""
        if not path:
            raise StoreError("a sqlite URL needs a path: sqlite:///relative.db or sqlite:////absolute/path.db")
        return path
    if scheme.split("+")[0] in ("postgresql", "postgres"):
        raise StoreError(
            f"PostgreSQL is not supported yet: RAYBOT_DATABASE is a {scheme}:// URL; "
            "use a SQLite file path (or sqlite:///path) until the PostgreSQL backend exists"
        )
    raise StoreError(f"unsupported database URL scheme {scheme}://: use a SQLite file path or sqlite:///path")


async def open_store(database: str, *, clock: Callable[[], float] = time.time) -> Store:
    """Open the store RAYBOT_DATABASE names, applying missing migrations."""
    store = SqliteStore(sqlite_path(database), clock=clock)
    await store.open()
    return store
