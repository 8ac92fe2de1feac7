"""`python -m app dry-run --cases` on the public dataset's two-level layout, end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.dryrun.cases import folder_cases
from paths import REPO
from petct.errors import InputError
from petct.phantom import make_study
from petct.studykey import study_key

TINY = (24, 24, 16)
DATES = ("08-12-2001-NA-PET-CT Ganzkoerper  primaer mit KM-10445", "11-03-2002-NA-PET-CT Ganzkoerper-77031")


def dataset_layout(root: Path) -> list[str]:
    """PETCT_x/<date folder>/{SUV,CTres,SEG}: one patient with two studies; a patient folder with its files."""
    for seed, date in enumerate(DATES, start=3):
        study = make_study(seed, size=TINY, n_lesions=1, name=date)
        study.write(root / "PETCT_0af7ffe12a")
    make_study(5, size=TINY, n_lesions=0, name="PETCT_1b2c").write(root)
    return [study_key("PETCT_0af7ffe12a", date) for date in DATES] + ["PETCT_1b2c"]


def test_folder_cases_reads_two_levels(tmp_path):
    expected = dataset_layout(tmp_path)
    assert sorted(case.name for case in folder_cases(tmp_path)) == sorted(expected)


def test_two_folders_with_one_study_key_are_refused(tmp_path):
    make_study(3, size=TINY, n_lesions=1, name="A B").write(tmp_path)
    make_study(4, size=TINY, n_lesions=1, name="A_B").write(tmp_path)
    with pytest.raises(InputError, match="same study key A_B"):
        folder_cases(tmp_path)


def test_dry_run_on_the_dataset_layout(tmp_path):
    cases = tmp_path / "cases"
    expected = dataset_layout(cases)
    result = subprocess.run([sys.executable, "-m", "app", "dry-run", "--cases", str(cases), "--output",
                             str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "out" / "dry-run.json").read_text())
    assert sorted(s["study"] for s in report["studies"]) == sorted(expected)
    assert all(s["metrics"] is not None for s in report["studies"])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert sorted(metrics["case"]) == sorted(expected)
