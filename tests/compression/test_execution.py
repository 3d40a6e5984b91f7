"""Layer-by-layer (sequential) execution gives what resident execution gives, and resumes.

Every layer-wise method on TinyStories-656K, resident vs sequential (offload cpu and disk): same
ranks / removed layers, same perplexities, logits of the two artifacts within 1e-4 relative.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from compression.errors import Cancelled, InvalidInput
from compression.export import load_compressed
from compression.run import RunSettings, run
from compression.specs import JobSpec

RESIDENT = {"mode": "resident"}
SEQUENTIAL_DISK = {"mode": "sequential", "offload": "disk"}
SEQUENTIAL_CPU = {"mode": "sequential", "offload": "cpu"}

CASES = [
    ("svd", {}, 0.3),
    ("asvd", {}, 0.3),
    ("svd_llm", {}, 0.3),
    ("svd_llm", {"update": True, "update_samples": 2}, 0.3),
    ("shortgpt", {}, 0.5),
]


def spec(method: str, options: dict[str, Any], ratio: float, execution: dict[str, str],
         model: str = "TinyStories-656K") -> JobSpec:
    return JobSpec.model_validate(dict(
        model=model, method=method, target_ratio=ratio, device="cpu", options=options, execution=execution,
        calibration={"source": "tinystories", "samples": 4, "seq_len": 64},
        evaluation={"corpus": "tinystories", "seq_len": 128, "max_windows": 2},
    ))


@pytest.fixture(scope="module")
def settings(shared_dir: Path) -> RunSettings:
    return RunSettings(model_roots=(shared_dir / "models",), data_dir=shared_dir / "data",
                       data_roots=(shared_dir / "data",))


def logits(folder: Path, tokens: torch.Tensor) -> torch.Tensor:
    model = load_compressed(folder).model
    with torch.no_grad():
        return model(input_ids=tokens).logits


def assert_same_model(a: Any, b: Any, tokens: torch.Tensor) -> None:
    details_a, details_b = a.report["method_details"], b.report["method_details"]
    for key in ("ranks", "removed_layers"):
        assert details_a.get(key) == details_b.get(key), key
    assert a.report["params_after"] == b.report["params_after"]
    assert a.report["metrics"]["ppl_before"] == pytest.approx(b.report["metrics"]["ppl_before"], rel=1e-5)
    assert a.report["metrics"]["ppl_after"] == pytest.approx(b.report["metrics"]["ppl_after"], rel=1e-5)
    la, lb = logits(a.out_dir, tokens), logits(b.out_dir, tokens)
    assert (la - lb).abs().max() <= 1e-4 * la.abs().max()


@pytest.mark.parametrize(("method", "options", "ratio"), CASES, ids=[f"{c[0]}{'-update' if c[1] else ''}" for c in CASES])
def test_sequential_equals_resident_on_tinystories(method, options, ratio, settings, tmp_path, tiny_calib) -> None:
    resident = run(spec(method, options, ratio, RESIDENT), tmp_path / "resident", settings=settings)
    disk = run(spec(method, options, ratio, SEQUENTIAL_DISK), tmp_path / "disk", settings=settings)
    assert (disk.report["execution"]["mode"], disk.report["execution"]["offload"]) == ("sequential", "disk")
    assert resident.report["execution"]["mode"] == "resident"
    assert_same_model(resident, disk, tiny_calib[:2])
    if method == "svd_llm" and not options:  # offload cpu takes the other branch of every put-away and restore
        cpu = run(spec(method, options, ratio, SEQUENTIAL_CPU), tmp_path / "cpu", settings=settings)
        assert_same_model(resident, cpu, tiny_calib[:2])


@pytest.mark.parametrize("method", ["grasp", "soco"])
def test_methods_not_yet_layerwise_refuse_sequential(method, settings, tmp_path) -> None:
    with pytest.raises(InvalidInput, match="does not run layer by layer yet"):
        run(spec(method, {}, 0.2, SEQUENTIAL_DISK), tmp_path / "out", settings=settings)
    assert not (tmp_path / "out").exists()


def test_rerun_with_the_work_folder_resumes_after_the_last_finished_layer(settings, tmp_path) -> None:
    """Sequential here; resident resume runs in the worker's SIGKILL test (tests/service/test_worker_faults.py)."""
    job = spec("svd_llm", {"update": True, "update_samples": 2}, 0.3, SEQUENTIAL_DISK)
    whole = run(job, tmp_path / "whole", settings=settings)
    resumable = RunSettings(**{**settings.__dict__, "work_dir": tmp_path / "work"})
    messages: list[str] = []

    def stop_after_first_layer() -> bool:
        return any(m.startswith("layer 1/2:") for m in messages)

    with pytest.raises(Cancelled):
        run(job, tmp_path / "first", settings=resumable, progress=lambda stage, fraction, message: messages.append(message), should_stop=stop_after_first_layer)
    assert not (tmp_path / "first").exists()
    messages.clear()
    second = run(job, tmp_path / "second", settings=resumable, progress=lambda stage, fraction, message: messages.append(message))
    assert any(m.startswith("resumed at layer 2 of 2") for m in messages), messages
    assert not any(m.startswith("layer 1/2:") for m in messages), "layer 1 ran again"
    assert second.report["method_details"] == whole.report["method_details"]
    assert (second.out_dir / "model.safetensors").read_bytes() == (whole.out_dir / "model.safetensors").read_bytes()


def test_work_folder_of_another_spec_is_not_reused(settings, tmp_path) -> None:
    resumable = RunSettings(**{**settings.__dict__, "work_dir": tmp_path / "work"})
    run(spec("svd", {}, 0.3, SEQUENTIAL_DISK), tmp_path / "a", settings=resumable)
    messages: list[str] = []
    run(spec("svd", {}, 0.4, SEQUENTIAL_DISK), tmp_path / "b", settings=resumable, progress=lambda stage, fraction, message: messages.append(message))
    assert not any(m.startswith("resumed") for m in messages)


@pytest.mark.parametrize(("method", "ratio"), [("svd", 0.2), ("shortgpt", 0.2)])
def test_sequential_equals_resident_on_smollm2(method, ratio, shared_dir, tmp_path, tiny_calib) -> None:
    """30 layers: the streams, rotary positions and removal bookkeeping over a real depth."""
    from tests.support.smollm2 import smollm2_dir

    folder = smollm2_dir()
    settings = RunSettings(model_roots=(folder.parent,), data_dir=shared_dir / "data")

    def job(execution: dict[str, str]) -> JobSpec:
        return JobSpec.model_validate(dict(
            model=folder.name, method=method, target_ratio=ratio, device="cpu", execution=execution,
            calibration={"source": "tinystories", "samples": 2, "seq_len": 32},
            evaluation={"corpus": "tinystories", "seq_len": 64, "max_windows": 1}))

    resident = run(job(RESIDENT), tmp_path / "resident", settings=settings)
    disk = run(job(SEQUENTIAL_DISK), tmp_path / "disk", settings=settings)
    assert_same_model(resident, disk, tiny_calib[:1, :32])
