"""Datasets a tenant uploaded: insert under the tenant's quota, list, get, delete. Always by tenant."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.crud.jobs import lock_tenant_for_submission
from app.models import Dataset


class DatasetQuotaExceeded(Exception):
    """The tenant already keeps the most datasets allowed."""


def count_datasets(session: Session, *, tenant_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(Dataset).where(Dataset.tenant_id == tenant_id)) or 0)


def add_dataset(session: Session, *, dataset: Dataset, limit: int) -> Dataset:
    """Insert the row unless the tenant is at `limit` (0: no limit). Counted under the tenant's lock
    (held until the caller's commit), so concurrent uploads cannot together pass the limit."""
    if limit:
        lock_tenant_for_submission(session, tenant_id=dataset.tenant_id)
        if count_datasets(session, tenant_id=dataset.tenant_id) >= limit:
            raise DatasetQuotaExceeded(f"this tenant already keeps {limit} datasets (the limit, "
                                       "SPECTRA_DATASETS_PER_TENANT); delete one with DELETE /v1/datasets/{id} first")
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(session: Session, *, dataset_id: str, tenant_id: int) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id))


def list_datasets(session: Session, *, tenant_id: int) -> list[Dataset]:
    return list(session.scalars(select(Dataset).where(Dataset.tenant_id == tenant_id)
                                .order_by(Dataset.created_at.desc(), Dataset.id.desc())))


def delete_dataset(session: Session, *, dataset_id: str, tenant_id: int) -> Dataset | None:
    """Delete the row and return it (its storage_key names the bytes to remove), or None."""
    dataset = get_dataset(session, dataset_id=dataset_id, tenant_id=tenant_id)
    if dataset is not None:
        session.execute(delete(Dataset).where(Dataset.id == dataset_id))
    return dataset
