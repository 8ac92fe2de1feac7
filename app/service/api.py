"""The HTTP API: scoring, inference jobs, organiser-mode case scoring, health (OpenAPI at /docs)."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.service import pages
from app.service.errors import ERROR_RESPONSES, ApiError
from app.service.jobs import JobState, JobStore, is_job_id, new_job_id
from app.service.models import CaseList, Health, JobsPage, JobView, Readiness, ScoreRecord
from app.service.scoring import score_uploaded
from app.service.settings import ServiceSettings
from app.service.upload_checks import check_upload, check_uploads
from app.service.uploads import FileField, StoredFile, receive_files
from app.service.worker import MASK_NAME, InferenceWorker
from petct.errors import InputError
from petct.imageio import grid_mismatches

log = logging.getLogger("app.api")
OPEN_PATHS = frozenset({"/healthz", "/login"})


@dataclass
class Service:
    """Everything the endpoints share."""

    settings: ServiceSettings
    store: JobStore
    worker: InferenceWorker
    scoring: ThreadPoolExecutor
    engine_info: dict
    cases: dict[str, Path] | None

    def scratch(self) -> Path:
        folder = self.settings.scratch_dir / secrets.token_hex(12)
        folder.mkdir(parents=True)
        return folder

    async def in_pool(self, fn, *args, **kwargs):
        """Run blocking image work in the bounded scoring pool (reads, checks, metrics)."""
        return await asyncio.wrap_future(self.scoring.submit(fn, *args, **kwargs))

    def check(self, stored: StoredFile, *, read_voxels: bool = True):
        """One upload's grid, once within the per-file limits; ApiError(422) otherwise."""
        return check_upload(stored, limits=self.settings.upload_limits, read_voxels=read_voxels).geometry

    def check_request(self, files: dict[str, StoredFile], *, read_voxels: bool = True):
        """Each upload's grid, once all are within the limits (per file and per request); ApiError(422) otherwise."""
        return check_uploads(files, limits=self.settings.upload_limits, read_voxels=read_voxels)


class BearerTokenGuard:
    """ASGI middleware: every path but health needs `Authorization: Bearer <token>`, checked before any body is read."""

    def __init__(self, app, *, token: str):
        self.app = app
        self.expected = token.encode()

    def _authorised(self, scope) -> bool:
        headers = dict(scope["headers"])
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        # The web pages' login form keeps the token in a SameSite=Strict cookie instead of the header.
        cookie = pages.token_cookie(headers.get(b"cookie", b""))
        # compare_digest on every request, even with a wrong scheme: timing tells nothing about the token
        by_header = hmac.compare_digest(given.strip(), self.expected) and scheme.lower() == b"bearer"
        return hmac.compare_digest(cookie, self.expected) or by_header

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            if not self._authorised(scope):
                if pages.is_page(scope["path"]) and scope["method"] == "GET":
                    await RedirectResponse("/login", status_code=303)(scope, receive, send)
                    return
                error = ApiError(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
                response = JSONResponse(error.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def multipart_body(*required: str, optional: tuple[str, ...] = ()) -> dict:
    """OpenAPI text for a multipart body of image files (the endpoint streams it itself)."""
    properties = {name: {"type": "string", "format": "binary",
                         "description": "image: .mha, .nii.gz, .nrrd or .nii"} for name in (*required, *optional)}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "properties": properties, "required": list(required)}}}}}


