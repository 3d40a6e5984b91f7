"""Seeded calibration windows and held-out evaluation text.

Calibration corpora (files under the data folder):
  wikitext2   -> wikitext-2-tokenized/valid.txt. The raw WikiText-2 *train* split that SVD-LLM / GRASP
                 sample from is not available offline here, so the (tokenized, <unk>) validation split
                 stands in; the report's protocol says so.
  c4          -> c4/c4-en-train.00000.first1000.jsonl, field "text", documents joined by blank lines.
  tinystories -> tinystories/TinyStories-train.head197k.txt (train head).
  alpaca      -> alpaca/alpaca_data.subset5000.json, each example rendered with the Alpaca prompt.
  file        -> a user .txt, or .jsonl with field "text", that must lie under an allowed data root.
  texts       -> strings given inline in the spec, joined by blank lines.
  dataset     -> a dataset uploaded to the service: the caller (the worker) has downloaded it and passes
                 its local .txt / .jsonl file in ``datasets`` (dataset id -> path).
Windows start at uniformly drawn character offsets (as SVD-LLM's sampler does), drawn with a private
torch.Generator seeded by ``seed``, so the caller's global RNG is untouched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from compression.errors import InvalidInput
from compression.roots import find_data_file
from compression.specs import CalibrationSpec

CALIBRATION_FILES = {
    "wikitext2": ("wikitext-2-tokenized/valid.txt", "validation (tokenized; raw train split unavailable)"),
    "c4": ("c4/c4-en-train.00000.first1000.jsonl", "train (first 1000 documents)"),
    "tinystories": ("tinystories/TinyStories-train.head197k.txt", "train (head)"),
    "alpaca": ("alpaca/alpaca_data.subset5000.json", "train (5000-example subset)"),
}
EVAL_FILES = {
    "wikitext2": ("wikitext-2-raw/wiki.test.raw", "test (raw)"),
    "tinystories": ("tinystories/TinyStories-valid.head16k.txt", "validation (head, <|endoftext|> dropped)"),
}
ALPACA_PROMPT = (
    "Below is an instruction that describes a task{ctx}. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{instruction}\n\n{input}### Response:\n{output}"
)


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        # The server's folder is not the tenant's business: name only the file the operator must provide.
        raise InvalidInput(f"{what} file {path.name} is missing from this server's data folder; ask the "
                           "operator to install it (SPECTRA_DATA_DIR)")
    return path


def _render_alpaca(example: dict[str, Any]) -> str:
    extra = example.get("input") or ""
    return ALPACA_PROMPT.format(
        ctx=", paired with an input that provides further context" if extra else "",
        instruction=example.get("instruction", ""),
        input=f"### Input:\n{extra}\n\n" if extra else "",
        output=example.get("output", ""),
    )


def _read_jsonl_text(path: Path) -> str:
    docs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path} line {n} is not valid JSON: {exc.msg}") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InvalidInput(f"{path} line {n} has no string field 'text'")
        docs.append(record["text"])
    return "\n\n".join(docs)


def check_user_file(path: str, data_roots: Sequence[Path]) -> Path:
    """The resolved path (symlinks followed) of a user .txt/.jsonl under an allowed data root."""
    return find_data_file(path, data_roots)


def user_file_text(path: str, data_roots: Sequence[Path]) -> str:
    """Text of a user .txt/.jsonl under an allowed data root."""
    resolved = check_user_file(path, data_roots)
    if resolved.suffix == ".txt":
        return resolved.read_text(encoding="utf-8")
    return _read_jsonl_text(resolved)


def dataset_file(dataset_id: str | None, datasets: Mapping[str, Path]) -> Path:
    """The local file the caller resolved for an uploaded dataset's id."""
    if dataset_id not in datasets:
        raise InvalidInput(f"dataset {dataset_id} is not available here: datasets uploaded with POST /v1/datasets "
                           "are used by the service's worker; locally, use calibration.source 'file' with its path")
    path = Path(datasets[dataset_id])
    if path.suffix not in (".txt", ".jsonl"):
        raise InvalidInput(f"dataset file {path.name} must be .txt or .jsonl")
    return _require(path, "dataset")


def dataset_text(path: Path) -> str:
    """A resolved dataset file's text: a .txt as it is, a .jsonl's texts joined by blank lines."""
    return path.read_text(encoding="utf-8") if path.suffix == ".txt" else _read_jsonl_text(path)


