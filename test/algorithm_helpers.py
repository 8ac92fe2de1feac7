"""Shared by the algorithm tests: phantom studies laid out as grand-challenge does, and running the CLI."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from paths import REPO
from petct.imageio import write_image_atomic
from petct.phantom import Study


@dataclass(frozen=True)
class PlatformInput:
    root: Path
    pet: Path
    ct: Path


def write_platform_input(folder: Path, study: Study, *, ct: sitk.Image | None = None) -> PlatformInput:
    """/input/images/pet/<uuid>.mha, /input/images/ct/<uuid>.mha and /input/inputs.json, as the platform writes."""
    # The platform names inputs by random uuids, a different one per socket; these are fixed per study.
    pet_path = folder / "images" / "pet" / f"{uuid.uuid5(uuid.NAMESPACE_URL, study.name + '/pet')}.mha"
    ct_path = folder / "images" / "ct" / f"{uuid.uuid5(uuid.NAMESPACE_URL, study.name + '/ct')}.mha"
    write_image_atomic(study.suv, pet_path)
    write_image_atomic(ct if ct is not None else study.ctres, ct_path)
    items = [_socket("pet-image", "images/pet", pet_path, f"{study.name}_SUV.mha"),
             _socket("ct-image", "images/ct", ct_path, f"{study.name}_CTres.mha")]
    (folder / "inputs.json").write_text(json.dumps(items))
    return PlatformInput(root=folder, pet=pet_path, ct=ct_path)


def _socket(slug: str, relative_path: str, path: Path, name: str) -> dict:
    return {"image": {"pk": path.stem, "name": name}, "value": None, "file": None,
            "interface": {"slug": slug, "kind": "Image", "super_kind": "Image", "relative_path": relative_path}}


def set_read_only(folder: Path, read_only: bool) -> None:
    """chmod a-w (or back to u+w) on a tree, as the platform mounts /input."""
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        os.chmod(path, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) if read_only else mode | stat.S_IWUSR)


def run_algorithm(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m algorithm ARGS` from the repository root, with no model in the default locations."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PETCT_KIT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "algorithm", *map(str, args)], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=300)


def output_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def tree_snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Name -> (size, mtime_ns) of everything under `folder`: to show a run changed nothing there."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}
