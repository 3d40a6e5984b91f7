"""Pure tensor math shared by every SVD-based method: ranks, thin SVD, whitening.

No modules, no I/O. W is always [out, in] (the nn.Linear.weight layout) and activations X are
[in, tokens] in the notation of shared/reference/methods.md, so a linear computes W X.
"""

from __future__ import annotations

import math

import torch

from compression.errors import InvalidInput


def rank_for_ratio(m: int, n: int, ratio: float) -> int:
    """Rank k of an m x n matrix that removes `ratio` of its parameters: k = floor((1-r) m n / (m+n)), k >= 1.

    A rank-k factorization stores k (m + n) numbers instead of m n.
    """
    if m < 1 or n < 1:
        raise InvalidInput(f"matrix shape must be positive, got {m} x {n}")
    if not 0.0 < ratio < 1.0:
        raise InvalidInput(f"ratio must lie strictly between 0 and 1, got {ratio}")
    # The small epsilon keeps e.g. 0.6 * 64 * 64 / 128 = 19.2 from flooring to 19 on a 19.1999... float.
    k = math.floor((1.0 - ratio) * m * n / (m + n) + 1e-9)
    return max(1, k)


def svd(
    weight: torch.Tensor, *, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic thin SVD W = U diag(S) Vh in `dtype` (float32 default, float64 on request).

    torch.linalg.svd is a full (not randomized) decomposition; the sign of each singular pair is
    fixed so the largest-magnitude entry of every column of U is positive, making results
    reproducible across LAPACK builds and devices.
    """
    if weight.dim() != 2:
        raise InvalidInput(f"svd expects a 2-D matrix, got shape {tuple(weight.shape)}")
    u, s, vh = torch.linalg.svd(weight.detach().to(dtype), full_matrices=False)
    idx = u.abs().argmax(dim=0)
    signs = torch.sign(u.gather(0, idx.unsqueeze(0)).squeeze(0))
    signs[signs == 0] = 1
    return u * signs, s, vh * signs.unsqueeze(1)


def truncate(
    u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the top-`rank` triplets into (out factor U_k sqrt(S_k) [m,k], in factor sqrt(S_k) Vh_k [k,n])."""
    if not 1 <= rank <= s.numel():
        raise InvalidInput(f"rank must be between 1 and {s.numel()}, got {rank}")
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root.unsqueeze(1) * vh[:rank]


def cholesky_whitening(gram: torch.Tensor) -> torch.Tensor:
    """Lower-triangular L with L L^T = gram (= X X^T), computed in float64.

    As SVD-LLM does, a Gram matrix that is not positive definite (too few tokens, dead channels)
    is shifted by (-lambda_min + 1e-6) I and factorized again, so whitening always succeeds.
    """
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        raise InvalidInput(f"gram must be a square matrix, got shape {tuple(gram.shape)}")
    g = gram.detach().to(torch.float64)
    g = (g + g.T) / 2  # accumulated in pieces, so symmetrize rounding noise away
    chol, info = torch.linalg.cholesky_ex(g)
    if int(info) == 0:
        return chol
    lambda_min = torch.linalg.eigvalsh(g)[0]
    shift = (-lambda_min + 1e-6).clamp_min(1e-6)
    eye = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    chol, info = torch.linalg.cholesky_ex(g + shift * eye)
    if int(info) != 0:
        # A second, larger shift for pathological spectra where eigvalsh itself is inexact.
        chol = torch.linalg.cholesky(g + (shift + 1e-6 * g.diagonal().abs().max().clamp_min(1.0)) * eye)
    return chol


def whitened_svd(
    weight: torch.Tensor, chol: torch.Tensor, *, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of W L: returns (U, S, Vh_whitened) with W L = U diag(S) Vh_whitened.

    The product is formed in float64, then decomposed in `dtype`. Use `unwhiten` to map a
    truncated in factor back to the input space.
    """
    product = weight.detach().to(torch.float64) @ chol.to(torch.float64)
    return svd(product, dtype=dtype)


def unwhiten(in_factor_whitened: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """B = B_w L^-1 by a triangular solve (B L = B_w), never forming L^-1 explicitly."""
    b = torch.linalg.solve_triangular(
        chol.to(torch.float64), in_factor_whitened.to(torch.float64), upper=False, left=False
    )
    return b.to(in_factor_whitened.dtype)


def whitened_factors(
    weight: torch.Tensor, chol: torch.Tensor, rank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD-LLM truncation: (out factor U_k sqrt(S_k), in factor sqrt(S_k) V_k^T L^-1, all singular values)."""
    u, s, vh = whitened_svd(weight, chol)
    out_factor, in_w = truncate(u, s, vh, rank)
    return out_factor, unwhiten(in_w, chol), s
