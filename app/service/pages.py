"""Server-rendered web pages: the service's state and upload forms, a job, the report, a phase, the login form.

Who is calling comes from the Authenticator (app.service.deps), which also accepts the login cookie and
sends a page GET without credentials to /login; what each caller may see is decided in app.service.access alone.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import jinja2
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from app.service.access import JobAccess, job_access, submissions_of
from app.service.deps import Caller, Role, Service, caller_for, get_caller, get_service, organiser_only, session_cookie
from app.service.errors import ApiError
from app.service.jobs import Job, JobState
from app.service.phases import AGGREGATE_SIGNIFICANT_DIGITS
from app.service.security import inline_hashes, policy
from app.service.sessions import SESSION_COOKIE
from app.service.viewer import COMPONENT_LABELS, PREDICTION_LABELS, StudyFiles, Volume, viewer_volume
from app.service.viewer import FOLDER as VIEWER_FOLDER
from app.service.worker import MASK_NAME
from evaluation.aggregates import METRICS
from petct.atomic import atomic_path
from petct.jsonio import write_json_atomic

RECENT_JOBS = 20
REFRESH_S = 2  # a running job's page reloads itself this often
MIP_NAME = "mip.png"


def who(caller: Caller | None) -> str | None:
    """Who the pages say is logged in: a participant's name, "the organiser", or None (no login)."""
    if caller is None or caller.role == Role.anonymous:
        return None
    return caller.participant if caller.role == Role.participant else "the organiser"


def is_secure(request: Request) -> bool:
    """Whether the browser reached us over https, directly or through a proxy that says so."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def rounded_cell(value: float | None) -> Markup:
    """A hidden phase's mean as the API gives it (already rounded): its significant digits, no more."""
    if value is None or not math.isfinite(value):
        return Markup('<span class="num" data-value="null">–</span>')
    return Markup(f'<span class="num" data-value="{value!r}">{value:.{AGGREGATE_SIGNIFICANT_DIGITS}g}</span>')


@functools.cache
def _templates() -> Jinja2Templates:
    from evaluation.html_report.build import number_cell

    environment = jinja2.Environment(loader=jinja2.PackageLoader("app.service", "templates"), autoescape=True)
    environment.globals["num"] = number_cell
    environment.globals["rounded_cell"] = rounded_cell
    environment.globals["utc"] = _utc
    return Jinja2Templates(env=environment)


# The pages, over the service's store, settings and scoring pool (the service as every router gets it).
router = APIRouter(include_in_schema=False)
def page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    """A page from its template, with what every page shows (who is logged in, whether the report is theirs)."""
    service = get_service(request)
    caller = getattr(request.state, "caller", None)
    shared = {"token_required": service.tokens_required(), "who": who(caller),
              "can_report": job_access(caller).report if caller else False}
    return _templates().TemplateResponse(request, name, {**shared, **context}, status_code=status)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, service: Service = Depends(get_service)):
    return page(request, "login.html.j2", error=None, can_report=False)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, token: str = Form(""), service: Service = Depends(get_service)):
    if not service.tokens_required():
        return RedirectResponse("/", status_code=303)
    if caller_for(service, token.encode("utf-8", "surrogateescape")) is None:
        return page(request, "login.html.j2", status=401, can_report=False,
                    error="That token is neither the organiser's nor a live participant's.")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, service.sessions.open(token), httponly=True, samesite="strict",
                        secure=is_secure(request), path="/")
    return response


@router.post("/logout")
async def logout(request: Request, service: Service = Depends(get_service)):
    session = session_cookie(request.headers.get("cookie", "").encode("latin-1"))
    if session:
        service.sessions.close_session(session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, caller: Caller = Depends(get_caller),
                service: Service = Depends(get_service)):
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
async def job_page(request: Request, job_id: str, service: Service = Depends(get_service)):
    job, access = _visible_job(service, request, job_id)
    running = job.state in (JobState.queued, JobState.running)
    metrics = job.metrics if access.ground_truth else None
    return page(request, "job.html.j2", job=job, metrics=metrics, refresh_s=REFRESH_S if running else None,
                timings=[(timing_label(name), seconds) for name, seconds in job.timings.items()],
                has_mask=job.state == JobState.succeeded, viewer=_viewer_context(job, access))


