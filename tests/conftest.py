"""Root fixtures: where the shared real models and corpora live. Missing data is an error, never a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPECTRA_SHARED_DIR", REPO.parent / "shared")).resolve()


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the tests need ../shared (models and data) beside the checkout, "
            "or SPECTRA_SHARED_DIR pointing at it"
        )
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "data")


@pytest.fixture(scope="session")
def tinystories_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "models" / "TinyStories-656K")
