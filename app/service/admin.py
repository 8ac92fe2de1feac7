"""`python -m app participants|phases`: the organiser's commands on the service's database."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from app.service.participants import ParticipantStore
from app.service.phases import Phase, PhaseStore, Rank, read_case_list
from app.service.settings import ServiceSettings
from petct.errors import InputError


@dataclass(frozen=True)
class PhaseRequest:
    name: str | None
    cases: Path | None
    per_day: int | None
    total: int | None
    show_cases: bool
    rank: str
    ground_truth: Path | None = None  # the folder the server will be given; every case must be in it


def _database(data_dir: Path) -> Path:
    settings = ServiceSettings(data_dir=data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the data folder: {exc.strerror}", path=data_dir) from None
    return settings.database


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def participants_command(*, action: str, name: str | None, data_dir: Path) -> int:
    store = ParticipantStore(_database(data_dir))
    if action == "list":
        for p in store.list():
            print(f"{p.name}\tadded {_when(p.created_at)}\t" + (f"revoked {_when(p.revoked_at)}" if p.revoked_at
                                                                  else "active"))
        return 0
    if not name:
        raise InputError(f"participants {action} needs a NAME")
    if action == "add":
        token = store.add(name)
        print(token)  # stdout holds the token alone, for scripts; it is shown this once and never stored
        print(f"participant {name} added; give them this token now, it cannot be shown again", file=sys.stderr)
        return 0
    store.revoke(name)
    print(f"participant {name}'s token is revoked; their submissions stay", file=sys.stderr)
    return 0


def phases_command(*, action: str, data_dir: Path, request: PhaseRequest) -> int:
    store = PhaseStore(_database(data_dir))
    if action == "list":
        for p in store.list():
            print(f"{p.name}\t{len(p.cases)} cases\t{p.per_day}/day, {p.total} in all\trank {p.rank.value}\t"
                  + ("per-case results shown" if p.show_cases else "aggregates only"))
        return 0
    missing = [flag for flag, value in (("NAME", request.name), ("--cases", request.cases),
                                        ("--per-day", request.per_day), ("--total", request.total)) if value is None]
    if missing:
        raise InputError(f"phases create needs {', '.join(missing)}")
    cases = read_case_list(request.cases)
    if request.ground_truth is not None:
        _require_ground_truth(cases, folder=request.ground_truth)
    store.create(Phase(name=request.name, cases=tuple(cases), per_day=request.per_day, total=request.total,
                       show_cases=request.show_cases, rank=Rank(request.rank)))
    print(f"phase {request.name} created: {len(cases)} cases, {request.per_day} submission(s) a day, "
          f"{request.total} in all", file=sys.stderr)
    return 0


def _require_ground_truth(cases: list[str], *, folder: Path) -> None:
    """InputError naming the cases `folder` has no ground truth for (as the server will index it)."""
    from app.service.cases import index_cases

    if not folder.is_dir():
        raise InputError("the ground-truth folder does not exist", path=folder)
    found = index_cases(folder)
    missing = [case for case in cases if case not in found]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise InputError(f"{len(missing)} of the {len(cases)} cases have no ground truth there: {shown}",
                         path=folder)
