"""Artifact storage: pick the store named by SPECTRA_ARTIFACT_STORE."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from app.storage.base import ArtifactStore, ObjectNotFound, StorageError, StoredFile, dataset_prefix, job_prefix

if TYPE_CHECKING:
    from app.core.config import Settings

__all__ = ["ArtifactStore", "ObjectNotFound", "StorageError", "StoredFile", "dataset_prefix", "job_prefix",
           "store_from_settings"]


def store_from_settings(settings: "Settings") -> ArtifactStore:
    url = settings.artifact_store or ""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from app.storage.local import LocalStore

        return LocalStore(Path(parsed.path), secret=settings.signing_key(), public_url=settings.public_url or "")
    if parsed.scheme == "s3":
        from app.storage.s3 import S3Store

        if not parsed.netloc:
            raise ValueError("SPECTRA_ARTIFACT_STORE must look like s3://bucket[/prefix]")
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        return S3Store(
            parsed.netloc, parsed.path.strip("/"), endpoint_url=settings.s3_endpoint_url,
            public_endpoint_url=settings.s3_public_endpoint_url, region=settings.s3_region,
            access_key=settings.s3_access_key_id, secret_key=secret,
        )
    raise ValueError(f"SPECTRA_ARTIFACT_STORE must be file:///folder or s3://bucket[/prefix], not {url!r}")
