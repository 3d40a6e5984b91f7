"""compression/ is a pure library: importing its entry points pulls in no web, queue, DB or cloud code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("fastapi", "starlette", "sqlalchemy", "alembic", "celery", "kombu", "redis", "boto3", "botocore",
             "app", "worker", "uvicorn", "psycopg")

_SCRIPT = """
import json, sys
import compression.run, compression.cli, compression.export, compression.models, compression.calibration
import compression.evaluation, compression.zeroshot, compression.gguf_import, compression.methods
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def test_compression_imports_no_service_code() -> None:
    done = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "torch" in loaded  # the check itself works: the library did load its own stack
    assert sorted(loaded & set(FORBIDDEN)) == []


def test_specs_and_errors_stay_torch_free() -> None:
    code = ("import sys, compression.specs, compression.errors; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
