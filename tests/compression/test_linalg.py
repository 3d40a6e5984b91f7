"""linalg on small matrices, checked against float64 references."""

from __future__ import annotations

import math

import pytest
import torch

from compression.errors import InvalidInput
from compression.linalg import (
    cholesky_whitening,
    rank_for_ratio,
    svd,
    truncate,
    unwhiten,
    whitened_factors,
    whitened_svd,
)


def _random(m: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("m", "n", "ratio", "expected"),
    [
        (128, 128, 0.2, 51),  # 0.8 * 128*128/256 = 51.2
        (64, 128, 0.2, 34),  # GQA k/v: 0.8 * 8192/192 = 34.13
        (128, 64, 0.4, 25),  # 0.6 * 8192/192 = 25.6
        (384, 128, 0.4, 57),  # 0.6 * 49152/512 = 57.6
        (4096, 4096, 0.2, 1638),
        (4096, 11008, 0.2, 2388),
        (4, 4, 0.99, 1),  # clamped to 1
    ],
)
def test_rank_for_ratio(m: int, n: int, ratio: float, expected: int) -> None:
    assert rank_for_ratio(m, n, ratio) == expected
    assert rank_for_ratio(m, n, ratio) == max(1, math.floor((1 - ratio) * m * n / (m + n) + 1e-9))


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_rank_for_ratio_rejects_ratio_outside_open_interval(ratio: float) -> None:
    with pytest.raises(InvalidInput, match="between 0 and 1"):
        rank_for_ratio(8, 8, ratio)


def test_full_rank_svd_reconstructs() -> None:
    w = _random(12, 7)
    u, s, vh = svd(w, dtype=torch.float64)
    torch.testing.assert_close(u @ torch.diag(s) @ vh, w.double(), atol=1e-12, rtol=1e-12)
    out_f, in_f = truncate(u, s, vh, 7)
    torch.testing.assert_close(out_f @ in_f, w.double(), atol=1e-12, rtol=1e-12)


def test_svd_is_deterministic_and_sign_fixed() -> None:
    w = _random(20, 9)
    a, b = svd(w), svd(w.clone())
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    u = a[0]
    assert (u.gather(0, u.abs().argmax(0, keepdim=True)) > 0).all()


@pytest.mark.parametrize("k", [1, 3, 6])
def test_truncation_error_is_dropped_singular_values(k: int) -> None:
    w = _random(10, 8, seed=1).double()
    u, s, vh = svd(w, dtype=torch.float64)
    out_f, in_f = truncate(u, s, vh, k)
    err = torch.linalg.matrix_norm(w - out_f @ in_f)
    ref_s = torch.linalg.svdvals(w)
    assert err.item() == pytest.approx(ref_s[k:].pow(2).sum().sqrt().item(), rel=1e-10)


def test_cholesky_whitening_positive_definite() -> None:
    x = _random(6, 50, seed=2).double()
    gram = x @ x.T
    chol = cholesky_whitening(gram)
    assert chol.dtype == torch.float64
    torch.testing.assert_close(chol @ chol.T, gram)
    assert torch.equal(chol, torch.tril(chol))


def test_cholesky_whitening_singular_gram_is_shifted() -> None:
    x = _random(8, 3, seed=3).double()  # rank 3 < 8: singular, Cholesky alone fails
    gram = x @ x.T
    assert torch.linalg.cholesky_ex(gram).info.item() != 0
    chol = cholesky_whitening(gram)
    assert torch.isfinite(chol).all()
    # the shift is tiny: L L^T stays close to the original Gram matrix
    assert torch.linalg.matrix_norm(chol @ chol.T - gram) < 1e-3 * torch.linalg.matrix_norm(gram)


def test_whitened_svd_and_unwhiten() -> None:
    w = _random(5, 6, seed=4)
    x = _random(6, 40, seed=5).double()
    chol = cholesky_whitening(x @ x.T)
    u, s, vh = whitened_svd(w, chol, dtype=torch.float64)
    torch.testing.assert_close(u @ torch.diag(s) @ vh, w.double() @ chol)
    torch.testing.assert_close(unwhiten(vh, chol) @ chol, vh)
    out_f, in_f, _ = whitened_factors(w, chol, 5)
    torch.testing.assert_close((out_f @ in_f).double(), w.double(), atol=1e-4, rtol=1e-4)


def test_bad_shapes_are_reported() -> None:
    with pytest.raises(InvalidInput, match="2-D"):
        svd(torch.zeros(3))
    with pytest.raises(InvalidInput, match="square"):
        cholesky_whitening(torch.zeros(3, 4))
    u, s, vh = svd(_random(4, 4))
    with pytest.raises(InvalidInput, match="rank must be between 1 and 4"):
        truncate(u, s, vh, 5)
