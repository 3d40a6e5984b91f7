"""What the worker keeps of a run's report on the job row (worker.tasks._metrics)."""

from __future__ import annotations

from worker.tasks import _metrics


def test_method_details_keep_what_the_dashboard_draws_and_drop_logs() -> None:
    report = {
        "achieved_ratio": 0.2, "metrics": {"ppl_before": 10.0, "ppl_after": 12.0},
        "method_details": {
            "ranks": {"model.layers.0.self_attn.q_proj": 12}, "break_even_ranks": {"model.layers.0.self_attn.q_proj": 32},
            "removed_layers": [3, 5], "block_influence": [0.5, 0.25], "basis": "weight", "threshold": None,
            "update": False, "training": [{"stage": "train", "loss": [1.0, 0.9]}],
        },
    }
    metrics = _metrics(report, wall_seconds=1.5, attempt=1)
    assert metrics["method_details"] == {
        "ranks": {"model.layers.0.self_attn.q_proj": 12}, "break_even_ranks": {"model.layers.0.self_attn.q_proj": 32},
        "removed_layers": [3, 5], "block_influence": [0.5, 0.25], "basis": "weight", "threshold": None, "update": False,
    }
    assert metrics["ppl_after"] == 12.0 and metrics["achieved_ratio"] == 0.2


def test_no_method_details_no_key() -> None:
    assert "method_details" not in _metrics({"metrics": {}}, wall_seconds=0.1, attempt=1)
