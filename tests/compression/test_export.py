"""Export -> reload gives the same logits three ways; sha256 entries are right; no half-written folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from compression.architectures import arch_for, iter_target_linears
from compression.errors import InvalidInput
from compression.export import export, load_compressed
from compression.lowrank import LowRankLinear
from compression.surgery import remove_layers, replace_module

REPORT = {"method": "test", "target_ratio": 0.0}


def _factorize_some(model: torch.nn.Module) -> None:
    arch = arch_for(model.config.model_type)
    for name, _, short, linear in list(iter_target_linears(model, arch)):
        if short in ("q_proj", "k_proj", "down_proj"):
            replace_module(model, name, LowRankLinear.from_linear(linear, max(1, min(linear.weight.shape) // 3)))


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def test_low_rank_export_reloads_identically_three_ways(tiny_model, tiny_tokenizer, tiny_calib, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _factorize_some(tiny_model)
    ids = tiny_calib[:2, :64]
    expected = _logits(tiny_model, ids)
    out = tmp_path / "artifact"
    files = export(tiny_model, tiny_tokenizer, out, report=REPORT)

    config = json.loads((out / "config.json").read_text())
    assert config["spectra_low_rank"]["model.layers.0.self_attn.q_proj"] == tiny_model.model.layers[0].self_attn.q_proj.rank
    assert len(config["spectra_low_rank"]) == 2 * 3
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_spectra.SpectraLlamaForCausalLM"
    assert (out / "modeling_spectra.py").is_file()
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
    assert "model.layers.1.mlp.down_proj.in_proj.weight" in keys
    assert "model.layers.1.mlp.down_proj.weight" not in keys

    ours = load_compressed(out).model
    assert torch.equal(_logits(ours, ids), expected)
    assert config["model_type"] == "spectra_llama"  # unknown to transformers: plain loading cannot go wrong
    for plain in ({}, {"trust_remote_code": False}):
        with pytest.raises(ValueError, match="trust_remote_code=True"):
            AutoModelForCausalLM.from_pretrained(out, **plain)
    remote = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, dtype=torch.float32).eval()
    assert type(remote).__name__ == "SpectraLlamaForCausalLM"
    assert AutoTokenizer.from_pretrained(out, trust_remote_code=True)("Once upon")["input_ids"]
    assert torch.equal(_logits(remote, ids), expected)
    assert {name for name, _, _ in files} >= {"model.safetensors", "config.json", "compression.json"}
    assert not (tmp_path / "artifact.partial").exists()


def test_dense_export_loads_without_custom_code(tiny_model, tiny_tokenizer, tiny_calib, tmp_path):
    from transformers import AutoModelForCausalLM

    _factorize_some(tiny_model)
    ids = tiny_calib[:2, :64]
    expected = _logits(tiny_model, ids)
    out = tmp_path / "dense"
    export(tiny_model, tiny_tokenizer, out, report=REPORT, dense=True)
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and "spectra_low_rank" not in config
    plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    torch.testing.assert_close(_logits(plain, ids), expected, atol=1e-4, rtol=1e-4)


def test_layer_removal_exports_plain_model(tiny_model, tiny_tokenizer, tiny_calib, tmp_path):
    from transformers import AutoModelForCausalLM

    remove_layers(tiny_model, arch_for("llama"), [0])
    ids = tiny_calib[:2, :64]
    expected = _logits(tiny_model, ids)
    out = tmp_path / "short"
    export(tiny_model, tiny_tokenizer, out, report=REPORT)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert not (out / "modeling_spectra.py").exists()
    for loaded in (AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval(), load_compressed(out).model):
        assert len(loaded.model.layers) == 1
        assert torch.equal(_logits(loaded, ids), expected)


def test_sha256_entries_and_sharding(tiny_model, tiny_tokenizer, tmp_path):
    out = tmp_path / "sharded"
    files = export(tiny_model, tiny_tokenizer, out, report=REPORT, max_shard_bytes=600_000)
    recorded = json.loads((out / "compression.json").read_text())["files"]
    assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("model-*.safetensors"))) > 1
    assert set(recorded) == {p.name for p in out.iterdir()} - {"compression.json"}
    for name, size, sha in files:
        data = (out / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha)
        if name != "compression.json":
            assert recorded[name] == {"size": size, "sha256": sha}
    ids = torch.arange(1, 33).unsqueeze(0)
    assert torch.equal(_logits(load_compressed(out).model, ids), _logits(tiny_model, ids))
    # tampering is caught by our loader
    (out / "config.json").write_text((out / "config.json").read_text() + " ")
    with pytest.raises(InvalidInput, match="sha256"):
        load_compressed(out)


def test_refuses_existing_output_folder(tiny_model, tiny_tokenizer, tmp_path: Path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(InvalidInput, match="already exists"):
        export(tiny_model, tiny_tokenizer, tmp_path / "taken", report=REPORT)
