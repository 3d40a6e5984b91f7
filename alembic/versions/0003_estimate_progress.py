"""jobs.estimate (the preflight estimate: peak device/host memory, disk, time per execution mode) and the
progress details: the whole job's fraction, layer i/N, ETA

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("estimate", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("progress_overall_fraction", sa.Float(), nullable=True))
        batch.add_column(sa.Column("progress_layer", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("progress_layers", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("progress_eta_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in ("progress_eta_seconds", "progress_layers", "progress_layer", "progress_overall_fraction",
                       "estimate"):
            batch.drop_column(column)
