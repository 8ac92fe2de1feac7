"""Cost of a healthy `dataset convert` study against another checkout (`--old DIR`), in interleaved rounds.

`python benchmarks/bench_convert_cost.py --old DIR [--size small|full] [--rounds 5]`

Each round runs bench_dataset.py's kit pipeline (convert_study on one synthetic study, twice in a fresh process:
the second is the steady state) in the old and this checkout, in alternating order, on the same DICOM. Prints the
medians over the rounds and the new/old ratio of the steady-state seconds; writes bench-out/bench_convert_cost.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_dataset import synthesize  # noqa: E402
from petct.argtypes import whole_number  # noqa: E402


def kit_seconds(tree: Path, dicom: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([sys.executable, str(tree / "benchmarks" / "bench_dataset.py"), "--one", "kit", "--dicom",
                           str(dicom), "--out", str(out)], cwd=tree, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(tree)})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--rounds", type=whole_number(1), default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    args = parser.parse_args()
    work = args.out / "bench_convert_cost"
    work.mkdir(parents=True, exist_ok=True)
    dicom = synthesize(work, args.size)
    trees = {"old": args.old.resolve(), "new": REPO}
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    for round_ in range(args.rounds):
        for name, tree in sorted(trees.items(), reverse=bool(round_ % 2)):
            result = kit_seconds(tree, dicom, work / f"out-{name}")
            for key in ("seconds", "first_study_seconds", "peak_gb"):
                figures[name].setdefault(key, []).append(result[key])
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    medians = {name: {k: statistics.median(v) for k, v in got.items()} for name, got in figures.items()}
    print(f"{args.size} study, medians of {args.rounds} interleaved rounds (old = {trees['old']}):")
    for key in medians["new"]:
        old, new = medians["old"][key], medians["new"][key]
        print(f"  {key:>20}: old {old:.4g}  new {new:.4g}  new/old {new / old:.3f}")
    (args.out / "bench_convert_cost.json").write_text(json.dumps({"medians": medians, "all": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
