"""bot/store.py on real SQLite files: migrations, audit log, exactly-once, locks, drafts, approvals, schedules.

Time is a FakeClock; lock waits are paced by injected sleeps, so nothing here waits on the wall clock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.emr.changes import DiffEntry
from bot.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Follow,
    LockBusy,
    NewChange,
    SqliteStore,
    StoreError,
    cluster_lock,
    open_store,
    sqlite_path,
)

T0 = 1_700_000_000.0
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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "raybot.db"


@pytest.fixture
async def store(db: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(db, clock=clock, sleep=AdvancingSleep(clock)) as s:
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


def raw(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        with conn:
            return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# --- opening and migrations -------------------------------------------------------------------------


def all_versions(applied_at: float) -> list[tuple[int, float]]:
    return [(version, applied_at) for version in range(1, SCHEMA_VERSION + 1)]


async def test_migrates_an_empty_database_with_wal_and_foreign_keys(store: SqliteStore, db: Path) -> None:
    assert raw(db, "SELECT version, applied_at FROM schema_version ORDER BY version") == all_versions(T0)
    tables = {name for (name,) in raw(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"changes", "approvals", "schedules", "locks", "drafts", "dedup_keys", "follows"} <= tables
    assert raw(db, "PRAGMA journal_mode") == [("wal",)]
    # Foreign keys are on for the store's connection: a schedule for no change is refused.
    with pytest.raises(StoreError, match="FOREIGN KEY"):
        await store.schedule(change_id=999, due_at=T0, alias="prod", channel_id="C1", thread_ts=None)


async def test_reopening_keeps_data_and_does_not_migrate_again(db: Path, clock: FakeClock) -> None:
    async with SqliteStore(db, clock=clock) as first:
        made = await first.record_pending(new_change())
    clock.advance(60)
    async with SqliteStore(db, clock=clock) as second:
        assert await second.get_change(made.id) == made
    assert raw(db, "SELECT version, applied_at FROM schema_version ORDER BY version") == all_versions(T0)


async def test_applies_only_the_missing_migrations(db: Path, clock: FakeClock) -> None:
    async with SqliteStore(db, clock=clock):
        pass
    extra = (*MIGRATIONS, ("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)",))
    clock.advance(1)
    async with SqliteStore(db, clock=clock, migrations=extra) as store:
        await store.record_pending(new_change())
    assert raw(db, "SELECT version, applied_at FROM schema_version ORDER BY version") == [
        *all_versions(T0),
        (SCHEMA_VERSION + 1, T0 + 1),
    ]
    assert raw(db, "SELECT COUNT(*) FROM notes") == [(0,)]


async def test_a_failing_migration_leaves_the_database_as_it_was(db: Path, clock: FakeClock) -> None:
    async with SqliteStore(db, clock=clock):
        pass
    broken = (*MIGRATIONS, ("CREATE TABLE half (id INTEGER)", "THIS IS NOT SQL"))
    with pytest.raises(StoreError, match="syntax error"):
        await SqliteStore(db, clock=clock, migrations=broken).open()
    assert raw(db, "SELECT MAX(version) FROM schema_version") == [(SCHEMA_VERSION,)]
    assert raw(db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'half'") == [(0,)]


async def test_a_database_newer_than_the_code_is_refused(db: Path, clock: FakeClock) -> None:
    async with SqliteStore(db, clock=clock):
        pass
    raw(db, "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", SCHEMA_VERSION + 1, T0)
    store = SqliteStore(db, clock=clock)
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this raybot"):
        await store.open()
    with pytest.raises(StoreError, match="closed"):
        await store.get_change(1)


async def test_open_store_accepts_paths_and_sqlite_urls(tmp_path: Path, clock: FakeClock) -> None:
    for database in (str(tmp_path / "a.db"), f"sqlite:///{tmp_path / 'b.db'}"):
        store = await open_store(database, clock=clock)
        try:
            made = await store.record_pending(new_change())
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


# --- audit log ---------------------------------------------------------------------------------------


async def test_audit_round_trip_keeps_json_and_unicode(store: SqliteStore, db: Path, clock: FakeClock) -> None:
    spec = {"name": "训练集群 🚀", "headSpec": {"env": {"NOTE": "café"}}, "workerSpec": [{"replica": 2}]}
    made = await store.record_pending(
        new_change(
            summary="扩容 WorkerGroup1 → 10 ✓",
            spec_before=spec,
            body={"workerSpec": [{"replica": 10, "env": None}]},
            diff=[DiffEntry(path="workerSpec[WG1].replica", before=2, after=10)],
            thread_ts="1700000000.000100",
        )
    )
    assert made.outcome == "pending" and made.created_at == made.updated_at == T0
    assert made.finished_at is None and made.request_id is None
    assert made.spec_before == spec
    assert made.body == {"workerSpec": [{"replica": 10, "env": None}]}
    assert made.diff == [{"path": "workerSpec[WG1].replica", "before": 2, "after": 10}]
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


async def test_outcome_pending_to_done_and_to_failed(store: SqliteStore, clock: FakeClock) -> None:
    ok = await store.record_pending(new_change())
    bad = await store.record_pending(new_change())
    clock.advance(3)
    done = await store.record_outcome(ok.id, "done", request_id="REQ-1")
    assert (done.outcome, done.request_id, done.finished_at, done.updated_at) == ("done", "REQ-1", T0 + 3, T0 + 3)
    failed = await store.record_outcome(
        bad.id, "failed", request_id="REQ-2", error_code="Throttling.User", error_message="slow down"
    )
    assert (failed.outcome, failed.error_code, failed.error_message) == ("failed", "Throttling.User", "slow down")
    assert await store.get_change(bad.id) == failed


async def test_outcome_unknown_can_be_reconciled_but_done_is_final(store: SqliteStore, clock: FakeClock) -> None:
    made = await store.record_pending(new_change())
    unknown = await store.record_outcome(made.id, "unknown", error_message="raybot restarted mid-change")
    assert unknown.outcome == "unknown" and unknown.finished_at is None
    clock.advance(30)
    done = await store.record_outcome(made.id, "done", request_id="REQ-9")
    assert (done.outcome, done.error_message, done.finished_at) == ("done", None, T0 + 30)
    with pytest.raises(StoreError, match=f"change {made.id} is done; it cannot become failed"):
        await store.record_outcome(made.id, "failed", error_code="X")
    with pytest.raises(StoreError, match="is done; it cannot become unknown"):
        await store.record_outcome(made.id, "unknown")
    with pytest.raises(ValueError):
        await store.record_outcome(made.id, "pending")
    with pytest.raises(StoreError, match="no change"):
        await store.record_outcome(999, "done")
    assert (await store.get_change(made.id)) == done


async def test_a_crash_between_pending_and_outcome_leaves_a_pending_record(db: Path, clock: FakeClock) -> None:
    crashed = SqliteStore(db, clock=clock)
    await crashed.open()
    interrupted = await crashed.record_pending(new_change(summary="interrupted"))
    finished = await crashed.record_pending(new_change())
    await crashed.record_outcome(finished.id, "done", request_id="R")
    # The "dead" process never closes; the next start opens the same file beside it.
    try:
        async with SqliteStore(db, clock=clock) as restarted:
            assert [c.id for c in await restarted.pending_changes()] == [interrupted.id]
            await restarted.record_outcome(interrupted.id, "unknown")
            assert await restarted.pending_changes() == []
    finally:
        await crashed.close()


async def test_history_is_newest_first_per_alias_and_limited(store: SqliteStore, clock: FakeClock) -> None:
    ids = []
    for n in range(5):
        ids.append((await store.record_pending(new_change(summary=f"change {n}"))).id)
        clock.advance(1)
    await store.record_pending(new_change(alias="staging"))
    assert [c.id for c in await store.history("prod")] == ids[::-1]
    assert [c.summary for c in await store.history("prod", limit=2)] == ["change 4", "change 3"]
    assert [c.alias for c in await store.history("staging")] == ["staging"]
    assert await store.history("nowhere") == []


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
    assert await store.claim("k", ttl=3600) is True


async def test_fifty_concurrent_claims_of_one_key_make_one_winner(store: SqliteStore) -> None:
    results = await asyncio.gather(*(store.claim("trigger-xyz") for _ in range(50)))
    assert results.count(True) == 1


async def test_two_replicas_on_one_file_claim_once(db: Path, clock: FakeClock) -> None:
    async with SqliteStore(db, clock=clock) as one, SqliteStore(db, clock=clock) as two:
        results = await asyncio.gather(*(s.claim("shared") for _ in range(10) for s in (one, two)))
        assert results.count(True) == 1


# --- locks -------------------------------------------------------------------------------------------


async def test_same_cluster_serializes_and_the_waiter_is_woken_without_polling(db: Path, clock: FakeClock) -> None:
    sleep = ParkedSleep()
    async with SqliteStore(db, clock=clock, sleep=sleep) as store:
        first = await store.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        second = asyncio.create_task(store.acquire_lock("w-1/rc-1", user_id="U2", summary="edit prod", wait=5.0))
        await asyncio.wait_for(sleep.next_call(), GUARD)
        assert not second.done()
        # The holder is in this process: one wait for the whole budget, no DB re-check interval.
        assert sleep.calls == [5.0]
        await store.release_lock("w-1/rc-1", first)
        token = await asyncio.wait_for(second, GUARD)
        assert token != first
        assert sleep.calls == [5.0]  # woken by the release, not by the sleep ending
        with pytest.raises(LockBusy) as caught:
            await store.acquire_lock("w-1/rc-1", user_id="U3", summary="x", wait=0)
        assert caught.value.holder.user_id == "U2"
        await store.release_lock("w-1/rc-1", token)


async def test_different_clusters_do_not_wait_for_each_other(db: Path, clock: FakeClock) -> None:
    sleep = ParkedSleep()
    async with SqliteStore(db, clock=clock, sleep=sleep) as store:
        await store.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        other = await store.acquire_lock("w-1/rc-2", user_id="U2", summary="resize staging")
        assert other and sleep.calls == []


async def test_timeout_says_who_holds_the_cluster(store: SqliteStore, clock: FakeClock) -> None:
    await store.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod WorkerGroup1=10")
    with pytest.raises(LockBusy) as caught:
        await store.acquire_lock("w-1/rc-1", user_id="U2", summary="edit prod", wait=5.0)
    holder = caught.value.holder
    assert (holder.user_id, holder.summary, holder.acquired_at) == ("U1", "resize prod WorkerGroup1=10", T0)
    assert "U1" in str(caught.value)
    assert clock() == T0 + 5.0  # it did wait the whole budget


async def test_a_stale_lock_is_taken_over(store: SqliteStore, clock: FakeClock) -> None:
    old = await store.acquire_lock("k", user_id="U1", summary="old", ttl=120)
    clock.advance(120)
    new = await store.acquire_lock("k", user_id="U2", summary="new", wait=0)
    # The dead holder's late release must not free the new holder's lock.
    await store.release_lock("k", old)
    with pytest.raises(LockBusy) as caught:
        await store.acquire_lock("k", user_id="U3", summary="x", wait=0)
    assert caught.value.holder.holder == new and caught.value.holder.user_id == "U2"


async def test_a_waiter_takes_the_lock_when_it_goes_stale(store: SqliteStore, clock: FakeClock) -> None:
    await store.acquire_lock("k", user_id="U1", summary="stuck", ttl=30)
    token = await store.acquire_lock("k", user_id="U2", summary="next", wait=60)
    assert token and clock() == T0 + 30


async def test_refresh_extends_only_the_holders_lock(store: SqliteStore, clock: FakeClock) -> None:
    token = await store.acquire_lock("k", user_id="U1", summary="long change", ttl=120)
    clock.advance(100)
    assert await store.refresh_lock("k", token, ttl=120) is True
    assert await store.refresh_lock("k", "not-the-holder") is False
    clock.advance(100)  # past the first expiry, within the refreshed one
    with pytest.raises(LockBusy):
        await store.acquire_lock("k", user_id="U2", summary="x", wait=0)


async def test_cluster_lock_context_releases_on_error(store: SqliteStore) -> None:
    with pytest.raises(RuntimeError):
        async with cluster_lock(store, "k", user_id="U1", summary="boom"):
            raise RuntimeError
    assert await store.acquire_lock("k", user_id="U2", summary="after", wait=0)


async def test_lock_held_by_another_replica_blocks_then_is_seen_released(db: Path, clock: FakeClock) -> None:
    async with (
        SqliteStore(db, clock=clock) as one,
        SqliteStore(db, clock=clock, sleep=AdvancingSleep(clock), lock_recheck=0.5) as two,
    ):
        held = await one.acquire_lock("w-1/rc-1", user_id="U1", summary="resize prod")
        with pytest.raises(LockBusy) as caught:
            await two.acquire_lock("w-1/rc-1", user_id="U2", summary="edit prod", wait=2.0)
        assert caught.value.holder.user_id == "U1"
        assert clock() == T0 + 2.0

        # Another process's release wakes nobody here: the waiter finds it at its next re-check.
        parked = ParkedSleep()
        three = SqliteStore(db, clock=clock, sleep=parked, lock_recheck=0.5)
        async with three:
            waiter = asyncio.create_task(three.acquire_lock("w-1/rc-1", user_id="U3", summary="x", wait=5.0))
            await asyncio.wait_for(parked.next_call(), GUARD)
            assert parked.calls == [0.5]
            await one.release_lock("w-1/rc-1", held)
            assert not waiter.done()
            parked.wake_all()
            assert await asyncio.wait_for(waiter, GUARD)


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


# --- approvals ---------------------------------------------------------------------------------------


async def make_approval(store: SqliteStore) -> int:
    approval = await store.create_approval(
        requester_id="U1",
        channel_id="C1",
        alias="prod",
        action="resize",
        summary="WorkerGroup1 → 40",
        request={"changes": [{"kind": "replicas", "group": "WorkerGroup1", "replica": 40}]},
        spec_before={"workerSpec": [{"groupName": "WorkerGroup1", "replica": 2}]},
        expires_at=T0 + 3600,
    )
    assert approval.status == "pending" and approval.decided_by is None
    return approval.id


async def test_approval_decisions_are_compare_and_set(store: SqliteStore, clock: FakeClock) -> None:
    approval_id = await make_approval(store)
    await store.set_approval_message(approval_id, root_ts="1.1", thread_ts="1.1")
    clock.advance(10)
    approved, again = await asyncio.gather(
        store.decide_approval(approval_id, "approved", by="U2"),
        store.decide_approval(approval_id, "approved", by="U3"),
    )
    assert approved is not None and again is None
    assert (approved.status, approved.decided_by, approved.decided_at) == ("approved", "U2", T0 + 10)
    assert await store.decide_approval(approval_id, "rejected", by="U3") is None
    clock.advance(5)
    applied = await store.decide_approval(approval_id, "applied", by=None, expected="approved")
    assert applied is not None and applied.status == "applied"
    assert (applied.decided_by, applied.decided_at, applied.root_ts) == ("U2", T0 + 10, "1.1")
    assert applied.request == {"changes": [{"kind": "replicas", "group": "WorkerGroup1", "replica": 40}]}
    assert await store.get_approval(approval_id) == applied
    assert await store.get_approval(999) is None
    with pytest.raises(ValueError):
        await store.decide_approval(approval_id, "maybe", by="U2", expected="applied")


async def test_rejection_keeps_reason(store: SqliteStore) -> None:
    approval_id = await make_approval(store)
    rejected = await store.decide_approval(approval_id, "rejected", by="U2", reason="not during the freeze")
    assert rejected is not None and (rejected.status, rejected.reason) == ("rejected", "not during the freeze")


# --- scheduled reverts -------------------------------------------------------------------------------


async def test_schedules_due_finish_and_cancel(store: SqliteStore, clock: FakeClock) -> None:
    change = await store.record_pending(new_change())
    assert await store.next_due_at() is None
    late = await store.schedule(change_id=change.id, due_at=T0 + 7200, alias="prod", channel_id="C1", thread_ts="1.1")
    soon = await store.schedule(change_id=change.id, due_at=T0 + 3600, alias="prod", channel_id="C1", thread_ts=None)
    assert soon.status == "scheduled" and soon.created_at == T0
    assert await store.next_due_at() == T0 + 3600
    assert await store.due_schedules(T0 + 3599) == []
    assert [s.id for s in await store.due_schedules(T0 + 7200)] == [soon.id, late.id]

    clock.advance(3600)
    done, twice = await asyncio.gather(
        store.finish_schedule(soon.id, "done", note="reverted: REQ-7"),
        store.finish_schedule(soon.id, "failed"),
    )
    assert done is not None and twice is None
    assert (done.status, done.finished_at, done.note) == ("done", T0 + 3600, "reverted: REQ-7")
    assert await store.next_due_at() == T0 + 7200

    cancelled = await store.finish_schedule(late.id, "cancelled", note="cancelled by U1")
    assert cancelled is not None and cancelled.status == "cancelled"
    assert await store.finish_schedule(late.id, "done") is None
    assert await store.next_due_at() is None
    assert await store.due_schedules(T0 + 10**6) == []
    assert await store.get_schedule(late.id) == cancelled
    assert await store.get_schedule(999) is None


# --- following changes until the cluster settles ------------------------------------------------------

WANTED = {"state": "Running", "groups": {"WorkerGroup1": 10, "组二": 1}}


async def start_follow(store: SqliteStore, change_id: int, **overrides: Any) -> Follow:
    fields: dict[str, Any] = {
        "change_id": change_id,
        "alias": "prod",
        "channel_id": "C1",
        "thread_ts": "1.1",
        "root_ts": "1.1",
        "wanted": WANTED,
        "deadline_at": T0 + 900,
        "next_at": T0 + 5,
    }
    return await store.start_follow(**(fields | overrides))


async def test_the_follows_migration_keeps_a_previous_versions_data(db: Path, clock: FakeClock) -> None:
    previous = MIGRATIONS[: SCHEMA_VERSION - 1]
    async with SqliteStore(db, clock=clock, migrations=previous) as old:
        made = await old.record_pending(new_change())
        await old.record_outcome(made.id, "done", request_id="REQ-1")
        scheduled = await old.schedule(change_id=made.id, due_at=T0 + 60, alias="prod", channel_id="C1", thread_ts=None)
    assert raw(db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'follows'") == [(0,)]

    clock.advance(1)
    async with SqliteStore(db, clock=clock) as new:
        kept = await new.get_change(made.id)
        assert kept is not None and (kept.outcome, kept.request_id, kept.body) == ("done", "REQ-1", made.body)
        assert await new.get_schedule(scheduled.id) == scheduled
        follow = await start_follow(new, made.id)
        assert follow.change_id == made.id and follow.wanted == WANTED
    assert raw(db, "SELECT version, applied_at FROM schema_version ORDER BY version") == [
        *[(version, T0) for version in range(1, SCHEMA_VERSION)],
        (SCHEMA_VERSION, T0 + 1),
    ]


async def test_start_follow_round_trips_and_refuses_an_unknown_change(store: SqliteStore) -> None:
    change = await store.record_pending(new_change())
    follow = await start_follow(store, change.id, thread_ts=None, root_ts=None)
    assert (follow.status, follow.attempt, follow.started_at, follow.next_at, follow.deadline_at) == (
        "following",
        0,
        T0,
        T0 + 5,
        T0 + 900,
    )
    assert (follow.thread_ts, follow.root_ts, follow.last_summary, follow.finished_at) == (None, None, None, None)
    assert follow.wanted == WANTED  # JSON with unicode comes back as it went in
    assert await store.get_follow(follow.id) == follow
    assert await store.get_follow(999) is None
    with pytest.raises(StoreError, match="FOREIGN KEY"):
        await start_follow(store, 999)


async def test_a_change_is_followed_once_at_a_time(store: SqliteStore, clock: FakeClock) -> None:
    change = await store.record_pending(new_change())
    first, again = await asyncio.gather(start_follow(store, change.id), start_follow(store, change.id, next_at=T0 + 99))
    assert first == again and first.next_at in (T0 + 5, T0 + 99)
    assert len(await store.due_follows(T0 + 100)) == 1
    # Once that follow is over, the change may be followed afresh (e.g. by an undo of the same change).
    await store.finish_follow(first.id, "cancelled")
    clock.advance(10)
    fresh = await start_follow(store, change.id, next_at=T0 + 20)
    assert fresh.id != first.id and fresh.status == "following" and fresh.started_at == T0 + 10


async def test_due_follows_and_reschedule(store: SqliteStore, clock: FakeClock) -> None:
    one = await store.record_pending(new_change())
    two = await store.record_pending(new_change(alias="dev"))
    assert await store.next_follow_at() is None
    late = await start_follow(store, one.id, next_at=T0 + 10)
    soon = await start_follow(store, two.id, alias="dev", next_at=T0 + 5)
    assert await store.next_follow_at() == T0 + 5
    assert await store.due_follows(T0 + 4.9) == []
    assert [f.id for f in await store.due_follows(T0 + 10)] == [soon.id, late.id]

    await store.reschedule_follow(soon.id, next_at=T0 + 15, attempt=1, last_summary="Running · WorkerGroup1 2/10")
    moved = await store.get_follow(soon.id)
    assert moved is not None
    assert (moved.next_at, moved.attempt, moved.last_summary, moved.status) == (
        T0 + 15,
        1,
        "Running · WorkerGroup1 2/10",
        "following",
    )
    assert await store.next_follow_at() == T0 + 10
    assert [f.id for f in await store.due_follows(T0 + 10)] == [late.id]
    # No new summary (the read failed): the last one is kept.
    await store.reschedule_follow(soon.id, next_at=T0 + 45, attempt=2, last_summary=None)
    kept = await store.get_follow(soon.id)
    assert kept is not None and (kept.attempt, kept.last_summary) == (2, "Running · WorkerGroup1 2/10")


async def test_finish_follow_is_compare_and_set(store: SqliteStore, clock: FakeClock) -> None:
    change = await store.record_pending(new_change())
    follow = await start_follow(store, change.id)
    clock.advance(120)
    done, twice = await asyncio.gather(
        store.finish_follow(follow.id, "done", last_summary="Running · WorkerGroup1 10/10"),
        store.finish_follow(follow.id, "timeout"),
    )
    assert done is not None and twice is None  # one answer in the thread, whichever replica got there first
    assert (done.status, done.finished_at, done.last_summary) == ("done", T0 + 120, "Running · WorkerGroup1 10/10")
    assert await store.due_follows(T0 + 10**6) == [] and await store.next_follow_at() is None

    # A finished follow is not moved by a late reschedule from a replica that read before it finished.
    await store.reschedule_follow(follow.id, next_at=T0 + 200, attempt=9, last_summary="stale")
    assert await store.get_follow(follow.id) == done
    assert await store.finish_follow(follow.id, "failed") is None
    # An explicit `expected` lets a finished follow be corrected on purpose.
    fixed = await store.finish_follow(follow.id, "failed", expected="done")
    assert fixed is not None and fixed.status == "failed" and fixed.last_summary == done.last_summary

    with pytest.raises(ValueError, match="not one of"):
        await store.finish_follow(follow.id, "settled")
    with pytest.raises(ValueError, match="not following"):
        await store.finish_follow(follow.id, "following")


async def test_follows_survive_a_restart(db: Path, clock: FakeClock) -> None:
    async with SqliteStore(db, clock=clock) as first:
        change = await first.record_pending(new_change())
        follow = await start_follow(first, change.id)
        await first.reschedule_follow(follow.id, next_at=T0 + 30, attempt=2, last_summary="Running · modified")
    clock.advance(3600)  # raybot was down for an hour: the follow is overdue, not lost
    async with SqliteStore(db, clock=clock) as second:
        assert await second.next_follow_at() == T0 + 30
        (due,) = await second.due_follows(clock())
        assert (due.id, due.attempt, due.last_summary, due.wanted) == (follow.id, 2, "Running · modified", WANTED)
        finished = await second.finish_follow(due.id, "timeout")
        assert finished is not None and finished.finished_at == T0 + 3600


# --- housekeeping ------------------------------------------------------------------------------------


async def test_purge_removes_only_expired_keys_and_drafts(store: SqliteStore, db: Path, clock: FakeClock) -> None:
    await store.claim("old")
    short = await store.put_draft({"a": 1}, user_id="U1", ttl=60)
    clock.advance(600)
    await store.claim("fresh")
    kept = await store.put_draft({"b": 2}, user_id="U1", ttl=3600)
    assert await store.purge_expired() == 2
    assert raw(db, "SELECT key FROM dedup_keys") == [("fresh",)]
    assert raw(db, "SELECT key FROM drafts") == [(kept,)]
    assert short != kept
    assert await store.purge_expired() == 0


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
    store = SqliteStore(db, clock=clock)
    await store.open()
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.claim("k")
