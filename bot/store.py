"""raybot's state: every change as one row moving through a state machine, plus drafts, dedup keys and locks.

One implementation for both databases, written once in SQLAlchemy Core (bot/schema.py holds the
tables) with Alembic migrations (bot/migrations): SQLite — a file, the default for one process and
for `raybot sandbox` — and PostgreSQL, which several replicas share.

A change is one row from request to settle (bot/change_state.py has the states): it moves only by
compare-and-set (`UPDATE … WHERE id = ? AND state IN (…)`), its `version` counts the moves, and a move
made on behalf of a cluster's lock holder is fenced: in the same transaction the lock row is read
(`FOR UPDATE` on PostgreSQL) and the move happens only while that lock is still held.
Approvals, temporary reverts and follows are states and columns of that row, not tables of their own.

Locks belong to a *run* (one process's life, `runs` table) that renews them with a heartbeat. A run
that stops renewing loses its locks within `lock_ttl`; a process that restarts on the same host ends
its previous run at once, releasing its locks and handing its in-flight changes to the reconciler.
Background work is claimed row by row with a lease (`claim_due`: `FOR UPDATE SKIP LOCKED` on
PostgreSQL), so each due step is taken by one replica and by another when that one dies.

SQLite is used with one pooled connection and `BEGIN IMMEDIATE` transactions (writers queue on the
file lock instead of failing on a read-then-write upgrade); PostgreSQL with a small pool that checks
connections before use, so raybot reconnects by itself after the database comes back.

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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Select, and_, case, delete, event, exists, func, insert, or_, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from bot.change_state import FINAL, REVERT_ALLOWED, check_move
from bot.change_state import outcome as outcome_of_state
from bot.emr.changes import redact_secrets
from bot.schema import changes, dedup_keys, drafts, locks, runs

log = logging.getLogger("raybot.store")

MIN_CLAIM_TTL = 600.0  # exactly-once keys live at least 10 minutes
BUSY_TIMEOUT_MS = 5000
LOCK_RECHECK_SECONDS = 0.5  # how often a waiter re-reads a lock held by another process
LOCK_TTL_SECONDS = 15.0  # a run that stops renewing loses its locks this long after its last heartbeat
MAX_DRAFT_KEY = 64
POOL_SIZE = 5  # PostgreSQL connections per replica (RAYBOT_DATABASE_POOL_SIZE): held a statement or two at a time
CONNECT_TIMEOUT_SECONDS = 5  # a database that does not answer is reported, not waited for
STATEMENT_TIMEOUT_MS = 10_000  # no statement of raybot's takes long; a stuck one must not hang a change
MIGRATION_LOCK = 7_262_001  # the PostgreSQL advisory lock that makes replicas starting together migrate once
MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Columns that hold JSON.
_JSON_COLUMNS = frozenset({"spec_before", "body", "diff", "replay", "data", "wanted"})
# Columns persisted masked.
_MASKED_COLUMNS = frozenset({"spec_before", "body"})
# What a background step may be waiting for, by state (see due_changes).
_TIMED_STATES = ("unknown", "applied", "awaiting_approval")
_IN_FLIGHT = ("applying", "sending")
# A change still "sending" this long after its call's deadline lost its outcome (the database refused it even to
# a live process, bot.flow.recorded): the reconciler takes it over whoever's run it is.
STALE_SENDING_SECONDS = 60.0
# Every move marks the change's root message to be rendered this long after, unless the mover renders it first
# (bot.flow.show_card clears the mark): a process that dies between a move and its render leaves the mark, and
# the reconciler renders the root from the row then. Longer than a render takes; short enough for a person.
CARD_RENDER_GRACE_SECONDS = 10.0
# A change whose cloud call may still land: no other change to its cluster is sent until it is decided.
_MAY_LAND = ("sending", "unknown")


class StoreError(Exception):
    """The store cannot do what was asked: bad database URL, schema too new, a refused transition, I/O."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now (down, restarting, refusing connections, timing out)."""


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
    lease_run: str | None = None  # the run handling its background step now …
    lease_until: float | None = None  # … until then (then another may take over)
    kept_by: str | None = None  # who pressed Keep it (the automatic revert was cancelled)
    undone_by: str | None = None  # who undid it (raybot's own user for an automatic revert) …
    undone_by_change: int | None = None  # … by which change …
    undone_at: float | None = None  # … once that change took effect
    card_due_at: float | None = None  # Slack refused to update its root message: render it again then
    card_attempts: int = 0

    @property
    def outcome(self) -> str:
        """done | failed | unknown | pending | not approved: the coarse outcome."""
        return outcome_of_state(self.state)

    @property
    def superseded(self) -> bool:
        """Took effect, then a later change to the same groups took effect before it settled (bot.scheduler): its
        follow ended there, saying so in `error_message` (superseded_reason). Only that says so: a change whose
        outcome was once in doubt keeps that doubt's message after it took effect, and may still run out of time."""
        return self.state == "not_settled" and (self.error_message or "").startswith(_SUPERSEDED_BY)


_SUPERSEDED_BY = "superseded by change #"


def superseded_reason(later_id: int) -> str:
    """The `error_message` of a change superseded by change `later_id` before it settled (ChangeRecord.superseded)."""
    return f"{_SUPERSEDED_BY}{later_id} before it settled"


