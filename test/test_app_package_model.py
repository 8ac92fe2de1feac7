"""`python -m app package-model`: the model tarball grand-challenge unpacks into /opt/ml/model."""
from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from algorithm.nnunet.folder import find_trainer_folder
from app.__main__ import main
from app_helpers import REPO

TRAINER = Path("Dataset999_KitTest") / "nnUNetTrainer__nnUNetPlans__3d_fullres"


def package(*args) -> subprocess.CompletedProcess:
    """The command in-process (its torch import is paid once), as its exit status and output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["package-model", *map(str, args)])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.mark.slow
def test_the_command_line_works(tmp_path):
    results_folder(tmp_path / "results")
    result = subprocess.run([sys.executable, "-m", "app", "package-model", str(tmp_path / "results"),
                             str(tmp_path / "model.tar.gz")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "sha256" in result.stdout, result.stderr


def results_folder(root: Path, *, folds=(0, 1), files=("plans.json", "dataset.json")) -> Path:
    """A trainer folder with the files the checks look for (their contents are the algorithm's business)."""
    trainer = root / TRAINER
    trainer.mkdir(parents=True)
    for name in files:
        (trainer / name).write_text("{}")
    for fold in folds:
        (trainer / f"fold_{fold}").mkdir()
        (trainer / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(bytes(range(256)) * (fold + 1))
    if folds:
        (trainer / f"fold_{folds[0]}" / "training_log.txt").write_text("kept as it is")
    return trainer


def test_tarball_unpacks_to_what_the_algorithm_finds_in_opt_ml_model(tmp_path):
    trainer = results_folder(tmp_path / "results")
    result = package(tmp_path / "results", tmp_path / "model.tar.gz")
    assert result.returncode == 0, result.stderr
    tarball = tmp_path / "model.tar.gz"
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert digest in result.stdout and str(tarball.stat().st_size) in result.stdout
    assert f"/opt/ml/model/{TRAINER}" in result.stdout and "folds 0, 1" in result.stdout

    unpacked = tmp_path / "opt-ml-model"
    with tarfile.open(tarball) as archive:
        assert all(not Path(m.name).is_absolute() and ".." not in Path(m.name).parts for m in archive)
        archive.extractall(unpacked, filter="data")
    assert find_trainer_folder(unpacked) == unpacked / TRAINER
    for path in trainer.rglob("*"):
        if path.is_file():
            assert (unpacked / TRAINER / path.relative_to(trainer)).read_bytes() == path.read_bytes()


def test_trainer_folder_itself_is_packed_at_the_top(tmp_path):
    trainer = results_folder(tmp_path / "results")
    result = package(trainer, tmp_path / "model.tar.gz")
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "model.tar.gz") as archive:
        assert "plans.json" in archive.getnames()


@pytest.mark.parametrize("make,needle", [
    (lambda root: results_folder(root / "nnUNet_results" / "extra"), "holds no nnU-Net results folder"),
    (lambda root: results_folder(root, folds=()), "fold_K/checkpoint_final.pth"),
    (lambda root: results_folder(root, files=("plans.json",)), "dataset.json"),
])
def test_a_folder_the_algorithm_would_not_find_is_refused(tmp_path, make, needle):
    make(tmp_path / "results")
    result = package(tmp_path / "results", tmp_path / "model.tar.gz")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert needle in line and str(tmp_path / "results") in line
    assert not (tmp_path / "model.tar.gz").exists()


def test_two_results_folders_are_refused_naming_both(tmp_path):
    results_folder(tmp_path / "results")
    other = tmp_path / "results" / "Dataset998_Other" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    other.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        (other / name).write_text("{}")
    (other / "fold_0").mkdir()
    (other / "fold_0" / "checkpoint_best.pth").write_bytes(b"x")
    result = package(tmp_path / "results", tmp_path / "model.tar.gz")
    assert result.returncode == 2
    assert "Dataset998_Other" in result.stderr and "Dataset999_KitTest" in result.stderr


@pytest.mark.parametrize("name", ["results/model.tar.gz", "model.zip"])
def test_output_inside_the_folder_or_not_a_tar_gz_is_refused(tmp_path, name):
    results_folder(tmp_path / "results")
    result = package(tmp_path / "results", tmp_path / name)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not (tmp_path / name).exists()


def test_hints_are_the_algorithms_for_the_same_folder(tmp_path):
    from algorithm.nnunet.selection import ModelChoice, resolve
    from petct.errors import InputError

    trainer = results_folder(tmp_path / "results")
    fold = trainer / "fold_1"
    deep = results_folder(tmp_path / "deep" / "nnUNet_results")
    for location, package_hint, algorithm_hint in (
            (fold, f"package {trainer} instead (the algorithm then runs this fold alone with --folds 1)",
             f"pass --model {trainer} --folds 1"),
            (tmp_path / "deep", f"repack the model or package {deep} instead",
             f"repack the model or pass --model {deep}")):
        with pytest.raises(InputError) as algorithm:
            resolve(location, ModelChoice())
        result = package(location, tmp_path / "model.tar.gz")
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert line.endswith(package_hint) and str(algorithm.value).endswith(algorithm_hint)
        # the same diagnosis, word for word, up to the hint
        assert line.removeprefix("error: ").removesuffix(package_hint) == \
            str(algorithm.value).removesuffix(algorithm_hint)


def test_the_tarball_is_reproducible(tmp_path):
    import gzip
    import os

    trainer = results_folder(tmp_path / "results")
    first = package(tmp_path / "results", tmp_path / "first.tar.gz")
    for path in trainer.rglob("*"):  # touched later: other times, same contents
        os.utime(path, (1_900_000_000, 1_900_000_000))
    second = package(tmp_path / "results", tmp_path / "second.tar.gz")
    assert first.returncode == second.returncode == 0
    assert (tmp_path / "first.tar.gz").read_bytes() == (tmp_path / "second.tar.gz").read_bytes()
    with gzip.open(tmp_path / "first.tar.gz") as gz:
        gz.read(1)
        assert gz.mtime == 0
    with tarfile.open(tmp_path / "first.tar.gz") as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == sorted((m.name for m in members), key=lambda n: n.split("/"))
    assert all(m.mtime == 0 and m.uid == m.gid == 0 and not m.uname and not m.gname for m in members)
