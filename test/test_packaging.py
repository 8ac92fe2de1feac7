"""The kit as an installed distribution: its version, console scripts, licence and changelog."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from paths import REPO
from petct.editions import EDITIONS
from petct.version import kit_version

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_reported_version_is_pyprojects():
    assert kit_version() == PYPROJECT["project"]["version"]


@pytest.mark.parametrize("name", sorted(PYPROJECT["project"]["scripts"]))
def test_each_console_script_names_a_function(name):
    module, _, attribute = PYPROJECT["project"]["scripts"][name].partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))


@pytest.mark.parametrize("name,module", [("petct-evaluate", "evaluation"), ("petct-algorithm", "algorithm"),
                                         ("petct-dry-run", "app dry-run"), ("petct-serve", "app serve")])
def test_console_scripts_run_from_any_folder(tmp_path, name, module):
    """Installed with the interpreter running the tests (`pip install -e .`); no PYTHONPATH, another folder."""
    script = Path(sys.executable).parent / name
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([str(script), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m {module}")


def test_licence_is_apache_2():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert PYPROJECT["project"]["license"] == "Apache-2.0"


def test_changelog_covers_the_version_and_its_editions():
    text = (REPO / "CHANGELOG.md").read_text()
    version = PYPROJECT["project"]["version"]
    section = text.split(f"## {version}\n", 1)[1].split("\n## ", 1)[0]
    for name in EDITIONS:
        assert f"`{name}`" in section, name


def test_each_extra_reads_requirements_files_that_exist():
    extras = PYPROJECT["tool"]["setuptools"]["dynamic"]["optional-dependencies"]
    for name, spec in extras.items():
        assert spec["file"] and all((REPO / path).is_file() for path in spec["file"]), name
    # Dask for --workers/--scheduler: its one home is the algorithm's optional requirements file.
    assert extras["distributed"]["file"] == ["algorithm/requirements-distributed.txt"]


def test_no_module_edits_the_import_path():
    """The kit is installed: code, tests and benchmarks import it as a package, never by editing sys.path."""
    import ast

    edits = []
    for folder in ("algorithm", "app", "dataset", "evaluation", "images", "petct", "test", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "path" and \
                        isinstance(node.value, ast.Name) and node.value.id == "sys":
                    edits.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not edits, edits
