"""raybot's state: every change as one row moving through a state machine, plus drafts, dedup keys and locks.

`Store` is the interface; `SqliteStore` implements it on one SQLite file (a PostgreSQL backend for
several replicas can implement the same Protocol). SQLite is used through the stdlib driver on ONE
dedicated worker thread owned by the store: every statement runs there, so the event loop never
blocks on disk I/O or `busy_timeout`, and SQLite sees exactly one connection per store.

A change is one row from request to settle (bot/change_state.py has the states): it moves only by
compare-and-set (`UPDATE … WHERE id = ? AND state IN (…)`), its `version` counts the moves, and a move
made on behalf of a cluster's lock holder is fenced: it happens only while that lock is still held.
Approvals, temporary reverts and follows are states and columns of that row, not tables of their own.

Locks belong to a *run* (one process's life, `runs` table) that renews them with a heartbeat. A run
that stops renewing loses its locks within `lock_ttl`; a process that restarts on the same host ends
its previous run at once, releasing its locks and handing its in-flight changes to the reconciler.

Anything persisted is masked (bot.emr.changes.redact_secrets): secrets never reach the disk.
All times come from the injected `clock` (epoch seconds), so expiry is testable without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.change_state import (
    FINAL,
    REVERT_ALLOWED,
    REVERT_STATES,
    STATES,
    check_move,
)
from bot.change_state import outcome as outcome_of_state
from bot.emr.changes import redact_secrets

log = logging.getLogger("raybot.store")

MIN_CLAIM_TTL = 600.0  # exactly-once keys live at least 10 minutes
BUSY_TIMEOUT_MS = 5000
LOCK_RECHECK_SECONDS = 0.5  # how often a waiter re-reads a lock held by another process
LOCK_TTL_SECONDS = 15.0  # a run that stops renewing loses its locks this long after its last heartbeat
MAX_DRAFT_KEY = 64

T = TypeVar("T")

# Columns that hold JSON.
_JSON_COLUMNS = frozenset({"spec_before", "body", "diff", "replay", "data", "wanted"})
# Columns persisted masked.
_MASKED_COLUMNS = frozenset({"spec_before", "body"})


class StoreError(Exception):
    """The store cannot do what was asked: bad database URL, schema too new, a refused transition, I/O."""


class LockLost(StoreError):
    """A fenced write found that its cluster lock is no longer held (it expired, another change took it)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class NewChange(_Frozen):
    """A change as the flow knows it when it is first recorded."""

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
    spec_before: dict[str, Any] | None = None  # editable fields as read (wire form); stored masked
    body: dict[str, Any] | None = None  # the body to send; stored masked
    diff: list[dict[str, Any]] = Field(default_factory=list)  # [{"path","before","after"}]
    replay: dict[str, Any] | None = None  # what was asked, to plan again later (bot/replay.py)
    undo_of: int | None = None  # the change this one undoes/reverts
    duration_seconds: int | None = None  # a temporary change: reverted this long after it took effect
    expires_at: float | None = None  # awaiting approval until then
    approval_reason: str | None = None  # why a second person must approve

    @field_validator("diff", mode="before")
    @classmethod
    def _plain_diff(cls, value: Any) -> Any:
        # The planner hands DiffEntry models; the log keeps plain JSON.
        if isinstance(value, list | tuple):
            return [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        return value


class ChangeRecord(_Frozen):
    """One change, from request to settle: the audit log is these rows."""

    id: int
    created_at: float
    updated_at: float
    version: int
    state: str
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
    replay: dict[str, Any] | None = None
    undo_of: int | None = None
    run_id: str | None = None  # the run applying it (applying/sending)
    call_deadline_at: float | None = None  # a cloud call in flight gives up by then
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    next_at: float | None = None  # when background work looks at it next (unknown, applied, awaiting_approval)
    attempts: int = 0
    expires_at: float | None = None
    approval_reason: str | None = None
    decided_by: str | None = None
    decided_at: float | None = None
    duration_seconds: int | None = None
    revert_state: str | None = None
    revert_at: float | None = None
    revert_attempts: int = 0
    revert_run_id: str | None = None
    revert_note: str | None = None
    wanted: dict[str, Any] | None = None  # bot.follow.Wanted as JSON, while following
    follow_started_at: float | None = None
    follow_deadline_at: float | None = None
    last_summary: str | None = None
    finished_at: float | None = None  # when it took effect or failed for good

    @property
    def outcome(self) -> str:
        """done | failed | unknown | pending | not approved: the coarse outcome."""
        return outcome_of_state(self.state)


@dataclass(frozen=True)
class Fence:
    """Proof of holding a cluster's lock: writes made with it happen only while the lock is still held."""

    cluster_key: str
    token: str


class LockHolder(_Frozen):
    """Who holds a cluster's lock; `holder` is the opaque token only the holder knows."""

    cluster_key: str
    holder: str
    user_id: str
    summary: str
    acquired_at: float
    expires_at: float
    run_id: str | None = None


class LockBusy(Exception):
    """Waited for a cluster's lock and did not get it; `holder` says who has it."""

    def __init__(self, holder: LockHolder) -> None:
        self.holder = holder
        super().__init__(f"{holder.cluster_key} is locked by {holder.user_id}: {holder.summary}")


class Store(Protocol):
    """The state store raybot's flow talks to."""

    run_id: str
    lock_ttl: float

    async def close(self) -> None: ...

    # exactly-once
    async def claim(self, key: str, *, ttl: float = MIN_CLAIM_TTL) -> bool: ...
    async def release_claim(self, key: str) -> None: ...

    # locks
    async def acquire_lock(self, cluster_key: str, *, user_id: str, summary: str, wait: float = 5.0) -> Fence: ...
    async def release_lock(self, fence: Fence) -> None: ...
    async def holds_lock(self, fence: Fence) -> bool: ...
    async def heartbeat(self) -> int: ...

    # changes
    async def create_change(self, change: NewChange, *, state: str, fence: Fence | None = None) -> ChangeRecord: ...
    async def set_thread(self, change_id: int, *, root_ts: str, thread_ts: str) -> None: ...
    async def move(
        self, change_id: int, to: str, *, from_: str | tuple[str, ...], fence: Fence | None = None, **fields: Any
    ) -> ChangeRecord | None: ...
    async def touch(self, change_id: int, *, state: str, **fields: Any) -> ChangeRecord | None: ...
    async def move_revert(
        self, change_id: int, to: str, *, from_: str | tuple[str, ...], **fields: Any
    ) -> ChangeRecord | None: ...
    async def cancel_revert(self, change_id: int, *, note: str) -> ChangeRecord | None: ...
    async def get_change(self, change_id: int) -> ChangeRecord | None: ...
    async def history(self, alias: str, limit: int = 10) -> list[ChangeRecord]: ...
    async def due_changes(self, now: float) -> list[ChangeRecord]: ...
    async def due_reverts(self, now: float) -> list[ChangeRecord]: ...
    async def next_due_at(self) -> float | None: ...

    # drafts
    async def put_draft(
        self, data: dict[str, Any], *, user_id: str, ttl: float = 3600.0, key: str | None = None
    ) -> str: ...
    async def get_draft(self, key: str) -> dict[str, Any] | None: ...
    async def delete_draft(self, key: str) -> None: ...

    async def purge_expired(self) -> int: ...


# --- schema -----------------------------------------------------------------------------------------

# Each migration is a sequence of statements; version N is MIGRATIONS[N - 1]. Append only: a released
# migration is never edited, because databases in the field already ran it.
MIGRATIONS_V2: tuple[tuple[str, ...], ...] = (
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


_STATE_CHECK = ", ".join(f"'{s}'" for s in STATES)
_REVERT_CHECK = ", ".join(f"'{s}'" for s in REVERT_STATES)

# Version 3: one row per change for its whole life (bot/change_state.py); approvals, schedules and follows
# become its states and columns, and locks belong to a process run that renews them.
MIGRATION_3: tuple[str, ...] = (
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        replica TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        stopped_at REAL
    )""",
    f"""CREATE TABLE changes_v3 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        version INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL CHECK (state IN ({_STATE_CHECK})),
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
        replay TEXT,
        undo_of INTEGER,
        run_id TEXT,
        call_deadline_at REAL,
        request_id TEXT,
        error_code TEXT,
        error_message TEXT,
        next_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        expires_at REAL,
        approval_reason TEXT,
        decided_by TEXT,
        decided_at REAL,
        duration_seconds INTEGER,
        revert_state TEXT CHECK (revert_state IS NULL OR revert_state IN ({_REVERT_CHECK})),
        revert_at REAL,
        revert_attempts INTEGER NOT NULL DEFAULT 0,
        revert_run_id TEXT,
        revert_note TEXT,
        wanted TEXT,
        follow_started_at REAL,
        follow_deadline_at REAL,
        last_summary TEXT,
        finished_at REAL
    )""",
    # An old "pending" change was in flight when its process stopped: "sending" with no live run is
    # exactly what the reconciler looks for. A done change whose follow ended counts as settled.
    """INSERT INTO changes_v3 (id, created_at, updated_at, version, state, team_id, user_id, channel_id, thread_ts,
           root_ts, alias, workspace, cluster_id, region, action, summary, spec_before, body, diff, undo_of,
           request_id, error_code, error_message, next_at, finished_at)
       SELECT id, created_at, updated_at, 0,
           CASE outcome WHEN 'pending' THEN 'sending' WHEN 'done' THEN 'settled' WHEN 'failed' THEN 'failed'
                ELSE 'unknown' END,
           team_id, user_id, channel_id, thread_ts, root_ts, alias, workspace, cluster_id, region, action, summary,
           spec_before, body, diff, undo_of, request_id, error_code, error_message,
           CASE outcome WHEN 'unknown' THEN updated_at END, finished_at
       FROM changes""",
    """UPDATE changes_v3 SET state = 'applied', wanted = f.wanted, follow_started_at = f.started_at,
           follow_deadline_at = f.deadline_at, next_at = f.next_at, attempts = f.attempt,
           last_summary = f.last_summary
       FROM follows AS f
       WHERE f.change_id = changes_v3.id AND f.status = 'following' AND changes_v3.state = 'settled'""",
    """UPDATE changes_v3 SET revert_at = s.due_at, revert_note = s.note,
           revert_state = CASE s.status WHEN 'scheduled' THEN 'scheduled' WHEN 'done' THEN 'done'
                               WHEN 'cancelled' THEN 'cancelled' ELSE 'failed' END
       FROM schedules AS s WHERE s.change_id = changes_v3.id""",
    "DROP TABLE follows",
    "DROP TABLE schedules",
    "DROP TABLE changes",
    # Approval requests of version 2 were keyed by approval id, which now means a change id: they are not
    # carried over (their buttons answer that the request is closed), so no click can approve another change.
    "DROP TABLE approvals",
    "ALTER TABLE changes_v3 RENAME TO changes",
    "CREATE INDEX changes_by_alias ON changes (alias, created_at DESC, id DESC)",
    "CREATE INDEX changes_due ON changes (next_at) WHERE next_at IS NOT NULL",
    "CREATE INDEX changes_in_flight ON changes (state) WHERE state IN ('applying', 'sending')",
    "CREATE INDEX changes_revert_due ON changes (revert_at) WHERE revert_state IN ('scheduled', 'running')",
    "ALTER TABLE locks ADD COLUMN run_id TEXT",
)

MIGRATIONS = (*MIGRATIONS_V2, MIGRATION_3)
SCHEMA_VERSION = len(MIGRATIONS)

_CHANGE_COLUMNS = frozenset(ChangeRecord.model_fields) - {"id"}
# Columns a move may set besides the state (the state machine's own bookkeeping is set by the store).
_SETTABLE = _CHANGE_COLUMNS - {"created_at", "updated_at", "version", "state"}


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _param(column: str, value: Any) -> Any:
    if column in _MASKED_COLUMNS:
        value = redact_secrets(value)
    return _dumps(value) if column in _JSON_COLUMNS else value


def _row(row: sqlite3.Row) -> dict[str, Any]:
    return {k: (json.loads(row[k]) if k in _JSON_COLUMNS and row[k] is not None else row[k]) for k in row.keys()}


def _record(row: sqlite3.Row | None) -> ChangeRecord | None:
    return None if row is None else ChangeRecord.model_validate(_row(row))


def _states(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """PRAGMA journal_mode = WAL, waiting like busy_timeout would for another connection's lock.

    SQLite answers "database is locked" at once, without calling the busy handler, when another
    connection holds a lock on a file not yet in WAL mode: two processes opening a new file together.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


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

# The runs open in this process: a new run on this host ends only runs that are not among them.
_LIVE_RUNS: set[str] = set()

# Runs known alive: a silent one (no heartbeat for the lock TTL) is taken for dead by the others. A run never
# takes itself for dead (its own heartbeat may be late after a stall): its own work is its own.
_LIVE = "SELECT run_id FROM runs WHERE (stopped_at IS NULL AND heartbeat_at > ?) OR run_id = ?"
_FENCE = "EXISTS (SELECT 1 FROM locks WHERE cluster_key = ? AND holder = ? AND expires_at > ?)"


class SqliteStore:
    """`Store` on one SQLite file, every call on the store's own single worker thread.

    Construct, then `await open()` (or use `open_store`). `sleep` paces the re-check of a lock held by
    another process; waiters for a lock held in this process are woken by `release_lock` directly.
    `replica` names the host: a run that starts ends the previous runs of its replica that are gone.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lock_recheck: float = LOCK_RECHECK_SECONDS,
        lock_ttl: float = LOCK_TTL_SECONDS,
        replica: str | None = None,
        heartbeat: bool = True,
        migrations: Sequence[Sequence[str]] = MIGRATIONS,
    ) -> None:
        if lock_ttl <= 0:
            raise ValueError("lock_ttl must be > 0")
        self.path = str(path)
        self.lock_ttl = lock_ttl
        self.replica = replica or socket.gethostname()
        self.run_id = secrets.token_hex(8)
        self._clock = clock
        self._sleep = sleep
        self._lock_recheck = lock_recheck
        self._beat = heartbeat
        self._migrations = migrations
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._closed = False
        self._heartbeat_task: asyncio.Task | None = None
        self._held: dict[str, str] = {}  # cluster_key -> token this instance holds
        self._released: dict[str, asyncio.Event] = {}  # cluster_key -> set at the next release here

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect, switch on WAL and foreign keys, apply missing migrations, and start this process's run."""
        if self._executor is not None:
            raise StoreError("store is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raybot-store")
        # Known as live in this process before its row exists: another store of this process and replica
        # starting at the same moment must not take this run for a previous life of the process and end it.
        _LIVE_RUNS.add(self.run_id)
        try:
            await self._call(self._connect)
            ended = await self._call(self._start_run)
        except BaseException:
            await self.close()
            raise
        if ended:
            log.info("ended %d earlier run(s) of %s: their locks are free", ended, self.replica)
        if self._beat:
            self._heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name="raybot-store-heartbeat")

    def _connect(self, _unopened: None) -> None:
        # isolation_level=None: no implicit transactions; each statement commits unless we BEGIN.
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _switch_to_wal(conn)
            # FULL: a change recorded before the cloud call must survive a power cut right after it.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn, self._clock(), self._migrations)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _start_run(self, conn: sqlite3.Connection) -> int:
        """Register this run; end the earlier runs of this replica whose process is gone (or was this pid)."""
        now = self._clock()
        with _transaction(conn):
            earlier = conn.execute(
                "SELECT run_id, pid FROM runs WHERE replica = ? AND stopped_at IS NULL", (self.replica,)
            ).fetchall()
            # A container restarts with the same pid (1) and host name; on a host, a dead pid means a dead run.
            gone = [
                r["run_id"]
                for r in earlier
                if r["run_id"] not in _LIVE_RUNS and (r["pid"] == os.getpid() or not _pid_alive(r["pid"]))
            ]
            for run_id in gone:
                conn.execute("UPDATE runs SET stopped_at = ? WHERE run_id = ?", (now, run_id))
                conn.execute("DELETE FROM locks WHERE run_id = ?", (run_id,))
            conn.execute(
                "INSERT INTO runs (run_id, replica, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
                (self.run_id, self.replica, os.getpid(), now, now),
            )
        return len(gone)

    async def _heartbeat_loop(self) -> None:
        # Real time, not the injected clock: renewal must keep pace with the lock's TTL as time passes.
        while True:
            await asyncio.sleep(self.lock_ttl / 3)
            try:
                await self.heartbeat()
            except StoreError as error:
                log.warning("heartbeat failed: %s", error)

    async def heartbeat(self) -> int:
        """Tell the others this run is alive and renew every lock it holds; returns how many were renewed."""
        now = self._clock()

        def beat(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                alive = conn.execute(
                    "UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND stopped_at IS NULL", (now, self.run_id)
                ).rowcount
                if not alive:
                    return 0
                return conn.execute(
                    "UPDATE locks SET expires_at = ? WHERE run_id = ?", (now + self.lock_ttl, self.run_id)
                ).rowcount

        return await self._call(beat)

    async def close(self) -> None:
        """End this run (its locks are released), close the connection and stop the worker thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(sqlite3.Error):
            await loop.run_in_executor(executor, self._end_run)
        _LIVE_RUNS.discard(self.run_id)
        with contextlib.suppress(sqlite3.Error):
            await loop.run_in_executor(executor, self._disconnect)
        await asyncio.to_thread(executor.shutdown, True)

    def _end_run(self) -> None:
        conn = self._conn
        if conn is None:
            return
        with _transaction(conn):
            conn.execute("UPDATE runs SET stopped_at = ? WHERE run_id = ?", (self._clock(), self.run_id))
            conn.execute("DELETE FROM locks WHERE run_id = ?", (self.run_id,))

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

    # changes ----------------------------------------------------------------------------------------

    async def create_change(self, change: NewChange, *, state: str, fence: Fence | None = None) -> ChangeRecord:
        """Record a new change as "applying" (fenced by the cluster's lock) or "awaiting_approval".

        Raises LockLost when `fence` is given and the lock is no longer held: nothing is recorded then.
        """
        if state not in ("applying", "awaiting_approval"):
            raise ValueError(f"a change starts as applying or awaiting_approval, not {state}")
        if state == "awaiting_approval" and change.expires_at is None:
            raise ValueError("a change awaiting approval needs expires_at")
        now = self._clock()
        values = change.model_dump()
        columns = list(values)
        params = [_param(c, values[c]) for c in columns]
        columns += ["created_at", "updated_at", "version", "state", "run_id", "next_at"]
        params += [now, now, 0, state, self.run_id, change.expires_at if state == "awaiting_approval" else None]
        where, where_params = "", []
        if fence is not None:
            where, where_params = f" WHERE {_FENCE}", [fence.cluster_key, fence.token, now]
        sql = f"INSERT INTO changes ({', '.join(columns)}) SELECT {', '.join('?' * len(columns))}{where} RETURNING *"
        record = _record(await self._call(lambda conn: conn.execute(sql, [*params, *where_params]).fetchone()))
        if record is None:
            raise LockLost(f"the lock of {fence.cluster_key if fence else '?'} is no longer held")
        return record

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

    async def move(
        self, change_id: int, to: str, *, from_: str | tuple[str, ...], fence: Fence | None = None, **fields: Any
    ) -> ChangeRecord | None:
        """Move a change from one of `from_` to `to` (compare-and-set), setting `fields` with it.

        Returns the moved record, or None when the change was not in `from_` (someone else moved it).
        With `fence`, the move happens only while that lock is held: LockLost otherwise. Taking effect
        ("applied") schedules a temporary change's revert and ends the revert of the change it undoes,
        in the same transaction, so no crash can separate them.
        """
        sources = _states(from_)
        check_move(sources, to)
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"not settable on a change: {', '.join(sorted(unknown))}")
        now = self._clock()
        assignments = ["state = ?", "version = version + 1", "updated_at = ?"] + [f"{c} = ?" for c in fields]
        params: list[Any] = [to, now, *(_param(c, v) for c, v in fields.items())]
        if (to in FINAL or to == "applied") and "finished_at" not in fields:
            # When it took effect or failed for good: settling later does not move it.
            assignments.append("finished_at = COALESCE(finished_at, ?)")
            params.append(now)
        condition = f"id = ? AND state IN ({', '.join('?' * len(sources))})"
        params += [change_id, *sources]
        if fence is not None:
            condition += f" AND {_FENCE}"
            params += [fence.cluster_key, fence.token, now]
        sql = f"UPDATE changes SET {', '.join(assignments)} WHERE {condition} RETURNING *"

        def run(conn: sqlite3.Connection) -> tuple[sqlite3.Row | None, bool]:
            with _transaction(conn):
                row = conn.execute(sql, params).fetchone()
                if row is None:
                    current = conn.execute("SELECT state FROM changes WHERE id = ?", (change_id,)).fetchone()
                    return None, fence is not None and current is not None and current[0] in sources
                if to == "applied":
                    row = self._took_effect(conn, row, now)
                return row, False

        row, fenced_out = await self._call(run)
        if fenced_out:
            raise LockLost(f"change {change_id}: the lock of {fence.cluster_key if fence else '?'} is no longer held")
        return _record(row)

    @staticmethod
    def _took_effect(conn: sqlite3.Connection, row: sqlite3.Row, now: float) -> sqlite3.Row:
        if row["undo_of"] is not None and row["action"] == "undo":
            # Undone by a person: the pending automatic revert of that change must not run any more.
            conn.execute(
                """UPDATE changes SET revert_state = 'cancelled', revert_note = ?, updated_at = ?
                   WHERE id = ? AND revert_state = 'scheduled'""",
                (f"undone by change #{row['id']}", now, row["undo_of"]),
            )
        if row["duration_seconds"] is not None and row["revert_state"] is None:
            row = conn.execute(
                """UPDATE changes SET revert_state = 'scheduled', revert_at = ? WHERE id = ? RETURNING *""",
                (now + row["duration_seconds"], row["id"]),
            ).fetchone()
        return row

    async def touch(self, change_id: int, *, state: str, **fields: Any) -> ChangeRecord | None:
        """Set `fields` of a change still in `state` (e.g. when to look again); None when it moved on."""
        unknown = set(fields) - _SETTABLE
        if unknown or not fields:
            raise ValueError(f"nothing or not settable: {', '.join(sorted(unknown)) or 'no fields'}")
        now = self._clock()
        assignments = ["version = version + 1", "updated_at = ?"] + [f"{c} = ?" for c in fields]
        params = [now, *(_param(c, v) for c, v in fields.items()), change_id, state]
        sql = f"UPDATE changes SET {', '.join(assignments)} WHERE id = ? AND state = ? RETURNING *"
        return _record(await self._call(lambda conn: conn.execute(sql, params).fetchone()))

    async def move_revert(
        self, change_id: int, to: str, *, from_: str | tuple[str, ...], **fields: Any
    ) -> ChangeRecord | None:
        """Move a change's automatic revert (compare-and-set on `revert_state`); None when it was not in `from_`."""
        sources = _states(from_)
        check_move(sources, to, REVERT_ALLOWED)
        allowed = {"revert_at", "revert_attempts", "revert_run_id", "revert_note"}
        if set(fields) - allowed:
            raise ValueError(f"a revert move sets only {', '.join(sorted(allowed))}")
        now = self._clock()
        assignments = ["revert_state = ?", "updated_at = ?"] + [f"{c} = ?" for c in fields]
        params = [to, now, *fields.values(), change_id, *sources]
        sql = (
            f"UPDATE changes SET {', '.join(assignments)} "
            f"WHERE id = ? AND revert_state IN ({', '.join('?' * len(sources))}) RETURNING *"
        )
        return _record(await self._call(lambda conn: conn.execute(sql, params).fetchone()))

    async def cancel_revert(self, change_id: int, *, note: str) -> ChangeRecord | None:
        """Keep a temporary change: its revert ends "cancelled", whether it is scheduled already or will be
        when the change takes effect (Keep it clicked while the change is still being sent). None when there
        is no revert left to cancel (it runs, ran, or was cancelled)."""
        now = self._clock()
        row = await self._call(
            lambda conn: conn.execute(
                """UPDATE changes SET revert_state = 'cancelled', revert_note = ?, updated_at = ?
                   WHERE id = ? AND (revert_state = 'scheduled' OR (revert_state IS NULL
                         AND duration_seconds IS NOT NULL AND state IN ('applying', 'sending', 'unknown')))
                   RETURNING *""",
                (note, now, change_id),
            ).fetchone()
        )
        return _record(row)

    async def get_change(self, change_id: int) -> ChangeRecord | None:
        return _record(
            await self._call(lambda conn: conn.execute("SELECT * FROM changes WHERE id = ?", (change_id,)).fetchone())
        )

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

    async def due_changes(self, now: float) -> list[ChangeRecord]:
        """Changes background work must look at now, oldest first.

        Those whose `next_at` has come (an unknown outcome to check, an applied change to follow, an
        approval request to expire), and those in flight or half-requested by a run that is gone.
        """
        live = now - self.lock_ttl
        rows = await self._call(
            lambda conn: conn.execute(
                f"""SELECT * FROM changes
                    WHERE (next_at IS NOT NULL AND next_at <= ?
                           AND (state IN ('unknown', 'applied')
                                OR (state = 'awaiting_approval' AND root_ts IS NOT NULL)))
                       OR (state IN ('applying', 'sending') AND (run_id IS NULL OR run_id NOT IN ({_LIVE})))
                       OR (state = 'awaiting_approval' AND root_ts IS NULL
                           AND (run_id IS NULL OR run_id NOT IN ({_LIVE})))
                    ORDER BY id""",
                (now, live, self.run_id, live, self.run_id),
            ).fetchall()
        )
        return [ChangeRecord.model_validate(_row(r)) for r in rows]

    async def due_reverts(self, now: float) -> list[ChangeRecord]:
        """Changes whose automatic revert is due, or was running in a run that is gone, earliest first."""
        live = now - self.lock_ttl
        rows = await self._call(
            lambda conn: conn.execute(
                f"""SELECT * FROM changes
                    WHERE (revert_state = 'scheduled' AND revert_at <= ?)
                       OR (revert_state = 'running' AND (revert_run_id IS NULL OR revert_run_id NOT IN ({_LIVE})))
                    ORDER BY revert_at, id""",
                (now, live, self.run_id),
            ).fetchall()
        )
        return [ChangeRecord.model_validate(_row(r)) for r in rows]

    async def next_due_at(self) -> float | None:
        """When background work is due next: a look, an expiry, a revert, or another run going silent."""

        def earliest(conn: sqlite3.Connection) -> float | None:
            times = [
                conn.execute(
                    """SELECT MIN(next_at) FROM changes
                       WHERE next_at IS NOT NULL AND (state IN ('unknown', 'applied')
                             OR (state = 'awaiting_approval' AND root_ts IS NOT NULL))"""
                ).fetchone()[0],
                conn.execute("SELECT MIN(revert_at) FROM changes WHERE revert_state = 'scheduled'").fetchone()[0],
                # Work another run is doing (as due_changes and due_reverts see it): due when that run goes
                # silent, or at once when it ended or is not known at all.
                conn.execute(
                    """SELECT MIN(CASE WHEN r.run_id IS NULL THEN w.updated_at
                                       WHEN r.stopped_at IS NOT NULL THEN r.stopped_at
                                       ELSE r.heartbeat_at + ? END)
                       FROM (SELECT run_id AS owner, updated_at FROM changes
                             WHERE state IN ('applying', 'sending') OR (state = 'awaiting_approval' AND root_ts IS NULL)
                             UNION ALL
                             SELECT revert_run_id, updated_at FROM changes WHERE revert_state = 'running') AS w
                       LEFT JOIN runs AS r ON r.run_id = w.owner
                       WHERE w.owner IS NULL OR w.owner != ?""",
                    (self.lock_ttl, self.run_id),
                ).fetchone()[0],
            ]
            present = [t for t in times if t is not None]
            return min(present) if present else None

        return await self._call(earliest)

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

    async def release_claim(self, key: str) -> None:
        """Give a claimed key back: the request it guarded did nothing, so the same request may be made again."""
        await self._call(lambda conn: conn.execute("DELETE FROM dedup_keys WHERE key = ?", (key,)))

    # locks ------------------------------------------------------------------------------------------

    async def acquire_lock(self, cluster_key: str, *, user_id: str, summary: str, wait: float = 5.0) -> Fence:
        """Take the cluster's lock for this run, waiting up to `wait` seconds; returns its Fence.

        A lock past its `expires_at` (its run stopped renewing) or held by a run that ended is taken
        over. Raises LockBusy with the holder when the wait runs out.
        """
        if wait < 0:
            raise ValueError("wait must be ≥ 0")
        deadline = self._clock() + wait
        while True:
            # Take the wake-up event before looking, so a release between the look and the wait is not lost.
            released = self._released.setdefault(cluster_key, asyncio.Event())
            token = secrets.token_urlsafe(16)
            now = self._clock()
            holder = await self._call(
                partial(self._try_lock, cluster_key=cluster_key, token=token, user_id=user_id, summary=summary, now=now)
            )
            if holder.holder == token:
                self._held[cluster_key] = token
                return Fence(cluster_key, token)
            now = self._clock()
            remaining = deadline - now
            if remaining <= 0:
                raise LockBusy(holder)
            step = min(remaining, max(holder.expires_at - now, 0.0))
            if self._held.get(cluster_key) != holder.holder:
                # Held by another process: its release cannot wake us, so look again now and then.
                step = min(step, self._lock_recheck)
            await self._wait_released(released, step)

    def _try_lock(
        self, conn: sqlite3.Connection, *, cluster_key: str, token: str, user_id: str, summary: str, now: float
    ) -> LockHolder:
        with _transaction(conn):
            conn.execute(
                """INSERT INTO locks (cluster_key, holder, user_id, summary, acquired_at, expires_at, run_id)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (cluster_key) DO UPDATE SET holder = excluded.holder, user_id = excluded.user_id,
                       summary = excluded.summary, acquired_at = excluded.acquired_at,
                       expires_at = excluded.expires_at, run_id = excluded.run_id
                   WHERE locks.expires_at <= excluded.acquired_at
                      OR locks.run_id IN (SELECT run_id FROM runs WHERE stopped_at IS NOT NULL)""",
                (cluster_key, token, user_id, summary, now, now + self.lock_ttl, self.run_id),
            )
            row = conn.execute("SELECT * FROM locks WHERE cluster_key = ?", (cluster_key,)).fetchone()
        return LockHolder.model_validate(dict(row))

    async def _wait_released(self, released: asyncio.Event, seconds: float) -> None:
        wake = asyncio.ensure_future(released.wait())
        nap = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({wake, nap}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (wake, nap):
                task.cancel()

    async def release_lock(self, fence: Fence) -> None:
        """Release the lock if this fence still holds it (a lock taken over meanwhile is not touched)."""
        cluster_key, token = fence.cluster_key, fence.token
        try:
            await self._call(
                lambda conn: conn.execute(
                    "DELETE FROM locks WHERE cluster_key = ? AND holder = ?", (cluster_key, token)
                )
            )
        finally:
            if self._held.get(cluster_key) == token:
                del self._held[cluster_key]
            released = self._released.pop(cluster_key, None)
            if released is not None:
                released.set()

    async def holds_lock(self, fence: Fence) -> bool:
        """Whether `fence` still holds its lock now."""
        now = self._clock()
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT 1 FROM locks WHERE cluster_key = ? AND holder = ? AND expires_at > ?",
                (fence.cluster_key, fence.token, now),
            ).fetchone()
        )
        return row is not None

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

    async def purge_expired(self) -> int:
        """Delete dedup keys and drafts past their ttl, and runs ended over a day ago; returns how many rows went."""
        now = self._clock()

        def purge(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                gone = conn.execute("DELETE FROM dedup_keys WHERE expires_at <= ?", (now,)).rowcount
                gone += conn.execute("DELETE FROM drafts WHERE expires_at <= ?", (now,)).rowcount
                gone += conn.execute(
                    """DELETE FROM runs WHERE stopped_at IS NOT NULL AND stopped_at <= ?
                       AND run_id NOT IN (SELECT run_id FROM locks WHERE run_id IS NOT NULL)""",
                    (now - 86400,),
                ).rowcount
            return gone

        return await self._call(purge)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Any:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error: the write lock is taken before the first read."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextlib.asynccontextmanager
async def cluster_lock(
    store: Store, cluster_key: str, *, user_id: str, summary: str, wait: float = 5.0
) -> AsyncIterator[Fence]:
    """Hold the cluster's lock for the body of an `async with`; LockBusy when it cannot be had."""
    fence = await store.acquire_lock(cluster_key, user_id=user_id, summary=summary, wait=wait)
    try:
        yield fence
    finally:
        await store.release_lock(fence)


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


async def open_store(
    database: str, *, clock: Callable[[], float] = time.time, lock_ttl: float = LOCK_TTL_SECONDS
) -> Store:
    """Open the store RAYBOT_DATABASE names, applying missing migrations, and start this process's run."""
    store = SqliteStore(sqlite_path(database), clock=clock, lock_ttl=lock_ttl)
    await store.open()
    return store
