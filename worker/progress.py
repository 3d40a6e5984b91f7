"""Plumbing between compression.run and the job row: throttled progress, stage events, heartbeat, stop.

run() calls ``progress(stage, fraction, message)`` often (per layer, per window) and ``should_stop()``
between layers. Writing every call would hammer the database, so progress is written at most every
``min_interval`` seconds, each write with a `progress` job_event (what event streams carry), except
that a new stage (a `stage` event) and a new layer are written at once: a client following the
stream sees every stage and every layer, and sub-layer steps at most once per ``min_interval``. The
heartbeat runs in its own thread so a long step with no progress call (one big SVD) still proves the
worker alive; it also notices when the job was taken from us (the sweeper re-queued it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from app import crud
from compression.errors import Cancelled
from compression.progress import STAGES, ProgressModel
from app.core.db import session_scope

log = logging.getLogger(__name__)

StopReason = str  # "cancelled" | "time_limit" | "lost"



class JobTracker:
    """One per running attempt. Use as a context manager: the heartbeat thread lives inside it."""

    def __init__(
        self,
        *,
        database_url: str,
        job_id: str,
        worker: str,
        heartbeat_seconds: float,
        time_limit_seconds: float,
        min_interval: float = 1.0,
        cancel_poll_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = database_url
        self.job_id = job_id
        self.worker = worker
        self._heartbeat_seconds = heartbeat_seconds
        self._deadline = clock() + time_limit_seconds
        self._time_limit = time_limit_seconds
        self._min_interval = min_interval
        self._cancel_poll = cancel_poll_seconds
        self._clock = clock
        self._stage: str | None = None
        self._layer: int | None = None
        self._last_write = float("-inf")
        self._last_cancel_poll = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stop_reason: StopReason | None = None
        self._model = ProgressModel(stages=(*STAGES, "upload"), clock=clock)

    def use_estimate(self, estimate: dict[str, Any] | None) -> None:
        """Weight the overall fraction and the ETA by the preflight estimate's seconds per stage."""
        seconds = dict((estimate or {}).get("stage_seconds") or {})
        if seconds:
            seconds["upload"] = seconds.get("export", 1.0)  # about as long as writing it was
            self._model = ProgressModel(seconds, stages=(*STAGES, "upload"), clock=self._clock)

    # --- context: heartbeat thread ---------------------------------------------------------------

    def __enter__(self) -> "JobTracker":
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.job_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_seconds):
            try:
                with session_scope(self._url) as session:
                    owned = crud.heartbeat(session, job_id=self.job_id, worker=self.worker)
                if not owned:
                    # Someone else owns the job now (the sweeper thought we were dead): stop working on it.
                    self.stop_reason = self.stop_reason or "lost"
            except Exception:  # a database blip must not kill the thread; the next beat retries
                log.warning("heartbeat for job %s failed", self.job_id, exc_info=True)

    # --- callbacks handed to compression.run.run --------------------------------------------------

    def progress(self, stage: str, fraction: float | None = None, message: str | None = None) -> None:
        """run()'s progress callback: record it, and stop right there when asked to.

        run() polls should_stop() between layers; raising Cancelled from the progress callback too makes
        a cancel or the time limit take effect within one progress step (a calibration batch, an
        evaluation window) instead of only at the next layer boundary.
        """
        self.record(stage, fraction, message)
        if self.should_stop():
            raise Cancelled(f"stopped during {stage}: {self.stop_reason}")

    def record(self, stage: str, fraction: float | None = None, message: str | None = None) -> None:
        """Write progress (throttled); a new stage is written at once and logged as a job event.

        Every call feeds the progress model (it times the layers), written or not."""
        now = self._clock()
        fraction = None if fraction is None else max(0.0, min(1.0, float(fraction)))
        snapshot = self._model.update(stage, fraction, message)
        new_stage = stage != self._stage
        new_layer = snapshot.layer is not None and snapshot.layer != self._layer
        if not new_stage and not new_layer and now - self._last_write < self._min_interval:
            return
        self._stage = stage
        self._layer = snapshot.layer
        self._last_write = now
        eta = None if snapshot.eta_seconds is None else round(snapshot.eta_seconds, 1)
        step = {"stage": stage, "fraction": fraction, "message": message, "overall_fraction": round(snapshot.fraction, 4),
                "layer": snapshot.layer, "layers": snapshot.layers, "eta_seconds": eta}
        try:
            with session_scope(self._url) as session:
                crud.set_progress(session, job_id=self.job_id, stage=stage, fraction=fraction, message=message,
                                  overall_fraction=step["overall_fraction"], layer=snapshot.layer,
                                  layers=snapshot.layers, eta_seconds=eta)
                crud.add_event(session, job_id=self.job_id, kind="stage" if new_stage else "progress",
                               message=stage if new_stage else (message or stage), data=step)
        except Exception:  # progress is best effort; the job itself must not fail over it
            log.warning("progress write for job %s failed", self.job_id, exc_info=True)

    def should_stop(self) -> bool:
        """True once the user cancelled, the time limit passed or the job was taken from this worker."""
        if self.stop_reason is not None:
            return True
        now = self._clock()
        if now >= self._deadline:
            self.stop_reason = "time_limit"
            return True
        if now - self._last_cancel_poll >= self._cancel_poll:
            self._last_cancel_poll = now
            try:
                with session_scope(self._url) as session:
                    if crud.is_cancel_requested(session, job_id=self.job_id):
                        self.stop_reason = "cancelled"
            except Exception:
                log.warning("cancel poll for job %s failed", self.job_id, exc_info=True)
        return self.stop_reason is not None

    def time_limit_message(self) -> str:
        return (f"the job exceeded its time limit of {self._time_limit:g} s "
                "(SPECTRA_JOB_TIME_LIMIT_SECONDS) and was stopped")
