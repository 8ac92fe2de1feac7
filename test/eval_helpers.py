"""Shared helpers of the evaluation tests: masks on disk and submissions in grand-challenge's layout."""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petct.imageio import Geometry, image_from_array, write_image_atomic
from petct.layout import CT_RELATIVE_PATH, OUTPUT_RELATIVE_PATH, OUTPUT_SLUG, PET_RELATIVE_PATH
from petct.phantom import make_study

UNIT_GEOMETRY = Geometry(size=(10, 10, 10), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                         direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def geometry_of(shape_zyx: tuple[int, int, int], spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                direction=UNIT_GEOMETRY.direction) -> Geometry:
    return Geometry(size=tuple(shape_zyx[::-1]), spacing=tuple(spacing), origin=tuple(origin),
                    direction=tuple(direction))


def write_mask(path: Path, array: np.ndarray, geometry: Geometry | None = None) -> Path:
    """Write a (z, y, x) array as an image with the given geometry (unit spacing by default)."""
    geometry = geometry or geometry_of(array.shape)
    return write_image_atomic(image_from_array(array, geometry), path)


def job_item(*, pk: str, pet_name: str | None, ct_name: str | None, output_name: str = "out.mha") -> dict:
    """One predictions.json item in the platform's full shape, with keys the evaluation must ignore."""
    def socket(name, slug, relative_path, kind="Image"):
        return {"image": {"pk": str(uuid.uuid4()), "name": name, "url": f"https://example.org/images/{name}"},
                "value": None, "file": None, "pk": 7,
                "interface": {"slug": slug, "kind": kind, "super_kind": "Image", "relative_path": relative_path,
                              "title": slug.title(), "description": "", "default_value": None}}
    inputs = []
    if pet_name:
        inputs.append(socket(pet_name, "whole-body-pet-image", PET_RELATIVE_PATH))
    if ct_name:
        inputs.append(socket(ct_name, "ct-image-resampled", CT_RELATIVE_PATH))
    return {
        "pk": pk, "url": f"https://example.org/jobs/{pk}/", "api_url": f"https://example.org/api/jobs/{pk}/",
        "status": "Succeeded", "exec_duration": "00:01:02.5", "invoke_duration": None, "rendered_result_text": "",
        "algorithm_image": "https://example.org/api/algorithm-images/1/", "algorithm_interface": {"pk": 3},
        "inputs": inputs,
        "outputs": [socket(output_name, OUTPUT_SLUG, OUTPUT_RELATIVE_PATH, kind="Segmentation")],
        "started_at": "2026-11-27T10:00:00Z", "completed_at": "2026-11-27T10:01:02Z",
    }


class Submission:
    """A ground-truth folder and a grand-challenge input folder being built up by a test."""

    def __init__(self, root: Path):
        self.root = root
        self.input = root / "input"
        self.ground_truth = root / "ground_truth"
        self.output = root / "output"
        self.items: list[dict] = []
        self.input.mkdir(parents=True)
        self.ground_truth.mkdir(parents=True)

    def add_phantom_study(self, seed: int, *, n_lesions: int | None = None) -> tuple[str, np.ndarray, Geometry]:
        """A tiny phantom study's mask as ground truth in the phantom layout <study>/SEG.mha."""
        study = make_study(seed, n_lesions=n_lesions)
        study.write(self.ground_truth)
        return study.name, sitk.GetArrayFromImage(study.seg), Geometry.of(study.seg)

    def add_job(self, *, pk: str, pet_name: str | None, ct_name: str | None = None,
                mask: np.ndarray | None = None, geometry: Geometry | None = None,
                file_name: str = "out.mha", raw_bytes: bytes | None = None) -> Path:
        """A job in predictions.json and, unless both mask and raw_bytes are None, its output file."""
        self.items.append(job_item(pk=pk, pet_name=pet_name, ct_name=ct_name, output_name=file_name))
        path = self.input / pk / "output" / OUTPUT_RELATIVE_PATH / file_name
        if raw_bytes is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(raw_bytes)
        elif mask is not None:
            write_mask(path, mask, geometry)
        return path

    def write_predictions_json(self, content: object | None = None) -> Path:
        path = self.input / "predictions.json"
        path.write_text(json.dumps(self.items if content is None else content, indent=1))
        return path

    def argv(self, *extra: str) -> list[str]:
        return ["--input", str(self.input), "--ground-truth", str(self.ground_truth),
                "--output", str(self.output), "--workers", "2", *extra]

    def metrics(self) -> dict:
        return json.loads((self.output / "metrics.json").read_text())


# Work functions for the process-isolation tests (module level so child processes can import them).

def crash_on_three(item: int) -> int:
    if item == 3:
        os._exit(7)
    return item * 10


def kill_on_two(item: int) -> int:
    if item == 2:
        os.kill(os.getpid(), 9)
    return item * 10


def raise_on_one(item: int) -> int:
    if item == 1:
        raise RuntimeError("boom")
    return item * 10


def hang_on_zero(item: int) -> int:
    if item == 0:
        time.sleep(60)
    return item * 10
