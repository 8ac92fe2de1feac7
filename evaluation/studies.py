"""Which study a file belongs to: the rule that pairs ground truth with predictions and jobs.

A study's name (its key) comes from file names:

- A mask file directly in a folder: its name without the image suffix and without a trailing
  `_SEG` (any case): `PETCT_0af7ffe12a_SEG.mha` and `PETCT_0af7ffe12a.nii.gz` are both
  `PETCT_0af7ffe12a`. Files whose name ends in an image suffix (`_SUV`, `_CTres`, `_PET`, `_CT`,
  spelled so) are images, not masks, and are skipped, so a folder in the dataset's flat layout works as is.
- A study folder (the layout petct.phantom writes): `<study>/SEG.mha` (or `.nii.gz`, ...) is `<study>`.
- An algorithm job's input (`image.name` of its PET, else its CT): the name without the image suffix,
  or that name without one trailing modality suffix (`_SUV`, `_CTres`, `_PET`, `_CT`, `_0000`,
  `_0001`). Both candidates are looked up; exactly one must name a ground-truth study.

Two mask files with one key make that study ambiguous: it is reported, never guessed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from petct.errors import InputError
from petct.layout import SEG_NAME, image_stem, is_image_file, list_images

MASK_SUFFIXES = ("_SEG",)
IMAGE_SUFFIXES = ("_SUV", "_CTres", "_PET", "_CT")
# nnU-Net channel suffixes appear on input images only; on a mask `_0001` may be part of the name.
INPUT_SUFFIXES = IMAGE_SUFFIXES + ("_0000", "_0001")


def _strip_suffix(stem: str, suffixes: tuple[str, ...], *, any_case: bool = True) -> str | None:
    """`stem` without the first of `suffixes` it ends with, or None if none; never empty."""
    fold = str.lower if any_case else str
    for suffix in suffixes:
        if fold(stem).endswith(fold(suffix)) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return None


def mask_key(path: Path) -> str:
    """The study name of a mask file (see the module docstring)."""
    stem = image_stem(path.name)
    if stem.upper() == SEG_NAME.upper():
        return path.parent.name
    return _strip_suffix(stem, MASK_SUFFIXES) or stem


def input_candidates(name: str) -> list[str]:
    """The study names an input image name may stand for, the full name first."""
    stem = image_stem(name)
    stripped = _strip_suffix(stem, INPUT_SUFFIXES)
    return [stem] if stripped is None else [stem, stripped]


@dataclass
class MaskIndex:
    """The mask files of a folder by study name; studies with more than one file are kept apart."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    duplicates: dict[str, list[Path]] = field(default_factory=dict)

    def __contains__(self, study: str) -> bool:
        return study in self.files or study in self.duplicates

    def studies(self) -> list[str]:
        return sorted(set(self.files) | set(self.duplicates))


def index_masks(folder: Path, *, what: str) -> MaskIndex:
    """Find the mask files of `folder` (flat files and `<study>/SEG.*`); InputError if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{what} folder does not exist or is not a folder", path=folder)
    found: dict[str, list[Path]] = {}
    for path in _mask_files(folder):
        found.setdefault(mask_key(path), []).append(path)
    if not found:
        raise InputError(f"{what} folder holds no mask files (.mha, .nii.gz, .nrrd, ... or <study>/SEG.*)",
                         path=folder)
    index = MaskIndex(folder=folder)
    for study, paths in found.items():
        if len(paths) == 1:
            index.files[study] = paths[0]
        else:
            index.duplicates[study] = sorted(paths)
    return index


def _mask_files(folder: Path) -> list[Path]:
    # Images are recognised by the dataset's spelling only: a study may well be called `..._pet`.
    files = [p for p in list_images(folder)
             if _strip_suffix(image_stem(p.name), IMAGE_SUFFIXES, any_case=False) is None]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files += [p for p in sub.iterdir() if is_image_file(p) and image_stem(p.name).upper() == SEG_NAME.upper()]
    return files
