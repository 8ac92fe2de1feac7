"""Folders and JSON laid out exactly as grand-challenge lays them out for algorithm and evaluation jobs."""
from __future__ import annotations

import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from app.dryrun.cases import DryRunCase
from app.dryrun.contract import snapshot
from petct.clicks import Clicks
from petct.editions import CLICKS_JSON, Edition
from petct.imageio import read_image, write_image_atomic
from petct.jsonio import write_json_atomic
from petct.layout import INPUTS_JSON, PREDICTIONS_JSON

PET_SLUG = "pet-image"
CT_SLUG = "ct-image"


@dataclass
class AlgorithmJob:
    """One algorithm job's folders: `input` (read-only once laid out), `output` and a fresh `tmp`."""

    pk: str
    case: DryRunCase
    input_dir: Path
    output_dir: Path
    tmp_dir: Path
    inputs: list[dict]  # the socket values of inputs.json
    step: int | None = None  # 2025 interactive track: clicks of each kind in its lesion-clicks.json
    started_at: datetime | None = None
    completed_at: datetime | None = None
    # (size, mtime) of each file of `output` when the job ended; a later change means a process outlived it.
    output_state_at_end: dict[str, tuple[int, int]] | None = None

    @property
    def output_at_end_dir(self) -> Path:
        """A copy of `output` taken when the job ended: what is checked, scored and passed on (as uploaded)."""
        return self.output_dir.parent / "output-at-end"


def socket_value(*, slug: str, relative_path: str, kind: str, image_pk: str, image_name: str) -> dict:
    """One item of inputs.json / predictions.json's inputs and outputs."""
    return {"pk": uuid.uuid4().int % 10**9, "file": None, "value": None,
            "image": {"pk": image_pk, "name": image_name},
            "interface": {"slug": slug, "kind": kind, "super_kind": "Image", "relative_path": relative_path,
                          "title": slug.replace("-", " ").title()}}


def clicks_socket(clicks: Clicks) -> dict:
    """The lesion-clicks.json input: a JSON value socket, as grand-challenge lists it in inputs.json."""
    return {"pk": uuid.uuid4().int % 10**9, "file": None, "image": None, "value": clicks.to_grand_challenge(),
            "interface": {"slug": "lesion-clicks", "kind": "Multiple points", "super_kind": "Value",
                          "relative_path": CLICKS_JSON, "title": "Lesion Clicks"}}


def lay_out_job(case: DryRunCase, folder: Path, *, edition: Edition, clicks: Clicks | None = None,
                step: int | None = None, image_pks: tuple[str, str] | None = None) -> AlgorithmJob:
    """`<folder>/<pk>/input/<the edition's PET and CT paths>/<uuid>.mha` and inputs.json, empty output and tmp.

    With `clicks` (2025 clicks, 2026 scribbles), also `input/lesion-clicks.json` and its socket.
    `image_pks` (PET, CT) keeps the images' names of an earlier job on the same study (2026: every
    step of a study's loop gets the same images).
    """
    pk = str(uuid.uuid4())
    root = folder / pk
    job = AlgorithmJob(pk=pk, case=case, input_dir=root / "input", output_dir=root / "output",
                       tmp_dir=root / "tmp", inputs=[], step=step)
    pks = image_pks or (str(uuid.uuid4()), str(uuid.uuid4()))
    for source, relative, slug, upload_name, image_pk in (
            (case.suv, edition.pet_relative_path, PET_SLUG, f"{case.name}_SUV.mha", pks[0]),
            (case.ctres, edition.ct_relative_path, CT_SLUG, f"{case.name}_CTres.mha", pks[1])):
        _copy_as_mha(source, job.input_dir / relative / f"{image_pk}.mha")
        job.inputs.append(socket_value(slug=slug, relative_path=relative, kind="Image", image_pk=image_pk,
                                       image_name=upload_name))
    if clicks is not None:
        socket = clicks_socket(clicks)
        write_json_atomic(socket["value"], job.input_dir / CLICKS_JSON)
        job.inputs.append(socket)
    write_json_atomic(job.inputs, job.input_dir / INPUTS_JSON)
    _read_only_tree(job.input_dir)
    for writable in (job.output_dir, job.tmp_dir):
        writable.mkdir(parents=True)
        # A container's non-root user (another uid) must be able to write here, as on the platform.
        os.chmod(writable, 0o777)
    return job


