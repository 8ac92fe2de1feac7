"""What an algorithm job must deliver for the platform to accept it and the evaluation to score it."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from app.dryrun.runner import Limits, RunOutcome
from petct.editions import DATA_CENTRIC_JSON, Edition
from petct.errors import InputError
from petct.imageio import Geometry, grid_mismatches, read_image
from petct.sizes import format_size

ALLOWED_OUTPUT_SUFFIX = ".mha"
ALLOWED_VALUES = {0, 1}
# The 2024 edition's second output; anything else in /output is reported but allowed.
KNOWN_EXTRA_OUTPUTS = {DATA_CENTRIC_JSON}


@dataclass
class JobCheck:
    """The verdict on one job: contract violations (the job fails) and warnings (it passes)."""

    violations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mask: Path | None = None

    @property
    def passed(self) -> bool:
        return not self.violations


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every regular file under `folder`, to tell whether anything wrote into it."""
    state = {}
    for path in sorted(folder.rglob("*")):
        try:
            info = path.stat()
        except OSError:  # removed meanwhile, or a dangling link
            continue
        if stat.S_ISREG(info.st_mode):
            state[str(path.relative_to(folder))] = (info.st_size, info.st_mtime_ns)
    return state


def check_run(outcome: RunOutcome, *, limits: Limits, check: JobCheck) -> None:
    """Exit status, time and (local runs) memory."""
    if outcome.timed_out:
        check.violations.append(f"exceeded the time limit of {limits.time_s:g} s and was killed")
    elif outcome.exit_code == 137:
        check.violations.append("exit status 137: killed, most likely for using more memory than "
                                f"{format_size(limits.memory_bytes)}")
    elif outcome.exit_code != 0:
        check.violations.append(f"exit status {outcome.exit_code} (the platform marks the job failed and "
                                "uploads no outputs)")
    if outcome.left_processes:
        shown = ", ".join(outcome.left_processes[:5]) + (" ..." if len(outcome.left_processes) > 5 else "")
        check.warnings.append(f"left {len(outcome.left_processes)} process(es) running after it exited, killed "
                              f"before its output was checked: {shown} (the platform stops the container with "
                              "its main process; anything they would write later is lost)")
    if outcome.peak_rss_bytes and outcome.peak_rss_bytes > limits.memory_bytes:
        check.violations.append(f"peak memory {format_size(outcome.peak_rss_bytes)} is over the limit of "
                                f"{format_size(limits.memory_bytes)}")


def check_data_centric(output_dir: Path, *, check: JobCheck) -> None:
    """2024: /output/data-centric-model.json must hold a bare JSON boolean."""
    import json
    path = output_dir / DATA_CENTRIC_JSON
    if not path.is_file():
        check.violations.append(f"no /output/{DATA_CENTRIC_JSON} (the 2024 edition needs it: true or false)")
        return
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        check.violations.append(f"/output/{DATA_CENTRIC_JSON} is not readable JSON: {exc}")
        return
    if not isinstance(value, bool):
        check.violations.append(f"/output/{DATA_CENTRIC_JSON} holds {json.dumps(value)[:40]}; expected true or false")


def check_output(output_dir: Path, *, pet: Geometry, check: JobCheck, edition: Edition) -> None:
    """Exactly one .mha in the edition's segmentation folder: uint8, values in {0, 1}, on the PET's grid."""
    relative_path = edition.output_relative_path
    folder = output_dir / relative_path
    _note_extra_outputs(output_dir, check, relative_path=relative_path)
    if not folder.is_dir():
        check.violations.append(f"no output folder /output/{relative_path}/")
        return
    entries = sorted(folder.iterdir())
    if len(entries) != 1:
        listed = ", ".join(p.name for p in entries) or "nothing"
        check.violations.append(f"expected exactly one file in /output/{relative_path}/, found "
                                f"{len(entries)}: {listed}")
        return
    mask = entries[0]
    if not mask.is_file():
        check.violations.append(f"/output/{relative_path}/{mask.name} is not a regular file")
        return
    if not mask.name.lower().endswith(ALLOWED_OUTPUT_SUFFIX):
        rejected = " (the platform rejects .nii.gz)" if mask.name.lower().endswith(".nii.gz") else ""
        check.violations.append(f"output {mask.name} is not a {ALLOWED_OUTPUT_SUFFIX} file{rejected}")
        return
    try:
        image = read_image(mask)
    except InputError as exc:
        check.violations.append(f"output {mask.name}: {exc.problem}")
        return
    if image.GetPixelID() != sitk.sitkUInt8:
        check.violations.append(f"output {mask.name} has pixel type {image.GetPixelIDTypeAsString()}; "
                                "write unsigned 8-bit integers (uint8)")
    else:
        values = set(np.unique(sitk.GetArrayViewFromImage(image)).tolist())
        if not values <= ALLOWED_VALUES:
            odd = sorted(values - ALLOWED_VALUES)
            check.violations.append(f"output {mask.name} holds values {odd[:10]} outside {{0, 1}}")
    mismatches = grid_mismatches(pet, Geometry.of(image))
    if mismatches:
        check.violations.append(f"output {mask.name} is not on the PET's grid: {'; '.join(mismatches)}")
    check.mask = mask


def _note_extra_outputs(output_dir: Path, check: JobCheck, *, relative_path: str) -> None:
    slug_folder = output_dir / relative_path
    for root, dirs, files in os.walk(output_dir):
        here = Path(root)
        if here == slug_folder or slug_folder in here.parents:
            continue
        for name in files:
            relative = (here / name).relative_to(output_dir)
            if str(relative) not in KNOWN_EXTRA_OUTPUTS:
                check.warnings.append(f"unexpected output /output/{relative} (the platform ignores it)")
