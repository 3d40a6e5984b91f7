"""The Celery task `spectra.compress`: claim the next job (fairly), run, upload, publish, record. Nothing else.

Exactly-once comes from SQL, not from the broker: the claim is one conditional UPDATE (a message
for a finished, cancelled or live job does nothing), the artifact is uploaded under a per-attempt
prefix, and publishing (artifact rows + `succeeded`) happens in one transaction that only the worker
still owning the job can win. A superseded attempt deletes its upload and goes away.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from app import crud, jobevents
from app.core.config import Settings, get_settings
from app.core.db import session_scope
from app.crud.transitions import transition
from app.messaging import TASK_NAME
from app.jobstates import JobStatus
from app.models import Job, utcnow
from app.storage import job_prefix, store_from_settings
from app.storage.archive import archive_root, local_archive_digest
from compression.errors import Cancelled
from compression.specs import JobSpec
from worker.celery_app import app
from worker.datasets import fetch_datasets
from worker.hubpush import check_push_configured, push_to_hub
from worker.memorycap import job_memory_cap
from worker.preflight import store_estimate
from worker.outcome import MAX_TRANSIENT_RETRIES, RETRY_BACKOFF_SECONDS, Failure, classify
from worker.progress import JobTracker

log = logging.getLogger(__name__)


def worker_name(hostname: str | None = None) -> str:
    """Unique per process: a re-delivered job must not look 'ours' to a new pool child."""
    return f"{hostname or socket.gethostname()}:{os.getpid()}"


@app.task(name=TASK_NAME, bind=True, max_retries=MAX_TRANSIENT_RETRIES,
          Request="worker.prefilter:DropWhenNothingToClaim")
def compress(self: Any, hint: str) -> str:
    """Claim the next job fairly across tenants (app.crud.scheduling; `hint`, the job whose submission
    sent this message, is taken only if its worker died) and run it. Returns the job's final status
    (or 'skipped'). The result is ignored by design."""
    settings = get_settings()
    jobevents.publish_through(settings.broker_url)  # the API's event streams hear of each commit
    me = worker_name(getattr(self.request, "hostname", None))
    with session_scope(settings.database_url) as session:
        job = crud.claim_next_job(session, worker=me, stale_after=settings.stale_after_seconds,
                                  max_attempts=settings.max_attempts, hint=hint)
        if job is None:
            log.info("job %s: nothing to do (terminal, cancelled, held by a live worker or out of attempts)",
                     hint)
            return "skipped"
        job_id, spec, tenant_id, attempt, estimate = job.id, dict(job.spec), job.tenant_id, job.attempts, job.estimate
    log.info("job %s: attempt %d on %s", job_id, attempt, me)

    failure = _attempt(settings, job_id=job_id, worker=me, spec=spec, tenant_id=tenant_id, attempt=attempt,
                       estimate=estimate)
    if failure is None:
        return JobStatus.SUCCEEDED.value
    if failure.retry and self.request.retries < MAX_TRANSIENT_RETRIES:
        countdown = RETRY_BACKOFF_SECONDS[min(self.request.retries, len(RETRY_BACKOFF_SECONDS) - 1)]
        if _release_for_retry(settings, job_id=job_id, worker=me, reason=failure.message, countdown=countdown):
            raise self.retry(countdown=countdown, exc=None)
        return "skipped"
    status = JobStatus.CANCELLED if failure.code == "cancelled" else JobStatus.FAILED
    _finish(settings, job_id=job_id, worker=me, status=status, code=failure.code, message=failure.message)
    return status.value


def _attempt(settings: Settings, *, job_id: str, worker: str, spec: dict[str, Any], tenant_id: int,
             attempt: int, estimate: dict[str, Any] | None) -> Failure | None:
    """Run, upload and publish; returns how the attempt failed, or None once the job is published."""
    # The attempt's own folder (the artifact being written) starts empty; the job's layer folder
    # (finished decoder layers) is named by the job alone, so an attempt re-delivered to this machine
    # after a SIGKILL or OOM kill continues from the last finished layer instead of from zero.
    work = Path(settings.home) / "work" / f"{job_id}-{attempt}"
    layers = Path(settings.home) / "work" / f"{job_id}-layers"
    shutil.rmtree(work, ignore_errors=True)
    failure: Failure | None = None
    tracker = JobTracker(database_url=settings.database_url, job_id=job_id, worker=worker,
                         heartbeat_seconds=settings.heartbeat_seconds,
                         time_limit_seconds=settings.job_time_limit_seconds)
    try:
        with tracker:
            started = time.monotonic()
            try:
                from compression.run import RunSettings, run  # torch: loaded only in a worker, only here

                check_push_configured(settings, spec)
                datasets = fetch_datasets(settings, spec, tenant_id, work / "datasets")
                run_settings = RunSettings(model_roots=tuple(settings.model_roots), data_dir=settings.data_dir,
                                           data_roots=tuple(settings.data_roots), cache_dir=settings.hf_cache_dir,
                                           max_download_bytes=settings.max_download_mb * 2**20 or None,
                                           datasets=datasets, device_memory_limit=settings.worker_device_memory,
                                           host_memory_limit=settings.worker_host_memory, work_dir=layers)
                job_spec = JobSpec.model_validate(spec)
                if estimate is None:  # the API could not read the model's config: estimate before any weight
                    estimate = store_estimate(settings, job_id=job_id, spec=job_spec, run_settings=run_settings)
                tracker.use_estimate(estimate)
                with job_memory_cap(settings.worker_job_memory_mb):
                    result = run(job_spec, work / "out", settings=run_settings,
                                 progress=tracker.progress, should_stop=tracker.should_stop)
            except Cancelled:
                failure = _stopped(tracker)
                return failure
            except SoftTimeLimitExceeded:
                failure = Failure("time_limit", tracker.time_limit_message())
                return failure
            except Exception as exc:  # every other error ends the attempt with a recorded reason
                log.warning("job %s failed", job_id, exc_info=True)
                failure = classify(exc)
                return failure
            if tracker.should_stop():  # cancelled or taken over after the last layer
                failure = _stopped(tracker)
                return failure
            tracker.record("upload", 0.0, "uploading the artifact")
            failure = _upload_and_publish(settings, job_id=job_id, worker=worker, tenant_id=tenant_id,
                                          attempt=attempt, out_dir=Path(result.out_dir), report=result.report,
                                          wall_seconds=time.monotonic() - started, spec=spec)
            return failure
    except SoftTimeLimitExceeded:
        failure = Failure("time_limit", tracker.time_limit_message())
        return failure
    finally:
        shutil.rmtree(work, ignore_errors=True)
        # Finished layers are kept only for an attempt that never got here (killed); a job another
        # worker took over may still be using them, so a lost attempt leaves them too.
        if failure is None or failure.code != "lost":
            shutil.rmtree(layers, ignore_errors=True)


def _stopped(tracker: JobTracker) -> Failure:
    if tracker.stop_reason == "time_limit":
        return Failure("time_limit", tracker.time_limit_message())
    if tracker.stop_reason == "lost":
        return Failure("lost", "another worker took the job over")
    return Failure("cancelled", "cancelled by the user")


def _upload_and_publish(settings: Settings, *, job_id: str, worker: str, tenant_id: int, attempt: int,
                        out_dir: Path, report: dict[str, Any], wall_seconds: float,
                        spec: dict[str, Any]) -> Failure | None:
    # The hub push first: a refused push fails the job before anything is stored or published (a
    # retried attempt pushes again: one more commit of the same files, which the hub takes as a no-op).
    try:
        pushed = push_to_hub(settings, spec, out_dir, job_id)
    except Exception as exc:
        log.warning("job %s: push to the hub failed", job_id, exc_info=True)
        return classify(exc)
    store = store_from_settings(settings)
    prefix = f"{job_prefix(tenant_id, job_id)}/attempt-{attempt}"
    try:
        files = store.upload_dir(out_dir, prefix)
        archive = _archive_record(job_id, out_dir, files)
    except Exception as exc:  # storage flake: nothing was published; drop the partial upload and retry
        log.warning("job %s: upload failed", job_id, exc_info=True)
        _delete_quietly(store, prefix)
        return Failure("upload_failed", f"uploading the artifact failed: {type(exc).__name__}: {exc}",
                       retry=True)
    _record_upload_done(settings, job_id=job_id, count=len(files))
    metrics = {**_metrics(report, wall_seconds=wall_seconds, attempt=attempt), "archive": archive}
    if pushed is not None:
        metrics["hub"] = pushed
    with session_scope(settings.database_url) as session:
        if crud.is_cancel_requested(session, job_id=job_id):
            published = False
        else:
            published = crud.finish_job(session, job_id=job_id, status=JobStatus.SUCCEEDED.value,
                                        metrics=metrics, artifacts=files, worker=worker)
    if not published:  # cancelled meanwhile, or the job is no longer ours: the upload must not linger
        _delete_quietly(store, prefix)
        with session_scope(settings.database_url) as session:
            if crud.is_cancel_requested(session, job_id=job_id):
                return Failure("cancelled", "cancelled by the user")
        log.info("job %s: attempt %d superseded; upload deleted", job_id, attempt)
        return Failure("lost", "another worker took the job over")
    return None


def _archive_record(job_id: str, out_dir: Path, files: list[Any]) -> dict[str, Any]:
    """sha256 and length of GET /v1/jobs/{id}/archive, hashed here once from the local folder, so the
    API can put them in the headers before it streams the first byte from the store."""
    mtime = int(time.time())
    sha256, size = local_archive_digest(archive_root(job_id), out_dir, [(f.name, f.size) for f in files], mtime)
    return {"format": "tar", "sha256": sha256, "bytes": size, "mtime": mtime}


def _record_upload_done(settings: Settings, *, job_id: str, count: int) -> None:
    with session_scope(settings.database_url) as session:
        crud.set_progress(session, job_id=job_id, stage="upload", fraction=1.0, message=f"uploaded {count} files")


def _metrics(report: dict[str, Any], *, wall_seconds: float, attempt: int) -> dict[str, Any]:
    """What the job row keeps: the library's metrics and ratios, plus the service's wall time and attempt."""
    metrics: dict[str, Any] = dict(report.get("metrics") or {})
    for key in ("target_ratio", "achieved_ratio", "achieved_ratio_total", "params_before", "params_after",
                "decoder_linear_params_before", "decoder_linear_params_after", "protocol", "zeroshot_protocol",
                "calibration", "device"):
        if key in report:
            metrics[key] = report[key]
    details = _chartable_details(report.get("method_details") or {})
    if details:
        metrics["method_details"] = details
    metrics["service"] = {"wall_seconds": round(wall_seconds, 3), "attempt": attempt}
    return metrics


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _chartable_details(details: dict[str, Any]) -> dict[str, Any]:
    """The method's details the dashboard draws (ranks per matrix, removed or replaced layers, Block
    Influence) and its scalar settings; logs such as SoCo's training curve stay in compression.json,
    so the row (and every list page carrying it) does not grow with them."""
    kept: dict[str, Any] = {}
    for key, value in details.items():
        scalar = value is None or isinstance(value, (str, bool)) or _is_number(value)
        numbers = isinstance(value, list) and all(_is_number(v) for v in value)
        by_name = isinstance(value, dict) and all(_is_number(v) for v in value.values())
        if scalar or numbers or by_name:
            kept[key] = value
    return kept


def _delete_quietly(store: Any, prefix: str) -> None:
    try:
        store.delete_prefix(prefix)
    except Exception:
        log.warning("could not delete %s", prefix, exc_info=True)


def _finish(settings: Settings, *, job_id: str, worker: str, status: JobStatus, code: str, message: str) -> None:
    if code == "lost":  # the job belongs to another worker now; leave its row alone
        return
    with session_scope(settings.database_url) as session:
        crud.finish_job(session, job_id=job_id, status=status.value, error_code=code, error_message=message,
                        worker=worker)


def _release_for_retry(settings: Settings, *, job_id: str, worker: str, reason: str, countdown: float) -> bool:
    """running (ours) -> queued, so the retried message can claim it again.

    The retry waits in this worker's memory (an ETA message), where the sweeper cannot see it; dating
    updated_at at the retry's due time keeps the sweeper from sending a duplicate in the meantime.
    """
    with session_scope(settings.database_url) as session:
        released = transition(session, job_id=job_id, sources=[JobStatus.RUNNING], target=JobStatus.QUEUED,
                              where=[Job.worker == worker, Job.cancel_requested.is_(False)],
                              values={"worker": None, "heartbeat_at": None},
                              now=utcnow() + timedelta(seconds=countdown))
        if not released:
            return False
        crud.add_event(session, job_id=job_id, kind="message", message=f"retrying after a transient error: {reason}")
    return True
