"""run(): the one entry point the worker and the CLI call. Load -> calibrate -> evaluate -> compress
-> evaluate -> export, with progress and cancel hooks and a report that records how every number was made.

The library never reads environment variables: where models and data may come from arrives in
RunSettings. Randomness is seeded locally (torch.random.fork_rng + saved random/numpy state), so
the caller's global RNG is left exactly as it was.
"""

from __future__ import annotations

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
from compression.models import LoadedModel, load_model, max_positions, resolve_device
from compression.specs import JobSpec, Method, check_fit
from compression.specs.fit import DEFAULT_TOLERANCE
from compression.surgery import count_params, decoder_linear_params

STAGES = ("load", "calibrate", "evaluate_before", "compress", "evaluate_after", "export")
Progress = Callable[[str, float, str], None]


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


class _Stages:
    """Times each stage, records its peak memory, reports progress and polls should_stop around it."""

    def __init__(self, progress: Progress | None, should_stop: Callable[[], bool] | None, device: torch.device):
        self.progress = progress or (lambda stage, fraction, message: None)
        self.should_stop = should_stop or (lambda: False)
        self.device = device
        self.timer = StageTimer()
        self.peaks: dict[str, int] = {}
        self.peak_kind = ""

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


def _calibration_record(spec: JobSpec, calib: torch.Tensor | None) -> dict[str, Any] | None:
    if calib is None:
        return None
    c = spec.calibration
    if c.source == "dataset":
        file, split = c.dataset_id, "uploaded dataset"
    else:
        file, split = (c.path, "user file") if c.source == "file" else CALIBRATION_FILES[c.source]
    return {**c.model_dump(mode="json"), "file": file, "split": split, "tokens": int(calib.numel()),
            "seed": spec.seed, "sampling": "uniform random window starts, torch.Generator(seed)"}


