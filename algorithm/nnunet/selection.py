"""Which trainer folder(s) of a model location run: nnUNetv2_predict's -tr/-p/-c, -f all and -chk.

A model location is an nnU-Net trainer folder (`<trainer>__<plans>__<configuration>/` with plans.json,
dataset.json and fold_K/), or holds trainer folders up to two levels down (`Dataset*/<trainer folder>/`).
Anything else that is not empty is an error that says what was found and what was expected: running
the weight-free baseline instead would rank a participant on a model they never submitted.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from algorithm.nnunet.folder import (
    DATASET_JSON,
    MAX_NESTING,
    PLANS_JSON,
    FoldCheckpoint,
    checkpoint_files,
    select_folds,
)
from petct.errors import InputError

# How deep to look, only to say where a misplaced results folder is (a tarball packed one level too high).
SEARCH_DEPTH_FOR_HINTS = 4
_FOLD_NAME = re.compile(r"^fold_(\d+|all)$")
SHOWN = 8  # entries named in a message before "..."


@dataclass(frozen=True)
class ModelChoice:
    """nnUNetv2_predict's model options; None: whatever the location holds (when that is one thing)."""

    trainer: str | None = None
    plans: str | None = None
    configurations: tuple[str, ...] | None = None  # several: their probabilities are averaged
    folds: tuple[int | str, ...] | None = None
    checkpoint: str | None = None

    @classmethod
    def of(cls, options) -> "ModelChoice":
        """The choice carried by an EngineOptions."""
        return cls(trainer=options.trainer, plans=options.plans, configurations=options.configurations,
                   folds=options.folds, checkpoint=options.checkpoint)


@dataclass(frozen=True)
class TrainerFolder:
    """One trainer folder to run, with the fold checkpoints the choice selects in it."""

    path: Path
    checkpoints: tuple[FoldCheckpoint, ...]


def split_name(name: str) -> tuple[str, str, str] | None:
    """`Trainer__Plans__configuration` -> its three parts (None for other names)."""
    parts = name.split("__")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


def resolve(location: Path, choice: ModelChoice) -> list[TrainerFolder]:
    """The trainer folders `choice` selects in `location`, each with its checkpoints; else InputError."""
    location = Path(location)
    if not location.exists():
        raise InputError("model folder does not exist", path=location)
    if not location.is_dir():
        raise InputError("model must be a folder (an nnU-Net results folder), not a file", path=location)
    candidates = require_findable(location)
    chosen = _choose(location, candidates, choice)
    return [TrainerFolder(path, tuple(_checked_folds(path, choice))) for path in chosen]


def pass_model(folder: Path, fold: str | None) -> str:
    """The algorithm's hint: the --model (and --folds) to pass instead."""
    return f"pass --model {folder}" + (f" --folds {fold}" if fold else "")


def require_findable(location: Path, *, hint: Callable[[Path, str | None], str] = pass_model) -> list[Path]:
    """The folders holding plans.json where the algorithm looks in `location`; else InputError saying what it
    holds (a fold folder, results nested too deep, checkpoints without plans) with `hint(folder, fold)`."""
    _refuse_fold_folder(location, hint)
    candidates = _candidates(location)
    if not candidates:
        raise InputError(_nothing_usable(location, hint), path=location)
    return candidates


def _refuse_fold_folder(location: Path, hint: Callable[[Path, str | None], str]) -> None:
    """`--model .../fold_0`: one level too deep; say which folder and which --folds to pass instead."""
    checkpoints = checkpoint_files(location)
    if (location / PLANS_JSON).is_file() or not checkpoints:
        return
    match = _FOLD_NAME.match(location.name)
    fold = match.group(1) if match else None
    raise InputError(f"this is a fold folder (holds {', '.join(checkpoints)}), "
                     f"not a trainer folder: {hint(location.parent, fold)}", path=location)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(c for c in folder.iterdir() if c.is_dir() and not c.name.startswith("."))


def _candidates(location: Path) -> list[Path]:
    """Folders holding plans.json: the location itself, else those up to MAX_NESTING levels below."""
    if (location / PLANS_JSON).is_file():
        return [location]
    found, level = [], [location]
    for _ in range(MAX_NESTING):
        level = [c for f in level for c in _subfolders(f)]
        found += [c for c in level if (c / PLANS_JSON).is_file()]
    return found


