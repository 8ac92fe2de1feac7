"""The repository's root, for the tests that run the kit's commands or read its files."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