@router.get("/jobs/{job_id}/mip.png")
async def job_mip(request: Request, job_id: str, service: Service = Depends(get_service)):
    job, access = _visible_job(service, request, job_id)
    if job.state != JobState.succeeded:
        raise ApiError(409, f"job is {job.state.value}; its MIP exists once it has succeeded")
    path = await service.in_pool(_job_mip, service.settings.jobs_dir / job.id, job, access.ground_truth)
    return FileResponse(path, media_type="image/png")


@router.get("/jobs/{job_id}/viewer/{volume}.nii.gz")
async def job_volume(request: Request, job_id: str, volume: str,
                     service: Service = Depends(get_service)):
    # The job page's rules: the job's owner or the organiser; the components (against the label) only
    # where the page shows the label's metrics.
    job, access = _visible_job(service, request, job_id)
    wanted = _viewer_volume_or_404(volume, job=job, access=access)
    if job.state != JobState.succeeded:
        raise ApiError(409, f"job is {job.state.value}; its images are shown once it has succeeded")
    folder = service.settings.jobs_dir / job.id
    files = StudyFiles(ct=folder / job.files["ct"], pet=folder / job.files["pet"], mask=folder / MASK_NAME,
                       label=folder / job.files["label"] if "label" in job.files else None)
    path = await service.in_pool(viewer_volume, cache=folder / VIEWER_FOLDER, files=files, volume=wanted)
    return FileResponse(path, media_type="application/octet-stream")


@router.get("/phases/{phase}/submissions/{submission_id}/cases/{case}", response_class=HTMLResponse)
async def submission_case(request: Request, phase: str, submission_id: str, case: str,
                          _: Caller = Depends(organiser_only), service: Service = Depends(get_service)):
    # The organiser's alone (others get 404): the case's images, the submitted mask and the ground truth.
    submission, files = _kept_case(service, phase, submission_id, case)
    record = next((r for r in (submission.report or {}).get("case", {}).values() if r.get("study") == case), {})
    base = f"/phases/{phase}/submissions/{submission_id}/cases/{case}/viewer"
    viewer = {"ct": f"{base}/{Volume.ct.value}.nii.gz", "suv": f"{base}/{Volume.suv.value}.nii.gz",
              "mask": f"{base}/{Volume.components.value}.nii.gz", "labels": [asdict(s) for s in COMPONENT_LABELS]}
    return page(request, "submission_case.html.j2", phase=phase, submission=submission, case=case,
                record=record, viewer=viewer, submitted_at=_utc(submission.created_at))


@router.get("/phases/{phase}/submissions/{submission_id}/cases/{case}/viewer/{volume}.nii.gz")
async def submission_case_volume(phase: str, submission_id: str, case: str, volume: str,
                                 _: Caller = Depends(organiser_only), service: Service = Depends(get_service)):
    _, files = _kept_case(service, phase, submission_id, case)
    wanted = next((v for v in Volume if v.value == volume and v != Volume.prediction), None)
    if wanted is None:
        raise ApiError(404, "no such image")
    cache = service.settings.submissions_dir / submission_id / VIEWER_FOLDER / hashlib.sha256(
        case.encode()).hexdigest()[:16]
    path = await service.in_pool(viewer_volume, cache=cache, files=files, volume=wanted)
    return FileResponse(path, media_type="application/octet-stream")


@router.get("/report", response_class=HTMLResponse)
async def report(request: Request, _: Caller = Depends(organiser_only),
                 service: Service = Depends(get_service)):
    # Over every scored job, everyone's: the organiser's alone (others get 404, as in the API)
    jobs = _scored_jobs(service)
    phases = _phases_with_scores(service)
    if not jobs:
        return page(request, "empty_report.html.j2", phases=phases)
    path = await service.in_pool(_report, service, jobs, phases)
    return _report_response(path)


