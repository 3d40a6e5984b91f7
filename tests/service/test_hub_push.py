"""export.push_to_hub on a real `spectra serve` (API + worker) against a local fake of the hub's upload
endpoints (tests/service/support/fakehub.py; the hub itself is unreachable here). The model comes from
a local folder, so the worker runs without HF_HUB_OFFLINE, as a worker that pushes must."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SHARED
from tests.service.support.client import FAST_JOB
from tests.service.support.fakehub import FakeHub, fake_hub
from tests.service.support.stack import Stack, base_env, new_port, running_stack

pytestmark = pytest.mark.integration

TOKEN = "hf_test_token"
MODEL = str(SHARED / "models" / "TinyStories-656K")


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with fake_hub(TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def pushing_stack(tmp_path_factory: pytest.TempPathFactory, hf_home: Path, hub: FakeHub) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("push")
    port = new_port()
    env = {k: v for k, v in base_env(home, hf_home, port).items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update({"SPECTRA_MODEL_ROOTS": str(SHARED / "models"), "SPECTRA_HUB_TOKEN": TOKEN,
                "SPECTRA_HUB_ENDPOINT": hub.url})
    with running_stack(env, port, home / "logs", embedded=True) as stack:
        yield stack


def test_a_job_pushes_its_artifact_to_the_named_repository(pushing_stack: Stack, hub: FakeHub) -> None:
    alice = pushing_stack.client("alice")
    job = alice.submit_ok({**FAST_JOB, "model": MODEL, "export": {"push_to_hub": "acme/tiny-svd"}})
    final = alice.wait_terminal(job["id"], timeout=240)
    assert final["status"] == "succeeded", f"{final}\n{pushing_stack.logs()}"
    pushed = final["metrics"]["hub"]
    assert pushed["repo"] == "acme/tiny-svd" and pushed["url"].endswith(f"/commit/{pushed['commit']}")
    received = {path: hashlib.sha256(data).hexdigest() for path, data in hub.repos["acme/tiny-svd"].items()}
    assert received == {a["name"]: a["sha256"] for a in alice.artifacts(job["id"])}
    (commit,) = [c for c in hub.commits if c["repo"] == "acme/tiny-svd"]  # one commit: never half an artifact
    assert job["id"] in commit["header"]["summary"]


def test_a_refused_push_fails_the_job_by_name_without_artifact(pushing_stack: Stack, hub: FakeHub) -> None:
    alice = pushing_stack.client("alice")
    job = alice.submit_ok({**FAST_JOB, "model": MODEL, "export": {"push_to_hub": "acme/forbidden-repo"}})
    final = alice.wait_terminal(job["id"], timeout=240)
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "push_failed" and "403" in final["error"]["message"], final["error"]
    assert "acme/forbidden-repo" in final["error"]["message"]
    assert alice.artifacts(job["id"]) == [] and "acme/forbidden-repo" not in hub.repos


def test_push_to_hub_must_name_a_repository(pushing_stack: Stack) -> None:
    response = pushing_stack.client("alice").submit({**FAST_JOB, "export": {"push_to_hub": "no-namespace"}})
    assert response.status_code == 422 and "push_to_hub" in response.text


def test_a_worker_without_token_or_offline_refuses_before_any_compute(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from app.core.config import Settings
    from worker.hubpush import PushNotConfigured, check_push_configured
    from worker.outcome import classify

    spec = {"export": {"push_to_hub": "acme/x"}}
    check_push_configured(Settings(home=tmp_path), {"export": {"push_to_hub": None}})  # no push asked: fine
    with pytest.raises(PushNotConfigured, match="needs SPECTRA_HUB_TOKEN") as raised:
        check_push_configured(Settings(home=tmp_path), spec)
    assert classify(raised.value).code == "push_not_configured"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    with pytest.raises(PushNotConfigured, match="HF_HUB_OFFLINE=1"):
        check_push_configured(Settings(home=tmp_path, hub_token="hf_x"), spec)
