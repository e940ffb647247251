"""Several `raybot serve` replicas on one PostgreSQL database, end to end, against the Slack and EMR emulators.

HTTP mode, and the test is the load balancer: it spreads signed Slack requests over the replicas (round robin),
and retries a request on another replica when one answers 503 "raybot is stopping" or refuses the connection,
as a load balancer does. What is checked is what a person and the cloud see — one cloud call per request, an
answer in every thread, the truth about a change whose replica died — and the audit log (the `changes` table)
read straight from PostgreSQL.

Each test has a database of its own (tests/postgres.py): it skips with a reason without a PostgreSQL server, and
fails in CI.

Where the tools stop short, and what is done instead:
- A replica killed during UpdateRayCluster: the emulator's `hang` holds the call and never applies it (a "hang
  then apply" fault is being added on another branch). For the change that the service did apply before the
  answer was lost, the test applies the held body to the emulated cluster by hand, as the service would have.
- A temporary resize reverted by another replica: the grammar's shortest duration is a minute, and a raybot
  subprocess cannot take an injected clock (only an in-process raybot can, see tests/e2e.py). Rather than wait
  a real minute, the test moves that one change's `revert_at` to 3 s from now in PostgreSQL once its replica is
  dead: the same row a `for 3s` would have written. Every process keeps the real clock, so what is checked is
  real: another replica notices, takes the dead replica's lease and reverts — not before `revert_at`, and
  within a reconciler pass after it.
- The database going away: the shared server is never stopped (other tests use it at the same time).
  `pg_terminate_backend` cuts every connection, as a failover does; "unreachable" is one replica connecting
  through a TCP relay that the test cuts (connections dropped, new ones refused) and restores.
- Which replica handled a duplicate delivery: each prints "change applied" or "duplicate delivery ignored" in
  its log; the test waits for those lines (tests/harness.py reads each process's output as it comes).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from bot.dispatch import STORE_DOWN_TEXT
from bot.slack.blocks import UNDO_ACTION
from tests import e2e_world as world
from tests.e2e import raybot_env, text_of
from tests.harness import REPO, RaybotProcess, signed_headers, start_raybot
from tests.postgres import fresh_database, require_postgres, terminate_connections

WORKSPACE = world.WORKSPACE
CLUSTERS = {f"r{i}": f"ray-replica{i:02d}0000000" for i in range(10)}  # alias -> cluster id
ALIASES = list(CLUSTERS)
GROUP = "WorkerGroup1"
SEED_REPLICA = 2  # WorkerGroup1 of the seed cluster copied below

_CLUSTER_LINES = "".join(f"  {alias}: {{workspace: {WORKSPACE}, cluster: {cid}}}\n" for alias, cid in CLUSTERS.items())
CONFIG = f"""
region: cn-hangzhou
clusters:
{_CLUSTER_LINES}roles:
  oncall:
    actions: [list, show, history, resize, autoscale, undo]
    limits: {{max_replica: 40, max_step: 20}}
    approval: {{above_replica: 30}}
channels:
  {world.ONCALL_CHANNEL}:
    - role: oncall
      clusters: ["r*"]
      usergroups: [{world.ONCALL_GROUP}]
