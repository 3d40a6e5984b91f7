"""Overall progress, `layer i/N` and an ETA from run()'s (stage, fraction, message) calls. Torch-free.

run() reports each stage's own fraction. The overall fraction weights the stages by their expected
duration (the preflight estimate's seconds per stage, or DEFAULT_WEIGHTS): stages already finished
count whole, the current one by its fraction. Layer loops report `layer i/N` in their message
(layer_message(); i counts finished layers), and the ETA then comes from the measured time per layer:
the mean of the layers done so far times the layers left, plus the stages still to come at their
expected duration, scaled by how fast the finished stages ran against their expectation. Without
layer counts, the current stage's remaining time is extrapolated from its elapsed time and fraction.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

STAGES = ("load", "calibrate", "evaluate_before", "compress", "evaluate_after", "export")
DEFAULT_WEIGHTS: dict[str, float] = {"load": 0.05, "calibrate": 0.02, "evaluate_before": 0.1, "compress": 0.6,
                                     "evaluate_after": 0.1, "export": 0.05, "upload": 0.08}
_LAYER = re.compile(r"\blayer (\d+)/(\d+)\b")
_MIN_FRACTION_FOR_ETA = 0.02


def layer_message(done: int, total: int, what: str) -> str:
    """The message of a per-layer progress call: 'layer 3/30: whitened SVD' once 3 of 30 layers are done."""
    return f"layer {done}/{total}: {what}"


@dataclass(frozen=True)
class Snapshot:
    stage: str
    stage_fraction: float
    fraction: float  # of the whole job
    layer: int | None
    layers: int | None
    eta_seconds: float | None
    message: str


class ProgressModel:
    def __init__(self, weights: Mapping[str, float] | None = None, stages: Sequence[str] = STAGES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        given = dict(weights or {})
        self.stages = list(stages)
        self.weights = {s: max(float(given.get(s, DEFAULT_WEIGHTS.get(s, 0.05))), 1e-9) for s in self.stages}
        self._clock = clock
        self._stage: str | None = None
        self._stage_started = 0.0
        self._finished: dict[str, float] = {}  # stage -> measured seconds
        self._layer_times: list[float] = []
        self._layer: tuple[int, int] | None = None
        self._layer_at = 0.0

    def update(self, stage: str, fraction: float | None, message: str | None) -> Snapshot:
        now = self._clock()
        if stage not in self.weights:  # a stage nobody expected: give it a small share at the end
            self.stages.append(stage)
            self.weights[stage] = DEFAULT_WEIGHTS.get(stage, 0.05)
        if stage != self._stage:
            self._enter(stage, now)
        f = min(max(fraction or 0.0, 0.0), 1.0)
        layer = self._track_layer(message or "", now)
        total = sum(self.weights.values())
        index = self.stages.index(stage)
        done = sum(self.weights[s] for s in self.stages[:index])
        overall = min((done + self.weights[stage] * f) / total, 1.0)
        return Snapshot(stage=stage, stage_fraction=f, fraction=overall,
                        layer=layer[0] if layer else None, layers=layer[1] if layer else None,
                        eta_seconds=self._eta(stage, f, now, layer), message=message or "")

    def _enter(self, stage: str, now: float) -> None:
        if self._stage is not None:
            self._finished[self._stage] = now - self._stage_started
        for earlier in self.stages[: self.stages.index(stage)]:  # skipped stages count as done, instantly
            self._finished.setdefault(earlier, 0.0)
        self._stage, self._stage_started = stage, now
        self._layer, self._layer_times, self._layer_at = None, [], now

    def _track_layer(self, message: str, now: float) -> tuple[int, int] | None:
        found = _LAYER.search(message)
        if found is None:
            return self._layer
        layer = (int(found.group(1)), int(found.group(2)))
        previous = self._layer[0] if self._layer else 0
        if layer[0] > previous:  # each newly finished layer: the time since the last one, per layer
            per_layer = (now - self._layer_at) / (layer[0] - previous)
            self._layer_times.extend([per_layer] * (layer[0] - previous))
            self._layer_at = now
        self._layer = layer
        return layer

    def _eta(self, stage: str, f: float, now: float, layer: tuple[int, int] | None) -> float | None:
        elapsed = now - self._stage_started
        if layer is not None and self._layer_times:
            current = sum(self._layer_times) / len(self._layer_times) * (layer[1] - layer[0])
        elif f >= _MIN_FRACTION_FOR_ETA:
            current = elapsed * (1.0 - f) / f
        else:
            return None
        # Seconds per unit of weight, as measured on the finished stages plus the current one so far.
        spent = sum(self._finished.values()) + elapsed
        weight_done = sum(self.weights[s] for s in self._finished) + self.weights[stage] * f
        if weight_done <= 0 or spent <= 0:
            return None
        rate = spent / weight_done
        later = self.stages[self.stages.index(stage) + 1:]
        return max(current + rate * sum(self.weights[s] for s in later), 0.0)
