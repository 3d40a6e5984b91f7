"""Tenants and API keys (plaintext keys are returned once and never stored). Requests are
authenticated in app.api.auth, on the event loop."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import ApiKey, Tenant, utcnow
from app.security import generate_api_key, hash_api_key, key_prefix


def get_or_create_tenant(session: Session, *, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_api_key(session: Session, *, tenant_name: str) -> tuple[ApiKey, str]:
    """A new key for the tenant (created if needed). The plaintext is returned once, never stored."""
    tenant = get_or_create_tenant(session, name=tenant_name)
    plaintext = generate_api_key()
    row = ApiKey(tenant_id=tenant.id, prefix=key_prefix(plaintext), key_hash=hash_api_key(plaintext))
    session.add(row)
    session.flush()
    return row, plaintext


def revoke_api_key(session: Session, *, prefix: str, tenant_name: str) -> int:
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        return 0
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.tenant_id == tenant.id, ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return result.rowcount or 0


def list_api_keys(session: Session, *, tenant_name: str | None = None) -> list[tuple[str, ApiKey]]:
    """(tenant name, key row) of every key, oldest first; the rows hold only a prefix and a hash."""
    query = select(Tenant.name, ApiKey).join(Tenant, Tenant.id == ApiKey.tenant_id).order_by(ApiKey.id)
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    return [(name, key) for name, key in session.execute(query).all()]