@router.get("/report/phases/{phase}", response_class=HTMLResponse)
async def phase_report(request: Request, phase: str, _: Caller = Depends(organiser_only),
                       service: Service = Depends(get_service)):
    # Each participant's ranked submission (the leaderboard's), from the metrics stored when it was scored.
    from app.service.routes.phases import phase_or_404

    phase_or_404(service, phase)
    rows = service.leaderboards.rows(phase)
    if not rows:
        return page(request, "empty_report.html.j2", phases=[], phase=phase)
    ranked = {s.id: s for s in service.phases.of(phase)}
    path = await service.in_pool(_phase_report, service, phase, [ranked[r["submission"]] for r in rows])
    return _report_response(path)


@router.get("/phases/{phase}", response_class=HTMLResponse)
async def phase_page(request: Request, phase: str, caller: Caller = Depends(get_caller),
                     service: Service = Depends(get_service)):
    # The API's own decisions (app.service.routes.phases): the caller's submissions (the organiser: all),
    # aggregates with single cases' statistics left out and per-case records only where the phase shows them.
    from app.service.routes.phases import board_rows, phase_or_404, phase_view, view
    from evaluation.html_report.build import TABLE_METRICS
    from evaluation.ranking import RANKED_METRICS

    current = phase_or_404(service, phase)
    everyone = service.phases.of(phase)
    whose = submissions_of(caller)
    own = [s for s in everyone if whose is None or s.participant == whose]
    rows = board_rows(service, current, caller)
    submitted_at = {s.id: _utc(s.created_at) for s in everyone}
    return page(request, "phase.html.j2", phase=phase_view(service, current, caller), metrics=METRICS,
                labels=TABLE_METRICS, ranked=RANKED_METRICS, statistics=STATISTIC_LABELS,
                submissions=[view(s, current, caller) for s in reversed(own)], leaderboard=rows,
                submitted_at=submitted_at, sees_everything=caller.sees_everything,
                budget=_budget(service, current, caller), missing=_missing_cases(service, current),
                viewable={s.id: viewable_cases(service, s) for s in own} if caller.sees_everything else {})



# A job's timings (app.service.worker, the engine's stages from algorithm.logs.timed) named in words.
TIMING_WORDS = {"queued_s": "queued", "inference_s": "inference, in all", "scoring_s": "scoring against the label",
                "read inputs": "reading inputs", "predict": "predicting", "write mask": "writing the mask"}


def timing_label(name: str) -> str:
    """ "engine_predict/organ_rules" -> "predicting: organ rules"; names it does not know, plainly."""
    if name in TIMING_WORDS:
        return TIMING_WORDS[name]
    stage = name.removeprefix("engine_")
    head, _, tail = stage.partition("/")
    words = TIMING_WORDS.get(head, head.replace("_", " "))
    return f"{words}: {tail.replace('_', ' ').replace('/', ': ')}" if tail else words


STATISTIC_LABELS = {"mean": "mean", "std": "standard deviation", "min": "minimum", "25pc": "25th percentile",
                    "50pc": "median", "75pc": "75th percentile", "max": "maximum", "count": "cases"}


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Budget:
    """A participant's submissions to a phase: used, allowed, and whether (or from when) the next is taken."""

    used_today: int
    per_day: int
    used_total: int
    total: int
    next_allowed: str | None  # None: now; "" never again; else when (UTC)


def _budget(service, phase, caller: Caller) -> Budget | None:
    from app.service.phases import BudgetSpent
    from app.service.routes.phases import phase_view

    if caller.role != Role.participant:
        return None
    counts = phase_view(service, phase, caller)
    try:
        service.phases.budget_check(phase, caller.participant)
        next_allowed = None
    except BudgetSpent as spent:
        next_allowed = "" if spent.next_allowed is None else _utc(spent.next_allowed)
    return Budget(used_today=counts.used_today, per_day=phase.per_day, used_total=counts.used_total,
                  total=phase.total, next_allowed=next_allowed)


def _missing_cases(service, phase) -> list[str]:
    """The phase's cases the server has no ground truth for (the phase takes no submission while any is)."""
    return [case for case in phase.cases if case not in (service.cases or {})]


