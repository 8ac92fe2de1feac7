"""The service's settings object: its fields are the `serve` options, with their defaults, and the token's variable."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from app.__main__ import _parser
from app.service.settings import ServiceSettings
from petct import environment


def _settings(*argv: str) -> ServiceSettings:
    return ServiceSettings.from_options(_parser().parse_args(["serve", *argv]))


def test_defaults_of_the_options_are_the_fields_defaults(monkeypatch):
    monkeypatch.delenv(environment.TOKEN.name, raising=False)
    assert _settings() == ServiceSettings()


def test_every_field_is_an_option_and_comes_back(monkeypatch, tmp_path):
    monkeypatch.delenv(environment.TOKEN.name, raising=False)
    settings = _settings("--data-dir", str(tmp_path), "--host", "::1", "--port", "9000", "--token", "t" * 16,
                         "--max-upload", "1GiB", "--max-voxels", "1000", "--max-image-bytes", "2MB",
                         "--max-request-image-bytes", "3m", "--max-ratio", "50", "--ground-truth", str(tmp_path),
                         "--model", str(tmp_path / "m"), "--device", "cpu", "--scoring-workers", "3",
                         "--min-free", "1g", "--keep-jobs-for", "2", "--score-timeout", "30",
                         "--max-concurrent-submissions", "4", "--keep-submissions", "--images", str(tmp_path / "i"),
                         "--challenge", "autopet-2026-interactive")
    assert settings == ServiceSettings(data_dir=tmp_path, host="::1", port=9000, token="t" * 16,
                                       max_upload_bytes=1 << 30, max_voxels=1000, max_image_bytes=2_000_000,
                                       max_request_image_bytes=3 << 20, max_ratio=50.0, ground_truth=tmp_path,
                                       model=tmp_path / "m", device="cpu", scoring_workers=3, min_free_bytes=1 << 30,
                                       keep_jobs_for_s=2 * 86400.0, score_timeout_s=30.0, max_concurrent_submissions=4,
                                       keep_submissions=True, images=tmp_path / "i",
                                       challenge="autopet-2026-interactive")
    changed = {f.name for f in dataclasses.fields(ServiceSettings)
               if getattr(settings, f.name) != getattr(ServiceSettings(), f.name)}
    assert changed == {f.name for f in dataclasses.fields(ServiceSettings)}


@pytest.mark.parametrize("env, option, expected", [("e" * 16, None, "e" * 16), ("e" * 16, "o" * 16, "o" * 16),
                                                   ("", None, None), (None, None, None)])
def test_token_from_the_option_else_the_environment(monkeypatch, env, option, expected):
    if env is None:
        monkeypatch.delenv(environment.TOKEN.name, raising=False)
    else:
        monkeypatch.setenv(environment.TOKEN.name, env)
    assert _settings(*(["--token", option] if option else [])).token == expected


def test_the_default_data_folder_is_shared_by_every_command():
    parser = _parser()
    for argv in (["serve"], ["participants", "list"], ["phases", "list"]):
        assert parser.parse_args(argv).__dict__.get("data_dir", parser.parse_args(argv).__dict__.get(
            "setting_data_dir")) == Path("service-data")


def test_every_variable_is_declared_once_with_help():
    names = [variable.name for variable in environment.VARIABLES]
    assert len(names) == len(set(names)) and all(name.startswith("PETCT_KIT_") for name in names)
    assert all(variable.help for variable in environment.VARIABLES)
