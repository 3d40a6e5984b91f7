"""The preflight estimate beside measured peaks: does compression.estimate agree with real runs?

Every case runs in a fresh process (bench/memory_probe.py) on the CPU, so host memory is the device
memory; the measured number is the peak anonymous memory (RssAnon sampled every 2 ms: heap and
tensors, not the page cache or the memory-mapped checkpoint) compared with the estimate's host peak
for the mode that ran. The table also gives VmHWM (resident high-water mark, file pages included),
the estimated and measured time, and the ratio estimate / measured (the goal: within 0.75-1.25).

    nice -n 10 .venv/bin/python bench/estimate_check.py                  # TinyStories + SmolLM2, resident
    nice -n 10 .venv/bin/python bench/estimate_check.py --models tinystories --methods svd,svd_llm
    .venv/bin/python bench/estimate_check.py --modes resident,sequential  # once the streaming engine runs

Sequential cases are run only once compression.run executes them (the engine of issue 14); until then
the report's execution.mode says resident and such a case is listed as "not run".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from compression.estimate import estimate, read_shape  # noqa: E402
from compression.specs import JobSpec  # noqa: E402

SHARED_MODELS = REPO.parent / "shared" / "models"
SMOLLM2 = REPO / ".cache" / "models" / "smollm2-135m-instruct-q4"

MODELS: dict[str, dict[str, Any]] = {
    "tinystories": {"root": SHARED_MODELS, "name": "TinyStories-656K", "corpus": "tinystories",
                    "calibration": {"samples": 16, "seq_len": 128}, "evaluation": {"seq_len": 128, "max_windows": 4}},
    "smollm2": {"root": SMOLLM2.parent, "name": SMOLLM2.name, "corpus": "wikitext2",
                "calibration": {"samples": 8, "seq_len": 256}, "evaluation": {"seq_len": 256, "max_windows": 4}},
}
# Small settings so each run takes seconds to minutes on 2 cores; the memory terms are all exercised.
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "svd": {"target_ratio": 0.2},
    "asvd": {"target_ratio": 0.2},
    "svd_llm": {"target_ratio": 0.2},
    "shortgpt": {"target_ratio": 0.5, "smollm2_ratio": 0.2},
    "grasp": {"target_ratio": 0.2, "options": {"order": "one_pass", "calibration_samples": 4}},
    "soco": {"target_ratio": 0.2, "options": {"fisher_batches": 2, "refine_steps": 2, "compensate_steps": 2,
                                              "reselect_every": 1}},
}


def spec_for(model: str, method: str, mode: str) -> dict[str, Any]:
    m, settings = MODELS[model], METHOD_SETTINGS[method]
    ratio = settings.get(f"{model}_ratio", settings["target_ratio"])
    return {"model": m["name"], "method": method, "target_ratio": ratio, "device": "cpu",
            "options": settings.get("options", {}), "execution": {"mode": mode, "offload": "cpu"},
            "calibration": {"source": m["corpus"], **m["calibration"]},
            "evaluation": {"corpus": m["corpus"], **m["evaluation"]}}


def measure(model: str, spec: dict[str, Any], timeout: float) -> dict[str, Any] | str:
    job = {"spec": spec, "model_roots": [str(MODELS[model]["root"])], "threads": 1}
    try:
        done = subprocess.run([sys.executable, str(REPO / "bench" / "memory_probe.py"), json.dumps(job)],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["failed"])[-1][:100]
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tinystories,smollm2")
    parser.add_argument("--methods", default=",".join(METHOD_SETTINGS))
    parser.add_argument("--modes", default="resident")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    header = (f"{'model':12} {'method':9} {'mode':10} {'est host MiB':>12} {'anon MiB':>9} {'est/anon':>8} "
              f"{'VmHWM MiB':>10} {'est s':>7} {'wall s':>7}  largest estimate terms (MiB)")
    print(header)
    print("-" * len(header))
    for model in args.models.split(","):
        folder = MODELS[model]["root"] / MODELS[model]["name"]
        shape = read_shape(folder)
        for method in args.methods.split(","):
            for mode in args.modes.split(","):
                spec = spec_for(model, method, mode)
                est = estimate(shape, JobSpec.model_validate(spec), device="cpu")
                predicted = est.mode(mode, "cpu")
                terms = sorted(predicted.breakdown.items(), key=lambda kv: -kv[1])[:3]
                terms_text = ", ".join(f"{k} {mib(v)}" for k, v in terms)
                result = measure(model, spec, args.timeout)
                if isinstance(result, str):
                    print(f"{model:12} {method:9} {mode:10} {mib(predicted.host_bytes):>12} {'-':>9} {'-':>8} "
                          f"{'-':>10} {predicted.seconds:>7.0f} {'-':>7}  {result}", flush=True)
                    continue
                ran = result.get("execution_mode", "resident")
                if ran != mode:
                    print(f"{model:12} {method:9} {mode:10} not run: compression.run executed it as {ran}", flush=True)
                    continue
                anon = result["peak_anon"]
                print(f"{model:12} {method:9} {mode:10} {mib(predicted.host_bytes):>12} {mib(anon):>9} "
                      f"{predicted.host_bytes / anon:>8.2f} {mib(result['vm_hwm']):>10} {predicted.seconds:>7.0f} "
                      f"{result['wall']:>7.0f}  {terms_text}", flush=True)


if __name__ == "__main__":
    main()
