"""Who may see what, for the API routes and the pages alike: jobs, their ground truth, submissions, the report.

The organiser (and anonymous, who exists only on a loopback server needing no token) sees everything. A
participant sees their own jobs, with the metrics and outlines of the label they uploaded themselves (it is
theirs), their own submissions, a phase's per-case results only where the phase shows them, and not the report
over every scored job.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.service.deps import Caller, Role
from app.service.jobs import Job


@dataclass(frozen=True)
class JobAccess:
    """What a caller may see of one job, or of the report."""

    job: bool  # the job at all (its page, its API record and files)
    ground_truth: bool  # ground-truth outlines in MIPs and metrics against the ground truth
    report: bool  # the report over every scored job


def job_access(caller: Caller, *, job: Job | None = None) -> JobAccess:
    """What `caller` may see of `job` (or, without one, of the report)."""
    if caller.sees_everything:
        return JobAccess(job=True, ground_truth=True, report=True)
    own = job is not None and caller.role == Role.participant and job.owner == caller.participant
    return JobAccess(job=own, ground_truth=own, report=False)


def submissions_of(caller: Caller) -> str | None:
    """Whose submissions `caller` may list: one participant's, or None for everyone's."""
    return None if caller.sees_everything else caller.participant


def sees_case_results(caller: Caller, *, show_cases: bool) -> bool:
    """Whether `caller` sees a phase's per-case results (the phase's show_cases, else the organiser only)."""
    return show_cases or caller.sees_everything
