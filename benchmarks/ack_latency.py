"""Acknowledgement latency under load while the cloud API hangs.

Sends N concurrent signed `/ray resize` commands to `raybot serve` (HTTP mode) while the
EMR emulator hangs every call — once with raybot on SQLite, once on PostgreSQL (a fresh
database on the server RAYBOT_TEST_POSTGRES names, default the local one; skipped with a note
when unreachable) — and, in the same run, the same load to a bare Bolt AsyncApp that only
acknowledges (benchmarks/bare_bolt_app.py). Prints p50/p99 acknowledgement latency of each,
the ratios, and the idle RSS of `raybot serve`.

    python benchmarks/ack_latency.py [--n 200] [--rounds 3] [--strict]

Goals: every acknowledgement under 3 s, raybot's p99 at most 1.5× the bare app's (issue "The
Slack bot"), and on PostgreSQL within 1.1× of SQLite (issue "Replicas"). --strict exits 1 when
a goal is missed. Loopback only.
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

from tests import e2e_world as world  # noqa: E402
from tests.harness import SIGNING_SECRET, clean_env, signed_headers, start_raybot  # noqa: E402
from tests.postgres import fresh_database, postgres_reachable  # noqa: E402

ACK_DEADLINE = 3.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def burst(url: str, slack, n: int) -> list[float]:
    """N concurrent signed slash commands; the latency of each acknowledgement, in seconds."""
    bodies = [
        urllib.parse.urlencode(
            slack.slash_command_payload(
                "/ray", "resize prod WorkerGroup1=3", user_id=world.ONCALL_USER, channel_id=world.ONCALL_CHANNEL
            )
        )
        for _ in range(n)
    ]
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as client:

        async def one(body: str) -> float:
            start = time.perf_counter()
            response = await client.post(f"{url}/slack/events", content=body, headers=signed_headers(body))
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            return elapsed

        return await asyncio.gather(*(one(b) for b in bodies))


async def run(n: int, rounds: int) -> dict[str, list[float]]:
    with contextlib.ExitStack() as stack:
        emr = stack.enter_context(world.emr_emulator())
        slack = stack.enter_context(world.slack_emulator())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        emr.inject("hang")  # every cloud call hangs: raybot must still acknowledge at once
        config = tmp / "raybot.yaml"
        config.write_text(world.CONFIG)
        common = dict(
            SLACK_BOT_TOKEN=world.BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            RAYBOT_SLACK_API_URL=slack.api_url,
            RAYBOT_HTTP_HOST="127.0.0.1",
            RAYBOT_HTTP_PORT="0",
        )
        databases = {"sqlite": str(tmp / "raybot.db")}
        if postgres_reachable():
            databases["postgresql"] = stack.enter_context(fresh_database())
        apps = {
            name: start_raybot(
                clean_env(
                    **common,
                    RAYBOT_CONFIG=str(config),
                    RAYBOT_DATABASE=database,
                    RAYBOT_EMR_ENDPOINT=emr.url,
                    RAYBOT_EMR_DEADLINE_SECONDS="60",
                    # The calls hang for ever: at the end, stop without waiting for them (not measured).
                    RAYBOT_SHUTDOWN_SECONDS="1",
                )
            )
            for name, database in databases.items()
        }
        apps["bare"] = start_raybot(
            clean_env(**common), command=[sys.executable, str(REPO / "benchmarks" / "bare_bolt_app.py")]
        )
        try:
            idle_rss = rss_kib(apps["sqlite"].proc.pid)
            results: dict[str, list[float]] = {name: [] for name in apps}
            for app in apps.values():
                await burst(app.url, slack, 5)  # warm each: first-request imports and caches
            for _ in range(rounds):  # interleave, so drift on the machine hits all alike
                for name, app in apps.items():
                    results[name] += await burst(app.url, slack, n)
            results["idle_rss_kib"] = [idle_rss]
            return results
        finally:
            for app in apps.values():
                app.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="concurrent commands per burst")
    parser.add_argument("--rounds", type=int, default=3, help="bursts per app")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()
    results = asyncio.run(run(args.n, args.rounds))
    labels = {"sqlite": "raybot SQLite", "postgresql": "raybot Postgres", "bare": "bare Bolt app"}
    print(f"{len(results['bare'])} acknowledgements each, {args.n} concurrent, EMR emulator hanging every call")
    for name, label in labels.items():
        if name in results:
            values = results[name]
            print(
                f"{label:15s} p50 {statistics.median(values) * 1000:8.1f} ms   "
                f"p99 {percentile(values, 0.99) * 1000:8.1f} ms   max {max(values) * 1000:8.1f} ms"
            )
    p99 = {name: percentile(results[name], 0.99) for name in labels if name in results}
    ratio = p99["sqlite"] / p99["bare"]
    print(f"p99 ratio raybot/bare: {ratio:.2f} (goal ≤ 1.5)")
    met = max(max(results[n]) for n in p99) < ACK_DEADLINE and ratio <= 1.5
    if "postgresql" in p99:
        pg_ratio = p99["postgresql"] / p99["sqlite"]
        print(f"p99 ratio Postgres/SQLite: {pg_ratio:.2f} (goal ≤ 1.1)")
        met = met and pg_ratio <= 1.1
    else:
        print("p99 ratio Postgres/SQLite: not measured (PostgreSQL not reachable)")
    print(f"idle RSS of raybot serve: {results['idle_rss_kib'][0] / 1024:.1f} MiB")
    print(f"goal {'met' if met else 'MISSED'}")
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