def calibration_text(spec: CalibrationSpec, data_dir: Path, data_roots: Sequence[Path] = (),
                     datasets: Mapping[str, Path] | None = None) -> str:
    if spec.source == "texts":
        assert spec.texts is not None  # CalibrationSpec guarantees it
        return "\n\n".join(spec.texts)
    if spec.source == "dataset":
        return dataset_text(dataset_file(spec.dataset_id, datasets or {}))
    if spec.source == "file":
        assert spec.path is not None  # CalibrationSpec guarantees it
        return user_file_text(spec.path, data_roots)
    path = _require(Path(data_dir) / CALIBRATION_FILES[spec.source][0], f"{spec.source} corpus")
    if spec.source == "c4":
        return _read_jsonl_text(path)
    if spec.source == "alpaca":
        return "\n\n".join(_render_alpaca(e) for e in json.loads(path.read_text(encoding="utf-8")))
    return path.read_text(encoding="utf-8")


def tokenize(tokenizer: Any, text: str) -> torch.Tensor:
    """1-D LongTensor of the whole text (the tokenizer's own special tokens, e.g. Llama's BOS, kept)."""
    ids = tokenizer(text, return_attention_mask=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def calibration_windows(
    tokenizer: Any,
    spec: CalibrationSpec,
    data_dir: Path,
    data_roots: Sequence[Path] = (),
    seed: int = 0,
    *,
    max_positions: int | None = None,
    datasets: Mapping[str, Path] | None = None,
) -> torch.Tensor:
    """LongTensor [spec.samples, spec.seq_len] of seeded random windows of the corpus.

    Like SVD-LLM, windows start at random *character* offsets of the joined text: each window
    tokenizes only a span around its offset (cost grows with samples x seq_len, not with the
    corpus) and drops the span's first token, which may be a word cut in half.
    """
    if max_positions is not None and spec.seq_len > max_positions:
        raise InvalidInput(
            f"calibration.seq_len {spec.seq_len} exceeds the model's maximum of {max_positions} positions"
        )
    text = calibration_text(spec, data_dir, data_roots, datasets)
    gen = torch.Generator().manual_seed(seed)
    probe = text[:20_000]
    chars_per_token = len(probe) / max(1, len(_ids(tokenizer, probe)))
    span = int(spec.seq_len * chars_per_token * 1.5) + 64
    if len(text) < 4 * span:  # small text: tokenize it whole and pick token offsets
        ids = tokenize(tokenizer, text)
        if ids.numel() <= spec.seq_len:
            raise InvalidInput(
                f"the {spec.source} calibration text has only {ids.numel()} tokens, too short for windows of "
                f"{spec.seq_len}; use a shorter calibration.seq_len or a longer text"
            )
        starts = torch.randint(0, ids.numel() - spec.seq_len, (spec.samples,), generator=gen)
        return torch.stack([ids[s : s + spec.seq_len] for s in starts.tolist()])
    windows = []
    for start in torch.randint(0, len(text) - span, (spec.samples,), generator=gen).tolist():
        ids, width = [], span
        while len(ids) < spec.seq_len + 1:
            ids = _ids(tokenizer, text[start : start + width])
            if start + width >= len(text) and len(ids) < spec.seq_len + 1:
                start, ids = max(0, start - width), []  # ran off the end: step back and retry
            width *= 2
        windows.append(torch.tensor(ids[1 : spec.seq_len + 1], dtype=torch.long))
    return torch.stack(windows)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"])


def eval_text(corpus: str, data_dir: Path, dataset: Path | None = None) -> str:
    """The held-out text: a named corpus, or (corpus 'dataset') the resolved file of an uploaded dataset."""
    if corpus == "dataset":
        if dataset is None:
            raise InvalidInput("evaluation.corpus 'dataset' needs the dataset's file; datasets uploaded with "
                               "POST /v1/datasets are used by the service's worker")
        return dataset_text(dataset)
    if corpus not in EVAL_FILES:
        raise InvalidInput(f"evaluation corpus '{corpus}' is unknown; use one of {', '.join(EVAL_FILES)}")
    text = _require(Path(data_dir) / EVAL_FILES[corpus][0], f"{corpus} evaluation").read_text(encoding="utf-8")
    if corpus == "tinystories":  # separator lines are not text the tokenizer knows
        text = "\n".join(line for line in text.splitlines() if line.strip() != "<|endoftext|>")
    # wikitext2: the raw test file as stored (its CRLF line ends read as "\n", i.e. the HF dataset's rows
    # concatenated); this reproduces the model card's SmolLM2 perplexity of 19.26.
    return text


def eval_tokens(tokenizer: Any, corpus: str, data_dir: Path, dataset: Path | None = None) -> torch.Tensor:
    """The whole held-out text tokenized once: 1-D LongTensor."""
    return tokenize(tokenizer, eval_text(corpus, data_dir, dataset))
