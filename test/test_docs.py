"""Docs stand alone: no pointers outside the repository, README = --help."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from algorithm.pipeline import PROBABILITY_SUFFIXES
from paths import REPO

# Spelled in pieces so that this file does not match itself.
OUTSIDE_POINTERS = ("../" + "shared/", "/" + "work/")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    files = [REPO / name for name in names if (REPO / name).is_file()]
    return [path for path in files if b"\0" not in path.read_bytes()[:4096]]


def test_nothing_points_outside_the_repository():
    offenders = [f"{path.relative_to(REPO)}: {pointer}" for path in tracked_text_files()
                 for pointer in OUTSIDE_POINTERS if pointer in path.read_text(errors="replace")]
    assert not offenders


def test_readme_links_the_specifications():
    readme = (REPO / "README.md").read_text()
    for doc in ("docs/metrics.md", "docs/grand-challenge.md"):
        assert doc in readme and (REPO / doc).is_file()
    metrics = (REPO / "docs" / "metrics.md").read_text()
    for source in ("github.com/lab-midas/autoPET", "github.com/ClinicalDataScience/autoPETIII", "0.28125"):
        assert source in metrics


def _help(*args: str) -> str:
    text = subprocess.run([sys.executable, "-m", *args, "--help"], cwd=REPO, capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "400"}).stdout
    return " ".join(text.split())


def test_readme_and_help_agree_on_save_probabilities():
    readme = " ".join((REPO / "README.md").read_text().split())
    help_text = _help("algorithm")
    for suffix in PROBABILITY_SUFFIXES:
        assert f"`{suffix}`" in readme and suffix in help_text
    assert "outside both the input and the output folder" in readme
    assert "outside both the input and the output folder" in help_text


def test_readme_and_help_agree_on_prediction_suffix():
    readme = " ".join((REPO / "README.md").read_text().split())
    help_text = _help("evaluation", "score-folders")
    for phrase in ("--prediction-suffix", "'_pred' reads <study>_pred.nii.gz", "'/PRED' reads <study>/PRED.nii.gz"):
        assert phrase in help_text
    assert re.search(r"`_pred` for `<study>_pred\.nii\.gz`, `/PRED` for `<study>/PRED\.nii\.gz`", readme)
