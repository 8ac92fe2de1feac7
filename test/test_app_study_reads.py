"""A study job in-process: each upload decoded once, the CT resampled once, the mask scored as inferred."""
from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import app.service.studies as studies
from algorithm.baseline import BaselineEngine
from algorithm.pipeline import read_study, segment_study
from app.service.errors import ApiError
from app.service.jobs import Job, JobState, JobStore, new_job_id
from app.service.scoring import KillableScoring, score_job, scoring_processes
from app.service.settings import UploadLimits
from app.service.studies import check_study
from app.service.uploads import StoredFile
from app.service.worker import MASK_NAME, InferenceWorker
from evaluation.scoring import score_files
from petct.decoded import DecodedStudy
from petct.errors import InputError
from petct.imageio import Geometry
from petct.jsonio import strict
from petct.phantom import make_study
from petct.resample import NO_OVERLAP, ResampledCT, ct_overlaps, resample_taken_ct


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> dict[str, Path]:
    """A tiny phantom with its CT on a grid twice as fine in-plane (so that the CT is resampled) and its label."""
    folder = make_study(3, size="tiny", n_lesions=3, with_ct=True).write(tmp_path_factory.mktemp("study"))
    return {"pet": folder / "SUV.mha", "ct": folder / "CT.mha", "label": folder / "SEG.mha"}


@pytest.fixture(scope="module")
def shifted_uploads(tmp_path_factory, uploads) -> dict[str, Path]:
    """The same study with its CT moved by 16 of the PET's 48 planes along z and 3 of its voxels across: a CT on
    another grid that leaves a third of the PET's field of view outside it (air there once resampled)."""
    ct = sitk.ReadImage(str(uploads["ct"]))
    pet = sitk.ReadImage(str(uploads["pet"]))
    x, y, z = ct.GetOrigin()
    ct.SetOrigin((x + 3 * pet.GetSpacing()[0], y, z + 16 * pet.GetSpacing()[2]))
    folder = tmp_path_factory.mktemp("shifted")
    sitk.WriteImage(ct, str(folder / "CT.mha"), useCompression=True)
    return {**uploads, "ct": folder / "CT.mha"}


class RecordingEngine(BaselineEngine):
    """The baseline engine, keeping the PET and CT arrays it is given."""

    def __init__(self):
        super().__init__()
        self.given: list[tuple[np.ndarray, np.ndarray]] = []

    def predict(self, *, pet, ct, **kwargs):
        self.given.append((pet, ct))
        return super().predict(pet=pet, ct=ct, **kwargs)


class Counting:
    """Counts SimpleITK's image reads by file and the resamplings, calling the real functions."""

    def __init__(self, monkeypatch):
        self.reads: dict[str, int] = {}
        self.order: list[str] = []  # file names, in the order read
        self.resamplings = 0
        read, execute = sitk.ReadImage, sitk.ResampleImageFilter.Execute

        def counted_read(path, *args, **kwargs):
            self.reads[Path(path).name] = self.reads.get(Path(path).name, 0) + 1
            self.order.append(Path(path).name)
            return read(path, *args, **kwargs)

        def counted_execute(resampler, *args, **kwargs):
            self.resamplings += 1
            return execute(resampler, *args, **kwargs)

        monkeypatch.setattr(sitk, "ReadImage", counted_read)
        monkeypatch.setattr(sitk.ResampleImageFilter, "Execute", counted_execute)


@pytest.fixture(scope="module")
def processes():
    processes = scoring_processes(1)
    yield processes
    processes.close()


def _run_job(tmp_path: Path, uploads: dict[str, Path], *, hand: bool, killable: KillableScoring,
             engine: BaselineEngine | None = None) -> tuple[Job, Path]:
    """Check the uploads as POST /v1/studies does, then run the job's inference and scoring; the job and its folder."""
    jobs_dir = tmp_path / "jobs"
    job_id = new_job_id()
    folder = jobs_dir / job_id
    folder.mkdir(parents=True)
    files = {}
    for field, source in uploads.items():
        stored = folder / f"{field}-0123456789abcdef.mha"
        stored.write_bytes(source.read_bytes())
        files[field] = StoredFile(field=field, client_name=source.name, path=stored, size=stored.stat().st_size)
    study = check_study(files, limits=UploadLimits(), resample=hand)  # as the route: resampled if it is kept
    store = JobStore(tmp_path / "jobs.sqlite3")
    with ThreadPoolExecutor(1) as scoring:
        worker = InferenceWorker(store=store, engine=engine or BaselineEngine(), jobs_dir=jobs_dir, scoring=scoring,
                                 killable=killable)
        if hand:
            assert worker.hand(job_id, study.decoded, label=study.label)
        del study
        store.add(job_id, {field: stored.path.name for field, stored in files.items()}, study="SUV")
        worker._run(store.claim_next())
    job = store.get(job_id)
    assert job.state == JobState.succeeded, job.error
    return job, folder


