"""Benchmark: predict-folder in this process against Dask workers (1 and 2 local worker processes).

Two views, on the same phantom studies (baseline engine, so that the engine's own time is small and the
scheduling cost shows):

- end to end: `python -m algorithm predict-folder IN OUT` as a user runs it, serial, `--workers 1` and
  `--workers 2`; wall time and the CPU seconds of the command and every process it started (cluster start-up
  included);
- steady state: a cluster already up with the engine loaded on its workers, the studies as Dask tasks
  (algorithm.batch_cluster.predict_on_cluster) against the same job function called in a loop here
  (algorithm.batch_job.predict_study); the difference in CPU seconds (this process, which holds the scheduler
  and the client, plus the workers) per study is the scheduling overhead.

    python benchmarks/bench_cluster.py                 # 8 small studies
    python benchmarks/bench_cluster.py --studies 16 --size tiny
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from algorithm.batch_cluster import dask_client, predict_on_cluster
from algorithm.batch_inputs import BASELINE_ROLES, find_cases
from algorithm.batch_job import predict_study
from algorithm.engine_contract import EngineOptions
from algorithm.loaded_engines import EngineSpec
from petct.argtypes import whole_number
from petct.phantom import SIZES, make_study

REPO = Path(__file__).resolve().parents[1]

GOAL_OVERHEAD_MS = 50.0  # scheduling CPU per study


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def end_to_end(folder: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one predict-folder command (its worker processes included)."""
    shutil.rmtree(out, ignore_errors=True)
    cpu, wall = children_cpu(), time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "algorithm", "predict-folder", str(folder), str(out), "--engine",
                          "baseline", *extra], cwd=REPO, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
    if run.returncode != 0:
        raise SystemExit(f"predict-folder {' '.join(extra)} failed: {run.stderr[-2000:]}")
    return wall, cpu


def process_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


IDLE_S = 3.0


def steady_state(folder: Path, out: Path, *, workers: int) -> tuple[float, float, float]:
    """Wall and CPU seconds of the studies as tasks on a warm cluster of `workers` processes, and the CPU seconds
    per second the idle cluster uses (heartbeats, event loops) whatever it runs."""
    cases = find_cases(folder, roles=BASELINE_ROLES).cases
    spec = EngineSpec(model=None, engine="baseline", options=EngineOptions(probabilities=False))
    with dask_client(scheduler=None, workers=workers) as client:
        client.wait_for_workers(workers)
        pids = list(client.run(os.getpid).values())
        predict_on_cluster(client, cases, spec=spec, output_dir=out / "warm-up", suffix=".nii.gz")  # engine loaded
        cpu = time.process_time() + process_cpu(pids)
        time.sleep(IDLE_S)
        idle = (time.process_time() + process_cpu(pids) - cpu) / IDLE_S
        cpu, wall = time.process_time() + process_cpu(pids), time.perf_counter()
        run = predict_on_cluster(client, cases, spec=spec, output_dir=out / "timed", suffix=".nii.gz")
        wall, cpu = time.perf_counter() - wall, time.process_time() + process_cpu(pids) - cpu
    assert all(o.error is None for o in run.outcomes), [o.error for o in run.outcomes]
    return wall, cpu, idle


def in_process(folder: Path, out: Path) -> tuple[float, float]:
    cases = find_cases(folder, roles=BASELINE_ROLES).cases
    spec = EngineSpec(model=None, engine="baseline", options=EngineOptions(probabilities=False))
    predict_study(cases[0], spec=spec, output_dir=out / "warm-up", suffix=".nii.gz")
    cpu, wall = time.process_time(), time.perf_counter()
    for case in cases:
        assert predict_study(case, spec=spec, output_dir=out / "timed", suffix=".nii.gz").error is None
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=whole_number(1), default=8)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        for seed in range(args.studies):
            make_study(seed, size=args.size, name=f"PETCT_{seed:04d}").write(root / "in")
        n = args.studies
        print(f"load average {os.getloadavg()[0]:.1f}; {n} phantom studies of size {args.size} {SIZES[args.size]}, baseline engine, {os.cpu_count()} cores")
        print("end to end (command, cluster start-up included):  wall s   CPU s")
        serial = end_to_end(root / "in", root / "serial", [])
        rows = {"serial": serial, "--workers 1": end_to_end(root / "in", root / "w1", ["--workers", "1"]),
                "--workers 2": end_to_end(root / "in", root / "w2", ["--workers", "2"])}
        for name, (wall, cpu) in rows.items():
            print(f"  {name:12s} {wall:8.2f} {cpu:8.2f}   wall x{serial[0] / wall:.2f} of serial")
        for name in ("w1", "w2"):
            for mask in sorted((root / "serial").iterdir()):
                assert mask.read_bytes() == (root / name / mask.name).read_bytes(), f"{name}: {mask.name} differs"
        print("  masks: identical to the serial run's, byte for byte")
        print("steady state (engine loaded, cluster up):           wall s   CPU s   CPU ms per study over the loop")
        loop = in_process(root / "in", root / "loop")
        print(f"  loop here    {loop[0]:8.2f} {loop[1]:8.2f}")
        for workers in (1, 2):
            wall, cpu, idle = steady_state(root / "in", root / f"steady{workers}", workers=workers)
            overhead = (cpu - loop[1]) / n * 1000
            per_study = (cpu - loop[1] - idle * wall) / n * 1000
            print(f"  {workers} worker{'s' if workers > 1 else ' '}    {wall:8.2f} {cpu:8.2f}   {overhead:+8.1f}"
                  f"   wall x{loop[0] / wall:.2f} of the loop   (goal <= {GOAL_OVERHEAD_MS:.0f} ms)")
            print(f"               idle cluster {idle * 1000:.0f} ms CPU per s of wall; less that: {per_study:+.1f} ms "
                  "CPU per study")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