def run(
    spec: JobSpec | dict[str, Any],
    out_dir: Path,
    *,
    settings: RunSettings,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Compress spec.model as spec says and write the artifact folder at out_dir."""
    from compression import methods

    spec = spec if isinstance(spec, JobSpec) else JobSpec.model_validate(spec)
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise InvalidInput(f"output folder {out_dir} already exists; choose a new one")
    try:
        compressor = methods.get(spec.method)
    except KeyError as exc:
        raise InvalidInput(str(exc.args[0])) from None
    device = resolve_device(spec.device)
    if spec.calibration.source == "file" and compressor.info.requires_calibration:
        check_user_file(spec.calibration.path or "", settings.data_roots)  # fail before loading a model
    if spec.calibration.source == "dataset" and compressor.info.requires_calibration:
        dataset_file(spec.calibration.dataset_id, settings.datasets)
    if spec.evaluation.enabled and spec.evaluation.corpus == "dataset":
        dataset_file(spec.evaluation.dataset_id, settings.datasets)
    estimate = preflight(spec, model_roots=settings.model_roots, cache_dir=settings.cache_dir, device=device.type,
                         device_limit=settings.device_memory_limit, host_limit=settings.host_memory_limit)
    stages = _Stages(progress, should_stop, device)
    try:
        with seeded(spec.seed, device):
            return _run(spec, out_dir, settings, compressor, stages, device, estimate)
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


def _run(spec: JobSpec, out_dir: Path, settings: RunSettings, compressor: Any, stages: _Stages,
         device: torch.device, estimate: Estimate | None) -> RunResult:
    from compression.methods import CompressionContext

    with stages.stage("load", f"loading {spec.model}"):
        lm: LoadedModel = load_model(spec.model, spec.revision, model_roots=settings.model_roots,
                                     cache_dir=settings.cache_dir, dtype=spec.dtype, device=device,
                                     max_download_bytes=settings.max_download_bytes,
                                     check=config_checks(spec, settings))
    model, limit = lm.model, max_positions(lm.model)
    if spec.evaluation.enabled and limit is not None and spec.evaluation.seq_len > limit:
        raise InvalidInput(f"evaluation.seq_len {spec.evaluation.seq_len} exceeds the model's maximum of {limit}")

    calib = None
    with stages.stage("calibrate", f"calibration windows from {spec.calibration.source}"):
        if compressor.info.requires_calibration:
            calib = calibration_windows(lm.tokenizer, spec.calibration, settings.data_dir, settings.data_roots,
                                        spec.seed, max_positions=limit, datasets=settings.datasets)

    ev, tokens, ppl_before = spec.evaluation, None, None
    with stages.stage("evaluate_before", f"perplexity on {ev.corpus}" if ev.enabled else "evaluation disabled"):
        if ev.enabled:
            dataset = dataset_file(ev.dataset_id, settings.datasets) if ev.corpus == "dataset" else None
            tokens = eval_tokens(lm.tokenizer, ev.corpus, settings.data_dir, dataset)
            ppl_before = perplexity(model, tokens, ev.seq_len, ev.max_windows, ev.batch_size, device,
                                    progress=stages.reporter("evaluate_before"))

    params_before, linear_before = count_params(model), decoder_linear_params(model, lm.arch)
    with stages.stage("compress", f"{spec.method.value} toward ratio {spec.target_ratio}"):
        ctx = CompressionContext(
            model=model, tokenizer=lm.tokenizer, arch=lm.arch, options=spec.method_options(),
            target_ratio=spec.target_ratio, calibration=calib, device=device, seed=spec.seed,
            data_dir=settings.data_dir, ratio_tolerance=settings.ratio_tolerance,
            progress=stages.reporter("compress"), should_stop=stages.should_stop,
        )
        method_report = compressor.compress(ctx)
    params_after, linear_after = count_params(model), decoder_linear_params(model, lm.arch)
    achieved = 1.0 - linear_after / linear_before
    if abs(achieved - spec.target_ratio) > settings.ratio_tolerance:
        raise RatioNotReached(
            f"{spec.method.value} removed {achieved:.4f} of the decoder linear parameters but the target was "
            f"{spec.target_ratio:.4f} (tolerance {settings.ratio_tolerance:.4f})"
        )

    ppl_after = None
    with stages.stage("evaluate_after", f"perplexity on {ev.corpus}" if ev.enabled else "evaluation disabled"):
        if ev.enabled and tokens is not None:
            ppl_after = perplexity(model, tokens, ev.seq_len, ev.max_windows, ev.batch_size, device,
                                   progress=stages.reporter("evaluate_after"))

    calibration = _calibration_record(spec, calib)
    if calibration is not None and "routed_tokens" in method_report.details:  # mixture of experts
        calibration["routed_tokens"] = method_report.details.pop("routed_tokens")
    report: dict[str, Any] = {
        "method": spec.method.value, "target_ratio": spec.target_ratio,
        "achieved_ratio": achieved, "achieved_ratio_total": 1.0 - params_after / params_before,
        "params_before": params_before, "params_after": params_after,
        "decoder_linear_params_before": linear_before, "decoder_linear_params_after": linear_after,
        "metrics": {"ppl_before": ppl_before, "ppl_after": ppl_after, **method_report.metrics},
        "protocol": _protocol(spec, 0 if tokens is None else int(tokens.numel())),
        "calibration": calibration,
        "spec": spec.model_dump(mode="json"), "method_details": method_report.details,
        # What was asked, what `auto` resolved to from the preflight estimate, and what ran: every run is
        # resident until the layer-streaming engine lands.
        "execution": {"requested": spec.execution.model_dump(mode="json"), "mode": "resident",
                      "resolved": estimate.chosen if estimate is not None else None,
                      "estimate": estimate.as_dict() if estimate is not None else None},
        "source": lm.source, "device": str(device), "versions": versions(),
    }
    with stages.stage("export", f"writing {out_dir.name}"):
        # compression.json is written inside this stage, so it lists every stage's time but export's own.
        report["metrics"].update(seconds=dict(stages.timer.seconds), peak_memory_bytes=max(stages.peaks.values()),
                                 peak_memory_by_stage=dict(stages.peaks), peak_memory_kind=stages.peak_kind)
        files = export(model, lm.tokenizer, out_dir, report=report, dense=spec.export.dense,
                       dtype=spec.export.dtype, extra_files=method_report.files)
    report["metrics"]["seconds"] = dict(stages.timer.seconds)
    report["metrics"]["peak_memory_by_stage"] = dict(stages.peaks)
    return RunResult(out_dir=out_dir, report=report, files=files)
