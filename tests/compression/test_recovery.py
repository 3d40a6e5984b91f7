"""Recovery fine-tuning after GRASP, on the real TinyStories-656K model and the shared Alpaca subset."""

from __future__ import annotations

import pytest
import torch

from compression.architectures import arch_for
from compression.errors import InvalidInput
from compression.methods import CompressionContext, get
from compression.recovery import IGNORE, encode_example, load_alpaca, recover
from compression.specs import GraspOptions, RecoveryOptions

ARCH = arch_for("llama")


def test_prompt_is_masked_and_response_is_learned(tiny_tokenizer, data_dir):
    record = load_alpaca(data_dir / "alpaca" / "alpaca_data.subset5000.json")[0]
    ids, labels = encode_example(tiny_tokenizer, record, max_length=512)
    masked = sum(1 for y in labels if y == IGNORE)
    assert 0 < masked < len(ids) and len(ids) == len(labels)
    assert labels[masked:] == ids[masked:]
    assert tiny_tokenizer.decode(ids[:masked]).rstrip().endswith("Response:")  # the whole prompt, no more
    short_ids, short_labels = encode_example(tiny_tokenizer, record, max_length=16)
    assert len(short_ids) == 16 and all(y == IGNORE for y in short_labels)


def test_recovery_trains_only_the_replaced_layer_and_lowers_heldout_loss(
    tiny_model, tiny_tokenizer, tiny_calib, data_dir
):
    ctx = CompressionContext(
        model=tiny_model, tokenizer=tiny_tokenizer, arch=ARCH, options=GraspOptions(layers=[1]),
        target_ratio=0.3, calibration=tiny_calib[:2, :64], device=torch.device("cpu"), seed=0,
    )
    get("grasp").compress(ctx)
    frozen_before = {n: p.detach().clone() for n, p in tiny_model.named_parameters() if ".layers.1." not in n}
    tuned_before = {n: p.detach().clone() for n, p in tiny_model.named_parameters() if ".layers.1." in n}
    options = RecoveryOptions(enabled=True, max_steps=15, batch_size=8, micro_batch_size=4, max_length=96,
                              samples=400, eval_samples=32, learning_rate=2e-3, warmup_steps=2)
    result = recover(tiny_model, tiny_tokenizer, ARCH, [1], options,
                     data_dir / "alpaca" / "alpaca_data.subset5000.json", torch.device("cpu"), seed=0)
    assert result["steps"] == 15 and len(result["loss_curve"]) == 15
    assert result["heldout_loss_after"] < result["heldout_loss_before"]
    for n, p in tiny_model.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), f"{n} should be frozen"
    changed = [n for n, p in tiny_model.named_parameters() if n in tuned_before and not torch.equal(p, tuned_before[n])]
    assert any("in_proj" in n for n in changed) and any("layernorm" in n for n in changed)
    assert all(p.requires_grad for p in tiny_model.parameters()) and not tiny_model.training


def test_recovery_refuses_layers_without_factors(tiny_model, tiny_tokenizer, data_dir):
    with pytest.raises(InvalidInput, match="no low-rank factors"):
        recover(tiny_model, tiny_tokenizer, ARCH, [0], RecoveryOptions(enabled=True, max_steps=1),
                data_dir / "alpaca" / "alpaca_data.subset5000.json", torch.device("cpu"), seed=0)
    with pytest.raises(InvalidInput, match="does not exist"):
        load_alpaca(data_dir / "alpaca" / "missing.json")
