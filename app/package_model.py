"""`python -m app package-model`: an nnU-Net results folder as the model tarball grand-challenge unpacks into
/opt/ml/model, checked first with the same rules the algorithm uses to find its model there."""
from __future__ import annotations

import gzip
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
    from algorithm.nnunet.selection import require_findable

    results = Path(results)
    if not results.is_dir():
        raise InputError("model folder does not exist or is not a folder", path=results)
    # The same search, and the same diagnoses, as the algorithm's in /opt/ml/model (a fold folder, results
    # nested too deep), with the hint in this command's terms; then one complete trainer folder is required.
    require_findable(results, hint=_package_instead)
    trainer = require_trainer_folder(results)
    output = Path(output)
    if output.resolve().is_relative_to(results.resolve()):
        raise InputError("the tarball must be written outside the results folder", path=output)
    if not output.name.endswith((".tar.gz", ".tgz")):
        raise InputError("the model tarball's name must end in .tar.gz", path=output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".partial")
    try:
        # Reproducible: the same folder gives the same bytes (members sorted, no times, owners or file name
        # in the tar or gzip headers), so its sha256 identifies the model.
        with open(temporary, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path in sorted(results.rglob("*"), key=lambda p: p.relative_to(results).parts):
                if path.is_file() or path.is_dir():
                    tar.add(path, arcname=path.relative_to(results).as_posix(), recursive=False, filter=_plain)
        temporary.replace(output)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise InputError(f"cannot write the model tarball: {exc.strerror or exc}", path=output) from None
    return PackagedModel(path=output, trainer_folder=str(trainer.relative_to(results)),
                         folds=tuple(c.fold for c in available_folds(trainer)),
                         size_bytes=output.stat().st_size, sha256=sha256_of(output))


def _package_instead(folder: Path, fold: str | None) -> str:
    run = f" (the algorithm then runs this fold alone with --folds {fold})" if fold else ""
    return f"package {folder} instead{run}"


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Files as anyone may read them, owned by no one in particular (the platform unpacks as its own user)."""
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info
