"""The per-case CSV (`--csv`), in the columns of the organisers' scripts; undefined values are empty cells."""
from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from petct.atomic import atomic_path

# The 2022-2024 scripts' single-prediction columns (the 2025 script writes the same for non-interactive runs).
SINGLE_COLUMNS = ("gt_name", "dice_sc", "false_pos_vol", "false_neg_vol")


def single_rows(results) -> list[list[object]]:
    """One row per (case, StudyResult) pair of a single-prediction run."""
    return [[case.study, r.metrics.dice, r.metrics.false_positive_volume, r.metrics.false_negative_volume]
            for case, r in sorted(results, key=lambda pair: pair[0].study)]


def write_case_csv(path: Path, *, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write the CSV atomically."""
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for row in rows:
                writer.writerow(["" if isinstance(v, float) and not math.isfinite(v) else v for v in row])
    return Path(path)
