"""The test suite's helper modules (test/*_helpers.py) for the benchmarks that drive the same harness.

test/ is not a package (pytest puts it on the import path for the tests), so a benchmark loads a helper module
by its file, once per process, under its own name.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TEST = Path(__file__).resolve().parents[1] / "test"


def test_helpers(name: str) -> ModuleType:
    """test/<name>.py as the module `name` (with test/paths.py, which every helper module imports, before it)."""
    if name != "paths":
        test_helpers("paths")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TEST / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
