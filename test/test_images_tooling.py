"""The image tooling's pure parts (no container engine needed): pip settings, apt mirror, engine choice."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from images.bases import host_apt_mirror, torch_requirement
from images.build import Bases, build_argv, build_options
from images.container_engine import CONTAINERS_CONF, detect_engine, engine_env, podman_config
from images.pipconf import CONTAINER_PIP_CONF, PipSettings, build_mounts, parse_config_list
from petct.errors import InputError


def test_pip_settings_merge_files_and_environment_and_find_local_paths(tmp_path):
    wheels, index = tmp_path / "wheels", tmp_path / "pypi"
    (index / "simple").mkdir(parents=True)
    wheels.mkdir()
    cert = tmp_path / "ca.crt"
    cert.write_text("x")
    listing = "\n".join([
        f"global.cert='{cert}'",
        "global.index-url='https://pypi.example/simple'",
        f"global.extra-index-url='file://{index}/simple https://other.example/simple'",
        "global.timeout='10'",
        f":env:.find-links='{wheels}'",
        ":env:.timeout='180'",
        "install.no-compile='1'",
        "not a setting line",
    ])
    settings = parse_config_list(listing)
    assert settings.sections["global"]["timeout"] == "180"  # PIP_* variables win over files, as in pip
    assert settings.sections["install"] == {"no-compile": "1"}
    # The file:// index's parent: its pages link the wheels as ../../files/...
    assert sorted(settings.paths) == sorted([cert, index, wheels])
    mounts = build_mounts(settings, tmp_path / "build" / "pip.conf")
    assert mounts[0] == f"--volume={tmp_path / 'build' / 'pip.conf'}:{CONTAINER_PIP_CONF}:ro"
    assert all(m.endswith(":ro") for m in mounts) and len(mounts) == 4
    assert (tmp_path / "build" / "pip.conf").stat().st_mode & 0o777 == 0o600  # may hold an index token
    text = (tmp_path / "build" / "pip.conf").read_text()
    assert "[global]" in text and "timeout = 180" in text and "[install]" in text


def test_paths_that_do_not_exist_are_not_mounted(tmp_path):
    settings = parse_config_list(f"global.cert='{tmp_path / 'gone.crt'}'\nglobal.find-links='https://x/'")
    assert settings.paths == []
    assert parse_config_list("").sections == {}


def test_cpu_torch_comes_from_a_local_wheel_when_the_host_has_one(tmp_path):
    for name in ("torch-2.12.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "torch-2.14.0-cp311-cp311-manylinux_2_28_x86_64.whl"):  # a CUDA build: not for the CPU base
        (tmp_path / name).write_bytes(b"")
    requirement, folders = torch_requirement("cpu", PipSettings(paths=[tmp_path]))
    assert requirement.endswith("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl") and folders == [tmp_path]
    assert "download.pytorch.org/whl/cpu" in torch_requirement("cpu", PipSettings())[0]
    assert torch_requirement("cuda", PipSettings(paths=[tmp_path]))[0] == "torch"


def test_apt_mirror_from_deb822_or_one_line_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n")
    assert host_apt_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("# comment\ndeb [arch=amd64] http://one.example/debian bookworm main\n")
    assert host_apt_mirror(tmp_path) == "http://one.example/debian"
    assert host_apt_mirror(tmp_path / "none") == "http://deb.debian.org/debian"


def test_podman_builds_keep_the_healthcheck_and_get_pip_settings(tmp_path, monkeypatch):
    monkeypatch.setattr("images.build.PIP_CONF", tmp_path / "pip.conf")
    podman = build_options("podman", PipSettings())
    assert podman[:2] == ["--format", "docker"] and "--network" in podman
    assert any(o.startswith("--volume=") for o in podman)
    assert not any(o.startswith(("--volume", "--format")) for o in build_options("docker", PipSettings()))
    argv = build_argv("podman", target="app", tag="t", bases=Bases(python="p", torch="q", label=""), options=[],
                      algorithm_engine="auto")
    assert argv[:2] == ["podman", "build"] and ["--target", "app"] == argv[2:4]
    for arg in ("PYTHON_IMAGE=p", "PYTORCH_IMAGE=q", "ALGORITHM_ENGINE=auto"):
        assert argv[argv.index(arg) - 1] == "--build-arg"


def _fake(folder: Path, name: str, status: int) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\nexit {status}\n")
    (folder / name).chmod(0o755)


@pytest.mark.parametrize("present,expected", [
    ({"docker": 0, "podman": 0}, "docker"),  # a daemon answers
    ({"docker": 1, "podman": 0}, "podman"),  # a client without a daemon
    ({"podman": 0}, "podman"),
    ({"docker": 1}, "docker"),  # let docker say why it cannot run
])
def test_engine_detection(tmp_path, monkeypatch, present, expected):
    for name, status in present.items():
        _fake(tmp_path / "bin", name, status)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert detect_engine(None) == expected


def test_no_engine_or_an_unknown_one_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputError, match="neither docker nor podman"):
        detect_engine(None)
    with pytest.raises(InputError, match="not on PATH"):
        detect_engine("podman")
    with pytest.raises(InputError, match="unknown container engine"):
        detect_engine("lxc")


def test_podman_gets_the_kits_configuration_unless_the_user_chose_one(tmp_path, monkeypatch):
    monkeypatch.setattr("images.container_engine.PODMAN_CONFIG_DIR", tmp_path)
    env = podman_config(tmp_path)
    assert Path(env["CONTAINERS_CONF"]).read_text() == CONTAINERS_CONF
    assert 'runtime = "runc"' in CONTAINERS_CONF and "nofile=16384" in CONTAINERS_CONF
    assert engine_env("podman", {"CONTAINERS_CONF": "/mine.conf"})["CONTAINERS_CONF"] == "/mine.conf"
    assert "CONTAINERS_CONF" not in engine_env("docker", {})
    assert os.environ.get("CONTAINERS_CONF") != str(tmp_path / "containers.conf")  # the caller's env untouched