def _command_line(uploads: dict[str, Path]):
    """The study as `python -m algorithm` segments it (no images handed): its mask array and JSON notes."""
    result = segment_study(pet_path=uploads["pet"], ct_path=uploads["ct"], engine=BaselineEngine())
    return sitk.GetArrayFromImage(result.mask), json.loads(json.dumps(strict(result.notes), default=str)), result


def test_a_job_decodes_each_upload_once_and_scores_the_mask_it_inferred(tmp_path, uploads, monkeypatch, processes):
    counting = Counting(monkeypatch)
    killable, sent = KillableScoring(processes, 60.0), []

    def scoring(function, **kwargs):
        sent.append(kwargs["label"])
        return killable(function, **kwargs)

    job, folder = _run_job(tmp_path / "handed", uploads, hand=True, killable=scoring)
    metrics = job.metrics
    assert len(sent) == 1 and isinstance(sent[0], sitk.Image)  # the label as read, not its path to read again
    # The CT is on another grid: the upload checks resample it before the PET is decoded, and the worker reads
    # nothing again; the label the checks read is sent to the scoring process, which reads nothing either.
    assert counting.reads == {"pet-0123456789abcdef.mha": 1, "ct-0123456789abcdef.mha": 1,
                              "label-0123456789abcdef.mha": 1}, counting.reads
    assert counting.order[:2] == ["ct-0123456789abcdef.mha", "pet-0123456789abcdef.mha"]
    assert counting.resamplings == 1
    # The metrics of the in-memory mask and the uploaded label are the scorer's on the files written and uploaded.
    reference = score_files(ground_truth=uploads["label"], prediction=folder / MASK_NAME, study="SUV").to_json()
    expected = {**reference, "study": "SUV", "ground_truth_file": "label", "prediction_file": "mask"}
    assert metrics == expected
    assert metrics["gt_lesions"] == 3


@pytest.mark.parametrize(("ct", "coverage"), [("finer", 1.0), ("shifted", 0.6354)])
def test_a_job_gives_the_command_lines_mask_and_notes(tmp_path, request, ct, coverage, monkeypatch, processes):
    """The CT resampled by the upload checks (twice as fine in-plane; or moved too, so that a third of the PET's
    field of view is air): the same mask (voxel for voxel, on the PET grid) and the same notes as the command line,
    which resamples it itself, decoding each image once too (the CT before the PET)."""
    uploads = request.getfixturevalue({"finer": "uploads", "shifted": "shifted_uploads"}[ct])
    counting = Counting(monkeypatch)
    mask, notes, result = _command_line(uploads)
    assert counting.reads == {"CT.mha": 1, "SUV.mha": 1} and counting.order == ["CT.mha", "SUV.mha"]
    assert counting.resamplings == 1
    assert set(notes["ct_resampled"]) == {"from", "coverage"} and notes["ct_resampled"]["coverage"] == coverage
    for hand in (True, False):
        job, folder = _run_job(tmp_path / f"hand-{hand}", uploads, hand=hand, killable=KillableScoring(processes, 60.0))
        assert job.notes == notes, (hand, job.notes)
        written = sitk.ReadImage(str(folder / MASK_NAME))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(written), mask)
        assert (written.GetSize(), written.GetSpacing(), written.GetOrigin(), written.GetDirection()) == (
            result.mask.GetSize(), result.mask.GetSpacing(), result.mask.GetOrigin(), result.mask.GetDirection())
    assert mask.any()


