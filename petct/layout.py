"""Grand-challenge folder layout and interface names (docs/grand-challenge.md)."""
from __future__ import annotations

from pathlib import Path

PET_RELATIVE_PATH = "images/pet"
CT_RELATIVE_PATH = "images/ct"
OUTPUT_SLUG = "automated-petct-lesion-segmentation"
OUTPUT_RELATIVE_PATH = f"images/{OUTPUT_SLUG}"

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


def image_stem(name: str) -> str:
    """File name without its image suffix: 'PETCT_1_SUV.nii.gz' -> 'PETCT_1_SUV'."""
    base = Path(name).name
    lower = base.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return base[: -len(suffix)]
    return base


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (hidden files and other suffixes ignored)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_file(p))
