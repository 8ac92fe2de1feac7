"""Building the kit's three images (and the CPU variant of the algorithm's) with docker or podman."""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from images.bases import PYTHON_BASE, TORCH_BASES, image_exists
from images.container_engine import KIT_ROOT
from images.pipconf import PipSettings, build_mounts

TARGETS = ("algorithm", "evaluation", "app")
PLATFORM = "linux/amd64"
PIP_CONF = KIT_ROOT / "build" / "pip" / "pip.conf"


@dataclass(frozen=True)
class Bases:
    """The build args that choose the images' bases, and a word saying which they are."""

    python: str | None  # None: the Dockerfile's default (public) base
    torch: str | None
    label: str

    def build_args(self) -> list[str]:
        args = []
        if self.python:
            args += ["--build-arg", f"PYTHON_IMAGE={self.python}"]
        if self.torch:
            args += ["--build-arg", f"PYTORCH_IMAGE={self.torch}"]
        return args


def choose_bases(engine: str, env: dict[str, str], *, wanted: str, cpu: bool) -> Bases:
    """`local` (made by `make base-images`), `public` (the Dockerfile's), or `auto`: local when they exist."""
    flavour = "cpu" if cpu else "cuda"
    torch = TORCH_BASES[flavour]
    if cpu and wanted == "public":
        raise ValueError("the CPU variant builds on the local CPU torch base: run `make base-images` first")
    if wanted == "public" or (wanted == "auto" and not cpu
                              and not (image_exists(engine, PYTHON_BASE, env) and image_exists(engine, torch, env))):
        return Bases(python=None, torch=None, label="public bases (the Dockerfile's defaults)")
    if not image_exists(engine, torch, env):
        # No CUDA torch base made: the local CPU one stands in (the only one `make base-images` makes by default).
        torch = TORCH_BASES["cpu"]
    return Bases(python=PYTHON_BASE, torch=torch, label=f"local bases {PYTHON_BASE}, {torch}")


def build_options(engine: str, settings: PipSettings) -> list[str]:
    """Options every build gets: the platform, the host's network (for pip only) and, with podman, pip's settings.

    podman's default OCI format has no HEALTHCHECK, hence --format docker. Docker builds cannot mount
    files, so there pip uses the image's defaults plus the proxy variables Docker passes on by itself.
    """
    options = ["--platform", PLATFORM, "--network", "host"]
    if engine == "podman":
        options = ["--format", "docker", *options, *build_mounts(settings, PIP_CONF)]
    return options


def image_tag(target: str, *, cpu: bool) -> str:
    return f"petct-kit/{target}:{'cpu' if cpu else 'latest'}"


def build_argv(engine: str, *, target: str, tag: str, bases: Bases, options: list[str],
               algorithm_engine: str | None = None) -> list[str]:
    argv = [engine, "build", *options, "--target", target, "-t", tag, *bases.build_args()]
    if algorithm_engine:
        argv += ["--build-arg", f"ALGORITHM_ENGINE={algorithm_engine}"]
    return argv + [str(KIT_ROOT)]


def image_size_and_platform(engine: str, image: str, env: dict[str, str]) -> tuple[int, str]:
    """Bytes (uncompressed, as `images` lists them) and os/arch of a local image."""
    found = subprocess.run([engine, "image", "inspect", image], capture_output=True, text=True, env=env)
    if found.returncode != 0:
        raise ValueError(f"image {image} not found: {found.stderr.strip()}")
    info = json.loads(found.stdout)
    info = info[0] if isinstance(info, list) else info
    return int(info.get("Size", 0)), f"{info.get('Os')}/{info.get('Architecture')}"

