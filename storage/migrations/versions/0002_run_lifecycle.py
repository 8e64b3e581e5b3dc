"""run lifecycle: leases, dispatch tokens, cancellation, idempotency, queues

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("queue", sa.String(length=64), nullable=False,
                                      server_default="runlane"))
        batch_op.add_column(sa.Column("dispatch", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_runs_owner_status", ["owner_id", "status"], unique=False)
        batch_op.create_index("ix_runs_status_lease", ["status", "lease_expires_at"], unique=False)
        batch_op.create_unique_constraint("uq_runs_owner_idempotency", ["owner_id", "idempotency_key"])


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_runs_owner_idempotency", type_="unique")
        batch_op.drop_index("ix_runs_status_lease")
        batch_op.drop_index("ix_runs_owner_status")
        for column in ("cancel_requested_at", "deadline_at", "lease_expires_at", "dispatched_at",
                       "dispatch", "queue", "idempotency_key"):
            batch_op.drop_column(column)
