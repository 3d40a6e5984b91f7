"""Every registered method through the same checks, via run() on the real TinyStories-656K."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compression import methods
from compression.errors import Cancelled
from compression.evaluation import perplexity
from compression.export import load_compressed
from compression.run import STAGES, RunSettings, run
from compression.specs import JobSpec

# A ratio each method can reach on a 2-layer model (shortgpt removes whole layers: 1 of 2).
RATIOS = {"shortgpt": 0.5}
DEFAULT_RATIO = 0.3
REQUIRED = ("method", "target_ratio", "achieved_ratio", "achieved_ratio_total", "params_before", "params_after",
            "metrics", "protocol", "spec", "versions", "files")


def _spec(method: str) -> JobSpec:
    return JobSpec(
        model="TinyStories-656K", method=method, target_ratio=RATIOS.get(method, DEFAULT_RATIO), device="cpu",
        calibration={"source": "tinystories", "samples": 4, "seq_len": 128},
        evaluation={"corpus": "tinystories", "seq_len": 128, "max_windows": 4},
    )


@pytest.fixture(scope="module")
def settings(shared_dir: Path) -> RunSettings:
    return RunSettings(model_roots=(shared_dir / "models",), data_dir=shared_dir / "data",
                       data_roots=(shared_dir / "data",))


@pytest.mark.parametrize("method", methods.available())
def test_method_contract(method: str, settings: RunSettings, tmp_path: Path) -> None:
    seen: list[str] = []
    out = tmp_path / "artifact"
    rng_before = torch.random.get_rng_state()
    result = run(_spec(method), out, settings=settings,
                 progress=lambda stage, fraction, message: seen.append(stage) if stage not in seen else None)

    assert seen == list(STAGES)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "run() must not move the caller's RNG"
    on_disk = json.loads((out / "compression.json").read_text())
    for key in REQUIRED:
        assert key in on_disk, key
    report = result.report
    assert abs(report["achieved_ratio"] - report["target_ratio"]) <= 0.01
    assert 0 < report["achieved_ratio_total"] < report["achieved_ratio"]
    assert report["params_after"] < report["params_before"]
    metrics = report["metrics"]
    assert metrics["ppl_before"] == pytest.approx(on_disk["metrics"]["ppl_before"])
    assert 1 < metrics["ppl_before"] < metrics["ppl_after"]
    assert set(metrics["seconds"]) == set(STAGES) and metrics["peak_memory_bytes"] > 0
    assert on_disk["protocol"]["windows"] == 4 and on_disk["protocol"]["corpus"] == "tinystories"
    assert {name for name, _, _ in result.files} == {p.name for p in out.iterdir()}

    # The artifact is the compressed model: reloading reproduces ppl_after, identically three ways.
    from transformers import AutoModelForCausalLM

    ours = load_compressed(out).model
    custom = (out / "modeling_spectra.py").exists()
    theirs = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=custom, dtype=torch.float32).eval()
    ids = torch.arange(3, 67).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(ours(input_ids=ids).logits, theirs(input_ids=ids).logits)
    from compression.calibration import eval_tokens

    tokens = eval_tokens(load_compressed(out).tokenizer, "tinystories", settings.data_dir)
    assert perplexity(ours, tokens, 128, max_windows=4) == pytest.approx(metrics["ppl_after"], rel=1e-5)


@pytest.mark.parametrize("method", methods.available())
def test_method_honours_should_stop_between_layers(method: str, settings: RunSettings, tmp_path: Path) -> None:
    state = {"stop": False}
    finished: list[str] = []

    def progress(stage: str, fraction: float, message: str) -> None:
        if stage == "compress":
            state["stop"] = True  # ask to stop as soon as compression starts
            if fraction == 1.0:
                finished.append(stage)

    out = tmp_path / "artifact"
    with pytest.raises(Cancelled):
        run(_spec(method), out, settings=settings, progress=progress, should_stop=lambda: state["stop"])
    assert finished == [], f"{method} finished compressing instead of polling should_stop between layers"
    assert list(tmp_path.iterdir()) == []
