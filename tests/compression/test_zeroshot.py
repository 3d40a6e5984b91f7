"""Zero-shot log-likelihood scoring: prompts as lm-eval builds them, scores equal to a hand computation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compression.errors import InvalidInput
from compression.zeroshot import TASKS, evaluate_task, load_task, loglikelihoods


def test_every_task_loads_with_lm_eval_prompts(data_dir: Path) -> None:
    for task in TASKS:
        items = load_task(task, data_dir, limit=5)
        assert len(items) == 5 and all(0 <= it.label < len(it.requests) for it in items)
    piqa = load_task("piqa", data_dir, limit=1)[0]
    assert piqa.requests[0][0] == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert piqa.requests[0][1].startswith(" Provide the guinea pig") and piqa.label == 0
    wino = load_task("winogrande", data_dir, limit=1)[0]
    assert wino.requests == [("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
                             ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases.")]
    assert wino.label == 1
    with pytest.raises(InvalidInput, match="unknown"):
        load_task("mmlu", data_dir)


def test_batched_loglikelihood_equals_hand_computation(tiny_model, tiny_tokenizer) -> None:
    requests = [("Once upon a time, there was a", " little girl named Lily."),
                ("Tom had a big red", " ball."), ("The cat sat", " on the mat and slept all day long.")]
    got = loglikelihoods(tiny_model, tiny_tokenizer, requests, torch.device("cpu"))
    for (context, continuation), value in zip(requests, got):
        ctx = tiny_tokenizer(context, add_special_tokens=False)["input_ids"]
        whole = tiny_tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(tiny_model(input_ids=torch.tensor([whole])).logits[0].double(), -1)
        expected = sum(logp[i - 1, whole[i]].item() for i in range(len(ctx), len(whole)))
        assert value == pytest.approx(expected, abs=1e-3)
    # a fluent continuation beats a scrambled one: the scores carry the model's knowledge
    fluent, scrambled = loglikelihoods(tiny_model, tiny_tokenizer, [
        ("Once upon a time, there was a little", " girl named Lily. She loved to play outside."),
        ("Once upon a time, there was a little", " outside play to loved She Lily. named girl"),
    ], torch.device("cpu"))
    assert fluent > scrambled + 5


def test_evaluate_task_counts(tiny_model, tiny_tokenizer, data_dir: Path) -> None:
    result = evaluate_task(tiny_model, tiny_tokenizer, "arc_easy", data_dir, limit=6)
    assert result["n"] == 6 and 0 <= result["acc"] <= 1 and 0 <= result["acc_norm"] <= 1
    assert evaluate_task(tiny_model, tiny_tokenizer, "winogrande", data_dir, limit=2)["acc_norm"] is None


@pytest.mark.slow
def test_smollm2_piqa_matches_the_model_card(data_dir: Path) -> None:
    from compression.models import load_model
    from tests.support.smollm2 import smollm2_dir

    folder = smollm2_dir()
    lm = load_model(folder.name, model_roots=(folder.parent,), device="cpu")
    result = evaluate_task(lm.model, lm.tokenizer, "piqa", data_dir, limit=200)
    assert result["acc_norm"] == pytest.approx(0.655, abs=0.03)  # models/README.md, first 200 items
