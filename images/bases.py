"""Local stand-ins for the Dockerfile's public base images, made from Debian packages (no Docker Hub needed).

python base: a Debian bookworm root filesystem from `debootstrap` with Python 3.11 and a venv at /opt/venv
first on PATH (so `python` and `pip` are the venv's, as in python:3.11-slim), imported as an image.
torch base: the python base plus torch, the CPU wheel by default or PyPI's CUDA build when asked.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from images.pipconf import PipSettings
from petct.errors import InputError

PYTHON_BASE = "localhost/petct-base/python:3.11-bookworm"
TORCH_BASES = {"cpu": "localhost/petct-base/torch:cpu", "cuda": "localhost/petct-base/torch:cuda"}
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Installed for the base's own sake, never used by the images at run time.
SLIM_PATHS = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info",
              "usr/share/locale")
VENV_PATH = "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TORCH_CONTAINERFILE = Path(__file__).with_name("torch-base.Containerfile")
CPU_TORCH_INDEX = "--index-url https://download.pytorch.org/whl/cpu torch"


def host_apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host's apt uses (deb822 .sources or one-line lists), else deb.debian.org."""
    files = sorted(sources.glob("sources.list.d/*.sources")) + [sources / "sources.list"]
    files += sorted(sources.glob("sources.list.d/*.list"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for url in re.findall(r"^\s*URIs:\s*(\S+)", text, re.M) + re.findall(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)",
                                                                              text, re.M):
            if not url.rstrip("/").endswith("-security"):
                return url
    return DEFAULT_MIRROR


def image_exists(engine: str, image: str, env: dict[str, str]) -> bool:
    return subprocess.run([engine, "image", "inspect", image], capture_output=True, env=env).returncode == 0


def _run(argv: list[str], env: dict[str, str], **kwargs) -> None:
    print("+", " ".join(argv), flush=True)
    if subprocess.run(argv, env=env, **kwargs).returncode != 0:
        raise InputError(f"{argv[0]} {argv[1]} failed (see its output above)")


def make_python_base(engine: str, env: dict[str, str], *, mirror: str | None = None) -> str:
    """debootstrap bookworm + Python 3.11 + /opt/venv, imported as PYTHON_BASE."""
    if shutil.which("debootstrap") is None:
        raise InputError("make base-images needs debootstrap (apt-get install debootstrap)")
    mirror = mirror or host_apt_mirror()
    with tempfile.TemporaryDirectory(prefix="petct-rootfs-") as work:
        rootfs = Path(work) / "rootfs"
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), mirror],
             env)
        _run(["chroot", str(rootfs), "python3", "-m", "venv", "/opt/venv"], env)
        for relative in SLIM_PATHS:
            shutil.rmtree(rootfs / relative, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        _run([engine, "import", "--change", f"ENV PATH={VENV_PATH}", "--change", 'CMD ["python"]', "-",
              PYTHON_BASE], env, stdin=tar.stdout)
        tar.stdout.close()
        if tar.wait() != 0:
            raise InputError("tar of the debootstrap root filesystem failed")
    return PYTHON_BASE


def torch_requirement(flavour: str, settings: PipSettings) -> tuple[str, list[Path]]:
    """What pip installs for `flavour`: a CPU torch wheel from the host's wheel folders when there is one."""
    if flavour == "cuda":
        return "torch", []
    wheels = sorted((w for folder in settings.paths if folder.is_dir()
                     for w in folder.glob("torch-*+cpu-cp311-cp311-*x86_64.whl")), key=_wheel_version)
    if wheels:
        return str(wheels[-1]), [wheels[-1].parent]
    return CPU_TORCH_INDEX, []


def _wheel_version(wheel: Path) -> tuple[int, ...]:
    version = wheel.name.split("-")[1].split("+")[0]
    return tuple(int(p) for p in re.findall(r"\d+", version))


def make_torch_base(engine: str, env: dict[str, str], *, flavour: str, settings: PipSettings,
                    build_options: list[str]) -> str:
    """PYTHON_BASE plus torch (`flavour` cpu or cuda), tagged TORCH_BASES[flavour]."""
    requirement, folders = torch_requirement(flavour, settings)
    mounts = [f"--volume={f}:{f}:ro" for f in folders if f not in settings.paths] if engine == "podman" else []
    _run([engine, "build", *build_options, *mounts, "-f", str(TORCH_CONTAINERFILE),
          "--build-arg", f"BASE={PYTHON_BASE}", "--build-arg", f"TORCH={requirement}",
          "-t", TORCH_BASES[flavour], str(TORCH_CONTAINERFILE.parent)], env)
    return TORCH_BASES[flavour]
