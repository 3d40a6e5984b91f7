"""Layer streaming at scale: peak anonymous memory and wall time, sequential+disk vs resident.

    nice -n 10 .venv/bin/python -m bench.scale --layers 2,4 --methods svd_llm,shortgpt

Random-initialised Llama checkpoints with TinyLlama-1.1B's shape (hidden 2048, MLP 5632, 32 heads,
4 KV heads, vocab 32000, 22 layers: 4.4 GB in float32) are written once under .cache/bench/scale:
one safetensors file per decoder layer plus one for embeddings/norm/head, so an N-layer cut is just
a config and an index over the first N layer files. Each (cut, method, execution) runs `run()` in a
child process; the parent samples the child's RssAnon from /proc every 20 ms (anonymous memory
only: the memory-mapped checkpoint's page cache is not counted) and times it. Calibration 8 windows
of 128 tokens from TinyStories (the TinyStories-656K tokenizer; its ids lie inside the vocabulary),
evaluation off.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench" / "scale"
TOKENIZER = REPO.parent / "shared" / "models" / "TinyStories-656K"
SHAPE = dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4,
             vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False,
             model_type="llama", architectures=["LlamaForCausalLM"], torch_dtype="float32")
FULL_DEPTH = 22


def write_layers(folder: Path, depth: int, shape: dict | None = None, dtype: str = "float32") -> None:
    """Random weights, one file per layer, written once (std 0.02, norms at 1)."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    shape = shape or SHAPE
    folder.mkdir(parents=True, exist_ok=True)
    cfg = LlamaConfig(**{k: v for k, v in shape.items() if k not in ("model_type", "architectures", "torch_dtype")})
    torch_dtype = getattr(torch, dtype)
    h, m = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    gen = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * 0.02).to(torch_dtype)

    outer = folder / "outer.safetensors"
    if not outer.is_file():
        save_file({"model.embed_tokens.weight": randn(cfg.vocab_size, h), "model.norm.weight": torch.ones(h, dtype=torch_dtype),
                   "lm_head.weight": randn(cfg.vocab_size, h)}, str(outer))
    for i in range(depth):
        path = folder / f"layer-{i:02d}.safetensors"
        if path.is_file():
            continue
        p = f"model.layers.{i}."
        tensors = {p + "self_attn.q_proj.weight": randn(h, h), p + "self_attn.k_proj.weight": randn(kv, h),
                   p + "self_attn.v_proj.weight": randn(kv, h), p + "self_attn.o_proj.weight": randn(h, h),
                   p + "mlp.gate_proj.weight": randn(m, h), p + "mlp.up_proj.weight": randn(m, h),
                   p + "mlp.down_proj.weight": randn(h, m), p + "input_layernorm.weight": torch.ones(h, dtype=torch_dtype),
                   p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch_dtype)}
        save_file(tensors, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").rename(path)


def cut(depth: int, root: Path = CACHE, shape: dict | None = None, name: str = "tinyllama-shape",
        dtype: str = "float32") -> Path:
    """A model folder of the first `depth` layers: config, index, tokenizer, links to the shared files."""
    from safetensors import safe_open

    shape = shape or SHAPE
    shared = root / "weights"
    write_layers(shared, depth, shape, dtype)
    folder = root / f"{name}-{depth}"
    if (folder / "config.json").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weight_map: dict[str, str] = {}
    for name in ["outer"] + [f"layer-{i:02d}" for i in range(depth)]:
        (tmp / f"{name}.safetensors").symlink_to(shared / f"{name}.safetensors")
        with safe_open(shared / f"{name}.safetensors", "pt") as f:
            weight_map.update({key: f"{name}.safetensors" for key in f.keys()})
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (tmp / "config.json").write_text(json.dumps({**shape, "torch_dtype": dtype, "num_hidden_layers": depth}))
    for file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TOKENIZER / file, tmp / file)
    tmp.rename(folder)
    return folder


CHILD = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads({threads})
from compression.run import RunSettings, run
folder = Path({folder!r})
settings = RunSettings(model_roots=(folder.parent,), data_dir=Path({data!r}), work_dir=Path({work!r}))
spec = dict(model=folder.name, method={method!r}, target_ratio={ratio}, device="cpu",
            calibration={{"source": "tinystories", "samples": 8, "seq_len": 128}}, evaluation={{"enabled": False}},
            execution={{"mode": {mode!r}, "offload": "disk"}})
started = time.perf_counter()
result = run(spec, Path({out!r}), settings=settings)
print(json.dumps({{"seconds": time.perf_counter() - started, "achieved": result.report["achieved_ratio"]}}))
"""


def rss_anon(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(folder: Path, method: str, mode: str, threads: int) -> dict[str, float]:
    scratch = CACHE / "runs"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    ratio = 0.25 if method == "shortgpt" else 0.2
    depth = json.loads((folder / "config.json").read_text())["num_hidden_layers"]
    if method == "shortgpt":
        ratio = max(1, round(0.25 * depth)) / depth
    code = CHILD.format(threads=threads, folder=str(folder), data=str(REPO.parent / "shared" / "data"),
                        work=str(scratch / "work"), method=method, ratio=ratio, out=str(scratch / "out"), mode=mode)
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    peak = 0
    while child.poll() is None:
        peak = max(peak, rss_anon(child.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - started
    out = child.stdout.read() if child.stdout else ""
    if child.returncode != 0:
        raise SystemExit(f"{method} {mode} on {folder.name} failed (exit {child.returncode})")
    shutil.rmtree(scratch, ignore_errors=True)
    return {"peak_anon_gb": peak / 1e9, "wall_s": wall, **json.loads(out.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", default="8,16,22", help="cuts to run, comma-separated depths (<= 22)")
    parser.add_argument("--methods", default="svd_llm,shortgpt")
    parser.add_argument("--modes", default="sequential,resident")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    depths = [int(d) for d in args.layers.split(",")]
    if max(depths) > FULL_DEPTH:
        raise SystemExit(f"the TinyLlama shape has {FULL_DEPTH} layers")
    print("| layers | method | execution | peak RssAnon (GB) | wall (s) | achieved ratio |")
    print("|---:|---|---|---:|---:|---:|")
    for depth in depths:
        folder = cut(depth)
        for method in args.methods.split(","):
            for mode in args.modes.split(","):
                r = measure(folder, method, mode, args.threads)
                label = "sequential + disk" if mode == "sequential" else "resident"
                print(f"| {depth} | {method} | {label} | {r['peak_anon_gb']:.2f} | {r['wall_s']:.1f} | "
                      f"{r['achieved']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
