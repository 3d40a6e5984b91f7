"""LowRankLinear: a drop-in nn.Linear stored as two factors, y = out_proj(in_proj(x)).

Factor naming follows shared/reference/methods.md section 4: `<module>.in_proj` (k x n, no bias)
and `<module>.out_proj` (m x k, carrying the original bias). There is deliberately no `.weight`:
code that needs the dense matrix calls `to_dense()`.
"""

from __future__ import annotations

import torch
from torch import nn

from compression.errors import InvalidInput
from compression.linalg import svd, truncate


class LowRankLinear(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise InvalidInput(f"rank must be >= 1, got {rank}")
        self.in_features = in_features
        self.out_features = out_features
        self.in_proj = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.out_proj = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    @property
    def rank(self) -> int:
        return self.in_proj.out_features

    @property
    def bias(self) -> torch.Tensor | None:
        return self.out_proj.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.in_proj(x))

    @classmethod
    def from_factors(
        cls,
        out_factor: torch.Tensor,
        in_factor: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        dtype: torch.dtype | None = None,
    ) -> LowRankLinear:
        """Build from out_factor [m, k] and in_factor [k, n]; the result computes out @ in @ x + bias."""
        if out_factor.dim() != 2 or in_factor.dim() != 2 or out_factor.shape[1] != in_factor.shape[0]:
            raise InvalidInput(
                f"factors must be [m, k] and [k, n]; got {tuple(out_factor.shape)} and {tuple(in_factor.shape)}"
            )
        m, k = out_factor.shape
        n = in_factor.shape[1]
        dtype = dtype or (bias.dtype if bias is not None else out_factor.dtype)
        module = cls(n, m, k, bias=bias is not None, device=out_factor.device, dtype=dtype)
        with torch.no_grad():
            module.out_proj.weight.copy_(out_factor.to(dtype))
            module.in_proj.weight.copy_(in_factor.to(dtype))
            if bias is not None:
                module.out_proj.bias.copy_(bias.to(dtype))
        return module

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> LowRankLinear:
        """Plain truncated SVD of linear.weight (float32), sqrt(sigma) split into both factors."""
        u, s, vh = svd(linear.weight)
        out_factor, in_factor = truncate(u, s, vh, rank)
        bias = linear.bias.detach() if linear.bias is not None else None
        return cls.from_factors(out_factor, in_factor, bias, dtype=linear.weight.dtype)

    @torch.no_grad()
    def to_dense(self) -> nn.Linear:
        """The equivalent nn.Linear (product computed in float32, stored in the factors' dtype)."""
        dtype = self.in_proj.weight.dtype
        linear = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None,
            device=self.in_proj.weight.device, dtype=dtype,
        )
        product = self.out_proj.weight.float() @ self.in_proj.weight.float()
        linear.weight.copy_(product.to(dtype))
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