class Due(NamedTuple):
    """A change leased to this run by `claim_due`, and which of its steps are due: the change's own, its revert's."""

    record: ChangeRecord
    change: bool
    revert: bool


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


# --- where the database is ----------------------------------------------------------------------------

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def database_url(database: str) -> URL:
    """The SQLAlchemy URL a RAYBOT_DATABASE value names.

    A plain path or `sqlite:///path` is a SQLite file (`sqlite:///rel.db` relative, `sqlite:////abs/x.db`
    absolute); `postgresql://` or `postgres://` is PostgreSQL through psycopg 3 (a password may come from
    the URL or from PGPASSWORD). Messages name only the scheme: the rest may carry a password.
    """
    if not database:
        raise StoreError("RAYBOT_DATABASE is empty: give a SQLite file path or a postgresql:// URL")
    match = _SCHEME.match(database)
    if match is None:
        return URL.create("sqlite+aiosqlite", database=database)
    scheme = match.group(1).lower()
    family = scheme.split("+")[0]
    if family == "sqlite":
        path = database[len("sqlite:///") :] if database.lower().startswith("sqlite:///") else ""
        if not path:
            raise StoreError("a sqlite URL needs a path: sqlite:///relative.db or sqlite:////absolute/path.db")
        return URL.create("sqlite+aiosqlite", database=path)
    if family in ("postgresql", "postgres"):
        try:
            url = make_url("postgresql" + database[len(match.group(1)) :])
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number (its text may be a password)
            raise StoreError(
                f"RAYBOT_DATABASE is a {scheme}:// URL that cannot be read: "
                "use postgresql://user[:password]@host[:port]/database"
            ) from None
        if not url.database:
            raise StoreError("a postgresql URL needs a database name: postgresql://user@host:5432/raybot")
        return url.set(drivername="postgresql+psycopg")
    raise StoreError(
        f"unsupported database URL scheme {scheme}://: use a SQLite file path, sqlite:///path or postgresql://…"
    )


def describe_database(url: URL) -> str:
    """The store in use, for people: "SQLite raybot.db" or "PostgreSQL raybot@db.internal:5432/raybot" (no password)."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite {url.database}"
    where = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"
    return f"PostgreSQL {url.username + '@' if url.username else ''}{where}"


def _engine(url: URL, pool_size: int = POOL_SIZE) -> AsyncEngine:
    if url.get_backend_name() == "sqlite":
        # One connection: SQLite has one writer anyway, and one connection keeps the old single-thread model.
        engine = create_async_engine(
            url, poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0, pool_timeout=BUSY_TIMEOUT_MS / 1000
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _configure(dbapi_connection: Any, _: Any) -> None:
            # Let us issue BEGIN ourselves (below); the driver's implicit transactions would be DEFERRED.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _switch_to_wal(cursor)
            # FULL: a change recorded before the cloud call must survive a power cut right after it.
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            # Take the write lock first: a read-then-write transaction cannot then fail on the upgrade.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=CONNECT_TIMEOUT_SECONDS,
        # A connection the server dropped (restart, failover, pg_terminate_backend) is replaced, not used.
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={STATEMENT_TIMEOUT_MS}",
            "application_name": "raybot",
        },
    )


def _switch_to_wal(cursor: Any) -> None:
    """PRAGMA journal_mode = WAL, waiting like busy_timeout would for another connection's lock.

    SQLite answers "database is locked" at once, without calling the busy handler, when another
    connection holds a lock on a file not yet in WAL mode: two processes opening a new file together.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:  # the driver's OperationalError; this runs inside the driver's thread
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


# --- rows -------------------------------------------------------------------------------------------------


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _param(column: str, value: Any) -> Any:
    if column in _MASKED_COLUMNS:
        value = redact_secrets(value)
    return _dumps(value) if column in _JSON_COLUMNS else value


