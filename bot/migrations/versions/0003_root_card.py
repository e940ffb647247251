"""What the root status message of a change says, kept on its row: who kept it, who undid it, and a card to retry.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

The root message of a change is rendered from its row alone (bot.slack.blocks.change_card), so the row keeps
what it says: `kept_by` (who pressed Keep it), `undone_by` / `undone_by_change` / `undone_at` (the Undo or
automatic revert that put it back), and `card_due_at` / `card_attempts` (a chat.update Slack refused, tried
again by the reconciler). Additive: a replica of the previous version ignores the columns.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("changes", sa.Column("kept_by", sa.Text))
    op.add_column("changes", sa.Column("undone_by", sa.Text))
    op.add_column("changes", sa.Column("undone_by_change", sa.Integer))
    op.add_column("changes", sa.Column("undone_at", sa.Float))
    op.add_column("changes", sa.Column("card_due_at", sa.Float))
    # A server default: rows written by a replica of the previous version (which knows no such column) get 0.
    op.add_column("changes", sa.Column("card_attempts", sa.Integer, nullable=False, server_default="0"))
    op.create_index("changes_card_due", "changes", ["card_due_at"])
    # Is a thread one of raybot's changes? (bot.flow.broadcasts)
    op.create_index("changes_by_root", "changes", ["channel_id", "root_ts"])
    op.execute("UPDATE schema_compat SET oldest_compatible = '0002'")


def downgrade() -> None:
    op.drop_index("changes_by_root", "changes")
    op.drop_index("changes_card_due", "changes")
    with op.batch_alter_table("changes") as batch:
        for column in ("card_attempts", "card_due_at", "undone_at", "undone_by_change", "undone_by", "kept_by"):
            batch.drop_column(column)
    op.execute("UPDATE schema_compat SET oldest_compatible = '0001'")
