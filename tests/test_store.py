"""bot/store.py on real SQLite files: migrations, the change state machine, fencing, runs, due work, locks, drafts.

Time is a FakeClock; lock waits are paced by injected sleeps and heartbeats are called explicitly
(stores are built with `heartbeat=False`), so nothing here waits on the wall clock.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.change_state import ALLOWED, FINAL, STATES, TransitionError
from bot.emr.changes import DiffEntry
from bot.store import (
    MIGRATIONS,
    MIGRATIONS_V2,
    SCHEMA_VERSION,
    ChangeRecord,
    LockBusy,
    LockLost,
    NewChange,
    SqliteStore,
    StoreError,
    cluster_lock,
    migrate,
    open_store,
    sqlite_path,
)

T0 = 1_700_000_000.0
TTL = 15.0  # the stores' lock_ttl (the default)
GUARD = 10.0  # turns a hang into a failure; never reached when the store works


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


def make(db: Path, clock: FakeClock, **options: Any) -> SqliteStore:
    """A store whose heartbeat the test drives (no background loop) and whose lock waits pass fake time."""
    options.setdefault("heartbeat", False)
    options.setdefault("sleep", AdvancingSleep(clock))
    options.setdefault("lock_ttl", TTL)
    return SqliteStore(db, clock=clock, **options)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database migrated once (at T0, in WAL mode), copied for each test: migrating costs more than the test."""
    path = tmp_path_factory.mktemp("template") / "raybot.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        migrate(conn, T0)
    finally:
        conn.close()
    return path


@pytest.fixture
def db(tmp_path: Path, template: Path) -> Path:
    """An up-to-date database file with nothing in it."""
    path = tmp_path / "raybot.db"
    shutil.copyfile(template, path)
    return path


@pytest.fixture
def new_db(tmp_path: Path) -> Path:
    """Where a database will be: no file yet."""
    return tmp_path / "new.db"