def _values(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {c: _param(c, v) for c, v in fields.items()}


def _row(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    return {k: (json.loads(v) if k in _JSON_COLUMNS and v is not None else v) for k, v in data.items()}


def _record(row: Any) -> ChangeRecord | None:
    return None if row is None else ChangeRecord.model_validate(_row(row))


def _card_due(now: float) -> Any:
    """The mark a move puts on a change's root message (CARD_RENDER_GRACE_SECONDS); none while it has no root.

    Each move sets it anew, so a render of an earlier state (bot.flow.show_card) cannot clear a later move's mark.
    """
    return case((changes.c.root_ts.is_not(None), now + CARD_RENDER_GRACE_SECONDS), else_=changes.c.card_due_at)


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


_CHANGE_COLUMNS = frozenset(c.name for c in changes.columns) - {"id"}
# Columns a move may set besides the state (the state machine's own bookkeeping is set by the store).
_SETTABLE = _CHANGE_COLUMNS - {"created_at", "updated_at", "version", "state", "lease_run", "lease_until"}
_REVERT_FIELDS = frozenset({"revert_at", "revert_attempts", "revert_run_id", "revert_note"})
# Undoing or reverting a change records, on the change put back, which change did it and who.
_PUTS_BACK = ("undo", "revert")


# --- the store ------------------------------------------------------------------------------------------

# The runs open in this process: a new run on this host ends only runs that are not among them.
_LIVE_RUNS: set[str] = set()


class Store:
    """raybot's store on SQLite or PostgreSQL (`database`: a RAYBOT_DATABASE value or a SQLite path).

    Construct, then `await open()` (or use `open_store`): it migrates, starts this process's run and
    its heartbeat. `sleep` paces the re-check of a lock held by another process; waiters for a lock
    held in this process are woken by `release_lock` directly. `replica` names the host: a run that
    starts ends the earlier runs of its replica whose process is gone.
    """

    def __init__(
        self,
        database: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lock_recheck: float = LOCK_RECHECK_SECONDS,
        lock_ttl: float = LOCK_TTL_SECONDS,
        replica: str | None = None,
        heartbeat: bool = True,
        pool_size: int = POOL_SIZE,
    ) -> None:
        if lock_ttl <= 0:
            raise ValueError("lock_ttl must be > 0")
        self.url = database_url(str(database))
        self.description = describe_database(self.url)
        self.lock_ttl = lock_ttl
        self.replica = replica or socket.gethostname()
        self.run_id = secrets.token_hex(8)
        self._postgres = self.url.get_backend_name() == "postgresql"
        self._upsert = postgresql.insert if self._postgres else sqlite.insert
        self._clock = clock
        self._sleep = sleep
        self._lock_recheck = lock_recheck
        self._beat = heartbeat
        self._pool_size = pool_size
        self._engine: AsyncEngine | None = None
        self._closed = False
        self._heartbeat_task: asyncio.Task | None = None
        self._held: dict[str, str] = {}  # cluster_key -> token this instance holds
        self._unreleased: set[Fence] = set()  # locks let go whose release the database refused
        self._released: dict[str, asyncio.Event] = {}  # cluster_key -> set at the next release here

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- life ---------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, apply missing migrations (once across replicas), start this run and its heartbeat."""
        if self._engine is not None:
            raise StoreError("store is already open")
        self._engine = _engine(self.url, self._pool_size)
        # Known live in this process before its row exists: a store opening beside it must not end it.
        _LIVE_RUNS.add(self.run_id)
        try:
            await self._migrate()
            ended = await self._start_run()
        except BaseException:
            await self.close()
            raise
        if ended:
            log.info("ended %d earlier run(s) of %s: their locks are free", ended, self.replica)
        if self._beat:
            self._heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name="raybot-store-heartbeat")

    async def _migrate(self) -> None:
        from alembic import command
        from alembic.config import Config
        from alembic.util.exc import CommandError

        def upgrade(sync_connection: Any) -> None:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = sync_connection
            command.upgrade(config, "head")

        try:
            async with self._connect() as conn:
                # One transaction for the whole upgrade, begun before Alembic reads the schema's revision:
                # BEGIN IMMEDIATE takes SQLite's write lock, the advisory lock PostgreSQL's. Stores starting
                # together (replicas, processes, or stores of one process: Alembic's context is global) then
                # migrate one after the other: the first migrates, the others wait here and find nothing to do.
                await conn.begin()
                if self._postgres:
                    await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
                try:
                    await conn.run_sync(upgrade)
                except CommandError:
                    await conn.rollback()
                    await self._accept_newer_schema(conn)
                    return
                await conn.commit()
        except RuntimeError as error:  # the legacy SQLite path says when a file is too new
            raise StoreError(str(error)) from None

    async def _accept_newer_schema(self, conn: AsyncConnection) -> None:
        """A schema newer than this raybot: run on it if its migrations say this version still can (a rollback)."""
        current = await conn.run_sync(_current_revision)
        known = _known_revisions()
        try:
            oldest = (await conn.exec_driver_sql("SELECT oldest_compatible FROM schema_compat WHERE id = 1")).scalar()
        except SQLAlchemyError:
            oldest = None
        if oldest in known:
            log.warning(
                "the database's schema (%s) is newer than this raybot's (%s) and says %s still runs on it: "
                "running without migrating",
                current,
                _head_revision(),
                oldest,
            )
            return
        raise StoreError(
            f"the database's schema ({current}) is newer than this raybot knows ({_head_revision()}) and not "
            "compatible with it: upgrade raybot, or point RAYBOT_DATABASE at another database"
        )

    async def schema_status(self) -> SchemaStatus:
        """Which store this is and whether its migrations are current (for /readyz)."""
        async with self._connect() as conn:
            current = await conn.run_sync(_current_revision)
        return SchemaStatus(self.description, current, _head_revision())

    async def _start_run(self) -> int:
        """Register this run; end the earlier runs of this replica whose process is gone (or was this pid)."""
        now = self._clock()
        async with self._begin() as conn:
            earlier = (
                await conn.execute(
                    select(runs.c.run_id, runs.c.pid).where(runs.c.replica == self.replica, runs.c.stopped_at.is_(None))
                )
            ).all()
            # A container restarts with the same pid (1) and host name; on a host, a dead pid means a dead run.
            gone = [
                r.run_id
                for r in earlier
                if r.run_id not in _LIVE_RUNS and (r.pid == os.getpid() or not _pid_alive(r.pid))
            ]
            if gone:
                await conn.execute(update(runs).where(runs.c.run_id.in_(gone)).values(stopped_at=now))
                await conn.execute(delete(locks).where(locks.c.run_id.in_(gone)))
            await conn.execute(
                insert(runs).values(
                    run_id=self.run_id, replica=self.replica, pid=os.getpid(), started_at=now, heartbeat_at=now
                )
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
        """Tell the others this run is alive and renew every lock it holds now; returns how many were renewed.

        Only the locks still held here are renewed: one whose release the database refused (it was away) is
        deleted now, or runs out after its TTL — never kept alive by a run that let it go.
        """
        now = self._clock()
        unreleased = list(self._unreleased)
        held = list(self._held.values())
        async with self._begin() as conn:
            alive = await conn.execute(
                update(runs).where(runs.c.run_id == self.run_id, runs.c.stopped_at.is_(None)).values(heartbeat_at=now)
            )
            if not alive.rowcount:
                return 0
            for fence in unreleased:
                await conn.execute(
                    delete(locks).where(locks.c.cluster_key == fence.cluster_key, locks.c.holder == fence.token)
                )
            renewed = 0
            if held:
                renewed = (
                    await conn.execute(
                        update(locks)
                        .where(locks.c.run_id == self.run_id, locks.c.holder.in_(held))
                        .values(expires_at=now + self.lock_ttl)
                    )
                ).rowcount
        self._unreleased.difference_update(unreleased)
        return renewed

    async def ping(self) -> None:
        """One round trip to the database; StoreError when it cannot be reached."""
        async with self._connect() as conn:
            await conn.execute(select(1))

    async def close(self) -> None:
        """End this run (its locks are released) and close the connections; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        engine, self._engine = self._engine, None
        if engine is None:
            return
        _LIVE_RUNS.discard(self.run_id)
        try:
            async with engine.begin() as conn:
                await conn.execute(update(runs).where(runs.c.run_id == self.run_id).values(stopped_at=self._clock()))
                await conn.execute(delete(locks).where(locks.c.run_id == self.run_id))
        except (SQLAlchemyError, OSError) as error:
            log.warning("could not end run %s cleanly: %s", self.run_id, type(error).__name__)
        finally:
            await engine.dispose()

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection; database errors (unreachable, dropped, refused) become StoreError."""
        if self._closed or self._engine is None:
            raise StoreError("the store is closed")
        try:
            async with self._engine.connect() as conn:
                yield conn
        except (OperationalError, InterfaceError, OSError, TimeoutError) as error:
            if not _bad_statement(error):
                raise StoreUnavailable(f"cannot reach {self.description}: {_reason(error)}") from None
            raise StoreError(f"database error on {self.description}: {_reason(error)}") from None
        except SQLAlchemyError as error:
            raise StoreError(f"database error on {self.description}: {_reason(error)}") from None

    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction (BEGIN IMMEDIATE on SQLite), committed at the end, rolled back on error."""
        async with self._connect() as conn:
            async with conn.begin():
                yield conn

    async def _one(self, statement: Any) -> Any:
        async with self._begin() as conn:
            return (await conn.execute(statement)).first()

    async def _all(self, statement: Any) -> list[Any]:
        async with self._begin() as conn:
            return list((await conn.execute(statement)).all())

    async def _fenced(self, conn: AsyncConnection, fence: Fence, now: float) -> None:
        """Raise LockLost unless `fence` holds its lock now; the lock row stays locked until the commit."""
        held = await conn.execute(
            select(locks.c.holder)
            .where(locks.c.cluster_key == fence.cluster_key, locks.c.holder == fence.token, locks.c.expires_at > now)
            .with_for_update()
        )
        if held.first() is None:
            raise LockLost(f"the lock of {fence.cluster_key} is no longer held")

    # --- changes ------------------------------------------------------------------------------------

    async def create_change(self, change: NewChange, *, state: str, fence: Fence | None = None) -> ChangeRecord:
        """Record a new change as "applying" (fenced by the cluster's lock) or "awaiting_approval".

        Raises LockLost when `fence` is given and the lock is no longer held: nothing is recorded then.
        """
        if state not in ("applying", "awaiting_approval"):
            raise ValueError(f"a change starts as applying or awaiting_approval, not {state}")
        if state == "awaiting_approval" and change.expires_at is None:
            raise ValueError("a change awaiting approval needs expires_at")
        now = self._clock()
        values = _values(change.model_dump()) | {
            "created_at": now,
            "updated_at": now,
            "version": 0,
            "state": state,
            "run_id": self.run_id,
            "next_at": change.expires_at if state == "awaiting_approval" else None,
        }
        async with self._begin() as conn:
            if fence is not None:
                await self._fenced(conn, fence, now)
            row = (await conn.execute(insert(changes).values(values).returning(changes))).first()
        record = _record(row)
        assert record is not None
        return record

    async def set_thread(self, change_id: int, *, root_ts: str, thread_ts: str) -> None:
        now = self._clock()
        async with self._begin() as conn:
            result = await conn.execute(
                update(changes)
                .where(changes.c.id == change_id)
                .values(root_ts=root_ts, thread_ts=thread_ts, updated_at=now)
            )
        if result.rowcount == 0:
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
        values = _values(fields)
        if (to in FINAL or to == "applied") and "finished_at" not in values:
            # When it took effect (or ended otherwise) is kept when it settles later.
            values["finished_at"] = func.coalesce(changes.c.finished_at, now)
        statement = (
            update(changes)
            .where(changes.c.id == change_id, changes.c.state.in_(sources))
            .values(state=to, version=changes.c.version + 1, updated_at=now, card_due_at=_card_due(now), **values)
            .returning(changes)
        )
        async with self._begin() as conn:
            if fence is not None:
                await self._fenced(conn, fence, now)
            row = (await conn.execute(statement)).first()
            if row is not None and to == "applied":
                row = await self._took_effect(conn, row, now)
        return _record(row)

    @staticmethod
    async def _took_effect(conn: AsyncConnection, row: Any, now: float) -> Any:
        if row.undo_of is not None and row.action in _PUTS_BACK:
            # What the root message of the change put back says from now on: undone (or reverted) by whom.
            await conn.execute(
                update(changes)
                .where(changes.c.id == row.undo_of)
                .values(
                    undone_by=row.user_id,
                    undone_by_change=row.id,
                    undone_at=now,
                    card_due_at=_card_due(now),
                    updated_at=now,
                )
            )
        if row.undo_of is not None and row.action == "undo":
            # Undone by a person: the pending automatic revert of that change must not run any more.
            await conn.execute(
                update(changes)
                .where(changes.c.id == row.undo_of, changes.c.revert_state == "scheduled")
                .values(revert_state="cancelled", revert_note=f"undone by change #{row.id}", updated_at=now)
            )
        if row.duration_seconds is not None and row.revert_state is None:
            row = (
                await conn.execute(
                    update(changes)
                    .where(changes.c.id == row.id)
                    .values(revert_state="scheduled", revert_at=now + row.duration_seconds)
                    .returning(changes)
                )
            ).first()
        return row

    async def touch(self, change_id: int, *, state: str, **fields: Any) -> ChangeRecord | None:
        """Set `fields` of a change still in `state` (e.g. when to look again); None when it moved on."""
        unknown = set(fields) - _SETTABLE
        if unknown or not fields:
            raise ValueError(f"nothing or not settable: {', '.join(sorted(unknown)) or 'no fields'}")
        now = self._clock()
        return _record(
            await self._one(
                update(changes)
                .where(changes.c.id == change_id, changes.c.state == state)
                .values(version=changes.c.version + 1, updated_at=now, **_values(fields))
                .returning(changes)
            )
        )

    async def move_revert(
        self, change_id: int, to: str, *, from_: str | tuple[str, ...], **fields: Any
    ) -> ChangeRecord | None:
        """Move a change's automatic revert (compare-and-set on `revert_state`); None when it was not in `from_`."""
        sources = _states(from_)
        check_move(sources, to, REVERT_ALLOWED)
        if set(fields) - _REVERT_FIELDS:
            raise ValueError(f"a revert move sets only {', '.join(sorted(_REVERT_FIELDS))}")
        return _record(
            await self._one(
                update(changes)
                .where(changes.c.id == change_id, changes.c.revert_state.in_(sources))
                .values(revert_state=to, updated_at=self._clock(), card_due_at=_card_due(self._clock()), **fields)
                .returning(changes)
            )
        )

    async def cancel_revert(self, change_id: int, *, note: str, kept_by: str | None = None) -> ChangeRecord | None:
        """Keep a temporary change: its revert ends "cancelled", whether it is scheduled already or will be
        when the change takes effect (Keep it clicked while the change is still being sent). None when there
        is no revert left to cancel (it runs, ran, or was cancelled)."""
        not_yet = and_(
            changes.c.revert_state.is_(None),
            changes.c.duration_seconds.is_not(None),
            changes.c.state.in_(("applying", "sending", "unknown")),
        )
        return _record(
            await self._one(
                update(changes)
                .where(changes.c.id == change_id, or_(changes.c.revert_state == "scheduled", not_yet))
                .values(
                    revert_state="cancelled",
                    revert_note=note,
                    kept_by=kept_by,
                    updated_at=self._clock(),
                    card_due_at=_card_due(self._clock()),
                )
                .returning(changes)
            )
        )

    # --- root messages ------------------------------------------------------------------------------

    async def card_failed(self, change_id: int, *, retry_at: float) -> None:
        """Slack refused to update the change's root message: the reconciler renders it again at `retry_at`."""
        await self._one(
            update(changes)
            .where(changes.c.id == change_id)
            .values(card_due_at=retry_at, card_attempts=changes.c.card_attempts + 1)
            .returning(changes.c.id)
        )

    async def card_shown(self, change_id: int, *, due_at: float | None) -> None:
        """The root message shows the row as read with `card_due_at` = `due_at`: nothing left to render again,
        unless a move since marked it anew (then its mark stays)."""
        await self._one(
            update(changes)
            .where(changes.c.id == change_id, changes.c.card_due_at == due_at)
            .values(card_due_at=None, card_attempts=0)
            .returning(changes.c.id)
        )

    async def card_given_up(self, change_id: int) -> None:
        """Stop rendering a root message Slack keeps refusing (logged by the caller); a later move tries afresh."""
        await self._one(
            update(changes)
            .where(changes.c.id == change_id)
            .values(card_due_at=None, card_attempts=0)
            .returning(changes.c.id)
        )

    async def cards_due(self, now: float, limit: int = 20) -> list[ChangeRecord]:
        """Changes whose root message must be rendered now (a move not rendered since), earliest first."""
        rows = await self._all(
            select(changes)
            .where(changes.c.card_due_at.is_not(None), changes.c.card_due_at <= now)
            .order_by(changes.c.card_due_at, changes.c.id)
            .limit(limit)
        )
        return [ChangeRecord.model_validate(_row(r)) for r in rows]

    async def is_change_root(self, channel_id: str, ts: str) -> bool:
        """Whether the message `ts` of `channel_id` is the root message of one of raybot's changes."""
        found = await self._one(
            select(changes.c.id).where(changes.c.channel_id == channel_id, changes.c.root_ts == ts).limit(1)
        )
        return found is not None

    async def get_change(self, change_id: int) -> ChangeRecord | None:
        return _record(await self._one(select(changes).where(changes.c.id == change_id)))

    async def history(self, alias: str, limit: int = 10) -> list[ChangeRecord]:
        """The latest `limit` changes of one cluster alias, newest first."""
        if limit < 1:
            return []
        rows = await self._all(
            select(changes)
            .where(changes.c.alias == alias)
            .order_by(changes.c.created_at.desc(), changes.c.id.desc())
            .limit(limit)
        )
        return [ChangeRecord.model_validate(_row(r)) for r in rows]

    async def unresolved(self, workspace: str, cluster_id: str, region: str) -> ChangeRecord | None:
        """The oldest change of a cluster whose cloud call may still land: sent or being sent ("sending") and not
        yet known to have taken effect or not ("unknown"). None when there is none."""
        return _record(
            await self._one(
                select(changes)
                .where(
                    changes.c.workspace == workspace,
                    changes.c.cluster_id == cluster_id,
                    changes.c.region == region,
                    changes.c.state.in_(_MAY_LAND),
                )
                .order_by(changes.c.id)
                .limit(1)
            )
        )

    # --- background work ----------------------------------------------------------------------------

    def _live_runs(self, now: float) -> Select:
        """Runs known alive. A silent one (no heartbeat for the lock TTL) is taken for dead by the others; a run
        never takes itself for dead (its own heartbeat may be late after a stall): its own work is its own."""
        return select(runs.c.run_id).where(
            or_(
                and_(runs.c.stopped_at.is_(None), runs.c.heartbeat_at > now - self.lock_ttl),
                runs.c.run_id == self.run_id,
            )
        )

    def _change_due(self, now: float) -> Any:
        live = self._live_runs(now)
        orphaned = or_(changes.c.run_id.is_(None), changes.c.run_id.not_in(live))
        return or_(
            and_(
                changes.c.next_at.is_not(None),
                changes.c.next_at <= now,
                changes.c.state.in_(_TIMED_STATES),
                # A request still being posted by a live run expires only once it can be closed in Slack.
                or_(changes.c.state != "awaiting_approval", changes.c.root_ts.is_not(None)),
            ),
            and_(changes.c.state.in_(_IN_FLIGHT), orphaned),
            and_(changes.c.state == "awaiting_approval", changes.c.root_ts.is_(None), orphaned),
            and_(changes.c.state == "sending", changes.c.call_deadline_at <= now - STALE_SENDING_SECONDS),
        )

    def _revert_due(self, now: float) -> Any:
        live = self._live_runs(now)
        return or_(
            and_(changes.c.revert_state == "scheduled", changes.c.revert_at <= now),
            and_(
                changes.c.revert_state == "running",
                or_(changes.c.revert_run_id.is_(None), changes.c.revert_run_id.not_in(live)),
            ),
        )

    async def due_changes(self, now: float) -> list[ChangeRecord]:
        """Changes background work must look at now, oldest first.

        Those whose `next_at` has come (an unknown outcome to check, an applied change to follow, an
        approval request to expire), and those in flight or half-requested by a run that is gone.
        """
        rows = await self._all(select(changes).where(self._change_due(now)).order_by(changes.c.id))
        return [ChangeRecord.model_validate(_row(r)) for r in rows]

    async def due_reverts(self, now: float) -> list[ChangeRecord]:
        """Changes whose automatic revert is due, or was running in a run that is gone, earliest first."""
        rows = await self._all(select(changes).where(self._revert_due(now)).order_by(changes.c.revert_at, changes.c.id))
        return [ChangeRecord.model_validate(_row(r)) for r in rows]

    async def claim_due(self, now: float, *, lease: float, limit: int = 50) -> list[Due]:
        """Take the lease of up to `limit` due changes for this run, oldest first, saying what is due in each.

        A change leased by another live run is skipped (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the
        file lock on SQLite); a lease runs out after `lease` seconds, or when its run is gone (it stopped, or
        its heartbeat is older than the lock TTL), so a dead run's work is taken over.
        """
        change_due, revert_due = self._change_due(now), self._revert_due(now)
        # A lease is free when it ran out, or when the run holding it is gone (stopped, or silent a lock TTL).
        free = or_(
            changes.c.lease_until.is_(None),
            changes.c.lease_until <= now,
            changes.c.lease_run == self.run_id,
            changes.c.lease_run.not_in(self._live_runs(now)),
        )
        wanted = (
            select(
                changes.c.id,
                case((change_due, True), else_=False).label("change"),
                case((revert_due, True), else_=False).label("revert"),
            )
            .where(or_(change_due, revert_due), free)
            .order_by(changes.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=changes)
        )
        async with self._begin() as conn:
            flags = {r.id: (bool(r.change), bool(r.revert)) for r in (await conn.execute(wanted)).all()}
            if not flags:
                return []
            rows = (
                await conn.execute(
                    update(changes)
                    .where(changes.c.id.in_(list(flags)))
                    .values(lease_run=self.run_id, lease_until=now + lease)
                    .returning(changes)
                )
            ).all()
        records = sorted((ChangeRecord.model_validate(_row(r)) for r in rows), key=lambda r: r.id)
        return [Due(r, *flags[r.id]) for r in records]

    async def next_due_at(self) -> float | None:
        """When background work is due next: a look, an expiry, a revert, or another run's work falling to us.

        Work another run is doing (as due_changes and due_reverts see it) is due when that run goes silent,
        or at once when it ended or is not known at all. Work another run has claimed (`claim_due`) is due
        when its lease runs out: until then claim_due would not hand it to this run anyway.
        """
        lease_cols = (changes.c.lease_run, changes.c.lease_until)
        owned = union_all(
            select(changes.c.run_id.label("owner"), changes.c.updated_at, *lease_cols).where(
                or_(
                    changes.c.state.in_(_IN_FLIGHT),
                    and_(changes.c.state == "awaiting_approval", changes.c.root_ts.is_(None)),
                )
            ),
            select(changes.c.revert_run_id.label("owner"), changes.c.updated_at, *lease_cols).where(
                changes.c.revert_state == "running"
            ),
        ).subquery("w")
        falls_due = case(
            (runs.c.run_id.is_(None), owned.c.updated_at),
            (runs.c.stopped_at.is_not(None), runs.c.stopped_at),
            else_=runs.c.heartbeat_at + self.lock_ttl,
        )

        time_now = self._clock()

        def after_lease(due: Any, table: Any) -> Any:
            # Leased by another run: not ours before the lease runs out (a NULL lease_run is no lease).
            leased = and_(
                table.c.lease_run != self.run_id,
                table.c.lease_until > due,
                table.c.lease_run.in_(self._live_runs(time_now)),
            )
            return case((leased, table.c.lease_until), else_=due)

        async with self._begin() as conn:
            times = [
                (
                    await conn.execute(
                        select(func.min(after_lease(changes.c.next_at, changes))).where(
                            changes.c.next_at.is_not(None),
                            changes.c.state.in_(_TIMED_STATES),
                            or_(changes.c.state != "awaiting_approval", changes.c.root_ts.is_not(None)),
                        )
                    )
                ).scalar(),
                (
                    await conn.execute(
                        select(func.min(after_lease(changes.c.revert_at, changes))).where(
                            changes.c.revert_state == "scheduled"
                        )
                    )
                ).scalar(),
                (
                    await conn.execute(
                        select(func.min(after_lease(falls_due, owned)))
                        .select_from(owned.outerjoin(runs, runs.c.run_id == owned.c.owner))
                        .where(or_(owned.c.owner.is_(None), owned.c.owner != self.run_id))
                    )
                ).scalar(),
                (await conn.execute(select(func.min(changes.c.card_due_at)))).scalar(),
                (
                    # A change "sending" long past its call's deadline: its outcome was never written.
                    await conn.execute(
                        select(func.min(changes.c.call_deadline_at + STALE_SENDING_SECONDS)).where(
                            changes.c.state == "sending"
                        )
                    )
                ).scalar(),
            ]
        present = [t for t in times if t is not None]
        return min(present) if present else None

    # --- exactly-once -------------------------------------------------------------------------------

    async def claim(self, key: str, *, ttl: float = MIN_CLAIM_TTL) -> bool:
        """True for the first claimant of `key` within `ttl` seconds (≥ 600), False for every later one."""
        if ttl < MIN_CLAIM_TTL:
            raise ValueError(f"dedup keys live at least {MIN_CLAIM_TTL:.0f} s; ttl={ttl} is too short")
        if not key:
            raise ValueError("an empty dedup key")
        now = self._clock()
        # One statement: a live key is left alone (no row returned); an expired one is taken over.
        statement = self._upsert(dedup_keys).values(key=key, claimed_at=now, expires_at=now + ttl)
        statement = statement.on_conflict_do_update(
            index_elements=[dedup_keys.c.key],
            set_={"claimed_at": statement.excluded.claimed_at, "expires_at": statement.excluded.expires_at},
            where=dedup_keys.c.expires_at <= statement.excluded.claimed_at,
        ).returning(dedup_keys.c.key)
        return await self._one(statement) is not None

    async def release_claim(self, key: str) -> None:
        """Give a claimed key back: the request it guarded did nothing, so the same request may be made again."""
        async with self._begin() as conn:
            await conn.execute(delete(dedup_keys).where(dedup_keys.c.key == key))

    # --- locks --------------------------------------------------------------------------------------

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
            holder = await self._try_lock(cluster_key, token, user_id, summary, self._clock())
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

    async def _try_lock(self, cluster_key: str, token: str, user_id: str, summary: str, now: float) -> LockHolder:
        statement = self._upsert(locks).values(
            cluster_key=cluster_key,
            holder=token,
            user_id=user_id,
            summary=summary,
            acquired_at=now,
            expires_at=now + self.lock_ttl,
            run_id=self.run_id,
        )
        new = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=[locks.c.cluster_key],
            set_={c: getattr(new, c) for c in ("holder", "user_id", "summary", "acquired_at", "expires_at", "run_id")},
            where=or_(
                locks.c.expires_at <= new.acquired_at,
                locks.c.run_id.in_(select(runs.c.run_id).where(runs.c.stopped_at.is_not(None))),
            ),
        )
        async with self._begin() as conn:
            await conn.execute(statement)
            row = (await conn.execute(select(locks).where(locks.c.cluster_key == cluster_key))).first()
        return LockHolder.model_validate(dict(row._mapping))

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
            async with self._begin() as conn:
                await conn.execute(delete(locks).where(locks.c.cluster_key == cluster_key, locks.c.holder == token))
        except StoreError:
            self._unreleased.add(fence)  # released by the heartbeat once the database answers again
            raise
        finally:
            if self._held.get(cluster_key) == token:
                del self._held[cluster_key]
            released = self._released.pop(cluster_key, None)
            if released is not None:
                released.set()

    async def holds_lock(self, fence: Fence) -> bool:
        """Whether `fence` still holds its lock now."""
        now = self._clock()
        row = await self._one(
            select(locks.c.holder).where(
                locks.c.cluster_key == fence.cluster_key, locks.c.holder == fence.token, locks.c.expires_at > now
            )
        )
        return row is not None

    # --- drafts -------------------------------------------------------------------------------------

    async def put_draft(
        self, data: dict[str, Any], *, user_id: str, ttl: float = 3600.0, key: str | None = None
    ) -> str:
        """Keep modal state server-side; returns its key (new and random unless `key` is given)."""
        if key is None:
            key = secrets.token_urlsafe(24)
        elif not key or len(key) > MAX_DRAFT_KEY:
            raise ValueError(f"a draft key is 1–{MAX_DRAFT_KEY} characters")
        now = self._clock()
        statement = self._upsert(drafts).values(
            key=key, user_id=user_id, data=_dumps(data), created_at=now, expires_at=now + ttl
        )
        new = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=[drafts.c.key],
            set_={c: getattr(new, c) for c in ("user_id", "data", "created_at", "expires_at")},
        )
        async with self._begin() as conn:
            await conn.execute(statement)
        return key

    async def get_draft(self, key: str) -> dict[str, Any] | None:
        row = await self._one(select(drafts.c.data).where(drafts.c.key == key, drafts.c.expires_at > self._clock()))
        return None if row is None else json.loads(row.data)

    async def delete_draft(self, key: str) -> None:
        async with self._begin() as conn:
            await conn.execute(delete(drafts).where(drafts.c.key == key))

    async def purge_expired(self) -> int:
        """Delete dedup keys and drafts past their ttl, and runs ended over a day ago; returns how many rows went."""
        now = self._clock()
        async with self._begin() as conn:
            gone = (await conn.execute(delete(dedup_keys).where(dedup_keys.c.expires_at <= now))).rowcount
            gone += (await conn.execute(delete(drafts).where(drafts.c.expires_at <= now))).rowcount
            gone += (
                await conn.execute(
                    delete(runs).where(
                        runs.c.stopped_at.is_not(None),
                        runs.c.stopped_at <= now - 86400,
                        ~exists().where(locks.c.run_id == runs.c.run_id),
                    )
                )
            ).rowcount
        return gone


