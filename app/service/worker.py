"""The inference worker: one thread runs queued jobs one at a time (one GPU, or the CPU, per server).

The thread must outlive any error: a full disk, a locked or failing database, an engine bug. Each job's
problems fail that job; a failure to record (the database itself failing) is logged and retried with
backoff until it succeeds, so the queue never stalls with a job marked running forever.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import traceback
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from app.service.jobs import Job, JobState, JobStore
from app.service.scoring import KillableScoring
from app.service.uploads import disk_full
from petct.atomic import IncompleteWriteError
from petct.decoded import DecodedStudy
from petct.errors import InputError
from petct.imageio import write_image_atomic
from petct.jsonio import strict

log = logging.getLogger("app.worker")
MASK_NAME = "mask.mha"
IDLE_POLL_S = 2.0  # the queue is also woken on every new job; polling only covers missed wake-ups
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # between retries of a failing database write or loop step
EXPIRY_EVERY_S = 600.0
# The upload checks' images are kept for this many queued jobs (a full-size study is several hundred MB);
# a job beyond them, or one queued before a restart, has its files read again when its turn comes.
HELD_STUDIES = 1


@dataclass
class HeldStudy:
    """A queued job's PET and CT as the upload checks left them (a CT on another grid resampled), and its label."""

    decoded: DecodedStudy = field(default_factory=DecodedStudy)
    label: sitk.Image | None = None  # scored against the mask once it is inferred


