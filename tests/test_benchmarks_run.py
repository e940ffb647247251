"""The benchmarks run end to end (tiny sizes: this checks they work, not how fast)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.harness import PROXY_VARS

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"
    return env


def test_emr_roundtrip_benchmark_runs():
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "emr_roundtrip.py"), "--n", "3", "--warmup", "1"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^ratio raybot/SDK .*: \d+\.\d{3}$", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"raybot\s+median\s+\d", done.stdout) and re.search(r"sdk_sync\s+median\s+\d", done.stdout)


def test_ack_latency_benchmark_runs():
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "ack_latency.py"), "--n", "5", "--rounds", "1"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^raybot SQLite\s+p50\s+[\d.]+ ms\s+p99", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^p99 ratio Postgres/SQLite: ", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^bare Bolt app\s+p50", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^p99 ratio raybot/bare: \d+\.\d\d", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^idle RSS of raybot serve: [\d.]+ MiB", done.stdout, re.MULTILINE), done.stdout


def test_replica_throughput_benchmark_runs():
    from tests.postgres import require_postgres

    require_postgres()
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "replica_throughput.py"), "--waves", "1", "--replicas", "1"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^1 replica\(s\):\s+[\d.]+ changes/s", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^one change, command to its applied answer: median [\d.]+ ms", done.stdout, re.MULTILINE)
    assert re.search(r"^store ops of one change on PostgreSQL: median [\d.]+ ms \([\d.]+% of it\)", done.stdout, re.M)
