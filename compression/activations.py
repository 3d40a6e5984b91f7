"""Per-module input statistics over calibration data: Gram matrices and per-channel magnitudes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compression.errors import InvalidInput
from compression.hooks import calibration_mode, first_tensor, forward_hooks, run_batches, stop_forward_after

STATS = ("gram", "abs_mean", "abs_max")


def collect_input_stats(
    model: nn.Module,
    modules: dict[str, nn.Module],
    calibration: torch.Tensor,
    device: torch.device | str,
    stat: str = "gram",
    batch_size: int = 1,
    progress: Callable[[float, str], None] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    stop_after: nn.Module | None = None,
    token_counts: dict[str, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Run the calibration windows and return, per module name, a statistic of its input x [.., n]:

    - "gram": sum over tokens of x x^T, [n, n]: each batch's product in float32, the sum over
      batches in `dtype` (pass dtype=torch.float64 for SVD-LLM);
    - "abs_mean": mean over tokens of |x_j|, [n];
    - "abs_max": max over tokens of |x_j|, [n].
    Accumulation happens in `dtype` (float32 by default) on `device`. With `stop_after`, each
    forward pass is cut short once that module (e.g. a decoder layer) has run, which makes
    layer-by-layer methods cost O(layer) instead of O(model) per step.

    A mixture-of-experts expert sees only the tokens routed to it, possibly none: pass `token_counts`
    (filled with every module's token count) to get the statistics of the modules that ran and decide
    about the others; without it a module that never ran is an error.
    """
    if stat not in STATS:
        raise InvalidInput(f"unknown activation statistic '{stat}'; choose one of {', '.join(STATS)}")
    if calibration is None or calibration.numel() == 0:
        raise InvalidInput("this method needs calibration data, but none was given")
    acc: dict[str, torch.Tensor] = {}
    tokens: dict[str, int] = {name: 0 for name in modules}

    def factory(name: str):
        def hook(module: nn.Module, args: tuple, output) -> None:
            x = first_tensor(args).detach()
            x = x.reshape(-1, x.shape[-1])
            tokens[name] += x.shape[0]
            if stat == "gram":
                # One batch's product in float32 (fast everywhere, as the SVD-LLM code does), the
                # running sum over batches in `dtype`, where float64 keeps many batches exact.
                x32 = x.float()
                update = (x32.T @ x32).to(dtype)
                acc[name] = update if name not in acc else acc[name].add_(update)
                return
            x = x.to(dtype)
            if stat == "abs_mean":
                update = x.abs().sum(dim=0)
                acc[name] = update if name not in acc else acc[name].add_(update)
            else:
                update = x.abs().amax(dim=0)
                acc[name] = update if name not in acc else torch.maximum(acc[name], update)

        return hook

    with calibration_mode(model), forward_hooks(modules, factory), stop_forward_after(stop_after):
        run_batches(model, calibration, device, batch_size, progress)
    missing = [name for name in modules if name not in acc]
    if token_counts is not None:
        token_counts.update(tokens)
    elif missing:
        raise RuntimeError(f"modules {missing} never ran during calibration; are they part of the model?")
    if stat == "abs_mean":
        return {name: value / tokens[name] for name, value in acc.items()}
    return acc