class SchemaStatus(NamedTuple):
    """The store in use and its migrations: `current` is None on a database raybot never migrated."""

    store: str
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        if self.up_to_date:
            return f"{self.store}, migrations current ({self.head})"
        if self.current is None:
            return (
                f"{self.store}, no raybot tables yet: raybot serve creates them at start (migrations up to {self.head})"
            )
        return (
            f"{self.store}, migrations pending: the database is at {self.current}, this raybot at {self.head} "
            "(raybot serve runs them at start)"
        )


def _head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head() or ""


def _known_revisions() -> set[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


def _current_revision(sync_connection: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_connection).get_current_revision()


async def inspect_store(database: str) -> SchemaStatus:
    """The store RAYBOT_DATABASE names and its migrations, read without changing anything (check-config)."""
    url = database_url(database)
    if url.get_backend_name() == "sqlite" and not await asyncio.to_thread(Path(url.database or "").exists):
        # Connecting would create the file: a check must leave no raybot.db behind where it was run.
        return SchemaStatus(f"{describe_database(url)} (not created yet)", None, _head_revision())
    engine = _engine(url)
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(_current_revision)
    except (SQLAlchemyError, OSError, TimeoutError) as error:
        raise StoreUnavailable(f"cannot reach {describe_database(url)}: {_reason(error)}") from None
    finally:
        await engine.dispose()
    return SchemaStatus(describe_database(url), current, _head_revision())


def _bad_statement(error: BaseException) -> bool:
    """SQLite raises OperationalError for a statement it cannot run too (a syntax error, no such table or
    column: SQLITE_ERROR), not only for a file it cannot use (busy, cannot open, I/O): that is no outage."""
    code = getattr(getattr(error, "orig", None), "sqlite_errorcode", None)
    return code is not None and code & 0xFF == 1  # SQLITE_ERROR, or one of its extended codes


def _reason(error: BaseException) -> str:
    """What the database said, in one line, without the statement or its parameters (they may hold data)."""
    orig = getattr(error, "orig", None) or error
    text = str(orig).strip().splitlines()
    return (text[0] if text else type(orig).__name__)[:300]


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


async def open_store(
    database: str,
    *,
    clock: Callable[[], float] = time.time,
    lock_ttl: float = LOCK_TTL_SECONDS,
    pool_size: int = POOL_SIZE,
) -> Store:
    """Open the store RAYBOT_DATABASE names, applying missing migrations, and start this process's run."""
    store = Store(database, clock=clock, lock_ttl=lock_ttl, pool_size=pool_size)
    await store.open()
    return store
