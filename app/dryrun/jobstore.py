"""Finished jobs kept between runs (campaigns): a rerun takes a finished job's outcome, log and output from
here instead of running it again, and checks them as if the job had just run.

A job is `<store>/<study>[_stepNN]-<digest>/` (job.json, log.txt, output/): filled under a temporary name and
renamed when whole, so a run killed while saving leaves nothing that passes for finished. The digest covers
what the job's result depends on: the study's images, the clicks or scribbles it is given, the step, and the
runner (command or image, model, limits, edition); change any of them and the job runs again.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import shutil
import uuid
from datetime import datetime
from pathlib import Path

from app.dryrun.runner import RunOutcome
from petct.digests import sha256_of
from petct.jsonio import read_json, write_json_atomic

JOB_JSON = "job.json"
PARTIAL_PREFIX = ".partial-"


@dataclasses.dataclass(frozen=True)
class StoredJob:
    outcome: RunOutcome
    input_changed: bool  # the job wrote into its read-only input folder
    started_at: datetime
    completed_at: datetime


@functools.lru_cache(maxsize=256)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is read again
    return sha256_of(path)


def job_key(*, study: str, step: int | None, images: list[Path], clicks_file: Path | None, runner: dict) -> str:
    """The folder name of one job in the store."""
    digest = hashlib.sha256()
    for path in images:
        stat = path.stat()
        digest.update(_file_digest(path.resolve(), stat.st_size, stat.st_mtime_ns).encode())
    digest.update(clicks_file.read_bytes() if clicks_file is not None and clicks_file.is_file() else b"-")
    digest.update(repr(sorted(runner.items())).encode())
    return f"{study}{'' if step is None else f'_step{step:02d}'}-{digest.hexdigest()[:16]}"


def restore(store: Path, key: str, *, log: Path, output_dir: Path) -> StoredJob | None:
    """A finished job's record, with its log and output put back in place; None when it has not finished."""
    folder = store / key
    if not (folder / JOB_JSON).is_file():
        return None
    record = read_json(folder / JOB_JSON, what="finished job record")
    shutil.copyfile(folder / "log.txt", log)
    shutil.copytree(folder / "output", output_dir, dirs_exist_ok=True)
    outcome = RunOutcome(log=log, **record["outcome"])
    return StoredJob(outcome=outcome, input_changed=record["input_changed"],
                     started_at=datetime.fromisoformat(record["started_at"]),
                     completed_at=datetime.fromisoformat(record["completed_at"]))


def save(store: Path, key: str, job: StoredJob, *, output_dir: Path) -> None:
    """Keep a job that has ended: its outcome, log and output, renamed into place when whole."""
    partial = store / f"{PARTIAL_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    try:
        shutil.copytree(output_dir, partial / "output", symlinks=True)
        if job.outcome.log.is_file():
            shutil.copyfile(job.outcome.log, partial / "log.txt")
        else:
            (partial / "log.txt").write_text("")
        outcome = {f.name: getattr(job.outcome, f.name) for f in dataclasses.fields(job.outcome) if f.name != "log"}
        write_json_atomic({"outcome": outcome, "input_changed": job.input_changed,
                           "started_at": job.started_at.isoformat(), "completed_at": job.completed_at.isoformat()},
                          partial / JOB_JSON)
        final = store / key
        if final.exists():  # a folder without job.json: not finished
            shutil.rmtree(final)
        partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def remove_partial(store: Path) -> None:
    """What a run killed while saving left."""
    for stale in store.glob(f"{PARTIAL_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
