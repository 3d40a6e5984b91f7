"""One command for a machine with a GPU: layer streaming on CUDA against the CPU, then at 7B shape.

    .venv/bin/python -m bench.gpu_check            # on a CUDA machine
    .venv/bin/python -m bench.gpu_check --smoke    # anywhere (CI): CPU only, tiny models, seconds

1. Every layer-wise method on SmolLM2-135M (smoke: TinyStories-656K): sequential on the device vs
   resident on the CPU: same ranks / removed layers, perplexity within 1%.
2. A Llama-2-7B-shaped random checkpoint (32 layers, hidden 4096, MLP 11008, bf16 on disk; smoke: a
   4-layer toy shape) written on this machine, compressed by svd_llm in sequential + disk mode: peak
   device memory and time.
3. The largest of the 13B / 34B / 70B shapes whose bf16 weights fit half the free disk (smoke: skipped), the same way.
Prints one table; exits non-zero if a check in 1 fails.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"
METHODS = [("svd", {}, 0.2), ("asvd", {}, 0.2), ("svd_llm", {}, 0.2), ("svd_llm", {"update": True}, 0.2),
           ("shortgpt", None, None)]
LLAMA = dict(num_attention_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
             tie_word_embeddings=False, model_type="llama", architectures=["LlamaForCausalLM"])
SHAPES = {  # name: (layers, hidden, mlp, kv heads)
    "7b": (32, 4096, 11008, 32), "13b": (40, 5120, 13824, 40), "34b": (48, 8192, 22016, 8),
    "70b": (80, 8192, 28672, 8), "toy": (4, 128, 344, 4),
}


def shape_config(name: str) -> tuple[int, dict]:
    layers, hidden, mlp, kv = SHAPES[name]
    heads = 32 if hidden >= 4096 else 4
    return layers, {**LLAMA, "hidden_size": hidden, "intermediate_size": mlp, "num_attention_heads": heads,
                    "num_key_value_heads": kv if hidden >= 4096 else heads}


def bf16_bytes(name: str) -> int:
    layers, hidden, mlp, kv = SHAPES[name]
    heads = 32 if hidden >= 4096 else 4
    kv_dim = hidden // heads * kv
    per_layer = 2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * mlp
    return 2 * (layers * per_layer + 2 * 32000 * hidden)


def job(model: str, method: str, options: dict, ratio: float, device: str, dtype: str, smoke: bool,
        mode: str = "sequential") -> dict:
    return dict(model=model, method=method, target_ratio=ratio, options=options, device=device, dtype=dtype,
                execution={"mode": mode, "offload": "disk"},
                calibration={"source": "tinystories", "samples": 4 if smoke else 16, "seq_len": 64 if smoke else 256},
                evaluation={"corpus": "tinystories", "seq_len": 128 if smoke else 512, "max_windows": 2 if smoke else 8})


def equivalence(model_dir: Path, device: str, smoke: bool, rows: list) -> bool:
    from compression.run import RunSettings, run

    settings = RunSettings(model_roots=(model_dir.parent,), data_dir=SHARED / "data")
    layers = __import__("json").loads((model_dir / "config.json").read_text())["num_hidden_layers"]
    ok = True
    for method, options, ratio in METHODS:
        if method == "shortgpt":
            options, ratio = {}, max(1, round(0.25 * layers)) / layers
        with tempfile.TemporaryDirectory() as tmp:
            ref = run(job(model_dir.name, method, options, ratio, "cpu", "float32", smoke, "resident"),
                      Path(tmp) / "cpu", settings=settings)
            started = time.perf_counter()
            dev = run(job(model_dir.name, method, options, ratio, device, "float32", smoke), Path(tmp) / "dev",
                      settings=settings)
            seconds = time.perf_counter() - started
        a, b = ref.report, dev.report
        same = all(a["method_details"].get(k) == b["method_details"].get(k) for k in ("ranks", "removed_layers"))
        close = abs(a["metrics"]["ppl_after"] / b["metrics"]["ppl_after"] - 1) <= 0.01
        ok &= same and close
        name = method + ("+update" if options.get("update") else "")
        rows.append((f"{model_dir.name} {name}", f"sequential {device} vs resident cpu",
                     f"layers/ranks {'same' if same else 'DIFFER'}; ppl {b['metrics']['ppl_after']:.3f} vs "
                     f"{a['metrics']['ppl_after']:.3f} ({'ok' if close else 'OFF BY >1%'})", f"{seconds:.1f}"))
    return ok


def scaled(name: str, device: str, smoke: bool, rows: list) -> None:
    import torch

    from bench.scale import cut
    from compression.run import RunSettings, run

    layers, shape = shape_config(name)
    root = Path(tempfile.mkdtemp(prefix=f"spectra-{name}-"))
    try:
        folder = cut(layers, root=root, shape=shape, name=f"llama-{name}", dtype="bfloat16")
        settings = RunSettings(model_roots=(folder.parent,), data_dir=SHARED / "data", work_dir=root / "work")
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        result = run(job(folder.name, "svd_llm", {}, 0.2, device, "bfloat16", smoke) | {"evaluation": {"enabled": False}},
                     root / "out", settings=settings)
        seconds = time.perf_counter() - started
        peak = (torch.cuda.max_memory_allocated() if device == "cuda"
                else max(result.report["metrics"]["peak_memory_by_stage"].values()))
        kind = "cuda max allocated" if device == "cuda" else "process peak RSS"
        rows.append((f"llama-{name} random ({bf16_bytes(name) / 1e9:.2f} GB bf16)", f"svd_llm sequential+disk {device}",
                     f"peak {peak / 1e9:.2f} GB ({kind}); achieved {result.report['achieved_ratio']:.4f}",
                     f"{seconds:.1f}"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU only, TinyStories and a toy shape (CI)")
    args = parser.parse_args()
    import torch

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; run with --smoke for the CPU check", file=sys.stderr)
        return 2
    if args.smoke:
        model_dir = SHARED / "models" / "TinyStories-656K"
    else:
        from tests.support.smollm2 import smollm2_dir

        model_dir = smollm2_dir()
    rows: list[tuple[str, str, str, str]] = []
    ok = equivalence(model_dir, device, args.smoke, rows)
    scaled("toy" if args.smoke else "7b", device, args.smoke, rows)
    if not args.smoke:
        free = shutil.disk_usage(tempfile.gettempdir()).free
        fitting = [n for n in ("70b", "34b", "13b") if bf16_bytes(n) < free / 2]
        if fitting:
            scaled(fitting[0], device, args.smoke, rows)
        else:
            rows.append(("larger shapes", "-", f"none of 13B/34B/70B fits half of {free / 1e9:.0f} GB free disk", "-"))
    print("| model | run | result | seconds |")
    print("|---|---|---|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
