"""Phases: whole-case-set submissions within a budget, answered with aggregates, and the leaderboard."""
from __future__ import annotations

import logging
import shutil
import time
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Request, Response

from app.service.access import sees_case_results, submissions_of
from app.service.deps import Caller, Role, Service, get_caller, get_service, participant_only
from app.service.errors import UPLOAD_ERRORS, ApiError, responses
from app.service.models import Leaderboard, PhaseView, SubmissionList, SubmissionView
from app.service.phases import BudgetSpent, Phase, Submission, SubmissionState, means_only, next_utc_midnight, rounded
from app.service.scoring import check_masks, score_case_set
from app.service.submissions import case_set
from app.service.uploads import FileField, receive_files

router = APIRouter(tags=["phases"])
log = logging.getLogger("app.phases")


def phase_or_404(service: Service, name: str) -> Phase:
    """The phase named so; 404 when there is none, or the server is not in organiser mode (no phases then)."""
    phase = service.phases.get(name) if service.cases is not None else None
    if phase is None:
        raise ApiError(404, "no such phase")
    return phase


def view(submission: Submission, phase: Phase, caller: Caller) -> SubmissionView:
    """What the caller may see of a submission: aggregates; per-case records where the phase shows them.

    Where the phase hides its cases, a participant sees the ranked metrics' means, rounded (means_only).
    """
    report = submission.report or {}
    full = sees_case_results(caller, show_cases=phase.show_cases)
    aggregates = report.get("aggregates")
    if aggregates is not None and not full:
        aggregates = means_only(aggregates)
    return SubmissionView(id=submission.id, phase=submission.phase, participant=submission.participant,
                          created_at=datetime.fromtimestamp(submission.created_at, tz=timezone.utc),
                          state=submission.state.value, error=submission.error, aggregates=aggregates,
                          case=report.get("case") if full else None)


def board_rows(service: Service, phase: Phase, caller: Caller) -> list[dict]:
    """The leaderboard's rows as the caller may see them: means rounded where the phase hides its cases."""
    rows = service.leaderboards.rows(phase.name)
    if sees_case_results(caller, show_cases=phase.show_cases):
        return rows
    return [{**row, "mean": {m: rounded(v) for m, v in row["mean"].items()}} for row in rows]


@router.get("/v1/phases", response_model=list[PhaseView], responses=responses(401), summary="The phases")
async def list_phases(service: Service = Depends(get_service), caller: Caller = Depends(get_caller)):
    return [phase_view(service, phase, caller) for phase in service.phases.list()]


@router.get("/v1/phases/{phase}", response_model=PhaseView, responses=responses(401, 404),
            summary="A phase: its cases, budget and what the caller has used of it")
async def get_phase(phase: str, service: Service = Depends(get_service), caller: Caller = Depends(get_caller)):
    return phase_view(service, phase_or_404(service, phase), caller)


def phase_view(service: Service, phase: Phase, caller: Caller) -> PhaseView:
    used_today = used_total = None
    if caller.role == Role.participant:
        own = [s for s in service.phases.of(phase.name, caller.participant) if s.state != SubmissionState.interrupted]
        since = next_utc_midnight(time.time()) - 86400
        used_today, used_total = sum(s.created_at >= since for s in own), len(own)
    return PhaseView(name=phase.name, cases=list(phase.cases), per_day=phase.per_day, total=phase.total,
                     show_cases=phase.show_cases, rank=phase.rank.value, used_today=used_today, used_total=used_total)


@router.post("/v1/phases/{phase}/submissions", status_code=201, response_model=SubmissionView,
             responses=responses(*UPLOAD_ERRORS, 403, 404, 409, 429, 500, 504),
             summary="Submit one mask per case (fields named by case, or one .zip/.tar field named archive)",
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "additionalProperties": {"type": "string", "format": "binary"},
                 "description": "one field per case (<case>: .mha or .nii.gz), or one field `archive`: a .zip "
                                "or .tar(.gz) of <case>.mha / <case>.nii.gz members at its top level"}}}}})
