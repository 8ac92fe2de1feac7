"""Server-rendered web pages: the service's state and upload forms, a job, the report, and the login form.

Access decisions live in `page_access` alone. Today every caller who gets past the token guard is the
organiser (the token's holder, or anyone on loopback when the service runs without a token); the
participant role is for the per-participant tokens of the hardening work.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass
from pathlib import Path

import jinja2
from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.service.errors import ApiError
from app.service.jobs import Job, JobState
from app.service.worker import MASK_NAME
from petct.atomic import atomic_path
from petct.jsonio import write_json_atomic

TOKEN_COOKIE = "petct_token"
PAGE_PATHS = ("/", "/report")  # with /jobs/...: a browser without the cookie is sent to the login form
ORGANISER, PARTICIPANT, ANONYMOUS = "organiser", "participant", "anonymous"
RECENT_JOBS = 20
REFRESH_S = 2  # a running job's page reloads itself this often
MIP_NAME = "mip.png"


@dataclass(frozen=True)
class PageAccess:
    """What a caller may see of one job, or of the report."""

    job: bool  # the job's page at all
    ground_truth: bool  # ground-truth outlines in MIPs and metrics against the ground truth
    report: bool  # the report over every scored job


def page_access(role: str, *, own_job: bool = False, per_case_phase: bool = False) -> PageAccess:
    """The organiser sees everything; a participant sees their own jobs, with the metrics and outlines of
    their own uploaded label (it is theirs), and the report only in a phase that shows per-case results."""
    if role == ORGANISER:
        return PageAccess(job=True, ground_truth=True, report=True)
    if role == PARTICIPANT:
        return PageAccess(job=own_job, ground_truth=own_job, report=per_case_phase)
    return PageAccess(job=False, ground_truth=False, report=False)


def caller_role(request: Request) -> str:
    """Today's auth: the token guard has already turned away every caller without the organiser's token."""
    return ORGANISER


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
        return templates.TemplateResponse(request, name, {"token_required": bool(service.settings.token), **context},
                                          status_code=status)

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request):
        return page(request, "login.html.j2", error=None)

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request, token: str = Form("")):
        expected = service.settings.token
        if expected and not hmac.compare_digest(token.encode(), expected.encode()):
            return page(request, "login.html.j2", status=401, error="That token is not the service's token.")
        response = RedirectResponse("/", status_code=303)
        if expected:
            response.set_cookie(TOKEN_COOKIE, expected, httponly=True, samesite="strict", secure=is_secure(request),
                                path="/")
        return response

    @router.post("/logout")
    async def logout():
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, path="/")
        return response

    @router.get("/", response_class=HTMLResponse)
    async def index(request: Request):
        role = caller_role(request)
        jobs, total = service.store.page(limit=RECENT_JOBS, offset=0)
        # Participants' own jobs only: job ownership arrives with per-participant tokens.
        jobs = [j for j in jobs if page_access(role, own_job=False).job]
        info = service.engine_info
        state = {"engine": info.get("engine", info.get("name", "unknown")), "model": info.get("model"),
                 "device": info.get("device"), "worker": "running" if service.worker.alive else "stopped",
                 "queued": service.store.count(JobState.queued)}
        return page(request, "index.html.j2", state=state, jobs=jobs, total=total,
                    report=page_access(role).report, organiser_mode=service.cases is not None)

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
    async def report(request: Request):
        if not page_access(caller_role(request)).report:
            raise ApiError(403, "the report shows per-case results, which this caller may not see")
        jobs = _scored_jobs(service)
        if not jobs:
            return page(request, "empty_report.html.j2")
        path = await service.in_pool(_report, service, jobs)
        return FileResponse(path, media_type="text/html; charset=utf-8")

    return router


def _visible_job(service, request: Request, job_id: str) -> tuple[Job, PageAccess]:
    from app.service.jobs import is_job_id

    job = service.store.get(job_id) if is_job_id(job_id) else None
    access = page_access(caller_role(request), own_job=False)
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


def is_page(path: str) -> bool:
    """Whether `path` is a web page (a browser without the cookie goes to the login form, not a JSON 401)."""
    return path in PAGE_PATHS or (path.startswith("/jobs/") and not path.endswith(".png"))


def token_cookie(header: bytes) -> bytes:
    """The token cookie's value from a Cookie header (empty when absent)."""
    from http.cookies import CookieError, SimpleCookie

    cookies = SimpleCookie()
    try:
        cookies.load(header.decode("latin-1"))
    except CookieError:
        return b""
    morsel = cookies.get(TOKEN_COOKIE)
    return morsel.value.encode("latin-1") if morsel else b""
