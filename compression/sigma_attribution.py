"""Gradient x sigma attribution of singular components (GRASP, methods.md section 1.2).

A target linear W = U diag(sigma) V^T is temporarily replaced by ``SigmaLinear``, whose only
trainable tensor is the vector s (initialised to sigma). Backpropagating the next-token loss gives
dL/ds_i = u_i^T G v_i with G = dL/dW, summed (signed) over calibration windows. The Taylor score
of dropping component i is |sigma_i * sum_b g_{b,i}|.

With a whitening factor L (L L^T = X X^T of the module's calibration inputs, as in SVD-LLM) the
decomposition is taken in the activation-aware basis instead: W L = U diag(sigma) V_w^T, i.e.
W = U diag(sigma) (V_w^T L^-1). Every component still maps to one rank-1 term of W, so the same
attribution and the same two-factor storage apply; only the basis differs (option basis="whitened").

Correctness notes (upstream bugs not copied): the labels are the inputs themselves (the model
shifts once), the bias is kept in the surrogate forward, and any leading input shape works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compression.hooks import calibration_mode
from compression.linalg import svd, unwhiten, whitened_svd
from compression.prefix_cache import PrefixCache
from compression.surgery import replace_module
from compression.trainable import trainable_only


class SigmaLinear(nn.Module):
    """y = x (U diag(s) V^T)^T + b, with only ``s`` requiring grad (U, V^T, b are buffers).

    U and V^T are kept in the weight's dtype (bf16 on GPU for memory); s and its gradient are fp32.
    """

    def __init__(self, linear: nn.Linear, chol: torch.Tensor | None = None) -> None:
        super().__init__()
        weight = linear.weight
        if chol is None:
            u, s, vh = svd(weight)  # float32 thin SVD, sign-fixed
        else:  # W = U diag(s) (V_w^T L^-1): rows of vh are no longer orthonormal, W is still exact.
            # float64 throughout: L^-1 amplifies float32 rounding by L's condition number.
            u, s, vh_w = whitened_svd(weight, chol.to(weight.device), dtype=torch.float64)
            vh = unwhiten(vh_w, chol.to(weight.device))
            u, s, vh = u.float(), s.float(), vh.float()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.register_buffer("u", u.to(weight.dtype), persistent=False)
        self.register_buffer("vh", vh.to(weight.dtype), persistent=False)
        self.register_buffer("sigma", s.clone(), persistent=False)
        self.register_buffer(
            "bias", None if linear.bias is None else linear.bias.detach().clone(), persistent=False
        )
        self.s = nn.Parameter(s.clone())

    def factors(self, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(out factor U_k sqrt(sigma_k), in factor sqrt(sigma_k) Vh_k) of the kept components, ORIGINAL sigma."""
        keep = keep.to(self.sigma.device)
        root = self.sigma[keep].sqrt()
        return self.u[:, keep].float() * root, root.unsqueeze(1) * self.vh[keep].float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Factored as ((x V) * s) U^T: tokens * (m + n) * r flops instead of rebuilding the m x n
        # weight (m * n * r) every pass; the s product (and so dL/ds) is taken in fp32.
        coefficients = F.linear(x, self.vh).float() * self.s
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(coefficients.to(x.dtype), self.u, bias)


@dataclass
class SigmaGradients:
    """Per-module sums over windows of g_b = dL/ds (signed) and of |sigma * g_b|."""

    signed: torch.Tensor
    abs_taylor: torch.Tensor
    sigma: torch.Tensor
    windows: int = 0

    def scores(self, metric: str = "taylor", aggregate: str = "signed_sum") -> torch.Tensor:
        """Importance per component (float32, CPU)."""
        if metric not in ("taylor", "gradient"):
            raise ValueError(f"metric must be 'taylor' or 'gradient', got {metric!r}")
        if aggregate == "signed_sum":
            g = self.signed
            return (self.sigma * g).abs() if metric == "taylor" else g.abs()
        if aggregate == "abs_sum":
            if metric == "gradient":
                raise ValueError("aggregate='abs_sum' is defined for the taylor metric only")
            return self.abs_taylor.clone()
        raise ValueError(f"aggregate must be 'signed_sum' or 'abs_sum', got {aggregate!r}")


