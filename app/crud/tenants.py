"""Tenant settings an operator changes with `spectra admin set-tenant`, and the listings of tenants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import ApiKey, Tenant

# The per-tenant settings `set-tenant` may change; for the limits, None = the service-wide setting.
TENANT_SETTINGS = ("priority", "max_active_jobs", "submissions_per_minute", "daily_gpu_seconds", "allowed_models")


class NoSuchTenant(LookupError):
    pass


def set_tenant(session: Session, *, name: str, **values: Any) -> Tenant:
    """Change the named settings of an existing tenant (keys from TENANT_SETTINGS)."""
    unknown = set(values) - set(TENANT_SETTINGS)
    if unknown:
        raise ValueError(f"unknown tenant settings: {sorted(unknown)}")
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NoSuchTenant(f"no tenant named {name!r}; `spectra admin create-key --tenant {name}` creates it")
    for key, value in values.items():
        setattr(tenant, key, value)
    session.flush()
    return tenant


@dataclass(frozen=True)
class TenantRow:
    name: str
    priority: int
    max_active_jobs: int | None
    submissions_per_minute: int | None
    daily_gpu_seconds: int | None
    allowed_models: list[str] | None
    active_keys: int


def list_tenants(session: Session) -> list[TenantRow]:
    keys = (select(ApiKey.tenant_id, func.count().label("n")).where(ApiKey.revoked_at.is_(None))
            .group_by(ApiKey.tenant_id).subquery())
    rows = session.execute(
        select(Tenant, func.coalesce(keys.c.n, 0)).outerjoin(keys, keys.c.tenant_id == Tenant.id).order_by(Tenant.name)
    ).all()
    return [TenantRow(t.name, t.priority, t.max_active_jobs, t.submissions_per_minute, t.daily_gpu_seconds,
                      t.allowed_models, int(n)) for t, n in rows]
