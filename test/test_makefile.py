"""The Makefile reinstalls when the package's or the requirement files' content changes, never because files are newer."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from paths import REPO

REQUIREMENTS = ("pyproject.toml", "requirements-dev.txt", "algorithm/requirements.txt",
                "evaluation/requirements.txt", "app/requirements.txt", "evaluation/report-requirements.txt",
                "dataset/requirements.txt")


def planned(clone: Path) -> str:
    """What `make test` would run (dry run), with a venv in the clone."""
    return subprocess.run(["make", "-n", "test", "VENV=venv"], cwd=clone, capture_output=True, text=True,
                          check=True, timeout=60).stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_stamp_follows_the_requirements_content(tmp_path):
    for name in ("Makefile", *REQUIREMENTS):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, tmp_path / name)
    first = planned(tmp_path)
    assert "pip install" in first
    stamp = re.search(r"^touch (venv/\S+)$", first, re.M).group(1)
    (tmp_path / stamp).parent.mkdir(parents=True)
    (tmp_path / stamp).touch()
    assert "pip install" not in planned(tmp_path)
    # A fresh checkout: every file newer than the stamp, content unchanged.
    later = time.time() + 60
    for name in ("Makefile", *REQUIREMENTS):
        os.utime(tmp_path / name, (later, later))
    assert "pip install" not in planned(tmp_path)
    with open(tmp_path / "app" / "requirements.txt", "a") as handle:
        handle.write("\n# edited\n")
    assert "pip install" in planned(tmp_path)
