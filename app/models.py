"""SQLAlchemy 2 ORM: tenants, API keys, jobs, job events, artifacts (DESIGN.md section 3)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, MetaData,
    String, Text, UniqueConstraint, false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from app.jobstates import TERMINAL, JobStatus

# Deterministic constraint names, so Alembic (and SQLite batch mode) can address them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Always timezone-aware UTC in Python; SQLite stores naive UTC text, PostgreSQL timestamptz."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Scheduling (app.crud.scheduling): tenants of a higher priority are served first; among equals, the
    # tenant served longest ago goes next (round robin), so one tenant's backlog never holds another's job.
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Per-tenant limits (app.crud.quotas); NULL = the service-wide setting of the same name.
    max_active_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    submissions_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_gpu_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Model refs the tenant may compress (shell patterns: 'org/*', 'TinyStories-*'); NULL = the service's
    # SPECTRA_ALLOWED_MODELS (empty: any model the worker can reach).
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    # sha256 hex of the whole key: keys carry 256 random bits, so an unsalted hash is safe to store.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


_STATUSES = ", ".join(f"'{s.value}'" for s in JobStatus)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
        Index("ix_jobs_tenant_status_created", "tenant_id", "status", "created_at"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
        CheckConstraint(f"status IN ({_STATUSES})", name="status_valid"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    method: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(1024))
    revision: Mapped[str | None] = mapped_column(String(255), nullable=True)
    target_ratio: Mapped[float] = mapped_column(Float)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    progress_stage: Mapped[str | None] = mapped_column(String(64), nullable=True)
    progress_fraction: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # progress_fraction is of the current stage; these give the whole job's fraction (stages weighted by
    # their expected duration), the layers done of all (while a layer loop runs) and the ETA.
    progress_overall_fraction: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress_layer: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress_layers: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress_eta_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The preflight estimate (compression.estimate.Estimate.as_dict()): by the API at submission, or by
    # the worker before it reads any weight when the API could not read the model's config.
    estimate: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="job", order_by="Artifact.name", cascade="all, delete-orphan"
    )

    @property
    def is_terminal(self) -> bool:
        return JobStatus(self.status) in TERMINAL


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Artifact(Base):
    """A published file of a succeeded job; rows exist only once the upload has finished."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(2048))

    job: Mapped[Job] = relationship(back_populates="artifacts")


class Dataset(Base):
    """A calibration/evaluation text file a tenant uploaded (POST /v1/datasets); the bytes live in the
    artifact store under storage_key, the row exists only once they are stored."""

    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))  # the uploaded file's name, as given
    format: Mapped[str] = mapped_column(String(16))  # txt | jsonl | parquet
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(Integer)  # non-empty lines (txt) or rows with text (jsonl, parquet)
    storage_key: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
