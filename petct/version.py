"""The kit's version, as pyproject.toml states it: the containers' `ran:` log line and metrics.json report it."""
from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

DISTRIBUTION = "petct-kit"
_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def kit_version() -> str:
    """The installed distribution's version (`pip install -e .`, as `make` and the images install the kit)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        # Run from a source tree that was never installed (`python -m evaluation` in a bare checkout): there is
        # no installed metadata, but the tree's pyproject.toml is the same single statement of the version.
        try:
            return tomllib.loads(_PYPROJECT.read_text())["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"
