"""Which study a file belongs to: the rule that pairs ground truth with predictions and jobs.

A study's name (its key) comes from file and folder names:

- A mask file directly in a folder: its name without the image suffix and without a trailing
  `_SEG` (any case): `PETCT_0af7ffe12a_SEG.mha` and `PETCT_0af7ffe12a.nii.gz` are both
  `PETCT_0af7ffe12a`. Files whose name ends in an image suffix (`_SUV`, `_CTres`, `_PET`, `_CT`,
  spelled so) are images, not masks, and are skipped, so a folder in the dataset's flat layout works as is.
- A study folder (the layout petct.phantom writes): `<study>/SEG.mha` (or `.nii.gz`, ...) is `<study>`.
- The public dataset's converted layout, two levels deep: `<patient>/<study folder>/SEG.nii.gz` is
  `petct.studykey.study_key(patient, study folder)`, i.e. `<patient>__<study folder>` made safe, so the
  several studies of one patient stay apart.
- nnU-Net's raw layout (petct.nnunet_raw), as the PSMA and FDG–PSMA releases ship: a folder holding
  `imagesTr/` and `labelsTr/` is read as its labels folder, `labelsTr/<case>.nii.gz` being `<case>`.
- Predictions named another way (the 2024 data-centric baseline writes `<case>/PRED.nii.gz` or
  `<case>_pred.nii.gz`) are read with a `MaskNaming` for that suffix: `_pred` or `/PRED`.
- An algorithm job's input (`image.name` of its PET, else its CT): the name without the image suffix,
  or that name without one trailing modality suffix (`_SUV`, `_CTres`, `_PET`, `_CT`, `_0000`,
  `_0001`). Both candidates are looked up, as written and then made safe (`safe_key`); exactly one
  must name a ground-truth study.

Two mask files with one key make that study ambiguous: it is reported, never guessed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from petct.errors import InputError
from petct.layout import IMAGE_SUFFIXES as FILE_SUFFIXES
from petct.layout import SEG_NAME, image_stem, is_image_file, list_images
from petct.nnunet_raw import raw_folders
from petct.studykey import safe_key, study_folders

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


@dataclass(frozen=True)
class MaskNaming:
    """How mask files are named around their study: the default rule, or one suffix (`_pred`, `/PRED`).

    `suffix` is what follows the study name in the file's path, before the image extension: `_pred` reads
    `<study>_pred.nii.gz`, `/PRED` reads `<study>/PRED.nii.gz` and `<patient>/<study>/PRED.nii.gz`.
    None is the default rule of the module docstring (flat `<study>[_SEG].*`, `<study>/SEG.*`, two levels).
    """

    suffix: str | None = None

    def __post_init__(self):
        if self.suffix is not None:
            name = self.suffix[1:] if self.suffix.startswith("/") else self.suffix
            if not name or "/" in name or name.lower().endswith(FILE_SUFFIXES):
                raise InputError(f"prediction suffix {self.suffix!r}: give what follows the study name without the "
                                 "image extension, e.g. '_pred' for <study>_pred.nii.gz or '/PRED' for <study>/PRED.nii.gz")

    @property
    def folder_file(self) -> str | None:
        """The file name (without extension) in each study folder; None when masks are flat files only."""
        if self.suffix is None:
            return SEG_NAME
        return self.suffix[1:] if self.suffix.startswith("/") else None

    def flat_key(self, path: Path) -> str | None:
        """The study of a mask file lying directly in the indexed folder, or None when it is not a mask."""
        stem = image_stem(path.name)
        if self.suffix is None:
            # Images are recognised by the dataset's spelling only: a study may well be called `..._pet`.
            if _strip_suffix(stem, IMAGE_SUFFIXES, any_case=False) is not None:
                return None
            return _strip_suffix(stem, MASK_SUFFIXES) or stem
        if self.suffix.startswith("/"):
            return None
        return _strip_suffix(stem, (self.suffix,))


DEFAULT_NAMING = MaskNaming()


def mask_key(path: Path) -> str:
    """The study name of one mask file seen alone (`score-pair`): flat name or its folder's name."""
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
    _by_safe_key: dict[str, list[str]] | None = field(default=None, repr=False, compare=False)

    def __contains__(self, study: str) -> bool:
        return study in self.files or study in self.duplicates

    def studies(self) -> list[str]:
        return sorted(set(self.files) | set(self.duplicates))

    def by_safe_key(self) -> dict[str, list[str]]:
        """The studies by petct.studykey.safe_key of their names (built once, on first use)."""
        if self._by_safe_key is None:
            self._by_safe_key = {}
            for study in self.studies():
                self._by_safe_key.setdefault(safe_key(study), []).append(study)
        return self._by_safe_key

    def near_matches(self, study: str) -> list[str]:
        """Studies whose names are close to `study` (for "did you mean ...?" hints)."""
        import difflib  # only a failed match needs it
        return difflib.get_close_matches(study, self.studies(), n=3, cutoff=0.75)


def did_you_mean(study: str, index: MaskIndex) -> str:
    """"; did you mean X?" naming the closest studies of `index`, or "" when none is close."""
    close = index.near_matches(study)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def index_masks(folder: Path, *, what: str, naming: MaskNaming = DEFAULT_NAMING) -> MaskIndex:
    """Find the mask files of `folder` (flat files, `<study>/SEG.*`, `<patient>/<study>/SEG.*`); InputError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{what} folder does not exist or is not a folder", path=folder)
    raw = raw_folders(folder) if naming.suffix is None else None
    if raw is not None:  # nnU-Net's raw layout: its labels are the masks, its images are no masks at all
        folder = raw.labels
    found: dict[str, list[Path]] = {}
    for study, path in _mask_files(folder, naming):
        found.setdefault(study, []).append(path)
    if not found:
        raise InputError(f"{what} folder holds no mask files ({_expected(naming)})", path=folder)
    index = MaskIndex(folder=folder)
    for study, paths in found.items():
        if len(paths) == 1:
            index.files[study] = paths[0]
        else:
            index.duplicates[study] = sorted(paths)
    return index


def _expected(naming: MaskNaming) -> str:
    if naming.suffix is None:
        return ".mha, .nii.gz, .nrrd, ... files, <study>/SEG.* or <patient>/<study>/SEG.*"
    if naming.folder_file is None:
        return f"<study>{naming.suffix}.mha, .nii.gz, ..."
    return f"<study>/{naming.folder_file}.* or <patient>/<study>/{naming.folder_file}.*"


def _mask_files(folder: Path, naming: MaskNaming) -> list[tuple[str, Path]]:
    """(study, file) for every mask of `folder`, flat files first, then one and two folder levels."""
    files = [(key, p) for p in list_images(folder) if (key := naming.flat_key(p)) is not None]
    name = naming.folder_file
    if name is None:
        return files
    for entry in study_folders(folder):
        files += [(entry.name, p) for p in _named_images(entry.path, name)]
    return files


def _named_images(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if is_image_file(p) and image_stem(p.name).upper() == name.upper()]
