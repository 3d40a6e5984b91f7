"""Command line: ``python -m compression.cli compress MODEL --method M --ratio R --out DIR`` and ``... methods``.

The same run() the worker calls, with an overall bar (ETA) and a stage bar on a terminal, plain progress lines
otherwise, and a before/after table at the end.
Where models and data may come from is read from the environment here (the library never reads it):
SPECTRA_MODEL_ROOTS and SPECTRA_DATA_ROOTS (os.pathsep-separated folders), SPECTRA_DATA_DIR (default
../shared/data beside the repository, if it exists), SPECTRA_HF_CACHE_DIR (hub cache; default: HF's own),
the same names the service reads. A model folder or calibration file named on the command line is used
as it is, with no root setting needed.
Bad input exits with status 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from compression.errors import Cancelled, InvalidInput, SpectraError
from compression.specs import EXECUTION_MODES, METHODS, OFFLOAD_TARGETS, JobSpec

REPO = Path(__file__).resolve().parents[1]
EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        _exit(message)


def _exit(message: str) -> Any:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


def parse_option(text: str) -> tuple[list[str], Any]:
    """'recovery.enabled=true' -> (['recovery', 'enabled'], True); values are JSON when they parse."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise InvalidInput(f"--option expects key=value, got '{text}'")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def options_dict(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        path, value = parse_option(item)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InvalidInput(f"--option {item}: '{part}' was already given a plain value")
        node[path[-1]] = value
    return out


def _paths(name: str) -> tuple[Path, ...]:
    return tuple(Path(p) for p in os.environ.get(name, "").split(os.pathsep) if p)


def settings_from_env(spec: JobSpec | None = None) -> Any:
    """RunSettings from SPECTRA_* variables, plus the model folder and calibration file the user named."""
    from compression.run import RunSettings

    default_data = REPO.parent / "shared" / "data"
    data_dir = Path(os.environ["SPECTRA_DATA_DIR"]) if os.environ.get("SPECTRA_DATA_DIR") else default_data
    data_roots = _paths("SPECTRA_DATA_ROOTS") or (data_dir,)
    model_roots = _paths("SPECTRA_MODEL_ROOTS")
    # On the user's own machine what they name on the command line is theirs to use: the allowed roots
    # confine the service, not them.
    if spec is not None and spec.model.startswith("/") and Path(spec.model).is_dir():
        model_roots += (Path(spec.model),)
    if spec is not None and spec.calibration.path and spec.calibration.path.startswith("/"):
        data_roots += (Path(spec.calibration.path),)
    cache = os.environ.get("SPECTRA_HF_CACHE_DIR")
    return RunSettings(model_roots=model_roots, data_dir=data_dir, data_roots=data_roots,
                       cache_dir=Path(cache) if cache else None)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spectra", description="Compress a causal LM (SVD family / layer removal).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    methods = sub.add_parser("methods", help="list methods, their settings and defaults")
    methods.add_argument("--json", action="store_true", help="print each method's JSON Schema")
    c = sub.add_parser("compress", help="compress MODEL and write an artifact folder")
    c.add_argument("model", help="hub id 'org/name', a model folder (path), or a folder name under SPECTRA_MODEL_ROOTS")
    c.add_argument("--method", required=True, choices=[m.value for m in METHODS])
    c.add_argument("--ratio", required=True, type=float, help="fraction of decoder linear parameters to remove")
    c.add_argument("--out", required=True, type=Path, help="artifact folder to create (must not exist)")
    c.add_argument("--revision", help="hub branch, tag or commit")
    c.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="method setting, repeatable; JSON values; dotted keys for nested settings")
    c.add_argument("--calib-source", default=None, help="wikitext2 | c4 | tinystories | alpaca | file")
    c.add_argument("--calib-path", default=None, help="with --calib-source file: a .txt or .jsonl file")
    c.add_argument("--calib-samples", type=int, default=None)
    c.add_argument("--calib-seq-len", type=int, default=None)
    c.add_argument("--eval-corpus", default=None, help="wikitext2 | tinystories")
    c.add_argument("--eval-seq-len", type=int, default=None)
    c.add_argument("--eval-windows", type=int, default=None, help="score only the first N windows")
    c.add_argument("--eval-batch-size", type=int, default=None)
    c.add_argument("--no-eval", action="store_true", help="skip perplexity before/after")
    c.add_argument("--device", default=None, help="auto | cpu | cuda")
    c.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16")
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--execution", default=None, choices=list(EXECUTION_MODES),
                   help="resident: whole model on the device; sequential: one decoder layer at a time; "
                   "auto (default): resident when the preflight estimate fits, sequential otherwise")
    c.add_argument("--offload", default=None, choices=list(OFFLOAD_TARGETS),
                   help="sequential mode: layers wait in host memory (cpu, default) or on disk")
    c.add_argument("--max-device-memory", default=None, metavar="SIZE",
                   help="device memory the job may use: bytes or e.g. 24GiB (default: no limit)")
    c.add_argument("--max-host-memory", default=None, metavar="SIZE",
                   help="host memory the job may use: bytes or e.g. 64GiB (default: no limit)")
    c.add_argument("--dense", action="store_true", help="merge factors into plain weights on export")
    c.add_argument("--export-dtype", default=None, help="weights dtype of the artifact")
    c.add_argument("--quiet", action="store_true", help="no progress output and no summary table")
    return parser


