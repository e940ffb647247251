"""Leases on background work (which run is handling a due change, until when), and schema compatibility.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

With several replicas, each due change is claimed by one run (`FOR UPDATE SKIP LOCKED` on
PostgreSQL) and taken over by another when that run's lease runs out. Additive: a replica of the
previous version ignores the columns, so old and new replicas can run side by side in a rollout.

Every later migration sets `schema_compat.oldest_compatible` to the oldest revision that still runs
on the schema it leaves (normally the previous one: migrations stay additive for one version).
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("changes", sa.Column("lease_run", sa.Text))
    op.add_column("changes", sa.Column("lease_until", sa.Float))
    # The oldest revision whose raybot may still run on this schema: a rollback (or an old replica in a
    # rolling update) finds it here and runs, instead of refusing a revision it cannot know.
    op.create_table(
        "schema_compat",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("oldest_compatible", sa.Text, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_schema_compat_one_row"),
    )
    op.execute("INSERT INTO schema_compat (id, oldest_compatible) VALUES (1, '0001')")


def downgrade() -> None:
    op.drop_table("schema_compat")
    with op.batch_alter_table("changes") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("lease_run")
