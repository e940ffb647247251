import os

import httpx
import pytest

from tests import e2e_world as world

# alibabacloud-credentials reads this when it is imported: it must be set before any test imports it, or its
# default chain may try the ECS metadata service, which is not on loopback.
os.environ["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"

from tests.harness import PROXY_VARS


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """No test may reach a proxy or the ECS metadata service: everything here is 127.0.0.1."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield
    assert os.environ.get("HTTP_PROXY") is None


# The end-to-end modules' emulators: one of each per module (a module may override them).
@pytest.fixture(scope="module")
def emr():
    with world.emr_emulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def slack():
    with world.slack_emulator() as emulator:
        yield emulator


@pytest.fixture
async def http():
    """A client that talks to loopback servers only (no proxies from the environment)."""
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """A RAYBOT_DATABASE value for each backend: a fresh SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "raybot.db")
        return
    from tests.postgres import fresh_database

    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def forks():
    """`raybot serve` processes forked from one process that imported raybot once (see tests/forkserver.py);
    plain `python -m bot.cli serve` starts with RAYBOT_TESTS_NO_FORK=1."""
    from tests.forkserver import raybot_starter

    with raybot_starter() as server:
        yield server
