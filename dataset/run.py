"""Converting many studies: worker processes on this machine, or a Dask cluster; resumable, with a report.

`OUT/conversion-manifest.json` holds, per finished study, its inputs' checksum, the options and its outputs;
it is rewritten (atomically) after each study, so a rerun skips what is done and redoes what is not.
`OUT/conversion-report.json` holds every study's record: converted, skipped or failed with the reason.
"""
from __future__ import annotations

import errno
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from dataset.convert import STAGING_PREFIX, ConvertOptions, StudyRecord, convert_study
from dataset.discover import StudyFiles, discover
from dataset.outputs import HDF5_NAME, merge_h5, nnunet_dataset_json
from petct.atomic import IncompleteWriteError, atomic_path
from petct.errors import InputError
from petct.jsonio import read_json, write_json_atomic
from petct.quietlogs import quiet_loggers

log = logging.getLogger(__name__)
MANIFEST = "conversion-manifest.json"
REPORT = "conversion-report.json"


@dataclass(frozen=True)
class RunSummary:
    records: list[StudyRecord]
    unreadable: int
    not_regular: list[Path] = field(default_factory=list)

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
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(convert_study, *job[:3], previous=job[3]) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
    finally:  # a run that stops early (the manifest cannot be written) leaves no study queued
        pool.shutdown(wait=True, cancel_futures=True)


class SchedulerLost(Exception):
    """The Dask scheduler went away (or could not be reached) before every study had its record."""


def _dask(jobs: list[tuple], scheduler) -> Iterator[StudyRecord]:
    """Each study one task; a worker that dies mid-study costs the study a retry elsewhere (Dask's
    allowed-failures), and a study's outputs appear only whole (staging folder, then renames)."""
    from distributed import Client  # only --scheduler needs Dask
    from distributed import as_completed as dask_completed
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    with quiet_loggers("distributed"):  # reconnection tracebacks: the run says what happened in one line
        try:
            client = Client(scheduler)
        except OSError as exc:  # TimeoutError included
            raise SchedulerLost(f"cannot reach it: {_first_line(exc)}") from None
        with client:
            futures = {client.submit(convert_study, *job[:3], previous=job[3], pure=False): job[0]
                       for job in jobs}
            try:
                for future in dask_completed(futures):
                    yield _dask_record(future, futures[future])
            except (FutureCancelledError, CommClosedError, OSError) as exc:
                raise SchedulerLost(_first_line(exc)) from None


