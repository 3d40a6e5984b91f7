"""Every artifact carries a model card: HF front matter, method and ratios, evaluation with protocol, how to load."""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub.repocard import metadata_load

from compression.architectures import arch_for
from compression.export import export
from compression.model_card import render_card
from compression.surgery import remove_layers

REPORT = {
    "method": "svd_llm", "target_ratio": 0.2, "achieved_ratio": 0.2004, "achieved_ratio_total": 0.12,
    "params_before": 656000, "params_after": 577000,
    "source": {"kind": "hub", "ref": "raincandy-u/TinyStories-656K", "license": "apache-2.0"},
    "metrics": {"ppl_before": 24.5, "ppl_after": 31.25, "weight_bytes_before": 2626168, "weight_bytes_after": 2310000,
                "zeroshot_before": {"piqa": {"task": "piqa", "n": 20, "acc": 0.55, "acc_norm": 0.6}},
                "zeroshot_after": {"piqa": {"task": "piqa", "n": 20, "acc": 0.5, "acc_norm": 0.45}}},
    "protocol": {"corpus": "tinystories", "file": "tinystories/x.txt", "split": "validation", "seq_len": 128,
                 "windows": 2, "dtype": "float32", "formula": "exp(mean NLL)"},
    "zeroshot_protocol": {"tasks": ["piqa"], "limit": 20, "scoring": "lm-eval log-likelihood"},
}


def test_card_front_matter_and_sections(tmp_path: Path) -> None:
    card = render_card(REPORT, low_rank=True, files=["rank_allocation.png"])
    (tmp_path / "README.md").write_text(card)
    meta = metadata_load(tmp_path / "README.md")
    assert meta["base_model"] == "raincandy-u/TinyStories-656K" and meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "text-generation" and meta["library_name"] == "transformers"
    assert {"spectra", "svd_llm", "low-rank"} <= set(meta["tags"])
    assert "| perplexity (tinystories) | 24.5 | 31.25 |" in card
    assert "| piqa acc_norm | 0.6 | 0.45 |" in card
    assert "20.0%" in card and "20.0% of decoder-layer linears" in card
    assert "128 tokens" in card and "first 20 items" in card
    assert "![rank allocation](rank_allocation.png)" in card
    assert "trust_remote_code=True" in card and "load_compressed" in card


def test_layer_removal_artifact_card_says_plain_loading(tiny_model, tiny_tokenizer, tmp_path: Path) -> None:
    remove_layers(tiny_model, arch_for("llama"), [0])
    report = {**REPORT, "method": "shortgpt", "source": {"kind": "local", "ref": "/models/TinyStories-656K"},
              "protocol": None, "zeroshot_protocol": None}
    export(tiny_model, tiny_tokenizer, tmp_path / "out", report=report, dtype=torch.float32)
    meta = metadata_load(tmp_path / "out" / "README.md")
    assert "base_model" not in meta and "license" not in meta  # a local folder is no hub id; no card, no license
    card = (tmp_path / "out" / "README.md").read_text()
    assert "# TinyStories-656K, compressed with Spectra (shortgpt" in card
    assert "trust_remote_code" not in card and "Not evaluated" in card
