"""/v1/datasets: upload a calibration/evaluation text file (multipart), list, get, delete; per tenant.

The file is checked (format, UTF-8, not binary, has text), stored in the artifact store with its
sha256, and only then gets its row, so a row never names bytes that are not there. A job refers to
it by id (calibration.source 'dataset'); the worker downloads it and checks the sha256.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Response, UploadFile, status
from starlette.concurrency import run_in_threadpool

from app.api.deps import AUTH_RESPONSES, DbDep, SettingsDep, StoreDep, TenantDep
from app.api.validation import JOB_ID
from app.core.config import Settings
from app.crud.datasets import DatasetQuotaExceeded, add_dataset, count_datasets, delete_dataset, get_dataset, list_datasets
from app.datasetfiles import CHUNK, DatasetRefused, check, format_of
from app.models import Dataset, new_job_id
from app.schemas import DatasetOut, ErrorOut, UploadProblem
from app.storage import ArtifactStore, StoredFile, dataset_prefix

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=AUTH_RESPONSES)

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "No such dataset for this tenant"}}


def _not_found(dataset_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {dataset_id[:64]} not found")


def _receive(upload: UploadFile, fmt: str, name: str, settings: Settings, store: ArtifactStore,
             prefix: str) -> tuple[StoredFile, int]:
    """Copy the upload to a private folder (refusing it past the size limit), check it, store it."""
    limit = settings.dataset_max_bytes
    with tempfile.TemporaryDirectory(prefix="spectra-upload-") as folder:
        path = Path(folder) / f"data.{fmt}"
        size = 0
        with open(path, "wb") as out:
            for block in iter(lambda: upload.file.read(CHUNK), b""):
                size += len(block)
                if size > limit:
                    raise DatasetRefused(413, f"{name} is larger than {limit} bytes (SPECTRA_DATASET_MAX_BYTES); "
                                         "upload a smaller sample of it")
                out.write(block)
        records = check(path, fmt, name)
        (stored,) = store.upload_dir(Path(folder), prefix)
        return stored, records


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=DatasetOut,
    responses={400: {"model": ErrorOut, "description": "The body is not valid multipart/form-data"},
               409: {"model": ErrorOut, "description": "The tenant keeps SPECTRA_DATASETS_PER_TENANT datasets"},
               413: {"model": ErrorOut, "description": "File over SPECTRA_DATASET_MAX_BYTES"},
               415: {"model": ErrorOut, "description": "Not a .txt, .jsonl or .parquet file"},
               422: {"model": UploadProblem,
                     "description": "Empty, binary, not UTF-8, no 'text' field/column, or no `file` part"}},
    summary="Upload a calibration/evaluation dataset (multipart field `file`)",
    description="`.txt` (UTF-8 text), `.jsonl` (one object with a string `text` per line) or `.parquet` (a "
    "string column `text`). Use the returned id as `calibration.dataset_id` with `calibration.source: "
    "\"dataset\"`; the job records the dataset's id and sha256.",
)
async def upload_dataset(file: Annotated[UploadFile, File(description="The dataset file")], response: Response,
                         tenant: TenantDep, db: DbDep, settings: SettingsDep, store: StoreDep) -> DatasetOut:
    name = Path(file.filename or "").name[:255]
    try:
        fmt = format_of(name)
        limit = settings.datasets_per_tenant
        if limit:  # fail before reading the file; add_dataset counts again under the tenant's lock
            async with db.session() as session:
                if await session.run_sync(lambda s: count_datasets(s, tenant_id=tenant.id)) >= limit:
                    raise DatasetQuotaExceeded(f"this tenant already keeps {limit} datasets (the limit, "
                                               "SPECTRA_DATASETS_PER_TENANT); delete one with DELETE "
                                               "/v1/datasets/{id} first")
        dataset_id = new_job_id()
        prefix = dataset_prefix(tenant.id, dataset_id)
        stored, records = await run_in_threadpool(_receive, file, fmt, name, settings, store, prefix)
    except DatasetRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except DatasetQuotaExceeded as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    row = Dataset(id=dataset_id, tenant_id=tenant.id, name=name, format=fmt, size=stored.size,
                  sha256=stored.sha256, records=records, storage_key=stored.key)
    try:
        async with db.session() as session:
            await session.run_sync(lambda s: add_dataset(s, dataset=row, limit=settings.datasets_per_tenant))
            await session.commit()
    except BaseException as exc:
        await run_in_threadpool(store.delete_prefix, prefix)  # no row: the bytes must not linger
        if isinstance(exc, DatasetQuotaExceeded):
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        raise
    response.headers["Location"] = f"/v1/datasets/{dataset_id}"
    return DatasetOut.from_row(row)


@router.get("", response_model=list[DatasetOut], summary="This tenant's datasets, newest first")
async def get_datasets(tenant: TenantDep, db: DbDep) -> list[DatasetOut]:
    async with db.session() as session:
        rows = await session.run_sync(lambda s: list_datasets(s, tenant_id=tenant.id))
    return [DatasetOut.from_row(r) for r in rows]


@router.get("/{dataset_id}", response_model=DatasetOut, responses=NOT_FOUND, summary="One dataset")
async def get_one_dataset(dataset_id: str, tenant: TenantDep, db: DbDep) -> DatasetOut:
    if not JOB_ID.fullmatch(dataset_id):
        raise _not_found(dataset_id)
    async with db.session() as session:
        row = await session.run_sync(lambda s: get_dataset(s, dataset_id=dataset_id, tenant_id=tenant.id))
    if row is None:
        raise _not_found(dataset_id)
    return DatasetOut.from_row(row)


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses=NOT_FOUND, summary="Delete a dataset",
               description="Jobs already queued with it fail with `dataset_unavailable` when they start; "
               "finished jobs keep its id and sha256 in their records.")
async def remove_dataset(dataset_id: str, tenant: TenantDep, db: DbDep, store: StoreDep) -> Response:
    if not JOB_ID.fullmatch(dataset_id):
        raise _not_found(dataset_id)
    async with db.session() as session:
        row = await session.run_sync(lambda s: delete_dataset(s, dataset_id=dataset_id, tenant_id=tenant.id))
        if row is None:
            raise _not_found(dataset_id)
        await session.commit()
    # Row first, bytes second: a failure here leaves unreferenced bytes, never a row without them.
    await run_in_threadpool(store.delete_prefix, dataset_prefix(tenant.id, dataset_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
