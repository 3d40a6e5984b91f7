"""The whole artifact as one `.tar`, produced as a stream of bytes that is the same every time.

The worker hashes this stream once at publish time (from its local folder) and stores the sha256 and
size in the job's metrics; the API later produces the identical bytes from the store (local or S3),
one chunk at a time, so it can send the digest and the length in the headers before the first byte.
That only holds if every header field is fixed: names come from the artifact rows, sorted; mode,
owner and mtime are constants of this module or recorded with the digest (mtime).
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.storage.base import CHUNK

BLOCK = tarfile.BLOCKSIZE  # 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)


@dataclass(frozen=True)
class Member:
    name: str  # path inside the artifact folder, '/'-separated
    size: int
    chunks: Callable[[], Iterator[bytes]]  # opened only when the member's turn comes


def archive_root(job_id: str) -> str:
    """Top folder of the archive, so `tar -xf` makes one folder named after the job."""
    return f"spectra-{job_id}"


def _header(root: str, name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(f"{root}/{name}")
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    # PAX: long and non-ASCII names get an extended header instead of being cut or refused.
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def tar_size(root: str, members: Iterable[tuple[str, int]], mtime: int) -> int:
    """Length in bytes of the archive of (name, size) members, without reading any content."""
    return sum(len(_header(root, name, size, mtime)) + size + len(_padding(size))
               for name, size in members) + len(END_OF_ARCHIVE)


def tar_stream(root: str, members: Iterable[Member], mtime: int) -> Iterator[bytes]:
    """The archive's bytes; members in the order given (callers sort by name). A member whose content
    is not exactly its recorded size ends the stream with an error rather than a corrupt archive."""
    for member in members:
        yield _header(root, member.name, member.size, mtime)
        written = 0
        for chunk in member.chunks():
            written += len(chunk)
            if written > member.size:
                raise OSError(f"artifact file {member.name} is longer than its recorded {member.size} bytes")
            yield chunk
        if written != member.size:
            raise OSError(f"artifact file {member.name} has {written} bytes, not its recorded {member.size}")
        yield _padding(member.size)
    yield END_OF_ARCHIVE


def _file_chunks(path: Path) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            yield from iter(lambda: handle.read(CHUNK), b"")

    return chunks


def local_archive_digest(root: str, folder: Path, names_and_sizes: Iterable[tuple[str, int]],
                         mtime: int) -> tuple[str, int]:
    """(sha256 hex, bytes) of the archive of files under `folder`, hashed as streamed (nothing written)."""
    members = [Member(name, size, _file_chunks(Path(folder) / name)) for name, size in sorted(names_and_sizes)]
    digest, total = hashlib.sha256(), 0
    for chunk in tar_stream(root, members, mtime):
        digest.update(chunk)
        total += len(chunk)
    return digest.hexdigest(), total
