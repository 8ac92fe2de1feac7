"""Reading grand-challenge's predictions.json: the jobs of a submission, their inputs and their masks.

Only the keys the evaluation needs are read (pk, status, inputs, outputs, and per socket image.name
and interface.relative_path); the platform's many other keys are ignored. Sockets are matched on
`interface.relative_path`, never on the slug, which organisers choose freely.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evaluation.problems import Problem
from evaluation.studies import input_candidates
from petct.editions import CT_RELATIVE_PATH, PET_RELATIVE_PATH
from petct.errors import InputError
from petct.jsonio import read_json
from petct.layout import is_image_file, list_images

SUCCEEDED = "Succeeded"
# Image sockets live under this folder of a job's output (`images/<slug>`); value and file sockets do not.
IMAGE_FOLDER = "images/"


@dataclass(frozen=True)
class Job:
    """One algorithm job: its pk, status and, per socket relative path, the image name (None for non-images)."""

    pk: str
    inputs: dict[str, str | None] = field(default_factory=dict)
    outputs: dict[str, str | None] = field(default_factory=dict)
    status: str | None = None  # None when predictions.json does not say: taken as succeeded
    # Non-image inputs by relative path: the socket's inline `value`, else its `file` (a URL or path string).
    # The 2025 interactive track learns each job's protocol step from its lesion-clicks.json value here.
    values: dict[str, object] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status in (None, SUCCEEDED)

    def study_candidates(self) -> list[tuple[str, list[str]]]:
        """(input name, study names it may stand for): the PET input, then the CT input, then any other.

        Organisers who gave the PET/CT sockets other relative paths still get their jobs matched: an input
        whose path mentions "pet" (else "ct") stands in for the PET (else CT) input.
        """
        order = sorted(self.inputs, key=lambda p: (p != PET_RELATIVE_PATH, "pet" not in p.lower(),
                                                   p != CT_RELATIVE_PATH, "ct" not in p.lower(), p))
        return [(name, input_candidates(name)) for name in map(self.inputs.get, order) if name]


def read_jobs(path: Path) -> tuple[list[Job], list[Problem]]:
    """The jobs of predictions.json, plus a problem per item that is not a usable job.

    Raises InputError when the file as a whole is unusable (missing, not JSON, not a list).
    """
    path = Path(path)
    items = read_json(path, what="predictions.json")
    if not isinstance(items, list):
        raise InputError(f"predictions.json must hold a list of jobs, found {type(items).__name__}", path=path)
    jobs, problems, seen = [], [], set()
    for number, item in enumerate(items, start=1):
        try:
            job = _job(item, number)
            if job.pk in seen:
                raise InputError(f"job {job.pk} is listed twice")
            seen.add(job.pk)
            jobs.append(job)
        except InputError as exc:
            pk = item.get("pk") if isinstance(item, dict) and isinstance(item.get("pk"), str) else None
            problems.append(Problem(reason=f"predictions.json item {number}: {exc.problem}", job=pk, file=str(path)))
    return jobs, problems


def _job(item: object, number: int) -> Job:
    if not isinstance(item, dict):
        raise InputError(f"expected an object, found {type(item).__name__}")
    pk = item.get("pk")
    # The pk names a folder under the input folder: refuse anything that could point elsewhere.
    if not isinstance(pk, str) or not pk or "/" in pk or "\\" in pk or pk in (".", ".."):
        raise InputError(f"missing or invalid pk {pk!r}")
    status = item.get("status")
    return Job(pk=pk, inputs=_sockets(item, "inputs"), outputs=_sockets(item, "outputs"),
               status=status if isinstance(status, str) else None, values=_values(item.get("inputs")))


def _values(sockets: list) -> dict[str, object]:
    """The inline value (else the file) of each input socket that has one; `_sockets` has checked the list."""
    found = {}
    for socket in sockets:
        relative_path = socket["interface"]["relative_path"]
        if socket.get("value") is not None:
            found[relative_path] = socket["value"]
        elif isinstance(socket.get("file"), str) and socket["file"]:
            found[relative_path] = {"file": socket["file"]}
    return found


def _sockets(item: dict, key: str) -> dict[str, str | None]:
    sockets = item.get(key)
    if not isinstance(sockets, list):
        raise InputError(f"'{key}' must be a list, found {type(sockets).__name__}")
    by_path: dict[str, str | None] = {}
    for number, socket in enumerate(sockets, start=1):
        interface = socket.get("interface") if isinstance(socket, dict) else None
        relative_path = interface.get("relative_path") if isinstance(interface, dict) else None
        if not isinstance(relative_path, str) or not relative_path:
            raise InputError(f"{key} item {number} has no interface.relative_path")
        # It names a folder under the job's output: refuse anything that could point elsewhere.
        if relative_path.startswith(("/", "\\")) or ".." in relative_path.replace("\\", "/").split("/"):
            raise InputError(f"{key} item {number} has an invalid interface.relative_path {relative_path!r}")
        image = socket.get("image")
        name = image.get("name") if isinstance(image, dict) else None
        by_path[relative_path] = name if isinstance(name, str) and name else None
    return by_path


def mask_output(job: Job, relative_path: str) -> tuple[str, list[str]]:
    """The relative path of the job's mask output, and a warning if it is not `relative_path`.

    A job that lists no output at `relative_path` but exactly one image output (the organiser named
    the socket differently) is scored on that one.
    """
    if relative_path in job.outputs:
        return relative_path, []
    images = [p for p in job.outputs if p.startswith(IMAGE_FOLDER)]
    listed = ", ".join(sorted(job.outputs)) or "none"
    if len(images) == 1:
        return images[0], [f"job lists no output at {relative_path}; scored its only image output, {images[0]}"]
    raise InputError(f"job lists no output at {relative_path} (outputs: {listed}); "
                     "name the mask's relative path with --prediction-path")


def locate_mask(job: Job, *, input_dir: Path, relative_path: str) -> Path:
    """The job's mask file: the one image in `<input>/<pk>/output/<relative_path>/`, inside the input folder.

    OSError (a name too long for the file system, a folder that cannot be read) becomes this job's
    InputError, so one hostile job never costs the others their scores.
    """
    location = Path(input_dir) / job.pk / "output" / relative_path
    try:
        mask = _find_mask(job, location=location, relative_path=relative_path)
        # A symlink out of the input folder would score any file the evaluation can read (the ground truth).
        if not mask.resolve().is_relative_to(Path(input_dir).resolve()):
            raise InputError("prediction resolves outside the input folder (a symlink?); refused",
                             path=_shortened(mask))
    except OSError as exc:
        raise InputError(f"cannot read the prediction: {exc.strerror or exc}", path=_shortened(location)) from None
    return mask


def _find_mask(job: Job, *, location: Path, relative_path: str) -> Path:
    if is_image_file(location):
        return location
    if not location.is_dir():
        raise InputError("prediction folder does not exist", path=_shortened(location))
    images = list_images(location)
    if len(images) == 1:
        return images[0]
    if not images:
        raise InputError("prediction folder holds no image file", path=location)
    named = job.outputs[relative_path]
    if named and location / named in images:
        return location / named
    raise InputError(f"prediction folder holds {len(images)} image files, expected one", path=location)


def _shortened(path: Path, limit: int = 240) -> str:
    """A path for a one-line message: hostile names can be thousands of characters long."""
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"
