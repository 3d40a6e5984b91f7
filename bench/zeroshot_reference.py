"""The job's zero-shot scorer on the dense SmolLM2-135M vs the values in ../shared/models/README.md.

    nice -n 10 .venv/bin/python -m bench.zeroshot_reference --items 200 --threads 1

Scores the first N items of each task with compression.zeroshot.evaluate_task (what a job's
evaluation.zeroshot calls) through the job's own model loader, and prints acc and acc_norm beside the
reference (models/README.md: "Zero-shot (first 200 items): PIQA 0.655 acc_norm, HellaSwag 0.465,
ARC-e 0.515, WinoGrande 0.505") and the difference of the metric the reference gives. Exit status 1
when a task is off by more than --tolerance.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

# task -> (metric the reference reports, value); models/README.md names acc_norm for PIQA only, and
# WinoGrande has acc only (lm-eval); for HellaSwag and ARC-e both are printed and the closer is marked.
REFERENCE = {"piqa": ("acc_norm", 0.655), "hellaswag": (None, 0.465), "arc_easy": (None, 0.515),
             "winogrande": ("acc", 0.505)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--tasks", default=",".join(REFERENCE))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tolerance", type=float, default=0.03)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from compression.models import load_model
    from compression.run import DEFAULT_DATA_DIR
    from compression.zeroshot import evaluate_task
    from tests.support.smollm2 import smollm2_dir

    folder = smollm2_dir()
    lm = load_model(folder.name, model_roots=(folder.parent,), device="cpu")
    print(f"# zero-shot, dense SmolLM2-135M (4-bit rounded), first {args.items} items, CPU fp32\n")
    print("| task | acc | acc_norm | reference | metric | difference | seconds |")
    print("|---|---|---|---|---|---|---|")
    failed = False
    for task in [t for t in args.tasks.split(",") if t]:
        started = time.perf_counter()
        result = evaluate_task(lm.model, lm.tokenizer, task, DEFAULT_DATA_DIR, args.items)
        metric, reference = REFERENCE[task]
        if metric is None:  # the reference does not say: the closer of the two
            metric = min(("acc", "acc_norm"), key=lambda m: abs(result[m] - reference))
        diff = result[metric] - reference
        failed |= abs(diff) > args.tolerance
        norm = "-" if result["acc_norm"] is None else f"{result['acc_norm']:.3f}"
        print(f"| {task} | {result['acc']:.3f} | {norm} | {reference:.3f} | {metric} | {diff:+.3f} | "
              f"{time.perf_counter() - started:.0f} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