def create_app(*, settings: ServiceSettings, engine) -> FastAPI:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the data folder: {exc.strerror}", path=settings.data_dir) from None
    store = JobStore(settings.database)
    scoring = ThreadPoolExecutor(max_workers=settings.scoring_workers, thread_name_prefix="scoring")
    worker = InferenceWorker(store=store, engine=engine, jobs_dir=settings.jobs_dir, scoring=scoring)
    info = dict(engine.describe())
    cases = None
    if settings.ground_truth is not None:
        from app.service.cases import index_cases
        cases = index_cases(settings.ground_truth)
    service = Service(settings=settings, store=store, worker=worker, scoring=scoring, engine_info=info, cases=cases)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        _tidy_data_dir(service)
        requeued, failed = store.recover()
        if requeued or failed:
            log.warning("after restart: %d interrupted job(s) queued again, %d failed", len(requeued), len(failed))
        worker.start()
        yield
        worker.stop()
        scoring.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="autoPET PET/CT kit service", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Scores lesion masks and runs the kit's inference engine on uploaded studies.",
                  dependencies=[Depends(HTTPBearer(auto_error=False))])  # documents the token; the middleware enforces it
    _add_error_handlers(app)
    if settings.token:
        app.add_middleware(BearerTokenGuard, token=settings.token)
    _add_health_routes(app, service)
    _add_score_route(app, service)
    _add_job_routes(app, service)
    if cases is not None:
        _add_case_routes(app, service)
    pages.add_offline_docs(app)
    app.include_router(pages.pages_router(service))
    return app


def _tidy_data_dir(service: Service) -> None:
    """Drop half-received uploads: scratch folders and job folders with no job record."""
    shutil.rmtree(service.settings.scratch_dir, ignore_errors=True)
    service.settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    known = service.store.ids()
    for folder in service.settings.jobs_dir.iterdir():
        if folder.name not in known:
            shutil.rmtree(folder, ignore_errors=True)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        return JSONResponse(ApiError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(ApiError(422, first.get("msg", "invalid request"), field=field).body(), status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception):
        log.exception("internal error")
        return JSONResponse(ApiError(500, "internal server error; see the server log").body(), status_code=500)


def _add_health_routes(app: FastAPI, service: Service) -> None:
    @app.get("/healthz", response_model=Health, tags=["health"], summary="The process answers")
    async def healthz():
        return Health(status="ok")

    @app.get("/readyz", response_model=Readiness, tags=["health"], summary="Engine, model and device",
             responses={503: {"model": Readiness, "description": "The inference worker is not running"}})
    async def readyz(response: Response):
        alive = service.worker.alive
        if not alive:
            response.status_code = 503
        info = service.engine_info
        return Readiness(ready=alive, engine=str(info.get("engine", info.get("name", "unknown"))),
                         model=_opt_str(info.get("model")), device=_opt_str(info.get("device")), details=info,
                         inference_worker="running" if alive else "stopped",
                         queued_jobs=service.store.count(JobState.queued), organiser_mode=service.cases is not None)


def _opt_str(value) -> str | None:
    return None if value is None else str(value)


def _add_score_route(app: FastAPI, service: Service) -> None:
    @app.post("/v1/score", response_model=ScoreRecord, tags=["scoring"], responses=ERROR_RESPONSES,
              summary="Score a prediction against a ground truth",
              openapi_extra=multipart_body("prediction", "ground_truth"))
    async def score(request: Request, study: str = Query("upload", max_length=200,
                                                         description="name to report the study under")):
        folder = service.scratch()
        try:
            files = await receive_files(request, fields=[FileField("prediction"), FileField("ground_truth")],
                                        folder=folder, max_bytes=service.settings.max_upload_bytes)

            def work() -> dict:
                service.check_request(files, read_voxels=False)  # the scorer reads them next and names what fails
                return score_uploaded(ground_truth=files["ground_truth"].path, prediction=files["prediction"].path,
                                      study=study, names={k: v.client_name for k, v in files.items()})
            return await service.in_pool(work)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _add_job_routes(app: FastAPI, service: Service) -> None:
    @app.post("/v1/studies", status_code=202, response_model=JobView, tags=["jobs"], responses=ERROR_RESPONSES,
              summary="Queue a study (PET in SUV and CT on the PET grid) for segmentation",
              openapi_extra=multipart_body("pet", "ct", optional=("label",)))
    async def submit_study(request: Request, response: Response):
        job_id = new_job_id()
        folder = service.settings.jobs_dir / job_id
        folder.mkdir(parents=True)
        try:
            files = await receive_files(request, fields=[FileField("pet"), FileField("ct"),
                                                         FileField("label", required=False)],
                                        folder=folder, max_bytes=service.settings.max_upload_bytes)
            await service.in_pool(_check_study, service, files)
            job = service.store.add(job_id, {field: stored.path.name for field, stored in files.items()})
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        service.worker.wake()
        response.headers["Location"] = f"/v1/jobs/{job_id}"
        return JobView.of(job)

    @app.get("/v1/jobs", response_model=JobsPage, tags=["jobs"], responses=ERROR_RESPONSES,
             summary="Jobs, newest first")
    async def list_jobs(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=2**62),
                        state: JobState | None = None):
        jobs, total = service.store.page(limit=limit, offset=offset, state=state)
        following = offset + len(jobs)
        return JobsPage(jobs=[JobView.of(j) for j in jobs], total=total, limit=limit, offset=offset,
                        next_offset=following if following < total else None)

    @app.get("/v1/jobs/{job_id}", response_model=JobView, tags=["jobs"], responses=ERROR_RESPONSES,
             summary="A job's state, timings, error and metrics")
    async def get_job(job_id: str):
        return JobView.of(_job_or_404(service, job_id))

    @app.get("/v1/jobs/{job_id}/mask", tags=["jobs"], summary="The lesion mask of a finished job (.mha)",
             responses={**ERROR_RESPONSES, 200: {"content": {"application/octet-stream": {}},
                                                 "description": "uint8 mask on the PET grid"}},
             response_class=FileResponse)
    async def get_mask(job_id: str):
        job = _job_or_404(service, job_id)
        mask = service.settings.jobs_dir / job.id / MASK_NAME
        if job.state != JobState.succeeded or not mask.is_file():
            raise ApiError(409, f"job is {job.state.value}; the mask exists once it has succeeded")
        return FileResponse(mask, media_type="application/octet-stream", filename=f"{job.id}.mha")

    @app.delete("/v1/jobs/{job_id}", status_code=204, tags=["jobs"], responses=ERROR_RESPONSES,
                summary="Delete a job that is not running, with its files")
    async def delete_job(job_id: str):
        _job_or_404(service, job_id)
        state = service.store.delete(job_id)
        if state is None:
            raise ApiError(404, "no such job")
        if state == JobState.running:
            raise ApiError(409, "job is running; delete it once it has finished")
        shutil.rmtree(service.settings.jobs_dir / job_id, ignore_errors=True)
        return Response(status_code=204)