"""

# Seconds within which another replica must take over from one that died (the brief of these tests).
TAKEOVER_BOUND = 30.0


def seed_clusters() -> list[dict]:
    """Ten copies of the prod seed cluster under new ids; WorkerGroup1 may grow to 20."""
    base = next(c for c in world.SEED if c["clusterId"] == world.PROD)
    out = []
    for alias, cluster_id in CLUSTERS.items():
        cluster = copy.deepcopy(base) | {"clusterId": cluster_id, "name": alias}
        cluster["workerSpec"][0]["maxReplica"] = 20
        out.append(cluster)
    return out


SEED = seed_clusters()
EDITABLE = ("name", "description", "displayReleaseVersion", "networkServiceName", "extraParam", "volumeIds")


@pytest.fixture(autouse=True)
def _clusters(emr):
    emr.clear_faults()
    emr.release_hanging()
    emr.seed(copy.deepcopy(SEED))
    yield
    emr.clear_faults()
    emr.release_hanging()


@pytest.fixture
def database():
    require_postgres()
    with fresh_database() as url:
        yield url


# --- the world as the test sees it ----------------------------------------------------------------------------


class Watch:
    """The calls both emulators saw since the watch began (the emulators live for the whole module)."""

    def __init__(self, emr, slack) -> None:
        self.emr, self.slack = emr, slack
        self.emr_from, self.slack_from = len(emr.calls), len(slack.calls)

    def emr_calls(self, action: str | None = None) -> list:
        return [c for c in self.emr.calls[self.emr_from :] if action is None or c.action == action]

    def updates(self, alias: str | None = None, *, accepted: bool = True) -> list:
        """UpdateRayCluster calls (of one cluster), in the order the emulator received them; by default only the
        ones it accepted (200: applied)."""
        return [
            c
            for c in self.emr_calls("UpdateRayCluster")
            if (alias is None or c.path.endswith("/" + CLUSTERS[alias])) and (not accepted or c.status == 200)
        ]

    def slack_calls(self) -> list:
        return self.slack.calls[self.slack_from :]

    async def wait(self, predicate: Callable, timeout: float = 15.0):
        """The first Slack call since the watch began that matches `predicate`."""
        earlier = {id(c) for c in self.slack.calls[: self.slack_from]}
        return await self.slack.wait_for(lambda c: id(c) not in earlier and predicate(c), timeout)

    async def wait_count(self, predicate: Callable, count: int, timeout: float = 30.0) -> None:
        """Until `count` Slack calls since the watch began match `predicate`."""
        earlier = {id(c) for c in self.slack.calls[: self.slack_from]}
        seen: set[int] = set()

        def enough(call) -> bool:
            if id(call) not in earlier and predicate(call):
                seen.add(id(call))
            return len(seen) >= count

        try:
            await self.slack.wait_for(enough, timeout)
        except TimeoutError:
            raise AssertionError(f"only {len(seen)} of {count} Slack calls came within {timeout} s") from None

    async def wait_emr(self, predicate: Callable, timeout: float = 15.0):
        """The first EMR call since the watch began that matches `predicate` (checked on arrival and on answer)."""
        earlier = {id(c) for c in self.emr.calls[: self.emr_from]}
        return await asyncio.to_thread(self.emr.wait_for_call, lambda c: id(c) not in earlier and predicate(c), timeout)


ROOT = re.compile(r"\*(r\d)\* · " + GROUP + r": \S+ → (\d+) replicas(, for [^·]*)? · ")


def roots(watch: Watch) -> dict[str, tuple[str, int]]:
    """The threads of the resizes whose status message was posted since the watch began: the thread's ts ->
    (alias, replicas asked). A slash command's status message starts its thread; a mention's is in the
    mention's thread."""
    found = {}
    for call in watch.slack_calls():
        if call.method == "chat.postMessage" and call.ok:
            match = ROOT.search(call.args.get("text", ""))
            if match:
                found[call.args.get("thread_ts") or call.response["ts"]] = (match.group(1), int(match.group(2)))
    return found


def status_message(watch: Watch, key: tuple[str, int]):
    """The chat.postMessage of the status message of the resize `key` (alias, replicas asked)."""
    for call in watch.slack_calls():
        match = ROOT.search(call.args.get("text", "")) if call.method == "chat.postMessage" else None
        if match and (match.group(1), int(match.group(2))) == key:
            return call
    raise AssertionError(f"no status message of {key}")


def is_applied_answer(call) -> bool:
    """The thread answer of a change the cloud accepted (clusterId, requestId, diff, Undo)."""
    return (
        call.method == "chat.postMessage"
        and call.args.get("thread_ts") is not None
        and " change accepted, applying: " in call.args.get("text", "")
        and "clusterId " in call.args.get("text", "")
        and UNDO_ACTION in text_of(call.args)
    )


def applied_answers(watch: Watch) -> dict[tuple[str, int], int]:
    """How many "applied" thread answers each resize (alias, replicas) got."""
    by_root = roots(watch)
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for call in watch.slack_calls():
        if is_applied_answer(call) and call.args["thread_ts"] in by_root:
            counts[by_root[call.args["thread_ts"]]] += 1
    return counts


def replica_of(body: dict) -> int:
    [group] = [g for g in body["workerSpec"] if g["groupName"] == GROUP]
    return group["replica"]


def other_fields(body: dict) -> dict:
    """Everything a resize of WorkerGroup1 must send back exactly as read."""
    spec = copy.deepcopy(body)
    for group in spec["workerSpec"]:
        if group["groupName"] == GROUP:
            group.pop("replica")
    return spec


def seed_fields(alias: str) -> dict:
    """The editable fields of a seeded cluster, as an update sends them."""
    cluster = next(c for c in SEED if c["clusterId"] == CLUSTERS[alias])
    return other_fields({k: cluster[k] for k in (*EDITABLE, "headSpec", "workerSpec")})