@contextmanager
def sigma_surrogates(
    model: nn.Module, linears: dict[str, nn.Linear], chols: dict[str, torch.Tensor] | None = None
) -> Iterator[dict[str, SigmaLinear]]:
    """Swap each named linear for its SigmaLinear (whitened by chols[name] when given); the original
    linears are put back on exit."""
    swapped: dict[str, SigmaLinear] = {}
    try:
        for name, linear in linears.items():
            surrogate = SigmaLinear(linear, None if chols is None else chols[name])
            replace_module(model, name, surrogate)
            swapped[name] = surrogate
        yield swapped
    finally:
        for name in swapped:
            replace_module(model, name, linears[name])


def next_token_loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting token t+1 from tokens <= t (labels = inputs; HF shifts once)."""
    return model(input_ids=input_ids, labels=input_ids, use_cache=False).loss


def accumulate_sigma_gradients(
    model: nn.Module,
    surrogates: dict[str, SigmaLinear],
    calibration: torch.Tensor,
    device: torch.device,
    progress: Callable[[float, str], None] | None = None,
    check_stop: Callable[[], None] | None = None,
    prefix: PrefixCache | None = None,
) -> dict[str, SigmaGradients]:
    """Backpropagate the loss of each calibration window (batch size 1) and sum dL/ds per module.

    On CUDA the forward/backward runs under bf16 autocast; the sums are always float32. With
    ``prefix`` (built on these same windows) the unchanged bottom layers are not recomputed.
    """
    if calibration.dim() != 2 or calibration.shape[0] < 1:
        raise ValueError(f"calibration must be a LongTensor [n >= 1, seq_len], got {tuple(calibration.shape)}")
    sums = {
        name: SigmaGradients(
            signed=torch.zeros_like(m.sigma, dtype=torch.float32, device="cpu"),
            abs_taylor=torch.zeros_like(m.sigma, dtype=torch.float32, device="cpu"),
            sigma=m.sigma.detach().float().cpu(),
        )
        for name, m in surrogates.items()
    }
    use_autocast = torch.device(device).type == "cuda"
    n = calibration.shape[0]
    if prefix is not None and len(prefix.inputs) not in (0, n):
        raise ValueError(f"the prefix cache holds {len(prefix.inputs)} windows, the calibration {n}")
    skip = prefix.active() if prefix is not None else nullcontext()
    sigmas = [surrogate.s for surrogate in surrogates.values()]
    with calibration_mode(model), trainable_only(model, sigmas), torch.enable_grad(), skip:
        for b in range(n):
            if check_stop is not None:
                check_stop()
            if prefix is not None:
                prefix.use(b)
            ids = calibration[b : b + 1].to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_autocast):
                loss = next_token_loss(model, ids)
            loss.backward()
            for name, surrogate in surrogates.items():
                grad = surrogate.s.grad
                if grad is None:  # the module did not influence the loss (cannot happen for a decoder)
                    raise RuntimeError(f"no gradient reached {name}")
                grad = grad.detach().float().cpu()
                acc = sums[name]
                acc.signed += grad
                acc.abs_taylor += (acc.sigma * grad).abs()
                acc.windows += 1
                surrogate.s.grad = None  # fresh tensor next window: no aliasing (pitfall 1.8.7)
            if progress is not None:
                progress((b + 1) / n, f"gradients window {b + 1}/{n}")
    return sums


def select_components(
    scores: torch.Tensor, *, rank: int | None = None, threshold: float | None = None
) -> torch.Tensor:
    """Indices (ascending) of the kept components: the top-`rank` scores, or the shortest prefix of
    the scores sorted descending whose sum reaches `threshold` of the total."""
    if (rank is None) == (threshold is None):
        raise ValueError("give exactly one of rank or threshold")
    order = torch.argsort(scores, descending=True, stable=True)
    if rank is not None:
        if not 1 <= rank <= scores.numel():
            raise ValueError(f"rank must be between 1 and {scores.numel()}, got {rank}")
        keep = order[:rank]
    else:
        assert threshold is not None
        ranked = scores[order].double()
        total = ranked.sum()
        if total <= 0:  # no signal at all: keep the largest-score component only
            keep = order[:1]
        else:
            cumulative = torch.cumsum(ranked, 0) / total
            count = int(torch.searchsorted(cumulative, torch.tensor(threshold, dtype=torch.float64)).item()) + 1
            keep = order[: min(count, scores.numel())]
    return torch.sort(keep).values