def _nothing_usable(location: Path, hint: Callable[[Path, str | None], str]) -> str:
    """What a non-empty location without a trainer folder holds, and what was expected."""
    deep = sorted(p.parent for p in _walk(location, SEARCH_DEPTH_FOR_HINTS) if p.name == PLANS_JSON)
    expected = (f"expected {PLANS_JSON}, {DATASET_JSON} and fold_K/checkpoint_final.pth in it or up to "
                f"{MAX_NESTING} levels down (Dataset*/<trainer>__<plans>__<configuration>/)")
    if deep:
        where = ", ".join(str(p.relative_to(location)) for p in deep[:SHOWN])
        return f"nnU-Net results folder(s) nested too deep: {where}; {expected}; repack the model or " \
               f"{hint(deep[0], None)}"
    checkpoints = [p for p in _walk(location, SEARCH_DEPTH_FOR_HINTS) if p.suffix == ".pth"]
    if checkpoints:
        where = ", ".join(str(p.relative_to(location)) for p in checkpoints[:SHOWN])
        return f"found checkpoint(s) {where} but no {PLANS_JSON}; {expected}"
    return f"holds no nnU-Net results folder (found {_listing(location)}); {expected}"


def _walk(folder: Path, depth: int):
    """Files up to `depth` levels below `folder` (hidden ones skipped), without following links forever."""
    level = [folder]
    for _ in range(depth):
        nxt = []
        for f in level:
            for c in sorted(f.iterdir()):
                if c.name.startswith("."):
                    continue
                if c.is_dir():
                    nxt.append(c)
                elif c.is_file():
                    yield c
        level = nxt


def _listing(folder: Path) -> str:
    names = [c.name + ("/" if c.is_dir() else "") for c in sorted(folder.iterdir()) if not c.name.startswith(".")]
    if not names:
        return "nothing"
    return ", ".join(names[:SHOWN]) + (f", ... ({len(names)} entries)" if len(names) > SHOWN else "")


def _choose(location: Path, candidates: list[Path], choice: ModelChoice) -> list[Path]:
    """The candidates `choice` names: one, or one per configuration to ensemble."""
    shown = ", ".join(str(c.relative_to(location)) or "." for c in candidates[:SHOWN])
    wanted = {"--trainer": choice.trainer, "--plans": choice.plans}
    filtered = [c for c in candidates if _matches(c, choice.trainer, choice.plans, choice.configurations)]
    given = [f"{flag} {value}" for flag, value in wanted.items() if value]
    if choice.configurations:
        given.append("--configuration " + ",".join(choice.configurations))
    if not filtered:
        raise InputError(f"no trainer folder matches {' '.join(given)}: found {shown} "
                         "(folder names are <trainer>__<plans>__<configuration>)", path=location)
    if choice.configurations:
        chosen = []
        for configuration in choice.configurations:
            hits = [c for c in filtered if _matches(c, None, None, (configuration,))]
            if not hits:
                raise InputError(f"no trainer folder for configuration {configuration!r}: found {shown}", path=location)
            if len(hits) > 1:
                raise InputError(_ambiguous(location, hits, f"configuration {configuration!r}"), path=location)
            chosen.append(hits[0])
        return chosen
    if len(filtered) > 1:
        raise InputError(_ambiguous(location, filtered, "this model location"), path=location)
    return filtered


def _matches(folder: Path, trainer: str | None, plans: str | None, configurations: tuple[str, ...] | None) -> bool:
    if trainer is None and plans is None and not configurations:
        return True
    parts = split_name(folder.name)
    if parts is None:
        return False
    return ((trainer is None or parts[0] == trainer) and (plans is None or parts[1] == plans)
            and (not configurations or parts[2] in configurations))


def _ambiguous(location: Path, folders: list[Path], what: str) -> str:
    """Several trainer folders: list them and the options that pick one (or ensemble configurations)."""
    names = ", ".join(str(f.relative_to(location)) or "." for f in folders[:SHOWN])
    parts = [split_name(f.name) for f in folders]
    options = []
    for index, flag in enumerate(("--trainer", "--plans", "--configuration")):
        values = sorted({p[index] for p in parts if p})
        if len(values) > 1:
            options.append(f"{flag} {{{','.join(values)}}}" if flag != "--configuration" else
                           f"{flag} one of {', '.join(values)} (or several, comma-separated, to ensemble them)")
    how = "; ".join(options) if options else "keep one of them in the model location"
    return f"{len(folders)} trainer folders for {what}: {names}; choose with {how}"


def _checked_folds(path: Path, choice: ModelChoice) -> list[FoldCheckpoint]:
    """The folds to run in one trainer folder (dataset.json must be there too)."""
    if not (path / DATASET_JSON).is_file():
        raise InputError(f"trainer folder has {PLANS_JSON} but no {DATASET_JSON}", path=path)
    return select_folds(path, choice.folds, checkpoint=choice.checkpoint)
