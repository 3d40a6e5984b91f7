"""The artifact store interface: upload a finished folder, stream, sign download links, delete."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

CHUNK = 1024 * 1024


class StorageError(Exception):
    """The store failed (unreachable, missing object, bad key); the message says which."""


class ObjectNotFound(StorageError):
    pass


@dataclass(frozen=True)
class StoredFile:
    name: str  # path relative to the uploaded folder, '/'-separated
    size: int
    sha256: str
    key: str  # the storage key: prefix + '/' + name


@runtime_checkable
class ArtifactStore(Protocol):
    def upload_dir(self, local_dir: Path, prefix: str) -> list[StoredFile]: ...

    def open(self, key: str) -> BinaryIO: ...

    def stream(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]: ...

    def url_for(self, key: str, filename: str, ttl: int, issuer: int | None = None) -> str:
        """A download link; `issuer` (an API key id) lets a store revoke the link with the key."""
        ...

    def delete_prefix(self, prefix: str) -> int: ...

    def ping(self) -> None: ...


def files_under(local_dir: Path) -> list[tuple[str, Path]]:
    """(relative '/'-name, path) of every regular file under local_dir, sorted; symlinks refused."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise StorageError(f"{local_dir} is not a folder")
    found: list[tuple[str, Path]] = []
    for path in sorted(local_dir.rglob("*")):
        if path.is_symlink():
            raise StorageError(f"refusing to upload symlink {path}")
        if path.is_file():
            found.append((path.relative_to(local_dir).as_posix(), path))
    return found


def clean_prefix(prefix: str) -> str:
    """Keys are '/'-joined relative segments; no empty, '.' or '..' segments."""
    parts = [p for p in prefix.strip("/").split("/")]
    if not parts or any(p in ("", ".", "..") for p in parts) or "\\" in prefix:
        raise StorageError(f"invalid storage prefix {prefix!r}")
    return "/".join(parts)


def job_prefix(tenant_id: int | str, job_id: str) -> str:
    """Where a job's artifact lives: tenants/{tenant}/jobs/{job}."""
    return f"tenants/{tenant_id}/jobs/{job_id}"


def dataset_prefix(tenant_id: int | str, dataset_id: str) -> str:
    """Where an uploaded dataset lives: tenants/{tenant}/datasets/{dataset}."""
    return f"tenants/{tenant_id}/datasets/{dataset_id}"
