"""The store as of raybot's state machine (one row per change, runs, fenced locks).

Revision ID: 0001
Revises: -
Create Date: 2026-12-02

A fresh database gets the tables. A SQLite file written by raybot before Alembic (it has a
`schema_version` table, versions 1–3) is first brought to version 3 by the statements it was
released with — kept here verbatim, since databases in the field ran them — and then handed over
to Alembic; its v2 approval requests are not carried over (see the last legacy statements).
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The states as of this revision (a migration is frozen: it does not import bot.change_state).
STATES = (
    "awaiting_approval",
    "applying",
    "sending",
    "unknown",
    "applied",
    "settled",
    "not_settled",
    "broken",
    "failed",
    "cancelled",
    "rejected",
    "expired",
    "void",
)
REVERT_STATES = ("scheduled", "running", "cancelled", "done", "failed")
_STATE_CHECK = ", ".join(f"'{s}'" for s in STATES)
_REVERT_CHECK = ", ".join(f"'{s}'" for s in REVERT_STATES)

LEGACY_V1_V2: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE approvals (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            requester_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_ts TEXT,
            root_ts TEXT,
            alias TEXT NOT NULL,
            action TEXT NOT NULL,
            summary TEXT NOT NULL,
            request TEXT NOT NULL,
            spec_before TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending','approved','rejected','expired','void','applied')),
            decided_by TEXT,
            decided_at REAL,
            reason TEXT
        )""",
        """CREATE TABLE changes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            team_id TEXT,
            user_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_ts TEXT,
            root_ts TEXT,
            alias TEXT NOT NULL,
            workspace TEXT NOT NULL,
            cluster_id TEXT NOT NULL,
            region TEXT NOT NULL,
            action TEXT NOT NULL,
            summary TEXT NOT NULL,
            spec_before TEXT,
            body TEXT,
            diff TEXT NOT NULL,
            outcome TEXT NOT NULL CHECK (outcome IN ('pending','done','failed','unknown')),
            request_id TEXT,
            error_code TEXT,
            error_message TEXT,
            undo_of INTEGER REFERENCES changes(id),
            approval_id INTEGER REFERENCES approvals(id),
            finished_at REAL
        )""",
        "CREATE INDEX changes_by_alias ON changes (alias, created_at DESC, id DESC)",
        "CREATE INDEX changes_by_outcome ON changes (outcome)",
        """CREATE TABLE dedup_keys (
            key TEXT PRIMARY KEY,
            claimed_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""",
        """CREATE TABLE locks (
            cluster_key TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            user_id TEXT NOT NULL,
            summary TEXT NOT NULL,
            acquired_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""",
        """CREATE TABLE drafts (
            key TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            data TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""",
        """CREATE TABLE schedules (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at REAL NOT NULL,
            due_at REAL NOT NULL,
            change_id INTEGER NOT NULL REFERENCES changes(id),
            alias TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_ts TEXT,
            status TEXT NOT NULL CHECK (status IN ('scheduled','done','cancelled','failed')),
            finished_at REAL,
            note TEXT
        )""",
        "CREATE INDEX schedules_due ON schedules (status, due_at)",
    ),
    (
        """CREATE TABLE follows (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            change_id INTEGER NOT NULL REFERENCES changes(id),
            alias TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_ts TEXT,
            root_ts TEXT,
            wanted TEXT NOT NULL,
            started_at REAL NOT NULL,
            deadline_at REAL NOT NULL,
            next_at REAL NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL CHECK (status IN ('following','done','failed','timeout','cancelled')),
            last_summary TEXT,
            finished_at REAL
        )""",
        "CREATE INDEX follows_due ON follows (status, next_at)",
        # One change is followed at most once at a time, whichever replica starts it.
        "CREATE UNIQUE INDEX follows_one_per_change ON follows (change_id) WHERE status = 'following'",
    ),
)


