"""export.push_to_hub: the finished artifact folder pushed to a Hugging Face repository in one commit.

huggingface_hub's own upload API (create_repo, then create_commit of every file), with the token and
endpoint from the worker's settings. create_commit rather than upload_folder: upload_folder switches
to a pipelined multi-commit upload when hf_xet is installed, and one commit per job is what we want
(the repository never shows half an artifact). The hub decides per file whether it travels inline or
through LFS/Xet; huggingface_hub speaks whichever it asks for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from app.core.config import Settings
from app.storage.base import files_under
from compression.errors import InvalidInput, TransientError


class PushFailed(InvalidInput):
    """The hub refused the push (token, permissions, repository name): retrying will not help."""


class PushNotConfigured(InvalidInput):
    """The job asks for a push but this worker has no SPECTRA_HUB_TOKEN."""


def check_push_configured(settings: Settings, spec: dict[str, Any]) -> None:
    """Before any compute: a job that asks for a push on a worker without a token fails at once."""
    repo = (spec.get("export") or {}).get("push_to_hub")
    if not repo:
        return
    if settings.hub_token is None:
        raise PushNotConfigured(f"export.push_to_hub {repo!r} needs SPECTRA_HUB_TOKEN on the worker; this worker "
                                "has none (ask the operator, or submit without push_to_hub and download the archive)")
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise PushNotConfigured(f"export.push_to_hub {repo!r}: this worker runs with HF_HUB_OFFLINE=1 and cannot "
                                "reach the hub (submit without push_to_hub and download the archive)")


def push_to_hub(settings: Settings, spec: dict[str, Any], folder: Path, job_id: str) -> dict[str, Any] | None:
    """Push `folder` to export.push_to_hub; {repo, commit, url} for the job's metrics, or None (no push)."""
    repo = (spec.get("export") or {}).get("push_to_hub")
    if not repo:
        return None
    check_push_configured(settings, spec)
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    assert settings.hub_token is not None
    api = HfApi(endpoint=settings.hub_endpoint, token=settings.hub_token.get_secret_value())
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files_under(folder)]
    try:
        api.create_repo(repo, repo_type="model", exist_ok=True)
        commit = api.create_commit(repo, operations, repo_type="model",
                                   commit_message=f"Spectra job {job_id}: {spec.get('method')} at ratio "
                                                  f"{spec.get('target_ratio')} of {spec.get('model')}")
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        message = f"pushing the artifact to {repo} failed (HTTP {status}): {exc}"
        if status is not None and status < 500 and status != 429:
            raise PushFailed(message) from None
        raise TransientError(message) from exc
    except (httpx.TransportError, OSError) as exc:  # connection refused, DNS, timeouts
        raise TransientError(f"pushing the artifact to {repo} failed: {exc}") from exc
    return {"repo": repo, "commit": commit.oid, "url": commit.commit_url}
