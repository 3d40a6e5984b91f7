"""The artifact folder: safetensors (+ shards), config, tokenizer, generation config, compression.json.

Low-rank linears are stored as two factors (``<m>.in_proj.weight`` [k, n], ``<m>.out_proj.weight``
[m, k], ``<m>.out_proj.bias``) with ``config.spectra_low_rank = {module: rank}``, a ``model_type`` of
Spectra's own (``spectra_llama``: plain transformers refuses it rather than load random weights) and an
``auto_map`` to ``modeling_spectra.py`` (copied into the folder) for ``trust_remote_code`` loading. A
model with no low-rank modules (layer removal) or a ``dense`` export is a plain config that loads
anywhere. Weights are stored in the dtype asked for (run() passes the source checkpoint's), and every
folder gets a model card (README.md).
Everything is written to ``<out_dir>.partial`` and renamed at the end, so a half-written artifact is
never visible under ``out_dir``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from compression.architectures import (
    ArchSpec,
    arch_for,
    experts_modules,
    fusable_experts,
    library_layout,
    prepare_model,
    stock_layout,
)
from compression.checkpoint import weight_bytes
from compression.artifact_code import strip_foreign_code
from compression.errors import InvalidInput
from compression.lowrank import LowRankLinear
from compression.model_card import CARD_NAME, render_card
from compression.models import LoadedModel, resolve_device, resolve_dtype

REMOTE_CODE = Path(__file__).parent / "remote_code" / "modeling_spectra.py"
SPECTRA_MODEL_TYPE_PREFIX = "spectra_"  # the same prefix as modeling_spectra.MODEL_TYPE_PREFIX
REPORT_NAME = "compression.json"
MAX_SHARD_BYTES = 2 * 1024**3

FileEntry = tuple[str, int, str]  # (name, size in bytes, sha256 hex)


def low_rank_modules(model: nn.Module) -> dict[str, LowRankLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LowRankLinear)}


def artifact_state_dict(model: nn.Module, dense: bool, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """CPU tensors to save: tied copies dropped (transformers re-ties them), factors merged if dense."""
    state: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:  # e.g. lm_head.weight tied to model.embed_tokens.weight
            continue
        seen.add(key)
        state[name] = tensor
    if dense:
        for name, module in low_rank_modules(model).items():
            for suffix in ("in_proj.weight", "out_proj.weight", "out_proj.bias"):
                state.pop(f"{name}.{suffix}", None)
            merged = module.to_dense()
            state[f"{name}.weight"] = merged.weight.detach()
            if merged.bias is not None:
                state[f"{name}.bias"] = merged.bias.detach()
    out = {}
    for name, tensor in state.items():
        t = tensor.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[name] = t.contiguous().clone() if t.data_ptr() == tensor.data_ptr() else t.contiguous()
    return out


def _write_weights(groups: Iterable[dict[str, torch.Tensor]], folder: Path, max_shard_bytes: int) -> int:
    """Write the tensors of `groups` (in order) into shards of at most max_shard_bytes.

    Groups arrive one at a time (a layer-streamed model yields one decoder layer per group), and a
    shard is written as soon as it is full, so at most one shard and one group are ever in memory.
    """
    from safetensors.torch import save_file

    written: list[tuple[Path, list[str]]] = []
    shard: dict[str, torch.Tensor] = {}
    size = total = params = 0

    def flush() -> None:
        path = folder / f"shard-{len(written):05d}.tmp"
        save_file(shard, str(path), metadata={"format": "pt"})
        written.append((path, list(shard)))

    for group in groups:
        for name, t in group.items():
            nbytes = t.numel() * t.element_size()
            if shard and size + nbytes > max_shard_bytes:
                flush()
                shard, size = {}, 0
            shard[name] = t
            size += nbytes
            total += nbytes
            params += t.numel()
    flush()
    if len(written) == 1:
        written[0][0].rename(folder / "model.safetensors")
        return params
    weight_map = {}
    for i, (path, names) in enumerate(written, 1):
        fname = f"model-{i:05d}-of-{len(written):05d}.safetensors"
        path.rename(folder / fname)
        weight_map.update({name: fname for name in names})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    return params


def require_export_class(arch: ArchSpec) -> str:
    """The family's low-rank class, checked to exist in the remote-code file (before any work is spent)."""
    from compression.errors import UnsupportedArchitecture
    from compression.remote_code import modeling_spectra

    try:
        getattr(modeling_spectra, arch.export_class)
    except AttributeError:
        raise UnsupportedArchitecture(
            f"{arch.model_type}: the low-rank export class {arch.export_class} cannot be built "
            f"(transformers has no {arch.causal_lm}; upgrade transformers)"
        ) from None
    return arch.export_class


