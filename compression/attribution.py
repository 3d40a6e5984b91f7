"""Block Influence (ShortGPT, arXiv 2403.03853): how much each decoder layer changes its input.

BI_i = 1 - mean_t cos(h_i,t, h_{i+1,t}), with h_i the input and h_{i+1} the output of layer i,
both taken with hooks on the layers, so the last layer's output is read before the final norm
(HF's output_hidden_states applies the norm to the last entry; methods.md section 1.8 item 3).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compression.architectures import ArchSpec, decoder_layers
from compression.hooks import calibration_mode, first_tensor, run_batches


def block_influence(
    model: nn.Module,
    arch: ArchSpec,
    calibration: torch.Tensor,
    device: torch.device | str,
    progress: Callable[[float, str], None] | None = None,
    batch_size: int = 1,
) -> torch.Tensor:
    """Tensor[L] (float64, CPU): 1 - cos(layer input, layer output), averaged over every token."""
    layers = decoder_layers(model, arch)
    n_layers = len(layers)
    sums = torch.zeros(n_layers, dtype=torch.float64)
    counts = torch.zeros(n_layers, dtype=torch.float64)
    inputs: dict[int, torch.Tensor] = {}
    handles = []

    def pre_hook_for(i: int):
        def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            inputs[i] = hidden.detach()

        return pre_hook

    def hook_for(i: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output) -> None:
            h_in = inputs.pop(i).float()
            h_out = first_tensor(output).detach().float()
            cos = torch.nn.functional.cosine_similarity(h_in, h_out, dim=-1)
            sums[i] += (1.0 - cos).double().sum().cpu()
            counts[i] += cos.numel()

        return hook

    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(pre_hook_for(i), with_kwargs=True))
        handles.append(layer.register_forward_hook(hook_for(i), with_kwargs=True))
    try:
        with calibration_mode(model):
            run_batches(model, calibration, device, batch_size, progress)
    finally:
        for handle in handles:
            handle.remove()
    if (counts == 0).any():
        raise RuntimeError("some decoder layers never ran while measuring block influence")
    return sums / counts
