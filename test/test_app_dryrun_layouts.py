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


def _reference_lesions(path: Path) -> int:
    """Connected components of the mask with scipy (18-connectivity, as the metrics count them)."""
    from scipy import ndimage

    from petct.imageio import read_array

    return ndimage.label(read_array(path)[0] != 0, structure=ndimage.generate_binary_structure(3, 2))[1]


def test_one_patients_folder_keeps_the_patient_in_its_study_names(tmp_path):
    expected = dataset_layout(tmp_path)
    patient = folder_cases(tmp_path / "PETCT_0af7ffe12a")
    assert sorted(case.name for case in patient) == sorted(expected[:2])
    plain = tmp_path / "plain"  # case folders not dated as TCIA dates studies keep their own names
    make_study(6, size=TINY, n_lesions=1, name="CASE_A").write(plain)
    assert [case.name for case in folder_cases(plain)] == ["CASE_A"]


def test_lesions_are_counted_as_the_metrics_count_them(tmp_path):
    from app.dryrun.cases import with_lesion_counts

    for seed, n in ((7, 0), (8, 2), (9, 4)):
        make_study(seed, size=TINY, n_lesions=n, name=f"CASE_{seed}").write(tmp_path)
    counted = with_lesion_counts(folder_cases(tmp_path))
    assert [c.lesions for c in counted] == [_reference_lesions(c.seg) for c in counted]
    assert counted[0].lesions == 0 and counted[2].lesions >= 1


def test_two_folders_with_one_study_key_are_refused(tmp_path):
    make_study(3, size=TINY, n_lesions=1, name="A B").write(tmp_path)
    make_study(4, size=TINY, n_lesions=1, name="A_B").write(tmp_path)
    with pytest.raises(InputError, match="same study key A_B"):
        folder_cases(tmp_path)


@pytest.mark.slow
def test_dry_run_on_the_dataset_layout(tmp_path):
    cases = tmp_path / "cases"
    expected = dataset_layout(cases)
    result = subprocess.run([sys.executable, "-m", "app", "dry-run", "--cases", str(cases), "--output",
                             str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "out" / "dry-run.json").read_text())
    assert sorted(s["study"] for s in report["studies"]) == sorted(expected)
    lesions = {s["study"]: s["lesions"] for s in report["studies"]}
    assert lesions == {case.name: _reference_lesions(case.seg) for case in folder_cases(cases)}
    assert lesions["PETCT_1b2c"] == 0 and all(n >= 1 for k, n in lesions.items() if k != "PETCT_1b2c")
    assert all(s["metrics"] is not None for s in report["studies"])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert sorted(metrics["case"]) == sorted(expected)