def _write_config(model: nn.Module, folder: Path, ranks: dict[str, int], dtype: torch.dtype | None,
                  unfused_experts: list[str]) -> None:
    config = copy.deepcopy(model.config)
    for attr in ("spectra_low_rank", "spectra_unfused_experts", "auto_map"):
        if hasattr(config, attr):
            delattr(config, attr)
    if dtype is not None:
        config.dtype = dtype
    if not ranks:
        config.save_pretrained(folder)
        return
    cls = require_export_class(arch_for(config.model_type))
    config.spectra_low_rank = ranks
    if unfused_experts:
        config.spectra_unfused_experts = unfused_experts
    config.architectures = [cls]
    config.save_pretrained(folder)
    # modeling_spectra builds Spectra<StockConfig> (model_type spectra_<family>) beside Spectra<StockModel>.
    _mark_low_rank(folder / "config.json", cls, f"Spectra{type(config).__name__}")
    shutil.copy2(REMOTE_CODE, folder / REMOTE_CODE.name)


def _mark_low_rank(config_path: Path, cls: str, config_cls: str) -> None:
    """Give a low-rank config a model_type of Spectra's own plus the auto_map to its classes.

    transformers does not know "spectra_<family>", so plain from_pretrained raises and tells the user to
    pass trust_remote_code=True, instead of loading the stock class with random weights where the factors
    are. (model_type is a class attribute of the config, so it is set in the written JSON.)
    """
    data = json.loads(config_path.read_text())
    data["model_type"] = SPECTRA_MODEL_TYPE_PREFIX + data["model_type"]
    data["auto_map"] = {"AutoConfig": f"modeling_spectra.{config_cls}",
                        "AutoModelForCausalLM": f"modeling_spectra.{cls}"}
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def base_model_type(model_type: str) -> str:
    """The stock family of an artifact's model_type ('spectra_llama' -> 'llama')."""
    return model_type.removeprefix(SPECTRA_MODEL_TYPE_PREFIX)


def file_entries(folder: Path) -> list[FileEntry]:
    """(name, size, sha256) of every file except compression.json, sorted by name."""
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != REPORT_NAME):
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        entries.append((str(path.relative_to(folder)), path.stat().st_size, digest.hexdigest()))
    return entries


