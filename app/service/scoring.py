"""Scoring uploaded files with the evaluation container's scorer, answering in terms the client knows.

Every scoring request runs in one of the scoring processes (petct.processes), killed when it
passes the server's `--score-timeout`, so no upload can hold a scoring slot for longer than that.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from app.service.errors import ApiError, echo_name
from app.service.settings import UploadLimits
from evaluation.aggregates import aggregate
from evaluation.masks import mask_from_array, read_mask
from evaluation.records import case_key, metrics_json, study_record
from evaluation.scoring import StudyResult, score_files, score_masks
from petct.errors import InputError
from petct.imageio import Geometry, grid_mismatches, read_geometry
from petct.processes import Died, KillableProcesses, Timeout

MASK_PATH = "<the job's mask>"  # what an in-memory mask is called in errors (never shown: the field is)
# Imported once by the fork server: each scoring process starts with the scorer and the upload checks loaded.
CHILD_PRELOAD = ["app.service.scoring", "app.service.upload_checks"]


def scoring_processes(size: int) -> KillableProcesses:
    return KillableProcesses(size=size, preload=CHILD_PRELOAD)


def score_uploaded(*, ground_truth: Path, prediction: Path, study: str, names: dict[str, str | None],
                   hide_ground_truth: bool = False) -> dict:
    """The scorer's per-study record, with server paths replaced by the client's names.

    `names` maps "ground_truth" and "prediction" to the names the client gave (None: unnamed). With
    `hide_ground_truth` (organiser mode) nothing about the ground-truth file is returned but metrics.
    """
    try:
        result = score_files(ground_truth=ground_truth, prediction=prediction, study=study)
    except InputError as exc:
        field = "prediction" if exc.path == str(prediction) else "ground_truth"
        if hide_ground_truth and field == "ground_truth":
            raise ApiError(500, f"the ground truth of case {study} could not be read; tell the organiser") from None
        raise ApiError(422, exc.problem, field=field, file=names.get(field)) from None
    return _record(result, study=study, names=names, hide_ground_truth=hide_ground_truth)


def score_job(*, label: sitk.Image | None, label_path: Path, mask: sitk.Image, study: str) -> dict:
    """An inference job's metrics: its mask as inferred (never read back from the disk), against its label as
    the upload checks read it, or, when None (the job was not handed its images), as read from `label_path`."""
    names = {"ground_truth": "label", "prediction": "mask"}
    try:
        if label is None:
            ground_truth = read_mask(label_path, what="ground truth", study=study, float_labels=True)
        else:
            ground_truth = mask_from_array(sitk.GetArrayFromImage(label), Geometry.of(label), path=label_path,
                                           what="ground truth", study=study, float_labels=True)
        prediction = mask_from_array(sitk.GetArrayFromImage(mask), Geometry.of(mask), path=MASK_PATH,
                                     what="prediction", study=study)
        result = score_masks(ground_truth=ground_truth, prediction=prediction, study=study)
    except InputError as exc:
        field = "prediction" if exc.path == MASK_PATH else "ground_truth"
        raise ApiError(422, exc.problem, field=field, file=names[field]) from None
    return _record(result, study=study, names=names, hide_ground_truth=False)


def _record(result: StudyResult, *, study: str, names: dict[str, str | None], hide_ground_truth: bool) -> dict:
    files = {"ground_truth_file": echo_name(names.get("ground_truth")),
             "prediction_file": echo_name(names.get("prediction"))}
    warnings = result.warnings
    if hide_ground_truth:
        del files["ground_truth_file"]
        warnings = [w for w in warnings if not w.startswith("ground truth")]
    return study_record(result.metrics, study=study, files=files, warnings=warnings)


def score_case_set(*, pairs: dict[str, tuple[Path, Path, str | None]], show_cases: bool) -> dict:
    """metrics.json of a phase submission: {case: (ground truth, prediction, client's name)} scored.

    Problems that involve a case's ground truth are told without detail unless the phase shows cases, but for
    one: a mask off the case's grid is told with both grids (the case's grid is its PET's, which the
    participant was given as input, so it reveals nothing hidden).
    """
    results, case = [], {}
    for study, (ground_truth, prediction, name) in pairs.items():
        off_grid = off_grid_reason(study=study, ground_truth=ground_truth, prediction=prediction)
        if off_grid:
            raise ApiError(422, off_grid, field=study, file=name)
        try:
            result = score_files(ground_truth=ground_truth, prediction=prediction, study=study)
        except InputError as exc:
            if exc.path != str(prediction):
                raise ApiError(500, f"the ground truth of case {study} could not be read; tell the organiser") \
                    from None
            reason = exc.problem if show_cases else "prediction is not a usable mask"
            raise ApiError(422, reason, field=study, file=name) from None
        results.append(result)
        case[case_key(study, taken=set(case))] = _record(result, study=study, names={"prediction": name},
                                                          hide_ground_truth=True)
    return metrics_json(case, aggregates=aggregate(results))


def off_grid_reason(*, study: str, ground_truth: Path, prediction: Path) -> str | None:
    """"CASE: mask is 128×128×96 at 2.0×2.0×3.0 mm, the case is 400×400×326 at 2.036×2.036×3.0 mm", or None.

    None as well when either header cannot be read: the scorer's own reading then says what is wrong.
    """
    try:
        case, mask = read_geometry(ground_truth), read_geometry(prediction)
    except InputError:
        return None
    if not grid_mismatches(case, mask):
        return None
    # Origin and direction are named only where size and spacing agree (what then differs).
    same_box = case.size == mask.size and not any("spacing" in m for m in grid_mismatches(case, mask))
    return f"{study}: mask is {grid_text(mask, placement=same_box)}, the case is {grid_text(case, placement=same_box)}"


def grid_text(grid: Geometry, *, placement: bool = False) -> str:
    """"400×400×326 at 2.036×2.036×3.0 mm" (x, y, z), with the origin and direction where `placement`."""
    def mm(value: float) -> str:
        text = f"{value:.3f}".rstrip("0")
        return text + "0" if text.endswith(".") else text

    text = f"{'×'.join(str(n) for n in grid.size)} at {'×'.join(mm(v) for v in grid.spacing)} mm"
    if placement:
        text += (f", origin ({', '.join(mm(v) for v in grid.origin)}) mm, "
                 f"direction ({', '.join(mm(v) for v in grid.direction)})")
    return text


def _answer(call: tuple[Callable, dict]) -> tuple[str, Any]:
    """Child side: ("value", result) or ("error", ApiError fields); exceptions do not cross processes intact."""
    function, kwargs = call
    try:
        return "value", function(**kwargs)
    except ApiError as exc:
        return "error", (exc.status, exc.reason, exc.field, exc.file)


def call_killable(processes: KillableProcesses, function: Callable, *, timeout_s: float, **kwargs) -> Any:
    """`function(**kwargs)` in a scoring process; 504 when it passes `timeout_s` (the process is killed then)."""
    try:
        kind, payload = processes.call(_answer, timeout_s=timeout_s, call=(function, kwargs))
    except Timeout:
        raise ApiError(504, f"scoring took longer than the server's limit of {timeout_s:g} s (--score-timeout); "
                            "it was stopped") from None
    except Died:
        raise ApiError(503, "the scoring process died (out of memory?); try again, or send a smaller file") from None
    if kind == "error":
        status, reason, field, file = payload
        raise ApiError(status, reason, field=field, file=file)
    return payload


@dataclass(frozen=True)
class KillableScoring:
    """The timeout policy of every scoring path: a scoring process, killed when it passes --score-timeout."""

    processes: KillableProcesses
    timeout_s: float

    def __call__(self, function: Callable, **kwargs) -> Any:
        """`function(**kwargs)` in a scoring process (call_killable: 504 past the limit, 503 when it dies)."""
        return call_killable(self.processes, function, timeout_s=self.timeout_s, **kwargs)


def check_and_score(*, files: dict, limits: UploadLimits, study: str, ground_truth: Path | None = None) -> dict:
    """Child side of the scoring endpoints: header checks of the uploads (each and their total), then the scorer.

    `ground_truth` given (organiser mode's case) means nothing about it is returned but metrics.
    """
    from app.service.upload_checks import check_uploads

    check_uploads(files, limits=limits, read_voxels=False)  # the scorer reads them next, naming what fails
    names = {field: stored.client_name for field, stored in files.items()}
    return score_uploaded(ground_truth=ground_truth or files["ground_truth"].path, prediction=files["prediction"].path,
                          study=study, names=names, hide_ground_truth=ground_truth is not None)


def check_masks(*, files: dict, limits: UploadLimits) -> None:
    """Child side of a phase submission's first step: every mask read on its own (nothing about any case).

    Whatever can be wrong with a mask without its ground truth (unreadable, over a limit, floating-point or
    NaN values) is found here, before the submission counts against the budget, and told in full. The
    request's total is over the masks as extracted, so an archive cannot carry more than separate fields.
    """
    from app.service.upload_checks import check_uploads

    check_uploads(files, limits=limits, read_voxels=False)  # read_mask reads the voxels, as the scorer will
    for case, stored in files.items():
        try:
            read_mask(stored.path, what="mask", study=case)
        except InputError as exc:
            raise ApiError(422, exc.problem, field=case, file=stored.client_name) from None
