"""What `spectra compress` shows while it runs: an overall bar with ETA above the stage bar on a terminal,
plain timestamped lines otherwise (a log file, a pipe, CI), nothing with --quiet.

The ETA adds what is measured: the current stage's remaining share at its own rate so far, and for the
stages still to come the time their twin already took (evaluate_after ~ evaluate_before). Until the
compress stage has run a while nothing predicts it, so the ETA shows '?'.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from compression.run import STAGES

# Stages after which the next one costs about the same (same windows, same model size or smaller).
TWIN = {"evaluate_after": "evaluate_before"}


class StageClock:
    """Seconds per stage so far, and the estimate of what is left."""

    def __init__(self) -> None:
        self.stage, self.fraction = "", 0.0
        self.started: dict[str, float] = {}
        self.took: dict[str, float] = {}
        self.t0 = time.monotonic()

    def update(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if stage != self.stage:
            if self.stage:
                self.took[self.stage] = now - self.started[self.stage]
            self.started[stage] = now
            self.stage = stage
        self.fraction = fraction

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def remaining(self) -> float | None:
        """Seconds left for the whole run, or None while the compress stage is not yet measurable."""
        if self.stage not in STAGES:
            return None
        spent = time.monotonic() - self.started[self.stage]
        if self.fraction >= 1.0:
            left = 0.0
        elif self.fraction >= 0.02 and spent > 0.5:
            left = spent * (1 - self.fraction) / self.fraction
        else:
            return None
        for later in STAGES[STAGES.index(self.stage) + 1:]:
            if later == "compress":
                return None
            left += self.took.get(TWIN.get(later, ""), 0.0)
        return left


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60:02d}:{seconds % 60:02d}"


class ProgressDisplay:
    """The run()'s progress callback for the CLI."""

    def __init__(self, quiet: bool, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        # Bars redraw with '\r'; into a file or pipe that is unreadable, so they need a terminal to draw on.
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.clock = StageClock()
        self.overall: Any = None
        self.bar: Any = None
        self.last_line = (0.0, "", -1)

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        if self.quiet:
            return
        new_stage = stage != self.clock.stage
        self.clock.update(stage, fraction)
        if self.interactive:
            self._draw(stage, fraction, message, new_stage)
        else:
            self._line(stage, fraction, message, new_stage)

    def _overall_fraction(self) -> float:
        if self.clock.stage not in STAGES:
            return 0.0
        left = self.clock.remaining()
        if left is not None:
            spent = self.clock.elapsed()
            return spent / max(spent + left, 1e-9)
        return (STAGES.index(self.clock.stage) + self.clock.fraction) / len(STAGES)

    def _draw(self, stage: str, fraction: float, message: str, new_stage: bool) -> None:
        from tqdm import tqdm

        if self.overall is None:
            fmt = "{desc} {percentage:3.0f}%|{bar}| {elapsed} {postfix}"
            self.overall = tqdm(total=100, desc=f"{'overall':16}", file=self.stream, position=0, bar_format=fmt)
            self.bar = tqdm(total=100, desc="", file=self.stream, position=1, bar_format=fmt)
        if new_stage:
            self.bar.reset(total=100)
            self.bar.set_description_str(f"{stage:16}")
        self.bar.n = round(fraction * 100)
        self.bar.set_postfix_str(message[:60], refresh=True)
        self.overall.n = round(self._overall_fraction() * 100)
        self.overall.set_postfix_str(f"ETA {_clock(self.clock.remaining())}", refresh=True)

    def _line(self, stage: str, fraction: float, message: str, new_stage: bool) -> None:
        # One line per step, but at most one a second within a stage (a step can be one window of thousands).
        now = time.monotonic()
        tenth = int(fraction * 10)
        if not (new_stage or fraction >= 1.0 or now - self.last_line[0] >= 1.0 or tenth != self.last_line[2]):
            return
        self.last_line = (now, stage, tenth)
        print(f"[{_clock(self.clock.elapsed())}] {stage} {fraction:4.0%} {message} "
              f"(ETA {_clock(self.clock.remaining())})", file=self.stream, flush=True)

    def close(self) -> None:
        for bar in (self.bar, self.overall):
            if bar is not None:
                bar.close()
        self.bar = self.overall = None
