"""`python -m app package-model`: an nnU-Net results folder as the model tarball grand-challenge unpacks into
/opt/ml/model, checked first with the same rules the algorithm uses to find its model there."""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

from petct.digests import sha256_of
from petct.errors import InputError


@dataclass(frozen=True)
class PackagedModel:
    path: Path
    trainer_folder: str  # where the algorithm will find plans.json, relative to /opt/ml/model ("." at the top)
    folds: tuple[int, ...]
    size_bytes: int
    sha256: str


def package_model(results: Path, output: Path) -> PackagedModel:
    """Check `results` as the algorithm will see it at /opt/ml/model, then tar.gz its contents (no top folder)."""
    from algorithm.nnunet.folder import available_folds, require_trainer_folder

    results = Path(results)
    # The same search the algorithm does in /opt/ml/model: a folder nested too deep, or several, is refused here.
    trainer = require_trainer_folder(results)
    output = Path(output)
    if output.resolve().is_relative_to(results.resolve()):
        raise InputError("the tarball must be written outside the results folder", path=output)
    if not output.name.endswith((".tar.gz", ".tgz")):
        raise InputError("the model tarball's name must end in .tar.gz", path=output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".partial")
    try:
        with tarfile.open(temporary, "w:gz") as tar:
            for path in sorted(results.rglob("*")):
                if path.is_file() or path.is_dir():
                    tar.add(path, arcname=str(path.relative_to(results)), recursive=False, filter=_plain)
        temporary.replace(output)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise InputError(f"cannot write the model tarball: {exc.strerror or exc}", path=output) from None
    return PackagedModel(path=output, trainer_folder=str(trainer.relative_to(results)),
                         folds=tuple(c.fold for c in available_folds(trainer)),
                         size_bytes=output.stat().st_size, sha256=sha256_of(output))


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Files as anyone may read them, owned by no one in particular (the platform unpacks as its own user)."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info
