"""The artifact keeps the source checkpoint's dtype (export.dtype overrides) and reports its weight bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub.repocard import metadata_load
from safetensors import safe_open

from compression.run import RunSettings, run
from compression.specs import JobSpec


@pytest.fixture(scope="module")
def bf16_source(tmp_path_factory: pytest.TempPathFactory, tinystories_dir: Path) -> Path:
    """TinyStories-656K saved as bfloat16, as many hub checkpoints are."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("models") / "tinystories-bf16"
    model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tinystories_dir).save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# a source card\n")
    return folder


def _run(source: Path, out: Path, data_dir: Path, **export: object) -> dict:
    spec = JobSpec.model_validate({
        "model": str(source), "method": "svd", "target_ratio": 0.2, "device": "cpu",
        "evaluation": {"enabled": False}, "export": export,
    })
    settings = RunSettings(model_roots=(source.parent,), data_dir=data_dir)
    return run(spec, out, settings=settings).report


def _stored_dtypes(folder: Path) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        return {fh.get_slice(k).get_dtype() for k in fh.keys()}


def test_bf16_source_gives_bf16_artifact_smaller_by_the_removed_share(bf16_source, data_dir, tmp_path):
    report = _run(bf16_source, tmp_path / "out", data_dir)
    out = tmp_path / "out"
    assert _stored_dtypes(out) == {"BF16"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert report["source"]["dtype"] == "bfloat16"

    before, after = report["metrics"]["weight_bytes_before"], report["metrics"]["weight_bytes_after"]
    assert before == (bf16_source / "model.safetensors").stat().st_size
    assert after == (out / "model.safetensors").stat().st_size
    removed_bytes = 1 - after / before
    assert removed_bytes == pytest.approx(report["achieved_ratio_total"], abs=0.02)
    assert report["achieved_ratio_total"] > 0.05  # the check above compares real shrinkage, not two zeros
    assert metadata_load(out / "README.md")["license"] == "mit"  # the source card's license travels
    recorded = json.loads((out / "compression.json").read_text())["metrics"]
    assert (recorded["weight_bytes_before"], recorded["weight_bytes_after"]) == (before, after)


def test_export_dtype_overrides_the_source_dtype(bf16_source, data_dir, tmp_path):
    report = _run(bf16_source, tmp_path / "out", data_dir, dtype="float32")
    assert _stored_dtypes(tmp_path / "out") == {"F32"}
    assert report["metrics"]["weight_bytes_after"] > report["metrics"]["weight_bytes_before"]
