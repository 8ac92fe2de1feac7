"""Converting many studies: worker processes on this machine, or a Dask cluster; resumable, with a report.

`OUT/conversion-manifest.json` holds, per finished study, its inputs' checksum, the options and its outputs;
it is rewritten (atomically) after each study, so a rerun skips what is done and redoes what is not.
`OUT/conversion-report.json` holds every study's record: converted, skipped or failed with the reason.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from dataset.convert import ConvertOptions, StudyRecord, convert_study
from dataset.discover import discover
from dataset.outputs import HDF5_NAME, merge_h5, nnunet_dataset_json
from petct.atomic import atomic_path
from petct.jsonio import read_json, write_json_atomic

log = logging.getLogger(__name__)
MANIFEST = "conversion-manifest.json"
REPORT = "conversion-report.json"


@dataclass(frozen=True)
class RunSummary:
    records: list[StudyRecord]
    unreadable: int

    @property
    def failed(self) -> list[StudyRecord]:
        return [r for r in self.records if r.status == "failed"]


def _load_manifest(out: Path) -> dict:
    path = out / MANIFEST
    return read_json(path, what="conversion manifest") if path.is_file() else {}


def _local(jobs: list[tuple], workers: int) -> Iterator[StudyRecord]:
    if workers <= 1:
        for job in jobs:
            yield convert_study(*job[:3], previous=job[3])
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(convert_study, *job[:3], previous=job[3]) for job in jobs]
        for future in as_completed(futures):
            yield future.result()


def _dask(jobs: list[tuple], scheduler) -> Iterator[StudyRecord]:
    from distributed import Client  # only --scheduler needs Dask
    from distributed import as_completed as dask_completed

    with Client(scheduler) as client:
        futures = [client.submit(convert_study, *job[:3], previous=job[3], pure=False) for job in jobs]
        for future in dask_completed(futures):
            yield future.result()


def convert_tree(dicom_root: str | Path, out: str | Path, options: ConvertOptions, *, workers: int = 1,
                 scheduler=None, progress: bool = False,
                 on_record: Callable[[StudyRecord], None] | None = None) -> RunSummary:
    """Convert every study under `dicom_root` into `out`; one study's failure never stops the others.

    `scheduler`: a Dask scheduler address (or a distributed cluster object); None runs `workers` local
    processes (1: in this process).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    found = discover(dicom_root)
    manifest = _load_manifest(out)
    jobs = [(study, out, options, manifest.get(study.key)) for study in found.studies]
    results = _dask(jobs, scheduler) if scheduler is not None else _local(jobs, workers)
    records: list[StudyRecord] = []
    started = time.monotonic()
    bar = tqdm(total=len(jobs), unit="study", disable=not progress, dynamic_ncols=True)
    for record in results:
        records.append(record)
        if record.status in ("converted", "skipped"):
            manifest[record.key] = {"checksum": record.checksum, "options": options.to_json(),
                                    "outputs": record.outputs, "record": record.to_json()}
        else:
            manifest.pop(record.key, None)
        write_json_atomic(manifest, out / MANIFEST)
        failed = sum(r.status == "failed" for r in records)
        bar.set_postfix(done=len(records) - failed, failed=failed, left=len(jobs) - len(records))
        bar.update(1)
        if on_record:
            on_record(record)
    bar.close()
    records.sort(key=lambda r: r.key)
    _finish(out, options, records)
    write_json_atomic({"dicom_root": str(dicom_root), "options": options.to_json(),
                       "seconds": round(time.monotonic() - started, 3),
                       "converted": sum(r.status == "converted" for r in records),
                       "skipped": sum(r.status == "skipped" for r in records),
                       "failed": sum(r.status == "failed" for r in records),
                       "unreadable_files": [str(p) for p in found.unreadable],
                       "studies": [r.to_json() for r in records]}, out / REPORT)
    return RunSummary(records=records, unreadable=len(found.unreadable))


def _finish(out: Path, options: ConvertOptions, records: list[StudyRecord]) -> None:
    """What belongs to the whole set: nnU-Net's dataset.json, or the one HDF5 file."""
    done = [r.key for r in records if r.status != "failed"]
    if options.layout == "nnunet":
        nnunet_dataset_json(out, count=len(done), fmt=options.fmt)
    if options.fmt == "hdf5" and done:
        with atomic_path(out / HDF5_NAME) as tmp:
            merge_h5(out, done, tmp)
