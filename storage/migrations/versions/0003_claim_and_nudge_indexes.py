"""claims and nudges that do not scan: a run's blocked mark, and an index by thread and status

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        # Set when a claim found the run blocked (user at its limit, thread busy): only such
        # runs are re-sent when a slot frees up; the others' messages are still queued.
        batch_op.add_column(sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=True))
        # A claim counts the active runs ahead in the thread; without this it read the whole
        # thread's history.
        batch_op.create_index("ix_runs_owner_thread_status", ["owner_id", "thread_id", "status"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_owner_thread_status")
        batch_op.drop_column("blocked_at")
