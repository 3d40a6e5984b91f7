"""Shared pieces of the torch-free specs: the strict base model and the input validators."""

from __future__ import annotations

import re
from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Every spec refuses unknown keys, so a typo is an error instead of a silent default."""

    model_config = ConfigDict(extra="forbid")


# Hub ids as huggingface_hub accepts them: "org/name", each part starting with an alphanumeric.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# A bare name is a folder looked up under the allowed local roots.
_LOCAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# An absolute path is accepted syntactically; the loader still checks it lies under an allowed root.
_ABS_PATH = re.compile(r"^/[A-Za-z0-9._/-]{1,1023}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")


def validate_model_ref(value: str) -> str:
    """Accept a hub id, a local folder name or an absolute path; refuse anything that could escape."""
    if "://" in value:
        raise ValueError("model must be a Hugging Face id like 'org/name' or a local model name, not a URL")
    if ".." in value.split("/") or "/../" in value or value.endswith("/.."):
        raise ValueError("model must not contain '..' path segments")
    if value.startswith("/"):
        if not _ABS_PATH.match(value) or "//" in value:
            raise ValueError("a local model path may contain only letters, digits and . _ - / characters")
        return value
    if _HUB_ID.match(value) or _LOCAL_NAME.match(value):
        if "--" in value or ".." in value:
            raise ValueError("model must not contain '--' or '..'")
        return value
    raise ValueError(
        "model must be a Hugging Face id like 'org/name' (letters, digits, '.', '_', '-') "
        "or the name of a model folder under an allowed local root"
    )


def validate_revision(value: str | None) -> str | None:
    """A branch, tag or commit sha; no path tricks."""
    if value is None:
        return None
    if not _REVISION.match(value) or ".." in value:
        raise ValueError("revision must be a branch, tag or commit sha (letters, digits, '.', '_', '-', '/')")
    return value


_DATA_PATH = re.compile(r"^/?[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def validate_data_path(value: str | None) -> str | None:
    """A calibration file path: plain path characters, no '..' segments, no URL; roots are checked later."""
    if value is None:
        return None
    if "://" in value:
        raise ValueError("calibration.path must be a file path under an allowed data root, not a URL")
    if ".." in value.split("/"):
        raise ValueError("calibration.path must not contain '..' path segments")
    if len(value) > 1024 or not _DATA_PATH.match(value):
        raise ValueError(
            "calibration.path may contain only letters, digits and . _ - / characters "
            "(a .txt or .jsonl file under an allowed data root)"
        )
    return value
