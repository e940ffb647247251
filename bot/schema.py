"""The tables of raybot's store, as SQLAlchemy Core metadata: the one description both databases use.

Queries in bot/store.py are built from these tables for SQLite and PostgreSQL alike; the schema
itself is created and changed only by the Alembic migrations in bot/migrations (a migration is a
frozen snapshot and never imports this module).

Times are epoch seconds (float) from raybot's injectable clock, not database time: tests move them.
JSON is stored as text (bot.store serializes it), identically on both databases.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from bot.change_state import REVERT_STATES, STATES

metadata = MetaData()


def _one_of(column: str, values: tuple[str, ...], *, nullable: bool = False) -> CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    check = f"{column} IN ({listed})"
    return CheckConstraint(f"{column} IS NULL OR {check}" if nullable else check, name=f"ck_changes_{column}")


changes = Table(
    "changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("version", Integer, nullable=False, default=0),
    Column("state", String(32), nullable=False),
    Column("team_id", Text),
    Column("user_id", Text, nullable=False),
    Column("channel_id", Text, nullable=False),
    Column("thread_ts", Text),
    Column("root_ts", Text),
    Column("alias", Text, nullable=False),
    Column("workspace", Text, nullable=False),
    Column("cluster_id", Text, nullable=False),
    Column("region", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("spec_before", Text),
    Column("body", Text),
    Column("diff", Text, nullable=False),
    Column("replay", Text),
    Column("undo_of", Integer),
    Column("run_id", Text),
    Column("call_deadline_at", Float),
    Column("request_id", Text),
    Column("error_code", Text),
    Column("error_message", Text),
    Column("next_at", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("expires_at", Float),
    Column("approval_reason", Text),
    Column("decided_by", Text),
    Column("decided_at", Float),
    Column("duration_seconds", Integer),
    Column("revert_state", String(16)),
    Column("revert_at", Float),
    Column("revert_attempts", Integer, nullable=False, default=0),
    Column("revert_run_id", Text),
    Column("revert_note", Text),
    Column("wanted", Text),
    Column("follow_started_at", Float),
    Column("follow_deadline_at", Float),
    Column("last_summary", Text),
    Column("finished_at", Float),
    # Which run is working on the row's background step, until when (a dead run's lease runs out).
    Column("lease_run", Text),
    Column("lease_until", Float),
    # What the root status message says that the rest of the row does not (bot.slack.blocks.change_card).
    Column("kept_by", Text),
    Column("undone_by", Text),
    Column("undone_by_change", Integer),
    Column("undone_at", Float),
    # A root message Slack refused to update: rendered again from the row then (the reconciler), `card_attempts` so far.
    Column("card_due_at", Float),
    Column("card_attempts", Integer, nullable=False, default=0, server_default="0"),
    _one_of("state", STATES),
    _one_of("revert_state", REVERT_STATES, nullable=True),
    Index("changes_by_alias", "alias", "created_at", "id"),
    Index("changes_due", "next_at"),
    Index("changes_by_state", "state"),
    Index("changes_revert_due", "revert_state", "revert_at"),
    Index("changes_card_due", "card_due_at"),
    Index("changes_by_root", "channel_id", "root_ts"),
)

dedup_keys = Table(
    "dedup_keys",
    metadata,
    Column("key", Text, primary_key=True),
    Column("claimed_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

locks = Table(
    "locks",
    metadata,
    Column("cluster_key", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("run_id", Text),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("replica", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("stopped_at", Float),
)

drafts = Table(
    "drafts",
    metadata,
    Column("key", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