def _visible_job(service, request: Request, job_id: str) -> tuple[Job, JobAccess]:
    from app.service.jobs import is_job_id

    job = service.store.get(job_id) if is_job_id(job_id) else None
    access = job_access(get_caller(request), job=job)
    if job is None or not access.job:
        raise ApiError(404, "no such job")
    return job, access


def _viewer_mask(job: Job, access: JobAccess) -> Volume:
    """The mask volume the viewer shows this caller: components against the label where it may see them."""
    return Volume.components if access.ground_truth and job.has_label else Volume.prediction


def _viewer_volume_or_404(name: str, *, job: Job, access: JobAccess) -> Volume:
    allowed = {Volume.ct, Volume.suv, _viewer_mask(job, access)}
    wanted = next((v for v in Volume if v.value == name), None)
    if wanted not in allowed:
        raise ApiError(404, "no such image")
    return wanted


def _viewer_context(job: Job, access: JobAccess) -> dict:
    """What the job page's viewer section needs: its volumes' addresses and the masks' colours and names."""
    mask = _viewer_mask(job, access)
    styles = COMPONENT_LABELS if mask == Volume.components else PREDICTION_LABELS
    base = f"/jobs/{job.id}/viewer"
    return {"ct": f"{base}/{Volume.ct.value}.nii.gz", "suv": f"{base}/{Volume.suv.value}.nii.gz",
            "mask": f"{base}/{mask.value}.nii.gz", "labels": [asdict(s) for s in styles]}


def _job_mip(folder: Path, job: Job, with_ground_truth: bool) -> Path:
    """The job's overlay MIP, made once and kept in its folder (with and without the label's outlines)."""
    from evaluation.mip import mip_png, read_study

    label = job.files.get("label") if with_ground_truth else None
    path = folder / (MIP_NAME if label else f"prediction-{MIP_NAME}")
    if not path.is_file():
        study = read_study(suv=folder / job.files["pet"], prediction=folder / MASK_NAME,
                           ground_truth=folder / label if label else None)
        with atomic_path(path) as tmp:
            mip_png(study, tmp, title=job.study or f"job {job.id}")
    return path


def _scored_jobs(service) -> list[Job]:
    jobs, offset = [], 0
    while True:
        page, total = service.store.page(limit=500, offset=offset, state=JobState.succeeded)
        jobs += [j for j in page if j.metrics]
        offset += len(page)
        if not page or offset >= total:
            return sorted(jobs, key=lambda j: j.id)


def _kept_case(service, phase: str, submission_id: str, case: str):
    """A scored submission of `phase` with its kept mask of `case`, the case's images and ground truth (as
    StudyFiles), or 404 saying which of them the server lacks."""
    from app.service.kept import kept_mask
    from app.service.phases import SubmissionState

    submission = next((s for s in service.phases.of(phase) if s.id == submission_id), None) \
        if service.cases is not None else None
    if submission is None or submission.state != SubmissionState.scored or case not in service.cases:
        raise ApiError(404, "no such scored submission or case")
    mask = kept_mask(service.settings.submissions_dir / submission.id, case)
    if mask is None:
        raise ApiError(404, "this submission's masks were not kept (serve --keep-submissions keeps them)")
    images = (service.images or {}).get(case)
    if images is None:
        raise ApiError(404, f"no images of case {case} (serve --images DIR gives the test set's PET and CT)")
    return submission, StudyFiles(ct=images.ct, pet=images.pet, mask=mask, label=service.cases[case])


def viewable_cases(service, submission) -> set[str]:
    """The cases of a submission the organiser can look at: its masks kept, the case's images known."""
    from app.service.kept import kept_cases

    if not service.images:
        return set()
    return kept_cases(service.settings.submissions_dir / submission.id) & set(service.images)


def _phases_with_scores(service) -> list[str]:
    """Names of the phases with at least one scored submission (each has a report of its own)."""
    from app.service.phases import SubmissionState

    if service.cases is None:
        return []
    return [p.name for p in service.phases.list()
            if any(s.state == SubmissionState.scored for s in service.phases.of(p.name))]


def _study_names(jobs: list[Job]) -> dict[str, str]:
    """Job id -> the name its study goes by in the report: its PET's file name, with the job id where shared."""
    names = {j.id: j.study or j.id for j in jobs}
    shared = {n for n in names.values() if list(names.values()).count(n) > 1}
    return {i: f"{n} (job {i[:8]})" if n in shared else n for i, n in names.items()}


