"""bot/store.py on both of its databases: a real SQLite file and a real PostgreSQL database.

Every behavioural test runs on SQLite and on PostgreSQL, through one of three fixtures: `db`, an empty
database at the head migration (a copy of a migrated SQLite file; the PostgreSQL database the tests
share, emptied); `own_db`, the same but a PostgreSQL database of the test's own, for tests that change
the schema or the database itself; `new_db`, a database nothing has touched (no SQLite file yet, a new
PostgreSQL database). The tests about one backend say so (`sqlite_only`, `postgres_only`, …): URL
parsing, the files raybot wrote before Alembic, two processes and WAL on SQLite; SKIP LOCKED, pooled
connections and reconnecting on PostgreSQL.

Time is a FakeClock; lock waits are paced by injected sleeps and heartbeats are called explicitly
(stores are built with `heartbeat=False`), so no expiry, lease or lock wait here waits on the wall clock.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import bot.store
from bot.change_state import ALLOWED, FINAL, STATES, TransitionError
from bot.emr.changes import DiffEntry
from bot.schema import metadata
from bot.store import (
    MIGRATIONS_DIR,
    ChangeRecord,
    LockBusy,
    LockLost,
    NewChange,
    Store,
    StoreError,
    StoreUnavailable,
    _switch_to_wal,
    cluster_lock,
    database_url,
    describe_database,
    inspect_store,
    open_store,
)
from tests.postgres import database_name, fresh_database, server_url, terminate_connections

T0 = 1_700_000_000.0
TTL = 15.0  # the stores' lock_ttl (the default)
GUARD = 10.0  # turns a hang into a failure; never reached when the store works
HEAD = bot.store._head_revision()  # the newest revision in bot/migrations ("0002")
NEXT = "9001"  # a revision newer than any of bot/migrations: what a later raybot's migration would be
ROOT = Path(__file__).resolve().parents[1]

sqlite_only = pytest.mark.parametrize("db", ["sqlite"], indirect=True)
postgres_only = pytest.mark.parametrize("db", ["postgresql"], indirect=True)
own_postgres_only = pytest.mark.parametrize("own_db", ["postgresql"], indirect=True)
new_sqlite_only = pytest.mark.parametrize("new_db", ["sqlite"], indirect=True)


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class AdvancingSleep:
    """A sleep that lets fake time pass at once (then yields to the loop once)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


