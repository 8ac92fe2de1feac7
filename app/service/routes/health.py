"""Health: the process answers (/healthz, open to all) and the service is ready for jobs (/readyz)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from app.service.deps import Service, get_service
from app.service.errors import responses
from app.service.jobs import JobState
from app.service.models import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process answers", responses=responses())
async def healthz():
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, summary="Engine, model, device, worker and free space",
            responses={**responses(401), 503: {"model": Readiness,
                                               "description": "The inference worker is down or the disk is short"}})
async def readyz(response: Response, service: Service = Depends(get_service)):
    refusal = service.refusal()
    if refusal:
        response.status_code = 503
    info = service.engine_info
    return Readiness(ready=refusal is None, reason=refusal,
                     engine=str(info.get("engine", info.get("name", "unknown"))),
                     model=_opt_str(info.get("model")), device=_opt_str(info.get("device")), details=info,
                     inference_worker="running" if service.worker.alive else "stopped",
                     queued_jobs=service.store.count(JobState.queued), organiser_mode=service.cases is not None)


def _opt_str(value) -> str | None:
    return None if value is None else str(value)
