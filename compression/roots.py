"""Files and folders under the allowed roots, checked after symlinks are resolved. Torch-free: the
API checks a submission with the same rules the worker loads by.

Messages name what the user gave, never the roots: they are this server's paths, not the tenant's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from compression.errors import InvalidInput, PathNotAllowed

DATA_SUFFIXES = (".txt", ".jsonl")


def inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def find_data_file(path: str, data_roots: Sequence[Path]) -> Path:
    """The resolved file a calibration path names: an absolute path under a data root, or a relative
    path looked up under each data root in turn (never against the process's working directory)."""
    roots = [Path(r).resolve() for r in data_roots]
    if not roots:
        raise PathNotAllowed("calibration files are disabled on this server (no data roots are configured); "
                             "use a named corpus")
    if path.startswith("/"):
        resolved = Path(path).resolve()
        if not any(inside(resolved, root) for root in roots):
            raise PathNotAllowed(f"calibration file '{path}' is outside this server's data roots; give a path "
                                 "relative to a data root")
        candidates = [resolved]
    else:
        candidates = [p for p in ((root / path).resolve() for root in roots) if any(inside(p, r) for r in roots)]
    for candidate in candidates:
        try:
            found = candidate.is_file()
        except OSError as exc:  # a name too long for the file system
            raise InvalidInput(f"calibration file '{path}' cannot be read ({exc.strerror or 'error'})") from None
        if found:
            if candidate.suffix not in DATA_SUFFIXES:
                raise InvalidInput(f"calibration file '{path}' must be .txt or .jsonl (with a 'text' field)")
            return candidate
    raise InvalidInput(f"calibration file '{path}' was not found under this server's data roots")
