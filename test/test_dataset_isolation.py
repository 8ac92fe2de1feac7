"""The shared package and the three containers never import the dataset tool's dependencies."""
from __future__ import annotations

import subprocess
import sys

DATASET_ONLY = ("pydicom", "highdicom", "h5py", "dask", "distributed")


def test_containers_and_shared_package_do_not_import_dicom_or_dask():
    code = ("import sys, pkgutil, importlib, petct\n"
            "for m in pkgutil.iter_modules(petct.__path__): importlib.import_module('petct.' + m.name)\n"
            "import algorithm.__main__, evaluation.__main__, app.__main__\n"
            f"print(sorted(m for m in {DATASET_ONLY!r} if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_keep_segments_only_with_the_tcia_layout(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dataset", "convert", str(tmp_path), str(tmp_path / "o"),
                          "--layout", "nnunet", "--keep-segments"], capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("error: --keep-segments goes with --layout tcia")


def test_real_data_commands_do_not_import_the_synthetic_studies():
    """DICOM-SEG export, conversion, SUV and statistics work on real data: the synthetic-data module stays out."""
    code = ("import sys\n"
            "import dataset.toseg, dataset.run, dataset.suv, dataset.stats\n"
            "print('dataset.synth' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
