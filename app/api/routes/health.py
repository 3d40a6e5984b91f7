"""/healthz (the process answers), /readyz (database, broker and store reachable; details for the
operator), /metrics (the operator's)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.operator import ADMIN_HEADER, is_operator
from app.core.db import get_engine
from app.queue import ping_broker
from app.schemas import CheckResult, ErrorOut, ReadyOut
from app.supervisor import current as current_worker_supervisor

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_SECONDS = 5.0
_pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="readyz")


@router.get("/healthz", summary="Liveness: the API process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _run_check(fn: Callable[[], object]) -> CheckResult:
    future = _pool.submit(fn)
    try:
        future.result(timeout=CHECK_TIMEOUT_SECONDS)
    except FutureTimeout:
        return CheckResult(ok=False, detail=f"no answer within {CHECK_TIMEOUT_SECONDS:.0f} s")
    except Exception as exc:  # report any failure as 'not ready', with its reason
        return CheckResult(ok=False, detail=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
    return CheckResult(ok=True)


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}},
            summary="Readiness: database, broker and artifact store reachable (and, under `spectra serve`, "
            "its embedded worker running)")
def readyz(request: Request) -> JSONResponse:
    settings = request.app.state.settings

    def database() -> None:
        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))

    checks = {
        "database": _run_check(database),
        "broker": _run_check(lambda: ping_broker(settings)),
        "store": _run_check(lambda: request.app.state.store().ping()),
    }
    supervisor = current_worker_supervisor()
    if supervisor is not None:  # `spectra serve` with its embedded worker: is it up, or being restarted?
        state = supervisor.state()
        checks["worker"] = CheckResult(ok=state.running, detail=state.detail)
    failed = [name for name, result in checks.items() if not result.ok]
    status = "unavailable" if failed else "ready"
    if not is_operator(request):  # the checks' reasons name hosts, ports and folders
        return JSONResponse(ReadyOut(status=status).model_dump(exclude_none=True), status_code=503 if failed else 200)
    body = ReadyOut(
        status=status, checks=checks,
        detail=("not ready: " + "; ".join(f"{n}: {checks[n].detail}" for n in failed)) if failed else None,
    )
    return JSONResponse(body.model_dump(), status_code=503 if failed else 200)


@router.get("/metrics", summary="Prometheus metrics (the operator's: X-Admin-Key, or METRICS_PUBLIC)",
            response_class=Response,
            responses={401: {"model": ErrorOut, "description": "No X-Admin-Key and metrics are not public"}})
def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    if not (request.app.state.settings.metrics_public or is_operator(request)):
        return JSONResponse({"detail": f"metrics are for the operator: send the {ADMIN_HEADER} header "
                             "(SPECTRA_ADMIN_KEY), or set SPECTRA_METRICS_PUBLIC=true"}, status_code=401)

    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
