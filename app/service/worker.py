"""The inference worker: one thread runs queued jobs one at a time (one GPU, or the CPU, per server)."""
from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from concurrent.futures import Executor
from pathlib import Path

from app.service.jobs import Job, JobState, JobStore
from petct.errors import InputError
from petct.imageio import write_image_atomic
from petct.jsonio import strict

log = logging.getLogger("app.worker")
MASK_NAME = "mask.mha"
IDLE_POLL_S = 2.0  # the queue is also woken on every new job; polling only covers missed wake-ups


class InferenceWorker:
    """Takes the oldest queued job, segments it with the engine, and hands scoring to the scoring pool."""

    def __init__(self, *, store: JobStore, engine, jobs_dir: Path, scoring: Executor):
        self.store = store
        self.engine = engine
        self.jobs_dir = jobs_dir
        self.scoring = scoring
        self._wake = threading.Event()
        self._stop = threading.Event()
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

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.store.claim_next()
            if job is None:
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        from algorithm.pipeline import segment_study  # torch and friends load with the worker, not the CLI

        folder = self.jobs_dir / job.id
        timings = {"queued_s": round((job.started_at or time.time()) - job.created_at, 3)}
        try:
            started = time.perf_counter()
            result = segment_study(pet_path=folder / job.files["pet"], ct_path=folder / job.files["ct"],
                                   engine=self.engine)
            timings["inference_s"] = round(time.perf_counter() - started, 3)
            timings.update({f"engine_{k}": v for k, v in dict(result.timings).items()})
            write_image_atomic(result.mask, folder / MASK_NAME)
        except InputError as exc:
            self._fail(job, exc.problem, timings)
            return
        except Exception as exc:  # an engine bug must fail its job, not the worker
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self._fail(job, f"inference failed: {type(exc).__name__}: {exc}", timings)
            return
        notes = _jsonable(getattr(result, "notes", {}) or {})
        if not job.has_label:
            self.store.finish(job.id, state=JobState.succeeded, timings=timings, notes=notes)
            return
        try:
            self.scoring.submit(self._score, job, timings, notes)
        except RuntimeError:  # the pool is shut down: the server is stopping, and the job is retried on restart
            log.warning("job %s left running: the server stopped before it was scored", job.id)

    def _score(self, job: Job, timings: dict, notes: dict) -> None:
        from app.service.scoring import score_uploaded

        folder = self.jobs_dir / job.id
        started = time.perf_counter()
        try:
            metrics = score_uploaded(ground_truth=folder / job.files["label"], prediction=folder / MASK_NAME,
                                     study=job.id, names={"ground_truth": "label", "prediction": "mask"})
        except Exception as exc:  # the mask stands; say why it has no metrics
            metrics, notes = None, {**notes, "scoring_error": getattr(exc, "reason", str(exc))}
        timings["scoring_s"] = round(time.perf_counter() - started, 3)
        self.store.finish(job.id, state=JobState.succeeded, timings=timings, metrics=metrics, notes=notes)

    def _fail(self, job: Job, reason: str, timings: dict) -> None:
        self.store.finish(job.id, state=JobState.failed, error=reason, timings=timings)


def _jsonable(value):
    """Engine notes as JSON-safe values (tuples, numpy scalars and paths become plain types)."""
    try:
        return json.loads(json.dumps(strict(value), default=str))
    except (TypeError, ValueError):
        return {"notes": str(value)}
