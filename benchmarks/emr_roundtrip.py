"""Signed UpdateRayCluster round trips: raybot's client against the official SDK, same emulator, same run.

    python benchmarks/emr_roundtrip.py [--n 200] [--warmup 20]

Both clients are long-lived (one each) and call sequentially. The two are interleaved
in rounds (the order alternating each round) so drift in the machine's load hits both
alike. The SDK is timed through both of its APIs (sync, on a pooled `requests` session,
and async, which opens an aiohttp session per call); the ratio is taken against the
faster of the two, so "no slower than the SDK" means no slower than its best.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.emr.client import EmrClient  # noqa: E402
from bot.emr.credentials import StaticCredentials  # noqa: E402
from bot.emr.models import UpdateRayClusterRequest  # noqa: E402
from bot.sandbox.emr_server import EmrEmulator  # noqa: E402

WORKSPACE = "w-d2d82aa09155"
CLUSTER = "ray-uiulpgow9xljimm1"
KEY_ID, KEY_SECRET = "bench-id", "bench-secret"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def realistic_body() -> dict:
    """A 4-group UpdateRayCluster body like an on-call resize sends (complete workerSpec)."""
    release = "esr-3.0.0 (Ray 2.40.0)"
    groups = []
    for index, (kind, cpu, memory, gpu) in enumerate(
        [
            ("cpu", "4", "16Gi", None),
            ("cpu", "8", "32Gi", None),
            ("gpu", "16", "64Gi", "1*A10"),
            ("cpu", "2", "8Gi", None),
        ]
    ):
        group = {
            "groupName": f"WorkerGroup{index + 1}",
            "workerType": kind,
            "replica": 2 + index,
            "minReplica": 1,
            "maxReplica": 10,
            "queueName": "root_queue",
            "cpu": cpu,
            "memory": memory,
            "displayReleaseVersion": release,
            "env": '{"OMP_NUM_THREADS":"1"}',
            "rayStartParams": '{"num-cpus":"' + cpu + '"}',
        }
        if gpu:
            group["gpuSpec"] = gpu
        groups.append(group)
    return {
        "name": "prod",
        "description": "Production CPU cluster for batch inference",
        "displayReleaseVersion": release,
        "headSpec": {
            "queueName": "root_queue",
            "cpu": "4",
            "memory": "16Gi",
            "enableAutoScaling": True,
            "idleTimeoutSeconds": 900,
            "displayReleaseVersion": release,
            "rayStartParams": '{"num-cpus":"0"}',
        },
        "workerSpec": groups,
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def timed(call: Callable[[], Awaitable[object]], into: list[float] | None) -> None:
    started = time.perf_counter()
    await call()
    if into is not None:
        into.append((time.perf_counter() - started) * 1000)


async def run(n: int, warmup: int) -> dict[str, list[float]]:
    from alibabacloud_emr_serverless_spark20230808 import models as sdk_models
    from alibabacloud_emr_serverless_spark20230808.client import Client as SdkClient
    from alibabacloud_tea_openapi.models import Config

    body = realistic_body()
    emulator = EmrEmulator(access_keys={KEY_ID: KEY_SECRET})
    emulator.seed_file(REPO / "bot" / "sandbox" / "seed_clusters.json")
    base_url = emulator.start()
    try:
        host = base_url.split("://", 1)[1].rstrip("/")
        sdk = SdkClient(
            Config(
                access_key_id=KEY_ID,
                access_key_secret=KEY_SECRET,
                endpoint=host,
                protocol="HTTP",
                region_id="cn-hangzhou",
            )
        )
        raybot_body = UpdateRayClusterRequest.model_validate(body)

        async def raybot_call() -> object:
            return await client.update_cluster(WORKSPACE, CLUSTER, raybot_body)

        async def sdk_sync_call() -> object:
            # A fresh request model per call, as the SDK's users build one.
            return sdk.update_ray_cluster(WORKSPACE, CLUSTER, sdk_models.UpdateRayClusterRequest().from_map(body))

        async def sdk_async_call() -> object:
            request = sdk_models.UpdateRayClusterRequest().from_map(body)
            return await sdk.update_ray_cluster_async(WORKSPACE, CLUSTER, request)

        calls = {"raybot": raybot_call, "sdk_sync": sdk_sync_call, "sdk_async": sdk_async_call}
        results: dict[str, list[float]] = {name: [] for name in calls}
        async with EmrClient(StaticCredentials(KEY_ID, KEY_SECRET), region="cn-hangzhou", endpoint=base_url) as client:
            for _ in range(warmup):
                for call in calls.values():
                    await timed(call, None)
            names = list(calls)
            for round_index in range(n):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    await timed(calls[name], results[name])
        return results
    finally:
        emulator.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="timed rounds (each times every client once)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed rounds first")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    for name in PROXY_VARS:
        os.environ.pop(name, None)
    os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")

    results = asyncio.run(run(args.n, max(0, args.warmup)))
    medians = {name: statistics.median(times) for name, times in results.items()}
    print(f"UpdateRayCluster round trips: n={args.n} warmup={args.warmup} (ms)")
    for name, times in results.items():
        print(f"  {name:<10} median {medians[name]:7.3f}  p90 {percentile(times, 0.9):7.3f}")
    best_sdk = min(("sdk_sync", "sdk_async"), key=lambda name: medians[name])
    ratio = medians["raybot"] / medians[best_sdk]
    print(f"ratio raybot/SDK (median, vs {best_sdk}): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
