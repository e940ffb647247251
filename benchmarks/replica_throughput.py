"""Changes per second sustained by 1, 2 and 3 replicas on one PostgreSQL database, and the store's share
of one change's latency.

For each replica count: a fresh database, that many `raybot serve` processes (HTTP mode) against the
loopback emulators (the cloud answering at once), 10 clusters; waves of 10 concurrent `/ray resize`
commands, one per cluster (distinct clusters: nobody waits for a lock), spread round-robin over the
replicas; a wave ends when every change's thread says it was applied. Prints changes per second per
replica count, and the ratio to one replica.

Then, in this process, the store's operations of one change (claim, lock, record, post, send, applied,
unlock) timed on SQLite and on PostgreSQL, against the end-to-end latency of one change on one replica:
the store's share of what a person waits for.

    python benchmarks/replica_throughput.py [--waves 5] [--replicas 1,2,3]

Needs the PostgreSQL server of the tests (RAYBOT_TEST_POSTGRES, default the local one). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.store import NewChange, Store  # noqa: E402
from tests import e2e_world as world  # noqa: E402
from tests.harness import SIGNING_SECRET, clean_env, signed_headers, start_raybot  # noqa: E402
from tests.postgres import fresh_database, postgres_reachable  # noqa: E402

CLUSTERS = {f"c{i}": f"ray-bench{i:02d}00000000000" for i in range(10)}
CONFIG = f"""
region: cn-hangzhou
clusters:
{"".join(f"  {alias}: {{workspace: {world.WORKSPACE}, cluster: {cid}}}{chr(10)}" for alias, cid in CLUSTERS.items())}
roles:
  oncall: {{actions: [list, show, resize]}}
channels:
  {world.ONCALL_CHANNEL}:
    - role: oncall
"""


def seed() -> list[dict]:
    base = next(c for c in world.SEED if c["clusterId"] == world.PROD)
    return [{**base, "clusterId": cid, "name": alias} for alias, cid in CLUSTERS.items()]


def applied(call, alias: str) -> bool:
    """The thread answer of an applied change to `alias` ("📨 *alias* change accepted, applying: …")."""
    text = call.args.get("text", "")
    return (
        call.method == "chat.postMessage" and bool(call.args.get("thread_ts")) and f"*{alias}* change accepted" in text
    )


async def resize(http: httpx.AsyncClient, replica, slack, alias: str, value: int) -> None:
    payload = slack.slash_command_payload(
        "/ray", f"resize {alias} WorkerGroup1={value}", user_id=world.ONCALL_USER, channel_id=world.ONCALL_CHANNEL
    )
    body = urllib.parse.urlencode(payload)
    response = await http.post(f"{replica.url}/slack/events", content=body, headers=signed_headers(body))
    response.raise_for_status()


async def wave(http: httpx.AsyncClient, replicas: list, slack, value: int, aliases: list[str]) -> float:
    """Concurrent resizes, one per alias, over the replicas; seconds until every one is answered as applied."""
    earlier = {id(c) for c in slack.calls}
    started = time.perf_counter()
    await asyncio.gather(
        *(resize(http, replicas[i % len(replicas)], slack, alias, value) for i, alias in enumerate(aliases))
    )
    for alias in aliases:
        try:
            await slack.wait_for(lambda c, a=alias: id(c) not in earlier and applied(c, a), timeout=60)
        except TimeoutError:
            said = [c.args.get("text") for c in slack.calls if id(c) not in earlier and c.method == "response_url"]
            raise RuntimeError(f"{alias} was not applied; raybot said {said}") from None
    return time.perf_counter() - started


async def throughput(count: int, waves: int, emr, slack, config: Path) -> tuple[float, list[float]]:
    """Changes per second of `count` replicas over `waves` waves, and (one replica) single changes' latency."""
    emr.seed(seed())  # every count starts from the same clusters (WorkerGroup1 at 2)
    with fresh_database() as url:
        env = clean_env(
            SLACK_BOT_TOKEN=world.BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            RAYBOT_CONFIG=str(config),
            RAYBOT_DATABASE=url,
            RAYBOT_HTTP_HOST="127.0.0.1",
            RAYBOT_HTTP_PORT="0",
            RAYBOT_SLACK_API_URL=slack.api_url,
            RAYBOT_EMR_ENDPOINT=emr.url,
            RAYBOT_FOLLOW_SECONDS="5",
        )
        replicas = [start_raybot(env) for _ in range(count)]
        try:
            async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
                aliases = list(CLUSTERS)
                # Each wave sets a value the clusters do not have yet, within the seed's maxReplica (4).
                values = iter([3, 4, 1, 2] * (waves + 5))
                await wave(http, replicas, slack, next(values), aliases)  # warm: imports, pools, first statements
                times = [await wave(http, replicas, slack, next(values), aliases) for _ in range(waves)]
                single = []
                if count == 1:
                    single = [await wave(http, replicas, slack, next(values), ["c0"]) for _ in range(5)]
        finally:
            for replica in replicas:
                replica.stop()
    return len(CLUSTERS) * waves / sum(times), single


