"""The Python API: the README's example runs as written; in-memory models, inline texts and files work."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compression import compress
from compression.errors import InvalidInput
from compression.export import load_compressed
from tests.conftest import REPO, SHARED

TINY_EVAL = {"corpus": "tinystories", "seq_len": 128, "max_windows": 2}


def _readme_python_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md's Python API section has no python block"
    return match.group(1)


def test_readme_example_runs_and_writes_a_loadable_artifact(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)  # the example's ../shared, as beside a checkout
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _readme_python_example()], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    before, arrow, after = done.stdout.strip().splitlines()[-1].split()
    assert arrow == "->" and float(after) > float(before) > 1.0
    artifact = work / "tinystories-svd-llm"
    report = json.loads((artifact / "compression.json").read_text())
    assert report["calibration"]["source"] == "texts" and report["calibration"]["texts"] == 100
    assert (artifact / "README.md").is_file()
    load_compressed(artifact)  # every sha256 checked


def test_in_memory_model_with_inline_texts(tiny_model, tiny_tokenizer, tmp_path: Path) -> None:
    texts = [(SHARED / "data" / "tinystories" / "TinyStories-train.head197k.txt").read_text()[:6000]]
    stages: list[str] = []
    result = compress(tiny_model, "svd_llm", 0.2, tokenizer=tiny_tokenizer, calibration=texts, samples=4,
                      seq_len=64, evaluation=False, device="cpu",
                      progress=lambda stage, fraction, message: stages.append(stage))
    assert result.model is tiny_model  # compressed in place
    assert stages[0] == "load" and "compress" in stages
    assert result.report["source"]["kind"] == "memory" and result.report["metrics"]["weight_bytes_before"] > 0
    assert abs(result.report["achieved_ratio"] - 0.2) <= 0.01
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    with torch.no_grad():
        expected = tiny_model(ids).logits
    result.save(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(load_compressed(tmp_path / "out").model(ids).logits, expected)


def test_calibration_file_named_directly_and_bad_inputs(tmp_path: Path, tinystories_dir: Path) -> None:
    data = tmp_path / "mine.jsonl"
    text = (SHARED / "data" / "tinystories" / "TinyStories-train.head197k.txt").read_text()[:8000]
    data.write_text("\n".join(json.dumps({"text": p}) for p in text.split("\n\n")))
    result = compress(str(tinystories_dir), "asvd", 0.2, calibration=data, samples=2, seq_len=64,
                      evaluation=False, device="cpu")
    assert result.report["calibration"]["file"] == str(data.resolve())
    with pytest.raises(InvalidInput, match="neither a named corpus"):
        compress(str(tinystories_dir), "asvd", 0.2, calibration="no-such-corpus", device="cpu")
    with pytest.raises(InvalidInput, match="needs its tokenizer"):
        compress(torch.nn.Linear(2, 2), "svd", 0.2)
