"""Finished jobs kept between dry runs (campaigns): what makes a job the same one, a half-saved job is not
finished, and a rerun of an edition's whole protocol (the 2026 closed loop) takes every job back and scores the
same."""
from __future__ import annotations

import contextlib
import io
import json
import random
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from app.dryrun import jobstore
from app.dryrun.run import DryRunOptions, run_dry_run
from app.dryrun.runner import RunOutcome


def _files(root: Path, count: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = root / f"f{i}"
        path.write_bytes(random.Random(i).randbytes(64))
        paths.append(path)
    return paths


def test_the_key_changes_with_each_thing_a_result_depends_on_and_only_then(tmp_path):
    pet, ct, clicks, other = _files(tmp_path, 4)
    runner = {"command": "algo {input} {output}", "image": None, "model": None, "time_limit_s": 300.0,
              "memory_bytes": 2**34, "edition": "autopet-2025-interactive", "gpus": None}
    base = dict(study="S1", step=3, images=[pet, ct], clicks_file=clicks, runner=runner)
    key = jobstore.job_key(**base)
    assert jobstore.job_key(**base) == key and key.startswith("S1_step03-")
    changed = [dict(base, study="S2"), dict(base, step=4), dict(base, images=[pet, other]),
               dict(base, images=[ct, pet]), dict(base, clicks_file=other), dict(base, clicks_file=None)]
    changed += [dict(base, runner={**runner, name: value}) for name, value in
                (("command", "algo2 {input} {output}"), ("model", "/m"), ("time_limit_s", 60.0),
                 ("edition", "autopet-2026-interactive"), ("gpus", True))]
    keys = [jobstore.job_key(**options) for options in changed]
    assert len(set(keys)) == len(keys) and key not in keys
    pet.write_bytes(pet.read_bytes()[::-1])  # the same file, new content
    assert jobstore.job_key(**base) != key


def test_a_saved_job_comes_back_whole_and_a_half_saved_one_not_at_all(tmp_path):
    store, work = tmp_path / "store", tmp_path / "work"
    (work / "output" / "images").mkdir(parents=True)
    (work / "output" / "images" / "mask.mha").write_bytes(b"mask")
    (work / "log.txt").write_text("ran: baseline\n")
    outcome = RunOutcome(exit_code=0, seconds=1.5, timed_out=False, peak_rss_bytes=123, log=work / "log.txt",
                         left_processes=["sleep (pid 7)"])
    when = datetime(2026, 12, 6, 6, 0, tzinfo=timezone.utc)
    jobstore.save(store, "S1-abc", jobstore.StoredJob(outcome, True, when, when), output_dir=work / "output")
    back = jobstore.restore(store, "S1-abc", log=tmp_path / "log2.txt", output_dir=tmp_path / "out2")
    assert back == jobstore.StoredJob(RunOutcome(0, 1.5, False, 123, tmp_path / "log2.txt", ["sleep (pid 7)"]),
                                      True, when, when)
    assert (tmp_path / "out2" / "images" / "mask.mha").read_bytes() == b"mask"
    assert (tmp_path / "log2.txt").read_text() == "ran: baseline\n"
    assert [p.name for p in store.iterdir()] == ["S1-abc"]  # nothing of the saving left beside it

    (store / "S1-abc" / jobstore.JOB_JSON).unlink()  # as if the run died before the record was whole
    assert jobstore.restore(store, "S1-abc", log=tmp_path / "l3", output_dir=tmp_path / "o3") is None
    (store / f"{jobstore.PARTIAL_PREFIX}S2-def-1234").mkdir()
    jobstore.remove_partial(store)
    assert sorted(p.name for p in store.iterdir()) == ["S1-abc"]


@pytest.mark.slow
def test_a_rerun_of_the_closed_loop_takes_every_step_back_and_scores_the_same(tmp_path):
    command = f"{sys.executable} -m algorithm --input {{input}} --output {{output}} --engine baseline"
    printed, metrics = [], []
    for run in range(2):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = run_dry_run(DryRunOptions(command=command, phantoms=1, phantom_size="tiny",
                                             challenge="autopet-2026-interactive", output=tmp_path / f"run{run}",
                                             job_store=tmp_path / "store"))
        assert code == 0, out.getvalue()[-2000:]
        printed.append(out.getvalue())
        metrics.append(json.loads((tmp_path / f"run{run}" / "metrics.json").read_text()))
    steps = len(list((tmp_path / "store").glob("*/job.json")))
    assert steps == 6 and "(finished earlier)" not in printed[0] and printed[1].count("(finished earlier)") == steps
    assert metrics[0]["aggregates"] == metrics[1]["aggregates"]
    first, again = (next(iter(m["case"].values())) for m in metrics)
    assert first["steps"] == again["steps"]