async def store_ops(database: str, n: int) -> list[float]:
    """Seconds of the store's part of one change (what bot.flow asks of it), n times."""
    store = Store(database, heartbeat=False)
    await store.open()
    try:
        durations = []
        for i in range(n):
            started = time.perf_counter()
            await store.claim(f"bench:{i}:{time.time_ns()}")
            fence = await store.acquire_lock("bench/cluster", user_id="U1", summary="bench")
            record = await store.create_change(
                NewChange(
                    user_id="U1",
                    channel_id="C1",
                    alias="c0",
                    workspace=world.WORKSPACE,
                    cluster_id="ray-bench",
                    region="cn-hangzhou",
                    action="resize",
                    summary="WorkerGroup1 replicas → 4",
                    spec_before={"workerSpec": [{"groupName": "WorkerGroup1", "replica": 2}]},
                    body={"workerSpec": [{"groupName": "WorkerGroup1", "replica": 4}]},
                ),
                state="applying",
                fence=fence,
            )
            await store.set_thread(record.id, root_ts="1.1", thread_ts="1.1")
            await store.move(record.id, "sending", from_="applying", fence=fence, call_deadline_at=time.time() + 10)
            await store.move(record.id, "applied", from_="sending", request_id="bench", next_at=time.time())
            await store.release_lock(fence)
            durations.append(time.perf_counter() - started)
        return durations
    finally:
        await store.close()


async def run(waves: int, counts: list[int]) -> None:
    with contextlib.ExitStack() as stack:
        emr = stack.enter_context(world.emr_emulator())
        slack = stack.enter_context(world.slack_emulator())
        emr.seed(seed())
        config = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "raybot.yaml"
        config.write_text(CONFIG)
        rates: dict[int, float] = {}
        latency: list[float] = []
        for count in counts:
            rate, single = await throughput(count, waves, emr, slack, config)
            rates[count] = rate
            latency = latency or single
            print(f"{count} replica(s): {rate:6.1f} changes/s")
        if latency:
            print(f"one change, command to its applied answer: median {statistics.median(latency) * 1000:.1f} ms")
        base = rates.get(1)
        if base:
            print("ratio to one replica: " + ", ".join(f"{c}: {r / base:.2f}" for c, r in rates.items()))
        with fresh_database() as url, tempfile.TemporaryDirectory() as tmp:
            for name, database in (("SQLite", str(Path(tmp) / "bench.db")), ("PostgreSQL", url)):
                ops = await store_ops(database, 50)
                line = f"store ops of one change on {name}: median {statistics.median(ops) * 1000:.2f} ms"
                if latency:
                    line += f" ({statistics.median(ops) / statistics.median(latency) * 100:.1f}% of it)"
                print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waves", type=int, default=5, help="waves of 10 changes per replica count")
    parser.add_argument("--replicas", default="1,2,3", help="replica counts to measure, comma-separated")
    args = parser.parse_args()
    if not postgres_reachable():
        print("PostgreSQL is not reachable (RAYBOT_TEST_POSTGRES): nothing to measure", file=sys.stderr)
        return 1
    asyncio.run(run(args.waves, [int(c) for c in args.replicas.split(",")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