def _check_study(service: Service, files: dict[str, StoredFile]) -> None:
    """Each file a readable image, and CT and label on the PET's grid."""
    grids = service.check_request(files)
    for field in ("ct", "label"):
        if field in grids:
            mismatches = grid_mismatches(grids["pet"], grids[field])
            if mismatches:
                raise ApiError(422, f"not on the PET's grid: {'; '.join(mismatches)}", field=field,
                               file=files[field].client_name)


def _job_or_404(service: Service, job_id: str):
    job = service.store.get(job_id) if is_job_id(job_id) else None
    if job is None:
        raise ApiError(404, "no such job")
    return job


def _add_case_routes(app: FastAPI, service: Service) -> None:
    cases = service.cases or {}

    @app.get("/v1/cases", response_model=CaseList, tags=["organiser"], responses=ERROR_RESPONSES,
             summary="Names of the cases a prediction can be scored against")
    async def list_cases():
        return CaseList(cases=list(cases))

    @app.post("/v1/cases/{case}/score", response_model=ScoreRecord, tags=["organiser"], responses=ERROR_RESPONSES,
              summary="Score a prediction against a case's ground truth (which never leaves the server)",
              openapi_extra=multipart_body("prediction"))
    async def score_case(case: str, request: Request):
        ground_truth = cases.get(case)
        if ground_truth is None:
            raise ApiError(404, "no such case; GET /v1/cases lists them")
        folder = service.scratch()
        try:
            files = await receive_files(request, fields=[FileField("prediction")], folder=folder,
                                        max_bytes=service.settings.max_upload_bytes)

            def work() -> dict:
                service.check_request(files, read_voxels=False)
                return score_uploaded(ground_truth=ground_truth, prediction=files["prediction"].path, study=case,
                                      names={"prediction": files["prediction"].client_name},
                                      hide_ground_truth=True)
            return await service.in_pool(work)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
