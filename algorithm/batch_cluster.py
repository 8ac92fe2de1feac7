"""predict-folder on Dask distributed: `--workers N` local worker processes, or `--scheduler ADDRESS` a cluster.

Imported only for those options: Dask is an optional extra (algorithm/requirements-distributed.txt).
Each study is one task running algorithm.batch_job.predict_study on a worker, which keeps its engine loaded
between studies (algorithm.loaded_engines) and writes the mask itself, atomically, into OUT (so workers
must see IN and OUT at the same paths: one machine, or a shared file system). When the cluster declares GPUs
(`dask worker --resources GPU=1`, one worker per GPU), every task asks for GPU=1, so a GPU runs one study at
a time. A worker that dies mid-study costs the study a retry on another worker (Dask's allowed-failures); a
study that fails on its own is its own record; losing the scheduler ends the run with what finished.
"""
from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import dask
from distributed import Client, KilledWorker, LocalCluster, WorkerPlugin, as_completed
from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError

from algorithm.batch_inputs import BatchCase
from algorithm.batch_job import StudyOutcome, predict_study
from algorithm.failures import EXIT_INTERNAL, EXIT_MEMORY
from algorithm.loaded_engines import EngineSpec
from petct.errors import InputError
from petct.gpus import local_gpu_ids
from petct.quietlogs import quiet_loggers

log = logging.getLogger("algorithm")

GPU = "GPU"  # the Dask resource a GPU worker declares (dask worker --resources GPU=1)
# A local cluster's housekeeping, made rarer: Dask's defaults wake every process 50 times a second (the event
# loop's tick monitor) and sample each worker every 10 ms (the statistical profiler), about 90 ms of CPU per second
# for 2 idle workers on the cores the studies need; with these, about 20 (BENCHMARKS.md). The costs: queued tasks
# are rebalanced between workers (work stealing) once a second, and a worker's memory limit is checked once a
# second, so a study that overruns it is stopped up to a second later.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.scheduler.work-stealing-interval": "1s",
}
WORKER_WAIT_S = 300  # how long a cluster may take to bring up its first worker (machines being provisioned)


class SchedulerLost(Exception):
    """The connection to the scheduler went away before every study had its outcome."""


@dataclass
class ClusterRun:
    outcomes: list[StudyOutcome]
    workers: int  # workers when the studies were submitted
    lost: SchedulerLost | None = None


class PinGpu(WorkerPlugin):
    """Local GPU workers: worker K sees only the K-th (mod their number) of `devices`, the machine's names of
    the GPUs the command may use (set before the engine imports torch; a container job is given the same)."""

    name = "petct-pin-gpu"

    def __init__(self, devices: list[str]):
        self.devices = list(devices)

    def setup(self, worker) -> None:
        os.environ["CUDA_VISIBLE_DEVICES"] = self.devices[int(worker.name) % len(self.devices)]


