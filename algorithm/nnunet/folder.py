"""Finding and reading an nnU-Net results folder: plans, dataset description, fold checkpoints, kit.json."""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from petct.errors import InputError
from petct.jsonio import read_json

PLANS_JSON = "plans.json"
DATASET_JSON = "dataset.json"
SETTINGS_JSON = "kit.json"
CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")  # preference order
_FOLD_DIR = re.compile(r"^fold_(\d+)$")
# How deep below the given folder a trainer folder may sit: Dataset*/Trainer__Plans__config/ is two levels.
MAX_NESTING = 2
CHANNEL_ROLES = ("pet", "ct")


# A fold: its number, or "all" for nnU-Net's fold_all (trained on every case; `--folds all` selects it).
Fold = int | str
ALL_FOLD = "all"


@dataclass(frozen=True)
class FoldCheckpoint:
    fold: Fold
    path: Path


def fold_folders(folder: Path) -> dict[Fold, Path]:
    """fold_K (K a number) and fold_all folders of a trainer folder, by fold."""
    found: dict[Fold, Path] = {}
    for child in folder.iterdir() if folder.is_dir() else ():
        if not child.is_dir():
            continue
        if child.name == f"fold_{ALL_FOLD}":
            found[ALL_FOLD] = child
        elif match := _FOLD_DIR.match(child.name):
            found[int(match.group(1))] = child
    return found


def checkpoint_files(fold_folder: Path) -> list[str]:
    """Names of the checkpoint files (*.pth) in one fold folder, sorted."""
    return sorted(p.name for p in fold_folder.glob("*.pth") if p.is_file())


def _fold_checkpoints(folder: Path, checkpoint: str | None = None) -> list[FoldCheckpoint]:
    """Each fold's checkpoint: `checkpoint` by name, else checkpoint_final.pth, else checkpoint_best.pth.

    Numbered folds in order, then fold_all; folds without that checkpoint are left out.
    """
    found = []
    for fold, child in fold_folders(folder).items():
        for name in (checkpoint,) if checkpoint else CHECKPOINT_NAMES:
            if (child / name).is_file():
                found.append(FoldCheckpoint(fold, child / name))
                break
    return sorted(found, key=_fold_order)


def _fold_order(c: FoldCheckpoint) -> tuple[int, int]:
    return (1, 0) if c.fold == ALL_FOLD else (0, int(c.fold))


def _is_trainer_folder(folder: Path) -> bool:
    """plans.json, dataset.json and at least one fold folder holding a checkpoint file."""
    return ((folder / PLANS_JSON).is_file() and (folder / DATASET_JSON).is_file()
            and any(checkpoint_files(f) for f in fold_folders(folder).values()))


def find_trainer_folder(folder: Path) -> Path | None:
    """`folder` itself when it is a results folder, else the only one nested up to MAX_NESTING levels below."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if _is_trainer_folder(folder):
        return folder
    level = [folder]
    for _ in range(MAX_NESTING):
        level = [c for f in level for c in sorted(f.iterdir()) if c.is_dir() and not c.name.startswith(".")]
        hits = [c for c in level if _is_trainer_folder(c)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            return None  # ambiguous: the caller reports which ones
    return None


def is_results_folder(path: Path) -> bool:
    """True when `path` is (or holds exactly one, up to two levels down) an nnU-Net trainer results folder."""
    try:
        return find_trainer_folder(Path(path)) is not None
    except OSError:
        return False


def require_trainer_folder(folder: Path) -> Path:
    """The trainer folder in `folder`, or InputError saying what is missing or ambiguous."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("model folder does not exist or is not a folder", path=folder)
    found = find_trainer_folder(folder)
    if found is not None:
        return found
    candidates = [p.parent for p in folder.rglob(PLANS_JSON) if len(p.relative_to(folder).parts) <= MAX_NESTING + 1]
    complete = [c for c in candidates if _is_trainer_folder(c)]
    if len(complete) > 1:
        raise InputError("several nnU-Net results folders found, keep one: "
                         + ", ".join(str(c.relative_to(folder)) for c in complete), path=folder)
    where = candidates[0] if candidates else folder
    missing = [n for n in (PLANS_JSON, DATASET_JSON) if not (where / n).is_file()]
    if not any(checkpoint_files(f) for f in fold_folders(where).values()):
        missing.append("fold_K/" + " or fold_K/".join(CHECKPOINT_NAMES))
    raise InputError(f"not an nnU-Net results folder: missing {', '.join(missing)}", path=where)


def read_json_object(path: Path) -> dict:
    """A JSON file of the model folder that must hold an object (plans.json, dataset.json, kit.json)."""
    value = read_json(path, what=path.name)
    if not isinstance(value, dict):
        raise InputError("expected a JSON object", path=path)
    return value


def available_folds(folder: Path) -> list[FoldCheckpoint]:
    return _fold_checkpoints(folder)


