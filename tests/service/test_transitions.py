"""One owner of job status changes: app.crud.transitions, enforcing app.jobstates.TRANSITIONS."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from app import crud
from app.core.db import session_scope
from app.core.migrations import upgrade_head
from app.crud.transitions import IllegalTransition, transition
from app.jobstates import TRANSITIONS, JobStatus

REPO = Path(__file__).resolve().parents[2]
OWNER = REPO / "app" / "crud" / "transitions.py"


def _status_writes(path: Path) -> list[str]:
    """`.values(status=...)` calls and `<row>.status = ...` assignments in one source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values":
            if any(k.arg == "status" for k in node.keywords):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "status" and not (
                    isinstance(t.value, ast.Name) and t.value.id == "self") for t in targets):  # an object's own field
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_nothing_but_the_owner_writes_a_job_status() -> None:
    sources = [p for folder in ("app", "worker") for p in (REPO / folder).rglob("*.py") if p != OWNER]
    assert [hit for path in sources for hit in _status_writes(path)] == []


def test_transitions_outside_the_table_are_refused_before_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_head(url)
    with session_scope(url) as session:
        tenant = crud.get_or_create_tenant(session, name="t")
        job = crud.create_job(session, tenant_id=tenant.id, spec={"method": "svd", "model": "m", "target_ratio": 0.2})
        assert not crud.finish_job(session, job_id=job.id, status="succeeded", metrics={})  # queued: not allowed
        assert crud.claim_job(session, job_id=job.id, worker="w", stale_after=60) is not None
        assert crud.finish_job(session, job_id=job.id, status="succeeded", metrics={})
        for target in JobStatus:
            if target not in TRANSITIONS[JobStatus.SUCCEEDED]:
                with pytest.raises(IllegalTransition, match="succeeded -> "):
                    transition(session, job_id=job.id, sources=[JobStatus.SUCCEEDED], target=target)
        with pytest.raises(IllegalTransition, match="queued -> queued"):
            transition(session, job_id=job.id, sources=[JobStatus.QUEUED, JobStatus.RUNNING], target=JobStatus.QUEUED)
        # Allowed, but the job is not in a source state: nothing changes.
        assert not transition(session, job_id=job.id, sources=[JobStatus.RUNNING], target=JobStatus.QUEUED)
        assert crud.get_job(session, job_id=job.id).status == "succeeded"  # type: ignore[union-attr]
