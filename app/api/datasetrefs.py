"""Datasets named in a submitted job (calibration, evaluation): each must be one of this tenant's; its
sha256 is pinned in the spec.

The stored spec then says exactly which bytes the job ran on (ids are never reused, but a dataset can
be deleted), the worker refuses a download that hashes differently, and the library's calibration
record and evaluation protocol, written from the spec, carry the id and the sha256 into the job's
metrics and compression.json.
"""

from __future__ import annotations

from typing import Any

from app.api.validation import field_error
from app.core.adb import AsyncDatabase
from app.crud.datasets import get_dataset
from app.datasetfiles import dataset_sections


async def pin_datasets(db: AsyncDatabase, dumped: dict[str, Any], tenant_id: int) -> None:
    """Fill dataset_sha256 in each section of the dumped spec that names a dataset; 422 naming the field
    for a foreign, unknown or differently hashed dataset (another tenant's id reads exactly like one that
    does not exist)."""
    for name, section in dataset_sections(dumped):
        dataset_id = section["dataset_id"]
        async with db.session() as session:
            row = await session.run_sync(lambda s: get_dataset(s, dataset_id=dataset_id, tenant_id=tenant_id))
        if row is None:
            raise field_error(("body", name, "dataset_id"), f"no dataset {dataset_id} for this tenant; upload "
                              "one with POST /v1/datasets (GET /v1/datasets lists yours)")
        given = section.get("dataset_sha256")
        if given is not None and given != row.sha256:
            raise field_error(("body", name, "dataset_sha256"), f"dataset {dataset_id} has sha256 "
                              f"{row.sha256}, not {given}; it is another file than the one you meant")
        section["dataset_sha256"] = row.sha256
