"""The rank-allocation figure of a globally budgeted method: kept rank by decoder layer and module type."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless: workers have no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


@dataclass(frozen=True)
class MatrixRank:
    layer: int
    module: str  # short name, e.g. "q_proj"
    rank: int
    break_even: int  # floor(mn / (m+n)): the rank at which the factors cost as much as the dense matrix


def render_rank_allocation(entries: Sequence[MatrixRank], title: str = "") -> bytes:
    """PNG: left, kept rank per layer (one line per module type); right, rank / break-even as a heatmap."""
    if not entries:
        raise ValueError("no matrices to draw")
    layers = sorted({e.layer for e in entries})
    modules = list(dict.fromkeys(e.module for e in entries))
    rank = {(e.layer, e.module): e for e in entries}
    fig, (ax_lines, ax_heat) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for name in modules:
        xs = [layer for layer in layers if (layer, name) in rank]
        ax_lines.plot(xs, [rank[(x, name)].rank for x in xs], marker="o", markersize=3, label=name)
    ax_lines.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_lines.set_xlabel("decoder layer")
    ax_lines.set_ylabel("kept rank")
    ax_lines.legend(fontsize=8, ncol=2)
    ax_lines.grid(alpha=0.3)

    grid = [[float("nan")] * len(layers) for _ in modules]
    for r, name in enumerate(modules):
        for c, layer in enumerate(layers):
            if (layer, name) in rank:
                e = rank[(layer, name)]
                grid[r][c] = e.rank / max(e.break_even, 1)
    image = ax_heat.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax_heat.set_yticks(range(len(modules)), modules)
    ax_heat.set_xticks(range(len(layers)), [str(x) for x in layers], fontsize=7)
    ax_heat.set_xlabel("decoder layer")
    ax_heat.set_title("kept rank / break-even rank", fontsize=10)
    fig.colorbar(image, ax=ax_heat)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
