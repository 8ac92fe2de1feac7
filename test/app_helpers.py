"""Shared helpers of the app tests: a real server process on loopback, phantom files, a reference scorer."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from scipy import ndimage

from paths import REPO
from petct.imageio import Geometry, image_from_array, write_image_atomic
from petct.phantom import make_study

STARTUP_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """`python -m app serve` as a subprocess on a free loopback port."""

    data_dir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None
    token: str | None = None  # what client() sends unless told otherwise ("" sends none)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"server-{self.data_dir.name}.log"

    def start(self) -> "Server":
        self.port = free_port()
        argv = [sys.executable, "-m", "app", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir),
                "--engine", "baseline", "--log-level", "warning", *self.args]
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not answer in {STARTUP_TIMEOUT_S} s:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: the hardest stop, as a crash or an OOM kill would be."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client(self, token: str | None = None) -> httpx.Client:
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


def write_phantom(folder: Path, seed: int, *, size="tiny", n_lesions: int | None = 2) -> dict[str, Path]:
    """A phantom study's SUV, CTres and SEG files, by field name of the API."""
    out = make_study(seed, size=size, n_lesions=n_lesions).write(folder)
    return {"pet": out / "SUV.mha", "ct": out / "CTres.mha", "label": out / "SEG.mha"}


def files_of(paths: dict[str, Path]) -> dict:
    return {field: (path.name, path.read_bytes(), "application/octet-stream") for field, path in paths.items()}


def wait_for_job(client: httpx.Client, job_id: str, *, timeout_s: float = 120.0) -> dict:
    """The job once it is succeeded or failed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s")


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in
                  {"jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm"})


def write_mask(array: np.ndarray, path: Path, *, spacing=(2.0, 3.0, 4.0)) -> Path:
    geometry = Geometry(size=tuple(array.shape[::-1]), spacing=spacing, origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return write_image_atomic(image_from_array(array.astype(np.uint8), geometry), path)


def random_mask(rng: np.random.Generator, shape=(10, 12, 14), density=None) -> np.ndarray:
    density = rng.uniform(0.0, 0.3) if density is None else density
    return (rng.uniform(size=shape) < density).astype(np.uint8)


# 18-connectivity: faces and edges, not corners.
_STRUCTURE_18 = ndimage.generate_binary_structure(3, 2)


def reference_metrics(gt: np.ndarray, pred: np.ndarray, voxel_ml: float) -> dict:
    """Dice, FPV and FNV the slow, obvious way: one full-volume comparison per component (scipy labels)."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    dice = 2 * np.sum(gt & pred) / (gt.sum() + pred.sum()) if gt.any() else None

    def untouched(a, b):
        labels, n = ndimage.label(a, structure=_STRUCTURE_18)
        return sum(int(np.sum(labels == i)) for i in range(1, n + 1) if not np.any(b[labels == i]))

    return {"dice": dice, "false_positive_volume": untouched(pred, gt) * voxel_ml,
            "false_negative_volume": untouched(gt, pred) * voxel_ml if gt.any() else None}
