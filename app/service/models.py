"""Response bodies of the API, as pydantic models (they make the OpenAPI schema at /docs)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from app.service.jobs import Job, JobState
from evaluation.records import StudyRecord


def _score_record_fields() -> dict:
    """evaluation.records.StudyRecord's fields (but `job`, which a grand-challenge job has): `study` required."""
    hints = get_type_hints(StudyRecord)
    fields = {name: (hint, None) for name, hint in hints.items() if name not in ("study", "warnings", "job")}
    return {"study": (str, ...), **fields, "warnings": (list[str], Field(default_factory=list))}


ScoreRecord = create_model("ScoreRecord", __config__=ConfigDict(extra="allow"), **_score_record_fields())
ScoreRecord.__doc__ = "The scorer's per-study record (evaluation.records.StudyRecord); volumes in ml, null where undefined."


class JobLinks(BaseModel):
    self: str
    mask: str


class JobView(BaseModel):
    id: str
    state: JobState
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int
    has_label: bool
    timings: dict[str, float] = Field(description="seconds per stage")
    error: str | None = None
    metrics: ScoreRecord | None = None
    notes: dict = Field(default_factory=dict)
    links: JobLinks

    @classmethod
    def of(cls, job: Job) -> "JobView":
        return cls(id=job.id, state=job.state, created_at=_time(job.created_at), started_at=_time(job.started_at),
                   finished_at=_time(job.finished_at), attempts=job.attempts, has_label=job.has_label,
                   timings=job.timings, error=job.error, metrics=job.metrics, notes=job.notes,
                   links=JobLinks(self=f"/v1/jobs/{job.id}", mask=f"/v1/jobs/{job.id}/mask"))


class JobsPage(BaseModel):
    jobs: list[JobView]
    total: int
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last page")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    reason: str | None = Field(None, description="why new work is refused now (null when ready)")
    engine: str
    model: str | None
    device: str | None
    details: dict
    inference_worker: str
    queued_jobs: int
    organiser_mode: bool


class CaseList(BaseModel):
    cases: list[str]


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=timezone.utc)


class PhaseView(BaseModel):
    name: str
    cases: list[str] = Field(description="one mask per case makes a submission")
    per_day: int = Field(description="submissions per participant per UTC day")
    total: int = Field(description="submissions per participant in all")
    show_cases: bool = Field(description="whether per-case results are returned (else aggregates only)")
    rank: str = Field(description="which submission of a participant the leaderboard ranks: best or latest")
    used_today: int | None = Field(None, description="the caller's submissions today (participants only)")
    used_total: int | None = None


class SubmissionView(BaseModel):
    id: str
    phase: str
    participant: str
    created_at: datetime
    state: str = Field(description="scoring, scored, failed, or interrupted (the server stopped while scoring it; "
                                   "not counted against the budget)")
    error: str | None = None
    aggregates: dict | None = Field(None, description="metrics.json's aggregates (mean and count only unless "
                                                      "the phase shows cases)")
    case: dict | None = Field(None, description="per-case records; only where the phase shows cases")


class SubmissionList(BaseModel):
    submissions: list[SubmissionView]


class LeaderboardRow(BaseModel):
    position: int
    participant: str
    submission: str
    weighted_rank: float
    rank: dict[str, float]
    mean: dict[str, float | None] = Field(description="per-metric means over the case set (null: undefined)")


class Leaderboard(BaseModel):
    phase: str
    rank: str
    rows: list[LeaderboardRow]
