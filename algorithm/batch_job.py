"""One study of predict-folder as a job that can run anywhere (this process or a Dask worker): read, predict,
write the mask atomically, and say how it went in a small picklable record; a failure is the study's own."""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from algorithm.batch_inputs import BatchCase
from algorithm.batch_select import mask_path
from algorithm.failures import describe_failure
from algorithm.loaded_engines import EngineSpec, loaded_engine
from algorithm.pipeline import read_study, segment_arrays
from petct.imageio import write_image_atomic


@dataclass(frozen=True)
class StudyOutcome:
    key: str
    mask: Path | None  # the written mask; None when the study failed
    error: str | None  # one line: the file and the problem
    exit_code: int  # 0, or the code a single-study run would exit with
    seconds: float  # wall time on the worker, model loading included when this study loaded it
    cpu_seconds: float  # the worker process's CPU time over the same span
    where: str  # host:pid that ran it
    engine: dict[str, object] | None = None  # the engine's describe(), for the run's last log line


def predict_study(case: BatchCase, *, spec: EngineSpec, output_dir: Path, suffix: str) -> StudyOutcome:
    """Segment `case` with the engine kept loaded in this process for `spec`; never raises for the study's faults."""
    wall, cpu = time.perf_counter(), time.process_time()
    where = f"{socket.gethostname()}:{os.getpid()}"
    description = None
    try:
        engine = loaded_engine(spec)
        description = engine.describe()
        result = segment_arrays(read_study(pet_path=case.pet, ct_path=case.ct), engine=engine)
        written = write_image_atomic(result.mask, mask_path(case, output_dir=output_dir, suffix=suffix),
                                     compress=True)
    except Exception as exc:  # noqa: BLE001 - a study's failure is its own record, never the worker's crash
        code, message = describe_failure(exc)
        return StudyOutcome(case.key, None, message, code, time.perf_counter() - wall, time.process_time() - cpu,
                            where, description)
    return StudyOutcome(case.key, written, None, 0, time.perf_counter() - wall, time.process_time() - cpu, where,
                        description)
