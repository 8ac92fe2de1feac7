"""Deterministic whole-body-like PET/CT phantom studies, one folder per study with the dataset's file names.

Each study has SUV (float32), CTres (CT on the PET grid, float32), SEG (uint8 0/1) and optionally CT
on a finer grid of its own. The anatomy is a set of ellipsoids and cylinders placed in fractions of
the field of view, so any size covers the same body: legs, torso, neck, head with brain and skull,
lungs, heart, liver, spleen, kidneys, bladder and spine. Physiological uptake that fools a plain SUV
threshold is there on purpose (brain, heart, kidneys, very hot bladder). Lesions of 3–40 mm with
peak SUV 3–20 sit in the lungs, the liver and lymph-node regions; their uptake falls to half the peak at
the labelled edge and spills a partial-volume halo beyond it. Negative studies have none.

Command line: ``python -m petct.phantom OUT_DIR --count N --size tiny|small|full``.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petct.argtypes import whole_number
from petct.imageio import Geometry, image_from_array, write_image_atomic
from petct.layout import CT_NAME, CTRES_NAME, SEG_NAME, SUV_NAME

# Field of view of the full-size study: 400 x 400 x 326 voxels at 2.036 x 2.036 x 3 mm (x, y, z).
FULL_SIZE = (400, 400, 326)
FULL_SPACING = (2.0364201068878174, 2.0364201068878174, 3.0)
FOV_MM = tuple(n * s for n, s in zip(FULL_SIZE, FULL_SPACING))
SIZES = {"tiny": (64, 64, 48), "small": (128, 128, 96), "full": FULL_SIZE}

# A slight rotation about z (and a non-zero origin) so that code dropping geometry is caught.
_ANGLE = math.radians(2.0)
DIRECTION = (math.cos(_ANGLE), -math.sin(_ANGLE), 0.0, math.sin(_ANGLE), math.cos(_ANGLE), 0.0, 0.0, 0.0, 1.0)
ORIGIN = (-407.3, -245.8, -1532.0)

AIR_HU = -1000.0
LESION_HALO = 1.5  # radii out to which a lesion's uptake spills over its labelled edge (partial volume)


@dataclass(frozen=True)
class Lesion:
    region: str
    center_mm: tuple[float, float, float]  # (x, y, z) in image-axis millimetres from voxel 0
    diameter_mm: float
    suv: float


@dataclass
class Study:
    """One phantom study as SimpleITK images, plus what was placed in it."""

    name: str
    suv: sitk.Image
    ctres: sitk.Image
    seg: sitk.Image
    ct: sitk.Image | None = None
    lesions: list[Lesion] = field(default_factory=list)

    def write(self, folder: str | Path, *, compress: bool = True) -> Path:
        """Write `<folder>/<name>/{SUV,CTres,SEG[,CT]}.mha` and return the study folder."""
        out = Path(folder) / self.name
        write_image_atomic(self.suv, out / f"{SUV_NAME}.mha", compress=compress)
        write_image_atomic(self.ctres, out / f"{CTRES_NAME}.mha", compress=compress)
        write_image_atomic(self.seg, out / f"{SEG_NAME}.mha", compress=True)
        if self.ct is not None:
            write_image_atomic(self.ct, out / f"{CT_NAME}.mha", compress=compress)
        return out


def grid(size: tuple[int, int, int]) -> Geometry:
    """The PET grid of a study of `size` voxels (x, y, z) covering the full-size field of view."""
    spacing = tuple(fov / n for fov, n in zip(FOV_MM, size))
    return Geometry(size=tuple(size), spacing=spacing, origin=ORIGIN, direction=DIRECTION)


class _Canvas:
    """Paints shapes given in fractions of the field of view into (z, y, x) arrays."""

    def __init__(self, geometry: Geometry):
        self.geometry = geometry
        nx, ny, nz = geometry.size
        sx, sy, sz = geometry.spacing
        # Voxel-centre coordinates in mm along each image axis.
        self.x = (np.arange(nx, dtype=np.float32) + 0.5) * sx
        self.y = (np.arange(ny, dtype=np.float32) + 0.5) * sy
        self.z = (np.arange(nz, dtype=np.float32) + 0.5) * sz

    def ellipsoid(self, center_mm, radii_mm) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """The bounding box (z, y, x slices) and the boolean mask inside it of an ellipsoid."""
        axes = (self.z, self.y, self.x)
        c = (center_mm[2], center_mm[1], center_mm[0])
        r = (radii_mm[2], radii_mm[1], radii_mm[0])
        box, terms = [], []
        for coords, ci, ri in zip(axes, c, r):
            lo = int(np.searchsorted(coords, ci - ri, side="left"))
            hi = int(np.searchsorted(coords, ci + ri, side="right"))
            box.append(slice(lo, max(lo, hi)))
            terms.append(((coords[lo:hi] - ci) / ri) ** 2)
        inside = terms[0][:, None, None] + terms[1][None, :, None] + terms[2][None, None, :] <= 1.0
        return tuple(box), inside

    def radial(self, center_mm, radius_mm: float, *, extent: float) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """The box out to `extent` radii around a point, and each voxel's distance from it in radii."""
        axes = (self.z, self.y, self.x)
        c = (center_mm[2], center_mm[1], center_mm[0])
        box, terms = [], []
        for coords, ci in zip(axes, c):
            lo = int(np.searchsorted(coords, ci - extent * radius_mm, side="left"))
            hi = int(np.searchsorted(coords, ci + extent * radius_mm, side="right"))
            box.append(slice(lo, max(lo, hi)))
            terms.append(((coords[lo:hi] - ci) / radius_mm) ** 2)
        distance = np.sqrt(terms[0][:, None, None] + terms[1][None, :, None] + terms[2][None, None, :])
        return tuple(box), distance

    def voxel_at(self, center_mm) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """The one voxel holding a point, in the same (box, mask) form as ellipsoid()."""
        sx, sy, sz = self.geometry.spacing
        nx, ny, nz = self.geometry.size
        index = [min(max(int(c // s), 0), n - 1) for c, s, n in
                 zip((center_mm[2], center_mm[1], center_mm[0]), (sz, sy, sx), (nz, ny, nx))]
        return tuple(slice(i, i + 1) for i in index), np.ones((1, 1, 1), dtype=bool)

    def cylinder(self, center_xy_mm, radii_xy_mm, z_range_mm) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """An elliptic cylinder along z."""
        zc = 0.5 * (z_range_mm[0] + z_range_mm[1])
        half = 0.5 * (z_range_mm[1] - z_range_mm[0])
        box, _ = self.ellipsoid((center_xy_mm[0], center_xy_mm[1], zc), (radii_xy_mm[0], radii_xy_mm[1], half))
        zs, ys, xs = box
        tx = ((self.x[xs] - center_xy_mm[0]) / radii_xy_mm[0]) ** 2
        ty = ((self.y[ys] - center_xy_mm[1]) / radii_xy_mm[1]) ** 2
        inside2d = ty[:, None] + tx[None, :] <= 1.0
        inside = np.broadcast_to(inside2d, (zs.stop - zs.start,) + inside2d.shape)
        return box, inside


def _mm(fx: float, fy: float, fz: float) -> tuple[float, float, float]:
    return (fx * FOV_MM[0], fy * FOV_MM[1], fz * FOV_MM[2])


def _r(rx: float, ry: float, rz: float) -> tuple[float, float, float]:
    """Radii: in-plane as fractions of the x field of view, axial as fractions of the z one."""
    return (rx * FOV_MM[0], ry * FOV_MM[0], rz * FOV_MM[2])


# Organs: (name, kind, centre fractions, radii fractions, CT HU, SUV range). Painted in this order.
_BODY = [
    ("leg_r", "cyl", (0.42, 0.5), (0.06, 0.06), (0.0, 0.22), 40.0, (0.5, 0.8)),
    ("leg_l", "cyl", (0.58, 0.5), (0.06, 0.06), (0.0, 0.22), 40.0, (0.5, 0.8)),
    ("torso", "cyl", (0.5, 0.5), (0.19, 0.12), (0.2, 0.79), 40.0, (0.7, 1.0)),
    ("neck", "cyl", (0.5, 0.52), (0.05, 0.05), (0.78, 0.85), 40.0, (0.8, 1.1)),
]
_ORGANS = [
    ("head", (0.5, 0.5, 0.915), (0.08, 0.1, 0.075), 1000.0, (0.8, 1.0)),  # skull shell: brain paints over it
    ("brain", (0.5, 0.5, 0.918), (0.07, 0.09, 0.065), 35.0, (7.0, 12.0)),
    ("lung_r", (0.41, 0.5, 0.66), (0.065, 0.085, 0.1), -820.0, (0.3, 0.5)),
    ("lung_l", (0.59, 0.5, 0.66), (0.065, 0.085, 0.1), -820.0, (0.3, 0.5)),
    ("heart", (0.53, 0.45, 0.62), (0.045, 0.045, 0.04), 40.0, (2.0, 9.0)),
    ("liver", (0.42, 0.5, 0.52), (0.09, 0.08, 0.055), 60.0, (1.8, 2.6)),
    ("spleen", (0.62, 0.56, 0.54), (0.03, 0.04, 0.035), 50.0, (1.6, 2.2)),
    ("kidney_r", (0.43, 0.6, 0.46), (0.025, 0.03, 0.04), 30.0, (3.5, 9.0)),
    ("kidney_l", (0.57, 0.6, 0.46), (0.025, 0.03, 0.04), 30.0, (3.5, 9.0)),
    ("bladder", (0.5, 0.44, 0.25), (0.04, 0.035, 0.03), 10.0, (15.0, 60.0)),
]
_SPINE = ((0.5, 0.62), (0.02, 0.02), (0.2, 0.86), 700.0, (1.2, 1.8))

# Where lesions go: organ ellipsoids (placed inside them) and lymph-node stations (small boxes).
LYMPH_NODE_STATIONS = {
    "cervical_r": (0.46, 0.52, 0.81), "cervical_l": (0.54, 0.52, 0.81),
    "axillary_r": (0.34, 0.5, 0.72), "axillary_l": (0.66, 0.5, 0.72),
    "mediastinal": (0.5, 0.47, 0.66), "para_aortic": (0.5, 0.56, 0.44),
    "iliac_r": (0.44, 0.52, 0.32), "iliac_l": (0.56, 0.52, 0.32),
    "inguinal_r": (0.42, 0.48, 0.22), "inguinal_l": (0.58, 0.48, 0.22),
}
LESION_ORGANS = ("lung_r", "lung_l", "liver")


def _place_lesions(rng: np.random.Generator, count: int, min_diameter_mm: float) -> list[Lesion]:
    organs = {name: (center, radii) for name, center, radii, *_ in _ORGANS}
    lesions = []
    for _ in range(count):
        region = rng.choice(list(LESION_ORGANS) + list(LYMPH_NODE_STATIONS))
        # Small lesions are more common than big ones, as in the data.
        low, high = max(3.0, min_diameter_mm), max(40.0, 1.5 * min_diameter_mm)
        diameter = float(low * np.exp(rng.uniform(0, math.log(high / low))))
        if region in organs:
            center, radii = organs[region]
            # A point well inside the organ: uniform in an ellipsoid of half its radii.
            u = rng.normal(size=3)
            u = u / np.linalg.norm(u) * rng.uniform(0, 1) ** (1 / 3) * 0.5
            c = np.array(_mm(*center)) + u * np.array(_r(*radii))
        else:
            c = np.array(_mm(*LYMPH_NODE_STATIONS[region])) + rng.uniform(-15, 15, size=3)
        lesions.append(Lesion(region=str(region), center_mm=tuple(float(v) for v in c),
                              diameter_mm=diameter, suv=float(rng.uniform(3.0, 20.0))))
    return lesions


def _render(geometry: Geometry, rng_values: dict, lesions: list[Lesion], *, noise_seed: int | None,
            with_pet: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """CT (HU), SUV and lesion mask on `geometry`; organ values come from `rng_values`."""
    canvas = _Canvas(geometry)
    nx, ny, nz = geometry.size
    ct = np.full((nz, ny, nx), AIR_HU, dtype=np.float32)
    suv = np.zeros((nz, ny, nx), dtype=np.float32) if with_pet else None
    seg = np.zeros((nz, ny, nx), dtype=np.uint8)

    def paint(box, inside, hu, uptake):
        ct[box][inside] = hu
        if suv is not None:
            suv[box][inside] = uptake

    for name, _, center, radii, zr, hu, _ in _BODY:
        box, inside = canvas.cylinder(_mm(center[0], center[1], 0)[:2], _r(radii[0], radii[1], 0)[:2],
                                      (zr[0] * FOV_MM[2], zr[1] * FOV_MM[2]))
        paint(box, inside, hu, rng_values[name])
    center, radii, zr, hu, _ = _SPINE
    box, inside = canvas.cylinder(_mm(center[0], center[1], 0)[:2], _r(radii[0], radii[1], 0)[:2],
                                  (zr[0] * FOV_MM[2], zr[1] * FOV_MM[2]))
    paint(box, inside, hu, rng_values["spine"])
    for name, center, radii, hu, _ in _ORGANS:
        box, inside = canvas.ellipsoid(_mm(*center), _r(*radii))
        paint(box, inside, hu, rng_values[name])
    for lesion in lesions:
        r = lesion.diameter_mm / 2
        box, inside = canvas.ellipsoid(lesion.center_mm, (r, r, r))
        if not inside.any():  # smaller than the voxel spacing and between voxel centres: keep one voxel
            box, inside = canvas.voxel_at(lesion.center_mm)
        seg[box][inside] = 1
        ct[box][inside] = 45.0
        if suv is not None:
            # Uptake peaks in the centre and falls to half at the labelled edge, with a partial-volume halo fading
            # over another half radius outside it, as on real PET: a threshold finds neither the edge exactly
            # nor for free. Lesions sit on top of the background, never below it.
            halo_box, distance = canvas.radial(lesion.center_mm, r, extent=LESION_HALO)
            profile = np.where(distance <= 1.0, 1.0 - 0.5 * distance ** 2,
                               0.5 * (LESION_HALO - distance) / (LESION_HALO - 1.0))
            suv[halo_box] = np.maximum(suv[halo_box], lesion.suv * np.clip(profile, 0.0, None).astype(np.float32))
            suv[box][inside] = np.maximum(suv[box][inside], 0.5 * lesion.suv)

    if noise_seed is not None:
        noise = np.random.default_rng(noise_seed)
        body = ct > -950
        ct += noise.normal(0.0, 8.0, size=ct.shape).astype(np.float32)
        if suv is not None:
            # Poisson-like: relative noise, stronger where uptake is low.
            rel = noise.normal(0.0, 1.0, size=suv.shape).astype(np.float32)
            suv *= 1.0 + 0.08 * rel
            np.maximum(suv, 0.0, out=suv)
            suv[~body] = 0.0
    return ct, suv, seg


def make_study(seed: int, *, size: tuple[int, int, int] | str = "tiny", n_lesions: int | None = None,
               with_ct: bool = False, name: str | None = None) -> Study:
    """A deterministic phantom study: the same `seed` and arguments give identical images.

    `n_lesions=None` draws 0 (a negative study) or 1–8 lesions from the seed; `with_ct` adds CT.mha
    on a grid twice as fine in-plane.
    """
    if isinstance(size, str):
        size = SIZES[size]
    rng = np.random.default_rng(seed)
    values = {name: float(rng.uniform(*suv_range)) for name, _, _, _, _, _, suv_range in _BODY}
    values.update({name: float(rng.uniform(*suv_range)) for name, _, _, _, suv_range in _ORGANS})
    values["spine"] = float(rng.uniform(*_SPINE[-1]))
    if n_lesions is None:
        n_lesions = 0 if rng.uniform() < 0.4 else int(rng.integers(1, 9))
    geometry = grid(size)
    # At least about a voxel across, or a lesion vanishes on a coarse test grid.
    min_diameter = 1.2 * max(geometry.spacing)
    lesions = _place_lesions(rng, n_lesions, min_diameter)
    ctres, suv, seg = _render(geometry, values, lesions, noise_seed=seed + 1, with_pet=True)
    study = Study(
        name=name or f"PETCT_{seed:04d}",
        suv=image_from_array(suv, geometry),
        ctres=image_from_array(ctres, geometry),
        seg=image_from_array(seg, geometry),
        lesions=lesions,
    )
    if with_ct:
        fine = Geometry(size=(size[0] * 2, size[1] * 2, size[2]),
                        spacing=(geometry.spacing[0] / 2, geometry.spacing[1] / 2, geometry.spacing[2]),
                        origin=geometry.origin, direction=geometry.direction)
        ct, _, _ = _render(fine, values, lesions, noise_seed=seed + 2, with_pet=False)
        study.ct = image_from_array(np.clip(ct, -1024, 3071).astype(np.int16), fine)
    return study


def write_studies(folder: str | Path, *, count: int, size: tuple[int, int, int] | str = "tiny",
                  first_seed: int = 0, with_ct: bool = False) -> list[Path]:
    """Write `count` studies (seeds first_seed, first_seed+1, ...) as `<folder>/PETCT_<seed>/`."""
    return [make_study(seed, size=size, with_ct=with_ct).write(folder)
            for seed in range(first_seed, first_seed + count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m petct.phantom", description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="folder to write <name>/{SUV,CTres,SEG}.mha into")
    parser.add_argument("--count", type=whole_number(1), default=4, help="studies to write (default: %(default)s)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--first-seed", type=whole_number(0), default=0, help="seed of the first study")
    parser.add_argument("--with-ct", action="store_true", help="also write CT.mha on a finer grid")
    args = parser.parse_args(argv)
    try:
        paths = write_studies(args.output, count=args.count, size=args.size, first_seed=args.first_seed,
                              with_ct=args.with_ct)
    except OSError as exc:
        print(f"error: file {exc.filename or args.output}: cannot write the studies: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