# Version 3: one row per change for its whole life (bot/change_state.py); approvals, schedules and follows
# become its states and columns, and locks belong to a process run that renews them.
LEGACY_V3: tuple[str, ...] = (
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        replica TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        stopped_at REAL
    )""",
    f"""CREATE TABLE changes_v3 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        version INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL CHECK (state IN ({_STATE_CHECK})),
        team_id TEXT,
        user_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        thread_ts TEXT,
        root_ts TEXT,
        alias TEXT NOT NULL,
        workspace TEXT NOT NULL,
        cluster_id TEXT NOT NULL,
        region TEXT NOT NULL,
        action TEXT NOT NULL,
        summary TEXT NOT NULL,
        spec_before TEXT,
        body TEXT,
        diff TEXT NOT NULL,
        replay TEXT,
        undo_of INTEGER,
        run_id TEXT,
        call_deadline_at REAL,
        request_id TEXT,
        error_code TEXT,
        error_message TEXT,
        next_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        expires_at REAL,
        approval_reason TEXT,
        decided_by TEXT,
        decided_at REAL,
        duration_seconds INTEGER,
        revert_state TEXT CHECK (revert_state IS NULL OR revert_state IN ({_REVERT_CHECK})),
        revert_at REAL,
        revert_attempts INTEGER NOT NULL DEFAULT 0,
        revert_run_id TEXT,
        revert_note TEXT,
        wanted TEXT,
        follow_started_at REAL,
        follow_deadline_at REAL,
        last_summary TEXT,
        finished_at REAL
    )""",
    # An old "pending" change was in flight when its process stopped: "sending" with no live run is
    # exactly what the reconciler looks for. A done change whose follow ended counts as settled.
    """INSERT INTO changes_v3 (id, created_at, updated_at, version, state, team_id, user_id, channel_id, thread_ts,
           root_ts, alias, workspace, cluster_id, region, action, summary, spec_before, body, diff, undo_of,
           request_id, error_code, error_message, next_at, finished_at)
       SELECT id, created_at, updated_at, 0,
           CASE outcome WHEN 'pending' THEN 'sending' WHEN 'done' THEN 'settled' WHEN 'failed' THEN 'failed'
                ELSE 'unknown' END,
           team_id, user_id, channel_id, thread_ts, root_ts, alias, workspace, cluster_id, region, action, summary,
           spec_before, body, diff, undo_of, request_id, error_code, error_message,
           CASE outcome WHEN 'unknown' THEN updated_at END, finished_at
       FROM changes""",
    """UPDATE changes_v3 SET state = 'applied', wanted = f.wanted, follow_started_at = f.started_at,
           follow_deadline_at = f.deadline_at, next_at = f.next_at, attempts = f.attempt,
           last_summary = f.last_summary
       FROM follows AS f
       WHERE f.change_id = changes_v3.id AND f.status = 'following' AND changes_v3.state = 'settled'""",
    """UPDATE changes_v3 SET revert_at = s.due_at, revert_note = s.note,
           revert_state = CASE s.status WHEN 'scheduled' THEN 'scheduled' WHEN 'done' THEN 'done'
                               WHEN 'cancelled' THEN 'cancelled' ELSE 'failed' END
       FROM schedules AS s WHERE s.change_id = changes_v3.id""",
    "DROP TABLE follows",
    "DROP TABLE schedules",
    "DROP TABLE changes",
    # Approval requests of version 2 were keyed by approval id, which now means a change id: they are not
    # carried over (their buttons answer that the request is closed), so no click can approve another change.
    "DROP TABLE approvals",
    "ALTER TABLE changes_v3 RENAME TO changes",
    "CREATE INDEX changes_by_alias ON changes (alias, created_at DESC, id DESC)",
    "CREATE INDEX changes_due ON changes (next_at) WHERE next_at IS NOT NULL",
    "CREATE INDEX changes_in_flight ON changes (state) WHERE state IN ('applying', 'sending')",
    "CREATE INDEX changes_revert_due ON changes (revert_at) WHERE revert_state IN ('scheduled', 'running')",
    "ALTER TABLE locks ADD COLUMN run_id TEXT",
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and sa.inspect(bind).has_table("schema_version"):
        _upgrade_legacy_sqlite(bind)
        return
    op.create_table(
        "changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("team_id", sa.Text),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("channel_id", sa.Text, nullable=False),
        sa.Column("thread_ts", sa.Text),
        sa.Column("root_ts", sa.Text),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("workspace", sa.Text, nullable=False),
        sa.Column("cluster_id", sa.Text, nullable=False),
        sa.Column("region", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("spec_before", sa.Text),
        sa.Column("body", sa.Text),
        sa.Column("diff", sa.Text, nullable=False),
        sa.Column("replay", sa.Text),
        sa.Column("undo_of", sa.Integer),
        sa.Column("run_id", sa.Text),
        sa.Column("call_deadline_at", sa.Float),
        sa.Column("request_id", sa.Text),
        sa.Column("error_code", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("next_at", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("expires_at", sa.Float),
        sa.Column("approval_reason", sa.Text),
        sa.Column("decided_by", sa.Text),
        sa.Column("decided_at", sa.Float),
        sa.Column("duration_seconds", sa.Integer),
        sa.Column("revert_state", sa.String(16)),
        sa.Column("revert_at", sa.Float),
        sa.Column("revert_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("revert_run_id", sa.Text),
        sa.Column("revert_note", sa.Text),
        sa.Column("wanted", sa.Text),
        sa.Column("follow_started_at", sa.Float),
        sa.Column("follow_deadline_at", sa.Float),
        sa.Column("last_summary", sa.Text),
        sa.Column("finished_at", sa.Float),
        sa.CheckConstraint(f"state IN ({_STATE_CHECK})", name="ck_changes_state"),
        sa.CheckConstraint(
            f"revert_state IS NULL OR revert_state IN ({_REVERT_CHECK})", name="ck_changes_revert_state"
        ),
    )
    op.create_table(
        "dedup_keys",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("claimed_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_table(
        "locks",
        sa.Column("cluster_key", sa.Text, primary_key=True),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("run_id", sa.Text),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("replica", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("stopped_at", sa.Float),
    )
    op.create_table(
        "drafts",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    _indexes()


def _indexes() -> None:
    op.create_index("changes_by_alias", "changes", ["alias", "created_at", "id"])
    op.create_index("changes_due", "changes", ["next_at"])
    op.create_index("changes_by_state", "changes", ["state"])
    op.create_index("changes_revert_due", "changes", ["revert_state", "revert_at"])


def _upgrade_legacy_sqlite(bind: sa.Connection) -> None:
    found = bind.exec_driver_sql("SELECT COALESCE(MAX(version), 0) FROM schema_version").scalar() or 0
    legacy = (*LEGACY_V1_V2, LEGACY_V3)
    if found > len(legacy):
        raise RuntimeError(
            f"the database has schema version {found}, newer than this raybot knows ({len(legacy)}): "
            "upgrade raybot, or point RAYBOT_DATABASE at another database"
        )
    for statements in legacy[found:]:
        for statement in statements:
            bind.exec_driver_sql(statement)
    # Version 3 made partial indexes of its own; from here on both databases have the same ones.
    for name in ("changes_by_alias", "changes_due", "changes_in_flight", "changes_revert_due"):
        bind.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
    op.drop_table("schema_version")
    _indexes()


def downgrade() -> None:
    for table in ("drafts", "runs", "locks", "dedup_keys", "changes"):
        op.drop_table(table)