def _dask_record(future, study: StudyFiles) -> StudyRecord:
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    try:
        return future.result()
    except KilledWorker as exc:  # the study took down every worker it was given
        reason = (f"the worker converting this study died each time it was tried ({exc}); out of memory? "
                  "(--max-decoded-bytes)")
    except (FutureCancelledError, CommClosedError):  # the scheduler went away: not this study's fault
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. the task could not be sent: this study's failure only
        reason = f"internal error: {type(exc).__name__}: {exc}"
    return StudyRecord(key=study.key, patient=study.patient, study=study.study_name, status="failed", reason=reason)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def convert_tree(dicom_root: str | Path, out: str | Path, options: ConvertOptions, *, workers: int = 1,
                 scheduler=None, progress: bool = False,
                 on_record: Callable[[StudyRecord], None] | None = None) -> RunSummary:
    """Convert every study under `dicom_root` into `out`; one study's failure never stops the others.

    `scheduler`: a Dask scheduler address (or a distributed cluster object); None runs `workers` local
    processes (1: in this process).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _remove_staging(out)  # left by a run that was killed while writing a study
    found = discover(dicom_root, max_decoded_bytes=options.max_decoded_bytes)
    for path in found.not_regular:
        log.warning("skipped %s: not a regular file (a FIFO, socket or device)", path)
    for path in found.too_large:
        log.warning("skipped %s: a deflated file that inflates past --max-decoded-bytes (%d bytes)", path,
                    options.max_decoded_bytes)
    manifest = _load_manifest(out)
    jobs = [(study, out, options, manifest.get(study.key)) for study in found.studies]
    results = _dask(jobs, scheduler) if scheduler is not None else _local(jobs, workers)
    records: list[StudyRecord] = []
    started = time.monotonic()
    bar = tqdm(total=len(jobs), unit="study", disable=not progress, dynamic_ncols=True)
    try:
        for record in results:
            records.append(record)
            if record.status in ("converted", "skipped"):
                manifest[record.key] = {"checksum": record.checksum, "options": options.to_json(),
                                        "outputs": record.outputs, "record": record.to_json()}
            else:
                manifest.pop(record.key, None)
            _write_record(manifest, out / MANIFEST, what="conversion manifest")
            failed = sum(r.status == "failed" for r in records)
            bar.set_postfix(done=len(records) - failed, failed=failed, left=len(jobs) - len(records))
            bar.update(1)
            if on_record:
                on_record(record)
    except SchedulerLost as exc:
        raise InputError(_lost(exc, scheduler=scheduler, studies=found.studies, done=records, out=out)) from None
    finally:
        bar.close()
        if hasattr(results, "close"):
            results.close()
    _remove_staging(out)  # left by a worker that died mid-study (its study was redone elsewhere)
    records.sort(key=lambda r: r.key)
    _finish(out, options, records)
    _write_record({"dicom_root": str(dicom_root), "options": options.to_json(),
                   "seconds": round(time.monotonic() - started, 3),
                   "converted": sum(r.status == "converted" for r in records),
                   "skipped": sum(r.status == "skipped" for r in records),
                   "failed": sum(r.status == "failed" for r in records),
                   "unreadable_files": [str(p) for p in found.unreadable],
                   "not_regular_files": [str(p) for p in found.not_regular],
                   "too_large_files": [str(p) for p in found.too_large],
                   "studies": [r.to_json() for r in records]}, out / REPORT, what="conversion report")
    return RunSummary(records=records, unreadable=len(found.unreadable), not_regular=found.not_regular)


def _lost(exc: SchedulerLost, *, scheduler, studies: list[StudyFiles], done: list[StudyRecord], out: Path) -> str:
    """One line: what finished (the manifest keeps it), what did not, and how to go on."""
    finished = {r.key for r in done if r.status != "failed"}
    left = [s.key for s in studies if s.key not in finished]
    address = getattr(scheduler, "scheduler_address", scheduler)
    names = ", ".join(left[:5]) + (", ..." if len(left) > 5 else "")
    return (f"lost the Dask scheduler {address} ({exc}): {len(finished)} of {len(studies)} studies finished (kept in "
            f"{out / MANIFEST}), {len(left)} not ({names}); run the same command again to convert only those")


def _remove_staging(out: Path) -> None:
    for stale in out.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def _write_record(value: dict, path: Path, *, what: str) -> None:
    """write_json_atomic, or InputError (one line) when the disk is full or the file cannot be written."""
    try:
        write_json_atomic(value, path)
    except OSError as exc:
        if isinstance(exc, IncompleteWriteError) or exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(f"the disk is full: cannot write the {what}; free space and run again (studies "
                             "the manifest does not hold are converted again)", path=path) from None
        raise InputError(f"cannot write the {what}: {exc.strerror or exc}", path=path) from None


def _finish(out: Path, options: ConvertOptions, records: list[StudyRecord]) -> None:
    """What belongs to the whole set: nnU-Net's dataset.json, or the one HDF5 file."""
    done = [r.key for r in records if r.status != "failed"]
    if options.layout == "nnunet":
        nnunet_dataset_json(out, count=len(done), fmt=options.fmt)
    if options.fmt == "hdf5" and done:
        with atomic_path(out / HDF5_NAME) as tmp:
            merge_h5(out, done, tmp)
