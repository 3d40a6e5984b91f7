"""SoCo vs SVD-LLM, ASVD and plain SVD: perplexity, wall time, peak memory, and SoCo's rank allocation.

    nice -n 10 .venv/bin/python -m bench.soco --threads 1 > bench/results/soco.md

Models and protocol:
- SmolLM2-135M (4-bit rounded, converted once by tests.support.smollm2): WikiText-2 raw test, first
  8 windows of 2048 (16,376 predicted tokens); calibration: seeded wikitext2 windows (the tokenized
  validation split, the raw train split not being available offline).
- TinyStories-656K: TinyStories valid head, all windows of 512; calibration: TinyStories train windows.
Every method gets the same calibration windows (whitening Grams, ASVD scales, SoCo training) and its
default options; SoCo's can be overridden with --soco-options '{"compensate_steps": 64}'.
Wall time covers the compression only (not the perplexity); peak memory is the process peak RSS during
the compression (CPU) or the CUDA allocator peak. The rank table gives SoCo's kept rank as a share of the
break-even rank floor(mn/(m+n)), averaged over module type and layer group; the uniform rule
(SVD-LLM, ASVD, SVD) keeps (1 - ratio) of it everywhere.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from compression.architectures import arch_for  # noqa: E402
from compression.calibration import calibration_windows, eval_tokens  # noqa: E402
from compression.evaluation import peak_memory, perplexity, reset_peak_memory  # noqa: E402
from compression.methods import CompressionContext, get  # noqa: E402
from compression.specs import CalibrationSpec, options_class  # noqa: E402
from compression.surgery import decoder_linear_params  # noqa: E402

DATA = REPO.parent / "shared" / "data"
TINYSTORIES = REPO.parent / "shared" / "models" / "TinyStories-656K"
METHODS = ("soco", "svd_llm", "asvd", "svd")
# model -> (eval corpus, eval window, eval windows (None: all), calibration corpus, samples, seq_len)
PROTOCOL = {
    "smollm2": ("wikitext2", 2048, 8, "wikitext2", 16, 256),
    "tinystories": ("tinystories", 512, None, "tinystories", 32, 256),
}
# SoCo step counts per model: on a shared 2-core CPU one SmolLM2 step (256 tokens, forward + backward)
# takes several seconds, so the 135M model gets a shorter schedule than the defaults.
SOCO_SCHEDULE = {
    "smollm2": {"fisher_batches": 4, "refine_steps": 4, "reselect_every": 2, "compensate_steps": 12, "batch_size": 1},
    "tinystories": {},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tinystories,smollm2", help="comma-separated: tinystories, smollm2")
    p.add_argument("--ratios", default="0.2,0.4,0.6")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--soco-options", default="{}", help="JSON overrides of SoCoOptions")
    p.add_argument("--ppl-windows", type=int, default=None,
                   help="score only the first N eval windows (default: the protocol's; 8 x 2048 on SmolLM2)")
    p.add_argument("--skip-dense", action="store_true", help="do not measure the dense model's perplexity")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--figures", default=str(REPO / "bench" / "results"), help="folder for SoCo's rank PNGs")
    return p.parse_args(argv)


def model_dir(name: str) -> Path:
    if name == "tinystories":
        return TINYSTORIES
    if name == "smollm2":
        from tests.support.smollm2 import smollm2_dir

        return smollm2_dir()
    raise SystemExit(f"unknown model {name}; choose tinystories or smollm2")


def load(folder: Path, device: torch.device):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()


def log(label: str):
    last = [-1.0]

    def report(fraction: float, message: str) -> None:
        if fraction - last[0] >= 0.05 or fraction >= 1.0:
            last[0] = fraction
            print(f"{time.strftime('%H:%M:%S')} {label} {fraction:.0%} {message}", file=sys.stderr, flush=True)

    return report


def compress(folder: Path, tokenizer, method: str, ratio: float, calib, options: dict, device):
    model = load(folder, device)
    arch = arch_for(model.config.model_type)
    before = decoder_linear_params(model, arch)
    ctx = CompressionContext(
        model=model, tokenizer=tokenizer, arch=arch, options=options_class(method).model_validate(options),
        target_ratio=ratio, calibration=calib, device=device, seed=0, data_dir=DATA,
        progress=log(f"{method} {ratio}"),
    )
    gc.collect()
    reset_peak_memory(device)
    started = time.perf_counter()
    report = get(method).compress(ctx)
    wall = time.perf_counter() - started
    peak = peak_memory(device)["bytes"]
    achieved = 1 - decoder_linear_params(model, arch) / before
    return model, report, wall, peak, achieved


def rank_summary(report, arch_names: tuple[str, ...], n_layers: int) -> list[str]:
    """Rows: module type; columns: layer groups; cells: mean kept rank / break-even rank."""
    ranks, even = report.details["ranks"], report.details["break_even_ranks"]
    groups = [(i, i) for i in range(n_layers)] if n_layers <= 6 else \
        [(s, min(s + n_layers // 5 - 1, n_layers - 1)) for s in range(0, n_layers, n_layers // 5)]
    header = "| module | " + " | ".join(f"L{a}" if a == b else f"L{a}-{b}" for a, b in groups) + " | all |"
    lines = [header, "|" + "---|" * (len(groups) + 2)]
    for short in arch_names:
        cells = []
        for a, b in groups + [(0, n_layers - 1)]:
            names = [n for n in ranks if n.endswith(f".{short}") and a <= int(n.split(".")[2]) <= b]
            share = sum(ranks[n] / even[n] for n in names) / max(len(names), 1)
            cells.append(f"{share:.2f}")
        lines.append(f"| {short} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ratios = [float(r) for r in args.ratios.split(",") if r]
    methods = [m for m in args.methods.split(",") if m]
    soco_options = json.loads(args.soco_options)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    print(f"# SoCo bench (device {device}, torch threads {torch.get_num_threads()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"SoCo options: defaults of compression.specs.SoCoOptions, per-model schedule {SOCO_SCHEDULE}, "
          f"overrides {soco_options}. "
          "Wall time: compression only; peak: process peak RSS during compression (CPU).\n")
    allocations: list[str] = []
    for name in [m for m in args.models.split(",") if m]:
        folder = model_dir(name)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        corpus, seq_len, windows, calib_source, samples, calib_len = PROTOCOL[name]
        windows = args.ppl_windows or windows
        tokens = eval_tokens(tokenizer, corpus, DATA)
        calib = calibration_windows(tokenizer, CalibrationSpec(source=calib_source, samples=samples, seq_len=calib_len),
                                    DATA, seed=0)
        dense = None if args.skip_dense else perplexity(load(folder, device), tokens, seq_len, max_windows=windows,
                                                         device=device)
        print(f"## {name}: {corpus} perplexity, windows of {seq_len} ({windows or 'all'} windows); "
              f"calibration {calib_source} {samples} x {calib_len}; dense ppl "
              f"{'not measured' if dense is None else f'{dense:.2f}'}\n")
        print("| ratio | method | achieved | ppl | vs svd_llm | compress s | peak MiB |")
        print("|---|---|---|---|---|---|---|")
        sys.stdout.flush()
        results: dict[tuple[str, float], float] = {}
        # soco and svd_llm first at every ratio (the comparison that matters), then the weaker baselines.
        first = [m for m in methods if m in ("soco", "svd_llm")]
        plan = [(r, first) for r in ratios] + [(r, [m for m in methods if m not in first]) for r in ratios]
        for ratio, group in plan:
            for method in group:
                options = {**SOCO_SCHEDULE[name], **soco_options} if method == "soco" else {}
                model, report, wall, peak, achieved = compress(folder, tokenizer, method, ratio, calib, options, device)
                ppl = perplexity(model, tokens, seq_len, max_windows=windows, device=device)
                results[(method, ratio)] = ppl
                ref = results.get(("svd_llm", ratio))
                versus = f"{ppl / ref:.3f}x" if ref else "-"
                print(f"| {ratio:.1f} | {method} | {achieved:.3f} | {ppl:.2f} | {versus} | {wall:.0f} | "
                      f"{peak / 2**20:.0f} |")
                if method == "svd_llm" and ("soco", ratio) in results:
                    gain = 1 - results[("soco", ratio)] / ppl
                    print(f"| {ratio:.1f} | soco vs svd_llm | | {gain:+.1%} lower ppl | | | |")
                sys.stdout.flush()
                if method == "soco":
                    png = figures / f"soco_ranks_{name}_{ratio:.1f}.png"
                    png.write_bytes(report.files["rank_allocation.png"])
                    arch = arch_for(model.config.model_type)
                    allocations += [f"\n### {name}, ratio {ratio:.1f}: SoCo kept rank / break-even rank "
                                    f"(uniform rule: {1 - ratio:.2f}); figure {png.relative_to(REPO)}\n"]
                    allocations += rank_summary(report, arch.linear_names, model.config.num_hidden_layers)
                del model, report
                gc.collect()
        print()
    if allocations:
        print("## How SoCo allocated the ranks")
        print("\n".join(allocations))


if __name__ == "__main__":
    main()