def audit(url: str, *, settled_within: float = 10.0) -> list[dict]:
    """The audit log: every change row, oldest first, JSON columns decoded.

    A thread is told a change's outcome just before the outcome is written (bot.flow): rows still "sending" are
    read again until they have moved on, for at most `settled_within` seconds.
    """
    deadline = time.monotonic() + settled_within
    while True:
        rows = _audit_rows(url)
        if time.monotonic() > deadline or not any(r["state"] in ("applying", "sending") for r in rows):
            return rows
        time.sleep(0.05)


def took_effect(row: dict) -> bool:
    """An audit row of a change the cluster took: still followed or settled, or overtaken before it settled by a
    later change to the same group (which then ends its follow: bot.scheduler.superseded_by)."""
    superseded = row["state"] == "not_settled" and (row["error_message"] or "").startswith("superseded by change #")
    return row["state"] in ("applied", "settled") or superseded


def _audit_rows(url: str) -> list[dict]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute("SELECT * FROM changes ORDER BY id")
        names = [d.name for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:
        for column in ("spec_before", "body", "diff"):
            if isinstance(row[column], str):
                row[column] = json.loads(row[column])
    return rows


async def wait_answered(watch: Watch, sent: list[tuple[str, int]], database: str, timeout: float = 60) -> None:
    """Until every resize in `sent` got its "applied" answer; when some did not, say what became of them."""
    try:
        await watch.wait_count(is_applied_answer, len(sent), timeout=timeout)
    except AssertionError:
        answered = applied_answers(watch)
        missing = [key for key in sent if key not in answered]
        print("not answered:", missing)
        for call in watch.slack_calls():
            if call.method in ("response_url", "chat.postEphemeral") or not call.ok:
                print(call.method, call.error, text_of(call.args)[:300])
        every = audit(database)
        rows = {(r["alias"], replica_of(r["body"])): r for r in every if r["body"]}
        for r in every:
            took = (r["finished_at"] or 0) - r["created_at"]
            if not took_effect(r) or took > 2:
                print("row", r["id"], r["alias"], r["state"], f"{took:.1f}s", r["run_id"], r["error_message"])
        for key in missing:
            row = rows.get(key)
            print(
                key, "no change row" if row is None else {k: row[k] for k in ("id", "state", "run_id", "error_message")}
            )
        raise


def alias_of(cluster_id: str) -> str:
    return next(alias for alias, cid in CLUSTERS.items() if cid == cluster_id)


def alias_of_call(call) -> str:
    """The alias of the cluster an EMR call is about."""
    return alias_of(call.path.rsplit("/", 1)[1])


# --- replicas and the load balancer ---------------------------------------------------------------------------


class Fleet:
    """The raybot replicas of one test, all on one database; every one is stopped at the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started: list[RaybotProcess] = []

    async def start(self, count: int = 1, **extra: str) -> list[RaybotProcess]:
        """Start `count` replicas at once (they migrate the database together)."""
        env = self.env | extra
        replicas = await asyncio.gather(*(asyncio.to_thread(start_raybot, env) for _ in range(count)))
        self.started += replicas
        return list(replicas)

    def stop_all(self) -> None:
        """Stop every replica (together); print what each logged above INFO and what its flow and reconciler did
        (pytest shows it when the test failed)."""
        stopping = [threading.Thread(target=replica.stop) for replica in self.started]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
        for replica in self.started:
            output = replica.stop()
            lines = [
                line
                for line in output.splitlines()
                if any(f'"{key}"' in line for key in ("WARNING", "ERROR", "raybot.flow", "raybot.scheduler"))
            ]
            print(f"--- replica pid {replica.proc.pid} (exit {replica.proc.returncode}):", *lines[-60:], sep="\n")


@pytest.fixture
def fleet(database, emr, slack, tmp_path) -> Iterator[Fleet]:
    env = raybot_env(tmp_path, slack, emr) | {"RAYBOT_DATABASE": database}
    Path(env["RAYBOT_CONFIG"]).write_text(CONFIG)
    replicas = Fleet(env)
    try:
        yield replicas
    finally:
        replicas.stop_all()


class Balancer:
    """The test as the load balancer in front of the replicas in `rotation`: each request goes to the next one;
    a replica that answers 503 (stopping) or refuses the connection (gone) is skipped and the request is sent to
    the next, as a load balancer retries a request the backend did not take."""

    def __init__(self, http: httpx.AsyncClient, rotation: list[RaybotProcess]) -> None:
        self.http = http
        self.rotation = rotation
        self.turn = 0
        self.stopping = 0  # requests a replica refused as stopping (503), sent again to the next
        self.gone = 0  # requests a replica that had exited refused (connection refused), sent again to the next

    async def post(self, body: str, content_type: str = "application/x-www-form-urlencoded") -> RaybotProcess:
        for _ in range(50):
            if not self.rotation:
                break
            replica = self.rotation[self.turn % len(self.rotation)]
            self.turn += 1
            headers = signed_headers(body) | {"Content-Type": content_type}
            try:
                response = await self.http.post(f"{replica.url}/slack/events", content=body, headers=headers)
            except httpx.TransportError:
                self.gone += 1
                continue
            if response.status_code == 503:
                assert response.json() == {"error": "raybot is stopping"}
                self.stopping += 1
                continue
            assert response.status_code == 200, response.text
            return replica
        raise AssertionError("no replica took the request")

    async def command(self, slack, text: str, *, user: str = world.ONCALL_USER) -> str:
        """`/ray <text>` as Slack posts it, through the balancer; returns the command's response_url."""
        payload = slack.slash_command_payload("/ray", text, user_id=user, channel_id=world.ONCALL_CHANNEL)
        await self.post(urllib.parse.urlencode(payload))
        return payload["response_url"]


async def post_to(http: httpx.AsyncClient, replica: RaybotProcess, body: str, content_type: str) -> httpx.Response:
    headers = signed_headers(body) | {"Content-Type": content_type}
    return await http.post(f"{replica.url}/slack/events", content=body, headers=headers)


async def printed(replica: RaybotProcess, *texts: str, timeout: float = 15.0) -> str:
    """The first line `replica` printed containing one of `texts` (its JSON log line), waiting for it."""
    return await asyncio.to_thread(replica.wait_for_output, texts, timeout)


# --- 1. the same request delivered to two replicas; 6. what they report about the store ----------------------


async def test_a_request_delivered_to_two_replicas_changes_the_cluster_once(http, fleet, emr, slack, database):
    watch = Watch(emr, slack)
    a, b = await fleet.start(2)

    # Slack's retry of a slash command reaches the other replica: same trigger_id, same body.
    payload = slack.slash_command_payload(
        "/ray", "resize r0 WorkerGroup1=3", user_id=world.ONCALL_USER, channel_id=world.ONCALL_CHANNEL
    )
    body = urllib.parse.urlencode(payload)
    form = "application/x-www-form-urlencoded"
    first, second = await asyncio.gather(post_to(http, a, body, form), post_to(http, b, body, form))
    assert first.status_code == second.status_code == 200
    # Each replica says what it did with it: one applied it, the other saw a duplicate.
    markers = ("change applied", "duplicate delivery ignored")
    said = await asyncio.gather(*(printed(r, *markers) for r in (a, b)))
    assert sorted("duplicate" in line for line in said) == [False, True], said

    # An app_mention event delivered to both (Slack retries events to whichever replica answers): same event_id.
    message = slack.post_user_message(world.ONCALL_CHANNEL, world.ONCALL_USER, "<@U0RAYBOT> resize r0 WorkerGroup1=4")
    event = json.dumps(slack.app_mention_payload(message, channel_id=world.ONCALL_CHANNEL))
    first, second = await asyncio.gather(*(post_to(http, r, event, "application/json") for r in (a, b)))
    assert first.status_code == second.status_code == 200
    said = await asyncio.gather(*(asyncio.to_thread(r.wait_for_output, markers, 15, count=2) for r in (a, b)))
    assert sorted("duplicate" in line for line in said) == [False, True], said

    await watch.wait_count(is_applied_answer, 2)
    assert [replica_of(u.json) for u in watch.updates("r0", accepted=False)] == [3, 4]
    assert applied_answers(watch) == {("r0", 3): 1, ("r0", 4): 1}
    rows = audit(database)
    assert [r["action"] for r in rows] == ["resize", "resize"]
    assert all(took_effect(r) for r in rows)

    # 6. Each replica's /readyz names the store (no password) and finds its migrations current; check-config too.
    url = urllib.parse.urlsplit(database)
    user = f"{url.username}@" if url.username else ""
    where = f"PostgreSQL {user}{url.hostname}:{url.port or 5432}{url.path}"
    for replica in (a, b):
        ready = await http.get(f"{replica.url}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["store"] == where and ready.json()["checks"]["store"] == "ok"
    checked = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot.cli", "check-config"],
        cwd=REPO,
        env=fleet.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert re.search(rf"^store: {re.escape(where)}, migrations current \(\w+\)$", checked.stdout, re.M), checked.stdout


# --- 2. a hundred changes to ten clusters over three replicas -------------------------------------------------


async def test_concurrent_changes_over_three_replicas_apply_each_once_in_order_and_lose_nothing(
    http, fleet, emr, slack, database
):
    watch = Watch(emr, slack)
    replicas = await fleet.start(3, RAYBOT_LOCK_WAIT_SECONDS="60")
    balancer = Balancer(http, replicas)
    # Ten resizes per cluster, each to a value none of the others asks for (3..12), so none is "nothing to
    # change" and each applied body says which command it came from.
    asked = [(alias, 3 + n) for n in range(10) for alias in ALIASES]
    started = time.monotonic()
    await asyncio.gather(*(balancer.command(slack, f"resize {alias} {GROUP}={n}") for alias, n in asked))
    await watch.wait_count(is_applied_answer, len(asked), timeout=60)
    elapsed = time.monotonic() - started

    # Every command got its answer in its own thread, once.
    assert applied_answers(watch) == {key: 1 for key in asked}
    assert not [c for c in watch.slack_calls() if c.method == "response_url"], "someone was refused"
    rows = audit(database)
    for alias in ALIASES:
        accepted = watch.updates(alias)
        # Applied exactly once each: ten accepted updates, one per value asked.
        assert sorted(replica_of(u.json) for u in accepted) == list(range(3, 13)), alias
        assert len(watch.updates(alias, accepted=False)) == 10, alias
        # Read-modify-write lost nothing: every body sends the rest of the cluster as it was.
        assert all(other_fields(u.json) == seed_fields(alias) for u in accepted), alias
        final = emr.cluster(WORKSPACE, CLUSTERS[alias])
        assert replica_of(final) == replica_of(accepted[-1].json), alias
        # The audit log has the emulator's order, and each change was planned on what the previous one left.
        log = [r for r in rows if r["alias"] == alias]
        assert [replica_of(r["body"]) for r in log] == [replica_of(u.json) for u in accepted], alias
        befores = [replica_of(r["spec_before"]) for r in log]
        assert befores == [SEED_REPLICA] + [replica_of(r["body"]) for r in log[:-1]], alias
        # Each took effect (one that a later resize of the same group overtook before it settled ends there).
        assert all(took_effect(r) for r in log), alias
        assert log[-1]["state"] in ("applied", "settled"), alias
    print(f"\n100 resizes over 3 replicas, 10 clusters: all answered in {elapsed:.1f} s")


# --- 3. a replica killed in the middle of a change --------------------------------------------------------------


def thread_said(text: str, thread_ts: str) -> Callable:
    return lambda c: (
        c.method == "chat.postMessage" and c.args.get("thread_ts") == thread_ts and text in c.args.get("text", "")
    )


async def test_a_replica_killed_mid_change_is_taken_over_by_another(http, fleet, emr, slack, database):
    watch = Watch(emr, slack)
    a, b = await fleet.start(
        2, RAYBOT_LOCK_TTL_SECONDS="2", RAYBOT_EMR_DEADLINE_SECONDS="3", RAYBOT_LOCK_WAIT_SECONDS="30"
    )
    to_a, to_b = Balancer(http, [a]), Balancer(http, [b])

    # A temporary resize made through A (the shortest the grammar takes: a minute).
    await to_a.command(slack, f"resize r2 {GROUP}=4 for 1m")
    await watch.wait(lambda c: is_applied_answer(c) and roots(watch).get(c.args["thread_ts"]) == ("r2", 4))

    # Two changes whose UpdateRayCluster A is waiting for when it dies: the service applied r0's (and the
    # answer was lost), it never got r1's. The emulator's `hang` holds a call and never applies it; r0's is
    # applied here by hand, as the service would have.
    emr.inject("hang", action="UpdateRayCluster", times=2)
    await to_a.command(slack, f"resize r0 {GROUP}=5")
    await to_a.command(slack, f"resize r1 {GROUP}=5")
    held = {}
    for alias in ("r0", "r1"):
        held[alias] = await watch.wait_emr(
            lambda c, alias=alias: c.action == "UpdateRayCluster" and c.status == 0 and c.path.endswith(CLUSTERS[alias])
        )
    emr.seed([emr.cluster(WORKSPACE, CLUSTERS["r0"]) | held["r0"].json | {"workspaceId": WORKSPACE}])
    threads = {alias: ts for ts, (alias, n) in roots(watch).items() if n == 5}

    a.proc.kill()  # kill -9: no chance to record anything
    a.proc.wait()
    killed = time.monotonic()
    emr.release_hanging()  # the held calls are answered to a dead connection; nothing more is applied
    # The temporary resize is due in 3 s rather than a minute (see the module's notes): only this row's time moves.
    revert_at = time.time() + 3
    with psycopg.connect(database, autocommit=True) as conn:
        moved = conn.execute(
            "UPDATE changes SET revert_at = %s WHERE alias = 'r2' AND revert_state = 'scheduled'", (revert_at,)
        )
        assert moved.rowcount == 1

    # A new change to the cluster A held, through B, at once: B waits for the dead replica's lock.
    await to_b.command(slack, f"resize r0 {GROUP}=6")

    took = await watch.wait(thread_said("took effect: the cluster holds it", threads["r0"]), timeout=TAKEOVER_BOUND)
    await watch.wait(thread_said("did not take effect", threads["r1"]), timeout=TAKEOVER_BOUND)
    await watch.wait(lambda c: is_applied_answer(c) and roots(watch).get(c.args["thread_ts"]) == ("r0", 6))
    # The new change was recorded (its status message posted) only once the dead replica's change was decided.
    calls = watch.slack_calls()
    assert calls.index(took) < calls.index(status_message(watch, ("r0", 6)))
    await watch.wait_emr(
        lambda c: (
            c.action == "UpdateRayCluster"
            and c.status == 200
            and c.path.endswith(CLUSTERS["r2"])
            and replica_of(c.json) == SEED_REPLICA
        ),
        timeout=TAKEOVER_BOUND,
    )
    elapsed = time.monotonic() - killed
    assert elapsed < TAKEOVER_BOUND
    print(f"\nafter kill -9: truth told, new change applied and temporary change reverted within {elapsed:.1f} s")

    rows = {(r["alias"], replica_of(r["body"])): r for r in audit(database)}
    assert took_effect(rows["r0", 5])
    assert rows["r1", 5]["state"] == "failed"
    assert took_effect(rows["r0", 6])
    reverting = rows["r2", SEED_REPLICA]
    assert reverting["action"] == "revert"
    assert revert_at <= reverting["created_at"] < revert_at + 10  # on time: not early, and late by a pass at most
    assert [replica_of(u.json) for u in watch.updates("r0")] == [6]  # r0's 5 was applied by hand, above
    assert replica_of(emr.cluster(WORKSPACE, CLUSTERS["r0"])) == 6
    assert replica_of(emr.cluster(WORKSPACE, CLUSTERS["r1"])) == SEED_REPLICA
    assert not [c for c in watch.slack_calls() if thread_said("did not take effect", threads["r0"])(c)]


# --- 4. a rolling restart while commands keep arriving ----------------------------------------------------------


class Trickle:
    """Resizes sent one after another through the balancer, each cluster to a value no other command asks for,
    until stopped: (alias, replicas) of each command sent, in order."""

    PACE_SECONDS = 0.3  # how fast commands arrive: load, not a wait for anything
    MOST = 20  # WorkerGroup1's maxReplica in the seed copies

    def __init__(self, balancer: Balancer, slack, *, after: dict[str, int] | None = None) -> None:
        """`after`: the replicas a cluster was already resized to (the seed's by default)."""
        self.balancer, self.slack = balancer, slack
        self.sent: list[tuple[str, int]] = []
        self.urls: dict[tuple[str, int], str] = {}  # each command's response_url
        self.stop = asyncio.Event()
        self._next = {alias: (after or {}).get(alias, SEED_REPLICA) + 1 for alias in ALIASES}

    def take(self) -> tuple[str, int]:
        """The next command's cluster and value, counted as sent."""
        alias = ALIASES[len(self.sent) % len(ALIASES)]
        value = self._next[alias]
        self._next[alias] += 1
        self.sent.append((alias, value))
        return alias, value

    async def run(self) -> None:
        posts: list[asyncio.Task] = []
        while not self.stop.is_set():
            if max(self._next.values()) > self.MOST:
                break
            posts.append(asyncio.ensure_future(self._command(*self.take())))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.PACE_SECONDS)
        await asyncio.gather(*posts)

    async def _command(self, alias: str, value: int) -> None:
        self.urls[alias, value] = await self.balancer.command(self.slack, f"resize {alias} {GROUP}={value}")


async def test_a_rolling_restart_answers_every_command_and_applies_none_twice(http, fleet, emr, slack, database):
    watch = Watch(emr, slack)
    # Nobody is refused as busy: a command waits for the one before it on its cluster, however slow the machine.
    fleet.env["RAYBOT_LOCK_WAIT_SECONDS"] = "60"
    first, second = await fleet.start(2)
    balancer = Balancer(http, [first, second])
    trickle = Trickle(balancer, slack)
    sending = asyncio.ensure_future(trickle.run())

    async def replace(old: RaybotProcess) -> None:
        """SIGTERM `old` (it stays in the rotation until it is gone: requests it refuses are retried), start its
        successor meanwhile, and take `old` out once it exited."""
        # A change of `old`'s own is in its cloud call when the signal comes, so its drain takes a while.
        emr.inject("latency", action="UpdateRayCluster", seconds=2.0)
        alias, value = trickle.take()
        trickle.urls[alias, value] = await Balancer(http, [old]).command(slack, f"resize {alias} {GROUP}={value}")
        await watch.wait_emr(
            lambda c: (
                c.action == "UpdateRayCluster"
                and c.status == 0
                and (alias, value) == (alias_of_call(c), replica_of(c.json))
            )
        )
        emr.clear_faults()
        old.proc.send_signal(signal.SIGTERM)
        await printed(old, "stopping: no new work")
        # While it drains it refuses what comes (503), and the balancer sends that to another replica.
        alias, value = trickle.take()
        payload = slack.slash_command_payload(
            "/ray", f"resize {alias} {GROUP}={value}", user_id=world.ONCALL_USER, channel_id=world.ONCALL_CHANNEL
        )
        body = urllib.parse.urlencode(payload)
        refused = await post_to(http, old, body, "application/x-www-form-urlencoded")
        assert refused.status_code == 503 and refused.json() == {"error": "raybot is stopping"}
        await balancer.post(body)
        trickle.urls[alias, value] = payload["response_url"]
        [new] = await fleet.start(1)
        balancer.rotation.append(new)
        code = await asyncio.to_thread(old.proc.wait, 60)
        balancer.rotation.remove(old)
        assert code == 0, old.stop()

    for old in (first, second):
        await replace(old)
    trickle.stop.set()
    await sending
    sent = trickle.sent
    await wait_answered(watch, sent, database)

    assert applied_answers(watch) == {key: 1 for key in sent}
    assert not [c for c in watch.slack_calls() if c.method == "response_url"], "someone was refused"
    for alias in ALIASES:
        values = [replica_of(u.json) for u in watch.updates(alias, accepted=False)]
        assert sorted(values) == [n for a, n in sent if a == alias], alias  # each applied once
    assert len(audit(database)) == len(sent)
    print(
        f"\nrolling restart: {len(sent)} commands; the balancer sent {balancer.stopping + 2} requests again after a "
        f"503 and {balancer.gone} after a refused connection"
    )


# --- 5. the database goes away and comes back ---------------------------------------------------------------------


class PostgresRelay:
    """A TCP relay in front of the PostgreSQL server, on its own thread: a replica that connects through it loses
    its database when the test cuts it (open connections dropped, new ones refused: "unreachable") and finds it
    again when the test restores it. The shared server itself is never stopped (other tests use it)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listen_port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="postgres-relay", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> PostgresRelay:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def url(self, database_url: str) -> str:
        """`database_url` with the server's host:port replaced by the relay's."""
        return database_url.replace(f"@{self.host}:{self.port}/", f"@127.0.0.1:{self.listen_port}/")

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def _call(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.listen_port, reuse_address=True)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, upstream}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.transport.abort()
                self._open.discard(sink)

        await asyncio.gather(pipe(reader, upstream), pipe(upstream_reader, writer))


async def waiting_on_a_row_lock(database: str, timeout: float = 10.0) -> None:
    """Until a raybot connection waits for a row lock. PostgreSQL has no notification for that: its activity view
    is looked at every 20 ms (bounded)."""
    name = database.rsplit("/", 1)[1]
    deadline = time.monotonic() + timeout
    with psycopg.connect(database, autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'raybot' "
                "AND wait_event_type = 'Lock'",
                (name,),
            ).fetchone()[0]
            if waiting:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"no raybot connection waited for a lock within {timeout} s")


def is_store_down(call) -> bool:
    return call.method == "response_url" and STORE_DOWN_TEXT.split(";")[0] in call.args.get("text", "")


async def outcome(watch: Watch, key: tuple[str, int], response_url: str, timeout: float = 30.0) -> str:
    """What the resize `key` was told: "applied" (its thread answer) or "refused" (nothing was sent)."""
    try:
        call = await watch.wait(
            lambda c: (
                (is_store_down(c) and c.url == response_url)
                or (is_applied_answer(c) and roots(watch).get(c.args["thread_ts"]) == key)
            ),
            timeout,
        )
    except TimeoutError:
        said = [
            text_of(c.args)[:300] for c in watch.slack_calls() if c.method == "response_url" and c.url == response_url
        ]
        raise AssertionError(f"{key} was not answered within {timeout} s; its response_url got {said}") from None
    return "refused" if call.method == "response_url" else "applied"


async def test_the_database_going_away_loses_no_change_and_raybot_recovers_by_itself(http, fleet, emr, slack, database):
    watch = Watch(emr, slack)
    # A lock whose release the database refused is held until the heartbeat releases it: wait, don't refuse.
    fleet.env["RAYBOT_LOCK_WAIT_SECONDS"] = "60"
    server = urllib.parse.urlsplit(database)
    with PostgresRelay(server.hostname, server.port) as relay:
        [direct], [relayed] = await asyncio.gather(fleet.start(1), fleet.start(1, RAYBOT_DATABASE=relay.url(database)))
        balancer = Balancer(http, [direct, relayed])

        # 1. The connection is cut while raybot records what the cloud answered: the row it must write is held
        #    by the test, so raybot's UPDATE waits on it exactly when every connection is terminated.
        emr.inject("latency", action="UpdateRayCluster", seconds=1.0, times=1)
        asked = await Balancer(http, [direct]).command(slack, f"resize r0 {GROUP}=3")
        await watch.wait_emr(lambda c: c.action == "UpdateRayCluster" and c.status == 0)
        holder = psycopg.connect(database)
        try:
            assert holder.execute("SELECT id FROM changes WHERE state = 'sending' FOR UPDATE").fetchall()
            await waiting_on_a_row_lock(database)
            assert terminate_connections(database) >= 2  # raybot's, and the holder's
        finally:
            with contextlib.suppress(psycopg.Error):
                holder.close()
        await watch.wait(lambda c: is_applied_answer(c) and roots(watch).get(c.args["thread_ts"]) == ("r0", 3))
        assert not [c for c in watch.slack_calls() if c.method == "response_url" and c.url == asked]

        # 2. Connections cut again and again while commands keep arriving at both replicas.
        trickle = Trickle(balancer, slack, after={"r0": 3})
        sending = asyncio.ensure_future(trickle.run())
        for accepted in (3, 8, 13):
            await watch.wait_emr(lambda c, n=accepted: len(watch.updates()) >= n, timeout=30)
            terminate_connections(database)
        trickle.stop.set()
        await sending

        # 3. The relayed replica's database becomes unreachable, then comes back.
        relay.cut()
        ready = await http.get(f"{relayed.url}/readyz")
        assert ready.status_code == 503 and "cannot reach PostgreSQL" in ready.json()["checks"]["store"]
        assert (await http.get(f"{direct.url}/readyz")).status_code == 200
        refused_at = await Balancer(http, [relayed]).command(slack, f"resize r9 {GROUP}=19")
        await watch.wait(lambda c: is_store_down(c) and c.url == refused_at)
        relay.restore()
        last = await Balancer(http, [relayed]).command(slack, f"resize r9 {GROUP}=20")
        ready = await http.get(f"{relayed.url}/readyz")
        assert ready.status_code == 200, ready.text

        # Every command was answered: applied, or refused with nothing sent (a statement cut in mid-flight).
        urls = {("r0", 3): asked, **trickle.urls, ("r9", 20): last}
        told = {key: await outcome(watch, key, url) for key, url in urls.items()}
        refused = {key for key, said in told.items() if said == "refused"}
        assert applied_answers(watch) == {key: 1 for key in urls if key not in refused}
        store_down = {c.url for c in watch.slack_calls() if is_store_down(c)}
        assert not [key for key, url in urls.items() if key not in refused and url in store_down]
        assert told["r0", 3] == told["r9", 20] == "applied"
        relayed.stop()  # while its database is there: it ends its run cleanly

    # Nothing the cloud accepted is missing from the audit log, and nothing refused was sent.
    rows = {(r["alias"], replica_of(r["body"])): r for r in audit(database)}
    for update in watch.updates():
        key = (alias_of_call(update), replica_of(update.json))
        assert key in rows and took_effect(rows[key]), key
    for alias, n in refused | {("r9", 19)}:
        assert not [u for u in watch.updates(alias, accepted=False) if replica_of(u.json) == n], (alias, n)
        # Refused after it was recorded (a later write was cut): recorded as stopped before anything was sent.
        assert (alias, n) not in rows or rows[alias, n]["state"] == "cancelled", rows[alias, n]
    print(
        f"\ndatabase cut: {len(told) - len(refused)} changes applied, {len(refused)} refused while connections were cut"
    )
