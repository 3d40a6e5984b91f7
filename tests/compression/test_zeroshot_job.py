"""Zero-shot evaluation per job: before/after scores in the metrics and the card, equal to the scorer called directly."""

from __future__ import annotations

import copy
import json
import typing
from pathlib import Path

from compression import compress
from compression.specs.job import ZeroShotTask
from compression.zeroshot import TASKS, evaluate_task

TASKS_HERE = ["piqa", "winogrande"]
LIMIT = 4


def test_spec_task_names_are_the_scorers() -> None:
    assert tuple(typing.get_args(ZeroShotTask)) == TASKS


def test_job_zeroshot_metrics_equal_direct_scorer(tiny_model, tiny_tokenizer, data_dir: Path, tmp_path: Path) -> None:
    original = copy.deepcopy(tiny_model)
    result = compress(tiny_model, "svd", 0.3, tokenizer=tiny_tokenizer, device="cpu", data_dir=data_dir,
                      evaluation={"corpus": "tinystories", "seq_len": 128, "max_windows": 1,
                                  "zeroshot": TASKS_HERE, "zeroshot_limit": LIMIT})
    metrics = result.report["metrics"]
    assert list(metrics["zeroshot_before"]) == TASKS_HERE == list(metrics["zeroshot_after"])
    for task in TASKS_HERE:
        assert metrics["zeroshot_before"][task] == evaluate_task(original, tiny_tokenizer, task, data_dir, LIMIT)
        assert metrics["zeroshot_after"][task] == evaluate_task(result.model, tiny_tokenizer, task, data_dir, LIMIT)
        assert metrics["zeroshot_before"][task]["n"] == LIMIT
    assert result.report["zeroshot_protocol"]["limit"] == LIMIT

    result.save(tmp_path / "out")
    recorded = json.loads((tmp_path / "out" / "compression.json").read_text())["metrics"]
    assert recorded["zeroshot_after"] == metrics["zeroshot_after"]
    card = (tmp_path / "out" / "README.md").read_text()
    acc = metrics["zeroshot_after"]["piqa"]["acc_norm"]
    assert f"| piqa acc_norm | {metrics['zeroshot_before']['piqa']['acc_norm']:.4g} | {acc:.4g} |" in card
    assert "first 4 items" in card
