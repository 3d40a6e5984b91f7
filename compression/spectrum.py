"""A linear layer whose singular spectrum carries a learnable score per component (SoCo).

W'(s) = U diag(sigma * s * mask) B with U [m, r], sigma [r], B [r, n] frozen buffers and only the
score s trainable. B is V^T (plain basis) or V_w^T L^-1 (the whitened basis of SVD-LLM, where W L =
U diag(sigma) V_w^T). The forward never forms W': x -> ((x B^T) * (sigma s)) U^T + bias, so memory
and compute stay those of a rank-r factorization and gradients reach only s.

Also here: the global budgeted selection of components by score, and the export of the survivors as
LowRankLinear factors with the learned scale folded in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from compression.linalg import svd, unwhiten, whitened_svd
from compression.lowrank import LowRankLinear


class ScoredSpectrumLinear(nn.Module):
    def __init__(
        self, out_basis: torch.Tensor, sigma: torch.Tensor, in_basis: torch.Tensor, bias: torch.Tensor | None
    ) -> None:
        super().__init__()
        self.out_features, rank = out_basis.shape
        self.in_features = in_basis.shape[1]
        self.register_buffer("out_basis", out_basis.contiguous())  # U [m, r]
        self.register_buffer("sigma", sigma.contiguous())  # [r]
        self.register_buffer("in_basis", in_basis.contiguous())  # B [r, n]
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("mask", torch.ones(rank, dtype=sigma.dtype, device=sigma.device))
        self.score = nn.Parameter(torch.ones(rank, dtype=sigma.dtype, device=sigma.device))
        # When set, the module computes the original W (scores 1, nothing masked): the dense teacher.
        self.as_dense = False

    @classmethod
    def from_linear(cls, linear: nn.Linear, chol: torch.Tensor | None = None) -> ScoredSpectrumLinear:
        """Factor linear.weight plainly (chol None) or in the whitened basis of the Cholesky factor chol."""
        weight = linear.weight.detach()
        if chol is None:
            u, s, vh = svd(weight)
            in_basis = vh
        else:
            u, s, vh_w = whitened_svd(weight, chol.to(weight.device))
            in_basis = unwhiten(vh_w.to(torch.float64), chol.to(weight.device)).float()
        dtype = weight.dtype
        bias = linear.bias.detach() if linear.bias is not None else None
        return cls(u.to(dtype), s.to(dtype), in_basis.to(dtype), bias)

    @torch.no_grad()
    def restrict(self, index: torch.Tensor) -> None:
        """Keep only the components at `index` (in place): later steps cost what the candidates cost."""
        index = index.to(self.sigma.device).sort().values
        self.out_basis = self.out_basis[:, index].contiguous()
        self.in_basis = self.in_basis[index].contiguous()
        self.sigma = self.sigma[index].contiguous()
        self.mask = self.mask[index].contiguous()
        self.score = nn.Parameter(self.score.detach()[index].clone(), requires_grad=self.score.requires_grad)

    @property
    def full_rank(self) -> int:
        return self.sigma.numel()

    @property
    def cost(self) -> int:
        """Parameters one kept component costs once factorized: a column of U and a row of B."""
        return self.out_features + self.in_features

    @property
    def break_even_rank(self) -> int:
        """The largest rank that stores no more than the dense matrix: floor(mn / (m+n))."""
        return max(1, (self.out_features * self.in_features) // self.cost)

    def scale(self) -> torch.Tensor:
        if self.as_dense:
            return self.sigma
        return self.sigma * self.score * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.linear(x, self.in_basis) * self.scale()
        return F.linear(hidden, self.out_basis, self.bias)

    @torch.no_grad()
    def to_low_rank(self) -> LowRankLinear:
        """Survivors only (score * mask != 0), sqrt of the learned scale sigma * s split into both factors."""
        kept = torch.nonzero(self.score * self.mask != 0).flatten()
        if kept.numel() == 0:  # every matrix keeps at least one component; guard against a zero matrix anyway
            kept = self.sigma.argmax().reshape(1)
        root = (self.sigma[kept] * self.score[kept] * self.mask[kept]).abs().sqrt()
        out_factor = self.out_basis[:, kept] * root
        in_factor = root.unsqueeze(1) * self.in_basis[kept]
        return LowRankLinear.from_factors(out_factor, in_factor, self.bias, dtype=self.out_basis.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, full_rank={self.full_rank}"


@contextmanager
def dense_mode(modules: Sequence[ScoredSpectrumLinear]) -> Iterator[None]:
    """Temporarily make every scored module compute its original weight (the teacher)."""
    previous = [m.as_dense for m in modules]
    for m in modules:
        m.as_dense = True
    try:
        yield
    finally:
        for m, p in zip(modules, previous):
            m.as_dense = p


def capped_params(modules: Sequence[ScoredSpectrumLinear]) -> int:
    """Factorized parameters of the alive components, each matrix capped at its break-even rank."""
    total = 0
    for m in modules:
        alive = int(torch.count_nonzero(m.score.detach() * m.mask))
        total += min(alive, m.break_even_rank) * m.cost
    return total


@torch.no_grad()
def select_budget(
    modules: Sequence[ScoredSpectrumLinear], budget: int, importance: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Choose, globally, the components to keep: the highest importance whose summed cost fits `budget`.

    `importance[j][i]` is the estimated loss increase of removing component i of matrix j; the greedy
    fill ranks by importance per parameter (divided by the matrix's cost m+n). Every matrix keeps its
    best component; no matrix exceeds its break-even rank (a capped matrix is still factorized: beyond
    that rank the factors would cost more than the dense matrix). Ties (e.g. importance exactly 0)
    break toward the larger singular value. Returns one boolean keep-vector per module.
    """
    keys, owners, positions = [], [], []
    for j, (m, imp) in enumerate(zip(modules, importance)):
        per_param = imp.detach().float().clamp_min(0) / m.cost
        tiebreak = (m.sigma.float() / m.sigma.float().max().clamp_min(1e-30)) * 1e-30
        keys.append((per_param + tiebreak).cpu())
        owners.append(torch.full((m.full_rank,), j, dtype=torch.long))
        positions.append(torch.arange(m.full_rank))
    owner = torch.cat(owners).tolist()
    position = torch.cat(positions).tolist()
    order = torch.argsort(torch.cat(keys), descending=True, stable=True).tolist()

    keep = [torch.zeros(m.full_rank, dtype=torch.bool) for m in modules]
    ranks = [1] * len(modules)
    used = 0
    for j, k in enumerate(keys):  # every matrix keeps its best component first
        keep[j][int(torch.argmax(k))] = True
        used += modules[j].cost
    for flat in order:
        j, i = owner[flat], position[flat]
        m = modules[j]
        if keep[j][i] or ranks[j] >= m.break_even_rank or used + m.cost > budget:
            continue
        keep[j][i] = True
        ranks[j] += 1
        used += m.cost
    return keep


@torch.no_grad()
def apply_selection(modules: Sequence[ScoredSpectrumLinear], keep: Sequence[torch.Tensor], *, freeze: bool) -> None:
    """Zero the scores of the dropped components. freeze=True also masks them, for good (no gradient).

    A kept component whose score sat at exactly 0 restarts at 1, i.e. as its original component.
    """
    for m, k in zip(modules, keep):
        kept = k.to(device=m.score.device)
        m.score.copy_(torch.where(kept, torch.where(m.score > 0, m.score, torch.ones_like(m.score)),
                                  torch.zeros_like(m.score)))
        if freeze:
            m.mask.copy_(kept.to(m.mask.dtype))
