"""Zero-shot multiple choice by log-likelihood, as lm-eval-harness (>= 0.4) scores it.

Each choice is a (context, continuation) pair; the model scores sum log p(continuation | context).
acc picks the highest sum, acc_norm the highest sum divided by the choice's length in characters
(lm-eval's length normalization). Prompts follow lm-eval's task definitions:
  piqa           "Question: {goal}\\nAnswer:" + " {sol}"
  arc_easy/arc_challenge "Question: {question}\\nAnswer:" + " {choice}"
  openbookqa     "{question}" + " {choice}"
  hellaswag      "{activity_label}: {ctx}" + " {ending}"   (ctx already preprocessed in our copy)
  winogrande     partial scoring: context "{sentence before _}{option}", continuation " {rest}"; acc only.
Data: /work/shared/data/zeroshot/<task>.jsonl (schemas in data/SOURCES.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compression.errors import InvalidInput

TASKS = ("piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande", "openbookqa")


@dataclass(frozen=True)
class Item:
    requests: list[tuple[str, str]]  # (context, continuation) per choice
    choices: list[str]  # the text lm-eval length-normalizes by
    label: int


def _item(task: str, d: dict[str, Any]) -> Item:
    if task == "piqa":
        sols = [d["sol1"], d["sol2"]]
        return Item([(f"Question: {d['goal']}\nAnswer:", f" {s}") for s in sols], sols, int(d["label"]))
    if task in ("arc_easy", "arc_challenge"):
        ctx = f"Question: {d['question']}\nAnswer:"
        return Item([(ctx, f" {c}") for c in d["choices"]], list(d["choices"]), int(d["label"]))
    if task == "openbookqa":
        return Item([(d["question"], f" {c}") for c in d["choices"]], list(d["choices"]), int(d["label"]))
    if task == "hellaswag":
        ctx = f"{d['activity_label']}: {d['ctx']}"
        return Item([(ctx, f" {e}") for e in d["endings"]], list(d["endings"]), int(d["label"]))
    if task == "winogrande":
        cut = d["sentence"].index("_")
        rest = " " + d["sentence"][cut + 1 :].strip()
        options = [d["option1"], d["option2"]]
        return Item([(d["sentence"][:cut] + o, rest) for o in options], options, int(d["answer"]) - 1)
    raise InvalidInput(f"zero-shot task '{task}' is unknown; use one of {', '.join(TASKS)}")


def load_task(task: str, data_dir: Path, limit: int | None = None) -> list[Item]:
    """The first ``limit`` items (all if None) of ``zeroshot/<task>.jsonl``."""
    if task not in TASKS:
        raise InvalidInput(f"zero-shot task '{task}' is unknown; use one of {', '.join(TASKS)}")
    path = Path(data_dir) / "zeroshot" / f"{task}.jsonl"
    if not path.is_file():
        raise InvalidInput(f"zero-shot data {path} does not exist; check the data folder setting")
    items = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if limit is not None and len(items) >= limit:
                break
            if line.strip():
                items.append(_item(task, json.loads(line)))
    return items


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _pair_tokens(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    # lm-eval: move trailing spaces of the context onto the continuation, encode the whole string,
    # and take the continuation as what follows the context's own encoding.
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole, ctx = _encode(tokenizer, context + continuation), _encode(tokenizer, context)
    return whole[: len(ctx)], whole[len(ctx) :]


@torch.no_grad()
def loglikelihoods(model: nn.Module, tokenizer: Any, requests: Sequence[tuple[str, str]],
                   device: torch.device) -> list[float]:
    """sum log p(continuation | context) for each request, in one right-padded batch."""
    limit = getattr(model.config, "max_position_embeddings", None) or 2048
    seqs, spans = [], []
    for context, continuation in requests:
        ctx, cont = _pair_tokens(tokenizer, context, continuation)
        if not ctx:  # nothing to condition on: use the end-of-text token, as lm-eval does
            ctx = [tokenizer.eos_token_id]
        seqs.append((ctx + cont)[-limit:])  # left-truncate what does not fit
        spans.append(min(len(cont), limit - 1))
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float()
    logp = F.log_softmax(logits, dim=-1)
    out = []
    for i, (s, n) in enumerate(zip(seqs, spans)):
        positions = torch.arange(len(s) - n - 1, len(s) - 1, device=logp.device)  # predict the last n tokens
        targets = torch.tensor(s[len(s) - n :], device=logp.device)
        out.append(float(logp[i, positions, targets].sum()))
    return out


def evaluate_task(model: nn.Module, tokenizer: Any, task: str, data_dir: Path, limit: int | None = None,
                  device: torch.device | None = None,
                  progress: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """{"task", "n", "acc", "acc_norm"} (acc_norm is None for winogrande, as in lm-eval)."""
    items = load_task(task, data_dir, limit)
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = correct_norm = 0
    try:
        for k, item in enumerate(items):
            lls = loglikelihoods(model, tokenizer, item.requests, device)
            correct += int(max(range(len(lls)), key=lambda j: lls[j]) == item.label)
            normed = [ll / max(1, len(c)) for ll, c in zip(lls, item.choices)]
            correct_norm += int(max(range(len(normed)), key=lambda j: normed[j]) == item.label)
            if progress is not None:
                progress((k + 1) / len(items), f"{task} {k + 1}/{len(items)}")
    finally:
        model.train(was_training)
    n = len(items)
    return {"task": task, "n": n, "acc": correct / n,
            "acc_norm": None if task == "winogrande" else correct_norm / n}
