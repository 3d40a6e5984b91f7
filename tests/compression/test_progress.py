"""Overall progress weighted by stage, layer i/N from the messages, and an ETA from measured layer times."""

from __future__ import annotations

import pytest

from compression.progress import ProgressModel, layer_message


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_overall_fraction_weights_the_stages() -> None:
    clock = Clock()
    model = ProgressModel({"load": 1, "calibrate": 0, "evaluate_before": 1, "compress": 6, "evaluate_after": 1,
                           "export": 1}, clock=clock)
    assert model.update("load", 0.0, "loading").fraction == 0.0
    assert model.update("load", 1.0, "load done").fraction == pytest.approx(0.1)
    # Skipping a stage (no calibration) still counts the stages before the current one as done.
    snap = model.update("compress", 0.5, "svd")
    assert snap.fraction == pytest.approx((1 + 0 + 1 + 3) / 10, abs=1e-6) and snap.stage_fraction == 0.5
    assert model.update("export", 1.0, "done").fraction == pytest.approx(1.0)


def test_layers_and_eta_come_from_measured_layer_times() -> None:
    clock = Clock()
    model = ProgressModel({"load": 2, "calibrate": 0, "evaluate_before": 0, "compress": 20, "evaluate_after": 0,
                           "export": 2}, clock=clock)
    model.update("load", 0.0, "loading")
    clock.now = 2.0
    model.update("compress", 0.0, "starting")
    assert model.update("compress", 0.0, "starting").eta_seconds is None  # nothing measured yet
    clock.now = 5.0  # the first layer took 3 s
    first = model.update("compress", 0.1, layer_message(1, 10, "whitened SVD"))
    assert (first.layer, first.layers) == (1, 10) and first.message == "layer 1/10: whitened SVD"
    clock.now = 6.0  # the second took 1 s: mean 2 s per layer, 8 layers left = 16 s, then export
    second = model.update("compress", 0.2, layer_message(2, 10, "whitened SVD"))
    # Export: weight 2 at the measured pace (6 s for weight 2 + 20 * 0.2 = 6): 2 s.
    assert second.eta_seconds == pytest.approx(16.0 + 2.0)
    # A message without a layer count keeps the last one.
    assert model.update("compress", 0.25, "still on layer 3").layer == 2


def test_without_layers_the_stage_is_extrapolated() -> None:
    clock = Clock()
    model = ProgressModel({"load": 1, "compress": 1}, stages=("load", "compress"), clock=clock)
    model.update("compress", 0.0, "go")
    clock.now = 10.0
    snap = model.update("compress", 0.25, "window 1/4")
    assert snap.eta_seconds == pytest.approx(30.0) and snap.layer is None


def test_cli_status_line() -> None:
    from compression.cli import status_line

    clock = Clock()
    model = ProgressModel({"compress": 1}, stages=("compress",), clock=clock)
    model.update("compress", 0.0, "start")
    clock.now = 4.0
    line = status_line(model.update("compress", 0.4, layer_message(2, 5, "whitened SVD")))
    assert line == "40% overall, layer 2/5, ETA 6 s: whitened SVD"
