"""nnU-Net's raw layout, in which the organisers release the PSMA and FDG–PSMA NIfTI data (and their loop reads it).

`<images>/<case>_0000.*` is the CT, `<images>/<case>_0001.*` the PET (SUV), `<labels>/<case>.*` the label,
with `<images>`/`<labels>` one of imagesTr/labelsTr, imagesTs/labelsTs, images/labels (the first present).
Case names are `<tracer>_<hash>_<date>` (`psma_...`, `fdg_...`): the tracer is read from the name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from petct.errors import InputError
from petct.layout import find_image, image_stem, list_images

RAW_LAYOUTS = (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs"), ("images", "labels"))
CT_CHANNEL, PET_CHANNEL = "_0000", "_0001"
TRACERS = {"fdg": "FDG", "psma": "PSMA"}  # case-name prefix -> tracer as the organisers' subsets name it


@dataclass(frozen=True)
class RawFolders:
    """Where one raw dataset keeps its images and labels."""

    images: Path
    labels: Path

    def case_files(self, case: str) -> RawCase | None:
        """One case's CT, PET and label (any of them None when absent); None when the case has none of them."""
        ct, pet, label = (_one(self.images, case + CT_CHANNEL), _one(self.images, case + PET_CHANNEL),
                          _one(self.labels, case))
        return None if ct is pet is label is None else RawCase(name=case, ct=ct, pet=pet, label=label)


@dataclass(frozen=True)
class RawCase:
    name: str
    ct: Path | None
    pet: Path | None
    label: Path | None


def raw_folders(folder: Path) -> RawFolders | None:
    """The images and labels folders of `folder` when it is in nnU-Net's raw layout, else None."""
    folder = Path(folder)
    return next((RawFolders(images=folder / images, labels=folder / labels) for images, labels in RAW_LAYOUTS
                 if (folder / images).is_dir() and (folder / labels).is_dir()), None)


def raw_cases(folder: Path) -> list[RawCase] | None:
    """Every case of `folder` with its CT, PET and label; None when `folder` is not in the raw layout.

    InputError naming the folder and each case missing a file, or when there is no case at all.
    """
    layout = raw_folders(folder)
    if layout is None:
        return None
    channels: dict[str, dict[str, Path]] = {}
    for path in list_images(layout.images):
        stem = image_stem(path.name)
        channel = stem[-len(CT_CHANNEL):]
        if channel in (CT_CHANNEL, PET_CHANNEL) and len(stem) > len(channel):
            channels.setdefault(stem[:-len(channel)], {})[channel] = path
    labels = {image_stem(p.name): p for p in list_images(layout.labels)}
    cases, incomplete = [], []
    for name in sorted(set(channels) | set(labels)):
        case = RawCase(name=name, ct=channels.get(name, {}).get(CT_CHANNEL),
                       pet=channels.get(name, {}).get(PET_CHANNEL), label=labels.get(name))
        missing = [what for what, path in ((f"{layout.images.name}/{name}{CT_CHANNEL}", case.ct),
                                           (f"{layout.images.name}/{name}{PET_CHANNEL}", case.pet),
                                           (f"{layout.labels.name}/{name}", case.label)) if path is None]
        if missing:
            incomplete.append(f"{name} (missing {', '.join(missing)})")
        else:
            cases.append(case)
    if incomplete:
        raise InputError(f"incomplete case(s) in nnU-Net's layout: {'; '.join(incomplete)}", path=folder)
    if not cases:
        raise InputError(f"no cases in {layout.images.name}/ and {layout.labels.name}/ (<case>{CT_CHANNEL} CT, "
                         f"<case>{PET_CHANNEL} PET, {layout.labels.name}/<case>)", path=folder)
    return cases


def tracer_of(case: str) -> str | None:
    """The tracer a case's name starts with (`psma_...` -> PSMA, `fdg_...` -> FDG, any case); None otherwise."""
    prefix, separator, _ = case.partition("_")
    return TRACERS.get(prefix.lower()) if separator else None


def _one(folder: Path, stem: str) -> Path | None:
    hits = find_image(folder, stem)
    if len(hits) > 1:
        raise InputError(f"more than one {stem} image: {', '.join(p.name for p in hits)}", path=folder)
    return hits[0] if hits else None
