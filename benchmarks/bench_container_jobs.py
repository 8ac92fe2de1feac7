"""What a container adds to each job of a dry run or campaign: the kit's algorithm image against the same
algorithm as a local command, the same model, the same phantoms (`python benchmarks/bench_container_jobs.py`).

Both runs are `python -m app dry-run` with a small random-weight nnU-Net results folder (the test suite's):
once with `--image petct-kit/algorithm:cpu --model DIR` (podman or Docker, the platform's flags), once with
`--model DIR` (the kit's `python -m algorithm` as a fresh process per job). Each job's time is the dry run's
own (from the process's start to its exit); the two interpreters differ (the image's imports less than a
development venv), so the container's own start and stop are timed apart: `run --rm --entrypoint python IMAGE -c
pass` against the local `python -c pass`. The figures the campaign estimate in BENCHMARKS.md takes from here: the
container's start and stop, and a job's time, whose start-up and model load a GPU does not shorten.

Needs the image (`make images CPU=1`) and nnunetv2 (a test dependency: the model is written with its classes).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from images.container_engine import detect_engine, engine_env
from petct.argtypes import whole_number
from suite_helpers import test_helpers
from timing import median_s

REPO = Path(__file__).resolve().parents[1]


def dry_run(runner: list[str], *, model: Path, phantoms: int, output: Path) -> tuple[float, list[float]]:
    """Wall seconds of the whole dry run and each job's seconds; fails loudly on a failed run."""
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "app", "dry-run", *runner, "--model", str(model), "--phantoms",
                          str(phantoms), "--phantom-size", "tiny", "--no-report", "--no-gpus", "--output",
                          str(output)], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"dry run {' '.join(runner) or '(local)'} failed:\n{run.stdout[-3000:]}{run.stderr[-2000:]}")
    studies = json.loads((output / "dry-run.json").read_text())["studies"]
    return wall, [float(s["seconds"]) for s in studies]


def median_seconds(argv: list[str], *, repeats: int, env: dict[str, str] | None = None) -> float:
    return median_s(lambda: subprocess.run(argv, env=env, check=True, capture_output=True), repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", type=whole_number(1), default=3)
    parser.add_argument("--rounds", type=whole_number(1), default=2)
    parser.add_argument("--image", default="petct-kit/algorithm:cpu")
    args = parser.parse_args()
    helpers = test_helpers("nnunet_helpers")
    helpers.require_nnunetv2()
    with tempfile.TemporaryDirectory(prefix="bench-container-jobs-") as tmp:
        root = Path(tmp)
        model = helpers.small_model_case(root)["model"]
        for path in [root, *root.rglob("*")]:  # the image's user (another uid) reads the model
            path.chmod(0o755 if path.is_dir() else 0o644)
        jobs: dict[str, list[float]] = {"image": [], "local": []}
        walls: dict[str, list[float]] = {"image": [], "local": []}
        for round_ in range(args.rounds):  # alternating, so that a change of load touches both
            for name, runner in (("image", ["--image", args.image]), ("local", [])):
                wall, seconds = dry_run(runner, model=model, phantoms=args.phantoms,
                                        output=root / f"{name}-{round_}")
                walls[name].append(wall)
                jobs[name] += seconds
                print(f"round {round_ + 1} {name}: dry run {wall:.2f} s, jobs {[round(s, 2) for s in seconds]}",
                      flush=True)
    image, local = statistics.median(jobs["image"]), statistics.median(jobs["local"])
    print(f"per job, median of {len(jobs['image'])}: image {image:.2f} s, local command {local:.2f} s")
    engine = detect_engine(None)
    env = engine_env(engine)
    in_container = median_seconds([engine, "run", "--rm", "--platform=linux/amd64", "--network", "none",
                                   "--entrypoint", "python", args.image, "-c", "pass"], repeats=7, env=env)
    here = median_seconds([sys.executable, "-c", "pass"], repeats=7)
    print(f"{engine} run --rm ... python -c pass: {in_container:.3f} s; python -c pass here: {here:.3f} s; "
          f"the container's start and stop: {in_container - here:.3f} s")
    print(json.dumps({"image_job_s": image, "local_job_s": local, "container_start_stop_s": in_container - here,
                      "image_dry_run_s": min(walls["image"]), "local_dry_run_s": min(walls["local"])}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