class InferenceWorker:
    """Takes the oldest queued job, segments it with the engine, and hands scoring to the scoring pool."""

    def __init__(self, *, store: JobStore, engine, jobs_dir: Path, scoring: Executor,
                 killable: KillableScoring | None = None, keep_jobs_for_s: float | None = None):
        """`scoring` runs a labelled job's scoring off the inference thread; `killable` runs the scorer itself in a
        scoring process under the server's --score-timeout, as every scoring request (None: no job has a label)."""
        self.store = store
        self.engine = engine
        self.jobs_dir = jobs_dir
        self.scoring = scoring
        self.killable = killable
        self.keep_jobs_for_s = keep_jobs_for_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_expiry = 0.0
        self._held: dict[str, HeldStudy] = {}  # job id -> the images its upload checks read
        self._held_lock = threading.Lock()
        # Daemon: a job running at shutdown stays "running" in the database and is retried on restart.
        self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def reserve(self, job_id: str) -> bool:
        """Keep a place for the job's images (before its upload checks, which resample a CT on another grid only
        for a job whose images will be kept), unless HELD_STUDIES are kept already."""
        with self._held_lock:
            return self._place_for(job_id)

    def _place_for(self, job_id: str) -> bool:
        """Whether the job has a place (kept now if one is free); the caller holds the lock."""
        if job_id not in self._held and len(self._held) >= HELD_STUDIES:
            return False
        self._held.setdefault(job_id, HeldStudy())
        return True

    def hand(self, job_id: str, decoded: DecodedStudy, *, label: sitk.Image | None = None) -> bool:
        """Keep the PET and CT the upload checks read for the job's run (a CT on another grid as they resampled it),
        and its label for the scoring, unless HELD_STUDIES are kept already. The label waits through inference (a
        mask: a quarter of the PET's size as uint8) so that the scoring process is sent it as read instead of
        decoding its upload a second time.
        """
        with self._held_lock:
            if not self._place_for(job_id):
                return False
            self._held[job_id] = HeldStudy(decoded=decoded, label=label)
            return True

    def take(self, job_id: str) -> HeldStudy:
        """What was handed for the job (taken: the worker keeps it no longer); no images when none were handed."""
        with self._held_lock:
            return self._held.pop(job_id, None) or HeldStudy()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._expire_old_jobs()
                job = self.store.claim_next()
                if job is None:
                    self._wake.wait(IDLE_POLL_S)
                    self._wake.clear()
                else:
                    self._run(job)
                failures = 0
            except Exception:  # noqa: BLE001 - the loop is the one thing that must not die
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                log.error("inference worker step failed (retrying in %g s):\n%s", delay, traceback.format_exc())
                self._stop.wait(delay)

    def _record(self, what: str, action) -> None:
        """Run a database write until it succeeds (or the server stops), logging each failure."""
        for attempt in range(10**9):
            try:
                action()
                return
            except Exception as exc:  # noqa: BLE001 - sqlite3 errors, a full disk under the database
                delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                log.error("could not record %s (%s: %s); retrying in %g s", what, type(exc).__name__, exc, delay)
                if self._stop.wait(delay):
                    return

    def _expire_old_jobs(self) -> None:
        """Delete finished jobs older than --keep-jobs-for, files and record, so the disk does not fill by itself."""
        now = time.time()
        if self.keep_jobs_for_s is None or now - self._last_expiry < EXPIRY_EVERY_S:
            return
        self._last_expiry = now
        for job_id in self.store.expired(finished_before=now - self.keep_jobs_for_s):
            shutil.rmtree(self.jobs_dir / job_id, ignore_errors=True)
            self.store.delete(job_id)
            log.info("job %s expired (finished over %g s ago); its files are deleted", job_id, self.keep_jobs_for_s)

    def _run(self, job: Job) -> None:
        from algorithm.pipeline import segment_study  # torch and friends load with the worker, not the CLI

        folder = self.jobs_dir / job.id
        timings = {"queued_s": round(job.queued_s, 3)}
        try:
            started = time.perf_counter()
            held = self.take(job.id)
            label = held.label
            # the 2025 track's clicks or the 2026 profile's scribbles, both optional (app.service.studies)
            points = job.files.get("clicks") or job.files.get("scribbles")
            result = segment_study(pet_path=folder / job.files["pet"], ct_path=folder / job.files["ct"],
                                   engine=self.engine, clicks_path=folder / points if points else None,
                                   scribbles="scribbles" in job.files, decoded=held.decoded)
            del held
            timings["inference_s"] = round(time.perf_counter() - started, 3)
            timings.update({f"engine_{k}": v for k, v in dict(result.timings).items()})
            write_image_atomic(result.mask, folder / MASK_NAME)
        except InputError as exc:
            self._fail(job, exc.problem, timings)
            return
        except OSError as exc:
            reason = "the server's disk is full" if disk_full(exc) else f"{type(exc).__name__}: {exc.strerror or exc}"
            if isinstance(exc, IncompleteWriteError):
                reason += f" (the mask came out short: {exc.problem})"
            log.error("job %s failed: %s", job.id, exc)
            self._fail(job, f"inference failed: {reason}", timings)
            return
        except Exception as exc:  # an engine bug must fail its job, not the worker
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self._fail(job, f"inference failed: {type(exc).__name__}: {self._without_paths(str(exc))}", timings)
            return
        notes = _jsonable(getattr(result, "notes", {}) or {})
        if not job.has_label:
            self._record(f"job {job.id}", lambda: self.store.finish(job.id, state=JobState.succeeded,
                                                                    timings=timings, notes=notes))
            return
        try:
            self.scoring.submit(self._score, job, timings, notes, mask=result.mask, label=label)
        except RuntimeError:  # the pool is shut down: the server is stopping, and the job is retried on restart
            log.warning("job %s left running: the server stopped before it was scored", job.id)

    def _score(self, job: Job, timings: dict, notes: dict, *, mask: sitk.Image, label: sitk.Image | None) -> None:
        """Score the mask as inferred against the label as the upload checks read it (None: from its upload, when
        the job was queued before a restart or beyond HELD_STUDIES), in the scoring process."""
        from app.service.scoring import score_job

        folder = self.jobs_dir / job.id
        started = time.perf_counter()
        try:
            if self.killable is None:
                raise RuntimeError("this server has no scoring processes")
            metrics = self.killable(score_job, label=label, label_path=folder / job.files["label"], mask=mask,
                                    study=job.study or job.id)
        except Exception as exc:  # the mask stands; say why it has no metrics
            metrics, notes = None, {**notes, "scoring_error": getattr(exc, "reason", str(exc))}
        timings["scoring_s"] = round(time.perf_counter() - started, 3)
        self._record(f"job {job.id}", lambda: self.store.finish(job.id, state=JobState.succeeded, timings=timings,
                                                                metrics=metrics, notes=notes))

    def _without_paths(self, text: str) -> str:
        """An error's text as a participant may read it: the server's folders replaced, one line, short."""
        for folder in {str(self.jobs_dir.resolve()), str(self.jobs_dir)}:
            text = text.replace(folder, "<jobs>")
        return " ".join(text.split())[:300]

    def _fail(self, job: Job, reason: str, timings: dict) -> None:
        self._record(f"job {job.id}", lambda: self.store.finish(job.id, state=JobState.failed, error=reason,
                                                                timings=timings))


def _jsonable(value):
    """Engine notes as JSON-safe values (tuples, numpy scalars and paths become plain types)."""
    try:
        return json.loads(json.dumps(strict(value), default=str))
    except (TypeError, ValueError):
        return {"notes": str(value)}
