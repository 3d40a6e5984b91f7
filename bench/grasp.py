"""GRASP vs layer removal vs SVD-LLM on SmolLM2-135M (30 layers): quality, wall time, peak memory.

    nice -n 10 .venv/bin/python -m bench.grasp --ratios 0.2 > bench/results/grasp.md

Compressed models and every measured number are cached under .cache/bench-grasp/, so a run can be
split (e.g. --tasks '' for perplexity first, then --items N for zero-shot on the same models). On
the shared 2-core CPU the first measured run used --threads 1 --ppl-windows 4 --items 20
--recovery-steps 16 (OMP spin-waiting under contention makes 2 threads up to 100x slower).

Rows: dense, grasp (reference order), grasp one-pass, grasp + recovery (the reference-order
model, then a short Alpaca fine-tune), the same three with basis="whitened" (components of W L,
SVD-LLM's activation-aware basis, instead of W), grasp_whitened_sigma (whitened basis, components
kept by singular value instead of gradient attribution, i.e. SVD-LLM truncation of the chosen
layers only) with its recovery, shortgpt, svd_llm. Columns: WikiText-2 raw test perplexity
(first 8 windows of 2048 = 16,376 predicted tokens, the models/README protocol), zero-shot accuracy
on the first N items of PIQA, ARC-easy, HellaSwag, WinoGrande (compression.zeroshot), compression
wall time and peak memory (CPU: process peak RSS of the stage; CUDA: max allocated).

Calibration: seeded wikitext2 windows (compression.calibration; the tokenized validation split,
since the raw train split is not available offline). The reference uses ~40-80 windows of 511
tokens from WikiText-2 train; on a 2-core CPU the default here is 8 x 256, and --calib-samples /
--calib-seq-len raise it. Recovery on CPU is a short budget (default 20 steps of 8 sequences,
length 256), not the reference's full epoch of ~50k examples at effective batch 64.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from compression.architectures import arch_for  # noqa: E402
from compression.calibration import calibration_windows, eval_tokens  # noqa: E402
from compression.errors import InvalidInput, RatioNotReached  # noqa: E402
from compression.evaluation import peak_memory, perplexity, reset_peak_memory  # noqa: E402
from compression.methods import CompressionContext, get  # noqa: E402
from compression.specs import CalibrationSpec, options_class  # noqa: E402
from compression.surgery import decoder_linear_params  # noqa: E402

DATA = REPO.parent / "shared" / "data"
TASKS = ("piqa", "arc_easy", "hellaswag", "winogrande")
# bench row -> (registered method, options); *_recovery rows fine-tune the row named before the suffix.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "grasp": ("grasp", {}),
    "grasp_one_pass": ("grasp", {"order": "one_pass"}),
    "grasp_whitened": ("grasp", {"basis": "whitened"}),
    "grasp_whitened_one_pass": ("grasp", {"basis": "whitened", "order": "one_pass"}),
    "grasp_whitened_sigma": ("grasp", {"basis": "whitened", "metric": "sigma"}),
    "shortgpt": ("shortgpt", {}),
    "svd_llm": ("svd_llm", {}),
}
METHODS = ("dense", "grasp", "grasp_one_pass", "grasp_recovery", "grasp_whitened", "grasp_whitened_one_pass",
           "grasp_whitened_recovery", "grasp_whitened_sigma", "grasp_whitened_sigma_recovery", "shortgpt", "svd_llm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ratios", default="0.1,0.2,0.3", help="comma-separated target ratios")
    p.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    p.add_argument("--tasks", default=",".join(TASKS), help="zero-shot tasks ('' for none)")
    p.add_argument("--items", type=int, default=200, help="first N items of each zero-shot task")
    p.add_argument("--ppl-windows", type=int, default=8, help="windows of 2048 tokens (8 = 16,376 predictions)")
    p.add_argument("--ppl-seq-len", type=int, default=2048)
    p.add_argument("--calib-samples", type=int, default=8)
    p.add_argument("--calib-seq-len", type=int, default=256)
    p.add_argument("--recovery-steps", type=int, default=20)
    p.add_argument("--recovery-batch", type=int, default=8)
    p.add_argument("--recovery-micro-batch", type=int, default=4)
    p.add_argument("--recovery-max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model-dir", default=None, help="HF folder (default: the converted SmolLM2-135M)")
    return p.parse_args(argv)


def load(model_dir: Path, device: torch.device):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    return model, load_tokenizer(model_dir)


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def zero_shot(model, tokenizer, task: str, items: int, device: torch.device) -> dict[str, Any]:
    """{"acc", "acc_norm", "n"} on the first `items` items (compression.zeroshot, lm-eval's scoring)."""
    from compression.zeroshot import evaluate_task

    result = evaluate_task(model, tokenizer, task, DATA, limit=items, device=device,
                           progress=_log_progress(f"zero-shot {task}", step=0.25))
    return {"acc": result["acc"], "acc_norm": result["acc_norm"], "n": result["n"]}


def compress(model, tokenizer, method: str, ratio: float, calib, options: dict, device, seed=0):
    ctx = CompressionContext(
        model=model, tokenizer=tokenizer, arch=arch_for(model.config.model_type),
        options=options_class(method).model_validate(options), target_ratio=ratio, calibration=calib,
        device=device, seed=seed, data_dir=DATA, progress=_log_progress(f"{method} {ratio}"),
    )
    gc.collect()
    reset_peak_memory(device)
    started = time.perf_counter()
    report = get(method).compress(ctx)
    return report, time.perf_counter() - started, peak_memory(device)["bytes"]


def _log_progress(label: str, step: float = 0.05):
    """Progress lines on stderr, at most one per 5% of the stage, so a long CPU run can be followed."""
    last = [-1.0]

    def report(fraction: float, message: str) -> None:
        if fraction - last[0] >= step or fraction >= 1.0:
            last[0] = fraction
            print(f"{time.strftime('%H:%M:%S')} {label} {fraction:.0%} {message}", file=sys.stderr, flush=True)

    return report


def row(name: str, ratio: float, meta: dict, tasks: list[str]) -> str:
    # The reference (and the GRASP paper's tables) average plain acc, not acc_norm.
    accs = [meta["accs"][t]["acc"] if t in meta["accs"] else None for t in tasks]
    mean = sum(accs) / len(accs) if accs and all(a is not None for a in accs) else None
    cells = [name, f"{ratio:.2f}", f"{meta['achieved']:.3f}", f"{meta['ppl']:.2f}"]
    cells += [f"{a:.3f}" if a is not None else "-" for a in accs]
    cells += [f"{mean:.3f}" if mean is not None else "-", f"{meta['wall']:.0f}", f"{meta['peak'] / 2**20:.0f}",
              meta["note"]]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.model_dir:
        model_dir = Path(args.model_dir)
    else:
        from tests.support.smollm2 import smollm2_dir

        model_dir = smollm2_dir()
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    tasks = [t for t in args.tasks.split(",") if t]
    tokenizer = load_tokenizer(model_dir)
    tokens = eval_tokens(tokenizer, "wikitext2", DATA)
    calib = calibration_windows(tokenizer, CalibrationSpec(source="wikitext2", samples=args.calib_samples,
                                                           seq_len=args.calib_seq_len), DATA, seed=0)
    print(f"# GRASP bench: {model_dir.name}, device {device}, torch threads {torch.get_num_threads()}\n")
    print(f"WikiText-2 raw test ppl: {args.ppl_windows} windows x {args.ppl_seq_len}; zero-shot: first {args.items} items "
          f"(plain acc, as the GRASP paper reports; acc_norm is kept in the cache); calibration: wikitext2 "
          f"{args.calib_samples} x {args.calib_seq_len}; recovery: {args.recovery_steps} steps x "
          f"{args.recovery_batch} seqs, max length {args.recovery_max_length}, lr 3e-4.\n")
    print("| method | target | achieved | wiki2 ppl | " + "".join(f"{t} | " for t in tasks)
          + "mean acc | compress s | peak MiB | notes |")
    print("|" + "---|" * (8 + len(tasks)))
    sys.stdout.flush()
    cache = Cache(REPO / ".cache" / "bench-grasp" / cache_tag(args, model_dir))
    for ratio in [0.0] + [float(r) for r in args.ratios.split(",") if r]:
        for method in methods:
            if (method == "dense") != (ratio == 0.0):
                continue
            try:
                meta = ensure(cache, method, ratio, args, model_dir, device, tokens, calib, tasks)
            except (InvalidInput, RatioNotReached) as exc:  # e.g. a ratio layer removal cannot reach
                print(f"| {method} | {ratio:.2f} | failed: {exc} |")
            else:
                print(row(method, ratio, meta, tasks))
            sys.stdout.flush()
            gc.collect()


def cache_tag(args, model_dir: Path) -> str:
    return (f"{model_dir.name}-c{args.calib_samples}x{args.calib_seq_len}-r{args.recovery_steps}x"
            f"{args.recovery_batch}x{args.recovery_max_length}-{args.device}")


class Cache:
    """Compressed models (torch.save) and their measured numbers, so quality passes can run apart."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, method: str, ratio: float, ext: str) -> Path:
        return self.folder / f"{method}-{ratio:.2f}.{ext}"

    def meta(self, method: str, ratio: float) -> dict[str, Any] | None:
        path = self._path(method, ratio, "json")
        return json.loads(path.read_text()) if path.is_file() else None

    def save_meta(self, method: str, ratio: float, meta: dict[str, Any]) -> None:
        self._path(method, ratio, "json").write_text(json.dumps(meta, indent=1))

    def model(self, method: str, ratio: float):
        path = self._path(method, ratio, "pt")
        return torch.load(path, weights_only=False) if path.is_file() else None

    def save_model(self, method: str, ratio: float, model) -> None:
        torch.save(model, self._path(method, ratio, "pt"))


def build(cache: Cache, method: str, ratio: float, args, model_dir: Path, device, calib):
    """(model, meta) for a method: loaded from the cache or compressed (and cached) now."""
    meta = cache.meta(method, ratio)
    if meta is not None:
        model = load(model_dir, device)[0] if method == "dense" else cache.model(method, ratio).to(device)
        return model, meta
    tokenizer = load_tokenizer(model_dir)
    if method.endswith("_recovery"):
        model, base = build(cache, method.removesuffix("_recovery"), ratio, args, model_dir, device, calib)
        meta = recover_model(model, tokenizer, base, args, device)
    elif method == "dense":
        model = load(model_dir, device)[0]
        meta = {"achieved": 0.0, "wall": 0.0, "peak": peak_memory(device)["bytes"], "note": ""}
    else:
        model = load(model_dir, device)[0]
        arch = arch_for(model.config.model_type)
        total = decoder_linear_params(model, arch)
        name, options = VARIANTS[method]
        report, wall, peak = compress(model, tokenizer, name, ratio, calib, options, device)
        layers = report.details.get("layers") or report.details.get("removed_layers")
        meta = {"achieved": 1 - decoder_linear_params(model, arch) / total, "wall": wall, "peak": peak,
                "layers": layers, "note": f"layers {layers}" if layers is not None else ""}
    if method != "dense":
        cache.save_model(method, ratio, model)
    cache.save_meta(method, ratio, meta)
    return model, meta


def ensure(cache: Cache, method: str, ratio: float, args, model_dir, device, tokens, calib, tasks) -> dict:
    """Compress (or reuse) and measure whatever this run asks for that the cache lacks."""
    meta = cache.meta(method, ratio)
    ppl_key, acc_key = f"ppl_{args.ppl_windows}x{args.ppl_seq_len}", f"items{args.items}"
    missing = [t for t in tasks if t not in meta.get(acc_key, {})] if meta else tasks
    if meta is None or ppl_key not in meta or missing:
        model, meta = build(cache, method, ratio, args, model_dir, device, calib)
        tokenizer = load_tokenizer(model_dir)
        if ppl_key not in meta:
            meta[ppl_key] = perplexity(model, tokens, args.ppl_seq_len, max_windows=args.ppl_windows, device=device)
            cache.save_meta(method, ratio, meta)
        missing = [t for t in tasks if t not in meta.get(acc_key, {})]
        for task in missing:
            meta.setdefault(acc_key, {})[task] = zero_shot(model, tokenizer, task, args.items, device)
            cache.save_meta(method, ratio, meta)
        del model
    meta["ppl"] = meta[ppl_key]
    meta["accs"] = meta.get(acc_key, {})
    return meta


def recover_model(model, tokenizer, base: dict, args, device) -> dict[str, Any]:
    from compression.recovery import recover
    from compression.specs import RecoveryOptions

    options = RecoveryOptions(enabled=True, max_steps=args.recovery_steps, batch_size=args.recovery_batch,
                              micro_batch_size=args.recovery_micro_batch, max_length=args.recovery_max_length,
                              warmup_steps=max(1, args.recovery_steps // 10), eval_samples=32)
    reset_peak_memory(device)
    started = time.perf_counter()
    metrics = recover(model, tokenizer, arch_for(model.config.model_type), base["layers"], options,
                      DATA / "alpaca" / "alpaca_data.subset5000.json", device, seed=0)
    took = time.perf_counter() - started
    note = (f"+{took:.0f}s recovery; alpaca held-out ppl {metrics['heldout_ppl_before']:.1f} -> "
            f"{metrics['heldout_ppl_after']:.1f}")
    return {"achieved": base["achieved"], "wall": base["wall"] + took, "peak": peak_memory(device)["bytes"],
            "layers": base["layers"], "note": note, "recovery": metrics}


if __name__ == "__main__":
    main()
