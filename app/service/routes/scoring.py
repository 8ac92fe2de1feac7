"""Scoring a prediction against a ground truth the client sends along (nothing of the server's is involved)."""
from __future__ import annotations

import shutil

from fastapi import APIRouter, Depends, Query, Request

from app.service.deps import Service, get_service
from app.service.errors import UPLOAD_ERRORS, responses
from app.service.models import ScoreRecord
from app.service.openapi import multipart_body
from app.service.scoring import check_and_score
from app.service.studies import study_name
from app.service.uploads import FileField, receive_files

router = APIRouter(tags=["scoring"])


@router.post("/v1/score", response_model=ScoreRecord, responses=responses(*UPLOAD_ERRORS, 504),
             summary="Score a prediction against a ground truth",
             openapi_extra=multipart_body("prediction", "ground_truth"))
async def score(request: Request,
                study: str | None = Query(None, max_length=200, description="name to report the study under "
                                          "(default: the prediction's file name without its suffix)"),
                service: Service = Depends(get_service)):
    folder = service.scratch()
    try:
        files = await receive_files(request, fields=[FileField("prediction"), FileField("ground_truth")],
                                    folder=folder, max_bytes=service.settings.max_upload_bytes)
        study = study or study_name(files["prediction"].client_name, default="upload")
        return await service.score(check_and_score, files=files, limits=service.settings.upload_limits,
                                   study=study)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
