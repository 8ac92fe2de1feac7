"""Grand-challenge folder layout and file names (docs/grand-challenge.md); each edition's sockets: petct.editions."""
from __future__ import annotations

from pathlib import Path

DEFAULT_INPUT = Path("/input")
DEFAULT_OUTPUT = Path("/output")
DEFAULT_MODEL = Path("/opt/ml/model")
DEFAULT_GROUND_TRUTH = Path("/opt/ml/input/data/ground_truth")

PREDICTIONS_JSON = "predictions.json"
INPUTS_JSON = "inputs.json"
METRICS_JSON = "metrics.json"

# File name suffixes the kit reads as images, longest first so ".nii.gz" wins over ".gz".
IMAGE_SUFFIXES = (".nii.gz", ".mha", ".mhd", ".nrrd", ".nii", ".tif", ".tiff")

# File names of one study in the converted TCIA FDG-PET-CT-Lesions dataset (docs/metrics.md, "Study keys").
SUV_NAME = "SUV"
CTRES_NAME = "CTres"
SEG_NAME = "SEG"
CT_NAME = "CT"


def image_suffix(name: str) -> str | None:
    """The image suffix of a file name, lower-case, matched in any case: 'S.MHA' -> '.mha'; None if none."""
    lower = Path(name).name.lower()
    return next((suffix for suffix in IMAGE_SUFFIXES if lower.endswith(suffix)), None)


def image_stem(name: str) -> str:
    """File name without its image suffix (matched in any case): 'PETCT_1_SUV.nii.gz' -> 'PETCT_1_SUV'."""
    base = Path(name).name
    suffix = image_suffix(base)
    return base[: -len(suffix)] if suffix else base


def is_image_file(path: Path) -> bool:
    return path.is_file() and image_suffix(path.name) is not None and not path.name.startswith(".")


def find_image(folder: Path, stem: str) -> list[Path]:
    """Images in `folder` named `stem` plus an image suffix in any case ('SUV.mha', 'SUV.MHA', 'SUV.nii.gz')."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_file(p) and image_stem(p.name) == stem)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (hidden files and other suffixes ignored)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_file(p))
