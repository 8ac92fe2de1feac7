"""Pairing each ground-truth study with exactly one prediction (see evaluation.studies for the names)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evaluation.predictions import Job, locate_mask, mask_output
from evaluation.problems import Problem
from evaluation.studies import MaskIndex, did_you_mean
from petct.errors import InputError
from petct.studykey import safe_key


@dataclass(frozen=True)
class Case:
    """One study to score."""

    study: str
    ground_truth: Path
    prediction: Path
    job: str | None = None
    warnings: tuple[str, ...] = ()  # found while pairing; reported with the study's metrics


def match_jobs(jobs: list[Job], ground_truth: MaskIndex, *, input_dir: Path,
               prediction_path: str) -> tuple[list[Case], list[Problem]]:
    """A case per ground-truth study with exactly one successful job; a problem for every other job and study.

    Jobs whose status is not Succeeded are never scored; they only explain why a study has no job.
    """
    jobs_of: dict[str, list[Job]] = {}
    unmatched: list[tuple[Job, Problem]] = []
    for job in jobs:
        try:
            jobs_of.setdefault(_study_of(job, ground_truth), []).append(job)
        except _Unmatched as error:
            unmatched.append((job, error.problem))
    problems = _same_names_once(unmatched)
    cases = []
    for study in ground_truth.studies():
        found = [job for job in jobs_of.get(study, []) if job.succeeded]
        unsuccessful = [f"job {job.pk} has status {job.status!r}" for job in jobs_of.get(study, [])
                        if not job.succeeded]
        gt_file = ground_truth.files.get(study)
        if not found:
            reason = ("no successful algorithm job for this ground-truth study: " + "; ".join(unsuccessful)
                      if unsuccessful else "no algorithm job for this ground-truth study")
            problems.append(_missing(study, ground_truth, reason))
        elif len(found) > 1:
            pks = ", ".join(job.pk for job in found)
            problems.append(Problem(study=study, job=pks, file=str(gt_file or ground_truth.folder),
                                    reason=f"study has {len(found)} jobs ({pks}); cannot tell which to score"))
        elif gt_file is None:
            problems.append(_ambiguous(study, ground_truth, job=found[0].pk))
        else:
            job = found[0]
            try:
                relative_path, warnings = mask_output(job, prediction_path)
                mask = locate_mask(job, input_dir=input_dir, relative_path=relative_path)
            except InputError as exc:
                problems.append(Problem.of(exc, study=study, job=job.pk))
                continue
            warnings += [f"{text}; ignored" for text in unsuccessful]
            cases.append(Case(study=study, ground_truth=gt_file, prediction=mask, job=job.pk,
                              warnings=tuple(warnings)))
    return cases, problems


def match_folders(ground_truth: MaskIndex, predictions: MaskIndex) -> tuple[list[Case], list[Problem]]:
    """A case per study with one file on each side; a problem for every unpaired or ambiguous study."""
    problems, cases = [], []
    for study in sorted(set(ground_truth.studies()) | set(predictions.studies())):
        if study not in predictions:
            problems.append(_missing(study, ground_truth, "no prediction for this ground-truth study"))
        elif study not in ground_truth:
            problems.append(_missing(study, predictions,
                                     "no ground truth for this prediction" + did_you_mean(study, ground_truth)))
        elif study in ground_truth.duplicates:
            problems.append(_ambiguous(study, ground_truth))
        elif study in predictions.duplicates:
            problems.append(_ambiguous(study, predictions, what="prediction"))
        else:
            cases.append(Case(study=study, ground_truth=ground_truth.files[study],
                              prediction=predictions.files[study]))
    return cases, problems


class _Unmatched(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.describe())
        self.problem = problem


def _study_of(job: Job, ground_truth: MaskIndex) -> str:
    """The ground-truth study a job's PET input (else its CT input, else another input) names.

    Names are looked up as written, then made safe (petct.studykey.safe_key), so an upload named after the
    dataset's `<patient>__<study folder>` with spaces or dots still finds its two-level ground truth.
    """
    candidates = job.study_candidates()
    if not candidates:
        raise _Unmatched(Problem(job=job.pk, reason="job has no input image with a name (PET or CT) to match "
                                                    "its ground truth by"))
    for lookup in (lambda name: [name] if name in ground_truth else [],
                   lambda name: ground_truth.by_safe_key().get(safe_key(name), [])):
        for name, studies in candidates:
            hits = list(dict.fromkeys(hit for study in studies for hit in lookup(study)))
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise _Unmatched(Problem(study=hits[0], job=job.pk, file=name, reason=f"input name matches "
                                         f"{len(hits)} ground-truth studies: {', '.join(hits)}"))
    name, studies = candidates[0]
    looked = ", ".join(dict.fromkeys(s for _, group in candidates for s in group))
    raise _Unmatched(Problem(study=studies[-1], job=job.pk, file=name,
                             reason=f"no ground truth for this job's study in {ground_truth.folder} (looked for "
                                    f"{looked}){did_you_mean(studies[-1], ground_truth)}"))


def _same_names_once(unmatched: list[tuple[Job, Problem]]) -> list[Problem]:
    """The problems of unmatched jobs, with one problem for each group of jobs whose inputs have the same names.

    Jobs are matched to ground truth by the names of their inputs: when every PET was uploaded as
    `SUV.nii.gz`, the jobs cannot be told apart, and one line saying so beats the same line per job.
    """
    groups: dict[tuple, list[tuple[Job, Problem]]] = {}
    for job, problem in unmatched:
        names = tuple(sorted((path, name) for path, name in job.inputs.items() if name))
        # Jobs that did not succeed (often earlier tries of the same study) keep their own line.
        groups.setdefault(names if names and job.succeeded else (job.pk,), []).append((job, problem))
    problems = []
    for names, group in groups.items():
        if len(group) == 1:
            problems.append(group[0][1])
            continue
        shown = ", ".join(sorted({name for _, name in names}))
        problems.append(Problem(job=", ".join(job.pk for job, _ in group), reason=(
            f"{len(group)} jobs have input images with the same names ({shown}) and none names a ground-truth "
            "study: a job's study is found by its PET (else CT) input's name, so upload each study's images "
            "under the study's name (e.g. PETCT_0af7ffe12a_SUV.nii.gz)")))
    return problems


def _missing(study: str, index: MaskIndex, reason: str) -> Problem:
    files = index.duplicates.get(study) or [index.files[study]]
    return Problem(study=study, file=", ".join(str(f) for f in files), reason=reason)


def _ambiguous(study: str, index: MaskIndex, *, what: str = "ground-truth", job: str | None = None) -> Problem:
    files = index.duplicates[study]
    return Problem(study=study, job=job, file=", ".join(str(f) for f in files),
                   reason=f"{len(files)} {what} files for this study; remove all but one")
