"""LowRankLinear: exact at full rank, keeps biases, round-trips through to_dense."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compression.errors import InvalidInput
from compression.lowrank import LowRankLinear


def _linear(n: int, m: int, bias: bool) -> nn.Linear:
    torch.manual_seed(0)
    linear = nn.Linear(n, m, bias=bias)
    if bias:
        nn.init.normal_(linear.bias)
    return linear


@pytest.mark.parametrize(("n", "m"), [(128, 128), (128, 64), (128, 384), (384, 128)])
@pytest.mark.parametrize("bias", [False, True])
def test_full_rank_equals_original(n: int, m: int, bias: bool) -> None:
    linear = _linear(n, m, bias)
    low = LowRankLinear.from_linear(linear, min(m, n))
    assert (low.in_features, low.out_features, low.rank) == (n, m, min(m, n))
    assert low.in_proj.weight.shape == (min(m, n), n) and low.out_proj.weight.shape == (m, min(m, n))
    assert low.in_proj.bias is None
    x = torch.randn(3, 5, n)
    torch.testing.assert_close(low(x), linear(x), atol=2e-5, rtol=1e-4)
    if bias:
        assert torch.equal(low.bias, linear.bias)


def test_gqa_kv_shape_truncation() -> None:
    linear = _linear(128, 64, bias=True)
    low = LowRankLinear.from_linear(linear, 34)
    assert low.rank == 34
    assert sum(p.numel() for p in low.parameters()) == 34 * (128 + 64) + 64
    assert not hasattr(low, "weight")
    s = torch.linalg.svdvals(linear.weight.double())
    err = torch.linalg.matrix_norm(low.to_dense().weight.double() - linear.weight.double())
    assert err.item() == pytest.approx(s[34:].pow(2).sum().sqrt().item(), rel=1e-4)


def test_to_dense_round_trip() -> None:
    linear = _linear(96, 48, bias=True)
    low = LowRankLinear.from_linear(linear, 20)
    dense = low.to_dense()
    x = torch.randn(4, 96)
    torch.testing.assert_close(dense(x), low(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense.bias, linear.bias)
    full = LowRankLinear.from_linear(linear, 48).to_dense()
    torch.testing.assert_close(full.weight, linear.weight, atol=1e-5, rtol=1e-5)


def test_from_factors_and_dtype() -> None:
    out_f, in_f, bias = torch.randn(6, 2), torch.randn(2, 5), torch.randn(6)
    low = LowRankLinear.from_factors(out_f, in_f, bias)
    x = torch.randn(5)
    torch.testing.assert_close(low(x), out_f @ in_f @ x + bias)
    half = LowRankLinear.from_linear(_linear(16, 8, bias=False).to(torch.bfloat16), 4)
    assert half.in_proj.weight.dtype == torch.bfloat16


def test_mismatched_factors_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"\[m, k\] and \[k, n\]"):
        LowRankLinear.from_factors(torch.randn(6, 2), torch.randn(3, 5))