def spec_from_args(args: argparse.Namespace) -> JobSpec:
    def given(**kv: Any) -> dict[str, Any]:
        return {k: v for k, v in kv.items() if v is not None}

    calib_path = str(Path(args.calib_path).resolve()) if args.calib_path and Path(args.calib_path).is_file() \
        else args.calib_path
    calibration = given(source=args.calib_source, path=calib_path, samples=args.calib_samples,
                        seq_len=args.calib_seq_len)
    evaluation = given(corpus=args.eval_corpus, seq_len=args.eval_seq_len, max_windows=args.eval_windows,
                       batch_size=args.eval_batch_size)
    if args.no_eval:
        evaluation["enabled"] = False
    export = given(dtype=args.export_dtype)
    execution = given(mode=args.execution, offload=args.offload, max_device_memory=args.max_device_memory,
                      max_host_memory=args.max_host_memory)
    if args.dense:
        export["dense"] = True
    return JobSpec.model_validate(given(
        model=_absolute_if_local(args.model), revision=args.revision, method=args.method, target_ratio=args.ratio,
        options=options_dict(args.option), calibration=calibration, evaluation=evaluation, export=export,
        execution=execution, device=args.device, dtype=args.dtype, seed=args.seed,
    ))


def _absolute_if_local(model: str) -> str:
    """A folder the user names (relative or not) becomes its absolute path; anything else stays a hub id or name."""
    path = Path(model).expanduser()
    return str(path.resolve()) if ("/" in model or model.startswith(".")) and path.is_dir() else model


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors())


def describe_methods(as_json: bool) -> str:
    if as_json:
        return json.dumps({m.value: info.options.model_json_schema() for m, info in METHODS.items()}, indent=2)
    lines: list[str] = []
    for method, info in METHODS.items():
        calib = "needs calibration data" if info.requires_calibration else "no calibration data"
        lines.append(f"{method.value}: {info.summary} ({calib}){' ' + info.paper if info.paper else ''}")
        lines += _describe_fields(info.options, indent="    ")
    return "\n".join(lines)


def _describe_fields(model: type[BaseModel], indent: str) -> list[str]:
    lines = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines.append(f"{indent}{name}.*: {f.description or ann.__doc__ or ''}".rstrip())
            lines += _describe_fields(ann, indent + "    ")
            continue
        default = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
        lines.append(f"{indent}{name} = {json.dumps(default)}  {f.description or ''}".rstrip())
    return lines


