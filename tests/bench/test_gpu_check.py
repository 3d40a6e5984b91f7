"""bench/gpu_check.py --smoke runs on the CPU: streamed vs resident on TinyStories, a toy random shape."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_smoke_passes_and_prints_its_table(shared_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--smoke"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 5 + 1, done.stdout  # header, rule, five methods, the toy shape
    assert all("same" in line and "(ok)" in line for line in table[2:7]), done.stdout
    achieved = re.search(r"achieved (\d\.\d+)", table[7])
    assert "llama-toy random" in table[7] and achieved and abs(float(achieved.group(1)) - 0.2) <= 0.01, done.stdout
