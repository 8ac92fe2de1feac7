"""Fitting the work into a time budget: fewer mirroring passes first, then fewer folds."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    folds: int  # how many of the selected folds to run, in order
    mirror_axes: tuple[int, ...]  # axes mirrored; 2**len passes per tile

    @property
    def passes_per_tile(self) -> int:
        return 2 ** len(self.mirror_axes)

    def seconds(self, *, tiles: int, seconds_per_tile_pass: float) -> float:
        return self.folds * self.passes_per_tile * tiles * seconds_per_tile_pass


def candidate_schedules(folds: int, mirror_axes: tuple[int, ...]) -> list[Schedule]:
    """From the full set down to one fold without mirroring: drop mirror axes (last first), then folds."""
    out = [Schedule(folds, mirror_axes[:k]) for k in range(len(mirror_axes), -1, -1)]
    out += [Schedule(f, ()) for f in range(folds - 1, 0, -1)]
    return out


def choose_schedule(*, seconds_left: float | None, seconds_per_tile_pass: float, tiles: int, folds: int,
                    mirror_axes: tuple[int, ...]) -> Schedule:
    """The largest schedule whose estimated network time fits `seconds_left` (one fold, no mirroring at least)."""
    candidates = candidate_schedules(folds, mirror_axes)
    if seconds_left is None:
        return candidates[0]
    for schedule in candidates:
        if schedule.seconds(tiles=tiles, seconds_per_tile_pass=seconds_per_tile_pass) <= seconds_left:
            return schedule
    return candidates[-1]
