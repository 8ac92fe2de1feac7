"""Inference jobs: queue a study, follow it, fetch its mask, delete it. A participant sees only its own."""
from __future__ import annotations

import shutil

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse

from app.service.access import job_access
from app.service.deps import Caller, Service, get_caller, get_service
from app.service.errors import UPLOAD_ERRORS, ApiError, responses
from app.service.jobs import Job, JobState, is_job_id, new_job_id
from app.service.models import JobsPage, JobView
from app.service.openapi import multipart_body
from app.service.studies import (
    CLICKS_HELP,
    CLICKS_MAX_CHARS,
    SCRIBBLES_FIELD,
    SCRIBBLES_HELP,
    SCRIBBLES_MAX_BYTES,
    check_study,
    store_clicks,
    store_scribbles,
    study_name,
)
from app.service.uploads import FileField, receive_files
from app.service.worker import MASK_NAME
from petct.editions import edition

router = APIRouter(tags=["jobs"])


@router.post("/v1/studies", status_code=202, response_model=JobView, responses=responses(*UPLOAD_ERRORS),
             summary="Queue a study (PET in SUV and CT) for segmentation; a CT on another grid is resampled",
             openapi_extra=multipart_body("pet", "ct", optional=("label",), json_fields={
                 SCRIBBLES_FIELD: SCRIBBLES_HELP}))
async def submit_study(request: Request, response: Response, service: Service = Depends(get_service),
                       caller: Caller = Depends(get_caller),
                       clicks: str | None = Query(None, max_length=CLICKS_MAX_CHARS, description=CLICKS_HELP)):
    service.admit()
    scribbles = edition(service.settings.challenge).scribbles
    if scribbles and clicks is not None:
        raise ApiError(422, f"this service follows {service.settings.challenge}: send scribbles as the multipart "
                            f"JSON field '{SCRIBBLES_FIELD}', not clicks", field="clicks")
    job_id = new_job_id()
    folder = service.settings.jobs_dir / job_id
    folder.mkdir(parents=True)
    fields = [FileField("pet"), FileField("ct"), FileField("label", required=False)]
    if scribbles:  # other profiles refuse the field as any unexpected one
        fields.append(FileField(SCRIBBLES_FIELD, required=False, json_max_bytes=SCRIBBLES_MAX_BYTES))
    try:
        files = await receive_files(request, fields=fields, folder=folder,
                                    max_bytes=service.settings.max_upload_bytes)
        uploaded_scribbles = files.pop(SCRIBBLES_FIELD, None)
        # Only a job whose images the worker will keep has its CT resampled here (else the job does it).
        held = service.worker.reserve(job_id)
        study = await service.in_pool(check_study, files, limits=service.settings.upload_limits, resample=held)
        names = {field: stored.path.name for field, stored in files.items()}
        size_xyz = tuple(study.grids["pet"].size)
        if clicks is not None:
            names["clicks"] = store_clicks(clicks, folder=folder, size_xyz=size_xyz)
        if uploaded_scribbles is not None:
            names[SCRIBBLES_FIELD] = await service.in_pool(store_scribbles, uploaded_scribbles, folder=folder,
                                                           size_xyz=size_xyz)
        if held:  # before the job exists: the worker finds them
            service.worker.hand(job_id, study.decoded, label=study.label)
        del study
        job = service.store.add(job_id, names,
                                owner=caller.owner, study=study_name(files["pet"].client_name, default=job_id))
    except BaseException:
        service.worker.take(job_id)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    service.worker.wake()
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return JobView.of(job)


@router.get("/v1/jobs", response_model=JobsPage, responses=responses(401, 422),
            summary="Jobs, newest first (a participant's own only)")
async def list_jobs(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=2**62),
                    state: JobState | None = None, service: Service = Depends(get_service),
                    caller: Caller = Depends(get_caller)):
    jobs, total = service.store.page(limit=limit, offset=offset, state=state, owner=caller.owner,
                                     everyone=caller.sees_everything)
    following = offset + len(jobs)
    return JobsPage(jobs=[JobView.of(j) for j in jobs], total=total, limit=limit, offset=offset,
                    next_offset=following if following < total else None)


@router.get("/v1/jobs/{job_id}", response_model=JobView, responses=responses(401, 404),
            summary="A job's state, timings, error and metrics")
async def get_job(job_id: str, service: Service = Depends(get_service), caller: Caller = Depends(get_caller)):
    return JobView.of(job_or_404(service, caller, job_id))


@router.get("/v1/jobs/{job_id}/mask", summary="The lesion mask of a finished job (.mha)",
            responses={**responses(401, 404, 409), 200: {"content": {"application/octet-stream": {}},
                                                         "description": "uint8 mask on the PET grid"}},
            response_class=FileResponse)
async def get_mask(job_id: str, service: Service = Depends(get_service), caller: Caller = Depends(get_caller)):
    job = job_or_404(service, caller, job_id)
    mask = service.settings.jobs_dir / job.id / MASK_NAME
    if job.state != JobState.succeeded or not mask.is_file():
        raise ApiError(409, f"job is {job.state.value}; the mask exists once it has succeeded")
    return FileResponse(mask, media_type="application/octet-stream", filename=f"{job.id}.mha")


@router.delete("/v1/jobs/{job_id}", status_code=204, responses=responses(401, 404, 409),
               summary="Delete a job that is not running, with its files")
async def delete_job(job_id: str, service: Service = Depends(get_service), caller: Caller = Depends(get_caller)):
    job_or_404(service, caller, job_id)
    state = service.store.delete(job_id)
    if state is None:
        raise ApiError(404, "no such job")
    if state == JobState.running:
        raise ApiError(409, "job is running; delete it once it has finished")
    service.worker.take(job_id)  # a queued job's images, held for its run
    shutil.rmtree(service.settings.jobs_dir / job_id, ignore_errors=True)
    return Response(status_code=204)


def job_or_404(service: Service, caller: Caller, job_id: str) -> Job:
    """The job if it exists and the caller may see it; 404 alike for both, so that ids cannot be probed."""
    job = service.store.get(job_id) if is_job_id(job_id) else None
    if job is None or not job_access(caller, job=job).job:
        raise ApiError(404, "no such job")
    return job
