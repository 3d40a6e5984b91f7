"""Settings from SPECTRA_* environment variables: one object, read once per process (get_settings)."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from compression.specs import parse_bytes

REPO_ROOT = Path(__file__).resolve().parents[2]


def _default_data_dir() -> Path | None:
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def _split_list(value: object) -> object:
    """Lists come from the environment as 'a:b' (os.pathsep) or 'a,b'; JSON lists also work."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            import json

            return json.loads(text)
        sep = "," if "," in text else os.pathsep
        return [part.strip() for part in text.split(sep) if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPECTRA_", extra="ignore")

    home: Path = Field(Path("./.spectra"), description="Embedded database, broker folders and artifacts.")
    database_url: str | None = None
    broker_url: str | None = None
    artifact_store: str | None = Field(None, description="file:///folder or s3://bucket[/prefix]")
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = Field(None, description="Endpoint that presigned links are signed for.")
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    model_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    data_dir: Path | None = Field(default_factory=_default_data_dir)
    data_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    hf_cache_dir: Path | None = None
    hub_token: SecretStr | None = Field(
        None, description="Hugging Face token the worker pushes artifacts with (export.push_to_hub).")
    hub_endpoint: str | None = Field(
        None, description="Hub the worker pushes to; unset: huggingface_hub's default (https://huggingface.co).")
    signing_secret: SecretStr | None = Field(None, description="HMAC key for local links.")
    link_ttl_seconds: int = Field(900, ge=1)
    heartbeat_seconds: float = Field(10, gt=0)
    stale_after_seconds: float = Field(60, gt=0)
    max_attempts: int = Field(3, ge=1)
    job_time_limit_seconds: int = Field(6 * 3600, ge=1)
    # A job loads a whole model into one pool child; torch's caching allocators and a heap fragmented
    # by gigabytes of tensors are not given back when the job ends, so a long-lived child grows until
    # it is OOM-killed mid-job. A fresh child per job costs a fork of a parent that has already
    # imported the library (worker.celery_app; 0.5-1 s), nothing next to a job's minutes, and every
    # job starts from the same clean process.
    worker_max_tasks_per_child: int = Field(
        1, ge=0, description="Jobs a worker's pool child runs before it is replaced; 0 = never replaced.")
    worker_max_memory_per_child: int = Field(
        0, ge=0, description="Resident memory (KiB) above which a pool child is replaced after its current "
        "job; 0 = no limit.")
    worker_job_memory_mb: int = Field(
        0, ge=0, description="Memory (MiB) one job may allocate in its worker process on top of what the "
        "process held when the job started; past it the job fails with out_of_memory instead of the kernel's "
        "OOM killer ending the worker (worker/memorycap.py). 0 = no cap.")
    worker_device_memory: int | None = Field(
        None, description="Device memory a job may use on the workers (bytes, or '24GiB'); unset = no limit. "
        "A submission whose preflight estimate fits it in no execution mode is refused (422), and `auto` "
        "execution streams layer by layer when the resident estimate exceeds it.")
    worker_host_memory: int | None = Field(
        None, description="Host memory a job may use on the workers (bytes, or '64GiB'); unset = no limit.")
    public_url: str | None = Field(
        None, description="Base URL in local download links; unset: the URL the request came in on."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024)
    body_timeout_seconds: float = Field(
        10, gt=0, description="A request body must arrive within this many seconds after the headers (408 "
        "otherwise); until it has, the request holds no in-flight slot.")
    auth_cache_seconds: float = Field(
        5, ge=0, description="How long each API process trusts a checked API key; a revoked key works "
        "that long at most. 0 = check every request.")
    rate_limit_per_minute: int = Field(0, ge=0, description="Requests per minute per API key; 0 = unlimited.")
    max_active_jobs_per_tenant: int = Field(
        0, ge=0, description="Queued + running jobs a tenant may have; 0 = unlimited. `spectra admin "
        "set-tenant` overrides it (and the two below) per tenant.")
    submissions_per_minute_per_tenant: int = Field(
        0, ge=0, description="Jobs a tenant may submit per minute, cancelled ones included; 0 = unlimited.")
    daily_gpu_seconds_per_tenant: int = Field(
        0, ge=0, description="Seconds of worker (GPU) time a tenant's jobs may use in any 24 hours, from the "
        "job rows' start and finish times; past it submissions are refused; 0 = unlimited.")
    dataset_max_bytes: int = Field(
        100 * 1024 * 1024, ge=1, description="Largest dataset file POST /v1/datasets accepts (413 above).")
    datasets_per_tenant: int = Field(
        20, ge=0, description="Datasets a tenant may keep at once (409 above: delete one first); 0 = unlimited.")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allowed_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Shell patterns of the model refs tenants may compress ('org/*', "
        "'org/name', a local folder name or '/root/*'); empty: anything under the model roots and anything the "
        "worker's hub token can read. `spectra admin set-tenant --allowed-models` sets a tenant's own list.")
    fleet_device: Literal["cpu", "cuda"] | None = Field(
        None, description="What this server's workers compute on; 'cpu' refuses jobs asking for device 'cuda' "
        "at submission instead of failing them on a worker. Unset: not checked.")
    max_download_mb: int = Field(
        0, ge=0, description="Largest hub model (MiB, all its files) a job may download; larger ones fail "
        "model_too_large before the download. 0 = no limit.")
    admin_key: SecretStr | None = Field(
        None, description="Operator key (header X-Admin-Key): /readyz details and /metrics. Unset: no one "
        "sees them (except /metrics with METRICS_PUBLIC).")
    metrics_public: bool = Field(False, description="Serve /metrics without the admin key.")
    sweep_interval_seconds: float = Field(15, gt=0)

    @field_validator("worker_device_memory", "worker_host_memory", mode="before")
    @classmethod
    def _memory(cls, value: object, info: ValidationInfo) -> int | None:
        if value is None or value == "":
            return None
        return parse_bytes(value, f"SPECTRA_{info.field_name.upper()}")  # type: ignore[arg-type]

    _split = field_validator("model_roots", "data_roots", "cors_origins", "allowed_models", mode="before")(
        lambda cls, v: _split_list(v)
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Settings":
        self.home = self.home.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.home / 'spectra.db'}"
        if self.broker_url is None:
            self.broker_url = "filesystem://"
        if self.artifact_store is None:
            self.artifact_store = f"file://{self.home / 'artifacts'}"
        self.model_roots = [p.expanduser().resolve() for p in self.model_roots]
        self.data_roots = [p.expanduser().resolve() for p in self.data_roots]
        self.public_url = self.public_url.rstrip("/") if self.public_url else None
        return self

    @property
    def broker_folder(self) -> Path:
        """Where the filesystem broker keeps its message folders (embedded mode)."""
        return self.home / "broker"

    @property
    def is_embedded_broker(self) -> bool:
        return (self.broker_url or "").startswith("filesystem://")

    def signing_key(self) -> bytes:
        """HMAC key for local download links: the configured secret, else one generated into HOME/secret."""
        if self.signing_secret:
            return self.signing_secret.get_secret_value().encode()
        path = self.home / "secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_hex(32).encode())
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        return path.read_bytes().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