@contextlib.contextmanager
def dask_client(*, scheduler: str | None, workers: int | None, gpus: list[str] | None = None) -> Iterator[Client]:
    """A client of the cluster at `scheduler`, or of `workers` local worker processes (one thread each; with
    `gpus`, the machine's names of the GPUs to use, each declares GPU=1 and is pinned to one of them)."""
    # Reconnection tracebacks and the like: the run reports in its own lines (with --debug too).
    with quiet_loggers("distributed"):
        if scheduler is not None:
            with Client(scheduler) as client:
                yield client
            return
        cores = os.cpu_count() or 1
        # Each worker's torch gets its share of the cores (Dask's default is one thread each).
        env = {name: str(max(1, cores // workers)) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        with dask.config.set(LOCAL_CLUSTER_CONFIG), \
                LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                             resources={GPU: 1} if gpus else None, env=env) as cluster, \
                Client(cluster) as client:
            if gpus:
                client.register_plugin(PinGpu(gpus))
            yield client


def predict_on_cluster(client: Client, cases: list[BatchCase], *, spec: EngineSpec, output_dir: Path, suffix: str,
                       on_outcome: Callable[[StudyOutcome], None] = lambda outcome: None) -> ClusterRun:
    """Every case as one task; outcomes in the order they finish, each case's exactly once."""
    _wait_for_a_worker(client)
    _require_the_kit(client)
    workers = client.scheduler_info(n_workers=-1)["workers"]
    gpu_workers = gpu_worker_count(client)
    if gpu_workers and spec.options.device == "cpu":
        resources = None  # --device cpu: the GPU workers' CPUs serve as well as any
    else:
        resources = {GPU: 1} if gpu_workers else None
        if not gpu_workers and spec.options.device == "cuda":
            log.warning("--device cuda but no worker declares a GPU (dask worker --resources GPU=1): "
                        "studies go to any worker")
    run = ClusterRun([], workers=gpu_workers if resources else len(workers))
    token = uuid.uuid4().hex[:8]  # a rerun's tasks never meet an earlier run's results on a shared scheduler
    futures = {client.submit(predict_study, case, spec=spec, output_dir=Path(output_dir).resolve(), suffix=suffix,
                             key=f"predict-{token}-{case.key}", pure=False, resources=resources): case
               for case in cases}
    try:
        for future in as_completed(futures):
            outcome = _outcome(future, futures[future])
            run.outcomes.append(outcome)
            on_outcome(outcome)
    except (FutureCancelledError, CommClosedError, OSError) as exc:
        run.lost = SchedulerLost(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return run


def gpu_worker_count(client: Client) -> int:
    """The workers that declare a GPU (dask worker --resources GPU=1)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return sum(1 for w in workers.values() if w.get("resources", {}).get(GPU, 0) > 0)


def _wait_for_a_worker(client: Client) -> None:
    if client.scheduler_info(n_workers=-1)["workers"]:
        return
    log.info("waiting up to %d s for a Dask worker to join %s", WORKER_WAIT_S, client.scheduler.address)
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise InputError(f"no Dask worker joined the scheduler {client.scheduler.address} within {WORKER_WAIT_S} s "
                         "(start one: dask worker ADDRESS, README On a cluster)") from None


def _require_the_kit(client: Client) -> None:
    """The scheduler unpickles the tasks and the workers run them: both must import the kit, else one line."""
    module = predict_study.__module__

    def importable() -> str | None:  # nested: sent by value, so that it runs where the kit does not import
        import importlib

        try:
            importlib.import_module(module)
        except ImportError as exc:
            return str(exc)
        return None

    problems = {"scheduler": client.run_on_scheduler(importable), **client.run(importable)}
    missing = sorted(where for where, problem in problems.items() if problem)
    if missing:
        raise InputError(f"the Dask {', '.join(missing)} cannot import the kit ({problems[missing[0]]}): start the "
                         "scheduler and the workers in the kit's folder with PYTHONPATH set to it (README, On a cluster)")


def _outcome(future, case: BatchCase) -> StudyOutcome:
    try:
        return future.result()
    except KilledWorker as exc:  # the study took down every worker it was given (Dask's allowed-failures)
        return StudyOutcome(case.key, None, f"error: {case.pet}: the worker running this study died each time it "
                            f"was tried ({exc}); out of memory?", EXIT_MEMORY, 0.0, 0.0, "")
    except (FutureCancelledError, CommClosedError):  # the scheduler went away: not this study's fault
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. the task could not be sent: this study's failure only
        return StudyOutcome(case.key, None, f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL, 0.0, 0.0, "")


def local_gpus(spec: EngineSpec) -> list[str]:
    """The GPUs local workers should be pinned to (the machine's names of those this process sees): none for
    the baseline or --device cpu."""
    if spec.engine == "baseline" or spec.options.device == "cpu":
        return []
    try:
        import torch
    except ImportError:
        return []
    return local_gpu_ids(torch.cuda.device_count())


def checking_spec(spec: EngineSpec) -> EngineSpec:
    """The spec to check the model with on this machine, which may have no GPU: the same model on the CPU."""
    return replace(spec, options=replace(spec.options, device="cpu"))
