"""The container's log: the engine in one short line, its settings only with --debug."""
from __future__ import annotations

import json

from algorithm_helpers import run_algorithm, write_platform_input
from petct.phantom import make_study


def _engine_lines(stderr: str) -> tuple[list[str], list[str]]:
    lines = stderr.splitlines()
    return [line for line in lines if " engine: {" in line], [line for line in lines if " engine settings: {" in line]


def test_baseline_settings_are_logged_with_debug_only(tmp_path):
    platform = write_platform_input(tmp_path / "input", make_study(3, size="tiny", n_lesions=1, name="PETCT_3"))
    plain = run_algorithm("--input", platform.root, "--output", tmp_path / "out", "--engine", "baseline")
    assert plain.returncode == 0, plain.stderr
    [engine], settings = _engine_lines(plain.stderr)
    described = json.loads(engine.split(" engine: ", 1)[1])
    assert described["engine"] == "baseline" and "settings" not in described and len(engine) < 300
    assert settings == []
    debug = run_algorithm("--input", platform.root, "--output", tmp_path / "out-debug", "--engine", "baseline",
                          "--debug")
    assert debug.returncode == 0, debug.stderr
    [engine], [settings] = _engine_lines(debug.stderr)
    assert "DEBUG" in settings and json.loads(settings.split(" engine settings: ", 1)[1])
