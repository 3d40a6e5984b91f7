"""Recovery fine-tuning after GRASP: train only the replaced layers' factors and norms on Alpaca.

As the reference (alpaca_grasp.py, methods.md section 1.3): Alpaca-LoRA prompt template, prompt
tokens masked out of the loss, max length 256, AdamW with linear warm-up and linear decay. The
effective batch is explicit (micro-batches with gradient accumulation), not HF Trainer's implicit
default. Everything outside the chosen layers' low-rank factors and their two norms stays frozen,
and every requires_grad flag is restored afterwards. On CUDA the forward runs under bf16 autocast.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compression.architectures import ArchSpec, decoder_layers
from compression.errors import InvalidInput
from compression.lowrank import LowRankLinear
from compression.specs import RecoveryOptions
from compression.trainable import trainable_only

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
IGNORE = -100


def load_alpaca(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise InvalidInput(f"recovery data {path} does not exist")
    records = json.loads(path.read_text())
    if not isinstance(records, list) or not all(isinstance(r, dict) and "instruction" in r for r in records):
        raise InvalidInput(f"{path} must be a JSON list of {{instruction, input, output}} records")
    return records


def encode_example(tokenizer: Any, record: dict[str, str], max_length: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with the prompt's labels masked; truncated to max_length."""
    template = PROMPT_WITH_INPUT if record.get("input") else PROMPT_NO_INPUT
    prompt = template.format(instruction=record["instruction"], input=record.get("input", ""))
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + record.get("output", ""))["input_ids"][:max_length]
    n_prompt = min(len(prompt_ids), len(full_ids))
    return full_ids, [IGNORE] * n_prompt + full_ids[n_prompt:]


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padded positions are masked and ignored by the loss."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (x, y) in enumerate(examples):
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
        mask[row, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def recovery_parameters(model: nn.Module, arch: ArchSpec, layers: list[int]) -> list[nn.Parameter]:
    """The low-rank factors (and biases) of the chosen layers plus those layers' norm weights."""
    params: list[nn.Parameter] = []
    decoder = decoder_layers(model, arch)
    for i in layers:
        for name, module in decoder[i].named_modules():
            if isinstance(module, LowRankLinear) or name in arch.norms:
                params.extend(p for p in module.parameters(recurse=True))
    unique = list({id(p): p for p in params}.values())
    if not any(isinstance(m, LowRankLinear) for i in layers for m in decoder[i].modules()):
        raise InvalidInput(f"layers {layers} hold no low-rank factors to fine-tune")
    return unique


def mean_loss(model: nn.Module, batches: list[dict[str, torch.Tensor]], device: torch.device) -> float:
    """Token-weighted mean next-token loss over the response tokens of held-out examples."""
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           use_cache=False).logits.float()
            labels = batch["labels"][:, 1:]
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
            )
            total += float(loss)
            count += int((labels != IGNORE).sum())
    return total / max(count, 1)


def recover(
    model: nn.Module, tokenizer: Any, arch: ArchSpec, layers: list[int], options: RecoveryOptions,
    data_path: Path, device: torch.device, seed: int,
    progress: Callable[[float, str], None] | None = None, check_stop: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune in place; returns steps, loss curve and held-out loss/perplexity before and after."""
    params = recovery_parameters(model, arch, layers)  # fail fast, before tokenizing
    records = load_alpaca(data_path)
    random.Random(seed).shuffle(records)
    held_out, train = records[: options.eval_samples], records[options.eval_samples :]
    if options.samples is not None:
        train = train[: options.samples]
    if not train:
        raise InvalidInput(f"no recovery training examples left after holding back {options.eval_samples}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    encoded = [encode_example(tokenizer, r, options.max_length) for r in train]
    encoded = [e for e in encoded if any(y != IGNORE for y in e[1][1:])]  # prompt filled the whole window
    eval_batches = [collate([encode_example(tokenizer, r, options.max_length) for r in held_out[i : i + 8]], pad_id)
                    for i in range(0, len(held_out), 8)]

    accumulation = options.batch_size // options.micro_batch_size
    steps_per_epoch = max(1, len(encoded) // options.batch_size)
    total_steps = steps_per_epoch * options.epochs
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)
    warmup = min(options.warmup_steps, max(1, total_steps // 10))

    optimizer = torch.optim.AdamW(params, lr=options.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup))
    )
    before = mean_loss(model.eval(), eval_batches, device) if eval_batches else None
    use_autocast = torch.device(device).type == "cuda"
    losses: list[float] = []
    started = time.perf_counter()
    order = list(range(len(encoded)))
    rng = random.Random(seed + 1)
    step = 0
    with trainable_only(model, params, train=True), torch.enable_grad():
        while step < total_steps:
            rng.shuffle(order)
            for first in range(0, len(order) - options.batch_size + 1, options.batch_size):
                if step >= total_steps:
                    break
                if check_stop is not None:
                    check_stop()
                step_loss = 0.0
                for micro in range(accumulation):
                    at = first + micro * options.micro_batch_size
                    batch = collate([encoded[j] for j in order[at : at + options.micro_batch_size]], pad_id)
                    batch = {k: v.to(device) for k, v in batch.items()}
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_autocast):
                        loss = model(**batch, use_cache=False).loss / accumulation
                    loss.backward()
                    step_loss += float(loss.detach())
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(round(step_loss, 4))
                step += 1
                if progress is not None:
                    progress(step / total_steps, f"step {step}/{total_steps} loss {step_loss:.3f}")
    model.eval()
    after = mean_loss(model, eval_batches, device) if eval_batches else None
    result: dict[str, Any] = {
        "steps": step, "examples_seen": step * options.batch_size, "train_examples": len(encoded),
        "loss_curve": losses, "seconds": round(time.perf_counter() - started, 2),
        "trainable_params": sum(p.numel() for p in params),
    }
    if before is not None and after is not None:
        result.update(heldout_loss_before=before, heldout_loss_after=after,
                      heldout_ppl_before=math.exp(before), heldout_ppl_after=math.exp(after))
    return result
