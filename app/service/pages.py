"""Server-rendered web pages: the service's state and upload forms, a job, the report, a phase, the login form.

Who is calling comes from the Authenticator (app.service.deps), which also accepts the login cookie and
sends a page GET without credentials to /login; what each caller may see is decided in app.service.access alone.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import jinja2
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from app.service.access import JobAccess, job_access, submissions_of
from app.service.deps import TOKEN_COOKIE, Caller, caller_for, get_caller, organiser_only
from app.service.errors import ApiError
from app.service.jobs import Job, JobState
from app.service.worker import MASK_NAME
from evaluation.aggregates import METRICS
from petct.atomic import atomic_path
from petct.jsonio import write_json_atomic

RECENT_JOBS = 20
REFRESH_S = 2  # a running job's page reloads itself this often
MIP_NAME = "mip.png"


def is_secure(request: Request) -> bool:
    """Whether the browser reached us over https, directly or through a proxy that says so."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _templates() -> Jinja2Templates:
    from evaluation.html_report.build import number_cell

    environment = jinja2.Environment(loader=jinja2.PackageLoader("app.service", "templates"), autoescape=True)
    environment.globals["num"] = number_cell
    return Jinja2Templates(env=environment)


def pages_router(service) -> APIRouter:
    """The pages, over the service's store, settings and scoring pool."""
    router = APIRouter(include_in_schema=False)
    templates = _templates()

    def page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        shared = {"token_required": service.tokens_required(), "can_report": job_access(get_caller(request)).report}
        return templates.TemplateResponse(request, name, {**shared, **context}, status_code=status)

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request):
        return page(request, "login.html.j2", error=None, can_report=False)

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request, token: str = Form("")):
        if not service.tokens_required():
            return RedirectResponse("/", status_code=303)
        if caller_for(service, token.encode("utf-8", "surrogateescape")) is None:
            return page(request, "login.html.j2", status=401, can_report=False,
                        error="That token is neither the organiser's nor a live participant's.")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", secure=is_secure(request), path="/")
        return response

    @router.post("/logout")
    async def logout():
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, path="/")
        return response

    @router.get("/", response_class=HTMLResponse)
    async def index(request: Request, caller: Caller = Depends(get_caller)):
        jobs, total = service.store.page(limit=RECENT_JOBS, offset=0, owner=caller.owner,
                                         everyone=caller.sees_everything)
        info = service.engine_info
        state = {"engine": info.get("engine", info.get("name", "unknown")), "model": info.get("model"),
                 "device": info.get("device"), "worker": "running" if service.worker.alive else "stopped",
                 "queued": service.store.count(JobState.queued)}
        phases = service.phases.list() if service.cases is not None else []
        return page(request, "index.html.j2", state=state, jobs=jobs, total=total, phases=phases,
                    report=job_access(caller).report, organiser_mode=service.cases is not None)

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    async def job_page(request: Request, job_id: str):
        job, access = _visible_job(service, request, job_id)
        running = job.state in (JobState.queued, JobState.running)
        metrics = job.metrics if access.ground_truth else None
        return page(request, "job.html.j2", job=job, metrics=metrics, refresh_s=REFRESH_S if running else None,
                    has_mask=job.state == JobState.succeeded)

    @router.get("/jobs/{job_id}/mip.png")
    async def job_mip(request: Request, job_id: str):
        job, access = _visible_job(service, request, job_id)
        if job.state != JobState.succeeded:
            raise ApiError(409, f"job is {job.state.value}; its MIP exists once it has succeeded")
        path = await service.in_pool(_job_mip, service.settings.jobs_dir / job.id, job, access.ground_truth)
        return FileResponse(path, media_type="image/png")

    @router.get("/report", response_class=HTMLResponse)
    async def report(request: Request, _: Caller = Depends(organiser_only)):
        # Over every scored job, everyone's: the organiser's alone (others get 404, as in the API)
        jobs = _scored_jobs(service)
        if not jobs:
            return page(request, "empty_report.html.j2")
        path = await service.in_pool(_report, service, jobs)
        return FileResponse(path, media_type="text/html; charset=utf-8")

    @router.get("/phases/{phase}", response_class=HTMLResponse)
    async def phase_page(request: Request, phase: str, caller: Caller = Depends(get_caller)):
        # The API's own decisions (app.service.routes.phases): the caller's submissions (the organiser: all),
        # aggregates with single cases' statistics left out and per-case records only where the phase shows them.
        from app.service.leaderboard import phase_leaderboard
        from app.service.routes.phases import phase_view, view

        current = service.phases.get(phase) if service.cases is not None else None
        if current is None:
            raise ApiError(404, "no such phase")
        everyone = service.phases.of(phase)
        whose = submissions_of(caller)
        own = [s for s in everyone if whose is None or s.participant == whose]
        rows = await service.in_pool(phase_leaderboard, current, everyone)
        return page(request, "phase.html.j2", phase=phase_view(service, current, caller), metrics=METRICS,
                    submissions=[view(s, current, caller) for s in reversed(own)], leaderboard=rows,
                    sees_everything=caller.sees_everything)

    return router


