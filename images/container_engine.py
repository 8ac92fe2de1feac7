"""Which container engine runs the kit's images (docker when a daemon answers, else podman), and its settings."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from petct.errors import InputError

ENGINES = ("docker", "podman")
KIT_ROOT = Path(__file__).resolve().parents[1]
PODMAN_CONFIG_DIR = KIT_ROOT / "build" / "podman"
# Found by trying on a hybrid-cgroup host: crun 1.8 refuses that layout (runc runs it), and root there may not
# raise its limits, so podman's default ulimits (nofile 1048576) make every run fail with "setrlimit ...
# Operation not permitted". Storage: the default root store, so images and build caches outlive a clone.
CONTAINERS_CONF = """\
# The kit's podman settings (written by images/container_engine.py; passed through CONTAINERS_CONF).
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""
STORAGE_CONF = """\
# The kit's podman storage (written by images/container_engine.py; passed through CONTAINERS_STORAGE_CONF).
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
"""


def daemon_answers(docker: str = "docker") -> bool:
    """Whether `docker info` reaches a daemon (the client alone is not enough to build or run)."""
    if shutil.which(docker) is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def detect_engine(requested: str | None = None) -> str:
    """`requested` (docker or podman) when given, else docker when its daemon answers, else podman when installed."""
    if requested:
        if requested not in ENGINES:
            raise InputError(f"unknown container engine {requested!r}; choose one of {', '.join(ENGINES)}")
        if shutil.which(requested) is None:
            raise InputError(f"container engine {requested!r} is not on PATH")
        return requested
    if daemon_answers():
        return "docker"
    if shutil.which("podman") is not None:
        return "podman"
    if shutil.which("docker") is not None:
        return "docker"  # its daemon is down: docker's own message will say so
    raise InputError("no container engine: neither docker nor podman is on PATH "
                     "(install Docker, or apt-get install podman)")


def podman_config(folder: Path = PODMAN_CONFIG_DIR) -> dict[str, str]:
    """Write the kit's podman configuration under `folder`; the environment variables that select it."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"CONTAINERS_CONF": (folder / "containers.conf", CONTAINERS_CONF),
             "CONTAINERS_STORAGE_CONF": (folder / "storage.conf", STORAGE_CONF)}
    env = {}
    for variable, (path, text) in files.items():
        if not path.is_file() or path.read_text() != text:
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_text(text)
            temporary.replace(path)
        env[variable] = str(path)
    return env


def engine_env(engine: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to run `engine` in: podman gets the kit's configuration unless the user chose their own."""
    env = dict(os.environ if base is None else base)
    if engine == "podman":
        for variable, path in podman_config().items():
            env.setdefault(variable, path)
    return env


def gpu_flags(engine: str, devices: list[str] | None) -> list[str]:
    """The `run` flags that give a container the GPUs `devices` (indices or UUIDs; None: every GPU; []: none).

    Docker takes `--gpus` (a device list is one CSV field, hence the quotes inside the argument); podman takes
    the NVIDIA Container Toolkit's CDI names (`nvidia.com/gpu=K`), which every podman version understands.
    """
    if devices == []:  # CUDA_VISIBLE_DEVICES="" or -1: this process was given no GPU
        return []
    if Path(engine).name == "podman":
        return [flag for device in (devices or ["all"]) for flag in ("--device", f"nvidia.com/gpu={device}")]
    return ["--gpus", "all" if devices is None else '"device=' + ",".join(devices) + '"']