def _cached(folder: Path, key_parts) -> tuple[Path, str]:
    key = hashlib.sha256(json.dumps(key_parts).encode()).hexdigest()[:16]
    return folder / f"report-{key}.html", key


def _keep_only(folder: Path, *names: str) -> None:
    for old in folder.glob("*"):  # one cached report per folder: the latest
        if old.name not in names:
            old.unlink(missing_ok=True)


def _report(service, jobs: list[Job], phases: list[str]) -> Path:
    """The report over these jobs, cached under a name made from their ids and finishing times."""
    from evaluation.aggregates import aggregate
    from evaluation.html_report.build import ReportOptions, build_report_html
    from evaluation.metrics import StudyMetrics
    from evaluation.records import metrics_json, study_record

    folder = service.settings.data_dir / "report" / "jobs"
    html, key = _cached(folder, [[(j.id, j.finished_at) for j in jobs], phases])
    if html.is_file():
        return html
    jobs_dir = service.settings.jobs_dir
    names = _study_names(jobs)
    metrics = {j.id: StudyMetrics.from_json(j.metrics) for j in jobs}
    cases = {names[j.id]: study_record(metrics[j.id], study=names[j.id], warnings=j.metrics.get("warnings") or (),
                                       files={"ground_truth_file": str(jobs_dir / j.id / j.files["label"]),
                                              "prediction_file": str(jobs_dir / j.id / MASK_NAME)}) for j in jobs}
    source = write_json_atomic(metrics_json(cases, aggregates=aggregate(list(metrics.values()))),
                               folder / f"metrics-{key}.json")
    links = (("/", "the service"), *((f"/report/phases/{p}", f"phase {p}'s report") for p in phases))
    build_report_html(ReportOptions(metrics=[f"jobs={source}"], output=html, mip="all", links=links,
                                    suv_files={names[j.id]: jobs_dir / j.id / j.files["pet"] for j in jobs}))
    _keep_only(folder, html.name, source.name)
    return html


def _phase_report(service, phase: str, submissions) -> Path:
    """The report over a phase's ranked submissions, one section per participant, from their stored metrics."""
    from evaluation.html_report.build import ReportOptions, build_report_html

    folder = service.settings.data_dir / "report" / "phases" / hashlib.sha256(phase.encode()).hexdigest()[:16]
    html, key = _cached(folder, [s.id for s in submissions])
    if html.is_file():
        return html
    sources = [write_json_atomic(s.report, folder / f"metrics-{key}-{i}.json") for i, s in enumerate(submissions)]
    build_report_html(ReportOptions(
        metrics=[f"{s.participant} ({_utc(s.created_at)})={path}" for s, path in zip(submissions, sources)],
        output=html, links=(("/", "the service"), (f"/phases/{phase}", f"phase {phase}"), ("/report", "jobs' report"))))
    _keep_only(folder, html.name, *(p.name for p in sources))
    return html


STATIC = Path(__file__).parent / "static"


def _report_response(path: Path) -> FileResponse:
    """A standalone report file with its own inline script and style: allowed by their hashes, nothing else."""
    hashes = inline_hashes(path.read_text(encoding="utf-8"))
    return FileResponse(path, media_type="text/html; charset=utf-8", headers={
        "Content-Security-Policy": policy(script_hashes=hashes["script"], style_hashes=hashes["style"])})


def add_offline_docs(app) -> None:
    """/docs with Swagger UI's JavaScript and CSS served from the installed fastapi-offline package, not a CDN.

    Swagger UI is started by a script file (static/docs.js), not FastAPI's inline one: the pages' CSP allows
    no inline script. /static/ serves the pages' own script and style files.
    """
    from importlib.resources import files

    from fastapi.staticfiles import StaticFiles

    assets = Path(str(files("fastapi_offline") / "static"))
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    html = _templates().get_template("docs.html.j2").render(title=f"{app.title} – API docs",
                                                            openapi_url=app.openapi_url)

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return HTMLResponse(html)
