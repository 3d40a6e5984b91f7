"""Quality benchmark: method x ratio -> achieved ratios, perplexity before/after, wall time, peak memory.

Not part of the tests. Every row goes through compression.run.run() (the same code the worker calls),
with evaluation done here once per model for "before" and on the *reloaded artifact* for "after", so
the numbers also vouch for the export. Prints a markdown table.

    .venv/bin/python bench/quality.py                       # both models, 4 methods, ratios 0.2 0.4
    .venv/bin/python bench/quality.py --models tinystories --methods svd svd_llm --ratios 0.2
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"


@dataclass(frozen=True)
class Bench:
    name: str
    calibration: dict[str, object]
    eval_corpus: str
    eval_seq_len: int
    eval_windows: int | None


BENCHES = {
    # TinyStories-656K: in-domain held-out text, its full context of 512.
    "tinystories": Bench("TinyStories-656K", {"source": "tinystories", "samples": 32, "seq_len": 256},
                         "tinystories", 512, None),
    # SmolLM2-135M: WikiText-2 raw test, 8 windows of 2048 (= 16,376 predicted tokens), as in the papers.
    "smollm2": Bench("smollm2-135m-instruct-q4", {"source": "wikitext2", "samples": 16, "seq_len": 512},
                     "wikitext2", 2048, 8),
}


def _model_root(key: str) -> Path:
    if key == "smollm2":
        from tests.support.smollm2 import smollm2_dir

        return smollm2_dir().parent
    return SHARED / "models"


def bench_model(key: str, methods: list[str], ratios: list[float], work: Path, eval_windows: int | None = None,
                calib_samples: int | None = None) -> list[dict[str, object]]:
    import torch

    from compression.calibration import eval_tokens
    from compression.evaluation import perplexity
    from compression.export import load_compressed
    from compression.models import load_model
    from compression.run import RunSettings, run
    from compression.specs import JobSpec

    b = BENCHES[key]
    if eval_windows is not None:
        b = replace(b, eval_windows=eval_windows)
    if calib_samples is not None:
        b = replace(b, calibration={**b.calibration, "samples": calib_samples})
    settings = RunSettings(model_roots=(_model_root(key),), data_dir=SHARED / "data", data_roots=(SHARED / "data",))
    base = load_model(b.name, model_roots=settings.model_roots, device="cpu")
    tokens = eval_tokens(base.tokenizer, b.eval_corpus, settings.data_dir)
    t0 = time.perf_counter()
    ppl_before = perplexity(base.model, tokens, b.eval_seq_len, b.eval_windows)
    print(f"[{key}] ppl before {ppl_before:.3f} on {b.eval_windows or 'all'} windows of {b.eval_seq_len} "
          f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    del base
    rows = []
    for method in methods:
        for ratio in ratios:
            out = work / f"{key}-{method}-{ratio}"
            spec = JobSpec(model=b.name, method=method, target_ratio=ratio, device="cpu",
                           calibration=b.calibration, evaluation={"enabled": False})
            t0 = time.perf_counter()
            try:
                result = run(spec, out, settings=settings)
            except Exception as exc:  # a failed row is a result too
                rows.append({"model": b.name, "method": method, "ratio": ratio, "error": f"{type(exc).__name__}: {exc}"})
                print(f"[{key}] {method} {ratio}: {exc}", file=sys.stderr, flush=True)
                continue
            wall = time.perf_counter() - t0
            reloaded = load_compressed(out).model
            with torch.no_grad():
                ppl_after = perplexity(reloaded, tokens, b.eval_seq_len, b.eval_windows)
            r = result.report
            rows.append({
                "model": b.name, "method": method, "ratio": ratio, "achieved": r["achieved_ratio"],
                "achieved_total": r["achieved_ratio_total"], "ppl_before": ppl_before, "ppl_after": ppl_after,
                "compress_s": r["metrics"]["seconds"]["compress"], "run_s": wall,
                "peak_mib": r["metrics"]["peak_memory_bytes"] / 2**20, "peak_kind": r["metrics"]["peak_memory_kind"],
            })
            print(f"[{key}] {method} {ratio}: ppl {ppl_after:.3f} in {wall:.0f}s", file=sys.stderr, flush=True)
            shutil.rmtree(out, ignore_errors=True)
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| model | method | target | achieved (decoder linears) | achieved (whole model) | ppl before | "
             "ppl after | compress s | run s | peak MiB |", "|" + "---|" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['method']} | {r['ratio']} | error: {r['error']} |||||||")
            continue
        lines.append(
            f"| {r['model']} | {r['method']} | {r['ratio']:.2f} | {r['achieved']:.4f} | {r['achieved_total']:.4f} | "
            f"{r['ppl_before']:.2f} | {r['ppl_after']:.4g} | {r['compress_s']:.1f} | {r['run_s']:.1f} | "
            f"{r['peak_mib']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(BENCHES), default=["tinystories", "smollm2"])
    parser.add_argument("--methods", nargs="+", default=["svd", "asvd", "svd_llm", "shortgpt"])
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.2, 0.4])
    parser.add_argument("--eval-windows", type=int, default=None,
                        help="override the evaluation window count (default: all for TinyStories, 8 for SmolLM2)")
    parser.add_argument("--calib-samples", type=int, default=None, help="override the calibration window count")
    args = parser.parse_args(argv)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="spectra-bench-") as tmp:
        for key in args.models:
            rows += bench_model(key, args.methods, args.ratios, Path(tmp), args.eval_windows, args.calib_samples)
    print(markdown(rows))
    print("\nppl: exp(mean NLL over all predicted tokens), non-overlapping windows; TinyStories-656K on "
          "TinyStories valid head (windows of 512, all), SmolLM2 on WikiText-2 raw test (8 windows of 2048). "
          "ppl after is measured on the reloaded artifact. Peak memory: process peak RSS per stage (CPU).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
