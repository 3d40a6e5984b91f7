"""Ablation behind bench/results/grasp.md: is a low-rank remnant of GRASP's 7 layers at ratio 0.2 better
than deleting them, and does the basis (W vs W L) or the ranking decide it?

    .venv/bin/python bench/grasp_ablation.py [threads]

Each block of the 7 lowest-BI SmolLM2 layers is either zeroed (o_proj/down_proj = 0: the layer is
deleted), truncated to the same rank GRASP keeps by plain singular value of W ("sigma"), or truncated
in SVD-LLM's whitened basis ("whiten", Gram matrices from the dense model on wikitext2 8 x 256).
Dense matrices are overwritten in place: this measures quality only, not size.
"""
import sys
import time
from pathlib import Path

import torch
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from transformers import AutoModelForCausalLM, AutoTokenizer
from tests.support.smollm2 import smollm2_dir
from compression.calibration import eval_tokens, calibration_windows
from compression.specs.job import CalibrationSpec
from compression.evaluation import perplexity
from compression.linalg import rank_for_ratio

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
DATA = REPO.parent / "shared" / "data"
LAYERS = [12, 13, 14, 15, 17, 25, 26]
R = 1 - 1 / 7  # per-matrix removal so 7 layers cost 6 layers' parameters
d = smollm2_dir()
tok = AutoTokenizer.from_pretrained(d)
ev = eval_tokens(tok, "wikitext2", DATA)
calib = calibration_windows(tok, CalibrationSpec(source="wikitext2", samples=8, seq_len=256), DATA, seed=0)
ATT = ["q_proj", "k_proj", "v_proj", "o_proj"]; MLP = ["gate_proj", "up_proj", "down_proj"]

def fresh():
    m = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32); m.eval(); return m

def lin(m, l, name):
    layer = m.model.layers[l]
    return getattr(layer.self_attn if name in ATT else layer.mlp, name)

def ppl(m):
    with torch.no_grad():
        return perplexity(m, ev, 2048, max_windows=4)

def grams(m):
    g = {}; hooks = []
    for l in LAYERS:
        for n in ATT + MLP:
            mod = lin(m, l, n)
            def h(mod, args, out, key=(l, n)):
                x = args[0].reshape(-1, args[0].shape[-1]).double()
                g[key] = g.get(key, 0) + x.T @ x
            hooks.append(mod.register_forward_hook(h))
    with torch.no_grad():
        for w in calib: m(w.unsqueeze(0))
    for h in hooks: h.remove()
    return g

def truncate(m, l, n, how, G=None):
    mod = lin(m, l, n); W = mod.weight.data.double(); k = rank_for_ratio(W.shape[0], W.shape[1], R)
    if how == "zero":
        if n in ("o_proj", "down_proj"): mod.weight.data.zero_()
        return
    if how == "sigma":
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        Wk = U[:, :k] @ torch.diag(S[:k]) @ Vh[:k]
    elif how == "whiten":
        C = G[(l, n)]; C = C + 1e-6 * C.diagonal().mean() * torch.eye(C.shape[0], dtype=C.dtype)
        L = torch.linalg.cholesky(C)
        U, S, Vh = torch.linalg.svd(W @ L, full_matrices=False)
        Wk = U[:, :k] @ torch.diag(S[:k]) @ torch.linalg.solve_triangular(L, Vh[:k], upper=False, left=False)
    mod.weight.data.copy_(Wk.float())

def variant(att, mlp, G=None):
    m = fresh()
    for l in LAYERS:
        for n in ATT: truncate(m, l, n, att, G)
        for n in MLP: truncate(m, l, n, mlp, G)
    return ppl(m)

t = time.time()
base = fresh()
print("| attention | mlp | wiki2 ppl (4 x 2048) | elapsed s |\n|---|---|---|---|")
print(f"| dense | dense | {ppl(base):.2f} | {time.time() - t:.0f} |", flush=True)
G = grams(base); del base
for att, mlp in [("zero", "zero"), ("sigma", "sigma"), ("zero", "sigma"), ("sigma", "zero"),
                 ("whiten", "whiten"), ("zero", "whiten"), ("whiten", "zero")]:
    print(f"| {att} | {mlp} | {variant(att, mlp, G):.2f} | {time.time() - t:.0f} |", flush=True)