async def submit(phase: str, request: Request, response: Response, service: Service = Depends(get_service),
                 caller: Caller = Depends(participant_only)):
    current = phase_or_404(service, phase)
    ground_truths = {case: (service.cases or {}).get(case) for case in current.cases}
    if None in ground_truths.values():  # the organiser was told at start-up, case by case
        raise ApiError(409, f"phase {phase} is not open: the server lacks the ground truth of some of its cases; "
                            "the organiser has been told")
    service.admit()
    try:
        service.phases.budget_check(current, caller.participant)  # before reading a byte of the body
    except BudgetSpent as spent:
        raise too_many(spent, response) from None
    with service.submitting.slot(caller.participant):  # 429 past the server's limit at once, nothing charged
        done = await _receive_and_score(request, response, service, current, caller.participant, ground_truths)
    return view(done, current, caller)


async def _receive_and_score(request: Request, response: Response, service: Service, current: Phase,
                             participant: str, ground_truths: dict) -> Submission:
    folder = service.scratch()
    try:
        files = await receive_files(request, fields=[*(FileField(case, required=False) for case in current.cases),
                                                     FileField("archive", required=False, archive=True)],
                                    folder=folder, max_bytes=service.settings.max_upload_bytes)
        files = await service.in_pool(case_set, files, cases=current.cases, folder=folder,
                                      max_bytes=service.settings.max_upload_bytes, max_ratio=service.settings.max_ratio)
        await service.score(check_masks, files=files, limits=service.settings.upload_limits)
        # From here on the ground truth is involved: the submission counts, whatever comes of it.
        try:
            submission_id = service.phases.reserve(current, participant)
        except BudgetSpent as spent:
            raise too_many(spent, response) from None
        try:
            report = await service.score(score_case_set, show_cases=current.show_cases, pairs={
                case: (ground_truths[case], files[case].path, files[case].client_name) for case in current.cases})
            done = service.phases.finish(submission_id, report=report)
            if service.settings.keep_submissions:  # for the organiser's slice viewer; the answer is sent regardless
                _keep(service, submission_id, {case: files[case] for case in current.cases})
        except ApiError as exc:
            service.phases.finish(submission_id, error=exc.reason)
            raise
        except BaseException:
            service.phases.finish(submission_id, error="internal error while scoring; see the server log")
            raise
        await service.leaderboards.scored(current, done)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return done


def _keep(service: Service, submission_id: str, files: dict) -> None:
    from app.service.kept import keep_masks

    try:
        keep_masks(files, folder=service.settings.submissions_dir / submission_id)
    except OSError as exc:
        log.error("submission %s: masks not kept: %s", submission_id, exc)


def too_many(spent: BudgetSpent, response: Response) -> ApiError:
    if spent.next_allowed is None:
        return ApiError(429, spent.reason + "; no more submissions in this phase")
    when = datetime.fromtimestamp(spent.next_allowed, tz=timezone.utc).isoformat()
    error = ApiError(429, f"{spent.reason}; the next is allowed from {when}")
    error.headers = {"Retry-After": str(max(1, int(spent.next_allowed - time.time())))}
    return error


@router.get("/v1/phases/{phase}/submissions", response_model=SubmissionList, responses=responses(401, 404),
            summary="Submissions to a phase, oldest first: a participant's own (the organiser: all)")
async def list_submissions(phase: str, service: Service = Depends(get_service), caller: Caller = Depends(get_caller)):
    current = phase_or_404(service, phase)
    own = service.phases.of(phase, submissions_of(caller))
    return SubmissionList(submissions=[view(s, current, caller) for s in own])


@router.get("/v1/phases/{phase}/leaderboard", response_model=Leaderboard, responses=responses(401, 404),
            summary="Each participant's best or latest submission (the phase says which), ranked as `rank` does")
async def get_leaderboard(phase: str, service: Service = Depends(get_service), caller: Caller = Depends(get_caller)):
    current = phase_or_404(service, phase)
    return Leaderboard(phase=phase, rank=current.rank.value, rows=board_rows(service, current, caller))
