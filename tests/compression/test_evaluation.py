"""Perplexity protocol checked against hand computations and the shared model card."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compression.errors import InvalidInput
from compression.evaluation import peak_memory, perplexity, reset_peak_memory


class _Uniform(nn.Module):
    """Logits all equal: every token has probability 1/V, so perplexity must be exactly V."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False):  # type: ignore[no-untyped-def]
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab)})()


def test_uniform_logits_give_vocab_size() -> None:
    assert perplexity(_Uniform(50), torch.randint(0, 50, (1000,)), 100) == pytest.approx(50.0)


def test_matches_a_hand_computation_over_windows(tiny_model, tiny_heldout) -> None:
    seq_len, windows = 128, 3
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in range(windows):
            ids = tiny_heldout[w * seq_len : (w + 1) * seq_len].unsqueeze(0)
            logp = torch.log_softmax(tiny_model(input_ids=ids).logits[0, :-1].double(), -1)
            nll -= logp.gather(1, ids[0, 1:, None]).sum().item()
            count += seq_len - 1
    expected = math.exp(nll / count)
    assert perplexity(tiny_model, tiny_heldout, seq_len, max_windows=windows) == pytest.approx(expected, rel=1e-5)
    # batching changes nothing
    assert perplexity(tiny_model, tiny_heldout, seq_len, max_windows=windows, batch_size=2) == pytest.approx(
        expected, rel=1e-5)


def test_tinystories_card_value(tiny_model, tiny_heldout) -> None:
    # models/README.md: 32.3 with windows of 512 (their 3,226 tokens vs our 3,233: same windows count, 6)
    assert perplexity(tiny_model, tiny_heldout, 512) == pytest.approx(32.3, rel=0.02)
    assert tiny_model.training is False


def test_bad_windows(tiny_model, tiny_heldout) -> None:
    with pytest.raises(InvalidInput, match="exceeds the model's maximum of 512"):
        perplexity(tiny_model, tiny_heldout, 1024)
    with pytest.raises(InvalidInput, match="fewer than one window"):
        perplexity(tiny_model, tiny_heldout[:100], 128)


def test_peak_memory_sees_an_allocation() -> None:
    cpu = torch.device("cpu")
    reset_peak_memory(cpu)
    base = peak_memory(cpu)["bytes"]
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB touched
    assert peak_memory(cpu)["bytes"] >= base + 60 * 2**20 - 1
    del block
