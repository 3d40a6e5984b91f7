"""GET /v1/architectures and the per-model checks at submission, where the API can read the model's
config.json (a local folder under an allowed root): unknown family, targets the family lacks, a shortgpt
ratio the model's depth cannot reach are 422s naming the field, before anything is queued."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from app import crud
from app.core.config import Settings
from app.core.db import session_scope
from app.main import create_app
from compression.specs import FAMILIES, METHODS
from tests.service.api_env import job_body


def _client(tmp_path: Path) -> tuple[TestClient, Path]:
    """An in-process API (embedded SQLite) whose allowed model root is a fresh folder."""
    roots = tmp_path / "models"
    roots.mkdir()
    settings = Settings(home=tmp_path, signing_secret="s", model_roots=[roots])  # type: ignore[arg-type]
    return TestClient(create_app(settings)), roots


def _model(roots: Path, name: str, config: dict) -> str:
    (roots / name).mkdir()
    (roots / name / "config.json").write_text(json.dumps(config))
    return name


def test_architectures_list_every_family_with_its_targets_and_methods(tmp_path: Path) -> None:
    client, _ = _client(tmp_path)
    with client:
        with session_scope(client.app.state.settings.database_url) as session:  # type: ignore[attr-defined]
            _, key = crud.create_api_key(session, tenant_name="t")
        listed = {a["model_type"]: a for a in client.get("/v1/architectures", headers={"X-API-Key": key}).json()}
    assert set(listed) == set(FAMILIES)
    assert listed["phi3"]["attention_targets"] == ["qkv_proj", "o_proj"]
    assert listed["gpt2"]["mlp_targets"] == ["mlp.c_fc", "mlp.c_proj"]
    assert listed["gpt_neox"]["low_rank_class"] == "SpectraGPTNeoXForCausalLM"
    assert set(listed["llama"]["methods"]) == {m.value for m in METHODS}


def test_submission_refuses_what_the_models_config_rules_out(tmp_path: Path) -> None:
    client, roots = _client(tmp_path)
    phi = _model(roots, "phi", {"model_type": "phi3", "num_hidden_layers": 4})
    odd = _model(roots, "odd", {"model_type": "bert", "num_hidden_layers": 4})
    with client:
        with session_scope(client.app.state.settings.database_url) as session:  # type: ignore[attr-defined]
            _, key = crud.create_api_key(session, tenant_name="t")
        post = lambda **body: client.post("/v1/jobs", json=job_body(**body), headers={"X-API-Key": key})  # noqa: E731
        wrong_targets = post(model=phi, options={"targets": ["q_proj"]})
        assert wrong_targets.status_code == 422
        detail = wrong_targets.json()["detail"]
        assert "qkv_proj" in str(detail) and "targets" in str(detail)
        depth = post(model=str(roots / "phi"), method="shortgpt", target_ratio=0.2)
        assert depth.status_code == 422 and "0.25" in str(depth.json()["detail"])
        family = post(model=odd)
        assert family.status_code == 422 and "'bert' is not supported" in str(family.json()["detail"])
        ok = post(model=phi, options={"targets": ["qkv_proj", "down_proj"]})
        assert ok.status_code == 202, ok.text
