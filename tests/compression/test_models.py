"""Loading: allowed local roots (bare names, absolute paths, symlinks), hub ids through the real HF cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compression.errors import InvalidInput, ModelNotFound, PathNotAllowed, UnsupportedArchitecture
from compression.models import load_model, resolve_local
from tests.support.hf_cache import TINYSTORIES_ID, TINYSTORIES_REVISION, seed_hf_cache

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def roots(shared_dir: Path) -> tuple[Path, ...]:
    return (shared_dir / "models",)


def test_bare_name_and_absolute_path_under_a_root(roots, tinystories_dir: Path) -> None:
    lm = load_model("TinyStories-656K", model_roots=roots, device="auto", dtype="bfloat16")
    # No server path in the source record: it goes into compression.json, which the tenant downloads.
    assert lm.arch.model_type == "llama" and lm.source == {
        "kind": "local", "ref": "TinyStories-656K",
        # what the checkpoint is stored as (not the compute dtype asked for), its weight bytes, no card license
        "dtype": "float32", "weight_bytes": (tinystories_dir / "model.safetensors").stat().st_size, "license": None}
    assert next(lm.model.parameters()).dtype == torch.bfloat16 and not lm.model.training
    assert lm.tokenizer("Once upon")["input_ids"]
    assert resolve_local(str(tinystories_dir), roots) == tinystories_dir.resolve()


def test_paths_outside_roots_are_refused(tmp_path: Path, tinystories_dir: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(PathNotAllowed, match="outside the allowed model roots"):
        load_model(str(tinystories_dir), model_roots=(root,))
    (root / "escape").symlink_to(tinystories_dir)  # a link inside the root must not smuggle a path out
    with pytest.raises(PathNotAllowed):
        load_model(str(root / "escape"), model_roots=(root,))
    with pytest.raises(ModelNotFound, match="no model folder named 'escape'"):
        load_model("escape", model_roots=(root,))
    with pytest.raises(PathNotAllowed, match="none configured"):
        load_model(str(tinystories_dir), model_roots=())


def test_missing_folder_and_revision_on_local(roots) -> None:
    with pytest.raises(ModelNotFound, match="no model folder named 'NoSuchModel'"):
        load_model("NoSuchModel", model_roots=roots)
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_model(str(roots[0] / "NoSuchModel"), model_roots=roots)
    with pytest.raises(InvalidInput, match="revision applies to hub ids only"):
        load_model("TinyStories-656K", "main", model_roots=roots)


def test_unsupported_architecture_names_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 1}))
    with pytest.raises(UnsupportedArchitecture, match="'bert' is not supported; supported architectures: "
                                                      "gemma2, gemma3, gemma3_text, gpt2, gpt_neox, llama"):
        load_model("bert", model_roots=(tmp_path,))


_HUB_SCRIPT = """
import json, sys, torch
from pathlib import Path
from compression.models import load_model
from compression.errors import ModelNotFound
out = {}
lm = load_model(sys.argv[1], device="cpu")
ids = torch.arange(1, 17).unsqueeze(0)
out["logits"] = lm.model(input_ids=ids).logits[0, -1, :5].tolist()
out["source"] = lm.source
out["pinned"] = load_model(sys.argv[1], sys.argv[2], device="cpu").source["commit"]
out["cache_dir"] = load_model(sys.argv[1], cache_dir=Path(sys.argv[3]), device="cpu").source["kind"]
for ref, rev in ((sys.argv[1], "no-such-branch"), ("raincandy-u/NoSuchModel", None)):
    try:
        load_model(ref, rev, device="cpu")
        out[ref + str(rev)] = "loaded?!"
    except ModelNotFound as exc:
        out[ref + str(rev)] = str(exc)
print(json.dumps(out))
"""


def test_hub_id_resolves_offline_through_the_real_cache(tmp_path: Path, tinystories_dir: Path) -> None:
    seed_hf_cache(tmp_path / "hf")
    seed_hf_cache(tmp_path / "other")  # for the explicit cache_dir parameter
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-c", _HUB_SCRIPT, TINYSTORIES_ID, TINYSTORIES_REVISION, str(tmp_path / "other" / "hub")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["source"]["kind"] == "hub" and out["source"]["commit"] == TINYSTORIES_REVISION
    assert out["pinned"] == TINYSTORIES_REVISION and out["cache_dir"] == "hub"
    local = load_model("TinyStories-656K", model_roots=(tinystories_dir.parent,), device="cpu").model
    with torch.no_grad():
        expected = local(input_ids=torch.arange(1, 17).unsqueeze(0)).logits[0, -1, :5]
    assert torch.allclose(torch.tensor(out["logits"]), expected)
    assert "revision 'no-such-branch'" in out[TINYSTORIES_ID + "no-such-branch"]
    assert "raincandy-u/NoSuchModel" in out["raincandy-u/NoSuchModelNone"]


def test_preload_leaves_nothing_of_transformers_for_the_first_load(tinystories_dir: Path) -> None:
    """A worker preloads before forking each job's child; whatever a first model load still imports
    would be paid again by every child (it was ~6 s of lazy imports)."""
    script = (
        "import sys\n"
        "from compression.models import load_model, preload_transformers\n"
        "preload_transformers()\n"
        "before = set(sys.modules)\n"
        f"load_model({str(tinystories_dir)!r}, model_roots=[{str(tinystories_dir.parent)!r}], device='cpu')\n"
        "new = set(sys.modules) - before\n"
        # Left: AutoTokenizer's lookup of the tokenizer class by name, which imports model packages'
        # __init__ and tokenization modules (milliseconds). Anything else is a miss.
        "cheap = {m for m in new if m.count('.') == 2 and m.startswith('transformers.models.') or '.tokenization_' in m}\n"
        "new = sorted(m for m in new - cheap if m.startswith(('transformers', 'torch')))\n"
        "print(new)\n"
        "sys.exit(1 if new else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, f"imported by the first load after preload: {done.stdout[-2000:]}{done.stderr[-2000:]}"