def _visible_job(service, request: Request, job_id: str) -> tuple[Job, JobAccess]:
    from app.service.jobs import is_job_id

    job = service.store.get(job_id) if is_job_id(job_id) else None
    access = job_access(get_caller(request), job=job)
    if job is None or not access.job:
        raise ApiError(404, "no such job")
    return job, access


def _job_mip(folder: Path, job: Job, with_ground_truth: bool) -> Path:
    """The job's overlay MIP, made once and kept in its folder (with and without the label's outlines)."""
    from evaluation.mip import mip_png, read_study

    label = job.files.get("label") if with_ground_truth else None
    path = folder / (MIP_NAME if label else f"prediction-{MIP_NAME}")
    if not path.is_file():
        study = read_study(suv=folder / job.files["pet"], prediction=folder / MASK_NAME,
                           ground_truth=folder / label if label else None)
        with atomic_path(path) as tmp:
            mip_png(study, tmp, title=f"job {job.id}")
    return path


def _scored_jobs(service) -> list[Job]:
    jobs, offset = [], 0
    while True:
        page, total = service.store.page(limit=500, offset=offset, state=JobState.succeeded)
        jobs += [j for j in page if j.metrics]
        offset += len(page)
        if not page or offset >= total:
            return sorted(jobs, key=lambda j: j.id)


def _report(service, jobs: list[Job]) -> Path:
    """The report over these jobs, cached under a name made from their ids and finishing times."""
    from evaluation.aggregates import aggregate
    from evaluation.html_report.build import ReportOptions, build_report_html
    from evaluation.metrics import StudyMetrics

    folder = service.settings.data_dir / "report"
    key = hashlib.sha256(json.dumps([(j.id, j.finished_at) for j in jobs]).encode()).hexdigest()[:16]
    html = folder / f"report-{key}.html"
    if html.is_file():
        return html
    jobs_dir = service.settings.jobs_dir
    fields = list(StudyMetrics.__dataclass_fields__)
    cases = {j.id: {**{f: j.metrics.get(f) for f in fields}, "study": j.id,
                    "ground_truth_file": str(jobs_dir / j.id / j.files["label"]),
                    "prediction_file": str(jobs_dir / j.id / MASK_NAME)} for j in jobs}
    metrics = [StudyMetrics(**{f: math.nan if c[f] is None else c[f] for f in fields}) for c in cases.values()]
    source = write_json_atomic({"case": cases, "aggregates": aggregate(metrics), "errors": []},
                               folder / f"metrics-{key}.json")
    build_report_html(ReportOptions(metrics=[f"jobs={source}"], output=html, mip="all",
                                    suv_files={j.id: jobs_dir / j.id / j.files["pet"] for j in jobs}))
    for old in folder.glob("*"):  # one cached report: the latest
        if old.name not in {html.name, source.name}:
            old.unlink(missing_ok=True)
    return html


def add_offline_docs(app) -> None:
    """/docs with Swagger UI's JavaScript and CSS served from the installed fastapi-offline package, not a CDN."""
    from importlib.resources import files

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    assets = Path(str(files("fastapi_offline") / "static"))
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} – API docs",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")
