"""tenant scheduling: priority and last claim (fair claims), per-tenant limits and allowed models

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("last_claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("max_active_jobs", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("submissions_per_minute", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("daily_gpu_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("allowed_models", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        for column in ("allowed_models", "daily_gpu_seconds", "submissions_per_minute", "max_active_jobs", "last_claimed_at",
                       "priority"):
            batch.drop_column(column)
