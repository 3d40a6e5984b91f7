"""/v1/architectures: every supported model family, its target names and which methods apply (from
compression.specs.families, the one table the library also runs on)."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter

from app.api.deps import AUTH_RESPONSES, TenantDep
from app.schemas import ArchitectureOut
from compression.specs import FAMILIES, METHODS

router = APIRouter(prefix="/v1/architectures", tags=["methods"], responses=AUTH_RESPONSES)


@lru_cache(maxsize=1)
def _architectures() -> tuple[ArchitectureOut, ...]:
    return tuple(
        ArchitectureOut(
            model_type=f.model_type, transformers_class=f.causal_lm, layers=f.layers_path,
            attention_targets=list(f.attention_linears), mlp_targets=list(f.mlp_linears),
            methods=[m.value for m in METHODS if m.value not in f.refused], refused=dict(f.refused),
            low_rank_class=f.export_class,
        )
        for f in FAMILIES.values()
    )


@router.get("", response_model=list[ArchitectureOut], summary="Supported model families and their targets")
def list_architectures(_: TenantDep) -> list[ArchitectureOut]:
    return list(_architectures())