def test_a_job_takes_the_resampled_ct_as_the_upload_checks_made_it(tmp_path, uploads, monkeypatch, processes):
    """The engine gets the very array the upload checks' resampling made (not read, resampled or copied again),
    and a PET array of its own (writable, owning its voxels), as the command line gives it."""
    made: list[ResampledCT] = []

    def recorded(*args, **kwargs):
        made.append(resample_taken_ct(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(studies, "resample_taken_ct", recorded)
    counting = Counting(monkeypatch)
    engine = RecordingEngine()
    job, _ = _run_job(tmp_path, uploads, hand=True, killable=KillableScoring(processes, 60.0), engine=engine)
    assert counting.reads["ct-0123456789abcdef.mha"] == 1 and counting.resamplings == 1
    (resampled,), ((pet, ct),) = made, engine.given
    assert ct is resampled.array and job.notes["ct_resampled"] == resampled.note
    assert pet.dtype == np.float32 and pet.flags.writeable and pet.flags.owndata and pet.flags.c_contiguous
    cli = RecordingEngine()
    segment_study(pet_path=uploads["pet"], ct_path=uploads["ct"], engine=cli)
    ((cli_pet, cli_ct),) = cli.given
    np.testing.assert_array_equal(pet, cli_pet)
    np.testing.assert_array_equal(ct, cli_ct)
    assert ct.dtype == cli_ct.dtype == np.float32 and ct.flags.writeable == cli_ct.flags.writeable


@pytest.mark.parametrize("seed", range(6))
def test_read_study_makes_float32_arrays_of_images_on_the_pet_grid_as_numpy_does(tmp_path, seed):
    """A PET and a CT on one grid, of random voxel types: read as decoded or handed over, each is the float32 array
    numpy makes of SimpleITK's copy of the voxels, writable and owning its memory."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(3, 9, 3))
    types = [np.float32, np.float64, np.int16, np.uint8, np.int32]
    geometry = None
    paths = {}
    for name, scale in (("pet", 20.0), ("ct", 1500.0)):
        dtype = types[rng.integers(len(types))]
        array = (rng.uniform(-1, 1, shape) * scale).astype(dtype)
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(tuple(float(v) for v in rng.uniform(0.5, 4, 3)))
        image.SetOrigin(tuple(float(v) for v in rng.uniform(-100, 100, 3)))
        if geometry is None:
            geometry = Geometry.of(image)
        geometry.apply_to(image)
        paths[name] = tmp_path / f"{name}.mha"
        sitk.WriteImage(image, str(paths[name]))
    expected = {name: sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
                for name, path in paths.items()}
    handed = DecodedStudy(pet=sitk.ReadImage(str(paths["pet"])), ct=sitk.ReadImage(str(paths["ct"])))
    for study in (read_study(pet_path=paths["pet"], ct_path=paths["ct"]),
                  read_study(pet_path=paths["pet"], ct_path=paths["ct"], decoded=handed)):
        assert study.geometry == geometry and study.notes == {}
        for name, array in (("pet", study.pet), ("ct", study.ct)):
            assert array.dtype == np.float32 and array.flags.writeable and array.flags.owndata
            np.testing.assert_array_equal(array, expected[name])
    assert (handed.pet, handed.ct) == (None, None)  # taken, so that each is freed once used


def test_read_study_refuses_a_ct_handed_over_on_another_grid_than_the_pets(uploads):
    study = check_study(_stored(uploads), limits=UploadLimits())
    resampled = study.decoded.ct
    other = Geometry(size=resampled.grid.size, spacing=resampled.grid.spacing,
                     origin=tuple(v + 1.0 for v in resampled.grid.origin), direction=resampled.grid.direction)
    study.decoded.ct = ResampledCT(array=resampled.array, grid=other, note=resampled.note)
    with pytest.raises(ValueError, match="resampled onto another grid than the PET's"):
        read_study(pet_path=uploads["pet"], ct_path=uploads["ct"], decoded=study.decoded)


def test_a_job_with_its_ct_on_the_pet_grid_decodes_each_upload_once(tmp_path, uploads, monkeypatch, processes):
    on_grid = {**uploads, "ct": uploads["ct"].with_name("CTres.mha")}
    handed, _ = _run_job(tmp_path / "resampled", uploads, hand=True, killable=KillableScoring(processes, 60.0))
    counting = Counting(monkeypatch)
    job, _ = _run_job(tmp_path / "on-grid", on_grid, hand=True, killable=KillableScoring(processes, 60.0))
    assert sorted(counting.reads.values()) == [1, 1, 1] and len(counting.reads) == 3, counting.reads
    assert counting.resamplings == 0
    assert job.metrics["gt_lesions"] == handed.metrics["gt_lesions"] == 3


def _stored(uploads: dict[str, Path]) -> dict[str, StoredFile]:
    return {field: StoredFile(field=field, client_name=path.name, path=path, size=path.stat().st_size)
            for field, path in uploads.items()}


def test_the_upload_checks_resample_the_ct_before_decoding_the_others(uploads, monkeypatch):
    """The CT (int16 on a grid four times as large) is decoded, resampled onto the PET's grid and freed before the
    PET and label are decoded; the checks' notes are the command line's."""
    counting = Counting(monkeypatch)
    study = check_study(_stored(uploads), limits=UploadLimits())
    assert counting.order == ["CT.mha", "SUV.mha", "SEG.mha"] and counting.resamplings == 1
    pet, ct = study.decoded.pet, study.decoded.ct
    assert isinstance(pet, sitk.Image) and isinstance(study.label, sitk.Image)
    # The resampled CT as the resampling's array (no image made of it again), on the PET's grid.
    assert isinstance(ct, ResampledCT) and ct.grid == Geometry.of(pet)
    assert ct.array.dtype == np.float32 and ct.array.shape == pet.GetSize()[::-1] and np.isfinite(ct.array).all()
    assert study.grids["ct"].size == tuple(2 * n for n in pet.GetSize()[:2]) + (pet.GetSize()[2],)
    assert study.notes == read_study(pet_path=uploads["pet"], ct_path=uploads["ct"]).notes


def test_the_upload_checks_refuse_a_ct_with_nan_before_resampling_it(tmp_path, uploads):
    """NaN would pass for "outside the CT" once resampled (air): the checks refuse it, naming the CT's upload."""
    ct = sitk.ReadImage(str(uploads["ct"]), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(ct)
    array[1, 2, 3] = np.nan
    broken = sitk.GetImageFromArray(array)
    broken.CopyInformation(ct)
    sitk.WriteImage(broken, str(tmp_path / "CT.mha"))
    with pytest.raises(ApiError) as caught:
        check_study(_stored({**uploads, "ct": tmp_path / "CT.mha"}), limits=UploadLimits())
    assert (caught.value.status, caught.value.field, caught.value.file) == (422, "ct", "CT.mha")
    assert "1 NaN or infinite voxel" in caught.value.reason


def test_the_worker_holds_the_images_inference_reads_and_the_label_for_the_scoring(tmp_path, uploads):
    """The PET and CT for inference, the label (as the checks read it) for the scoring after it."""
    study = check_study(_stored(uploads), limits=UploadLimits())
    pet, ct, label = study.decoded.pet, study.decoded.ct, study.label
    with ThreadPoolExecutor(1) as scoring:
        worker = InferenceWorker(store=JobStore(tmp_path / "jobs.sqlite3"), engine=BaselineEngine(),
                                 jobs_dir=tmp_path / "jobs", scoring=scoring)
        assert worker.hand("job", study.decoded, label=study.label)
        held = worker.take("job")
    assert held.decoded.pet is pet and held.decoded.ct is ct and isinstance(ct, ResampledCT)
    assert held.decoded.notes == {"ct_resampled": ct.note} and ct.note["from"] and 0 < ct.note["coverage"] <= 1
    assert held.label is label
    nothing = worker.take("job")
    assert (nothing.decoded.pet, nothing.decoded.ct, nothing.label) == (None, None, None)


def test_only_a_job_with_a_place_kept_is_resampled_at_upload_and_handed_its_images(tmp_path, uploads):
    """The place is kept before the upload checks, so that a job queued behind a held one is not resampled twice
    (at upload, then by its run); taking (the run, a failed upload, a deleted job) frees the place."""
    with ThreadPoolExecutor(1) as scoring:
        worker = InferenceWorker(store=JobStore(tmp_path / "jobs.sqlite3"), engine=BaselineEngine(),
                                 jobs_dir=tmp_path / "jobs", scoring=scoring)
        assert worker.reserve("first") and worker.reserve("first")  # kept; asking again keeps it
        assert not worker.reserve("second")
        unkept = check_study(_stored(uploads), limits=UploadLimits(), resample=False)
        assert unkept.notes == {} and Geometry.of(unkept.decoded.ct) == unkept.grids["ct"]  # as uploaded
        assert not worker.hand("second", unkept.decoded, label=unkept.label)
        kept = check_study(_stored(uploads), limits=UploadLimits(), resample=True)
        resampled = kept.decoded.ct
        assert "ct_resampled" in kept.notes and resampled.grid == kept.grids["pet"]
        assert worker.hand("first", kept.decoded, label=kept.label)
        assert worker.take("first").decoded.ct is resampled
        assert worker.reserve("second")


def test_a_job_without_handed_images_reads_its_files(tmp_path, uploads, monkeypatch, processes):
    """As after a restart, or with another study's images already held (its upload checks then leave the
    resampling to the job): the same metrics and notes, from the files, with one resampling."""
    killable = KillableScoring(processes, 60.0)
    handed, _ = _run_job(tmp_path / "handed", uploads, hand=True, killable=killable)
    counting = Counting(monkeypatch)
    job, _ = _run_job(tmp_path / "read", uploads, hand=False, killable=killable)
    # The checks' reads, then the worker's (the label's in the scoring process, which counts nothing here).
    assert counting.reads == {"pet-0123456789abcdef.mha": 2, "ct-0123456789abcdef.mha": 2,
                              "label-0123456789abcdef.mha": 1}, counting.reads
    assert counting.resamplings == 1  # the worker's own: the checks did not resample what they did not keep
    assert job.metrics == handed.metrics and job.notes == handed.notes


def test_a_jobs_scoring_runs_under_the_score_timeout(tmp_path, uploads, processes, monkeypatch):
    """The worker's label scoring goes through KillableScoring, as every scoring request, which stops a call
    that passes the limit (504) and kills its process."""
    called = []
    real_call = KillableScoring.__call__

    def recorded(self, function, **kwargs):
        called.append((function.__name__, self.timeout_s))
        return real_call(self, function, **kwargs)

    monkeypatch.setattr(KillableScoring, "__call__", recorded)
    job, _ = _run_job(tmp_path / "job", uploads, hand=True, killable=KillableScoring(processes, 60.0))
    assert called == [("score_job", 60.0)] and job.metrics is not None

    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        KillableScoring(processes, 0.5)(subprocess.run, args=["sleep", "20"])
    assert caught.value.status == 504 and "0.5 s (--score-timeout)" in caught.value.reason
    assert time.monotonic() - started < 10
    assert KillableScoring(processes, 60.0)(score_job, label=None, label_path=uploads["label"],
                                            mask=sitk.ReadImage(str(uploads["label"])), study="s")["dice"] == 1.0


@pytest.mark.parametrize("seed", range(8))
def test_in_memory_scoring_matches_the_scorer_on_files(tmp_path, seed):
    """score_job on random masks (float labels and odd values included) against score_files on the same masks."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(4, 12, 3))
    label = (rng.random(shape) < rng.uniform(0.02, 0.3)).astype(rng.choice([np.uint8, np.int16, np.float32]))
    if seed % 3 == 0:
        label[0, 0, 0] = 2  # scored as lesion, with a warning
    mask = (rng.random(shape) < rng.uniform(0.02, 0.3)).astype(np.uint8)
    images = {}
    for name, array in (("label", label), ("mask", mask)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((2.0, 2.5, 3.0))
        image.SetOrigin((1.0, -2.0, 3.0))
        images[name] = image
        sitk.WriteImage(image, str(tmp_path / f"{name}.mha"))
    got = score_job(label=images["label"], label_path=tmp_path / "label.mha", mask=images["mask"], study="case")
    from_file = score_job(label=None, label_path=tmp_path / "label.mha", mask=images["mask"], study="case")
    reference = score_files(ground_truth=tmp_path / "label.mha", prediction=tmp_path / "mask.mha", study="case")
    assert got == from_file == {**reference.to_json(), "study": "case", "ground_truth_file": "label",
                                "prediction_file": "mask"}


def test_a_label_with_nan_is_a_scoring_error_naming_the_label(tmp_path):
    label = np.zeros((4, 5, 6), np.float32)
    label[1, 1, 1] = np.nan
    image = sitk.GetImageFromArray(label)
    mask = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8))
    with pytest.raises(ApiError) as caught:
        score_job(label=image, label_path=tmp_path / "label.mha", mask=mask, study="case")
    assert caught.value.field == "ground_truth" and "NaN" in caught.value.reason


def test_the_upload_checks_refuse_a_ct_that_resampled_covers_no_pet_voxel(tmp_path, uploads):
    """A one-slice CT between two PET planes passes the headers' overlap check but covers no PET voxel centre:
    the resampling finds it, and the checks refuse it as the command line does, naming the CT's upload."""
    pet = sitk.ReadImage(str(uploads["pet"]))
    slab = sitk.Image(pet.GetSize()[0], pet.GetSize()[1], 1, sitk.sitkInt16)
    slab.SetSpacing((pet.GetSpacing()[0], pet.GetSpacing()[1], pet.GetSpacing()[2] / 4))
    slab.SetOrigin(pet.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, 0.5)))  # half-way between two planes
    slab.SetDirection(pet.GetDirection())
    sitk.WriteImage(slab, str(tmp_path / "CT.mha"))
    assert ct_overlaps(Geometry.of(slab), Geometry.of(pet))
    with pytest.raises(InputError, match="does not overlap"):
        read_study(pet_path=uploads["pet"], ct_path=tmp_path / "CT.mha")
    with pytest.raises(ApiError) as caught:
        check_study(_stored({**uploads, "ct": tmp_path / "CT.mha"}), limits=UploadLimits())
    assert (caught.value.status, caught.value.field, caught.value.file, caught.value.reason) == (
        422, "ct", "CT.mha", NO_OVERLAP)
