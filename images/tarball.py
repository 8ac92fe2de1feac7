"""The file a participant uploads to grand-challenge: `docker save IMAGE | gzip`, its platform checked first."""
from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

from images.build import PLATFORM, image_size_and_platform
from petct.digests import sha256_of
from petct.errors import InputError

CHUNK = 1 << 20


def save_image_tarball(engine: str, image: str, output: Path, env: dict[str, str], *,
                       compress_level: int = 6) -> tuple[int, str]:
    """Write `output` (gzip of the image's docker-archive) atomically; its size in bytes and sha256."""
    try:
        _, platform = image_size_and_platform(engine, image, env)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if platform != PLATFORM:
        raise InputError(f"image {image} is built for {platform}; grand-challenge runs {PLATFORM} only")
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".partial")
    argv = [engine, "save", image] if engine == "docker" else [engine, "save", "--format", "docker-archive", image]
    with open(temporary, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=compress_level) as packed:
        saver = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        shutil.copyfileobj(saver.stdout, packed, CHUNK)
        error = saver.stderr.read().decode(errors="replace").strip()
        if saver.wait() != 0:
            temporary.unlink(missing_ok=True)
            raise InputError(f"{engine} save {image} failed: {error.splitlines()[-1] if error else 'no message'}")
    temporary.replace(output)
    return output.stat().st_size, sha256_of(output)

