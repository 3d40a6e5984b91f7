"""Database operations shared by the API, the worker and the sweeper.

Keyword-only, each takes a Session and commits nothing: the caller owns the transaction.
"""

from app.crud.jobs import (
    Cursor, JobStateConflict, add_event, count_active_jobs, count_jobs_by_status, create_job, get_job, get_job_by_idempotency_key,
    job_ids_with_status, list_artifacts, list_events, list_jobs, lock_tenant_for_submission, request_cancel,
)
from app.crud.quotas import Limits, Refusal, gpu_seconds_last_day, model_allowed, submission_refusal, tenant_limits
from app.crud.scheduling import claim_next_job, has_claimable_job
from app.crud.tenants import TENANT_SETTINGS, NoSuchTenant, TenantRow, list_tenants, set_tenant
from app.crud.keys import create_api_key, get_or_create_tenant, list_api_keys, revoke_api_key
from app.crud.lifecycle import (
    StoredFileLike, claim_job, finish_job, heartbeat, is_cancel_requested, requeue_or_fail_stale, set_estimate,
    set_progress,
)

__all__ = [
    "Limits", "Refusal", "claim_next_job", "gpu_seconds_last_day", "has_claimable_job", "submission_refusal",
    "tenant_limits", "list_api_keys", "model_allowed", "TENANT_SETTINGS", "NoSuchTenant", "TenantRow", "list_tenants", "set_tenant",
    "Cursor", "JobStateConflict", "StoredFileLike", "add_event", "claim_job", "count_active_jobs", "count_jobs_by_status",
    "create_api_key", "create_job", "finish_job", "get_job", "get_job_by_idempotency_key", "get_or_create_tenant",
    "heartbeat", "is_cancel_requested", "job_ids_with_status", "list_artifacts", "list_events", "list_jobs",
    "lock_tenant_for_submission", "request_cancel", "requeue_or_fail_stale", "revoke_api_key", "set_estimate", "set_progress",
]
