"""API shapes, kept apart from the ORM rows (app/models.py) and from the library's JobSpec."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.models import Artifact, Dataset, Job, JobEvent


class Progress(BaseModel):
    stage: str | None = Field(
        None, description="load, calibrate, evaluate_before, compress, evaluate_after, export, upload")
    fraction: float | None = Field(None, description="0..1 of the current stage (what run() reports)")
    message: str | None = None
    overall_fraction: float | None = Field(
        None, description="0..1 of the whole job: the stages weighted by their expected duration (the estimate's)")
    layer: int | None = Field(None, description="Decoder layers finished in the current layer loop (layer i of N)")
    layers: int | None = Field(None, description="Decoder layers the current layer loop goes through (N)")
    eta_seconds: float | None = Field(
        None, description="Expected seconds until the job ends: measured time per layer times the layers left, "
        "plus the stages to come at their expected duration scaled by the measured speed")


class JobError(BaseModel):
    code: str | None = Field(None, description="e.g. invalid_input, model_not_found, cancelled, worker_lost")
    message: str | None = None


class JobLinks(BaseModel):
    self: str
    events: str
    artifacts: str
    cancel: str


class JobOut(BaseModel):
    id: str
    status: str = Field(..., description="queued | running | succeeded | failed | cancelled")
    model: str
    revision: str | None
    method: str
    target_ratio: float
    spec: dict[str, Any] | None = Field(
        None, description="The validated job spec, defaults filled in (list items: only with ?include=spec)")
    progress: Progress
    metrics: dict[str, Any] | None = Field(
        None, description="Perplexity, parameter counts, timings once finished (list items: only with ?include=metrics)")
    estimate: dict[str, Any] | None = Field(
        None, description="Preflight estimate from the model's config.json: params, weights_bytes, and per "
        "execution mode (resident; sequential with offload cpu / disk) device_bytes, host_bytes, disk_bytes, "
        "seconds and a breakdown; `chosen` is the mode `auto` resolves to under the memory limits. Null until "
        "computed (by the API at submission, else by the worker before it reads any weight); list items: only "
        "with ?include=estimate")
    error: JobError | None
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    links: JobLinks

    @classmethod
    def from_row(cls, job: Job) -> "JobOut":
        base = f"/v1/jobs/{job.id}"
        error = None
        if job.error_code or job.error_message:
            error = JobError(code=job.error_code, message=job.error_message)
        return cls(
            id=job.id, status=job.status, model=job.model, revision=job.revision, method=job.method,
            target_ratio=job.target_ratio, spec=job.spec,
            progress=Progress(stage=job.progress_stage, fraction=job.progress_fraction, message=job.progress_message,
                              overall_fraction=job.progress_overall_fraction, layer=job.progress_layer,
                              layers=job.progress_layers, eta_seconds=job.progress_eta_seconds),
            metrics=job.metrics, estimate=job.estimate, error=error, attempts=job.attempts,
            cancel_requested=job.cancel_requested,
            created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
            updated_at=job.updated_at,
            links=JobLinks(self=base, events=f"{base}/events", artifacts=f"{base}/artifacts", cancel=f"{base}/cancel"),
        )


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= to get the next (older) page; null at the end")


class EventOut(BaseModel):
    id: int
    at: datetime
    kind: str = Field(..., description="state | stage | message | error")
    message: str
    data: dict[str, Any] | None

    @classmethod
    def from_row(cls, event: JobEvent) -> "EventOut":
        return cls(id=event.id, at=event.at, kind=event.kind, message=event.message, data=event.data)


class ArtifactOut(BaseModel):
    name: str = Field(..., description="Path inside the artifact folder, e.g. model.safetensors")
    size: int
    sha256: str
    url: str = Field(..., description="Download link; expires after expires_in seconds")
    expires_in: int

    @classmethod
    def from_row(cls, artifact: Artifact, url: str, ttl: int) -> "ArtifactOut":
        return cls(name=artifact.name, size=artifact.size, sha256=artifact.sha256, url=url, expires_in=ttl)


class DatasetOut(BaseModel):
    id: str = Field(..., description="Use as calibration.dataset_id with calibration.source 'dataset'")
    name: str = Field(..., description="The uploaded file's name")
    format: str = Field(..., description="txt | jsonl | parquet")
    size: int
    sha256: str = Field(..., description="sha256 of the file as uploaded; jobs that use it record it")
    records: int = Field(..., description="Non-empty lines (txt) or rows with text (jsonl, parquet)")
    created_at: datetime

    @classmethod
    def from_row(cls, dataset: Dataset) -> "DatasetOut":
        return cls(id=dataset.id, name=dataset.name, format=dataset.format, size=dataset.size,
                   sha256=dataset.sha256, records=dataset.records, created_at=dataset.created_at)


class MethodOut(BaseModel):
    name: str
    summary: str
    paper: str | None
    requires_calibration: bool
    options_schema: dict[str, Any] = Field(..., description="JSON Schema of the method's `options` object")
    execution_schema: dict[str, Any] = Field(
        ..., description="JSON Schema of the job's `execution` object (resident or layer-by-layer, memory limits)"
    )


class ArchitectureOut(BaseModel):
    model_type: str = Field(..., description="config.json's model_type")
    transformers_class: str
    layers: str = Field(..., description="Where the decoder layers are (dotted path in the model)")
    attention_targets: list[str] = Field(..., description="Names `options.targets` accepts in attention")
    mlp_targets: list[str] = Field(..., description="Names `options.targets` accepts in the MLP")
    methods: list[str] = Field(..., description="Methods that run on this family")
    refused: dict[str, str] = Field(..., description="Methods that do not apply, and why")
    low_rank_class: str = Field(..., description="The class a low-rank artifact loads with trust_remote_code")


class ErrorOut(BaseModel):
    detail: str = Field(..., description="What went wrong and what to change")


class UploadProblem(BaseModel):
    detail: str | list[dict[str, Any]] = Field(
        ..., description="What is wrong with the file (a sentence), or which form field is missing (a list)")


class CheckResult(BaseModel):
    ok: bool
    detail: str | None = None


class ReadyOut(BaseModel):
    status: str = Field(..., description="ready | unavailable")
    checks: dict[str, CheckResult] | None = Field(None, description="Only with the operator's X-Admin-Key")
    detail: str | None = None
