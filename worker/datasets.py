"""A job's uploaded datasets, fetched into the attempt's work folder for the library.

The row is read again (the tenant's own, still there), the bytes are streamed from the store and
hashed against the sha256 pinned in the spec at submission, and .jsonl / .parquet are rewritten as the
one-object-per-line .jsonl the library reads. The library gets {dataset id: local file}.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from app.core.config import Settings
from app.core.db import session_scope
from app.crud.datasets import get_dataset
from app.datasetfiles import DatasetRefused, dataset_sections, write_library_file
from app.storage import StorageError, store_from_settings
from compression.errors import InvalidInput, TransientError


class DatasetUnavailable(InvalidInput):
    """The job's dataset was deleted, or its bytes are not the ones the job was submitted with."""


def fetch_datasets(settings: Settings, spec: dict[str, Any], tenant_id: int, folder: Path) -> dict[str, Path]:
    """{dataset id: the library's local file} for every dataset the spec names (each fetched once)."""
    files: dict[str, Path] = {}
    for _, section in dataset_sections(spec):
        dataset_id = section["dataset_id"]
        if dataset_id not in files:
            files[dataset_id] = _fetch(settings, dataset_id, section.get("dataset_sha256"), tenant_id, folder)
    return files


def _fetch(settings: Settings, dataset_id: str, pinned: str | None, tenant_id: int, folder: Path) -> Path:
    with session_scope(settings.database_url) as session:
        row = get_dataset(session, dataset_id=dataset_id, tenant_id=tenant_id)
        if row is None:
            raise DatasetUnavailable(f"dataset {dataset_id} was deleted after the job was submitted; upload it "
                                     "again and submit a new job with its new id")
        key, fmt, name, sha256 = row.storage_key, row.format, row.name, row.sha256
    if pinned and sha256 != pinned:
        raise DatasetUnavailable(f"dataset {dataset_id} now has sha256 {sha256}, not the {pinned} this job was "
                                 "submitted with")
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"{dataset_id}.{fmt}"
    digest = hashlib.sha256()
    try:
        with open(raw, "wb") as out:
            for chunk in store_from_settings(settings).stream(key):
                digest.update(chunk)
                out.write(chunk)
    except StorageError as exc:
        raise TransientError(f"downloading dataset {dataset_id} failed: {exc}") from exc
    if digest.hexdigest() != sha256:
        raise DatasetUnavailable(f"dataset {dataset_id} as stored hashes to {digest.hexdigest()}, not its recorded "
                                 f"{sha256}; upload it again")
    try:
        return write_library_file(raw, fmt, name, folder, f"{dataset_id}-text")
    except DatasetRefused as exc:  # checked at upload; only a change of this code could get here
        raise DatasetUnavailable(str(exc)) from None
