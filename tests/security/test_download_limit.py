"""Finding: hub downloads had no size cap; any tenant could make a worker fetch any model the hub serves.
SPECTRA_MAX_DOWNLOAD_MB refuses a larger model before its weights are fetched (`model_too_large`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.service.support.processes import REPO

LOAD = """
from compression.models import load_model
from worker.outcome import classify
try:
    load_model("raincandy-u/TinyStories-656K", max_download_bytes=int(__import__("sys").argv[1]))
    print("loaded")
except Exception as exc:
    failure = classify(exc)
    print(failure.code, failure.message)
"""


def _load_with_limit(hf_home: Path, limit: int) -> str:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", LOAD, str(limit)], cwd=str(REPO), env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_hub_model_above_the_download_limit_is_refused(hf_home: Path) -> None:
    refused = _load_with_limit(hf_home, 2**20)  # TinyStories-656K's files are about 3.5 MiB
    assert refused.startswith("model_too_large ") and "download limit of 1 MiB" in refused, refused
    assert _load_with_limit(hf_home, 64 * 2**20) == "loaded"