def select_folds(folder: Path, wanted: tuple[Fold, ...] | None, *, checkpoint: str | None = None
                 ) -> list[FoldCheckpoint]:
    """The checkpoints of `wanted` folds (every numbered fold when None), or InputError saying what to pass.

    As nnUNetv2_predict: fold_all runs only when asked for (`--folds all`); `checkpoint` names the file in
    each fold folder (default checkpoint_final.pth, else checkpoint_best.pth).
    """
    folders = fold_folders(folder)
    found = {c.fold: c for c in _fold_checkpoints(folder, checkpoint)}
    what = checkpoint or " or ".join(CHECKPOINT_NAMES)
    if wanted is None:
        numbered = [c for f, c in found.items() if f != ALL_FOLD]
        if numbered:
            return numbered
        if ALL_FOLD in found:
            raise InputError(f"found only fold_{ALL_FOLD} (a model trained on all cases); pass --folds all to use "
                             "it, as nnUNetv2_predict -f all", path=folder)
        others = any(checkpoint_files(f) for f in folders.values())
        hint = ("pass --checkpoint NAME to use another file" if others else
                "training not finished, or the checkpoints were left out of the upload?")
        raise InputError(f"trainer folder without usable checkpoints: found {_describe_folds(folders)}, expected "
                         f"fold_K/{what} ({hint})", path=folder)
    if len(set(wanted)) != len(wanted):
        raise InputError(f"fold list {list(wanted)} repeats a fold", path=folder)
    missing = [f for f in wanted if f not in found]
    if missing:
        have = ", ".join(str(f) for f in sorted(found, key=lambda f: (f == ALL_FOLD, str(f)))) or "none"
        raise InputError(f"fold(s) {', '.join(map(str, missing))} requested but only fold(s) {have} have "
                         f"{what} (found {_describe_folds(folders)})", path=folder)
    return [found[f] for f in wanted]


def _describe_folds(folders: dict[Fold, Path]) -> str:
    """e.g. "fold_0 (checkpoint_latest.pth), fold_1 (empty)" or "no fold_K folders"."""
    if not folders:
        return "no fold_K folders"
    parts = []
    for fold, path in sorted(folders.items(), key=lambda kv: (kv[0] == ALL_FOLD, str(kv[0]))):
        names = checkpoint_files(path)
        parts.append(f"{path.name} ({', '.join(names) if names else 'no .pth file'})")
    return ", ".join(parts)


def read_settings(folder: Path) -> dict:
    """The optional kit.json next to plans.json: {"channel_order": ["ct", "pet"]}."""
    path = folder / SETTINGS_JSON
    if not path.is_file():
        return {}
    settings = read_json_object(path)
    unknown = set(settings) - {"channel_order"}
    if unknown:
        raise InputError(f"unknown setting(s) {sorted(unknown)}; known: channel_order", path=path)
    if "channel_order" in settings:
        order = settings["channel_order"]
        if not isinstance(order, list) or not all(isinstance(v, str) for v in order):
            raise InputError("channel_order must be a list like [\"ct\", \"pet\"]", path=path)
    return settings


def channel_roles(channel_names: tuple[str, ...], explicit: tuple[str, ...] | None, *,
                  dataset_path: Path, source: str) -> tuple[str, ...]:
    """Which study image ("pet" or "ct") feeds each network input channel.

    An explicit order (command line or kit.json, named by `source`) wins; otherwise dataset.json's names
    decide when each channel is recognisably one of them.
    """
    if explicit is not None:
        roles = tuple(str(r).lower() for r in explicit)
        bad = [r for r in roles if r not in CHANNEL_ROLES]
        if bad or len(roles) != len(channel_names):
            raise InputError(f"channel order {list(explicit)} from {source} must name {len(channel_names)} "
                             f"channel(s), each one of {list(CHANNEL_ROLES)} (dataset.json has "
                             f"{list(channel_names)})", path=dataset_path)
        return roles
    roles = tuple(_role_from_name(n) for n in channel_names)
    # Guessing fails when a name is unknown or when two channels claim the same image (e.g. both "CT").
    if None in roles or len(set(roles)) != len(roles):
        raise InputError(f"cannot tell PET from CT from channel_names {list(channel_names)}; set the order "
                         f"explicitly, e.g. {SETTINGS_JSON} {{\"channel_order\": [\"ct\", \"pet\"]}} "
                         "in the results folder or --channel-order ct,pet", path=dataset_path)
    return roles  # type: ignore[return-value]


def _role_from_name(name: str) -> str | None:
    words = set(re.split(r"[^a-z]+", name.lower()))
    if words & {"pet", "suv", "fdg", "psma"}:
        return "pet"
    if words & {"ct", "ctres"}:
        return "ct"
    return None


# What a stock nnU-Net checkpoint pickles besides tensors and builtins: numpy scalars and dtypes in the
# training log, and torch.device in init_args. Allowing these keeps torch.load(weights_only=True) usable.
def _numpy_safe_globals() -> list:
    names = []
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["scalar"])
            names.append(module.scalar)
            break
        except (ImportError, AttributeError):
            continue
    names.append(np.dtype)
    names.extend(type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_))
    return names


@dataclass
class LoadedCheckpoint:
    weights: dict
    trainer_name: str
    configuration: str
    mirroring_axes: tuple[int, ...] | None
    safe_load: bool  # loaded with weights_only=True


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Read an nnU-Net checkpoint, restricted unpickling first; InputError names the file and the problem."""
    safe = True
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # A custom trainer may pickle its own objects into init_args. nnU-Net itself always loads with
        # weights_only=False, and the model folder is the participant's own, so fall back to that.
        safe = False
        try:
            raw = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any failure here means the file is unusable
            raise InputError(f"cannot load checkpoint: {type(exc).__name__}: {exc}", path=path) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(f"cannot load checkpoint (truncated or not a torch file?): {exc}", path=path) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("network_weights"), dict):
        raise InputError("not an nnU-Net checkpoint: no 'network_weights' state dict", path=path)
    init_args = raw.get("init_args") or {}
    configuration = init_args.get("configuration") if isinstance(init_args, dict) else None
    if not isinstance(configuration, str):
        raise InputError("checkpoint lacks init_args['configuration']", path=path)
    axes = raw.get("inference_allowed_mirroring_axes")
    return LoadedCheckpoint(
        weights=raw["network_weights"],
        trainer_name=str(raw.get("trainer_name", "unknown")),
        configuration=configuration,
        mirroring_axes=None if axes is None else tuple(int(a) for a in axes),
        safe_load=safe,
    )