def summary_table(report: dict[str, Any]) -> str:
    m = report["metrics"]

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:,.4g}" if isinstance(v, float) else f"{v:,}"

    export = report.get("export") or {}
    dense = bool(export.get("dense"))
    rows = [
        ("parameters (whole model)", fmt(report["params_before"]), fmt(report["params_after"])),
        *([("parameters in the artifact", fmt(report["params_before"]), fmt(export.get("params")))] if dense else []),
        ("weight bytes", fmt(m.get("weight_bytes_before")), fmt(m.get("weight_bytes_after"))),
        ("decoder linear parameters", fmt(report["decoder_linear_params_before"]),
         fmt(report["decoder_linear_params_after"])),
        (f"perplexity ({(report.get('protocol') or {}).get('corpus', 'off')})", fmt(m.get("ppl_before")),
         fmt(m.get("ppl_after"))),
    ]
    out = [f"{'':28}{'before':>16}{'after':>16}"] + [f"{a:28}{b:>16}{c:>16}" for a, b, c in rows]
    out.append(f"ratio removed: {report['achieved_ratio']:.4f} of decoder linears (target "
               f"{report['target_ratio']}), {report['achieved_ratio_total']:.4f} of the whole model")
    if dense:
        out.append("dense export: the factors were multiplied back into full matrices, so the artifact has the "
                   "original parameter count (it loads anywhere but is not smaller)")
    out.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in m["seconds"].items()))
    out.append(f"peak memory: {m['peak_memory_bytes'] / 2**20:,.0f} MiB ({m['peak_memory_kind']})")
    return "\n".join(out)


def _quiet_libraries() -> None:
    """transformers' and the hub's own bars and notices would interleave with ours (and ignore --quiet)."""
    import huggingface_hub.utils
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def status_line(snapshot: Any) -> str:
    """'37% overall, layer 11/30, ETA 2 min: whitened SVD'"""
    parts = [f"{snapshot.fraction:.0%} overall"]
    if snapshot.layer is not None:
        parts.append(f"layer {snapshot.layer}/{snapshot.layers}")
    if snapshot.eta_seconds is not None:
        eta = snapshot.eta_seconds
        parts.append(f"ETA {eta:.0f} s" if eta < 90 else f"ETA {eta / 60:.0f} min")
    text = ", ".join(parts)
    message = snapshot.message.split(": ", 1)[-1] if snapshot.layer is not None else snapshot.message
    return f"{text}: {message}" if message else text


def describe_estimate(estimate: Any) -> str:
    lines = [f"preflight estimate ({estimate.params:,} parameters on {estimate.device}; execution: "
             f"{estimate.chosen or 'does not fit'}):"]
    lines += [f"  {mode.describe()}" for mode in estimate.modes]
    return "\n".join(lines)


def _compress(args: argparse.Namespace) -> int:
    from compression.cli_progress import ProgressDisplay
    from compression.estimate import preflight
    from compression.models import resolve_device
    from compression.run import run

    spec = spec_from_args(args)
    _quiet_libraries()
    settings = settings_from_env(spec)
    # Before any weight is read: the model's config.json alone (raises DoesNotFit, exit 2, past the limits).
    estimate = preflight(spec, model_roots=settings.model_roots, cache_dir=settings.cache_dir,
                         device=resolve_device(spec.device).type)
    if estimate is not None and not args.quiet:
        print(describe_estimate(estimate), flush=True)
    display = ProgressDisplay(args.quiet, estimate.stage_seconds if estimate is not None else None)
    try:
        result = run(spec, args.out, settings=settings, progress=display)
    finally:
        display.close()
    if not args.quiet:
        print(summary_table(result.report))
    print(f"artifact: {result.out_dir} ({len(result.files)} files)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "methods":
            print(describe_methods(args.json))
            return 0
        return _compress(args)
    except ValidationError as exc:
        print(f"error: {_validation_message(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InvalidInput as exc:
        hint = " (allowed folders come from SPECTRA_MODEL_ROOTS / SPECTRA_DATA_ROOTS)" if "root" in str(exc) else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return 130
    except SpectraError as exc:  # e.g. RatioNotReached: a valid request the method could not satisfy
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
