"""The artifact's model card (README.md): Hugging Face front matter, what was done, how it scores, how to load it.

Built from the run's report only, so the card and compression.json can never disagree.
"""

from __future__ import annotations

import json
from typing import Any

CARD_NAME = "README.md"
FIGURE_NAME = "rank_allocation.png"


def render_card(report: dict[str, Any], *, low_rank: bool, files: list[str]) -> str:
    """The card's text. ``low_rank``: the artifact stores factors (needs Spectra's code to load)."""
    from huggingface_hub import ModelCardData

    source = report.get("source") or {}
    method = str(report.get("method", "unknown"))
    data = ModelCardData(
        base_model=source.get("ref") if source.get("kind") == "hub" else None,
        license=source.get("license"),
        tags=["spectra", "compressed", method, "low-rank" if low_rank else "dense"],
        pipeline_tag="text-generation",
        library_name="transformers",
    )
    parts = [f"---\n{data.to_yaml()}\n---\n", _summary(report, method, source)]
    parts.append(_evaluation(report))
    if FIGURE_NAME in files:
        parts.append(f"## Rank allocation\n\nKept rank of every matrix by layer and module type:\n\n"
                     f"![rank allocation]({FIGURE_NAME})\n")
    parts.append(_loading(low_rank))
    return "\n".join(parts)


def _name(source: dict[str, Any]) -> str:
    ref = str(source.get("ref") or "a model held in memory")
    return ref.rstrip("/").rsplit("/", 1)[-1] if source.get("kind") == "local" else ref


def _summary(report: dict[str, Any], method: str, source: dict[str, Any]) -> str:
    def pct(key: str) -> str:
        value = report.get(key)
        return "-" if value is None else f"{100 * value:.1f}%"

    lines = [
        f"# {_name(source)}, compressed with Spectra ({method}, ratio {report.get('target_ratio')})",
        "",
        f"Made from `{_name(source)}` by Spectra with the `{method}` method.",
        "",
        "| | |",
        "|---|---|",
        f"| method | `{method}` |",
        f"| target ratio (decoder-layer linear parameters removed) | {pct('target_ratio')} |",
        f"| achieved ratio | {pct('achieved_ratio')} of decoder-layer linears, {pct('achieved_ratio_total')} "
        "of the whole model |",
        f"| parameters | {_int(report.get('params_before'))} -> {_int(report.get('params_after'))} |",
    ]
    metrics = report.get("metrics") or {}
    if metrics.get("weight_bytes_before") is not None or metrics.get("weight_bytes_after") is not None:
        lines.append(f"| weight bytes | {_int(metrics.get('weight_bytes_before'))} -> "
                     f"{_int(metrics.get('weight_bytes_after'))} |")
    options = (report.get("spec") or {}).get("options")
    if options:
        lines.append(f"| options | `{json.dumps(options, sort_keys=True)}` |")
    calibration = report.get("calibration")
    if calibration:
        lines.append(f"| calibration | {calibration.get('source')}: {calibration.get('samples')} windows of "
                     f"{calibration.get('seq_len')} tokens, seed {calibration.get('seed')} |")
    return "\n".join(lines) + "\n"


def _int(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _evaluation(report: dict[str, Any]) -> str:
    metrics = report.get("metrics") or {}
    protocol = report.get("protocol")
    zeroshot = report.get("zeroshot_protocol")
    if not protocol and not zeroshot:
        return "## Evaluation\n\nNot evaluated (evaluation was disabled for this run).\n"
    rows = ["| metric | before | after |", "|---|---|---|"]
    if protocol:
        rows.append(f"| perplexity ({protocol['corpus']}) | {_num(metrics.get('ppl_before'))} | "
                    f"{_num(metrics.get('ppl_after'))} |")
    before, after = metrics.get("zeroshot_before") or {}, metrics.get("zeroshot_after") or {}
    for task in before:
        for key in ("acc", "acc_norm"):
            if (before[task] or {}).get(key) is not None:
                rows.append(f"| {task} {key} | {_num(before[task][key])} | "
                            f"{_num((after.get(task) or {}).get(key))} |")
    text = ["## Evaluation", "", *rows, "", "Protocol:"]
    if protocol:
        text.append(f"- perplexity: `{protocol['file']}` ({protocol['split']}), {protocol['windows']} "
                    f"non-overlapping windows of {protocol['seq_len']} tokens, computed in {protocol['dtype']}: "
                    f"{protocol['formula']}.")
    if zeroshot:
        text.append(f"- zero-shot: {zeroshot['scoring']}; the first {zeroshot['limit'] or 'all'} items of each "
                    f"task ({', '.join(zeroshot['tasks'])}).")
    return "\n".join(text) + "\n"


def _loading(low_rank: bool) -> str:
    if not low_rank:
        return (
            "## How to load\n\nPATH is this folder (or the hub repository holding it); a plain transformers "
            "architecture:\n\n```python\n"
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            'model = AutoModelForCausalLM.from_pretrained("PATH")\n'
            'tokenizer = AutoTokenizer.from_pretrained("PATH")\n```\n'
        )
    return (
        "## How to load\n\nPATH is this folder (or the hub repository holding it). "
        "The low-rank layers are stored as two factors each, which stock transformers classes do not know; "
        "loading without custom code raises instead of returning a wrong model. Three ways:\n\n"
        "1. transformers with the modeling file shipped in this folder:\n\n```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'model = AutoModelForCausalLM.from_pretrained("PATH", trust_remote_code=True)\n'
        'tokenizer = AutoTokenizer.from_pretrained("PATH", trust_remote_code=True)\n```\n\n'
        "2. Spectra's loader (no remote code runs; checks every file's sha256):\n\n```python\n"
        "from compression.export import load_compressed\n\n"
        'loaded = load_compressed("PATH")  # loaded.model, loaded.tokenizer\n```\n\n'
        "3. A dense copy for runtimes without custom code (vLLM, llama.cpp, ...): compress again with "
        "`--dense` (`export.dense: true`); it loads as the stock architecture but saves no memory.\n"
    )
