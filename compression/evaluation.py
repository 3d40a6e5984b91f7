"""Perplexity (the standard non-overlapping-window protocol), peak memory and stage timing."""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compression.errors import InvalidInput


def perplexity(
    model: nn.Module,
    tokens: torch.Tensor,
    seq_len: int,
    max_windows: int | None = None,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> float:
    """exp(mean NLL over every predicted token) on non-overlapping windows of ``seq_len``.

    The text is cut into floor(T / seq_len) windows (the tail is dropped, as in SparseGPT/SVD-LLM);
    each window predicts its tokens 1..seq_len-1 from the preceding ones, so the mean is over
    windows * (seq_len - 1) tokens (exact, not the x seq_len approximation).
    """
    if tokens.dim() != 1:
        raise InvalidInput(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit is not None and seq_len > limit:
        raise InvalidInput(f"evaluation.seq_len {seq_len} exceeds the model's maximum of {limit} positions")
    n_windows = tokens.numel() // seq_len
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows < 1:
        raise InvalidInput(
            f"the evaluation text has {tokens.numel()} tokens, fewer than one window of {seq_len}"
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    windows = tokens[: n_windows * seq_len].view(n_windows, seq_len)
    total_nll, total_count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n_windows, batch_size):
                batch = windows[start : start + batch_size].to(device)
                logits = model(input_ids=batch, use_cache=False).logits.float()  # (B, S, V)
                nll = F.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
                )
                total_nll += float(nll)
                total_count += batch[:, 1:].numel()
                if progress is not None:
                    done = min(start + batch_size, n_windows)
                    progress(done / n_windows, f"window {done}/{n_windows}")
    finally:
        model.train(was_training)
    return math.exp(total_nll / total_count)


# --- peak memory -----------------------------------------------------------------------------

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA allocator peak, or Linux VmHWM via clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # writing 5 resets the process's resident-set high-water mark (Linux >= 4.0)
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass


def peak_memory(device: torch.device) -> dict[str, object]:
    """Peak bytes since the last reset, and what kind of number it is."""
    if device.type == "cuda":
        return {"bytes": int(torch.cuda.max_memory_allocated(device)), "kind": "cuda_max_memory_allocated"}
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"bytes": int(line.split()[1]) * 1024, "kind": "process_peak_rss"}
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux; it cannot be reset, so it is the peak since process start.
    return {"bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "kind": "process_peak_rss_since_start"}


class StageTimer:
    """Wall time per named stage, in seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 4)
