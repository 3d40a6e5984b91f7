"""Preflight estimate: peak device memory, peak host memory, disk and time of a job, before any weight is read.

Torch-free (the API computes it at submission): it needs only the model's config.json (shapes, dtype)
and, where present, the safetensors index or files' sizes (bytes on disk). Everything is in bytes.

Notation: h hidden size, I intermediate size, L decoder layers, V vocabulary, nh / kv attention and
key-value heads of width hd, b bytes per element of the compute dtype (4 for float32, 2 for bf16/fp16),
N calibration windows of S tokens, E evaluation windows of S_e tokens in batches of B_e.

Weights.  Each decoder layer holds q (nh*hd x h), k and v (kv*hd x h), o (h x nh*hd), gate and up
(I x h), down (h x I) and two norms; the model adds the embedding V*h, the head V*h unless tied, and
the final norm. Weights W = params * b.

Forward activations of one batch of B windows of S tokens (no autograd): the largest transient of
one layer, B*S*(4h + q + 2kv + 3I)*b (residual, normed input, q/k/v, attention output, gate, up,
their product), plus the attention scores B*nh*S*S*b, plus the logits B*S*V*b. Perplexity adds the
float32 copies it takes of the logits (the upcast, the shifted slice, log-softmax): 3*B_e*S_e*V*4.

Method working sets (on top of the weights), resident:
- svd: the largest linear's float32 SVD workspace, 4*(2*m*n + m*k + k*n), k = min(m, n).
- asvd: one calibration forward, then the SVD workspace of the scaled weight (one more m*n*4).
- svd_llm: every target's input Gram matrix in float64, one per input shared by a group of projections
  (q/k/v read one input, gate/up another): L*(3*h^2 + (nh*hd)^2 ... ) in general sum(n_in^2)*8, all
  held until their layer is factored; plus one calibration forward and the float64 whitened SVD of the
  largest linear, 8*(3*m*n + 2*n^2).
- shortgpt: one calibration forward keeping every layer's hidden states, (L+1)*S*h*b.
- grasp: Block Influence as shortgpt, the hidden states of the calibration windows cached below the
  first chosen layer, N*S*h*b, the singular factors of one block's linears (2*m*n*b each), and one
  window's backward pass: the activations autograd saves for every layer from the first chosen one up,
  S*(6h + q + 2kv + 4I)*b + nh*S*S*b per layer, plus the float32 logits and their gradient. Which
  layers Block Influence picks is unknown before the run, so the estimate takes the first chosen layer
  to be layer L - 2*n (n = layers replaced), bounded by 1; explicit options.layers are used as given.
- soco: the Gram matrices (gram_dtype), every target's full-rank factors U and B (2*m*n*4 each; the
  dense weight is dropped as it is replaced), then training batches of batch_size windows with autograd
  through all L layers, and the teacher's cached log-probabilities N*S*V*2 (at most teacher_cache_mb).

Resident peak = the dense weights + the largest of: evaluation; the method's working set; the factors
plus evaluation afterwards; and (on the CPU, where it happens) the export, which copies every saved
tensor, the artifact A, plus the largest one being serialized, V*h. The factors are (1-r) of the
decoder linears' parameters (the chosen layers' only for grasp, none for shortgpt). On the CPU a
checkpoint already in the compute dtype is memory-mapped, not copied: its pages belong to the page
cache (reclaimable), so the dense weights then count for no anonymous memory ("weights_anonymous" 0);
measured (bench/estimate_check.py) this is what the process's anonymous peak follows. The allocator
keeps freed memory for reuse, so a method that frees much (svd_llm's Gram matrices) measures up to
~15% above the estimate.

Sequential execution (one decoder layer on the device at a time): the device holds one layer's
weights and working set, or the embedding/head with one batch's logits, whichever is larger; the
calibration hidden states wait in host memory, twice (a layer's inputs and outputs), 2*N*S*h*b, and
grasp keeps every layer's inputs for its backward walk, L*N*S*h*b. With offload "cpu" the dense model
waits in host memory (W); with "disk" the host holds one layer as read from the checkpoint.

Host memory adds the runtime itself (python, torch, transformers, the tokenizer): RUNTIME_CPU
measured on CPU; RUNTIME_CUDA with an accelerator (the CUDA libraries' host allocations). On CPU the
device is the host, so host = runtime + device. Loading a resident model on an accelerator passes
through host memory once (W).

Disk: the checkpoint when it comes from the hub (the cache), the artifact (the compressed parameters
in the export dtype) and, in sequential mode, one finished layer's result per layer (resume points).

Time: floating-point work over a sustained throughput (CPU_FLOPS, CUDA_FLOPS), plus reading the
checkpoint at DISK_BYTES_PER_S once per pass in sequential mode with offload disk, plus STARTUP_SECONDS
and writing the artifact. It is given per stage (stage_seconds), which weights the overall progress
fraction (compression/progress.py). A forward costs
2 flops per weight per token plus 4*S*nh*hd per layer-token for attention; a backward twice a forward;
an m x n SVD about 20*m*n*k. It is an order of magnitude: the machine's real speed varies more.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compression.specs import JobSpec, format_bytes
from compression.specs.execution import ExecutionMode, OffloadTarget

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
RUNTIME_CPU = 300 * 2**20  # anonymous memory of the runtime before the job: measured 280-305 MiB (bench)
RUNTIME_CUDA = 1024 * 2**20  # host side with CUDA libraries loaded
CUDA_CONTEXT = 512 * 2**20  # device memory the CUDA context and kernels take outside torch's allocator
CPU_FLOPS = 20e9  # sustained float32 throughput of a small CPU worker (2 cores, measured: bench)
CUDA_FLOPS = 50e12
DISK_BYTES_PER_S = 500e6
SVD_FLOPS = 20  # per m*n*min(m, n)
STARTUP_SECONDS = 3.0  # reading the config and tokenizer, first calls into torch
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a Llama-like model; from config.json alone."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool
    dtype: str  # the checkpoint's
    checkpoint_bytes: int | None = None  # the safetensors' size on disk, where known

    @classmethod
    def from_config(cls, config: dict[str, Any], checkpoint_bytes: int | None = None) -> "ModelShape":
        def need(key: str) -> int:
            value = config.get(key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"config.json has no positive integer '{key}'; cannot estimate this model")
            return value

        hidden, heads = need("hidden_size"), need("num_attention_heads")
        kv = config.get("num_key_value_heads") or heads
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
        return cls(
            hidden=hidden, intermediate=need("intermediate_size"), layers=need("num_hidden_layers"), heads=heads,
            kv_heads=int(kv), head_dim=int(config.get("head_dim") or hidden // heads), vocab=need("vocab_size"),
            tied=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
            dtype=dtype if dtype in DTYPE_BYTES else "float32", checkpoint_bytes=checkpoint_bytes,
        )

    def linears(self) -> dict[str, tuple[int, int]]:
        """(out, in) of each projection of one decoder layer."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
                "gate_proj": (self.intermediate, h), "up_proj": (self.intermediate, h),
                "down_proj": (h, self.intermediate)}

    @property
    def layer_params(self) -> int:
        bias = (self.heads + 2 * self.kv_heads) * self.head_dim if self.qkv_bias else 0
        return sum(m * n for m, n in self.linears().values()) + bias + 2 * self.hidden

    @property
    def head_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.head_params

    @property
    def linear_params(self) -> int:
        return self.layers * sum(m * n for m, n in self.linears().values())


