"""Benchmark of the container images (`python benchmarks/bench_images.py [--cold]`).

1. `make image-test` wall time: with --cold, first with nothing cached (the kit's images, local bases and
   the engine's build cache removed), then again warm; without it, warm only.
2. The size of each image the image test builds, beside its base's (the reference, measured in the same run).
Results also go to bench-out/bench_images.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from images.bases import PYTHON_BASE, TORCH_BASES
from images.build import image_size_and_platform
from images.container_engine import detect_engine, engine_env

REPO = Path(__file__).resolve().parents[1]

IMAGES = {"algorithm (CPU)": ("petct-kit/algorithm:cpu", TORCH_BASES["cpu"]),
          "evaluation": ("petct-kit/evaluation:cpu", PYTHON_BASE),
          "app (CPU)": ("petct-kit/app:cpu", TORCH_BASES["cpu"])}


def forget_everything(engine: str, env: dict[str, str]) -> None:
    """A cold start: the kit's images, the local bases and every unused layer and build cache entry gone."""
    for image, base in IMAGES.values():
        subprocess.run([engine, "rmi", "-f", image], env=env, capture_output=True)
    for base in (PYTHON_BASE, *TORCH_BASES.values()):
        subprocess.run([engine, "rmi", "-f", base], env=env, capture_output=True)
    subprocess.run([engine, "image", "prune", "-a", "-f"], env=env, capture_output=True)
    subprocess.run([engine, "builder", "prune", "-a", "-f"] if engine == "docker" else
                   [engine, "system", "prune", "-f"], env=env, capture_output=True)


def timed_image_test(engine: str) -> float:
    started = time.monotonic()
    result = subprocess.run(["make", "image-test", f"CONTAINER_ENGINE={engine}"], cwd=REPO)
    if result.returncode != 0:
        raise SystemExit("make image-test failed; no figures")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold", action="store_true", help="remove the images and caches first, then also warm")
    parser.add_argument("--engine", choices=("docker", "podman"), default=None)
    args = parser.parse_args()
    engine = detect_engine(args.engine)
    env = engine_env(engine)
    figures: dict = {"engine": engine}
    if args.cold:
        forget_everything(engine, env)
        figures["cold_s"] = timed_image_test(engine)
    figures["warm_s"] = timed_image_test(engine)
    sizes = {}
    for label, (image, base) in IMAGES.items():
        size, _ = image_size_and_platform(engine, image, env)
        base_size, _ = image_size_and_platform(engine, base, env)
        sizes[label] = {"image": image, "bytes": size, "base": base, "base_bytes": base_size}
    figures["sizes"] = sizes
    print(f"engine: {engine}")
    if "cold_s" in figures:
        print(f"make image-test cold: {figures['cold_s']:.0f} s ({figures['cold_s'] / figures['warm_s']:.1f}x warm)")
    print(f"make image-test warm: {figures['warm_s']:.0f} s")
    for label, s in sizes.items():
        print(f"{label}: {s['bytes'] / 1e6:.0f} MB on {s['base']} {s['base_bytes'] / 1e6:.0f} MB "
              f"(+{(s['bytes'] - s['base_bytes']) / 1e6:.0f} MB)")
    out = REPO / "bench-out" / "bench_images.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