def keep_output_at_end(job: AlgorithmJob) -> list[str]:
    """Copy the job's output as it ended; the platform uploads that, whatever a straggler would write later.

    A copy, not links: a process that outlived the job could still write into a linked file. Anything that is
    neither a folder, a link nor a regular file becomes a FIFO in the copy, so that the checks still see
    "not a regular file" without ever opening it. Returns one line per file that could not be copied.
    """
    job.output_state_at_end = snapshot(job.output_dir)
    try:
        shutil.copytree(job.output_dir, job.output_at_end_dir, symlinks=True, copy_function=_copy_regular_only)
    except shutil.Error as exc:
        return [f"/output/{Path(source).relative_to(job.output_dir)} could not be read: {why}"
                for source, _, why in exc.args[0]]
    except OSError as exc:  # e.g. the job removed its own output folder
        job.output_at_end_dir.mkdir(parents=True, exist_ok=True)
        return [f"/output could not be copied when the job ended: {exc.strerror or exc}"]
    return []


def output_changed_since_end(job: AlgorithmJob) -> bool:
    """Whether a file of the job's output was written, added or removed after the job ended."""
    return job.output_state_at_end is not None and snapshot(job.output_dir) != job.output_state_at_end


def _copy_regular_only(source: str, target: str) -> None:
    if stat.S_ISREG(os.lstat(source).st_mode):
        shutil.copy2(source, target)
    else:
        os.mkfifo(target)


def _copy_as_mha(source: Path, target: Path) -> None:
    """The platform stores every uploaded image as .mha."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.name.lower().endswith(".mha"):
        shutil.copyfile(source, target)
    else:
        write_image_atomic(read_image(source), target)


def _read_only_tree(root: Path) -> None:
    """Readable by anyone, writable by no one (bind mounts keep these modes)."""
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    os.chmod(root, 0o555)


def make_writable(root: Path) -> None:
    """Undo _read_only_tree so the work folder can be removed."""
    if not root.exists():
        return
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            os.chmod(path, stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)


def output_socket(mask_name: str, image_pk: str, *, edition: Edition) -> dict:
    return socket_value(slug=edition.output_slug, relative_path=edition.output_relative_path, kind="Segmentation",
                        image_pk=image_pk, image_name=mask_name)


def prediction_item(job: AlgorithmJob, image_pk: str, *, edition: Edition) -> dict:
    """One predictions.json item for a successful job, with the extra keys the platform adds."""
    started = job.started_at or datetime.now(timezone.utc)
    completed = job.completed_at or started
    return {
        "pk": job.pk,
        "url": f"https://grand-challenge.org/algorithms/dry-run/jobs/{job.pk}/",
        "api_url": f"https://grand-challenge.org/api/v1/algorithms/jobs/{job.pk}/",
        "algorithm_image": "https://grand-challenge.org/api/v1/algorithms/images/dry-run/",
        "status": "Succeeded",
        "rendered_result_text": "",
        "created": started.isoformat(),
        "started": started.isoformat(),
        "completed": completed.isoformat(),
        "exec_duration": str(completed - started),
        "inputs": job.inputs,
        "outputs": [output_socket(f"{image_pk}.mha", image_pk, edition=edition)],
    }


def lay_out_evaluation(jobs_with_masks: list[tuple[AlgorithmJob, Path]], folder: Path, *, edition: Edition) -> Path:
    """The evaluation's /input: predictions.json and `<pk>/output/<the edition's output path>/<image pk>.mha`.

    The platform stores each output under its own name, not the algorithm's file name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for job, mask in jobs_with_masks:
        image_pk = str(uuid.uuid4())
        target = folder / job.pk / "output" / edition.output_relative_path / f"{image_pk}.mha"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mask, target)
        items.append(prediction_item(job, image_pk, edition=edition))
    write_json_atomic(items, folder / PREDICTIONS_JSON)
    return folder


def lay_out_ground_truth(cases: list[DryRunCase], folder: Path) -> Path:
    """`<folder>/<case>/SEG.mha`: one mask per case, matched by case name as evaluation matches it."""
    for case in cases:
        _copy_as_mha(case.seg, folder / case.name / "SEG.mha")
    return folder
