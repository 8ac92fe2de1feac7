"""Cost of reading a phase's leaderboard with many submissions: rebuilt per GET (another checkout) against kept.

`python benchmarks/bench_leaderboard.py --old DIR [--submissions 1000] [--participants 50]`

The other checkout's app/service/leaderboard.py (phase_leaderboard: one metrics.json written and read back per
submission on every GET) against this one's Leaderboards (rows kept up to date as each submission is scored):
seconds per GET, the rows serialised as the endpoint answers them (median of --repeats), and for this one
also the work done when a submission is scored (median and maximum over every submission). Same process,
same submissions; prints the figures and the ratio. Checks first that both give the same rows.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np

from app.service.leaderboard import Leaderboards
from app.service.models import Leaderboard
from app.service.phases import Phase, Rank, Submission, SubmissionState
from petct.argtypes import whole_number
from timing import median_s

REPO = Path(__file__).resolve().parents[1]

METRICS = ("dice", "false_positive_volume", "false_negative_volume", "gt_volume", "pred_volume")


def submissions(count: int, participants: int, cases: int) -> list[Submission]:
    """Scored submissions with a full report each: aggregates and per-case records, as a phase stores them."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        case = {f"CASE_{c:03d}": {"study": f"CASE_{c:03d}", **{m: float(rng.uniform(0, 50)) for m in METRICS}}
                for c in range(cases)}
        aggregates = {m: {"mean": float(rng.uniform(0, 50)), "std": 1.0, "min": 0.0, "max": 9.0, "count": cases}
                      for m in METRICS}
        out.append(Submission(id=f"{i:032x}", phase="p", participant=f"p{int(rng.integers(participants)):03d}",
                              created_at=1000.0 + i, state=SubmissionState.scored, error=None,
                              report={"case": case, "aggregates": aggregates, "errors": []}))
    return out


def answer(rows: list[dict]) -> str:
    return Leaderboard(phase="p", rank="best", rows=rows).model_dump_json()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout whose leaderboard is rebuilt per GET")
    parser.add_argument("--submissions", type=whole_number(1), default=1000)
    parser.add_argument("--participants", type=whole_number(1), default=50)
    parser.add_argument("--cases", type=whole_number(1), default=100)
    parser.add_argument("--repeats", type=whole_number(1), default=5)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("old_leaderboard", args.old / "app" / "service" / "leaderboard.py")
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    every = submissions(args.submissions, args.participants, args.cases)
    for rank in (Rank.best, Rank.latest):
        phase = Phase(name="p", cases=("CASE_000",), per_day=10**6, total=10**6, show_cases=False, rank=rank)
        boards = Leaderboards()
        scored = []
        for s in every:
            started = time.perf_counter()
            boards._add(phase, s, rank=True)
            scored.append(time.perf_counter() - started)
        boards.close()
        assert [r["participant"] for r in boards.rows("p")] == \
            [r["participant"] for r in old.phase_leaderboard(phase, every)], "the two disagree"
        # Each side as the endpoint answers: the rows through the response model, to JSON.
        old_s = median_s(lambda phase=phase: answer(old.phase_leaderboard(phase, every)), args.repeats)
        new_s = median_s(lambda boards=boards: answer(boards.rows("p")), max(args.repeats, 100))
        print(f"rank {rank.value}, {args.submissions} submissions of {args.participants} participants, "
              f"{args.cases} cases each:")
        print(f"  GET, rebuilt per request (old): {old_s * 1000:10.1f} ms")
        print(f"  GET, kept up to date (new):     {new_s * 1000:10.2f} ms   ratio old/new {old_s / new_s:,.0f}")
        print(f"  update when a submission is scored (new): median {statistics.median(scored) * 1000:.2f} ms, "
              f"max {max(scored) * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
