"""Healthy-request cost of the upload, read and write checks, against another checkout (`--old DIR`).

Interleaved rounds, old and new in alternating order, each round measuring on both trees:
1. POST /v1/score, small studies (128 x 128 x 96, compressed .mha pair): requests per second, one client;
2. POST /v1/score, one full-size study (400 x 400 x 326, uncompressed .mha pair): seconds;
3. in a fresh process per tree: write_image_atomic of a full-size mask (compressed .mha; fsync and the
   read-back check are new; median of 3), read_image of a full-size .nii.gz (the completeness check) and
   score_files on a small pair (median of 9).
4. in this process, alternating calls 300 times: the old tree's petct/imageio.py read_image and header read
   (read_geometry) against the new read_image and read_header, on a small ground truth: the changed read
   path alone, free of the HTTP and process noise of a shared machine.
Reports the median of each over the rounds and the new/old ratio; also writes bench-out/bench_hardening.json.
Example: git worktree add /tmp/kit-old main && python benchmarks/bench_hardening.py --old /tmp/kit-old
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench_app import mask_pair, post_score
from petct.argtypes import whole_number
from petct.imageio import write_image_atomic
from petct.phantom import make_study
from suite_helpers import test_helpers

REPO = Path(__file__).resolve().parents[1]

STARTUP_TIMEOUT_S = test_helpers("app_helpers").STARTUP_TIMEOUT_S
free_port = test_helpers("app_helpers").free_port

# Run in each tree with its own code: prints {"write_s", "read_nifti_s", "score_s"} as JSON.
IO_SCRIPT = """
import json, statistics, sys, time
import SimpleITK as sitk
from petct.imageio import read_image, write_image_atomic
from evaluation.scoring import score_files
mask, nifti, gt, pred, out = sys.argv[1:6]
image = sitk.ReadImage(mask)
score_files(ground_truth=gt, prediction=pred)  # warm-up: lazy imports


def median_s(fn, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


print(json.dumps({"write_s": median_s(lambda: write_image_atomic(image, out), 3),
                  "read_nifti_s": median_s(lambda: read_image(nifti), 1),
                  "score_s": median_s(lambda: score_files(ground_truth=gt, prediction=pred), 9)}))
"""


def start_server(tree: Path, data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    argv = [sys.executable, "-m", "app", "serve", "--port", str(port), "--data-dir", str(data_dir),
            "--engine", "baseline", "--log-level", "warning", "--scoring-workers", "2"]
    proc = subprocess.Popen(argv, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server in {tree} did not start")


def small_rate(url: str, pairs, *, requests: int) -> float:
    with httpx.Client(base_url=url, timeout=120) as client:
        started = time.perf_counter()
        for i in range(requests):
            post_score(client, *pairs[i % len(pairs)])
        return requests / (time.perf_counter() - started)


def full_seconds(url: str, gt: Path, pred: Path) -> float:
    with httpx.Client(base_url=url, timeout=120) as client:
        started = time.perf_counter()
        post_score(client, gt, pred)
        return time.perf_counter() - started


def io_figures(tree: Path, files: list[Path]) -> dict:
    done = subprocess.run([sys.executable, "-c", IO_SCRIPT, *map(str, files)], cwd=tree, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(tree)}, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_path_ab(old_tree: Path, path: Path, *, pairs: int = 300) -> dict[str, dict[str, float]]:
    """Median seconds of the old and new read_image and header read, called alternately in one process."""
    from petct import imageio as new
    spec = importlib.util.spec_from_file_location("old_imageio", old_tree / "petct" / "imageio.py")
    old = importlib.util.module_from_spec(spec)
    sys.modules["old_imageio"] = old  # dataclasses look their module up by name
    spec.loader.exec_module(old)
    calls = {"read_image_s": (old.read_image, new.read_image), "read_header_s": (old.read_geometry, new.read_header)}
    out = {}
    for key, (old_fn, new_fn) in calls.items():
        times = {"old": [], "new": []}
        for _ in range(pairs):
            for name, fn in (("old", old_fn), ("new", new_fn)):
                started = time.perf_counter()
                fn(path)
                times[name].append(time.perf_counter() - started)
        out[key] = {name: statistics.median(values) for name, values in times.items()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout to compare with (e.g. main's worktree)")
    parser.add_argument("--rounds", type=whole_number(1), default=10)
    parser.add_argument("--requests", type=whole_number(1), default=20, help="small-study requests per round")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    args = parser.parse_args()
    work = args.out / "bench_hardening"
    work.mkdir(parents=True, exist_ok=True)

    print("making studies ...", flush=True)
    small = [mask_pair(work, size="small", seed=s, compress=True) for s in (1, 2, 3, 4)]
    full_gt, full_pred = mask_pair(work, size="full", seed=9, compress=False)
    study = make_study(9, size="full")
    nifti = write_image_atomic(study.suv, work / "suv.nii.gz")
    trees = {"old": args.old.resolve(), "new": REPO}
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    servers = {name: start_server(tree, work / f"data-{name}") for name, tree in trees.items()}
    try:
        for name, (_, url) in servers.items():  # warm up imports and pools
            small_rate(url, small, requests=4)
        for round_ in range(args.rounds):
            # Alternate the order so that a drift in the machine's load does not favour one side.
            for name, tree in sorted(trees.items(), reverse=bool(round_ % 2)):
                url = servers[name][1]
                got = figures[name]
                got.setdefault("small_rps", []).append(small_rate(url, small, requests=args.requests))
                got.setdefault("full_s", []).append(full_seconds(url, full_gt, full_pred))
                for key, value in io_figures(tree, [full_gt, nifti, *small[0],
                                                    work / f"written-{name}.mha"]).items():
                    got.setdefault(key, []).append(value)
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)

    medians = {name: {key: statistics.median(values) for key, values in got.items()} for name, got in figures.items()}
    for key, by_tree in read_path_ab(trees["old"], small[0][0]).items():
        for name, value in by_tree.items():
            medians[name][key] = value
    print(f"medians of {args.rounds} interleaved rounds (old = {trees['old']}):")
    for key in medians["new"]:
        old, new = medians["old"][key], medians["new"][key]
        # For a rate, higher is better: the cost is old/new; for seconds it is new/old.
        cost = old / new if key.endswith("rps") else new / old
        print(f"  {key:>14}: old {old:.4g}  new {new:.4g}  cost {cost:.3f}")
    (args.out / "bench_hardening.json").write_text(json.dumps({"rounds": args.rounds, "medians": medians,
                                                                "all": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
