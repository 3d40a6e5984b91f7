"""/v1/methods: every compression method with the JSON Schema of its options (from compression.specs)."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter

from app.api.deps import AUTH_RESPONSES, TenantDep
from app.schemas import MethodOut
from compression.specs import METHODS, ExecutionSpec

router = APIRouter(prefix="/v1/methods", tags=["methods"], responses=AUTH_RESPONSES)


@lru_cache(maxsize=1)
def _methods() -> tuple[MethodOut, ...]:
    # Every method runs resident or layer by layer, so each carries the same execution schema.
    execution = ExecutionSpec.model_json_schema()
    return tuple(
        MethodOut(name=info.method.value, summary=info.summary, paper=info.paper or None,
                  requires_calibration=info.requires_calibration, options_schema=info.options.model_json_schema(),
                  execution_schema=execution)
        for info in METHODS.values()
    )


@router.get("", response_model=list[MethodOut], summary="Available methods and their options")
def list_methods(_: TenantDep) -> list[MethodOut]:
    return list(_methods())
