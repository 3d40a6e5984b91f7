"""The preflight estimate: shapes from config.json alone, the formulas' main terms, and which mode `auto`
picks under memory limits. (Agreement with measured peaks is bench/estimate_check.py's job.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compression.estimate import RUNTIME_CPU, ModelShape, estimate, estimate_for_spec, read_shape
from compression.specs import JobSpec

REPO = Path(__file__).resolve().parents[2]
# TinyLlama-1.1B's shape (what bench/scale.py writes as a random checkpoint): 1,100,048,384 parameters.
TINYLLAMA = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
             "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000, "tie_word_embeddings": False,
             "torch_dtype": "bfloat16"}


def _spec(method: str = "svd_llm", **overrides: object) -> JobSpec:
    body: dict[str, object] = {"model": "big", "method": method, "target_ratio": 0.2, "device": "cpu",
                               "calibration": {"samples": 16, "seq_len": 256},
                               "evaluation": {"seq_len": 256, "max_windows": 4}}
    body.update(overrides)
    return JobSpec.model_validate(body)


def test_parameter_count_from_config_matches_the_real_model(tinystories_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    shape = read_shape(tinystories_dir)
    model = AutoModelForCausalLM.from_pretrained(tinystories_dir)
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.checkpoint_bytes == (tinystories_dir / "model.safetensors").stat().st_size
    assert ModelShape.from_config(TINYLLAMA).params == 1_100_048_384


def test_sharded_checkpoint_size_comes_from_the_index(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINYLLAMA))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 2_200_096_768},
                                                                       "weight_map": {}}))
    assert read_shape(tmp_path).checkpoint_bytes == 2_200_096_768 and read_shape(tmp_path).dtype == "bfloat16"


def test_config_without_shapes_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        ModelShape.from_config({"model_type": "llama"})


def test_resident_terms_follow_the_formulas() -> None:
    shape = ModelShape.from_config(TINYLLAMA)
    est = estimate(shape, _spec())
    resident = est.mode("resident")
    weights = shape.params * 4  # computed in float32 (the spec's dtype), whatever the checkpoint's
    assert est.weights_bytes == weights and resident.breakdown["weights"] == weights
    # SVD-LLM keeps one float64 Gram matrix per distinct input of every layer: q/k/v, o, gate/up, down.
    assert resident.breakdown["gram_matrices"] == 22 * (2048**2 * 3 + 5632**2) * 8
    assert resident.host_bytes == RUNTIME_CPU + resident.device_bytes  # on CPU the device is the host
    half = estimate(shape, _spec(dtype="bfloat16")).mode("resident").breakdown["weights"]
    assert half == weights // 2


def test_sequential_needs_one_layer_on_the_device_and_disk_offload_less_host() -> None:
    shape = ModelShape.from_config(TINYLLAMA)
    est = estimate(shape, _spec(device="cuda"), device="cuda")
    resident, on_cpu, on_disk = est.mode("resident"), est.mode("sequential", "cpu"), est.mode("sequential", "disk")
    assert on_cpu.device_bytes < resident.device_bytes / 4
    assert on_cpu.device_bytes == on_disk.device_bytes >= shape.layer_params * 4
    assert on_disk.host_bytes < on_cpu.host_bytes - shape.params * 4 // 2  # the dense model waits on disk
    assert on_disk.seconds > on_cpu.seconds  # reading the checkpoint once per pass


def test_auto_resolves_from_the_limits_and_refuses_with_the_numbers() -> None:
    shape = ModelShape.from_config(TINYLLAMA)
    unlimited = estimate(shape, _spec())
    assert unlimited.chosen == "resident"
    resident_host = unlimited.mode("resident").host_bytes
    streamed = estimate(shape, _spec(execution={"offload": "disk"}), host_limit=resident_host - 1)
    assert streamed.chosen == "sequential" and streamed.host_limit == resident_host - 1
    forced = estimate(shape, _spec(execution={"mode": "resident"}), host_limit=resident_host - 1)
    assert forced.chosen is None
    # The spec's own limit counts too, and the tighter of the two wins.
    tight = estimate(shape, _spec(execution={"max_host_memory": "64MiB"}), host_limit=2**40)
    assert tight.chosen is None and tight.host_limit == 64 * 2**20
    message = tight.refusal()
    assert "host 64.0 MiB" in message and "resident: device" in message and "sequential (offload disk)" in message


@pytest.mark.parametrize("method", ["svd", "asvd", "svd_llm", "shortgpt", "grasp", "soco"])
def test_every_method_has_an_estimate(method: str) -> None:
    shape = ModelShape.from_config(TINYLLAMA)
    est = estimate(shape, _spec(method))
    for mode in est.modes:
        assert mode.device_bytes > 0 and mode.host_bytes > mode.device_bytes // 2 and mode.seconds > 0
        assert mode.disk_bytes > 0
    json.dumps(est.as_dict())  # stored on the job as JSON


def test_estimate_for_a_local_model_reads_only_its_folder(tinystories_dir: Path) -> None:
    spec = _spec(model="TinyStories-656K")
    est = estimate_for_spec(spec, model_roots=[tinystories_dir.parent], cache_dir=None, cached_only=True)
    assert est is not None and est.params == 656_000 and est.device == "cpu"
    # A hub id that is not in the (empty) cache: nothing to read, so no estimate and no download.
    missing = estimate_for_spec(_spec(model="nobody/nothing"), model_roots=[], cache_dir=Path("/nonexistent"),
                                cached_only=True)
    assert missing is None


def test_estimate_stays_torch_free() -> None:
    code = ("import sys, compression.estimate, compression.sources; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
