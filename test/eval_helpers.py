"""Shared helpers of the evaluation tests: masks on disk and submissions in grand-challenge's layout."""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petct.editions import CT_RELATIVE_PATH, EDITIONS, PET_RELATIVE_PATH
from petct.imageio import Geometry, image_from_array, write_image_atomic
from petct.phantom import make_study

OUTPUT_RELATIVE_PATH = EDITIONS["autopet-2022"].output_relative_path  # the submissions these tests build

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


def socket(name: str | None, slug: str, relative_path: str, kind: str = "Image", *, as_file: bool = False) -> dict:
    """One socket value as the platform writes it, with keys the evaluation must ignore.

    `as_file`: the image is null and the file is only named by a URL under `file` (the shape of a file socket).
    """
    image = {"pk": str(uuid.uuid4()), "name": name, "url": f"https://example.org/images/{name}"}
    return {"image": None if as_file else image, "value": None,
            "file": f"https://example.org/files/{name}" if as_file else None, "pk": 7,
            "interface": {"slug": slug, "kind": kind, "super_kind": "Image", "relative_path": relative_path,
                          "title": slug.title(), "description": "", "default_value": None}}


def job_item(*, pk: str, pet_name: str | None, ct_name: str | None, output_name: str = "out.mha",
             status: str = "Succeeded", output_relative_path: str = OUTPUT_RELATIVE_PATH,
             pet_relative_path: str = PET_RELATIVE_PATH, output_as_file: bool = False) -> dict:
    """One predictions.json item in the platform's full shape, with keys the evaluation must ignore.

    The CT input comes first and the slugs are not the relative paths' names: neither may matter.
    """
    inputs = []
    if ct_name:
        inputs.append(socket(ct_name, "ct-image-resampled", CT_RELATIVE_PATH))
    if pet_name:
        inputs.append(socket(pet_name, "whole-body-pet-image", pet_relative_path))
    outputs = [socket(output_name, output_relative_path.rsplit("/", 1)[-1], output_relative_path,
                      kind="Segmentation", as_file=output_as_file),
               {"image": None, "file": None, "value": False, "pk": 8,
                "interface": {"slug": "data-centric-model", "kind": "Boolean", "super_kind": "Value",
                              "relative_path": "data-centric-model.json"}}]
    return {
        "pk": pk, "url": f"https://example.org/jobs/{pk}/", "api_url": f"https://example.org/api/jobs/{pk}/",
        "status": status, "exec_duration": "00:01:02.5", "invoke_duration": None, "rendered_result_text": "",
        "algorithm_image": "https://example.org/api/algorithm-images/1/", "algorithm_interface": {"pk": 3},
        "inputs": inputs, "outputs": outputs,
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
                file_name: str = "out.mha", raw_bytes: bytes | None = None, **item_options) -> Path:
        """A job in predictions.json and, unless both mask and raw_bytes are None, its output file.

        `item_options` go to job_item (status, output_relative_path, pet_relative_path, output_as_file).
        """
        item = job_item(pk=pk, pet_name=pet_name, ct_name=ct_name, output_name=file_name, **item_options)
        self.items.append(item)
        relative_path = item_options.get("output_relative_path", OUTPUT_RELATIVE_PATH)
        path = self.input / pk / "output" / relative_path / file_name
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


def all_keys(value: object):
    """Every key of every object nested in a parsed JSON value."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from all_keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from all_keys(inner)


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


def linger_after_answering(marker: str) -> str:
    """Answer at once, but leave a thread that keeps the process alive for 5 s, then writes `marker`."""
    threading.Thread(target=lambda: (time.sleep(5), Path(marker).write_text("still alive"))).start()
    return "answered"
