"""Time and peak memory of one full-size study job of the HTTP service (`python benchmarks/bench_study_job.py`).

A 400 x 400 x 326 phantom study (SUV, a CT on a grid twice as fine in-plane, and a label) is sent to
POST /v1/studies of a `python -m app serve --engine baseline` server on loopback; the figure is the time
from the request to the finished job (inference, mask written, scored against the label) and the peak
proportional set size (PSS) of the server with its child processes, sampled every 10 ms.

`--reference TREE` runs the same job against a second copy of the kit (e.g. an earlier commit from
`git archive`) in the same run, alternating the two, and prints the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from petct.phantom import make_study

REPO = Path(__file__).resolve().parents[1]


def write_inputs(folder: Path) -> dict[str, Path]:
    """The full-size phantom's SUV, raw CT and label as compressed .mha (written once, then reused)."""
    study_dir = folder / "PETCT_0007"
    paths = {"pet": study_dir / "SUV.mha", "ct": study_dir / "CT.mha", "label": study_dir / "SEG.mha"}
    if not all(p.is_file() for p in paths.values()):
        make_study(7, size="full", n_lesions=6, with_ct=True, name="PETCT_0007").write(folder)
    return paths


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_pss(process: psutil.Process) -> int:
    """Proportional set size of the server and its children: pages shared with the scoring processes' fork
    server are counted once, not once per process as resident sizes would."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def tree_cpu_s(process: psutil.Process) -> float:
    """CPU seconds (user + system) of the server and its live children, less sensitive than wall time to
    other work on a shared machine."""
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def one_job(tree: Path, inputs: dict[str, Path], data_dir: Path) -> dict:
    """Start a server from `tree`, warm it with a tiny job, then time the full-size one and sample its memory."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-m", "app", "serve", "--port", str(port), "--data-dir", str(data_dir),
            "--engine", "baseline", "--log-level", "warning"]
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"server from {tree} did not start")
            time.sleep(0.2)
        server = psutil.Process(proc.pid)
        with httpx.Client(base_url=url, timeout=600) as client:
            warm = make_study(1, size="tiny", n_lesions=2).write(data_dir.parent / "warm")
            # With a label: the scoring processes are started (and idle) before the measured job, in both trees.
            submit(client, {"pet": warm / "SUV.mha", "ct": warm / "CTres.mha", "label": warm / "SEG.mha"})
            with open(warm / "SEG.mha", "rb") as gt, open(warm / "SEG.mha", "rb") as pred:
                client.post("/v1/score", files={"ground_truth": ("SEG.mha", gt), "prediction": ("SEG.mha", pred)})
            time.sleep(1.0)
            idle_pss = tree_pss(server)
            peak = [idle_pss]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], tree_pss(server))
                    stop.wait(0.01)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            cpu_before = tree_cpu_s(server)
            started = time.perf_counter()
            job = submit(client, inputs)
            seconds = time.perf_counter() - started
            cpu_s = tree_cpu_s(server) - cpu_before
            stop.set()
            sampler.join()
        if job["state"] != "succeeded" or not job.get("metrics"):
            raise RuntimeError(f"job did not succeed with metrics: {job}")
        return {"seconds": seconds, "cpu_s": cpu_s, "peak_pss": peak[0], "pss_before": idle_pss,
                "dice": job["metrics"].get("dice")}
    finally:
        proc.terminate()
        proc.wait(30)


def submit(client: httpx.Client, paths: dict[str, Path]) -> dict:
    handles = {field: open(path, "rb") for field, path in paths.items()}
    try:
        response = client.post("/v1/studies", files={f: (paths[f].name, h) for f, h in handles.items()})
    finally:
        for h in handles.values():
            h.close()
    response.raise_for_status()
    job_id = response.json()["id"]
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path, help="another copy of the kit to compare with, in the same run")
    parser.add_argument("--rounds", type=int, default=2, help="jobs per tree, alternating (default: %(default)s)")
    parser.add_argument("--inputs", type=Path, default=REPO / "bench-out" / "study_job",
                        help="where the phantom study is written once (default: %(default)s)")
    args = parser.parse_args()
    inputs = write_inputs(args.inputs)
    trees = {"this": REPO, **({"reference": args.reference.resolve()} if args.reference else {})}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            with tempfile.TemporaryDirectory(prefix="bench-study-job-") as tmp:
                data_dir = Path(tmp) / "data"
                run = one_job(tree, inputs, data_dir)
            runs[name].append(run)
            print(f"round {round_ + 1} {name}: {run['seconds']:.2f} s ({run['cpu_s']:.2f} s CPU), peak {run['peak_pss'] / 2**20:.0f} MiB "
                  f"(idle {run['pss_before'] / 2**20:.0f} MiB), dice {run['dice']}", flush=True)
    summary = {name: {"best_s": min(r["seconds"] for r in rs), "best_cpu_s": min(r["cpu_s"] for r in rs), "peak_mib": max(r["peak_pss"] for r in rs) / 2**20,
                   "idle_mib": max(r["pss_before"] for r in rs) / 2**20}
               for name, rs in runs.items()}
    if "reference" in summary:
        ref, new = summary["reference"], summary["this"]
        summary["speedup"] = ref["best_s"] / new["best_s"]
        summary["cpu_ratio"] = new["best_cpu_s"] / ref["best_cpu_s"]
        summary["memory_ratio"] = new["peak_mib"] / ref["peak_mib"]
    print(json.dumps(summary, indent=2))
    out = REPO / "bench-out"
    out.mkdir(exist_ok=True)
    (out / "bench_study_job.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