def read_shape(folder: Path) -> ModelShape:
    """ModelShape of a local model folder or hub snapshot: config.json, plus the safetensors size from the
    index's metadata.total_size or the files themselves (only their size is read, never a tensor)."""
    config = json.loads((folder / "config.json").read_text())
    return ModelShape.from_config(config, checkpoint_size(folder))


def checkpoint_size(folder: Path) -> int | None:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        if isinstance(total, int):
            return total
    files = sorted(folder.glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) if files else None


@dataclass
class ModeEstimate:
    mode: ExecutionMode
    offload: OffloadTarget | None
    device_bytes: int
    host_bytes: int
    disk_bytes: int
    seconds: float
    breakdown: dict[str, int] = field(default_factory=dict)

    def fits(self, device_limit: int | None, host_limit: int | None) -> bool:
        return (device_limit is None or self.device_bytes <= device_limit) and (
            host_limit is None or self.host_bytes <= host_limit)

    def describe(self) -> str:
        where = self.mode if self.offload is None else f"{self.mode} (offload {self.offload})"
        return (f"{where}: device {format_bytes(self.device_bytes)}, host {format_bytes(self.host_bytes)}, "
                f"disk {format_bytes(self.disk_bytes)}, ~{_duration(self.seconds)}")


@dataclass
class Estimate:
    """The three ways to run a job and which one `auto` (or the spec) picks under the given limits."""

    device: str  # cpu | cuda
    params: int
    weights_bytes: int
    modes: list[ModeEstimate]
    chosen: str | None  # resident | sequential; None when nothing fits
    device_limit: int | None
    host_limit: int | None
    stage_seconds: dict[str, float] = field(default_factory=dict)  # resident; weights overall progress
    version: int = SCHEMA_VERSION

    def mode(self, mode: str, offload: str | None = None) -> ModeEstimate:
        return next(m for m in self.modes if m.mode == mode and (offload is None or m.offload in (None, offload)))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def refusal(self) -> str:
        """Why no mode fits, with the numbers (for a 422 or a failed job)."""
        limits = ", ".join(f"{name} {format_bytes(v)}" for name, v in (("device", self.device_limit),
                                                                        ("host", self.host_limit)) if v)
        options = "; ".join(m.describe() for m in self.modes)
        return (f"this job does not fit the worker's memory limits ({limits}) in any execution mode: {options}. "
                "Use a smaller model, fewer or shorter calibration/evaluation windows, a 16-bit dtype, or a "
                "worker with more memory")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class _Job:
    """The spec's numbers the formulas use, with the shape, in one place."""

    def __init__(self, shape: ModelShape, spec: JobSpec) -> None:
        self.shape, self.spec = shape, spec
        self.b = DTYPE_BYTES[spec.dtype]
        c = spec.calibration
        from compression.specs import METHODS

        self.calibrated = METHODS[spec.method].requires_calibration
        self.n, self.s = (c.samples, c.seq_len) if self.calibrated else (0, 0)
        ev = spec.evaluation
        self.e_windows = (ev.max_windows or 64) if ev.enabled else 0
        self.e_seq, self.e_batch = ev.seq_len, min(ev.batch_size, max(self.e_windows, 1))
        options = spec.method_options()
        self.options = options
        # The shape model is Llama's: other families' target names (qkv_proj, c_attn, experts ...) have
        # no entry there, so their jobs are estimated as if every projection were targeted.
        linears = shape.linears()
        targets = [name for name in getattr(options, "targets", None) or () if name in linears] or list(linears)
        self.targets = {name: linears[name] for name in targets}

    # -- activations ------------------------------------------------------------------------------
    def layer_act(self, batch: int, seq: int) -> int:
        s, (q, _), (kv, _) = self.shape, self.shape.linears()["q_proj"], self.shape.linears()["k_proj"]
        return batch * seq * (4 * s.hidden + q + 2 * kv + 3 * s.intermediate) * self.b + \
            batch * s.heads * seq * seq * self.b

    def forward(self, batch: int, seq: int) -> int:
        return self.layer_act(batch, seq) + batch * seq * self.shape.vocab * self.b

    def evaluation(self) -> int:
        if not self.e_windows:
            return 0
        return self.layer_act(self.e_batch, self.e_seq) + self.e_batch * self.e_seq * self.shape.vocab * (
            self.b + 3 * 4)

    def saved_for_backward(self, layers: int, batch: int, seq: int) -> int:
        s = self.shape
        q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
        per_layer = batch * seq * (6 * s.hidden + q + 2 * kv + 4 * s.intermediate) * self.b + \
            batch * s.heads * seq * seq * self.b
        logits = 3 * batch * seq * s.vocab * 4
        return layers * per_layer + logits

    # -- per-method pieces ------------------------------------------------------------------------
    def input_groups(self) -> list[int]:
        """The width of each distinct input a Gram matrix is kept for, in one layer."""
        seen, widths = set(), []
        for name, (_, n) in self.targets.items():
            group = "qkv" if name in ("q_proj", "k_proj", "v_proj") else "gateup" if name in (
                "gate_proj", "up_proj") else name
            if group not in seen:
                seen.add(group)
                widths.append(n)
        return widths

    def grams(self, element: int = 8) -> int:
        return self.shape.layers * sum(n * n for n in self.input_groups()) * element

    def svd_workspace(self, element: int = 4, copies: int = 2) -> int:
        return max(element * (copies * m * n + m * min(m, n) + min(m, n) * n) for m, n in self.targets.values())

    def chosen_layers(self) -> tuple[int, int]:
        """(how many layers grasp replaces, the lowest of them) as the estimate assumes."""
        o, L = self.options, self.shape.layers
        if getattr(o, "layers", None):
            return len(o.layers), min(o.layers)
        count = getattr(o, "num_layers", None) or min(L - 1, math.ceil(self.spec.target_ratio * L / 0.9))
        return count, max(1, L - 2 * count)

    def factor_bytes(self) -> int:
        """The compressed linears' factors the model holds once the method ran (new tensors, never mapped)."""
        m, s, r = self.spec.method.value, self.shape, self.spec.target_ratio
        if m == "shortgpt":
            return 0
        if m == "grasp":  # the chosen layers' linears, at the rank that removes r of all of them
            count, _ = self.chosen_layers()
            return max(int((count / s.layers - r) * s.linear_params), 0) * self.b
        return int((1 - r) * s.linear_params) * self.b

    def method_working_set(self) -> dict[str, int]:
        """Bytes on top of the dense weights at the method's peak (see the module docstring)."""
        m, s = self.spec.method.value, self.shape
        calib = self.forward(1, self.s) if self.calibrated else 0
        factors = self.factor_bytes()
        if m == "svd":
            return {"factors": factors, "svd_workspace": self.svd_workspace()}
        if m == "asvd":
            return {"factors": factors, "calibration_forward": calib, "svd_workspace": self.svd_workspace(copies=3)}
        if m == "svd_llm":  # the Gram matrices are freed layer by layer as the factors are made
            widest = max(self.input_groups())
            return {"gram_matrices": self.grams(8),
                    "calibration_forward": max(calib + widest * widest * 12, self.svd_workspace(8, 3))}
        if m == "shortgpt":
            return {"calibration_forward": calib + (s.layers + 1) * self.s * s.hidden * self.b}
        if m == "grasp":
            count, lowest = self.chosen_layers()
            block = 2 * sum(mm * n for mm, n in self.targets.values()) * self.b
            return {"factors": factors, "prefix_cache": self.n * self.s * s.hidden * self.b,
                    "singular_factors": block, "backward": self.saved_for_backward(s.layers - lowest, 1, self.s)}
        if m == "soco":
            o = self.options
            gram = self.grams(DTYPE_BYTES[getattr(o, "gram_dtype", "float64")]) if getattr(
                o, "basis", "whitened") == "whitened" else 0
            spectrum = s.layers * sum(2 * mm * n * 4 for mm, n in self.targets.values())
            teacher = min(self.n * self.s * s.vocab * 2, getattr(o, "teacher_cache_mb", 0) * 2**20)
            batch = min(getattr(o, "batch_size", 1), max(self.n, 1))
            return {"gram_matrices": gram, "spectrum_factors": spectrum, "teacher_cache": teacher,
                    "backward": self.saved_for_backward(s.layers, batch, self.s)}
        raise ValueError(f"no estimate for method {m}")

    def export_bytes(self, artifact: int) -> int:
        """Writing the artifact: a CPU copy of every tensor saved, plus the largest one being serialized."""
        element = DTYPE_BYTES[self.spec.export.dtype or self.spec.dtype]
        return artifact + self.shape.vocab * self.shape.hidden * element

    def layer_working_set(self) -> int:
        """Sequential: what one layer's turn adds on the device beside its weights."""
        m = self.spec.method.value
        act = self.layer_act(1, max(self.s, self.e_seq if self.e_windows else 0))
        if m in ("svd_llm", "soco"):
            return act + sum(n * n for n in self.input_groups()) * 8 * 2 + self.svd_workspace(8, 3)
        if m == "grasp":
            return act + self.saved_for_backward(1, 1, self.s) + 2 * sum(mm * n for mm, n in self.targets.values()) * 4
        return act + self.svd_workspace(copies=3)

    # -- time -------------------------------------------------------------------------------------
    def _forward_flops(self, windows: int, seq: int) -> float:
        s = self.shape
        per_token = 2 * (s.linear_params + s.vocab * s.hidden)
        return windows * seq * (per_token + 4 * s.layers * s.heads * s.head_dim * seq)

    def compress_flops(self) -> float:
        s, m = self.shape, self.spec.method.value
        svd = sum(SVD_FLOPS * mm * n * min(mm, n) for mm, n in self.targets.values()) * s.layers
        calib = self._forward_flops(self.n, self.s)
        if m == "svd":
            return svd
        if m in ("asvd", "svd_llm"):
            return calib + svd * (1 if m == "asvd" else 3)  # SVD-LLM's SVDs run in float64
        if m == "shortgpt":
            return calib
        if m == "grasp":
            count, _ = self.chosen_layers()
            units = 1 if getattr(self.options, "order", "reference") == "one_pass" else 2 * count
            windows = getattr(self.options, "calibration_samples", None) or self.n
            return calib + units * 3 * self._forward_flops(windows, self.s) + svd * count / s.layers
        o = self.options  # soco
        steps = o.fisher_batches + o.refine_steps + o.compensate_steps
        return calib + 3 * svd + steps * 3 * self._forward_flops(o.batch_size, self.s)

    def stage_seconds(self, flops_per_s: float, weights: int) -> dict[str, float]:
        """Expected seconds of each stage of run(), resident; the progress weights come from these."""
        evaluation = self._forward_flops(self.e_windows, self.e_seq) / flops_per_s
        return {"load": STARTUP_SECONDS + weights / DISK_BYTES_PER_S,
                "calibrate": 0.5 if self.calibrated else 0.0,
                "evaluate_before": evaluation, "compress": self.compress_flops() / flops_per_s,
                "evaluate_after": evaluation, "export": 1.0 + 2 * weights / DISK_BYTES_PER_S}


