"""What `spectra compress` shows while it runs: an overall bar with ETA above the stage bar on a terminal,
plain lines otherwise (a log file, a pipe, CI), nothing with --quiet.

The overall fraction, `layer i/N` and the ETA come from compression.progress.ProgressModel (measured
time per layer and per stage; the same model the service's progress uses).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from compression.progress import ProgressModel, Snapshot


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60:02d}:{seconds % 60:02d}"


class ProgressDisplay:
    """The run()'s progress callback for the CLI."""

    def __init__(self, quiet: bool, stage_seconds: Mapping[str, float] | None = None, stream: TextIO | None = None,
                 interactive: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        # Bars redraw with '\r'; into a file or pipe that is unreadable, so they need a terminal to draw on.
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.model = ProgressModel(stage_seconds or None)
        self.t0 = time.monotonic()
        self.stage = ""
        self.overall: Any = None
        self.bar: Any = None
        self.last_line = (0.0, "", -1)

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        snapshot = self.model.update(stage, fraction, message)
        if self.quiet:
            return
        new_stage, self.stage = stage != self.stage, stage
        if self.interactive:
            self._draw(snapshot, new_stage)
        else:
            self._line(snapshot, new_stage)

    def _draw(self, snap: Snapshot, new_stage: bool) -> None:
        from tqdm import tqdm

        if self.overall is None:
            fmt = "{desc} {percentage:3.0f}%|{bar}| {elapsed} {postfix}"
            self.overall = tqdm(total=100, desc=f"{'overall':16}", file=self.stream, position=0, bar_format=fmt)
            self.bar = tqdm(total=100, desc="", file=self.stream, position=1, bar_format=fmt)
        if new_stage:
            self.bar.reset(total=100)
            self.bar.set_description_str(f"{snap.stage:16}")
        self.bar.n = round(snap.stage_fraction * 100)
        self.bar.set_postfix_str(snap.message[:60], refresh=True)
        self.overall.n = round(snap.fraction * 100)
        layer = f"layer {snap.layer}/{snap.layers}, " if snap.layer is not None else ""
        self.overall.set_postfix_str(f"{layer}ETA {_clock(snap.eta_seconds)}", refresh=True)

    def _line(self, snap: Snapshot, new_stage: bool) -> None:
        # One line per step, but within a stage only every tenth of it or every second (a step can be one
        # window of thousands).
        now = time.monotonic()
        tenth = int(snap.stage_fraction * 10)
        if not (new_stage or snap.stage_fraction >= 1.0 or now - self.last_line[0] >= 1.0
                or tenth != self.last_line[2]):
            return
        self.last_line = (now, snap.stage, tenth)
        print(f"[{_clock(now - self.t0)}] {snap.stage} {snap.stage_fraction:4.0%} {snap.message} "
              f"(overall {snap.fraction:.0%}, ETA {_clock(snap.eta_seconds)})", file=self.stream, flush=True)

    def close(self) -> None:
        for bar in (self.bar, self.overall):
            if bar is not None:
                bar.close()
        self.bar = self.overall = None