def export(
    model: nn.Module,
    tokenizer: Any,
    out_dir: Path,
    *,
    report: dict[str, Any],
    dense: bool = False,
    dtype: str | torch.dtype | None = None,
    extra_files: dict[str, bytes] | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    weight_groups: Callable[[bool, torch.dtype | None], Iterable[dict[str, torch.Tensor]]] | None = None,
) -> list[FileEntry]:
    """Write the artifact folder; returns every file (compression.json included) as (name, size, sha256).

    weight_groups(dense, dtype), when given, yields the artifact's tensors a part at a time (what a
    layer-streamed model does instead of holding every layer); by default they come from `model`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise InvalidInput(f"output folder {out_dir} already exists; choose a new one")
    torch_dtype = resolve_dtype(dtype) if dtype is not None else None
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        ranks = {} if dense else {n: m.rank for n, m in low_rank_modules(model).items()}
        arch = arch_for(model.config.model_type)
        if weight_groups is not None:  # a layer-streamed model (stock layout only: no experts, no Conv1D)
            unfused: list[str] = []
            groups = weight_groups(dense, torch_dtype)
        else:
            state = artifact_state_dict(model, dense, torch_dtype)
            fused = fusable_experts(model, arch, state)
            unfused = [name for name in experts_modules(model, arch) if name not in fused]
            groups = [stock_layout(model, arch, state)]
        params = _write_weights(groups, partial, max_shard_bytes)
        # The caller's report learns what the artifact weighs (compression.json and the job's metrics).
        report.setdefault("metrics", {})["weight_bytes_after"] = weight_bytes(partial)
        report["export"] = {"dense": dense, "dtype": str(torch_dtype or "") or None, "low_rank_modules": len(ranks),
                            "params": params}
        _write_config(model, partial, ranks, torch_dtype, unfused)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        for name, data in (extra_files or {}).items():
            (partial / Path(name).name).write_bytes(data)
        strip_foreign_code(partial)
        card = render_card(report, low_rank=bool(ranks), files=[p.name for p in partial.iterdir()])
        (partial / CARD_NAME).write_text(card, encoding="utf-8")
        entries = file_entries(partial)
        full = dict(report, files={name: {"size": size, "sha256": sha} for name, size, sha in entries})
        (partial / REPORT_NAME).write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
        partial.rename(out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return file_entries(out_dir) + [_report_entry(out_dir)]


def _report_entry(folder: Path) -> FileEntry:
    data = (folder / REPORT_NAME).read_bytes()
    return (REPORT_NAME, len(data), hashlib.sha256(data).hexdigest())


def verify_files(path: Path) -> None:
    """Raise InvalidInput if any file differs from the sha256/size recorded in compression.json."""
    recorded = json.loads((path / REPORT_NAME).read_text()).get("files", {})
    actual = {name: (size, sha) for name, size, sha in file_entries(path)}
    for name, entry in recorded.items():
        if actual.get(name) != (entry["size"], entry["sha256"]):
            raise InvalidInput(f"artifact file {name} in {path} does not match its sha256 in {REPORT_NAME}")


def _stock_config(path: Path) -> Any:
    """The artifact's config as its stock family's config class (no remote code runs)."""
    from transformers import AutoConfig

    data = json.loads((path / "config.json").read_text())
    family = base_model_type(str(data.pop("model_type", "")))
    arch_for(family)  # refuse an unsupported family with the supported list
    for key in ("auto_map", "architectures", "transformers_version"):
        data.pop(key, None)
    return AutoConfig.for_model(family, **data)


def load_compressed(
    path: Path, *, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None, verify: bool = True
) -> LoadedModel:
    """Our own loader: stock architecture, low-rank modules swapped in, weights loaded strictly."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise InvalidInput(f"{path} is not an artifact folder (no config.json)")
    if verify and (path / REPORT_NAME).is_file():
        verify_files(path)
    config = _stock_config(path)
    arch = arch_for(config.model_type)
    ranks: dict[str, int] = dict(getattr(config, "spectra_low_rank", None) or {})
    torch_dtype = resolve_dtype(dtype) if dtype is not None else getattr(config, "dtype", None) or torch.float32
    if isinstance(torch_dtype, str):
        torch_dtype = resolve_dtype(torch_dtype)
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, trust_remote_code=False)
    prepare_model(model, arch)  # GPT-2's Conv1D as nn.Linear, experts split: as the methods left them
    for name, rank in ranks.items():
        old = model.get_submodule(name)
        new = LowRankLinear(old.in_features, old.out_features, int(rank), bias=old.bias is not None,
                            dtype=torch_dtype)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, new)
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    state = library_layout(model, arch, state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise InvalidInput(
            f"{path}: weights do not match the config (missing {sorted(set(missing) - tied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    if tied:
        model.tie_weights()
    model.to(resolve_device(device)).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, config=config)  # the stock config: no remote-code prompt
    return LoadedModel(model=model, tokenizer=tokenizer, arch=arch, source={"kind": "artifact", "path": str(path)})
