"""Findings: `Infinity` in a float option was accepted (stored as null, the job then failed `internal`);
`target_ratio: true` was taken as 1.0; a trailing newline passed the model, revision and path patterns;
a relative calibration path resolved against the worker's working directory. All are refused at
submission now, with a 422 naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.security import models
from tests.security.conftest import HostileStack
from tests.service.support.client import FAST_JOB

SOCO = {**FAST_JOB, "method": "soco"}

REFUSED: dict[str, tuple[str, str]] = {
    # name: (raw JSON body, the field the 422 names)
    "Infinity in a float option": (json.dumps({**SOCO, "options": {"learning_rate": float("inf")}}), "options"),
    "NaN as the ratio": (json.dumps({**FAST_JOB, "target_ratio": float("nan")}), "target_ratio"),
    "true as the ratio": (json.dumps({**FAST_JOB, "target_ratio": True}), "target_ratio"),
    "false as a count": (json.dumps({**FAST_JOB, "calibration": {**FAST_JOB["calibration"], "samples": False}}),
                         "samples"),
    "newline after the model": (json.dumps({**FAST_JOB, "model": "raincandy-u/TinyStories-656K\n"}), "model"),
    "newline after the revision": (json.dumps({**FAST_JOB, "revision": "main\n"}), "revision"),
    "newline after the path": (json.dumps({**FAST_JOB, "calibration": {"source": "file", "path": "c.txt\n"}}),
                               "path"),
    "relative path to no file": (json.dumps({**FAST_JOB, "calibration": {"source": "file", "path": "none.txt"}}),
                                 "path"),
    "revision of a local model": (json.dumps({**FAST_JOB, "model": "local-model", "revision": "main"}), "revision"),
    "cuda on a CPU-only fleet": (json.dumps({**FAST_JOB, "device": "cuda"}), "device"),
    # TinyStories-656K has 2 decoder layers: removing whole layers reaches 0.5 only.
    "a ratio shortgpt cannot reach": (json.dumps({**FAST_JOB, "model": "two-layers", "method": "shortgpt"}),
                                      "target_ratio"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_careless_input_is_a_422_naming_the_field(hostile: HostileStack, case: str) -> None:
    body, field = REFUSED[case]
    if not (hostile.model_root / "two-layers").exists():
        models.clone(hostile.model_root, "two-layers")
    response = hostile.client("dave").http.post("/v1/jobs", content=body,
                                                headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    errors: list[dict[str, Any]] = response.json()["detail"]
    assert any(field in [str(part) for part in error["loc"]] or field in str(error["msg"]) for error in errors), errors
    assert str(hostile.data_root) not in response.text and str(hostile.model_root) not in response.text


def test_a_relative_calibration_path_is_found_under_the_data_roots(hostile: HostileStack) -> None:
    (hostile.data_root / "stories.txt").write_text("Once upon a time there was a little cat. " * 400)
    dave = hostile.client("dave")
    hostile.worker()
    job = dave.submit_ok({**FAST_JOB, "method": "asvd",
                          "calibration": {"source": "file", "path": "stories.txt", "samples": 4, "seq_len": 64}})
    final = dave.wait_terminal(job["id"], timeout=180)
    assert final["status"] == "succeeded", final
