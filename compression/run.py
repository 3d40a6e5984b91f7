"""run(): the one entry point the worker and the CLI call. Load -> calibrate -> evaluate -> compress
-> evaluate -> export, with progress and cancel hooks and a report that records how every number was made.

The library never reads environment variables: where models and data may come from arrives in
RunSettings. Randomness is seeded locally (torch.random.fork_rng + saved random/numpy state), so
the caller's global RNG is left exactly as it was.
"""

from __future__ import annotations

import hashlib
import platform
import random
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compression.calibration import (
    CALIBRATION_FILES, EVAL_FILES, calibration_windows, check_user_file, dataset_file, eval_tokens,
)
from compression.errors import Cancelled, InvalidInput, RatioNotReached
from compression.estimate import Estimate, preflight
from compression.evaluation import StageTimer, peak_memory, perplexity, reset_peak_memory
from compression.architectures import ArchSpec
from compression.export import export, require_export_class
from compression.execution.choice import Execution, requested_execution, resolve_mode
from compression.execution.engine import spec_digest
from compression.execution.workfolder import WorkFolder
from compression.models import LoadedModel, load_model, locate_model, max_positions, resolve_device, resolve_dtype
from compression.specs import JobSpec, Method, check_fit
from compression.specs.fit import DEFAULT_TOLERANCE
from compression.surgery import count_params, decoder_linear_params

STAGES = ("load", "calibrate", "evaluate_before", "compress", "evaluate_after", "export")
Progress = Callable[[str, float, str], None]


# The named corpora's folder when the caller names none: ../shared/data beside the repository.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class RunSettings:
    data_dir: Path
    model_roots: tuple[Path, ...] = ()
    data_roots: tuple[Path, ...] = ()
    cache_dir: Path | None = None
    ratio_tolerance: float = DEFAULT_TOLERANCE  # the one tolerance: run() and every method check against it
    max_download_bytes: int | None = None  # hub models larger than this are refused (ModelTooLarge)
    # Uploaded datasets the caller (the service's worker) downloaded: dataset id -> local .txt / .jsonl.
    datasets: Mapping[str, Path] = field(default_factory=dict)
    # The worker's declared memory (bytes; None = no limit): the preflight estimate is held to the tighter
    # of these and the spec's execution.max_*_memory, and `auto` execution resolves against them.
    device_memory_limit: int | None = None
    host_memory_limit: int | None = None
    # Where each finished decoder layer's result is kept (compression.execution.workfolder). A rerun
    # with the same folder and spec continues after the last finished layer. None: no resume (a
    # sequential run then uses a temporary folder, removed at the end).
    work_dir: Path | None = None


@dataclass
class RunResult:
    out_dir: Path
    report: dict[str, Any]
    files: list[tuple[str, int, str]] = field(default_factory=list)  # (name, size, sha256)


def versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"

    import transformers

    return {"spectra": version("spectra"), "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch/numpy/random for the run and restore the caller's RNG states afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class Stages:
    """Times each stage, records its peak memory, reports progress and polls should_stop around it."""

    def __init__(self, progress: Progress | None, should_stop: Callable[[], bool] | None, device: torch.device):
        self.progress = progress or (lambda stage, fraction, message: None)
        self.should_stop = should_stop or (lambda: False)
        self.device = device
        self.timer = StageTimer()
        self.peaks: dict[str, int] = {}
        self.peak_kind = ""

    def record(self, metrics: dict[str, Any]) -> None:
        """Write the stage times and peak memory so far into a report's metrics."""
        metrics.update(seconds=dict(self.timer.seconds), peak_memory_bytes=max(self.peaks.values(), default=0),
                       peak_memory_by_stage=dict(self.peaks), peak_memory_kind=self.peak_kind)

    def check_stop(self) -> None:
        if self.should_stop():
            raise Cancelled("stopped on request")

    def reporter(self, stage: str) -> Callable[[float, str], None]:
        return lambda fraction, message: self.progress(stage, min(max(fraction, 0.0), 1.0), message)

    @contextmanager
    def stage(self, name: str, message: str) -> Iterator[None]:
        self.check_stop()
        reset_peak_memory(self.device)
        self.progress(name, 0.0, message)
        with self.timer.stage(name):
            yield
        peak = peak_memory(self.device)
        self.peaks[name], self.peak_kind = int(peak["bytes"]), str(peak["kind"])  # type: ignore[call-overload]
        self.progress(name, 1.0, f"{name} done")


def _protocol(spec: JobSpec, n_tokens: int) -> dict[str, Any] | None:
    ev = spec.evaluation
    if not ev.enabled:
        return None
    windows = n_tokens // ev.seq_len if ev.max_windows is None else min(n_tokens // ev.seq_len, ev.max_windows)
    file, split = (ev.dataset_id, "uploaded dataset") if ev.corpus == "dataset" else EVAL_FILES[ev.corpus]
    dataset = {"dataset_id": ev.dataset_id, "dataset_sha256": ev.dataset_sha256} if ev.corpus == "dataset" else {}
    return {"corpus": ev.corpus, **dataset, "file": file, "split": split, "seq_len": ev.seq_len, "windows": windows,
            "tokens": windows * ev.seq_len, "predicted_tokens": windows * (ev.seq_len - 1),
            "text_tokens": n_tokens, "batch_size": ev.batch_size, "dtype": spec.dtype, "seed": spec.seed,
            "formula": "exp(mean NLL over all predicted tokens of non-overlapping windows)"}


def _evaluation_message(spec: JobSpec) -> str:
    ev = spec.evaluation
    if not ev.enabled:
        return "evaluation disabled"
    return f"perplexity on {ev.corpus}" + (f", zero-shot {', '.join(ev.zeroshot)}" if ev.zeroshot else "")


def _share(report_to: Callable[[float, str], None], index: int, parts: int) -> Callable[[float, str], None]:
    """Progress of part ``index`` of ``parts`` equal parts of one stage."""
    return lambda fraction, message: report_to((index + fraction) / parts, message)


def _zeroshot(lm: LoadedModel, spec: JobSpec, settings: RunSettings, device: torch.device,
              report_to: Callable[[float, str], None]) -> dict[str, dict[str, Any]] | None:
    """{task: {"task", "n", "acc", "acc_norm"}} for the spec's zero-shot tasks (compression.zeroshot's scorer)."""
    from compression.zeroshot import evaluate_task

    ev = spec.evaluation
    if not ev.zeroshot:
        return None
    parts = 1 + len(ev.zeroshot)
    return {task: evaluate_task(lm.model, lm.tokenizer, task, settings.data_dir, ev.zeroshot_limit, device,
                                progress=_share(report_to, i + 1, parts))
            for i, task in enumerate(ev.zeroshot)}


def _zeroshot_protocol(spec: JobSpec) -> dict[str, Any] | None:
    ev = spec.evaluation
    if not (ev.enabled and ev.zeroshot):
        return None
    return {"tasks": list(ev.zeroshot), "limit": ev.zeroshot_limit,
            "files": {t: f"zeroshot/{t}.jsonl" for t in ev.zeroshot}, "dtype": spec.dtype,
            "scoring": "lm-evaluation-harness (>= 0.4) log-likelihood multiple choice: acc picks the choice with the "
                       "highest sum log p(continuation | context), acc_norm divides by its length in characters"}


def _calibration_record(spec: JobSpec, calib: torch.Tensor | None) -> dict[str, Any] | None:
    if calib is None:
        return None
    c = spec.calibration
    if c.source == "texts":  # the texts themselves stay in the spec; the record says how many and their digest
        texts = c.texts or []
        record = {"source": "texts", "texts": len(texts), "samples": c.samples, "seq_len": c.seq_len,
                  "sha256": hashlib.sha256("\n\n".join(texts).encode()).hexdigest(), "file": None,
                  "split": "inline texts"}
    else:
        if c.source == "dataset":
            file, split = c.dataset_id, "uploaded dataset"
        else:
            file, split = (c.path, "user file") if c.source == "file" else CALIBRATION_FILES[c.source]
        record = {**c.model_dump(mode="json", exclude={"texts"}), "file": file, "split": split}
    return {**record, "tokens": int(calib.numel()),
            "seed": spec.seed, "sampling": "uniform random window starts, torch.Generator(seed)"}


def get_compressor(spec: JobSpec) -> Any:
    from compression import methods

    try:
        return methods.get(spec.method)
    except KeyError as exc:
        raise InvalidInput(str(exc.args[0])) from None


def run(
    spec: JobSpec | dict[str, Any],
    out_dir: Path,
    *,
    settings: RunSettings,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Compress spec.model as spec says and write the artifact folder at out_dir."""

    spec = spec if isinstance(spec, JobSpec) else JobSpec.model_validate(spec)
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise InvalidInput(f"output folder {out_dir} already exists; choose a new one")
    compressor = get_compressor(spec)
    device = resolve_device(spec.device)
    if spec.calibration.source == "file" and compressor.info.requires_calibration:
        check_user_file(spec.calibration.path or "", settings.data_roots)  # fail before loading a model
    if spec.calibration.source == "dataset" and compressor.info.requires_calibration:
        dataset_file(spec.calibration.dataset_id, settings.datasets)
    if spec.evaluation.enabled and spec.evaluation.corpus == "dataset":
        dataset_file(spec.evaluation.dataset_id, settings.datasets)
    estimate = preflight(spec, model_roots=settings.model_roots, cache_dir=settings.cache_dir, device=device.type,
                         device_limit=settings.device_memory_limit, host_limit=settings.host_memory_limit)
    stages = Stages(progress, should_stop, device)
    chosen = requested_execution(spec)
    if chosen.mode == "sequential" and not getattr(compressor, "layerwise", False):
        raise InvalidInput(f"{spec.method.value} does not run layer by layer yet; use execution mode 'resident'")
    try:
        with seeded(spec.seed, device):
            return _run(spec, out_dir, settings, compressor, stages, device, chosen, estimate)
    except BaseException:
        shutil.rmtree(out_dir.with_name(out_dir.name + ".partial"), ignore_errors=True)
        raise


def config_checks(spec: JobSpec, settings: RunSettings) -> Callable[[dict[str, Any], ArchSpec], None]:
    """The checks that need only the model's config.json, run before any weight is loaded: the method
    applies to the family, the targets exist in it, shortgpt's ratio is reachable for its depth, and
    the family's low-rank export class exists."""

    def check(config: dict[str, Any], arch: ArchSpec) -> None:
        try:
            check_fit(spec.method, spec.target_ratio, spec.options, config, settings.ratio_tolerance)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if spec.method != Method.SHORTGPT and not spec.export.dense:
            require_export_class(arch)

    return check


def _run(spec: JobSpec, out_dir: Path, settings: RunSettings, compressor: Any, stages: Stages,
         device: torch.device, chosen: Execution, estimate: Estimate | None) -> RunResult:
    import tempfile

    mode = resolve_mode(chosen, estimate.chosen if estimate is not None else None)
    if mode != "resident" and not getattr(compressor, "layerwise", False):
        raise InvalidInput(f"{spec.method.value} does not run layer by layer yet; use execution mode 'resident'")
    if mode != "resident" and spec.evaluation.enabled and spec.evaluation.zeroshot:
        raise InvalidInput("zero-shot tasks run on a resident model only; use execution mode 'resident'")
    work_root, scratch = settings.work_dir, None
    if work_root is None and mode == "sequential":
        scratch = work_root = Path(tempfile.mkdtemp(prefix="spectra-layers-"))
    try:
        digest = spec_digest({"spec": spec.model_dump(mode="json"), "mode": mode})
        work = WorkFolder(work_root, digest) if work_root is not None else None
        with stages.stage("load", f"loading {spec.model}"):
            if mode == "resident":
                lm: Any = load_model(spec.model, spec.revision, model_roots=settings.model_roots,
                                     cache_dir=settings.cache_dir, dtype=spec.dtype, device=device,
                                     max_download_bytes=settings.max_download_bytes,
                                     check=config_checks(spec, settings))
            else:
                from compression.execution.session import StreamedSession

                located = locate_model(spec.model, spec.revision, model_roots=settings.model_roots,
                                       cache_dir=settings.cache_dir, max_download_bytes=settings.max_download_bytes,
                                       check=config_checks(spec, settings))
                assert work is not None
                lm = StreamedSession(located, dtype=resolve_dtype(spec.dtype), device=device, offload=chosen.offload,
                                     work=work, cache_dir=settings.cache_dir)
        compressed = compress_loaded(lm, spec, settings, compressor, stages, device, estimate, work=work)
        compressed.report["execution"].update(mode=mode, offload=chosen.offload if mode == "sequential" else None)
        with stages.stage("export", f"writing {out_dir.name}"):
            # compression.json is written inside this stage, so it lists every stage's time but export's own.
            stages.record(compressed.report["metrics"])
            files = compressed.save(out_dir)
        stages.record(compressed.report["metrics"])
        return RunResult(out_dir=out_dir, report=compressed.report, files=files)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class CompressedModel:
    """A compressed model in memory with its report; save() writes the artifact folder."""

    model: torch.nn.Module
    tokenizer: Any
    report: dict[str, Any]
    spec: JobSpec
    extra_files: dict[str, bytes] = field(default_factory=dict)  # e.g. the rank-allocation figure
    weight_groups: Any = None  # a layer-streamed model's tensors, a layer at a time (export reads `model` if None)

    def save(self, out_dir: Path | str) -> list[tuple[str, int, str]]:
        """Write the artifact (weights in the source's dtype unless export.dtype says otherwise)."""
        dtype = self.spec.export.dtype or self.report["source"].get("dtype")
        return export(self.model, self.tokenizer, Path(out_dir), report=self.report, dense=self.spec.export.dense,
                      dtype=dtype, extra_files=self.extra_files, weight_groups=self.weight_groups)


def _perplexity(lm: Any, tokens: torch.Tensor, ev: Any, device: torch.device, dense: bool,
                progress: Callable[[float, str], None]) -> float:
    """On the resident model, or streamed a layer at a time (dense=True: the checkpoint's own weights)."""
    if hasattr(lm, "perplexity"):
        return lm.perplexity(tokens, ev.seq_len, ev.max_windows, ev.batch_size, dense=dense, progress=progress)
    return perplexity(lm.model, tokens, ev.seq_len, ev.max_windows, ev.batch_size, device, progress=progress)


def compress_loaded(lm: LoadedModel, spec: JobSpec, settings: RunSettings, compressor: Any, stages: Stages,
                    device: torch.device, estimate: Estimate | None = None, work: WorkFolder | None = None
                    ) -> CompressedModel:
    """Calibrate, evaluate, compress, evaluate a model already loaded (or opened for layer-by-layer
    execution: compression.execution.session); the model is changed in place. `work` keeps finished
    layers for resume."""
    from compression.methods import CompressionContext

    model, limit = lm.model, max_positions(lm.model)
    if spec.evaluation.enabled and limit is not None and spec.evaluation.seq_len > limit:
        raise InvalidInput(f"evaluation.seq_len {spec.evaluation.seq_len} exceeds the model's maximum of {limit}")

    calib = None
    with stages.stage("calibrate", f"calibration windows from {spec.calibration.source}"):
        if compressor.info.requires_calibration:
            calib = calibration_windows(lm.tokenizer, spec.calibration, settings.data_dir, settings.data_roots,
                                        spec.seed, max_positions=limit, datasets=settings.datasets)

    ev, tokens, ppl_before, zeroshot_before = spec.evaluation, None, None, None
    with stages.stage("evaluate_before", _evaluation_message(spec)):
        if ev.enabled:
            dataset = dataset_file(ev.dataset_id, settings.datasets) if ev.corpus == "dataset" else None
            tokens = eval_tokens(lm.tokenizer, ev.corpus, settings.data_dir, dataset)
            report_to = stages.reporter("evaluate_before")
            ppl_before = _perplexity(lm, tokens, ev, device, True, _share(report_to, 0, 1 + len(ev.zeroshot)))
            zeroshot_before = _zeroshot(lm, spec, settings, device, report_to)

    params_before, linear_before = count_params(model), decoder_linear_params(model, lm.arch)
    with stages.stage("compress", f"{spec.method.value} toward ratio {spec.target_ratio}"):
        ctx = CompressionContext(
            model=model, tokenizer=lm.tokenizer, arch=lm.arch, options=spec.method_options(),
            target_ratio=spec.target_ratio, calibration=calib, device=device, seed=spec.seed,
            data_dir=settings.data_dir, ratio_tolerance=settings.ratio_tolerance,
            progress=stages.reporter("compress"), should_stop=stages.should_stop,
            layers=getattr(lm, "layers", None), work=work,
        )
        method_report = compressor.compress(ctx)
    params_after, linear_after = count_params(model), decoder_linear_params(model, lm.arch)
    achieved = 1.0 - linear_after / linear_before
    if abs(achieved - spec.target_ratio) > settings.ratio_tolerance:
        raise RatioNotReached(
            f"{spec.method.value} removed {achieved:.4f} of the decoder linear parameters but the target was "
            f"{spec.target_ratio:.4f} (tolerance {settings.ratio_tolerance:.4f})"
        )

    ppl_after, zeroshot_after = None, None
    with stages.stage("evaluate_after", _evaluation_message(spec)):
        if ev.enabled and tokens is not None:
            report_to = stages.reporter("evaluate_after")
            ppl_after = _perplexity(lm, tokens, ev, device, False, _share(report_to, 0, 1 + len(ev.zeroshot)))
            zeroshot_after = _zeroshot(lm, spec, settings, device, report_to)

    calibration = _calibration_record(spec, calib)
    if calibration is not None and "routed_tokens" in method_report.details:  # mixture of experts
        calibration["routed_tokens"] = method_report.details.pop("routed_tokens")
    report: dict[str, Any] = {
        "method": spec.method.value, "target_ratio": spec.target_ratio,
        "achieved_ratio": achieved, "achieved_ratio_total": 1.0 - params_after / params_before,
        "params_before": params_before, "params_after": params_after,
        "decoder_linear_params_before": linear_before, "decoder_linear_params_after": linear_after,
        "metrics": {"ppl_before": ppl_before, "ppl_after": ppl_after,
                    **({"zeroshot_before": zeroshot_before, "zeroshot_after": zeroshot_after} if ev.zeroshot else {}),
                    "weight_bytes_before": lm.source.get("weight_bytes"), **method_report.metrics},
        "protocol": _protocol(spec, 0 if tokens is None else int(tokens.numel())),
        "zeroshot_protocol": _zeroshot_protocol(spec),
        "calibration": calibration,
        "spec": spec.model_dump(mode="json"), "method_details": method_report.details,
        # What was asked, what `auto` resolved to from the preflight estimate, and what ran (run() sets
        # mode and offload for layer-by-layer runs).
        "execution": {"requested": spec.execution.model_dump(mode="json"), "mode": "resident", "offload": None,
                      "resolved": estimate.chosen if estimate is not None else None,
                      "estimate": estimate.as_dict() if estimate is not None else None},
        "source": lm.source, "device": str(device), "versions": versions(),
    }
    streamed = hasattr(lm, "weight_groups")
    return CompressedModel(model=lm.export_model() if streamed else model, tokenizer=lm.tokenizer, report=report,
                           spec=spec, extra_files=method_report.files,
                           weight_groups=lm.weight_groups if streamed else None)