def _tightest(*limits: int | None) -> int | None:
    given = [limit for limit in limits if limit]
    return min(given) if given else None


def estimate(shape: ModelShape, spec: JobSpec, *, device: str = "cpu", device_limit: int | None = None,
             host_limit: int | None = None) -> Estimate:
    """Resident and sequential (offload cpu, offload disk) peaks and time for this job on `device`
    (cpu or cuda), and the mode the spec's execution.mode resolves to under the limits (the tighter of
    the spec's own max_device_memory / max_host_memory and the worker's)."""
    job = _Job(shape, spec)
    s, b = shape, job.b
    cuda = device == "cuda"
    device_limit = _tightest(spec.execution.max_device_memory, device_limit)
    host_limit = _tightest(spec.execution.max_host_memory, host_limit)
    weights = s.params * b
    ratio = spec.target_ratio
    artifact = int((s.params - ratio * s.linear_params) * DTYPE_BYTES[spec.export.dtype or spec.dtype])
    download = 0 if spec.model.startswith("/") or "/" not in spec.model else (s.checkpoint_bytes or
                                                                              s.params * DTYPE_BYTES[s.dtype])
    runtime = RUNTIME_CUDA if cuda else RUNTIME_CPU
    stage_seconds = job.stage_seconds(CUDA_FLOPS if cuda else CPU_FLOPS, weights)
    seconds = sum(stage_seconds.values())

    working = job.method_working_set()
    factors, evaluation, export = job.factor_bytes(), job.evaluation(), job.export_bytes(artifact)
    # On CPU, a checkpoint already in the compute dtype is memory-mapped, not copied: its pages are the
    # page cache's (reclaimable), so they are not in the anonymous peak; converted weights are.
    mapped = not cuda and DTYPE_BYTES[s.dtype] == b
    dense = 0 if mapped else weights
    phases = {"evaluate": evaluation, "compress": sum(working.values()), "evaluate_after": factors + evaluation}
    resident_device = weights + max(phases.values()) + (CUDA_CONTEXT if cuda else 0) if cuda else \
        dense + max(*phases.values(), factors + export)
    resident_host = runtime + (export if cuda else resident_device)
    breakdown = {"weights": weights, "weights_anonymous": dense, **working, "factors": factors,
                 "evaluation": evaluation, "export": export, "runtime": runtime}
    modes = [ModeEstimate("resident", None, resident_device, resident_host, download + artifact, seconds, breakdown)]

    layer_bytes = s.layer_params * b
    head = s.head_params * b + job.forward(1, max(job.s, job.e_seq if job.e_windows else 0)) - job.layer_act(
        1, max(job.s, job.e_seq))
    seq_device = max(layer_bytes + job.layer_working_set(), head) + (CUDA_CONTEXT if cuda else 0)
    hidden_states = 2 * max(job.n * job.s, job.e_windows * job.e_seq) * s.hidden * b
    if spec.method.value == "grasp":
        hidden_states += s.layers * job.n * job.s * s.hidden * b
    checkpoints = artifact  # one finished layer's result per layer, written for resume
    for offload in ("cpu", "disk"):
        waiting = weights if offload == "cpu" else layer_bytes + s.layer_params * DTYPE_BYTES[s.dtype]
        host = runtime + hidden_states + waiting + (0 if cuda else seq_device)
        passes = 3 if spec.evaluation.enabled else 1
        io = passes * (s.checkpoint_bytes or weights) / DISK_BYTES_PER_S if offload == "disk" else 0.0
        modes.append(ModeEstimate("sequential", offload, seq_device, host, download + artifact + checkpoints,
                                  seconds + io, {"layer_weights": layer_bytes, "hidden_states": hidden_states,
                                                 "waiting_weights": waiting, "runtime": runtime}))

    wanted = spec.execution
    resident = modes[0]
    sequential = next(m for m in modes[1:] if m.offload == wanted.offload)
    if wanted.mode == "resident":
        chosen = "resident" if resident.fits(device_limit, host_limit) else None
    elif wanted.mode == "sequential":
        chosen = "sequential" if sequential.fits(device_limit, host_limit) else None
    else:
        chosen = "resident" if resident.fits(device_limit, host_limit) else (
            "sequential" if sequential.fits(device_limit, host_limit) else None)
    return Estimate(device="cuda" if cuda else "cpu", params=s.params, weights_bytes=weights, modes=modes,
                    chosen=chosen, device_limit=device_limit, host_limit=host_limit,
                    stage_seconds={k: round(v, 3) for k, v in stage_seconds.items()})


