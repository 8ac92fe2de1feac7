"""Organiser mode, the organiser's own tools: list the cases, score one prediction against one case."""
from __future__ import annotations

import shutil

from fastapi import APIRouter, Depends, Request

from app.service.deps import Service, get_service, organiser_only
from app.service.errors import UPLOAD_ERRORS, ApiError, responses
from app.service.models import CaseList, ScoreRecord
from app.service.openapi import multipart_body
from app.service.scoring import check_and_score
from app.service.uploads import FileField, receive_files

# Participants get 404 for these, as for a route that does not exist: per-case scores would give the
# ground truth away (bisecting with half-volume masks rebuilds a case in a few hundred requests).
router = APIRouter(tags=["organiser"], dependencies=[Depends(organiser_only)])


@router.get("/v1/cases", response_model=CaseList, responses=responses(401, 404),
            summary="Names of the cases a prediction can be scored against (organiser only)")
async def list_cases(service: Service = Depends(get_service)):
    return CaseList(cases=list(service.cases or {}))


@router.post("/v1/cases/{case}/score", response_model=ScoreRecord, responses=responses(*UPLOAD_ERRORS, 404, 500, 504),
             summary="Score a prediction against a case's ground truth (organiser only)",
             openapi_extra=multipart_body("prediction"))
async def score_case(case: str, request: Request, service: Service = Depends(get_service)):
    ground_truth = (service.cases or {}).get(case)
    if ground_truth is None:
        raise ApiError(404, "no such case; GET /v1/cases lists them")
    folder = service.scratch()
    try:
        files = await receive_files(request, fields=[FileField("prediction")], folder=folder,
                                    max_bytes=service.settings.max_upload_bytes)
        return await service.score(check_and_score, files=files, limits=service.settings.upload_limits,
                                   study=case, ground_truth=ground_truth)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