class ParkedSleep:
    """A sleep that never ends by itself: shows who is waiting, and for how long they asked."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.asked = asyncio.Event()
        self._naps: list[asyncio.Future[None]] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        nap: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._naps.append(nap)
        self.asked.set()
        await nap

    async def next_call(self) -> None:
        await self.asked.wait()
        self.asked.clear()

    def wake_all(self) -> None:
        for nap in self._naps:
            if not nap.done():
                nap.set_result(None)


# --- the databases under test --------------------------------------------------------------------------


@dataclass(frozen=True)
class Db:
    """A database under test: its RAYBOT_DATABASE value, and raw access that goes around the store."""

    url: str

    @property
    def postgres(self) -> bool:
        return self.url.startswith("postgresql://")

    @property
    def path(self) -> Path:
        assert not self.postgres
        return Path(self.url)

    def raw(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement (`?` placeholders) in a connection of its own, committed; its rows."""
        if self.postgres:
            with psycopg.connect(self.url, autocommit=True) as conn:
                cursor = conn.execute(statement.replace("?", "%s"), params)
                return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                return conn.execute(statement, params).fetchall()
        finally:
            conn.close()

    def tables(self) -> set[str]:
        if self.postgres:
            rows = self.raw("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        else:
            rows = self.raw("SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'sqlite_sequence'")
        return {name for (name,) in rows}

    def revision(self) -> list[tuple[str]]:
        return self.raw("SELECT version_num FROM alembic_version")

    def sync_engine(self) -> sa.Engine:
        url = database_url(self.url)
        return sa.create_engine(url.set(drivername="postgresql+psycopg" if self.postgres else "sqlite"))


def alembic_config(directory: Path = MIGRATIONS_DIR) -> Config:
    config = Config()
    config.set_main_option("script_location", str(directory))
    return config


def upgrade_to(db: Db, revision: str) -> None:
    """Migrate with Alembic directly, as far as `revision` (the store always goes to the head)."""
    engine = db.sync_engine()
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def shape(db: Db) -> dict[str, tuple[set[tuple[str, bool]], set[str]]]:
    """Each table of bot/schema.py as the database has it: its columns (name, nullable) and index names."""
    engine = db.sync_engine()
    try:
        inspector = sa.inspect(engine)
        found = {}
        for table in metadata.tables:
            keys = set(inspector.get_pk_constraint(table)["constrained_columns"])
            columns = {(c["name"], bool(c["nullable"]) and c["name"] not in keys) for c in inspector.get_columns(table)}
            found[table] = (columns, {i["name"] for i in inspector.get_indexes(table)})
        return found
    finally:
        engine.dispose()


SCHEMA = {
    table.name: (
        {(c.name, bool(c.nullable) and not c.primary_key) for c in table.columns},
        {i.name for i in table.indexes},
    )
    for table in metadata.tables.values()
}


@pytest.fixture(scope="session")
def files_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the SQLite files go: in memory when the machine has /dev/shm (SQLite locks files there as on a
    disk; only its fsyncs, one per commit with synchronous = FULL, cost nothing)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path_factory.mktemp("store")
        return
    root = Path(tempfile.mkdtemp(prefix="raybot-test-store-", dir=shm))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def files(files_root: Path) -> Iterator[Path]:
    """A directory of this test's own for its SQLite files."""
    directory = Path(tempfile.mkdtemp(dir=files_root))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def sqlite_template(files_root: Path) -> Path:
    """A SQLite file at the head migration (in WAL mode), copied for each test: migrating costs more than a test."""
    path = files_root / "template.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    upgrade_to(Db(str(path)), "head")
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A PostgreSQL database at the head migration, copied for the tests that need a database of their own."""
    with fresh_database() as url:
        upgrade_to(Db(url), "head")
        yield database_name(url)


@pytest.fixture(scope="session")
def postgres_shared(postgres_template: str) -> Iterator[Db]:
    """The PostgreSQL database most tests share, emptied before each: creating a database costs more than a test.

    Its commits do not wait for the disk (synchronous_commit off): what survives a server crash is not tested here.
    """
    with fresh_database(template=postgres_template) as url:
        shared = Db(url)
        shared.raw(f'ALTER DATABASE "{database_name(url)}" SET synchronous_commit = off')
        yield shared


EMPTY = """DELETE FROM changes; DELETE FROM locks; DELETE FROM runs; DELETE FROM drafts; DELETE FROM dedup_keys;
    SELECT setval(pg_get_serial_sequence('changes', 'id'), 1, false)"""


def sqlite_copy(request: pytest.FixtureRequest) -> Db:
    path = request.getfixturevalue("files") / "raybot.db"
    shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
    return Db(str(path))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> Db:
    """An empty database at the head migration, of each backend: a copy of a migrated SQLite file, or the
    shared PostgreSQL database emptied."""
    if request.param == "sqlite":
        return sqlite_copy(request)
    shared: Db = request.getfixturevalue("postgres_shared")
    with psycopg.connect(shared.url, autocommit=True) as conn:
        conn.execute(EMPTY)
    return shared


@pytest.fixture(params=["sqlite", "postgresql"])
def own_db(request: pytest.FixtureRequest) -> Iterator[Db]:
    """Like `db`, but a PostgreSQL database of the test's own: for tests that change the schema or the database."""
    if request.param == "sqlite":
        yield sqlite_copy(request)
        return
    with fresh_database(template=request.getfixturevalue("postgres_template")) as url:
        yield Db(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def new_db(request: pytest.FixtureRequest) -> Iterator[Db]:
    """A database nothing has touched yet, of each backend (SQLite: no file yet; PostgreSQL: a new database)."""
    if request.param == "sqlite":
        yield Db(str(request.getfixturevalue("files") / "raybot.db"))
        return
    with fresh_database() as url:
        yield Db(url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(db: Db, clock: FakeClock, **options: Any) -> Store:
    """A store whose heartbeat the test drives (no background loop) and whose lock waits pass fake time."""
    options.setdefault("heartbeat", False)
    options.setdefault("sleep", AdvancingSleep(clock))
    options.setdefault("lock_ttl", TTL)
    return Store(db.url, clock=clock, **options)


@pytest.fixture
async def store(db: Db, clock: FakeClock) -> AsyncIterator[Store]:
    async with make(db, clock) as s:
        yield s


def new_change(**overrides: Any) -> NewChange:
    fields: dict[str, Any] = {
        "team_id": "T1",
        "user_id": "U1",
        "channel_id": "C1",
        "thread_ts": None,
        "root_ts": None,
        "alias": "prod",
        "workspace": "w-1",
        "cluster_id": "rc-1",
        "region": "cn-hangzhou",
        "action": "resize",
        "summary": "WorkerGroup1 replica 2 → 10",
        "spec_before": {"workerSpec": [{"groupName": "WorkerGroup1", "replica": 2}]},
        "body": {"workerSpec": [{"groupName": "WorkerGroup1", "replica": 10}]},
        "diff": [{"path": "workerSpec[WorkerGroup1].replica", "before": 2, "after": 10}],
    }
    return NewChange(**(fields | overrides))


# How a change gets to each state that has moves out of it, from the state it is created in.
PATHS: dict[str, tuple[str, ...]] = {
    "awaiting_approval": (),
    "applying": (),
    "sending": ("sending",),
    "unknown": ("sending", "unknown"),
    "applied": ("sending", "applied"),
}


async def reach(store: Store, state: str, **overrides: Any) -> ChangeRecord:
    """A new change moved along the state machine until it is in `state`."""
    if state == "awaiting_approval":
        overrides.setdefault("expires_at", T0 + 3600)
        record = await store.create_change(new_change(**overrides), state="awaiting_approval")
    else:
        record = await store.create_change(new_change(**overrides), state="applying")
    for step in PATHS[state]:
        moved = await store.move(record.id, step, from_=record.state)
        assert moved is not None
        record = moved
    assert record.state == state
    return record


async def due_now(store: Store, state: str = "unknown", at: float = T0) -> ChangeRecord:
    """A change whose background look is due at `at` (an unknown outcome to check, by default)."""
    record = await store.touch((await reach(store, state)).id, state=state, next_at=at)
    assert record is not None
    return record


def dead_pid() -> int:
    """A pid no process can have: above the kernel's largest."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1000
    except OSError:
        return 2**31 - 1


def previous_run(
    db: Db, run_id: str, *, replica: str, pid: int, lock: str | None = None, heartbeat_at: float = T0
) -> None:
    """A run an earlier process left behind (never ended), maybe holding a lock it renewed last at `heartbeat_at`."""
    db.raw(
        "INSERT INTO runs (run_id, replica, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
        run_id,
        replica,
        pid,
        T0,
        heartbeat_at,
    )
    if lock is not None:
        db.raw(
            """INSERT INTO locks (cluster_key, holder, user_id, summary, acquired_at, expires_at, run_id)
               VALUES (?, ?, 'U0', 'left behind', ?, ?, ?)""",
            lock,
            f"token-of-{run_id}",
            T0,
            heartbeat_at + TTL,
            run_id,
        )


def ended_at(db: Db, run_id: str) -> float | None:
    ((stopped,),) = db.raw("SELECT stopped_at FROM runs WHERE run_id = ?", run_id)
    return stopped


def ids(due: list[Any]) -> list[int]:
    """The change ids of what due_changes/due_reverts (records) or claim_due (Due) returned."""
    return [getattr(d, "record", d).id for d in due]


# --- where the database is (no database needed) ----------------------------------------------------------


def test_database_url_reads_sqlite_paths_and_urls() -> None:
    for value, path in (
        ("raybot.db", "raybot.db"),
        ("/var/lib/raybot/raybot.db", "/var/lib/raybot/raybot.db"),
        ("sqlite:///relative.db", "relative.db"),
        ("sqlite:////abs/x.db", "/abs/x.db"),
        ("SQLITE:///upper.db", "upper.db"),
    ):
        url = database_url(value)
        assert (url.drivername, url.database) == ("sqlite+aiosqlite", path), value
        assert describe_database(url) == f"SQLite {path}"


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://raybot:s3cret@db.internal:5432/raybot",
        "postgres://raybot:s3cret@db.internal:5432/raybot",
        "POSTGRES://raybot:s3cret@db.internal:5432/raybot",
        "postgresql+psycopg://raybot:s3cret@db.internal:5432/raybot",
    ],
)
def test_postgresql_urls_use_psycopg_and_are_described_without_the_password(value: str) -> None:
    url = database_url(value)
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
        "postgresql+psycopg",
        "raybot",
        "s3cret",  # kept for connecting …
        "db.internal",
        5432,
        "raybot",
    )
    assert describe_database(url) == "PostgreSQL raybot@db.internal:5432/raybot"  # … never shown
    assert "s3cret" not in str(url) and "s3cret" not in repr(url)
    # No user, host or port: libpq's defaults (and PGPASSWORD) apply.
    assert describe_database(database_url("postgresql:///raybot")) == "PostgreSQL localhost:5432/raybot"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "mysql://raybot:s3cret@db/raybot",
        "sqlite://",
        "sqlite://relative.db",
        "postgresql://raybot:s3cret@db.internal:5432",
        "postgresql://raybot:s3cret@db.internal:5432/",
        "postgresql://raybot@db.internal:s3cret/raybot",
        "postgres://raybot:s3cret@[::1/raybot",
    ],
)
def test_other_database_values_are_refused_without_the_password(value: str) -> None:
    with pytest.raises(StoreError) as caught:
        database_url(value)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(StoreError):
        Store(value)


# --- opening and migrations --------------------------------------------------------------------------


async def test_opening_a_new_database_migrates_it_to_the_head(new_db: Db, clock: FakeClock) -> None:
    async with make(new_db, clock) as store:
        assert new_db.revision() == [(HEAD,)]
        assert new_db.tables() == {*metadata.tables, "alembic_version", "schema_compat"}
        assert shape(new_db) == SCHEMA  # the migrations make exactly what bot/schema.py describes
        assert new_db.raw("SELECT id, oldest_compatible FROM schema_compat") == [(1, "0002")]
        async with store._connect() as conn:
            if new_db.postgres:
                settings = await conn.exec_driver_sql(
                    "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
                    "current_setting('application_name')"
                )
                assert tuple(settings.one()) == ("10s", "10s", "raybot")
            else:
                pragmas = [
                    (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                    for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
                ]
                assert pragmas == ["wal", 1, 2, 5000]  # synchronous 2 is FULL
    if not new_db.postgres:
        assert new_db.raw("PRAGMA journal_mode") == [("wal",)]


async def test_schema_status_is_current_after_open(new_db: Db, clock: FakeClock) -> None:
    before = await inspect_store(new_db.url)
    assert (before.current, before.head, before.up_to_date) == (None, HEAD, False)
    assert before.describe() == (
        f"{before.store}, no raybot tables yet: raybot serve creates them at start (migrations up to {HEAD})"
    )
    async with make(new_db, clock) as store:
        status = await store.schema_status()
        assert (status.current, status.head, status.up_to_date) == (HEAD, HEAD, True)
        assert status.store == store.description
        assert status.store == describe_database(database_url(new_db.url))
        assert status.describe() == f"{status.store}, migrations current ({HEAD})"
    assert await inspect_store(new_db.url) == status


async def test_reopening_keeps_data_and_does_not_migrate_again(new_db: Db, clock: FakeClock) -> None:
    async with make(new_db, clock) as first:
        made = await first.create_change(new_change(), state="applying")
    clock.advance(60)
    async with make(new_db, clock) as second:
        assert await second.get_change(made.id) == made
    assert new_db.revision() == [(HEAD,)]


async def test_stores_opening_one_new_database_together_migrate_it_once(new_db: Db, clock: FakeClock) -> None:
    # Replicas starting at the same moment: one migrates, the others wait for it and find nothing to do.
    stores = [make(new_db, clock, replica=f"replica-{n}") for n in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        for s in stores:
            assert (await s.schema_status()).up_to_date
        made = await stores[0].create_change(new_change(), state="applying")
        assert await stores[-1].get_change(made.id) == made
    finally:
        for s in stores:
            await s.close()
    assert new_db.revision() == [(HEAD,)]
    assert new_db.raw("SELECT COUNT(*) FROM runs") == [(4,)]
    assert new_db.raw("SELECT COUNT(*) FROM schema_compat") == [(1,)]


async def test_a_database_at_0001_gets_the_rest_and_keeps_its_rows(new_db: Db, clock: FakeClock) -> None:
    # A database the previous raybot migrated (0001), with a change of its in it.
    upgrade_to(new_db, "0001")
    new_db.raw(
        """INSERT INTO changes (created_at, updated_at, version, state, user_id, channel_id, alias, workspace,
               cluster_id, region, action, summary, diff, next_at)
           VALUES (?, ?, 3, 'unknown', 'U1', 'C1', 'prod', 'w-1', 'rc-1', 'cn-hangzhou', 'resize', 'old', '[]', ?)""",
        T0 - 10,
        T0 - 10,
        T0 - 5,
    )
    async with make(new_db, clock) as store:
        (old,) = await store.history("prod")
        assert (old.state, old.version, old.summary, old.lease_run, old.lease_until) == (
            "unknown",
            3,
            "old",
            None,
            None,
        )
        (due,) = await store.claim_due(clock(), lease=60)
        assert (due.record.id, due.change, due.revert, due.record.lease_until) == (old.id, True, False, T0 + 60)
    assert new_db.revision() == [(HEAD,)]
    assert shape(new_db) == SCHEMA


@pytest.fixture
def extra_migration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Give this raybot one more migration, NEXT, whose upgrade() is `body` (a copy of bot/migrations plus it)."""

    def add(body: str) -> None:
        directory = tmp_path / "migrations"
        shutil.copytree(MIGRATIONS_DIR, directory, ignore=shutil.ignore_patterns("__pycache__"))
        (directory / "versions" / f"{NEXT}_test.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f'revision = "{NEXT}"\ndown_revision = "{HEAD}"\nbranch_labels = None\ndepends_on = None\n\n\n'
            f"def upgrade() -> None:\n{body}\n\n\ndef downgrade() -> None:\n    pass\n"
        )
        monkeypatch.setattr(bot.store, "MIGRATIONS_DIR", directory)

    return add


async def test_opening_applies_only_the_missing_migrations(
    own_db: Db, clock: FakeClock, extra_migration: Callable[[str], None]
) -> None:
    async with make(own_db, clock) as store:
        made = await store.create_change(new_change(), state="applying")
    extra_migration(
        '    op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("text", sa.Text))\n'
        f"    op.execute(\"UPDATE schema_compat SET oldest_compatible = '{HEAD}'\")"
    )
    clock.advance(1)
    async with make(own_db, clock) as store:
        assert await store.get_change(made.id) == made
        status = await store.schema_status()
        assert (status.current, status.head) == (NEXT, NEXT)
    assert own_db.revision() == [(NEXT,)]
    assert own_db.raw("SELECT COUNT(*) FROM notes") == [(0,)]
    assert own_db.raw("SELECT oldest_compatible FROM schema_compat") == [(HEAD,)]


async def test_a_failing_migration_leaves_the_database_as_it_was(
    own_db: Db, clock: FakeClock, extra_migration: Callable[[str], None]
) -> None:
    extra_migration('    op.create_table("half", sa.Column("id", sa.Integer))\n    op.execute("THIS IS NOT SQL")')
    store = make(own_db, clock)
    with pytest.raises(StoreError, match="syntax error") as caught:
        await store.open()
    assert not isinstance(caught.value, StoreUnavailable)  # a bug to fix, not a database that is away
    with pytest.raises(StoreError, match="closed"):
        await store.get_change(1)
    assert own_db.revision() == [(HEAD,)]
    assert "half" not in own_db.tables()
    assert own_db.raw("SELECT COUNT(*) FROM runs") == [(0,)]


async def test_a_newer_revision_is_used_only_if_it_says_this_raybot_still_runs_on_it(
    own_db: Db, clock: FakeClock
) -> None:
    # A newer raybot migrated this database to NEXT (adding a column) and wrote down the oldest revision that
    # still runs on what it left: a rollback, or an old replica in a rolling update, reads it there.
    own_db.raw("ALTER TABLE changes ADD COLUMN priority INTEGER")
    own_db.raw("UPDATE alembic_version SET version_num = ?", NEXT)

    async def refused() -> None:
        store = make(own_db, clock)
        with pytest.raises(StoreError, match=rf"schema \({NEXT}\) is newer than this raybot knows \({HEAD}\)"):
            await store.open()
        with pytest.raises(StoreError, match="closed"):
            await store.get_change(1)

    for oldest in (NEXT, "9000"):  # only raybots of NEXT or later, or one this raybot never heard of
        own_db.raw("UPDATE schema_compat SET oldest_compatible = ?", oldest)
        await refused()
    for oldest in ("0001", HEAD):  # this raybot, or an older one still
        own_db.raw("UPDATE schema_compat SET oldest_compatible = ?", oldest)
        async with make(own_db, clock) as store:
            made = await reach(store, "applied", duration_seconds=60)
            assert await store.get_change(made.id) == made
            status = await store.schema_status()
            assert (status.current, status.head, status.up_to_date) == (NEXT, HEAD, False)
    own_db.raw("DROP TABLE schema_compat")  # says nothing
    await refused()
    assert own_db.revision() == [(NEXT,)]  # never migrated, in either direction
    assert own_db.raw("SELECT priority FROM changes") == [(None,), (None,)]
    assert own_db.raw("SELECT COUNT(*) FROM runs") == [(2,)]  # the refused ones never started a run


async def test_an_unopenable_sqlite_path_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="unable to open"):
        await open_store(str(tmp_path / "missing-dir" / "raybot.db"))


async def test_open_store_accepts_sqlite_paths_and_urls(tmp_path: Path, clock: FakeClock) -> None:
    for database in (str(tmp_path / "a.db"), f"sqlite:///{tmp_path / 'b.db'}"):
        store = await open_store(database, clock=clock)
        try:
            made = await store.create_change(new_change(), state="applying")
            assert made.created_at == T0
            assert store.description == f"SQLite {database.removeprefix('sqlite:///')}"
        finally:
            await store.close()
    assert (tmp_path / "a.db").exists() and (tmp_path / "b.db").exists()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_an_unreachable_postgresql_is_store_unavailable_without_the_password(clock: FakeClock) -> None:
    url = f"postgresql://raybot:s3cret@127.0.0.1:{closed_port()}/raybot"
    store = Store(url, clock=clock, heartbeat=False)
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    message = str(caught.value)
    assert message.startswith("cannot reach PostgreSQL raybot@127.0.0.1:") and "s3cret" not in message
    with pytest.raises(StoreError, match="closed"):
        await store.ping()
    with pytest.raises(StoreUnavailable) as caught:
        await inspect_store(url)
    assert "s3cret" not in str(caught.value)


@own_postgres_only
async def test_ping_recovers_when_the_database_drops_its_connections(own_db: Db, clock: FakeClock) -> None:
    async with make(own_db, clock) as store:
        made = await store.create_change(new_change(), state="applying")
        await store.ping()
        # A failover: every connection is cut; the pool replaces them instead of failing with them.
        assert terminate_connections(own_db.url) >= 1
        await store.ping()
        assert await store.get_change(made.id) == made
        # Down for a while: reported as unavailable, not as a bug; back, it works again by itself.
        fence = await store.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        admin, name = Db(server_url()), database_name(own_db.url)
        admin.raw(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            assert terminate_connections(own_db.url) >= 1
            with pytest.raises(StoreUnavailable, match=f"^cannot reach {store.description}: "):
                await store.ping()
            with pytest.raises(StoreUnavailable):
                await store.claim("while-down")
            with pytest.raises(StoreUnavailable):
                await store.heartbeat()
        finally:
            admin.raw(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await store.ping()
        assert await store.heartbeat() == 1 and await store.holds_lock(fence)
        assert await store.claim("after") is True


# --- SQLite only: two processes, WAL --------------------------------------------------------------------

CHILD = """
import asyncio, sys
import aiosqlite, alembic.command, alembic.runtime.migration  # imported before the start, not after it
from bot.store import Store

async def main():
    store = Store(sys.argv[1], heartbeat=False, replica=sys.argv[2])
    print("ready", flush=True)
    sys.stdin.readline()
    async with store:
        print(len(await store.history("prod")), flush=True)

asyncio.run(main())
"""


@new_sqlite_only
def test_two_processes_opening_one_new_sqlite_file_at_once(new_db: Db) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, new_db.url, f"host-{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for n in range(2)
    ]
    try:
        for process in processes:
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
        for process in processes:  # go, both at once
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [process.communicate(timeout=GUARD) for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [(process.returncode, out, err) for process, (out, err) in zip(processes, results, strict=True)] == [
        (0, "0\n", ""),
        (0, "0\n", ""),
    ]
    assert new_db.revision() == [(HEAD,)]
    assert new_db.raw("PRAGMA journal_mode") == [("wal",)]
    assert new_db.raw("SELECT COUNT(*) FROM runs WHERE stopped_at IS NOT NULL") == [(2,)]


class FakeTime(types.SimpleNamespace):
    """bot.store's `time` module for _switch_to_wal: a monotonic clock that its naps move."""

    def __init__(self, on_nap: Callable[[int], None] = lambda n: None) -> None:
        super().__init__(now=0.0, naps=[], on_nap=on_nap, time=time.time)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds
        self.on_nap(len(self.naps))


@new_sqlite_only
async def test_opening_a_new_file_another_process_is_writing_waits_for_it(
    new_db: Db, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process is creating the file: switching it to WAL must wait for its lock, not fail at once.
    other = sqlite3.connect(new_db.path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
        fake = FakeTime(lambda naps: other.execute("COMMIT") if naps == 3 else None)  # it commits meanwhile
        monkeypatch.setattr(bot.store, "time", fake)
        async with make(new_db, clock) as store:
            assert await store.get_change(1) is None
        assert fake.naps == [0.01, 0.01, 0.01]
    finally:
        other.close()
    assert new_db.raw("PRAGMA journal_mode") == [("wal",)]
    assert new_db.revision() == [(HEAD,)]
    assert "notes" in new_db.tables()


def test_switch_to_wal_gives_up_after_the_busy_timeout_and_on_other_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None)
    mine = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
        fake = FakeTime()
        monkeypatch.setattr(bot.store, "time", fake)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _switch_to_wal(mine.cursor())
        assert bot.store.BUSY_TIMEOUT_MS / 1000 <= fake.now < bot.store.BUSY_TIMEOUT_MS / 1000 + 0.02
        other.execute("COMMIT")
        naps = len(fake.naps)
        cursor = mine.cursor()
        mine.close()
        with pytest.raises(sqlite3.ProgrammingError):  # not a lock: raised at once
            _switch_to_wal(cursor)
        assert len(fake.naps) == naps
    finally:
        other.close()
        mine.close()


# --- SQLite only: files raybot wrote before Alembic (schema_version 1–3) --------------------------------


def migration_0001() -> types.ModuleType:
    """bot/migrations/versions/0001_state_machine.py, whose LEGACY_* statements built the old files."""
    path = MIGRATIONS_DIR / "versions" / "0001_state_machine.py"
    spec = importlib.util.spec_from_file_location("raybot_migration_0001", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def legacy_database(path: Path, version: int) -> sqlite3.Connection:
    """A SQLite file as raybot with schema version `version` (1–3) left it, empty; an open connection to it."""
    legacy = migration_0001()
    versions = (*legacy.LEGACY_V1_V2, legacy.LEGACY_V3)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    for number, statements in enumerate(versions[:version], start=1):
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (number, T0))
    return conn


V2_CHANGE = """INSERT INTO changes (id, created_at, updated_at, team_id, user_id, channel_id, thread_ts, root_ts, alias,
       workspace, cluster_id, region, action, summary, spec_before, body, diff, outcome, request_id, error_code,
       error_message, undo_of, approval_id, finished_at)
    VALUES (?, ?, ?, 'T1', 'U1', 'C1', '1.1', '1.1', 'prod', 'w-1', 'rc-1', 'cn-hangzhou', 'resize', ?,
            '{"workerSpec":[{"groupName":"WorkerGroup1","replica":2}]}',
            '{"workerSpec":[{"groupName":"WorkerGroup1","replica":10}]}',
            '[{"path":"workerSpec[WorkerGroup1].replica","before":2,"after":10}]', ?, ?, ?, ?, ?, ?, ?)"""

WANTED = {"state": "Running", "groups": {"WorkerGroup1": 10, "组二": 1}}


def version_2_database(path: Path) -> None:
    """A database as raybot with schema version 2 left it, with one of each kind of row."""
    conn = legacy_database(path, 2)
    try:
        conn.execute(
            """INSERT INTO approvals (id, created_at, expires_at, requester_id, channel_id, alias, action, summary,
                   request, spec_before, status)
               VALUES (1, ?, ?, 'U1', 'C1', 'prod', 'resize', 'WorkerGroup1 → 40', '{}', '{}', 'pending')""",
            (T0, T0 + 3600),
        )
        rows = [
            # id, created, updated, summary, outcome, request_id, error_code, error_message, undo_of, approval_id,
            # finished
            (1, T0, T0, "in flight", "pending", None, None, None, None, None, None),
            (2, T0, T0 + 1, "followed", "done", "REQ-2", None, None, None, None, T0 + 1),
            (3, T0, T0 + 2, "temporary", "done", "REQ-3", None, None, None, None, T0 + 2),
            (4, T0, T0 + 3, "refused", "failed", "REQ-4", "Throttling.User", "slow down", None, 1, T0 + 3),
            (5, T0, T0 + 4, "followed to the end", "done", "REQ-5", None, None, None, None, T0 + 4),
            (6, T0, T0 + 5, "lost answer", "unknown", None, None, "timeout", None, None, None),
            (7, T0, T0 + 6, "undo of #5", "done", "REQ-7", None, None, 5, None, T0 + 6),
        ]
        for row in rows:
            conn.execute(V2_CHANGE, row)
        follow = """INSERT INTO follows (change_id, alias, channel_id, thread_ts, root_ts, wanted, started_at,
                        deadline_at, next_at, attempt, status, last_summary)
                    VALUES (?, 'prod', 'C1', '1.1', '1.1', ?, ?, ?, ?, ?, ?, ?)"""
        wanted = '{"state":"Running","groups":{"WorkerGroup1":10,"组二":1}}'
        conn.execute(follow, (2, wanted, T0 + 1, T0 + 901, T0 + 30, 3, "following", "Running · WorkerGroup1 4/10"))
        conn.execute(follow, (5, wanted, T0 + 4, T0 + 904, T0 + 60, 5, "done", "Running · WorkerGroup1 10/10"))
        conn.execute(
            """INSERT INTO schedules (created_at, due_at, change_id, alias, channel_id, thread_ts, status)
               VALUES (?, ?, 3, 'prod', 'C1', '1.1', 'scheduled')""",
            (T0 + 2, T0 + 3600),
        )
        conn.execute(
            """INSERT INTO locks (cluster_key, holder, user_id, summary, acquired_at, expires_at)
               VALUES ('w-1/rc-9', 'old-token', 'U1', 'old lock', ?, ?)""",
            (T0, T0 + 120),
        )
    finally:
        conn.close()


@new_sqlite_only
async def test_a_version_2_file_is_carried_over_as_states(new_db: Db, clock: FakeClock) -> None:
    version_2_database(new_db.path)
    clock.advance(100)
    async with make(new_db, clock) as store:
        changes = {c.id: c for c in await store.history("prod", limit=100)}
        # The approval request is not carried over: its id would now name another change.
        assert sorted(changes) == [1, 2, 3, 4, 5, 6, 7]
        assert {c.id: c.state for c in changes.values()} == {
            1: "sending",
            2: "applied",
            3: "settled",
            4: "failed",
            5: "settled",
            6: "unknown",
            7: "settled",
        }
        assert all(c.version == 0 and c.lease_run is None for c in changes.values())

        pending = changes[1]
        assert (pending.run_id, pending.finished_at, pending.spec_before) == (
            None,
            None,
            {"workerSpec": [{"groupName": "WorkerGroup1", "replica": 2}]},
        )
        followed = changes[2]
        assert followed.wanted == WANTED
        assert (followed.follow_started_at, followed.follow_deadline_at, followed.next_at, followed.attempts) == (
            T0 + 1,
            T0 + 901,
            T0 + 30,
            3,
        )
        assert (followed.last_summary, followed.request_id, followed.finished_at) == (
            "Running · WorkerGroup1 4/10",
            "REQ-2",
            T0 + 1,
        )
        temporary = changes[3]
        assert (temporary.revert_state, temporary.revert_at, temporary.revert_attempts) == ("scheduled", T0 + 3600, 0)
        failed = changes[4]
        assert (failed.error_code, failed.error_message, failed.finished_at) == ("Throttling.User", "slow down", T0 + 3)
        finished = changes[5]
        assert (finished.wanted, finished.next_at, finished.revert_state) == (None, None, None)
        assert changes[6].next_at == T0 + 5  # checked at once
        assert (changes[7].undo_of, changes[7].request_id) == (5, "REQ-7")

        # The reconciler picks them up: the one in flight (no live run), the follow, the unknown outcome.
        assert ids(await store.due_changes(clock())) == [1, 2, 6]
        assert ids(await store.due_reverts(T0 + 3600)) == [3]
        assert await store.next_due_at() == T0
        unknown = await store.move(1, "unknown", from_="sending", next_at=clock())
        assert unknown is not None and unknown.version == 1
        # The old lock is kept until it expires, then taken over.
        with pytest.raises(LockBusy):
            await store.acquire_lock("w-1/rc-9", user_id="U2", summary="x", wait=0)
        clock.advance(20)
        assert await store.acquire_lock("w-1/rc-9", user_id="U2", summary="x", wait=0)
        # New changes continue after the old ones.
        assert (await store.create_change(new_change(), state="applying")).id == 8

    assert new_db.tables() == {*metadata.tables, "alembic_version", "schema_compat"}
    assert new_db.revision() == [(HEAD,)]
    assert shape(new_db) == SCHEMA


@new_sqlite_only
async def test_a_version_3_file_is_handed_to_alembic_as_it_is(new_db: Db, clock: FakeClock) -> None:
    conn = legacy_database(new_db.path, 3)
    try:
        conn.execute(
            "INSERT INTO runs (run_id, replica, pid, started_at, heartbeat_at) VALUES ('old-run', 'host-z', ?, ?, ?)",
            (dead_pid(), T0, T0),
        )
        insert = """INSERT INTO changes (created_at, updated_at, version, state, user_id, channel_id, alias, workspace,
                        cluster_id, region, action, summary, diff, run_id, duration_seconds, revert_state, revert_at)
                    VALUES (?, ?, ?, ?, 'U1', 'C1', 'prod', 'w-1', 'rc-1', 'cn-hangzhou', 'resize', ?, '[]', ?, ?, ?,
                            ?)"""
        conn.execute(insert, (T0, T0, 2, "applied", "temporary", None, 600, "scheduled", T0 + 600))
        conn.execute(insert, (T0, T0, 1, "sending", "in flight", "old-run", None, None, None))
        conn.execute(
            """INSERT INTO locks (cluster_key, holder, user_id, summary, acquired_at, expires_at, run_id)
               VALUES ('w-1/rc-1', 'old-token', 'U1', 'old lock', ?, ?, 'old-run')""",
            (T0, T0 + TTL),
        )
    finally:
        conn.close()
    clock.advance(100)
    async with make(new_db, clock, replica="host-a") as store:
        temporary, in_flight = await store.get_change(1), await store.get_change(2)
        assert temporary is not None and in_flight is not None
        assert (temporary.state, temporary.version, temporary.revert_state, temporary.revert_at) == (
            "applied",
            2,
            "scheduled",
            T0 + 600,
        )
        assert (in_flight.state, in_flight.version, in_flight.run_id) == ("sending", 1, "old-run")
        # The old run went silent long ago: its change is due, its lock free; the revert is due at its time.
        assert ids(await store.due_changes(clock())) == [2]
        assert ids(await store.due_reverts(T0 + 600)) == [1]
        assert await store.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=0)
    assert new_db.revision() == [(HEAD,)]
    assert "schema_version" not in new_db.tables()
    assert shape(new_db) == SCHEMA  # version 3's partial indexes are replaced by the common ones


@new_sqlite_only
@pytest.mark.parametrize("version", [1, 2, 3])
async def test_a_legacy_file_of_any_version_ends_at_the_head(new_db: Db, clock: FakeClock, version: int) -> None:
    legacy_database(new_db.path, version).close()
    async with make(new_db, clock) as store:
        assert (await store.schema_status()).up_to_date
    assert new_db.tables() == {*metadata.tables, "alembic_version", "schema_compat"}
    assert shape(new_db) == SCHEMA


@new_sqlite_only
async def test_a_legacy_file_newer_than_this_raybot_is_refused_and_left_alone(new_db: Db, clock: FakeClock) -> None:
    legacy_database(new_db.path, 3).close()
    new_db.raw("INSERT INTO schema_version (version, applied_at) VALUES (4, ?)", T0)
    tables = new_db.tables()
    store = make(new_db, clock)
    with pytest.raises(StoreError, match="schema version 4, newer than this raybot knows"):
        await store.open()
    with pytest.raises(StoreError, match="closed"):
        await store.get_change(1)
    assert new_db.tables() == tables  # no alembic_version either


# --- changes: recording and reading -------------------------------------------------------------------


async def test_audit_round_trip_keeps_json_and_unicode(store: Store, db: Db, clock: FakeClock) -> None:
    spec = {"name": "训练集群 🚀", "headSpec": {"env": {"NOTE": "café"}}, "workerSpec": [{"replica": 2}]}
    made = await store.create_change(
        new_change(
            summary="扩容 WorkerGroup1 → 10 ✓",
            spec_before=spec,
            body={"workerSpec": [{"replica": 10, "env": None}]},
            diff=[DiffEntry(path="workerSpec[WG1].replica", before=2, after=10)],
            replay={"changes": [{"kind": "replicas", "group": "WG1", "replica": 10}]},
            thread_ts="1700000000.000100",
        ),
        state="applying",
    )
    assert (made.state, made.version, made.run_id, made.outcome) == ("applying", 0, store.run_id, "pending")
    assert made.created_at == made.updated_at == T0
    assert (made.finished_at, made.request_id, made.next_at, made.revert_state) == (None, None, None, None)
    assert (made.lease_run, made.lease_until) == (None, None)
    assert made.spec_before == spec
    assert made.body == {"workerSpec": [{"replica": 10, "env": None}]}
    assert made.diff == [{"path": "workerSpec[WG1].replica", "before": 2, "after": 10}]
    assert made.replay == {"changes": [{"kind": "replicas", "group": "WG1", "replica": 10}]}
    # Stored as TEXT JSON, Unicode kept as characters.
    ((stored,),) = db.raw("SELECT spec_before FROM changes WHERE id = ?", made.id)
    assert "训练集群 🚀" in stored

    clock.advance(5)
    await store.set_thread(made.id, root_ts="1700000005.000200", thread_ts="1700000005.000200")
    got = await store.get_change(made.id)
    assert got is not None
    assert got.summary == "扩容 WorkerGroup1 → 10 ✓"
    assert (got.root_ts, got.thread_ts, got.updated_at) == ("1700000005.000200", "1700000005.000200", T0 + 5)
    assert await store.get_change(made.id + 1) is None
    with pytest.raises(StoreError, match="no change"):
        await store.set_thread(999, root_ts="1", thread_ts="1")


async def test_a_change_starts_as_applying_or_awaiting_approval(store: Store) -> None:
    with pytest.raises(ValueError, match="applying or awaiting_approval"):
        await store.create_change(new_change(), state="sending")
    with pytest.raises(ValueError, match="expires_at"):
        await store.create_change(new_change(), state="awaiting_approval")
    asked = await store.create_change(
        new_change(expires_at=T0 + 3600, approval_reason="WorkerGroup1 over 20 replicas"), state="awaiting_approval"
    )
    # Background work looks at it again when it expires.
    assert (asked.state, asked.next_at, asked.approval_reason) == (
        "awaiting_approval",
        T0 + 3600,
        "WorkerGroup1 over 20 replicas",
    )
    assert asked.outcome == "pending"
    assert ids(await store.history("prod")) == [asked.id]


async def test_history_is_newest_first_per_alias_and_limited(store: Store, clock: FakeClock) -> None:
    made = []
    for n in range(5):
        made.append((await store.create_change(new_change(summary=f"change {n}"), state="applying")).id)
        clock.advance(1)
    await store.create_change(new_change(alias="staging"), state="applying")
    assert ids(await store.history("prod")) == made[::-1]
    assert [c.summary for c in await store.history("prod", limit=2)] == ["change 4", "change 3"]
    assert [c.alias for c in await store.history("staging")] == ["staging"]
    assert await store.history("nowhere") == []
    assert await store.history("prod", limit=0) == []


async def test_secrets_are_masked_before_they_reach_the_database(store: Store, db: Db) -> None:
    password, pull_secret = "hunter2-redis-pw", "regcred-s3cret-name"
    spec = {
        "headSpec": {"gftConfig": {"redisPassword": password, "redisAddress": "r-1.redis:6379"}},
        "workerSpec": [{"groupName": "WorkerGroup1", "replica": 2, "imagePullSecret": pull_secret}],
    }
    body = {
        "headSpec": {"gftConfig": {"redisPassword": password}},
        "workerSpec": [{"groupName": "WorkerGroup1", "replica": 10, "imagePullSecret": pull_secret}],
    }
    made = await store.create_change(new_change(spec_before=spec, body=body), state="applying")
    assert made.spec_before is not None and made.body is not None
    gft = made.spec_before["headSpec"]["gftConfig"]
    assert gft["redisPassword"] != password and gft["redisAddress"] == "r-1.redis:6379"
    assert made.spec_before["workerSpec"][0]["imagePullSecret"] != pull_secret
    assert made.spec_before["workerSpec"][0]["replica"] == 2 and made.body["workerSpec"][0]["replica"] == 10
    # A later write of the body is masked too, and so is a move's.
    touched = await store.touch(made.id, state="applying", body=body)
    assert touched is not None and touched.body == made.body
    moved = await store.move(made.id, "sending", from_="applying", spec_before=spec, body=body)
    assert moved is not None and (moved.spec_before, moved.body) == (made.spec_before, made.body)

    # The row as the database holds it (psycopg or sqlite3, not the store).
    ((stored_spec, stored_body),) = db.raw("SELECT spec_before, body FROM changes WHERE id = ?", made.id)
    for text in (stored_spec, stored_body):
        assert password not in text and pull_secret not in text
    if not db.postgres:
        for file in db.path.parent.iterdir():  # the database, its WAL and shared memory: nowhere on disk
            content = file.read_bytes()
            assert password.encode() not in content and pull_secret.encode() not in content


# --- the state machine --------------------------------------------------------------------------------

ALLOWED_MOVES = sorted((source, target) for source, targets in ALLOWED.items() for target in targets)
DISALLOWED_MOVES = sorted(
    (source, target) for source in STATES for target in STATES if target not in ALLOWED.get(source, frozenset())
)


async def test_every_allowed_move_works_and_bumps_the_version(store: Store, clock: FakeClock) -> None:
    assert len(ALLOWED_MOVES) == 14
    for source, target in ALLOWED_MOVES:
        before = await reach(store, source)
        clock.advance(7)
        moved = await store.move(before.id, target, from_=source, error_message=f"{source} → {target}")
        assert moved is not None, (source, target)
        assert (moved.state, moved.version, moved.updated_at) == (target, before.version + 1, clock())
        assert moved.error_message == f"{source} → {target}"
        # Taking effect or ending for good is when it finished, unless it had already taken effect.
        finished = before.finished_at or clock() if target in FINAL or target == "applied" else None
        assert moved.finished_at == finished, (source, target)
        assert await store.get_change(before.id) == moved


async def test_a_disallowed_move_raises_and_changes_nothing(store: Store) -> None:
    made = await reach(store, "applied")
    for source, target in DISALLOWED_MOVES:
        with pytest.raises(TransitionError, match=f"from {source} to {target}"):
            await store.move(made.id, target, from_=source)
    # One source the target cannot follow is enough.
    with pytest.raises(TransitionError):
        await store.move(made.id, "settled", from_=("applied", "sending"))
    assert await store.get_change(made.id) == made


async def test_a_move_from_a_state_the_change_is_not_in_returns_none(store: Store, clock: FakeClock) -> None:
    made = await reach(store, "applying")
    clock.advance(1)
    assert await store.move(made.id, "applied", from_="sending", request_id="REQ-1") is None
    assert await store.move(made.id, "rejected", from_="awaiting_approval", decided_by="U2") is None
    assert await store.get_change(made.id) == made
    assert await store.move(999, "sending", from_="applying") is None
    # A move from any of several states.
    await store.move(made.id, "sending", from_="applying")
    await store.move(made.id, "unknown", from_="sending")
    applied = await store.move(made.id, "applied", from_=("sending", "unknown"))
    assert applied is not None and applied.version == 3


async def test_two_stores_racing_to_move_one_change_make_one_winner(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as one, make(db, clock) as two:
        for to_one, to_two in (("sending", "cancelled"), ("sending", "sending"), ("cancelled", "sending")):
            made = await one.create_change(new_change(), state="applying")
            results = await asyncio.gather(
                one.move(made.id, to_one, from_="applying", request_id="one"),
                two.move(made.id, to_two, from_="applying", request_id="two"),
            )
            winners = [r for r in results if r is not None]
            assert len(winners) == 1
            stored = await one.get_change(made.id)
            assert stored == winners[0] and stored.version == 1


async def test_a_move_sets_only_change_fields(store: Store) -> None:
    made = await reach(store, "applying")
    for field in ("state", "version", "created_at", "updated_at", "lease_run", "lease_until", "no_such_column"):
        with pytest.raises(ValueError, match="not settable"):
            await store.move(made.id, "sending", from_="applying", **{field: 1})
    assert await store.get_change(made.id) == made


async def test_touch_sets_fields_of_a_change_still_in_its_state(store: Store, clock: FakeClock) -> None:
    made = await reach(store, "unknown")
    clock.advance(2)
    touched = await store.touch(made.id, state="unknown", next_at=T0 + 10, attempts=1)
    assert touched is not None
    assert (touched.state, touched.next_at, touched.attempts) == ("unknown", T0 + 10, 1)
    assert (touched.version, touched.updated_at) == (made.version + 1, T0 + 2)
    # It moved on meanwhile: nothing is set.
    assert await store.touch(made.id, state="applied", next_at=T0 + 99) is None
    assert await store.get_change(made.id) == touched
    with pytest.raises(ValueError):
        await store.touch(made.id, state="unknown")
    with pytest.raises(ValueError):
        await store.touch(made.id, state="unknown", state_=1, version=9)


# --- fencing: writes on behalf of a lock holder -------------------------------------------------------


async def test_fenced_writes_happen_only_while_the_lock_is_held(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as one, make(db, clock) as two:
        fence = await one.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        assert await one.holds_lock(fence)
        made = await one.create_change(new_change(), state="applying", fence=fence)
        sending = await one.move(made.id, "sending", from_="applying", fence=fence, call_deadline_at=T0 + 30)
        assert sending is not None and (sending.state, sending.version, sending.call_deadline_at) == (
            "sending",
            1,
            T0 + 30,
        )
        # Not in that state any more is a lost race, not a lost lock.
        assert await one.move(made.id, "cancelled", from_="applying", fence=fence) is None

        clock.advance(TTL)  # `one` stopped renewing: the lock has expired
        assert not await one.holds_lock(fence)
        with pytest.raises(LockLost):
            await one.move(made.id, "applied", from_="sending", fence=fence)
        taken = await two.acquire_lock("w-1/rc-1", user_id="U2", summary="edit prod", wait=0)
        with pytest.raises(LockLost):
            await one.create_change(new_change(summary="too late"), state="applying", fence=fence)
        with pytest.raises(LockLost):
            await one.move(made.id, "applied", from_="sending", fence=fence, request_id="REQ-late")
        # Nothing was recorded by the writes that lost the lock.
        assert db.raw("SELECT id FROM changes") == [(made.id,)]
        assert await one.get_change(made.id) == sending
        # A late heartbeat of the old holder does not bring its lock back.
        assert await one.heartbeat() == 0
        assert not await one.holds_lock(fence) and await two.holds_lock(taken)
        unknown = await two.move(made.id, "unknown", from_="sending", fence=taken)
        assert unknown is not None and unknown.version == 2


# --- runs: locks belong to a heartbeating process run ---------------------------------------------------


async def test_locks_live_while_their_run_heartbeats_and_expire_when_it_stops(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as one, make(db, clock) as two:
        fence = await one.acquire_lock("w-1/rc-1", user_id="U1", summary="long change")
        for _ in range(4):
            clock.advance(TTL - 1)  # altogether well past one TTL, never a whole TTL between heartbeats
            assert await one.heartbeat() == 1
            with pytest.raises(LockBusy) as caught:
                await two.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=0)
            assert caught.value.holder.run_id == one.run_id
            assert caught.value.holder.expires_at == clock() + TTL
        assert await one.holds_lock(fence)
        clock.advance(TTL)  # no heartbeat for a whole TTL
        taken = await two.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=0)
        assert not await one.holds_lock(fence) and await two.holds_lock(taken)


async def test_close_releases_the_runs_locks(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as two:
        one = make(db, clock)
        await one.open()
        await one.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        await one.acquire_lock("w-1/rc-2", user_id="U1", summary="resize staging")
        clock.advance(1)
        await one.close()
        assert ended_at(db, one.run_id) == T0 + 1
        assert db.raw("SELECT COUNT(*) FROM locks WHERE run_id = ?", one.run_id) == [(0,)]
        assert await two.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=0)
        assert await two.acquire_lock("w-1/rc-2", user_id="U2", summary="x", wait=0)
        assert ended_at(db, two.run_id) is None


async def test_a_run_ended_elsewhere_loses_its_locks_at_once(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as one, make(db, clock) as two:
        fence = await one.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        db.raw("UPDATE runs SET stopped_at = ? WHERE run_id = ?", T0, one.run_id)
        # Its lock has not expired, but its run is over: taken over without waiting.
        taken = await two.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=0)
        assert await one.heartbeat() == 0
        assert not await one.holds_lock(fence) and await two.holds_lock(taken)


async def test_a_restart_ends_the_previous_run_of_its_replica_at_once(db: Db, clock: FakeClock) -> None:
    previous_run(db, "gone", replica="host-a", pid=dead_pid(), lock="w-1/rc-1", heartbeat_at=T0 + 5)
    previous_run(db, "elsewhere", replica="host-b", pid=dead_pid(), lock="w-1/rc-2", heartbeat_at=T0 + 5)
    clock.advance(10)  # both locks are good until T0 + 20
    async with make(db, clock, replica="host-a") as store:
        in_flight = await store.create_change(new_change(), state="applying")
        db.raw("UPDATE changes SET run_id = 'gone' WHERE id = ?", in_flight.id)
        assert ended_at(db, "gone") == T0 + 10
        # Its lock is free at once, and what it was doing is due now.
        assert await store.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=0)
        assert ids(await store.due_changes(clock())) == [in_flight.id]
        assert await store.next_due_at() == T0 + 10
        # A dead pid means nothing on another host: that run keeps its lock until it goes silent.
        assert ended_at(db, "elsewhere") is None
        with pytest.raises(LockBusy):
            await store.acquire_lock("w-1/rc-2", user_id="U2", summary="x", wait=0)
        clock.advance(10)
        assert await store.acquire_lock("w-1/rc-2", user_id="U2", summary="x", wait=0)


async def test_a_run_of_this_pid_not_open_here_is_a_previous_life(db: Db, clock: FakeClock) -> None:
    # In a container the process restarts with the same pid (1) and host name.
    previous_run(db, "before-restart", replica="host-a", pid=os.getpid(), lock="w-1/rc-1")
    async with make(db, clock, replica="host-a") as store:
        assert ended_at(db, "before-restart") == T0
        assert await store.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=0)


async def test_a_second_store_of_the_same_process_and_replica_keeps_the_first_run(db: Db, clock: FakeClock) -> None:
    async with make(db, clock, replica="host-a") as first:
        await first.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        async with make(db, clock, replica="host-a") as second:
            assert ended_at(db, first.run_id) is None
            with pytest.raises(LockBusy) as caught:
                await second.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=0)
            assert caught.value.holder.run_id == first.run_id


async def test_a_store_opening_beside_another_of_this_process_keeps_its_run(
    db: Db, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make(db, clock, replica="host-a"), make(db, clock, replica="host-a")
    registered, go_on = asyncio.Event(), asyncio.Event()
    start_run = first._start_run

    async def start_run_then_pause() -> int:
        ended = await start_run()
        registered.set()
        await go_on.wait()
        return ended

    # The second opens after the first's runs row exists and before the first's open() has returned.
    monkeypatch.setattr(first, "_start_run", start_run_then_pause)
    opening = asyncio.create_task(first.open())
    try:
        await asyncio.wait_for(registered.wait(), GUARD)
        await second.open()
    finally:
        go_on.set()
        await opening
    try:
        assert ended_at(db, first.run_id) is None and ended_at(db, second.run_id) is None
    finally:
        await first.close()
        await second.close()


async def test_open_starts_the_heartbeat_unless_told_not_to(
    db: Db, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny TTL: the background loop beats every millisecond of real time (renewing by the fake clock).
    async with Store(db.url, clock=clock, lock_ttl=0.003) as beating, make(db, clock) as quiet:
        assert quiet._heartbeat_task is None
        task = beating._heartbeat_task
        assert task is not None and not task.done()
        beat = beating.heartbeat
        beats: asyncio.Queue[tuple[float, int]] = asyncio.Queue()

        async def observed() -> int:
            started = clock()
            renewed = await beat()
            beats.put_nowait((started, renewed))
            return renewed

        monkeypatch.setattr(beating, "heartbeat", observed)
        await beating.acquire_lock("w-1/rc-1", user_id="U1", summary="x")
        clock.advance(100)
        async with asyncio.timeout(GUARD):
            while await beats.get() != (T0 + 100, 1):  # a beat that started after the clock moved
                pass
        ((expires_at,),) = db.raw("SELECT expires_at FROM locks WHERE cluster_key = 'w-1/rc-1'")
        assert expires_at == clock() + 0.003
        assert db.raw("SELECT heartbeat_at FROM runs WHERE run_id = ?", beating.run_id) == [(T0 + 100,)]
    assert task.cancelled()


# --- what is due -----------------------------------------------------------------------------------------


async def test_in_flight_changes_are_due_only_when_their_run_is_gone(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as watcher:
        worker = make(db, clock)
        await worker.open()
        applying = await reach(worker, "applying")
        sending = await reach(worker, "sending")
        await reach(worker, "unknown")  # not in flight: due by its next_at only (none)
        assert await watcher.due_changes(clock()) == []
        assert await watcher.next_due_at() == T0 + TTL  # when the worker goes silent
        clock.advance(TTL - 1)
        assert await watcher.due_changes(clock()) == []
        clock.advance(1)  # silent for a whole TTL
        assert ids(await watcher.due_changes(clock())) == [applying.id, sending.id]
        await worker.heartbeat()  # it was only slow
        assert await watcher.due_changes(clock()) == []
        assert await watcher.next_due_at() == clock() + TTL
        clock.advance(1)
        await worker.close()  # ended: due at once
        assert ids(await watcher.due_changes(clock())) == [applying.id, sending.id]
        assert await watcher.next_due_at() == clock()


async def test_work_of_a_run_nobody_knows_is_due_at_once(store: Store, db: Db, clock: FakeClock) -> None:
    # A row naming a run the runs table does not have (purged, or written by hand): no one will finish it.
    in_flight = await reach(store, "sending")
    temporary = await reach(store, "applied", duration_seconds=600)
    await store.move_revert(temporary.id, "running", from_="scheduled", revert_run_id=store.run_id)
    assert await store.due_changes(clock()) == [] and await store.due_reverts(clock()) == []
    assert await store.next_due_at() is None  # all this run's own
    clock.advance(5)
    db.raw("UPDATE changes SET run_id = 'nobody' WHERE id = ?", in_flight.id)
    db.raw("UPDATE changes SET revert_run_id = 'nobody' WHERE id = ?", temporary.id)
    assert ids(await store.due_changes(clock())) == [in_flight.id]
    assert ids(await store.due_reverts(clock())) == [temporary.id]
    assert await store.next_due_at() == T0  # when they were last written: due since then


async def test_changes_are_due_when_their_next_at_comes(store: Store) -> None:
    unknown = await due_now(store, "unknown", T0 + 10)
    applied = await due_now(store, "applied", T0 + 20)
    asked = await reach(store, "awaiting_approval", expires_at=T0 + 30)
    await store.set_thread(asked.id, root_ts="1.1", thread_ts="1.1")
    settled = await reach(store, "applied")
    await store.move(settled.id, "settled", from_="applied", next_at=T0 + 5)  # over: never due
    await reach(store, "applying")  # this live run's own: not due
    assert await store.next_due_at() == T0 + 10
    assert await store.due_changes(T0 + 9) == []
    assert ids(await store.due_changes(T0 + 10)) == [unknown.id]
    # (The run is judged alive by its heartbeat at T0: `now` here only looks ahead.)
    assert ids(await store.due_changes(T0 + 14)) == [unknown.id]
    await store.touch(unknown.id, state="unknown", next_at=T0 + 40)
    assert await store.next_due_at() == T0 + 20
    assert ids(await store.due_changes(T0 + 14)) == []
    assert applied.next_at == T0 + 20


async def test_an_approval_request_never_posted_is_due_when_its_run_is_gone(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as watcher:
        asker = make(db, clock)
        await asker.open()
        unposted = await reach(asker, "awaiting_approval", expires_at=T0 + 3600)
        posted = await reach(asker, "awaiting_approval", expires_at=T0 + 3600)
        await asker.set_thread(posted.id, root_ts="1.1", thread_ts="1.1")
        assert await watcher.due_changes(clock()) == []  # it is still being posted
        assert await watcher.next_due_at() == T0 + TTL
        await asker.close()
        assert ids(await watcher.due_changes(clock())) == [unposted.id]
        assert ids(await watcher.due_changes(T0 + 3600)) == [unposted.id, posted.id]


async def test_reverts_are_due_at_their_time_or_when_their_run_is_gone(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as watcher:
        worker = make(db, clock)
        await worker.open()
        temporary = await reach(worker, "applied", duration_seconds=600)
        assert temporary.revert_at == T0 + 600
        assert await watcher.next_due_at() == T0 + 600
        assert await watcher.due_reverts(T0 + 599) == []
        clock.advance(600)
        await worker.heartbeat()
        assert ids(await watcher.due_reverts(clock())) == [temporary.id]
        claimed = await worker.move_revert(temporary.id, "running", from_="scheduled", revert_run_id=worker.run_id)
        assert claimed is not None
        assert await watcher.due_reverts(clock()) == []  # running in a live run
        assert await watcher.next_due_at() == clock() + TTL
        await worker.close()
        assert ids(await watcher.due_reverts(clock())) == [temporary.id]
        assert await watcher.next_due_at() == clock()
        # Handed back (as the reconciler does), it is due again as scheduled.
        back = await watcher.move_revert(temporary.id, "scheduled", from_="running", revert_run_id=None)
        assert back is not None and back.revert_at == T0 + 600
        assert ids(await watcher.due_reverts(clock())) == [temporary.id]


async def test_next_due_at_is_the_earliest_look_revert_or_silent_run(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as store, make(db, clock) as other:
        assert await store.next_due_at() is None
        await reach(store, "applying")  # in flight in this very run: not something to wake up for
        assert await store.next_due_at() is None
        await due_now(store, "unknown", T0 + 100)
        assert await store.next_due_at() == T0 + 100
        await reach(store, "applied", duration_seconds=50)
        assert await store.next_due_at() == T0 + 50
        theirs = await reach(other, "applying")
        assert await store.next_due_at() == T0 + TTL
        clock.advance(10)
        await other.heartbeat()
        assert await store.next_due_at() == T0 + 10 + TTL
        await other.move(theirs.id, "cancelled", from_="applying")
        assert await store.next_due_at() == T0 + 50


# --- claiming due work: one replica per due change, with a lease ---------------------------------------


async def test_claim_due_gives_each_due_change_to_one_of_two_stores(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as one, make(db, clock) as two:
        due = [(await due_now(one)).id for _ in range(4)]
        await due_now(one, "unknown", T0 + 100)  # not yet
        await reach(one, "applying")  # in flight in a live run: not due
        first, second = await asyncio.gather(
            one.claim_due(clock(), lease=60, limit=2), two.claim_due(clock(), lease=60, limit=2)
        )
        assert len(first) == len(second) == 2 and sorted(ids(first) + ids(second)) == due
        for store, claimed in ((one, first), (two, second)):
            for d in claimed:
                assert (d.change, d.revert, d.record.lease_run, d.record.lease_until) == (
                    True,
                    False,
                    store.run_id,
                    T0 + 60,
                )
                assert d.record.state == "unknown"
        # While the leases hold, neither gets the other's; each may take its own up again.
        for _ in range(2):
            again = await asyncio.gather(one.claim_due(clock(), lease=60), two.claim_due(clock(), lease=60))
            assert [ids(a) for a in again] == [ids(first), ids(second)]
        # A change that is not due any more is not claimed, leased or not.
        (gone, *rest) = ids(first)
        await one.move(gone, "failed", from_="unknown")
        assert ids(await one.claim_due(clock(), lease=60)) == rest


@postgres_only
async def test_claim_due_skips_changes_another_replica_is_claiming(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as store:
        due = [(await due_now(store)).id for _ in range(4)]
        # Another replica is in the middle of claiming the first two: their rows are locked, not yet leased.
        with psycopg.connect(db.url) as other:
            other.execute("SELECT id FROM changes WHERE id = ANY(%s) FOR UPDATE", (due[:2],))
            async with asyncio.timeout(5):  # without SKIP LOCKED this would wait for the other's lock
                claimed = await store.claim_due(clock(), lease=60, limit=2)
            assert ids(claimed) == due[2:]
            other.rollback()
        # It gave them up without leasing them: they are free.
        assert ids(await store.claim_due(clock(), lease=60)) == due


async def test_claim_due_says_which_step_of_a_change_is_due(store: Store, clock: FakeClock) -> None:
    follow = await reach(store, "applied", duration_seconds=3600)  # revert at T0 + 3600
    await store.touch(follow.id, state="applied", next_at=T0 + 10)  # its follow looks again at T0 + 10
    revert = await reach(store, "applied", duration_seconds=10)  # revert at T0 + 10, no look pending
    both = await reach(store, "applied", duration_seconds=10)
    await store.touch(both.id, state="applied", next_at=T0 + 10)
    await reach(store, "applied", duration_seconds=3600)  # neither
    assert await store.claim_due(T0 + 9, lease=60) == []
    clock.advance(10)
    await store.heartbeat()
    due = await store.claim_due(clock(), lease=60)
    assert {d.record.id: (d.change, d.revert) for d in due} == {
        follow.id: (True, False),
        revert.id: (False, True),
        both.id: (True, True),
    }
    # A revert running in a run that is gone is due again; the change itself is not.
    await store.move_revert(revert.id, "running", from_="scheduled", revert_run_id="gone-run")
    await store.touch(follow.id, state="applied", next_at=T0 + 1000)
    await store.touch(both.id, state="applied", next_at=T0 + 1000)
    await store.move_revert(both.id, "cancelled", from_="scheduled")
    (again,) = await store.claim_due(clock(), lease=60)
    assert (again.record.id, again.change, again.revert) == (revert.id, False, True)


async def test_a_lease_past_its_time_is_taken_over(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as one, make(db, clock) as two:
        change = await due_now(one)
        (taken,) = await one.claim_due(clock(), lease=30)
        assert taken.record.id == change.id
        assert await two.claim_due(clock(), lease=30) == []
        clock.advance(29)
        await one.heartbeat()
        await two.heartbeat()
        assert await two.claim_due(clock(), lease=30) == []
        clock.advance(1)  # `one` took too long (or died): the lease has run out
        (over,) = await two.claim_due(clock(), lease=30)
        assert (over.record.id, over.record.lease_run, over.record.lease_until) == (change.id, two.run_id, T0 + 60)
        assert await one.claim_due(clock(), lease=30) == []  # the late one finds it taken


async def test_work_another_run_has_leased_falls_due_when_its_lease_runs_out(db: Db, clock: FakeClock) -> None:
    # A replica must not wake again and again for work another has claimed: it is due to it when the lease ends.
    async with make(db, clock) as one, make(db, clock) as two:
        look = await due_now(one)
        assert await two.next_due_at() == T0
        await one.claim_due(clock(), lease=60)
        assert await one.next_due_at() == T0  # its own: due whenever it looks
        assert await two.next_due_at() == T0 + 60
        # A revert another run has claimed, likewise.
        await one.move(look.id, "failed", from_="unknown")
        temporary = await reach(one, "applied", duration_seconds=10)
        clock.advance(10)
        await one.heartbeat()
        await two.heartbeat()
        assert await two.next_due_at() == T0 + 10
        assert ids(await one.claim_due(clock(), lease=60)) == [temporary.id]
        assert await two.next_due_at() == T0 + 70
        # And work in flight in a run that ended, once another run has claimed it.
        async with make(db, clock) as three:
            in_flight = await reach(three, "sending")
        assert await two.next_due_at() == clock()
        assert ids(await one.claim_due(clock(), lease=60)) == [temporary.id, in_flight.id]
        assert await two.next_due_at() == T0 + 70
        # Once a lease has run out, the work is due to anyone again.
        clock.advance(60)
        await two.heartbeat()
        assert await two.next_due_at() <= clock()


# --- taking effect: temporary changes, undo, keep it ------------------------------------------------------


async def test_taking_effect_schedules_the_revert_of_a_temporary_change(store: Store, clock: FakeClock) -> None:
    temporary = await reach(store, "sending", duration_seconds=3600)
    assert (temporary.revert_state, temporary.revert_at) == (None, None)
    clock.advance(10)
    applied = await store.move(temporary.id, "applied", from_="sending", request_id="REQ-1")
    assert applied is not None
    assert (applied.revert_state, applied.revert_at, applied.version) == ("scheduled", T0 + 10 + 3600, 2)
    assert applied.finished_at == T0 + 10
    assert await store.get_change(temporary.id) == applied
    # Settling later neither moves the revert nor when it took effect.
    clock.advance(60)
    settled = await store.move(temporary.id, "settled", from_="applied")
    assert settled is not None
    assert (settled.revert_state, settled.revert_at, settled.finished_at) == ("scheduled", T0 + 3610, T0 + 10)

    # An unknown outcome found applied later is reverted `duration` after it was found.
    late = await reach(store, "unknown", duration_seconds=60)
    clock.advance(5)
    found = await store.move(late.id, "applied", from_="unknown")
    assert found is not None and (found.revert_state, found.revert_at) == ("scheduled", clock() + 60)

    # A change that is not temporary, or that failed, has nothing to revert.
    plain = await reach(store, "applied")
    assert (plain.revert_state, plain.revert_at) == (None, None)
    failed = await store.move((await reach(store, "sending", duration_seconds=60)).id, "failed", from_="sending")
    assert failed is not None and (failed.revert_state, failed.revert_at) == (None, None)


async def test_an_undo_taking_effect_cancels_the_revert_it_makes_needless(store: Store, clock: FakeClock) -> None:
    temporary = await reach(store, "applied", duration_seconds=3600)
    assert temporary.revert_state == "scheduled"
    # An undo that fails leaves the revert scheduled.
    failed = await reach(store, "sending", action="undo", undo_of=temporary.id)
    await store.move(failed.id, "failed", from_="sending")
    assert (await store.get_change(temporary.id)).revert_state == "scheduled"  # type: ignore[union-attr]

    clock.advance(30)
    undo = await reach(store, "sending", action="undo", undo_of=temporary.id)
    await store.move(undo.id, "applied", from_="sending")
    undone = await store.get_change(temporary.id)
    assert undone is not None
    assert (undone.revert_state, undone.revert_note, undone.updated_at) == (
        "cancelled",
        f"undone by change #{undo.id}",
        T0 + 30,
    )
    assert await store.due_reverts(T0 + 10**6) == []
    # Its root message says who undid it, with which change, and when (bot.slack.blocks.change_card).
    assert (undone.undone_by, undone.undone_by_change, undone.undone_at) == ("U1", undo.id, T0 + 30)

    # A revert already running is not taken from its worker by an undo.
    running = await reach(store, "applied", duration_seconds=60)
    await store.move_revert(running.id, "running", from_="scheduled", revert_run_id=store.run_id)
    await reach(store, "applied", action="undo", undo_of=running.id)
    assert (await store.get_change(running.id)).revert_state == "running"  # type: ignore[union-attr]


async def test_cancel_revert_keeps_a_temporary_change_before_or_after_its_revert_is_scheduled(
    store: Store, clock: FakeClock
) -> None:
    # Keep it while the change is still being sent: the revert is never scheduled.
    sending = await reach(store, "sending", duration_seconds=600)
    clock.advance(1)
    kept = await store.cancel_revert(sending.id, note="kept by U2")
    assert kept is not None
    assert (kept.state, kept.revert_state, kept.revert_note, kept.revert_at, kept.updated_at) == (
        "sending",
        "cancelled",
        "kept by U2",
        None,
        T0 + 1,
    )
    applied = await store.move(sending.id, "applied", from_="sending")
    assert applied is not None and (applied.revert_state, applied.revert_at) == ("cancelled", None)
    # Or while its outcome is unknown.
    unknown = await reach(store, "unknown", duration_seconds=600)
    assert await store.cancel_revert(unknown.id, note="kept by U2") is not None
    found = await store.move(unknown.id, "applied", from_="unknown")
    assert found is not None and (found.revert_state, found.revert_at) == ("cancelled", None)

    # Keep it after it took effect: the scheduled revert is cancelled.
    scheduled = await reach(store, "applied", duration_seconds=600)
    kept = await store.cancel_revert(scheduled.id, note="kept by U1")
    assert kept is not None and (kept.revert_state, kept.revert_note, kept.revert_at) == (
        "cancelled",
        "kept by U1",
        T0 + 601,
    )
    assert await store.due_reverts(T0 + 10**6) == []
    assert await store.next_due_at() is None
    assert await store.cancel_revert(scheduled.id, note="again") is None  # nothing left to cancel

    # Once the revert runs, it is too late; a change that is not temporary, or failed, has nothing to keep.
    running = await reach(store, "applied", duration_seconds=600)
    await store.move_revert(running.id, "running", from_="scheduled", revert_run_id=store.run_id)
    assert await store.cancel_revert(running.id, note="too late") is None
    assert (await store.get_change(running.id)).revert_state == "running"  # type: ignore[union-attr]
    plain = await reach(store, "sending")
    assert await store.cancel_revert(plain.id, note="x") is None
    failed = await store.move((await reach(store, "sending", duration_seconds=60)).id, "failed", from_="sending")
    assert failed is not None and await store.cancel_revert(failed.id, note="x") is None
    assert await store.cancel_revert(999, note="x") is None


async def test_move_revert_is_compare_and_set(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as one, make(db, clock) as two:
        # Two workers claim the same due revert: one reverts, the other finds it taken.
        temporary = await reach(one, "applied", duration_seconds=60)
        results = await asyncio.gather(
            one.move_revert(temporary.id, "running", from_="scheduled", revert_run_id=one.run_id),
            two.move_revert(temporary.id, "running", from_="scheduled", revert_run_id=two.run_id),
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1 and winners[0].revert_state == "running"
        assert (await one.get_change(temporary.id)) == winners[0]
        # "Keep it" after the claim loses cleanly: the revert runs.
        assert await two.move_revert(temporary.id, "cancelled", from_="scheduled", revert_note="kept by U1") is None
        assert await two.cancel_revert(temporary.id, note="kept by U1") is None
        done = await one.move_revert(temporary.id, "done", from_="running", revert_note="change #9")
        assert done is not None and (done.revert_state, done.revert_note) == ("done", "change #9")

        # "Keep it" first wins cleanly: the claim finds nothing to revert.
        kept_one = await reach(one, "applied", duration_seconds=60)
        kept = await two.move_revert(kept_one.id, "cancelled", from_="scheduled", revert_note="kept by U1")
        assert kept is not None and kept.revert_state == "cancelled"
        assert await one.move_revert(kept_one.id, "running", from_="scheduled", revert_run_id=one.run_id) is None
        assert await one.due_reverts(T0 + 10**6) == []

        # Raced against each other, exactly one of them happens.
        for _ in range(3):
            raced = await reach(one, "applied", duration_seconds=60)
            claim, keep = await asyncio.gather(
                one.move_revert(raced.id, "running", from_="scheduled", revert_run_id=one.run_id),
                two.cancel_revert(raced.id, note="kept by U2"),
            )
            assert (claim is None) != (keep is None)
            stored = await one.get_change(raced.id)
            assert stored is not None and stored.revert_state == ("running" if claim else "cancelled")

        # Its own transitions only, its own fields only; a change with no revert has nothing to move.
        with pytest.raises(TransitionError):
            await one.move_revert(temporary.id, "scheduled", from_="done")
        with pytest.raises(ValueError, match="sets only"):
            await one.move_revert(raced.id, "running", from_="scheduled", state="settled")
        plain = await reach(one, "applied")
        assert await one.move_revert(plain.id, "cancelled", from_="scheduled") is None


# --- exactly-once ------------------------------------------------------------------------------------


async def test_claim_once_then_again_after_expiry(store: Store, clock: FakeClock) -> None:
    assert await store.claim("evt-1") is True
    assert await store.claim("evt-1") is False
    assert await store.claim("evt-2") is True
    clock.advance(599)
    assert await store.claim("evt-1") is False
    clock.advance(1)
    assert await store.claim("evt-1") is True
    assert await store.claim("evt-1") is False


async def test_claim_refuses_a_ttl_below_ten_minutes(store: Store) -> None:
    with pytest.raises(ValueError, match="at least 600"):
        await store.claim("k", ttl=599)
    with pytest.raises(ValueError, match="empty"):
        await store.claim("")
    assert await store.claim("k", ttl=3600) is True


async def test_a_released_claim_can_be_claimed_again(store: Store) -> None:
    assert await store.claim("click-1") is True
    await store.release_claim("click-1")
    assert await store.claim("click-1") is True
    assert await store.claim("click-1") is False
    await store.release_claim("never-claimed")  # nothing to give back is fine


async def test_fifty_concurrent_claims_of_one_key_make_one_winner(store: Store) -> None:
    results = await asyncio.gather(*(store.claim("trigger-xyz") for _ in range(50)))
    assert results.count(True) == 1


async def test_two_replicas_on_one_database_claim_once(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as one, make(db, clock) as two:
        results = await asyncio.gather(*(s.claim("shared") for _ in range(10) for s in (one, two)))
        assert results.count(True) == 1
        clock.advance(600)  # expired: taken over by exactly one of them again
        results = await asyncio.gather(*(s.claim("shared") for _ in range(10) for s in (one, two)))
        assert results.count(True) == 1


# --- locks -------------------------------------------------------------------------------------------


async def test_same_cluster_serializes_and_the_waiter_is_woken_without_polling(db: Db, clock: FakeClock) -> None:
    sleep = ParkedSleep()
    async with make(db, clock, sleep=sleep) as store:
        first = await store.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        second = asyncio.create_task(store.acquire_lock("w-1/rc-1", user_id="U2", summary="edit prod", wait=5.0))
        await asyncio.wait_for(sleep.next_call(), GUARD)
        assert not second.done()
        # The holder is in this process: one wait for the whole budget, no DB re-check interval.
        assert sleep.calls == [5.0]
        await store.release_lock(first)
        fence = await asyncio.wait_for(second, GUARD)
        assert fence != first and fence.cluster_key == "w-1/rc-1"
        assert sleep.calls == [5.0]  # woken by the release, not by the sleep ending
        with pytest.raises(LockBusy) as caught:
            await store.acquire_lock("w-1/rc-1", user_id="U3", summary="x", wait=0)
        assert caught.value.holder.user_id == "U2"
        await store.release_lock(fence)


async def test_different_clusters_do_not_wait_for_each_other(db: Db, clock: FakeClock) -> None:
    sleep = ParkedSleep()
    async with make(db, clock, sleep=sleep) as store:
        await store.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        other = await store.acquire_lock("w-1/rc-2", user_id="U2", summary="resize staging")
        assert other and sleep.calls == []


async def test_timeout_says_who_holds_the_cluster(store: Store, clock: FakeClock) -> None:
    await store.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod WorkerGroup1=10")
    with pytest.raises(LockBusy) as caught:
        await store.acquire_lock("w-1/rc-1", user_id="U2", summary="edit prod", wait=5.0)
    holder = caught.value.holder
    assert (holder.user_id, holder.summary, holder.acquired_at, holder.run_id) == (
        "U1",
        "resize prod WorkerGroup1=10",
        T0,
        store.run_id,
    )
    assert "U1" in str(caught.value)
    assert clock() == T0 + 5.0  # it did wait the whole budget
    with pytest.raises(ValueError):
        await store.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=-1)


async def test_a_stale_lock_is_taken_over(store: Store, clock: FakeClock) -> None:
    old = await store.acquire_lock("k", user_id="U1", summary="old")
    clock.advance(TTL)
    new = await store.acquire_lock("k", user_id="U2", summary="new", wait=0)
    # The dead holder's late release must not free the new holder's lock.
    await store.release_lock(old)
    with pytest.raises(LockBusy) as caught:
        await store.acquire_lock("k", user_id="U3", summary="x", wait=0)
    assert caught.value.holder.holder == new.token and caught.value.holder.user_id == "U2"


async def test_a_waiter_takes_the_lock_when_it_goes_stale(db: Db, clock: FakeClock) -> None:
    async with make(db, clock, lock_ttl=30) as store:
        await store.acquire_lock("k", user_id="U1", summary="stuck")
        fence = await store.acquire_lock("k", user_id="U2", summary="next", wait=60)
        assert await store.holds_lock(fence) and clock() == T0 + 30


async def test_cluster_lock_context_releases_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with cluster_lock(store, "k", user_id="U1", summary="boom") as fence:
            assert await store.holds_lock(fence)
            raise RuntimeError
    assert not await store.holds_lock(fence)
    assert await store.acquire_lock("k", user_id="U2", summary="after", wait=0)


async def test_lock_held_by_another_replica_blocks_then_is_seen_released(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as one, make(db, clock, lock_recheck=0.5) as two:
        held = await one.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        with pytest.raises(LockBusy) as caught:
            await two.acquire_lock("w-1/rc-1", user_id="U2", summary="edit prod", wait=2.0)
        assert caught.value.holder.user_id == "U1"
        assert clock() == T0 + 2.0

        # Another process's release wakes nobody here: the waiter finds it at its next re-check.
        parked = ParkedSleep()
        async with make(db, clock, sleep=parked, lock_recheck=0.5) as three:
            waiter = asyncio.create_task(three.acquire_lock("w-1/rc-1", user_id="U3", summary="x", wait=5.0))
            await asyncio.wait_for(parked.next_call(), GUARD)
            assert parked.calls == [0.5]
            await one.release_lock(held)
            assert not waiter.done()
            parked.wake_all()
            assert await three.holds_lock(await asyncio.wait_for(waiter, GUARD))


async def test_two_replicas_racing_for_a_free_lock_make_one_holder(db: Db, clock: FakeClock) -> None:
    async with make(db, clock) as one, make(db, clock) as two:
        for n in range(3):
            results = await asyncio.gather(
                *(s.acquire_lock(f"w-1/rc-{n}", user_id=s.run_id, summary="x", wait=0) for s in (one, two, one, two)),
                return_exceptions=True,
            )
            fences = [r for r in results if not isinstance(r, BaseException)]
            assert len(fences) == 1 and all(isinstance(r, LockBusy) for r in results if r not in fences)


# --- drafts ------------------------------------------------------------------------------------------


async def test_drafts_round_trip_replace_expire_and_delete(store: Store, clock: FakeClock) -> None:
    data = {"alias": "prod", "groups": [{"name": "WG1", "replica": 3}], "note": "ünïcødé"}
    key = await store.put_draft(data, user_id="U1", ttl=60)
    assert 0 < len(key) <= 64 and key.replace("-", "").replace("_", "").isalnum()
    assert await store.get_draft(key) == data
    assert await store.put_draft({"v": 2}, user_id="U1", key=key, ttl=60) == key
    assert await store.get_draft(key) == {"v": 2}
    assert await store.put_draft(data, user_id="U1") != key
    clock.advance(60)
    assert await store.get_draft(key) is None
    other = await store.put_draft(data, user_id="U1")
    await store.delete_draft(other)
    assert await store.get_draft(other) is None
    assert await store.get_draft("never-made") is None
    with pytest.raises(ValueError):
        await store.put_draft(data, user_id="U1", key="x" * 65)


# --- housekeeping ------------------------------------------------------------------------------------


async def test_purge_removes_only_expired_keys_drafts_and_old_runs(store: Store, db: Db, clock: FakeClock) -> None:
    await store.claim("old")
    short = await store.put_draft({"a": 1}, user_id="U1", ttl=60)
    async with make(db, clock) as ended:
        pass
    clock.advance(600)
    await store.claim("fresh")
    kept = await store.put_draft({"b": 2}, user_id="U1", ttl=3600)
    assert await store.purge_expired() == 2
    assert db.raw("SELECT key FROM dedup_keys") == [("fresh",)]
    assert db.raw("SELECT key FROM drafts") == [(kept,)]
    assert short != kept
    assert await store.purge_expired() == 0
    # A day after it ended, a run is forgotten; a live run never is.
    clock.advance(86400)
    assert await store.purge_expired() == 3
    assert db.raw("SELECT run_id FROM runs") == [(store.run_id,)]
    assert ended.run_id != store.run_id


# --- the event loop is never blocked by the database -------------------------------------------------


async def query(store: Store, statement: str) -> Any:
    async with store._begin() as conn:
        return (await conn.exec_driver_sql(statement)).scalar()


@sqlite_only
async def test_a_slow_query_does_not_block_the_event_loop(store: Store) -> None:
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()
    release = threading.Event()
    threads: set[int] = set()

    def block() -> int:
        threads.add(threading.get_ident())
        loop.call_soon_threadsafe(entered.set)
        release.wait(GUARD)
        return 1

    async with store._connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        await driver.create_function("block", 0, block)
        await driver.create_function("thread", 0, threading.get_ident)
    slow = asyncio.create_task(query(store, "SELECT block()"))
    await asyncio.wait_for(entered.wait(), GUARD)
    # The loop runs other coroutines while the query is still inside SQLite.
    pinged = await asyncio.gather(asyncio.sleep(0, result="pong"))
    assert pinged == ["pong"] and not slow.done()
    queued = asyncio.create_task(store.claim("behind-the-slow-query"))
    await asyncio.sleep(0)
    assert not queued.done()  # one connection, one thread: it waits its turn
    release.set()
    assert await slow == 1 and await queued is True
    assert threads and threading.get_ident() not in threads
    assert threads == {await query(store, "SELECT thread()")}


@postgres_only
async def test_a_slow_query_holds_one_connection_of_the_pool(store: Store, db: Db) -> None:
    with psycopg.connect(db.url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(4242)")  # what the slow query will wait for
        slow = asyncio.create_task(query(store, "SELECT pg_advisory_lock(4242)::text"))
        async with asyncio.timeout(GUARD):  # until the server says the store's query waits (no event tells us)
            while not other.execute(  # noqa: ASYNC110
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()[0]:
                await asyncio.sleep(0.001)
        # The loop and the other connections of the pool go on while it waits inside PostgreSQL.
        assert await store.claim("beside-the-slow-query") is True
        assert await store.get_change(1) is None and not slow.done()
        other.execute("SELECT pg_advisory_unlock(4242)")
        assert await asyncio.wait_for(slow, GUARD) == ""


async def test_closed_store_refuses_calls(db: Db, clock: FakeClock) -> None:
    store = make(db, clock)
    with pytest.raises(StoreError, match="closed"):
        await store.ping()  # not open yet
    await store.open()
    with pytest.raises(StoreError, match="already open"):
        await store.open()
    await store.ping()
    await store.close()
    await store.close()
    for call in (store.ping, lambda: store.claim("k"), lambda: store.get_change(1), store.heartbeat, store.open):
        with pytest.raises(StoreError, match="the store is closed"):
            await call()


async def test_what_the_root_message_says_is_kept_on_the_row(store: Store, clock: FakeClock) -> None:
    # Keep it records who kept it; a failed undo records nothing; an automatic revert records raybot as undoing it.
    temporary = await reach(store, "applied", duration_seconds=3600)
    kept = await store.cancel_revert(temporary.id, note="kept by U2", kept_by="U2")
    assert kept is not None and (kept.revert_state, kept.kept_by) == ("cancelled", "U2")
    failed = await reach(store, "sending", action="undo", undo_of=temporary.id)
    await store.move(failed.id, "failed", from_="sending")
    assert (await store.get_change(temporary.id)).undone_by_change is None  # type: ignore[union-attr]
    reverted = await reach(store, "applied", duration_seconds=60)
    clock.advance(5)
    revert = await reach(store, "applied", action="revert", undo_of=reverted.id, user_id="U0RAYBOT")
    after = await store.get_change(reverted.id)
    assert after is not None and (after.undone_by, after.undone_by_change, after.undone_at) == (
        "U0RAYBOT",
        revert.id,
        T0 + 5,
    )


async def test_a_root_message_slack_refused_is_due_again(store: Store, clock: FakeClock) -> None:
    record = await reach(store, "applied")
    await store.set_thread(record.id, root_ts="1700000000.000100", thread_ts="1700000000.000100")
    assert await store.is_change_root("C1", "1700000000.000100")
    assert not await store.is_change_root("C1", "1700000000.000200")
    assert not await store.is_change_root("C2", "1700000000.000100")
    await store.touch(record.id, state="applied", next_at=None)
    assert await store.cards_due(T0 + 10**6) == []  # moved before it had a root: nothing to render

    await store.card_failed(record.id, retry_at=T0 + 5)
    assert await store.next_due_at() == T0 + 5
    assert await store.cards_due(T0 + 4) == []
    [due] = await store.cards_due(T0 + 5)
    assert (due.id, due.card_due_at, due.card_attempts) == (record.id, T0 + 5, 1)
    await store.card_failed(record.id, retry_at=T0 + 15)
    assert (await store.get_change(record.id)).card_attempts == 2  # type: ignore[union-attr]

    await store.card_shown(record.id, due_at=T0 + 15)
    shown = await store.get_change(record.id)
    assert shown is not None and (shown.card_due_at, shown.card_attempts) == (None, 0)
    assert await store.next_due_at() is None

    await store.card_failed(record.id, retry_at=T0)
    await store.card_given_up(record.id)
    assert await store.cards_due(T0 + 10**6) == []


async def test_every_move_marks_the_root_until_a_render_of_it_clears_the_mark(store: Store, clock: FakeClock) -> None:
    """A process that dies between a move and its render leaves the mark: the reconciler renders the root then."""
    record = await reach(store, "sending", duration_seconds=60)
    await store.set_thread(record.id, root_ts="1700000000.000100", thread_ts="1700000000.000100")
    moved = await store.move(record.id, "applied", from_="sending")
    grace = bot.store.CARD_RENDER_GRACE_SECONDS
    assert moved is not None and moved.card_due_at == T0 + grace
    assert await store.cards_due(T0 + grace - 1) == []
    assert [r.id for r in await store.cards_due(T0 + grace)] == [record.id]

    clock.advance(1)  # a later move marks it anew: a render of the earlier state does not clear that mark
    kept = await store.cancel_revert(record.id, note="kept by U2", kept_by="U2")
    assert kept is not None and kept.card_due_at == T0 + 1 + grace
    await store.card_shown(record.id, due_at=T0 + grace)
    assert (await store.get_change(record.id)).card_due_at == T0 + 1 + grace  # type: ignore[union-attr]
    await store.card_shown(record.id, due_at=T0 + 1 + grace)
    assert (await store.get_change(record.id)).card_due_at is None  # type: ignore[union-attr]

    clock.advance(1)  # the change an undo puts back is marked too
    undo = await reach(store, "sending", action="undo", undo_of=record.id)
    await store.move(undo.id, "applied", from_="sending")
    assert (await store.get_change(record.id)).card_due_at == T0 + 2 + grace  # type: ignore[union-attr]

    clock.advance(1)  # and a move of the revert track
    other = await reach(store, "applied", duration_seconds=60)
    await store.set_thread(other.id, root_ts="1700000000.000200", thread_ts="1700000000.000200")
    claimed = await store.move_revert(other.id, "running", from_="scheduled", revert_run_id=store.run_id)
    assert claimed is not None and claimed.card_due_at == T0 + 3 + grace
