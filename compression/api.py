"""compress(): the library from Python (a notebook, a script), without the service or a JobSpec.

    from compression import compress
    result = compress("org/name" | "/a/model/folder" | model, method="svd_llm", ratio=0.2,
                      tokenizer=None, calibration=["text", ...] | "c4" | "/my/data.jsonl")
    result.model, result.report; result.save("out-folder")

It builds the same JobSpec the CLI and the worker use and runs the same stages (same progress callback,
same checks, same report). A folder or file the caller names is allowed as it is: the allowed-roots
confinement protects the service, not a user on their own machine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from compression.errors import InvalidInput
from compression.specs import JobSpec
from compression.specs.job import CalibrationCorpus

NAMED_CORPORA = tuple(c for c in CalibrationCorpus.__args__ if c not in ("file", "texts", "dataset"))  # type: ignore[attr-defined]


def local_model(ref: str | Path) -> Path | None:
    """The absolute folder a model argument names when it is an existing folder, else None (a hub id)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidInput(f"model folder {ref} has no config.json")
        return path.resolve()
    return None


def local_file(ref: str | Path) -> Path | None:
    path = Path(ref).expanduser()
    return path.resolve() if path.is_file() else None


def calibration_spec(calibration: Any, samples: int | None, seq_len: int | None) -> tuple[dict[str, Any], Path | None]:
    """(calibration dict for JobSpec, the data file it names, if any)."""
    sizes = {k: v for k, v in (("samples", samples), ("seq_len", seq_len)) if v is not None}
    if calibration is None:
        return sizes, None
    if isinstance(calibration, dict):
        return {**calibration, **sizes}, None
    if isinstance(calibration, (list, tuple)):
        if not all(isinstance(t, str) for t in calibration):
            raise InvalidInput("calibration as a list must hold strings (the texts to calibrate on)")
        return {"source": "texts", "texts": list(calibration), **sizes}, None
    if isinstance(calibration, str) and calibration in NAMED_CORPORA:
        return {"source": calibration, **sizes}, None
    if isinstance(calibration, (str, Path)):
        file = local_file(calibration)
        if file is None:
            raise InvalidInput(f"calibration '{calibration}' is neither a named corpus "
                               f"({', '.join(NAMED_CORPORA)}) nor an existing .txt / .jsonl file")
        return {"source": "file", "path": str(file), **sizes}, file
    raise InvalidInput("calibration must be a list of strings, a corpus name, a file path or a dict")


def compress(
    model: Any,
    method: str,
    ratio: float,
    *,
    tokenizer: Any = None,
    calibration: Any = None,
    samples: int | None = None,
    seq_len: int | None = None,
    options: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | bool | None = None,
    export: dict[str, Any] | None = None,
    revision: str | None = None,
    device: str = "auto",
    dtype: str | None = None,
    seed: int = 0,
    data_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    progress: Callable[[str, float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Any:
    """Compress ``model`` (hub id, folder, or an in-memory PreTrainedModel with ``tokenizer``).

    Returns a CompressedModel: ``.model`` (changed in place when you passed one), ``.tokenizer``,
    ``.report`` (the same dict as compression.json) and ``.save(path)``, which writes the artifact folder.
    ``calibration``: a list of strings, a named corpus, a .txt/.jsonl file, or a CalibrationSpec dict.
    ``evaluation``: False to skip, or an EvaluationSpec dict (perplexity corpus, windows, zero-shot tasks).
    ``progress(stage, fraction, message)`` and ``should_stop()`` are the hooks the CLI and worker use.
    """
    import torch

    from compression.architectures import arch_for
    from compression.checkpoint import SUPPORTED
    from compression.models import LoadedModel, load_model, resolve_device
    from compression.run import (DEFAULT_DATA_DIR, RunSettings, Stages, compress_loaded, config_checks, get_compressor,
                                 seeded)

    calib, calib_file = calibration_spec(calibration, samples, seq_len)
    in_memory = isinstance(model, torch.nn.Module)
    folder = None if in_memory else local_model(model)
    if in_memory:
        if tokenizer is None:
            raise InvalidInput("an in-memory model needs its tokenizer: compress(model, ..., tokenizer=tokenizer)")
        model_dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        dtype = dtype or (model_dtype if model_dtype in SUPPORTED else "float32")
    eval_spec = {"enabled": False} if evaluation is False else (evaluation or {})
    spec_dict: dict[str, Any] = {
        "model": "in-memory" if in_memory else str(folder or model), "revision": revision, "method": method,
        "target_ratio": ratio, "options": options or {}, "calibration": calib, "evaluation": eval_spec,
        "export": export or {}, "device": device, "seed": seed,
    }
    if dtype is not None:
        spec_dict["dtype"] = dtype
    spec = JobSpec.model_validate(spec_dict)
    settings = RunSettings(data_dir=Path(data_dir) if data_dir else DEFAULT_DATA_DIR,
                           model_roots=(folder,) if folder else (), data_roots=(calib_file,) if calib_file else (),
                           cache_dir=Path(cache_dir) if cache_dir else None)
    compressor = get_compressor(spec)
    dev = resolve_device(spec.device)
    stages = Stages(progress, should_stop, dev)
    with seeded(spec.seed, dev):
        if in_memory:
            with stages.stage("load", "moving the model to its device"):
                lm = LoadedModel(model=model.to(dev).eval(), tokenizer=tokenizer,
                                 arch=arch_for(model.config.model_type), source=_memory_source(model, dtype))
        else:
            with stages.stage("load", f"loading {spec.model}"):
                lm = load_model(spec.model, spec.revision, model_roots=settings.model_roots,
                                cache_dir=settings.cache_dir, dtype=spec.dtype, device=dev,
                                check=config_checks(spec, settings))
        result = compress_loaded(lm, spec, settings, compressor, stages, dev)
    stages.record(result.report["metrics"])
    return result


def _memory_source(model: Any, dtype: str) -> dict[str, Any]:
    """What the report says of a model handed over in memory: its own name, dtype and weight bytes."""
    seen, size = set(), 0
    for tensor in model.state_dict().values():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key not in seen:  # tied weights count once, as a checkpoint stores them
            seen.add(key)
            size += tensor.numel() * tensor.element_size()
    return {"kind": "memory", "ref": str(getattr(model.config, "_name_or_path", "") or "in-memory"),
            "dtype": dtype, "weight_bytes": size}