@pytest.fixture
async def store(db: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
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


async def reach(store: SqliteStore, state: str, **overrides: Any) -> ChangeRecord:
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


def raw(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        with conn:
            return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def dead_pid() -> int:
    """A pid no process can have: above the kernel's largest."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1000
    except OSError:
        return 2**31 - 1


def previous_run(
    db: Path, run_id: str, *, replica: str, pid: int, lock: str | None = None, heartbeat_at: float = T0
) -> None:
    """A run an earlier process left behind (never ended), maybe holding a lock it renewed last at `heartbeat_at`."""
    raw(
        db,
        "INSERT INTO runs (run_id, replica, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
        run_id,
        replica,
        pid,
        T0,
        heartbeat_at,
    )
    if lock is not None:
        raw(
            db,
            """INSERT INTO locks (cluster_key, holder, user_id, summary, acquired_at, expires_at, run_id)
               VALUES (?, ?, 'U0', 'left behind', ?, ?, ?)""",
            lock,
            f"token-of-{run_id}",
            T0,
            heartbeat_at + TTL,
            run_id,
        )


def ended_at(db: Path, run_id: str) -> float | None:
    ((stopped,),) = raw(db, "SELECT stopped_at FROM runs WHERE run_id = ?", run_id)
    return stopped


# --- opening and migrations -------------------------------------------------------------------------


def all_versions(applied_at: float) -> list[tuple[int, float]]:
    return [(version, applied_at) for version in range(1, SCHEMA_VERSION + 1)]


async def test_migrates_an_empty_database_with_wal_and_foreign_keys(new_db: Path, clock: FakeClock) -> None:
    async with make(new_db, clock) as store:
        assert raw(new_db, "SELECT version, applied_at FROM schema_version ORDER BY version") == all_versions(T0)
        tables = {name for (name,) in raw(new_db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"changes", "runs", "locks", "drafts", "dedup_keys"} <= tables
        assert not {"approvals", "schedules", "follows", "changes_v3"} & tables
        assert raw(new_db, "PRAGMA journal_mode") == [("wal",)]
        assert await store._call(lambda conn: conn.execute("PRAGMA foreign_keys").fetchone()[0]) == 1


async def test_reopening_keeps_data_and_does_not_migrate_again(new_db: Path, clock: FakeClock) -> None:
    async with make(new_db, clock) as first:
        made = await first.create_change(new_change(), state="applying")
    clock.advance(60)
    async with make(new_db, clock) as second:
        assert await second.get_change(made.id) == made
    assert raw(new_db, "SELECT version, applied_at FROM schema_version ORDER BY version") == all_versions(T0)


async def test_applies_only_the_missing_migrations(new_db: Path, clock: FakeClock) -> None:
    async with make(new_db, clock):
        pass
    extra = (*MIGRATIONS, ("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)",))
    clock.advance(1)
    async with make(new_db, clock, migrations=extra) as store:
        await store.create_change(new_change(), state="applying")
    assert raw(new_db, "SELECT version, applied_at FROM schema_version ORDER BY version") == [
        *all_versions(T0),
        (SCHEMA_VERSION + 1, T0 + 1),
    ]
    assert raw(new_db, "SELECT COUNT(*) FROM notes") == [(0,)]


async def test_a_failing_migration_leaves_the_database_as_it_was(new_db: Path, clock: FakeClock) -> None:
    async with make(new_db, clock):
        pass
    broken = (*MIGRATIONS, ("CREATE TABLE half (id INTEGER)", "THIS IS NOT SQL"))
    with pytest.raises(StoreError, match="syntax error"):
        await make(new_db, clock, migrations=broken).open()
    assert raw(new_db, "SELECT MAX(version) FROM schema_version") == [(SCHEMA_VERSION,)]
    assert raw(new_db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'half'") == [(0,)]


async def test_a_database_newer_than_the_code_is_refused(new_db: Path, clock: FakeClock) -> None:
    async with make(new_db, clock):
        pass
    raw(new_db, "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", SCHEMA_VERSION + 1, T0)
    store = make(new_db, clock)
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this raybot"):
        await store.open()
    with pytest.raises(StoreError, match="closed"):
        await store.get_change(1)


def test_two_processes_migrating_at_once_migrate_once(new_db: Path) -> None:
    start = threading.Barrier(2)
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def process() -> None:
        conn = sqlite3.connect(new_db, isolation_level=None, timeout=GUARD)
        try:
            start.wait(GUARD)
            results.append(migrate(conn, T0))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            conn.close()

    threads = [threading.Thread(target=process) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD)
    assert errors == []
    # One found the file empty and migrated it; the other waited for it and found nothing to do.
    assert sorted(results) == [(0, SCHEMA_VERSION), (SCHEMA_VERSION, SCHEMA_VERSION)]
    assert raw(new_db, "SELECT version, applied_at FROM schema_version ORDER BY version") == all_versions(T0)


async def test_two_stores_opening_one_new_file_together(new_db: Path, clock: FakeClock) -> None:
    one, two = make(new_db, clock, replica="a"), make(new_db, clock, replica="b")
    try:
        await asyncio.gather(one.open(), two.open())
        made = await one.create_change(new_change(), state="applying")
        assert await two.get_change(made.id) == made
    finally:
        await one.close()
        await two.close()
    assert raw(new_db, "SELECT version, applied_at FROM schema_version ORDER BY version") == all_versions(T0)


async def test_opening_a_new_file_another_process_is_writing_waits_for_it(new_db: Path, clock: FakeClock) -> None:
    # Another process is creating the file: switching it to WAL must wait for its lock, not fail at once.
    other = sqlite3.connect(new_db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
        asyncio.get_running_loop().call_later(0.1, other.execute, "COMMIT")
        async with make(new_db, clock) as store:
            assert await store.get_change(1) is None
    finally:
        other.close()
    assert raw(new_db, "PRAGMA journal_mode") == [("wal",)]
    assert raw(new_db, "SELECT version, applied_at FROM schema_version ORDER BY version") == all_versions(T0)


async def test_open_store_accepts_paths_and_sqlite_urls(tmp_path: Path, clock: FakeClock) -> None:
    for database in (str(tmp_path / "a.db"), f"sqlite:///{tmp_path / 'b.db'}"):
        store = await open_store(database, clock=clock)
        try:
            made = await store.create_change(new_change(), state="applying")
            assert made.created_at == T0
        finally:
            await store.close()
    assert (tmp_path / "a.db").exists() and (tmp_path / "b.db").exists()
    assert sqlite_path("sqlite:///relative.db") == "relative.db"
    assert sqlite_path("sqlite:////abs/x.db") == "/abs/x.db"
    assert sqlite_path("raybot.db") == "raybot.db"


@pytest.mark.parametrize(
    "url", ["postgresql://raybot:s3cret@db.internal:5432/raybot", "postgres://raybot:s3cret@db/raybot"]
)
async def test_postgres_urls_are_refused_clearly_without_the_password(url: str) -> None:
    with pytest.raises(StoreError, match="PostgreSQL is not supported yet") as caught:
        await open_store(url)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("database", ["", "mysql://x/y", "sqlite://"])
def test_other_database_values_are_refused(database: str) -> None:
    with pytest.raises(StoreError):
        sqlite_path(database)


async def test_an_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unable to open"):
        await open_store(str(tmp_path / "missing-dir" / "raybot.db"))


# --- migration 3: version-2 data becomes one row per change -------------------------------------------

V2_CHANGE = """INSERT INTO changes (id, created_at, updated_at, team_id, user_id, channel_id, thread_ts, root_ts, alias,
       workspace, cluster_id, region, action, summary, spec_before, body, diff, outcome, request_id, error_code,
       error_message, undo_of, approval_id, finished_at)
    VALUES (?, ?, ?, 'T1', 'U1', 'C1', '1.1', '1.1', 'prod', 'w-1', 'rc-1', 'cn-hangzhou', 'resize', ?,
            '{"workerSpec":[{"groupName":"WorkerGroup1","replica":2}]}',
            '{"workerSpec":[{"groupName":"WorkerGroup1","replica":10}]}',
            '[{"path":"workerSpec[WorkerGroup1].replica","before":2,"after":10}]', ?, ?, ?, ?, NULL, ?, ?)"""

WANTED = {"state": "Running", "groups": {"WorkerGroup1": 10, "组二": 1}}


def version_2_database(db: Path) -> None:
    """A database as raybot with schema version 2 left it, with one of each kind of row."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert migrate(conn, T0, MIGRATIONS_V2) == (0, 2)
        conn.execute(
            """INSERT INTO approvals (id, created_at, expires_at, requester_id, channel_id, alias, action, summary,
                   request, spec_before, status)
               VALUES (1, ?, ?, 'U1', 'C1', 'prod', 'resize', 'WorkerGroup1 → 40', '{}', '{}', 'pending')""",
            (T0, T0 + 3600),
        )
        rows = [
            # id, created, updated, summary, outcome, request_id, error_code, error_message, approval_id, finished
            (1, T0, T0, "in flight", "pending", None, None, None, None, None),
            (2, T0, T0 + 1, "followed", "done", "REQ-2", None, None, None, T0 + 1),
            (3, T0, T0 + 2, "temporary", "done", "REQ-3", None, None, None, T0 + 2),
            (4, T0, T0 + 3, "refused", "failed", "REQ-4", "Throttling.User", "slow down", 1, T0 + 3),
            (5, T0, T0 + 4, "followed to the end", "done", "REQ-5", None, None, None, T0 + 4),
            (6, T0, T0 + 5, "lost answer", "unknown", None, None, "timeout", None, None),
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


async def test_migration_3_turns_version_2_rows_into_states(new_db: Path, clock: FakeClock) -> None:
    version_2_database(new_db)
    clock.advance(100)
    async with make(new_db, clock) as store:
        changes = {c.id: c for c in await store.history("prod", limit=100)}
        # The approval request is not carried over: its id would now name another change.
        assert sorted(changes) == [1, 2, 3, 4, 5, 6]
        assert {c.id: c.state for c in changes.values()} == {
            1: "sending",
            2: "applied",
            3: "settled",
            4: "failed",
            5: "settled",
            6: "unknown",
        }
        assert all(c.version == 0 for c in changes.values())

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

        # The reconciler picks them up: the one in flight (no live run), the follow, the unknown outcome.
        assert [c.id for c in await store.due_changes(clock())] == [1, 2, 6]
        assert [c.id for c in await store.due_reverts(T0 + 3600)] == [3]
        assert await store.next_due_at() == T0
        unknown = await store.move(1, "unknown", from_="sending", next_at=clock())
        assert unknown is not None and unknown.version == 1
        # The old lock is kept until it expires, then taken over.
        with pytest.raises(LockBusy):
            await store.acquire_lock("w-1/rc-9", user_id="U2", summary="x", wait=0)
        clock.advance(20)
        assert await store.acquire_lock("w-1/rc-9", user_id="U2", summary="x", wait=0)

    tables = {name for (name,) in raw(new_db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not {"approvals", "follows", "schedules", "changes_v3"} & tables
    assert raw(new_db, "SELECT version, applied_at FROM schema_version ORDER BY version") == [
        (1, T0),
        (2, T0),
        (3, T0 + 100),
    ]


# --- changes: recording and reading -------------------------------------------------------------------


async def test_audit_round_trip_keeps_json_and_unicode(store: SqliteStore, db: Path, clock: FakeClock) -> None:
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
    assert made.spec_before == spec
    assert made.body == {"workerSpec": [{"replica": 10, "env": None}]}
    assert made.diff == [{"path": "workerSpec[WG1].replica", "before": 2, "after": 10}]
    assert made.replay == {"changes": [{"kind": "replicas", "group": "WG1", "replica": 10}]}
    # Stored as TEXT JSON, Unicode kept as characters.
    (stored,) = raw(db, "SELECT spec_before FROM changes WHERE id = ?", made.id)
    assert "训练集群 🚀" in stored[0]

    clock.advance(5)
    await store.set_thread(made.id, root_ts="1700000005.000200", thread_ts="1700000005.000200")
    got = await store.get_change(made.id)
    assert got is not None
    assert got.summary == "扩容 WorkerGroup1 → 10 ✓"
    assert (got.root_ts, got.thread_ts, got.updated_at) == ("1700000005.000200", "1700000005.000200", T0 + 5)
    assert await store.get_change(made.id + 1) is None
    with pytest.raises(StoreError, match="no change"):
        await store.set_thread(999, root_ts="1", thread_ts="1")


async def test_a_change_starts_as_applying_or_awaiting_approval(store: SqliteStore) -> None:
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
    assert [c.id for c in await store.history("prod")] == [asked.id]


async def test_history_is_newest_first_per_alias_and_limited(store: SqliteStore, clock: FakeClock) -> None:
    ids = []
    for n in range(5):
        ids.append((await store.create_change(new_change(summary=f"change {n}"), state="applying")).id)
        clock.advance(1)
    await store.create_change(new_change(alias="staging"), state="applying")
    assert [c.id for c in await store.history("prod")] == ids[::-1]
    assert [c.summary for c in await store.history("prod", limit=2)] == ["change 4", "change 3"]
    assert [c.alias for c in await store.history("staging")] == ["staging"]
    assert await store.history("nowhere") == []
    assert await store.history("prod", limit=0) == []


async def test_secrets_are_masked_before_they_reach_the_disk(store: SqliteStore, db: Path) -> None:
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
    # A later write of the body is masked too.
    touched = await store.touch(made.id, state="applying", body=body)
    assert touched is not None and touched.body == made.body

    ((stored_spec, stored_body),) = raw(db, "SELECT spec_before, body FROM changes WHERE id = ?", made.id)
    for text in (stored_spec, stored_body):
        assert password not in text and pull_secret not in text
    for file in db.parent.iterdir():  # the database, its WAL and shared memory: nowhere on disk
        content = file.read_bytes()
        assert password.encode() not in content and pull_secret.encode() not in content


# --- the state machine --------------------------------------------------------------------------------

ALLOWED_MOVES = sorted((source, target) for source, targets in ALLOWED.items() for target in targets)
DISALLOWED_MOVES = sorted(
    (source, target) for source in STATES for target in STATES if target not in ALLOWED.get(source, frozenset())
)


async def test_every_allowed_move_works_and_bumps_the_version(store: SqliteStore, clock: FakeClock) -> None:
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


async def test_a_disallowed_move_raises_and_changes_nothing(store: SqliteStore) -> None:
    made = await reach(store, "applied")
    for source, target in DISALLOWED_MOVES:
        with pytest.raises(TransitionError, match=f"from {source} to {target}"):
            await store.move(made.id, target, from_=source)
    # One source the target cannot follow is enough.
    with pytest.raises(TransitionError):
        await store.move(made.id, "settled", from_=("applied", "sending"))
    assert await store.get_change(made.id) == made


async def test_a_move_from_a_state_the_change_is_not_in_returns_none(store: SqliteStore, clock: FakeClock) -> None:
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


async def test_two_stores_racing_to_move_one_change_make_one_winner(db: Path, clock: FakeClock) -> None:
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


async def test_a_move_sets_only_change_fields(store: SqliteStore) -> None:
    made = await reach(store, "applying")
    for field in ("state", "version", "created_at", "updated_at", "no_such_column"):
        with pytest.raises(ValueError, match="not settable"):
            await store.move(made.id, "sending", from_="applying", **{field: 1})
    assert await store.get_change(made.id) == made


async def test_touch_sets_fields_of_a_change_still_in_its_state(store: SqliteStore, clock: FakeClock) -> None:
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


async def test_fenced_writes_happen_only_while_the_lock_is_held(db: Path, clock: FakeClock) -> None:
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
        assert raw(db, "SELECT id FROM changes") == [(made.id,)]
        assert await one.get_change(made.id) == sending
        # A late heartbeat of the old holder does not bring its lock back.
        assert await one.heartbeat() == 0
        assert not await one.holds_lock(fence) and await two.holds_lock(taken)
        unknown = await two.move(made.id, "unknown", from_="sending", fence=taken)
        assert unknown is not None and unknown.version == 2


# --- runs: locks belong to a heartbeating process run ---------------------------------------------------


async def test_locks_live_while_their_run_heartbeats_and_expire_when_it_stops(db: Path, clock: FakeClock) -> None:
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


async def test_close_releases_the_runs_locks(db: Path, clock: FakeClock) -> None:
    async with make(db, clock) as two:
        one = make(db, clock)
        await one.open()
        await one.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        await one.acquire_lock("w-1/rc-2", user_id="U1", summary="resize staging")
        clock.advance(1)
        await one.close()
        assert ended_at(db, one.run_id) == T0 + 1
        assert raw(db, "SELECT COUNT(*) FROM locks WHERE run_id = ?", one.run_id) == [(0,)]
        assert await two.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=0)
        assert await two.acquire_lock("w-1/rc-2", user_id="U2", summary="x", wait=0)
        assert ended_at(db, two.run_id) is None


async def test_a_run_ended_elsewhere_loses_its_locks_at_once(db: Path, clock: FakeClock) -> None:
    async with make(db, clock) as one, make(db, clock) as two:
        fence = await one.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        raw(db, "UPDATE runs SET stopped_at = ? WHERE run_id = ?", T0, one.run_id)
        # Its lock has not expired, but its run is over: taken over without waiting.
        taken = await two.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=0)
        assert await one.heartbeat() == 0
        assert not await one.holds_lock(fence) and await two.holds_lock(taken)


async def test_a_restart_ends_the_previous_run_of_its_replica_at_once(db: Path, clock: FakeClock) -> None:
    previous_run(db, "gone", replica="host-a", pid=dead_pid(), lock="w-1/rc-1", heartbeat_at=T0 + 5)
    previous_run(db, "elsewhere", replica="host-b", pid=dead_pid(), lock="w-1/rc-2", heartbeat_at=T0 + 5)
    clock.advance(10)  # both locks are good until T0 + 20
    async with make(db, clock, replica="host-a") as store:
        in_flight = await store.create_change(new_change(), state="applying")
        raw(db, "UPDATE changes SET run_id = 'gone' WHERE id = ?", in_flight.id)
        assert ended_at(db, "gone") == T0 + 10
        # Its lock is free at once, and what it was doing is due now.
        assert await store.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=0)
        assert [c.id for c in await store.due_changes(clock())] == [in_flight.id]
        assert await store.next_due_at() == T0 + 10
        # A dead pid means nothing on another host: that run keeps its lock until it goes silent.
        assert ended_at(db, "elsewhere") is None
        with pytest.raises(LockBusy):
            await store.acquire_lock("w-1/rc-2", user_id="U2", summary="x", wait=0)
        clock.advance(10)
        assert await store.acquire_lock("w-1/rc-2", user_id="U2", summary="x", wait=0)


async def test_a_run_of_this_pid_not_open_here_is_a_previous_life(db: Path, clock: FakeClock) -> None:
    # In a container the process restarts with the same pid (1) and host name.
    previous_run(db, "before-restart", replica="host-a", pid=os.getpid(), lock="w-1/rc-1")
    async with make(db, clock, replica="host-a") as store:
        assert ended_at(db, "before-restart") == T0
        assert await store.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=0)


async def test_a_second_store_of_the_same_process_and_replica_keeps_the_first_run(db: Path, clock: FakeClock) -> None:
    async with make(db, clock, replica="host-a") as first:
        await first.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        async with make(db, clock, replica="host-a") as second:
            assert ended_at(db, first.run_id) is None
            with pytest.raises(LockBusy) as caught:
                await second.acquire_lock("w-1/rc-1", user_id="U2", summary="x", wait=0)
            assert caught.value.holder.run_id == first.run_id


async def test_a_store_opening_beside_another_of_this_process_keeps_its_run(
    db: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make(db, clock, replica="host-a"), make(db, clock, replica="host-a")
    registered, go_on = threading.Event(), threading.Event()
    start_run = first._start_run

    def start_run_then_pause(conn: sqlite3.Connection) -> int:
        ended = start_run(conn)
        registered.set()
        go_on.wait(GUARD)
        return ended

    # The second opens after the first's runs row exists and before the first's open() has returned.
    monkeypatch.setattr(first, "_start_run", start_run_then_pause)
    opening = asyncio.create_task(first.open())
    try:
        assert await asyncio.to_thread(registered.wait, GUARD)
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
    db: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny TTL: the background loop beats every millisecond of real time (renewing by the fake clock).
    async with SqliteStore(db, clock=clock, lock_ttl=0.003) as beating, make(db, clock) as quiet:
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
        ((expires_at,),) = raw(db, "SELECT expires_at FROM locks WHERE cluster_key = 'w-1/rc-1'")
        assert expires_at == clock() + 0.003
        assert raw(db, "SELECT heartbeat_at FROM runs WHERE run_id = ?", beating.run_id) == [(T0 + 100,)]
    assert task.cancelled()


# --- what is due -----------------------------------------------------------------------------------------


async def test_in_flight_changes_are_due_only_when_their_run_is_gone(db: Path, clock: FakeClock) -> None:
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
        assert [c.id for c in await watcher.due_changes(clock())] == [applying.id, sending.id]
        await worker.heartbeat()  # it was only slow
        assert await watcher.due_changes(clock()) == []
        assert await watcher.next_due_at() == clock() + TTL
        clock.advance(1)
        await worker.close()  # ended: due at once
        assert [c.id for c in await watcher.due_changes(clock())] == [applying.id, sending.id]
        assert await watcher.next_due_at() == clock()


async def test_changes_are_due_when_their_next_at_comes(store: SqliteStore) -> None:
    unknown = await store.touch((await reach(store, "unknown")).id, state="unknown", next_at=T0 + 10)
    applied = await store.touch((await reach(store, "applied")).id, state="applied", next_at=T0 + 20)
    asked = await reach(store, "awaiting_approval", expires_at=T0 + 30)
    await store.set_thread(asked.id, root_ts="1.1", thread_ts="1.1")
    settled = await reach(store, "applied")
    await store.move(settled.id, "settled", from_="applied", next_at=T0 + 5)  # over: never due
    await reach(store, "applying")  # this live run's own: not due
    assert unknown is not None and applied is not None
    assert await store.next_due_at() == T0 + 10
    assert await store.due_changes(T0 + 9) == []
    assert [c.id for c in await store.due_changes(T0 + 10)] == [unknown.id]
    # (The run is judged alive by its heartbeat at T0: `now` here only looks ahead.)
    assert [c.id for c in await store.due_changes(T0 + 14)] == [unknown.id]
    await store.touch(unknown.id, state="unknown", next_at=T0 + 40)
    assert await store.next_due_at() == T0 + 20


async def test_an_approval_request_never_posted_is_due_when_its_run_is_gone(db: Path, clock: FakeClock) -> None:
    async with make(db, clock) as watcher:
        asker = make(db, clock)
        await asker.open()
        unposted = await reach(asker, "awaiting_approval", expires_at=T0 + 3600)
        posted = await reach(asker, "awaiting_approval", expires_at=T0 + 3600)
        await asker.set_thread(posted.id, root_ts="1.1", thread_ts="1.1")
        assert await watcher.due_changes(clock()) == []  # it is still being posted
        assert await watcher.next_due_at() == T0 + TTL
        await asker.close()
        assert [c.id for c in await watcher.due_changes(clock())] == [unposted.id]
        assert [c.id for c in await watcher.due_changes(T0 + 3600)] == [unposted.id, posted.id]


async def test_reverts_are_due_at_their_time_or_when_their_run_is_gone(db: Path, clock: FakeClock) -> None:
    async with make(db, clock) as watcher:
        worker = make(db, clock)
        await worker.open()
        temporary = await reach(worker, "applied", duration_seconds=600)
        assert temporary.revert_at == T0 + 600
        assert await watcher.next_due_at() == T0 + 600
        assert await watcher.due_reverts(T0 + 599) == []
        clock.advance(600)
        await worker.heartbeat()
        assert [c.id for c in await watcher.due_reverts(clock())] == [temporary.id]
        claimed = await worker.move_revert(temporary.id, "running", from_="scheduled", revert_run_id=worker.run_id)
        assert claimed is not None
        assert await watcher.due_reverts(clock()) == []  # running in a live run
        assert await watcher.next_due_at() == clock() + TTL
        await worker.close()
        assert [c.id for c in await watcher.due_reverts(clock())] == [temporary.id]
        assert await watcher.next_due_at() == clock()
        # Handed back (as the reconciler does), it is due again as scheduled.
        back = await watcher.move_revert(temporary.id, "scheduled", from_="running", revert_run_id=None)
        assert back is not None and back.revert_at == T0 + 600
        assert [c.id for c in await watcher.due_reverts(clock())] == [temporary.id]


async def test_next_due_at_is_the_earliest_look_revert_or_silent_run(db: Path, clock: FakeClock) -> None:
    async with make(db, clock) as store, make(db, clock) as other:
        assert await store.next_due_at() is None
        await reach(store, "applying")  # in flight in this very run: not something to wake up for
        assert await store.next_due_at() is None
        unknown = await reach(store, "unknown")
        await store.touch(unknown.id, state="unknown", next_at=T0 + 100)
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


# --- taking effect: temporary changes and undo ------------------------------------------------------------


async def test_taking_effect_schedules_the_revert_of_a_temporary_change(store: SqliteStore, clock: FakeClock) -> None:
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


async def test_an_undo_taking_effect_cancels_the_revert_it_makes_needless(store: SqliteStore, clock: FakeClock) -> None:
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

    # A revert already running is not taken from its worker by an undo.
    running = await reach(store, "applied", duration_seconds=60)
    await store.move_revert(running.id, "running", from_="scheduled", revert_run_id=store.run_id)
    await reach(store, "applied", action="undo", undo_of=running.id)
    assert (await store.get_change(running.id)).revert_state == "running"  # type: ignore[union-attr]


async def test_move_revert_is_compare_and_set(db: Path, clock: FakeClock) -> None:
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
                two.move_revert(raced.id, "cancelled", from_="scheduled"),
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


async def test_claim_once_then_again_after_expiry(store: SqliteStore, clock: FakeClock) -> None:
    assert await store.claim("evt-1") is True
    assert await store.claim("evt-1") is False
    assert await store.claim("evt-2") is True
    clock.advance(599)
    assert await store.claim("evt-1") is False
    clock.advance(1)
    assert await store.claim("evt-1") is True
    assert await store.claim("evt-1") is False


async def test_claim_refuses_a_ttl_below_ten_minutes(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="at least 600"):
        await store.claim("k", ttl=599)
    with pytest.raises(ValueError, match="empty"):
        await store.claim("")
    assert await store.claim("k", ttl=3600) is True


async def test_a_released_claim_can_be_claimed_again(store: SqliteStore) -> None:
    assert await store.claim("click-1") is True
    await store.release_claim("click-1")
    assert await store.claim("click-1") is True
    assert await store.claim("click-1") is False
    await store.release_claim("never-claimed")  # nothing to give back is fine


async def test_fifty_concurrent_claims_of_one_key_make_one_winner(store: SqliteStore) -> None:
    results = await asyncio.gather(*(store.claim("trigger-xyz") for _ in range(50)))
    assert results.count(True) == 1


async def test_two_replicas_on_one_file_claim_once(db: Path, clock: FakeClock) -> None:
    async with make(db, clock) as one, make(db, clock) as two:
        results = await asyncio.gather(*(s.claim("shared") for _ in range(10) for s in (one, two)))
        assert results.count(True) == 1


# --- locks -------------------------------------------------------------------------------------------


async def test_same_cluster_serializes_and_the_waiter_is_woken_without_polling(db: Path, clock: FakeClock) -> None:
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


async def test_different_clusters_do_not_wait_for_each_other(db: Path, clock: FakeClock) -> None:
    sleep = ParkedSleep()
    async with make(db, clock, sleep=sleep) as store:
        await store.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        other = await store.acquire_lock("w-1/rc-2", user_id="U2", summary="resize staging")
        assert other and sleep.calls == []


async def test_timeout_says_who_holds_the_cluster(store: SqliteStore, clock: FakeClock) -> None:
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


async def test_a_stale_lock_is_taken_over(store: SqliteStore, clock: FakeClock) -> None:
    old = await store.acquire_lock("k", user_id="U1", summary="old")
    clock.advance(TTL)
    new = await store.acquire_lock("k", user_id="U2", summary="new", wait=0)
    # The dead holder's late release must not free the new holder's lock.
    await store.release_lock(old)
    with pytest.raises(LockBusy) as caught:
        await store.acquire_lock("k", user_id="U3", summary="x", wait=0)
    assert caught.value.holder.holder == new.token and caught.value.holder.user_id == "U2"


async def test_a_waiter_takes_the_lock_when_it_goes_stale(db: Path, clock: FakeClock) -> None:
    async with make(db, clock, lock_ttl=30) as store:
        await store.acquire_lock("k", user_id="U1", summary="stuck")
        fence = await store.acquire_lock("k", user_id="U2", summary="next", wait=60)
        assert await store.holds_lock(fence) and clock() == T0 + 30


async def test_cluster_lock_context_releases_on_error(store: SqliteStore) -> None:
    with pytest.raises(RuntimeError):
        async with cluster_lock(store, "k", user_id="U1", summary="boom") as fence:
            assert await store.holds_lock(fence)
            raise RuntimeError
    assert not await store.holds_lock(fence)
    assert await store.acquire_lock("k", user_id="U2", summary="after", wait=0)


async def test_lock_held_by_another_replica_blocks_then_is_seen_released(db: Path, clock: FakeClock) -> None:
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


# --- drafts ------------------------------------------------------------------------------------------


async def test_drafts_round_trip_replace_expire_and_delete(store: SqliteStore, clock: FakeClock) -> None:
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


async def test_purge_removes_only_expired_keys_drafts_and_old_runs(
    store: SqliteStore, db: Path, clock: FakeClock
) -> None:
    await store.claim("old")
    short = await store.put_draft({"a": 1}, user_id="U1", ttl=60)
    async with make(db, clock) as ended:
        pass
    clock.advance(600)
    await store.claim("fresh")
    kept = await store.put_draft({"b": 2}, user_id="U1", ttl=3600)
    assert await store.purge_expired() == 2
    assert raw(db, "SELECT key FROM dedup_keys") == [("fresh",)]
    assert raw(db, "SELECT key FROM drafts") == [(kept,)]
    assert short != kept
    assert await store.purge_expired() == 0
    # A day after it ended, a run is forgotten; a live run never is.
    clock.advance(86400)
    assert await store.purge_expired() == 3
    assert raw(db, "SELECT run_id FROM runs") == [(store.run_id,)]
    assert ended.run_id != store.run_id


# --- the event loop is never blocked by the database -------------------------------------------------


async def test_a_slow_query_does_not_block_the_event_loop(store: SqliteStore) -> None:
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()
    release = threading.Event()
    threads: set[int] = set()

    def block() -> int:
        threads.add(threading.get_ident())
        loop.call_soon_threadsafe(entered.set)
        release.wait(10)
        return 1

    await store._call(lambda conn: conn.create_function("block", 0, block))
    slow = asyncio.create_task(store._call(lambda conn: conn.execute("SELECT block()").fetchone()[0]))
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
    worker = await store._call(lambda conn: threading.get_ident())
    assert threads == {worker}


async def test_closed_store_refuses_calls(db: Path, clock: FakeClock) -> None:
    store = make(db, clock)
    await store.open()
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.claim("k")
