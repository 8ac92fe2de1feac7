"""The HTTP API: the FastAPI app, its routers (app.service.routes) and what happens at start and stop."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.service import pages
from app.service.deps import Authenticator, Service
from app.service.errors import ApiError
from app.service.jobs import JobStore
from app.service.participants import ParticipantStore
from app.service.phases import PhaseStore
from app.service.routes import cases, health, jobs, phases, scoring
from app.service.scoring import KillableScoring, scoring_processes
from app.service.security import BrowserSafety
from app.service.sessions import SESSION_COOKIE, SessionStore
from app.service.settings import ServiceSettings
from app.service.uploads import disk_full
from app.service.worker import InferenceWorker
from petct.errors import InputError

log = logging.getLogger("app.api")


def create_app(*, settings: ServiceSettings, engine) -> FastAPI:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the data folder: {exc.strerror}", path=settings.data_dir) from None
    store = JobStore(settings.database)
    scoring_pool = ThreadPoolExecutor(max_workers=settings.scoring_workers, thread_name_prefix="scoring")
    processes = scoring_processes(settings.scoring_workers)
    worker = InferenceWorker(store=store, engine=engine, jobs_dir=settings.jobs_dir, scoring=scoring_pool,
                             killable=KillableScoring(processes, settings.score_timeout_s),
                             keep_jobs_for_s=settings.keep_jobs_for_s)
    cases_found = images_found = None
    if settings.ground_truth is not None:
        from app.service.cases import index_cases, index_images
        cases_found = index_cases(settings.ground_truth)
        images_found = index_images(settings.images) if settings.images is not None else None
    service = Service(settings=settings, store=store, participants=ParticipantStore(settings.database),
                      phases=PhaseStore(settings.database), worker=worker, scoring=scoring_pool,
                      processes=processes,
                      engine_info=dict(engine.describe()), cases=cases_found, images=images_found,
                      sessions=SessionStore(settings.database))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        _tidy_data_dir(service)
        requeued, failed = store.recover()
        if requeued or failed:
            log.warning("after restart: %d interrupted job(s) queued again, %d failed", len(requeued), len(failed))
        if service.phases.fail_interrupted():
            log.warning("after restart: submissions that were being scored are marked interrupted (not counted)")
        if cases_found is not None:
            service.leaderboards.load(service.phases)
        for phase in service.phases.list() if cases_found is not None else ():
            for case in (case for case in phase.cases if case not in cases_found):
                log.error("phase %s stays closed: case %s has no ground truth in %s", phase.name, case,
                          settings.ground_truth)
        worker.start()
        yield
        worker.stop()
        scoring_pool.shutdown(wait=False, cancel_futures=True)
        service.processes.close()
        service.leaderboards.close()

    app = FastAPI(title="autoPET PET/CT kit service", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Scores lesion masks, runs the kit's inference engine on uploaded studies, and "
                              "(organiser mode) takes participants' submissions to phases.",
                  dependencies=[Depends(HTTPBearer(auto_error=False))])  # documents the token; Authenticator enforces it
    app.state.service = service
    _add_error_handlers(app)
    app.add_middleware(Authenticator, service=service)
    app.add_middleware(BrowserSafety, session_cookie=SESSION_COOKIE)  # outermost: every answer gets its headers
    for router in (health.router, scoring.router, jobs.router):
        app.include_router(router)
    if cases_found is not None:
        app.include_router(cases.router)
        app.include_router(phases.router)
    pages.add_offline_docs(app)
    app.include_router(pages.router)
    _only_declared_responses(app)
    return app


def _only_declared_responses(app: FastAPI) -> None:
    """OpenAPI without FastAPI's automatic 422 where an endpoint's parameters cannot fail validation.

    Endpoints that can answer 422 declare it themselves (app.service.errors.responses).
    """
    def schema() -> dict:
        if app.openapi_schema is None:
            spec = FastAPI.openapi(app)
            for methods in spec.get("paths", {}).values():
                for operation in methods.values():
                    auto = operation.get("responses", {}).get("422", {})
                    if auto.get("description") == "Validation Error":
                        del operation["responses"]["422"]
            app.openapi_schema = spec
        return app.openapi_schema
    app.openapi = schema


TEMPORARY = "tmp"  # the scratch folder that holds the server's (and its children's) temporary files
# multiprocessing puts its forkserver's socket at <tmp>/pymp-XXXXXXXX/listener-XXXXXXXX, and a socket's path
# may hold at most 107 bytes.
MAX_TEMPORARY_PATH = 70


def keep_temporary_files_in_scratch(settings: ServiceSettings) -> Path | None:
    """Point TMPDIR (tempfile's and multiprocessing's `pymp-*` folders, the children's too) into the scratch.

    What a kill -9 leaves there, the next start removes; nothing is left in the system's /tmp. Called by
    `serve` before anything else runs; the folder is emptied now, not by the tidying at start-up. A data dir
    whose path is too long for a socket's keeps the system's temporary folder (with a warning).
    """
    folder = (settings.scratch_dir / TEMPORARY).resolve()
    if len(str(folder)) > MAX_TEMPORARY_PATH:
        log.warning("temporary files stay in %s: the data dir's path is too long for multiprocessing's sockets "
                    "under %s (over %d characters)", tempfile.gettempdir(), folder, MAX_TEMPORARY_PATH)
        return None
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise InputError(f"cannot create the data folder: {exc.strerror}", path=folder) from None
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    return folder


def _tidy_data_dir(service: Service) -> None:
    """Drop half-received uploads: scratch folders and job folders with no job record."""
    scratch, in_use = service.settings.scratch_dir, Path(tempfile.gettempdir())
    for entry in scratch.iterdir() if scratch.is_dir() else ():
        if entry == in_use:  # keep_temporary_files_in_scratch emptied it when this server started
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    service.settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    known = service.store.ids()
    for folder in service.settings.jobs_dir.iterdir():
        if folder.name not in known:
            shutil.rmtree(folder, ignore_errors=True)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        return JSONResponse(ApiError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(ApiError(422, first.get("msg", "invalid request"), field=field).body(), status_code=422)

    @app.exception_handler(OSError)
    async def os_error(_: Request, exc: OSError):
        if disk_full(exc):
            log.error("disk full: %s", exc)
            error = ApiError(507, "the server's disk is full; nothing was kept of this request, try again later")
            return JSONResponse(error.body(), status_code=507)
        log.exception("internal error")
        return JSONResponse(ApiError(500, "internal server error; see the server log").body(), status_code=500)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception):
        log.exception("internal error")
        return JSONResponse(ApiError(500, "internal server error; see the server log").body(), status_code=500)
