"""fewer B-trees written per run: drop the owner index that three others start with, and keep
idempotency keys unique through a partial index that holds only the runs given a key

Every submission wrote eight B-trees of `runs`: `ix_runs_owner_id` duplicated the
first column of the owner/thread and owner/status indexes, and the (owner, idempotency key)
constraint indexed every run although most come without a key. Both NULL-key forms are
equally unique (NULLs never collide in a unique index), so only the size changes.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_WITH_KEY = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_owner_id")
        batch_op.drop_constraint("uq_runs_owner_idempotency", type_="unique")
    op.create_index("uq_runs_owner_idempotency", "runs", ["owner_id", "idempotency_key"],
                    unique=True, sqlite_where=_WITH_KEY, postgresql_where=_WITH_KEY)


def downgrade() -> None:
    op.drop_index("uq_runs_owner_idempotency", table_name="runs")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_runs_owner_idempotency",
                                          ["owner_id", "idempotency_key"])
        batch_op.create_index("ix_runs_owner_id", ["owner_id"], unique=False)