def estimate_for_spec(spec: JobSpec, *, model_roots: Sequence[Path], cache_dir: Path | None, cached_only: bool,
                      device: str | None = None, device_limit: int | None = None,
                      host_limit: int | None = None) -> Estimate | None:
    """The job's estimate from its model's config.json (local folder or hub cache), or None when that
    file cannot be had. The device is the spec's; for "auto" it is cuda when a device memory limit is
    declared (a worker that declares one has an accelerator), else cpu."""
    from compression.sources import metadata_folder

    folder = metadata_folder(spec.model, spec.revision, model_roots, cache_dir, cached_only=cached_only)
    if folder is None:
        return None
    if device is None:
        device = spec.device if spec.device != "auto" else ("cuda" if device_limit else "cpu")
    return estimate(read_shape(folder), spec, device=device, device_limit=device_limit, host_limit=host_limit)


def preflight(spec: JobSpec, *, model_roots: Sequence[Path], cache_dir: Path | None, device: str,
              device_limit: int | None = None, host_limit: int | None = None) -> Estimate | None:
    """The estimate a worker or the CLI computes before reading any weight (config.json may be fetched
    from the hub); raises DoesNotFit when no execution mode fits the limits. None when the model's
    config cannot be read: loading the model then reports why."""
    from compression.errors import DoesNotFit, InvalidInput

    try:
        found = estimate_for_spec(spec, model_roots=model_roots, cache_dir=cache_dir, cached_only=False,
                                  device=device, device_limit=device_limit, host_limit=host_limit)
    except (InvalidInput, ValueError, OSError):
        return None
    if found is not None and found.chosen is None:
        raise DoesNotFit(found.refusal())
    return found
