"""PostgreSQL for the tests: a real server over a real connection, never a mock.

`RAYBOT_TEST_POSTGRES` names a database on the server to use (`.ci/run` creates a fresh one for each
run; the default is this project's machines' server, trust authentication, database `test`). Each
test that asks for one gets a database of its own, created from it and dropped afterwards. Without a
reachable server the PostgreSQL tests skip with a one-line reason — except in CI (`CI=true`), where
they fail: a CI run that silently tested SQLite only would prove nothing about replicas.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    return os.environ.get("RAYBOT_TEST_POSTGRES") or DEFAULT_URL


def _admin() -> psycopg.Connection:
    return psycopg.connect(server_url(), autocommit=True, connect_timeout=3)


def postgres_reachable() -> bool:
    """Whether the PostgreSQL server of the tests answers."""
    try:
        with _admin() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def require_postgres() -> None:
    """Skip (fail in CI) when the PostgreSQL server of the tests cannot be reached."""
    try:
        with _admin() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        reason = f"PostgreSQL at {server_url().rsplit('@', 1)[-1]} is not reachable ({type(error).__name__})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI needs it (.ci/run starts and waits for it)")
        pytest.skip(reason)


@contextmanager
def fresh_database(template: str | None = None) -> Iterator[str]:
    """A new database on the test server, dropped afterwards; yields its URL.

    Empty, or a copy of the database named `template` (which nobody may be connected to meanwhile):
    copying a migrated database is cheaper than migrating each new one.
    """
    require_postgres()
    name = f"raybot_t_{secrets.token_hex(6)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with _admin() as conn:
        conn.execute(create)
    base = server_url().rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_name(url: str) -> str:
    """The database a URL of fresh_database names."""
    return url.rsplit("/", 1)[-1]


def terminate_connections(url: str) -> int:
    """Cut every connection to the database of `url` (pg_terminate_backend), as a failover would."""
    database = database_name(url)
    with _admin() as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)
