"""NnUNetEngine: an nnU-Net v2 results folder run without nnunetv2, from first upload to mask on one device."""
from __future__ import annotations

import itertools
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from algorithm.engine_contract import EngineOptions, Prediction
from algorithm.nnunet.budget import Schedule, choose_schedule
from algorithm.nnunet.compiled import CompiledNetwork
from algorithm.nnunet.folder import (
    CLICK_ROLES,
    DATASET_JSON,
    PLANS_JSON,
    SETTINGS_JSON,
    LoadedCheckpoint,
    channel_roles,
    click_encoding,
    load_checkpoint,
    read_json_object,
    read_settings,
    require_trainer_folder,
    select_folds,
)
from algorithm.nnunet.network import ArchitectureError, UNet, build_network
from algorithm.nnunet.oom import on_host_if_out_of_memory, retry_out_of_memory
from algorithm.nnunet.plans import DEFAULT_RESAMPLING_FN, Plan, read_plan
from algorithm.nnunet.preprocessing import (
    nonzero_bbox,
    pad_to_patch,
    preprocess,
    resample_logits_back,
    to_numpy_grid,
    uncrop,
)
from algorithm.nnunet.sliding_window import SlidingWindow, WindowRun, mirror_passes, seconds
from petct.clicks import ClickEncoding, Clicks, click_channels
from petct.errors import InputError

DEFAULT_TILE_BATCH = {"cuda": 4, "cpu": 1}


def _release_pinned_memory(device: torch.device) -> None:
    """Hand cached page-locked host memory (the upload's staging buffer) back to the system.

    PyTorch's caching host allocator otherwise keeps it for reuse, a full study's worth of host memory for the
    rest of the run. The public call is recent; older torch has only the private one (or neither).
    """
    if device.type != "cuda":
        return
    release = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None)
    release = release or getattr(torch._C, "_host_emptyCache", None)
    if release is not None:
        release()


# Caches that CUDA's PTX JIT, torch.compile (inductor) and Triton write under $HOME by default. The platform
# allows writes only to the output folder and the temp folder, and a non-root user may have no home at all.
CACHE_ENVIRONMENT = ("CUDA_CACHE_PATH", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def keep_caches_in_temp() -> None:
    """Point the JIT and compiler caches into the temp folder, unless the user placed them elsewhere."""
    base = Path(tempfile.gettempdir())
    for name in CACHE_ENVIRONMENT:
        os.environ.setdefault(name, str(base / f"petct-kit-{os.getuid()}" / name.lower()))


def tune_backends(device: torch.device) -> None:
    """On CUDA let cuDNN time its convolution algorithms once per shape and keep the fastest, as nnU-Net's
    predictor does: tile shapes are fixed, so the timing is paid once and 3D fp16 convolutions get their fast
    kernels."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; an explicit cuda without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r} (use auto, cuda, cuda:N or cpu)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available on this machine")
    if device.type not in ("cuda", "cpu"):
        raise InputError(f"unsupported device {name!r} (use auto, cuda, cuda:N or cpu)")
    return device


@dataclass(frozen=True)
class FoldWeights:
    fold: int
    path: Path
    tensors: list[torch.Tensor]  # parameters then buffers, in the network's order, on the device


def _load_folds(network: UNet, checkpoints: list, first: LoadedCheckpoint
                ) -> tuple[list[FoldWeights], LoadedCheckpoint, bool]:
    """Every selected fold's weights checked against `network` (strict) and kept on the network's device.

    `first` is the already loaded checkpoint of checkpoints[0] (it told which configuration to build).
    """
    folds = []
    all_safe = True
    for i, checkpoint in enumerate(checkpoints):
        loaded = first if i == 0 else load_checkpoint(checkpoint.path)
        all_safe &= loaded.safe_load
        if loaded.configuration != first.configuration:
            raise InputError(f"configuration {loaded.configuration!r} differs from fold {folds[0].fold}'s "
                             f"{first.configuration!r}", path=checkpoint.path)
        try:
            network.load_state_dict(loaded.weights, strict=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:400]
            raise InputError(f"weights do not fit the network built from {PLANS_JSON}: {detail}",
                             path=checkpoint.path) from None
        # parameters() skips the aliases the state dict repeats, so each tensor is kept once.
        tensors = [t.detach().clone() for t in itertools.chain(network.parameters(), network.buffers())]
        folds.append(FoldWeights(checkpoint.fold, checkpoint.path, tensors))
        loaded.weights = {}  # the copies above are all that is kept
    return folds, first, all_safe


class NnUNetEngine:
    """Segments a study with an nnU-Net v2 3D model: see algorithm/nnunet/__init__.py for the folder format."""

    name = "nnunet"

    def __init__(self, *, folder: Path, plan: Plan, network: torch.nn.Module, folds: list[FoldWeights],
                 trainer_name: str, mirroring_axes: tuple[int, ...] | None, channel_roles: tuple[str, ...],
                 channel_source: str, options: EngineOptions, device: torch.device, tile_batch: int,
                 safe_load: bool, load_notes: list[str]):
        self.folder = folder
        self.plan = plan
        self.network = network
        self.folds = folds
        self.trainer_name = trainer_name
        self.mirroring_axes = mirroring_axes
        self.channel_roles = channel_roles
        self.channel_source = channel_source
        self.click_encoding = ClickEncoding()  # from kit.json when the model takes click channels (from_folder)
        self.options = options
        self.device = device
        self.safe_load = safe_load
        self.load_notes = load_notes
        self._active_fold: int | None = None  # loading left the last fold in the network; copy on first use
        self._kept: _KeptStudy | None = None  # keep_study's preprocessed CT and PET
        self.window = SlidingWindow(patch_size=plan.patch_size, step_size=options.step_size, device=device,
                                    tile_batch=tile_batch, autocast=device.type == "cuda")

    @classmethod
    def from_folder(cls, folder: Path, *, options: EngineOptions, tile_batch: int | None = None) -> "NnUNetEngine":
        """Load a results folder (or the one trainer folder nested up to two levels below it)."""
        if not 0 < options.step_size <= 1:
            raise InputError(f"step size must be in (0, 1], got {options.step_size}")
        trainer = require_trainer_folder(Path(folder))
        keep_caches_in_temp()  # before CUDA starts
        plans_path, dataset_path = trainer / PLANS_JSON, trainer / DATASET_JSON
        plans, dataset = read_json_object(plans_path), read_json_object(dataset_path)
        device = resolve_device(options.device)
        tune_backends(device)
        # The configuration lives in the checkpoints; read the first to know which plan to build.
        checkpoints = select_folds(trainer, options.folds, checkpoint=options.checkpoint)
        first = load_checkpoint(checkpoints[0].path)
        configuration = first.configuration
        plan = read_plan(plans, dataset, configuration, plans_path=plans_path, dataset_path=dataset_path)
        if options.channel_order is not None:
            explicit, source = options.channel_order, "the command line"
        else:
            explicit, source = read_settings(trainer).get("channel_order"), str(trainer / SETTINGS_JSON)
        roles = channel_roles(plan.channel_names, None if explicit is None else tuple(explicit),
                              dataset_path=dataset_path, source=source)
        settings = read_settings(trainer)
        # kit.json names the encoding the model was trained with; else the edition's (options), else 2025's
        encoding = click_encoding(settings, path=trainer / SETTINGS_JSON) if "click_encoding" in settings \
            else options.click_encoding or ClickEncoding()
        try:
            network = build_network(plan.network_class, plan.arch_kwargs, input_channels=len(plan.channel_names),
                                    num_classes=plan.num_classes)
        except ArchitectureError as exc:
            raise InputError(f"configuration {configuration!r}: {exc}", path=plans_path) from None
        network = network.to(device).eval()
        folds, first, safe = _load_folds(network, checkpoints, first)
        notes = []
        if "Reorient" in plan.image_reader_writer:
            notes.append(f"plans use {plan.image_reader_writer}; images are fed in file voxel order")
        for what, r in (("data", plan.data_resampling), ("probabilities", plan.probability_resampling)):
            if r.function != DEFAULT_RESAMPLING_FN:
                notes.append(f"{what} resampling {r.function!r} replaced by {DEFAULT_RESAMPLING_FN}")
        tile_batch = tile_batch or DEFAULT_TILE_BATCH[device.type]
        engine = cls(folder=trainer, plan=plan, network=network, folds=folds, trainer_name=first.trainer_name,
                     mirroring_axes=first.mirroring_axes, channel_roles=roles,
                     channel_source=source if explicit else DATASET_JSON,
                     options=options, device=device, tile_batch=tile_batch, safe_load=safe, load_notes=notes)
        engine.click_encoding = encoding
        if options.compile:
            engine._compile()
        return engine

    def _compile(self) -> None:
        """torch.compile the network and compile it now on one full tile batch; stay eager if that fails.

        Every later call falls back to eager as well (CompiledNetwork), and batches are padded to the tile batch,
        so that predict meets no new shape unless memory runs short.
        """
        compiled = CompiledNetwork(self.network, notes=self.load_notes)
        volume = torch.zeros((len(self.channel_roles), *self.plan.patch_size), device=self.device)
        one_tile = [(slice(None),) * 3]
        self.window.pad_batches = True
        events: list[str] = []
        with torch.inference_mode():
            retry_out_of_memory(lambda: self.window.tile_logits(compiled, volume, one_tile, [()]), device=self.device,
                                give_way=self.window.shrink_tile_batch, events=events)
        # Memory is at its most free right after loading: a batch that does not fit now never will.
        self.window.configured_tile_batch = self.window.tile_batch
        self.load_notes.extend(f"compiling: {e}" for e in events)
        if compiled.active:
            self.network = compiled
        else:
            self.window.pad_batches = False

    def describe(self) -> dict[str, object]:
        return {
            "engine": self.name,
            "device": str(self.device),
            "model_folder": str(self.folder),
            "trainer": self.trainer_name,
            "configuration": self.plan.configuration,
            "network_class": self.plan.network_class.rsplit(".", 1)[-1],
            "parameters": sum(p.numel() for p in self.folds[0].tensors) if self.folds else 0,
            "folds": [f.fold for f in self.folds],
            "checkpoint": self.folds[0].path.name if self.folds else None,
            "patch_size": list(self.plan.patch_size),
            "spacing": list(self.plan.spacing),
            "channels": [f"{role} ({name})" for role, name in zip(self.channel_roles, self.plan.channel_names)],
            "channel_order_from": self.channel_source,
            "mirroring_axes": list(self.mirroring_axes or ()),
            "use_mirroring": self.options.use_mirroring,
            "step_size": self.options.step_size,
            "tile_batch": self.window.configured_tile_batch,
            "fp16_autocast": self.window.autocast,
            "compile": self.options.compile,
            "time_budget_s": self.options.time_budget_s,
            "checkpoint_loading": "weights_only" if self.safe_load else "full unpickling (weights_only=False)",
            "notes": list(self.load_notes),
        }

    def _activate(self, index: int) -> None:
        if self._active_fold == index:
            return
        with torch.no_grad():
            targets = list(itertools.chain(self._module().parameters(), self._module().buffers()))
            for target, source in zip(targets, self.folds[index].tensors):
                target.copy_(source)
        self._active_fold = index

    def _module(self) -> torch.nn.Module:
        return self.network.module if isinstance(self.network, CompiledNetwork) else self.network

    def _upload(self, pet: np.ndarray, ct: np.ndarray, clicks: Clicks | None = None) -> torch.Tensor:
        """The network's input channels as one (c, z, y, x) float32 tensor on the device."""
        images = {"pet": pet, "ct": ct}
        if any(role in CLICK_ROLES for role in self.channel_roles):
            # No clicks (step 0, or another edition's job) is two empty channels, as the protocol's first step.
            images.update(zip(CLICK_ROLES, click_channels(clicks or Clicks(), pet.shape, self.click_encoding)))
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack([np.asarray(images[r], dtype=np.float32) for r in self.channel_roles]))
        # Each channel straight into page-locked memory (no stacked copy first), then one asynchronous copy.
        staging = torch.empty((len(self.channel_roles), *pet.shape), dtype=torch.float32, pin_memory=True)
        host = staging.numpy()
        for i, role in enumerate(self.channel_roles):
            host[i] = images[role]
        return staging.to(self.device, non_blocking=True)

    def _probe_seconds_per_tile_pass(self, data: torch.Tensor, events: list[str]) -> float:
        """Time one identity pass over one tile batch (after a warm-up call), per tile; running out of memory
        shrinks the tile batch as the sliding window does (and it stays shrunk for this prediction)."""
        slices = self.window.slices(data.shape[1:])

        def probe() -> float:
            batch = slices[: self.window.tile_batch]
            self.window.tile_logits(self.network, data, batch, [()])
            start = seconds(self.device)
            self.window.tile_logits(self.network, data, batch, [()])
            return (seconds(self.device) - start) / len(batch)

        return retry_out_of_memory(probe, device=self.device, give_way=self.window.shrink_tile_batch, events=events)

    @torch.inference_mode()
    def predict(self, *, pet: np.ndarray, ct: np.ndarray, spacing_zyx: tuple[float, float, float],
                clicks: Clicks | None = None) -> Prediction:
        if pet.ndim != 3 or pet.shape != ct.shape:
            raise InputError(f"PET {pet.shape} and CT {ct.shape} must be 3D arrays of the same shape")
        timings: dict[str, float] = {}
        events: list[str] = []  # out-of-memory fallbacks taken, in order
        self.window.restore_tile_batch()
        t_start = seconds(self.device)
        data, geometry, unpad = self._prepare(pet, ct, spacing_zyx, timings, clicks)
        t_network = seconds(self.device)
        clock = _BudgetClock(budget_s=self.options.time_budget_s, device=self.device,
                             origin=t_start if self.options.clock_start is None else self.options.clock_start,
                             # post-processing and writing cost about what upload and preprocessing did
                             reserve_s=t_network - t_start, network_start=t_network)
        notes: dict[str, object] = {"folds_selected": [f.fold for f in self.folds],
                                    "tiles": len(self.window.slices(data.shape[1:])), "resampled": geometry.resampled}
        schedule = self._schedule(data, clock, notes, events)
        ensemble, runs, folds_run = self._run_folds(data, schedule, clock, timings, events)
        del data
        timings["network"] = seconds(self.device) - t_network

        t_post = seconds(self.device)
        # The full-volume float32 softmax and its companions are the last large allocations on the device.
        (mask_full, lesion_full), ensemble = on_host_if_out_of_memory(
            lambda logits: self._postprocess(logits, geometry, unpad), ensemble, events=events,
            what="post-processing")
        del ensemble
        t_download = seconds(self.device)
        timings["postprocess"] = t_download - t_post
        result = Prediction(mask=to_numpy_grid(mask_full, self.plan),
                            probabilities=None if lesion_full is None else to_numpy_grid(lesion_full, self.plan))
        t_end = time.perf_counter()
        timings["download"] = t_end - t_download
        timings["total"] = t_end - t_start
        result.timings = timings
        result.notes = {**notes, **self._run_notes(schedule, runs, folds_run, events)}
        return result

    def keep_study(self, *, pet: np.ndarray, ct: np.ndarray, spacing_zyx) -> bool:
        """Preprocess a study's CT and PET once, for predictions that differ in their clicks only.

        Later predict() calls on these same arrays preprocess the click channels alone and reuse the rest:
        nnU-Net's normalisation and resampling treat each channel on its own, and the crop box stays the CT
        and PET's while the click channels lie inside it (else that call preprocesses everything). False,
        and nothing kept, when the model has no click channels or normalises with the non-zero mask, which
        ties the channels together.
        """
        self.release_study()
        roles = self.channel_roles
        if not any(r in CLICK_ROLES for r in roles) or any(
                c.use_mask and c.scheme == "ZScoreNormalization" for c in self.plan.channels):
            return False
        static = [i for i, r in enumerate(roles) if r not in CLICK_ROLES]
        images = {"pet": pet, "ct": ct}
        tensor = torch.from_numpy(np.stack([np.asarray(images[roles[i]], dtype=np.float32) for i in static]))
        tensor = tensor.to(self.device)
        box = nonzero_bbox(tensor.permute(0, *[a + 1 for a in self.plan.transpose_forward]))
        data, geometry = preprocess(tensor, spacing_zyx, _channel_subset(self.plan, static), bbox=box)
        if not bool(torch.isfinite(data).all()):
            return False  # predict() preprocesses everything and reports the bad input
        self._kept = _KeptStudy(pet=pet, ct=ct, spacing=tuple(float(v) for v in spacing_zyx), static=static,
                                bbox=box, data=data, geometry=geometry)
        return True

    def release_study(self) -> None:
        """Forget the study keep_study prepared."""
        self._kept = None

    def _prepare_kept(self, pet: np.ndarray, ct: np.ndarray, spacing_zyx, clicks: Clicks | None):
        """(data, geometry) from the kept CT and PET and freshly preprocessed click channels; None when the
        kept study does not apply (other arrays, or click channels reaching outside its crop box)."""
        kept = getattr(self, "_kept", None)
        if kept is None or kept.pet is not pet or kept.ct is not ct or \
                kept.spacing != tuple(float(v) for v in spacing_zyx):
            return None
        roles = self.channel_roles
        moving = [i for i, r in enumerate(roles) if r in CLICK_ROLES]
        channels = dict(zip(CLICK_ROLES, click_channels(clicks or Clicks(), pet.shape, self.click_encoding)))
        tensor = torch.from_numpy(np.stack([channels[roles[i]] for i in moving])).to(self.device)
        permuted = tensor.permute(0, *[a + 1 for a in self.plan.transpose_forward])
        if bool((permuted != 0).any()):
            box = nonzero_bbox(permuted)
            if any(a < k[0] or b > k[1] for (a, b), k in zip(box, kept.bbox)):
                return None
        data, _ = preprocess(tensor, spacing_zyx, _channel_subset(self.plan, moving), bbox=kept.bbox)
        merged = torch.empty((len(roles), *data.shape[1:]), dtype=data.dtype, device=data.device)
        merged[kept.static] = kept.data
        merged[moving] = data
        return merged, kept.geometry

    def _prepare(self, pet: np.ndarray, ct: np.ndarray, spacing_zyx, timings: dict[str, float],
                 clicks: Clicks | None = None):
        """Upload, preprocess as nnU-Net does, pad to at least one patch: (data, geometry, unpad slices)."""
        t_start = seconds(self.device)
        reused = self._prepare_kept(pet, ct, spacing_zyx, clicks)
        if reused is not None:
            data, geometry = reused
            data, unpad = pad_to_patch(data, self.plan.patch_size)
            timings["upload"], timings["preprocess"] = 0.0, seconds(self.device) - t_start
            return data, geometry, unpad
        tensor = self._upload(pet, ct, clicks)
        t = seconds(self.device)  # the asynchronous upload has landed: its pinned staging buffer is free
        _release_pinned_memory(self.device)
        timings["upload"] = t - t_start
        data, geometry = preprocess(tensor, spacing_zyx, self.plan)
        del tensor
        if not bool(torch.isfinite(data).all()):
            raise InputError(f"the network input holds NaN or infinite values after {self.plan.configuration}'s "
                             f"normalisation: SUV or CT values too large for float32 arithmetic? (SUV range "
                             f"{float(np.min(pet)):.4g}..{float(np.max(pet)):.4g}, CT range "
                             f"{float(np.min(ct)):.4g}..{float(np.max(ct)):.4g})")
        data, unpad = pad_to_patch(data, self.plan.patch_size)
        timings["preprocess"] = seconds(self.device) - t
        return data, geometry, unpad

    def _mirror_axes(self) -> tuple[int, ...]:
        return tuple(self.mirroring_axes or ()) if self.options.use_mirroring else ()

    def _schedule(self, data: torch.Tensor, clock: _BudgetClock, notes: dict[str, object],
                  events: list[str]) -> Schedule:
        """Folds and mirror axes to run: all of them, or what the time budget's estimate says fits."""
        if clock.budget_s is None:
            return Schedule(len(self.folds), self._mirror_axes())
        per_pass = self._probe_seconds_per_tile_pass(data, events)
        left = clock.seconds_left()
        notes["budget_estimate_s_per_tile_pass"] = per_pass
        notes["budget_s_left_for_network"] = round(left, 3)
        return choose_schedule(seconds_left=left, seconds_per_tile_pass=per_pass,
                               tiles=len(self.window.slices(data.shape[1:])), folds=len(self.folds),
                               mirror_axes=self._mirror_axes())

    def _run_folds(self, data: torch.Tensor, schedule: Schedule, clock: _BudgetClock, timings: dict[str, float],
                   events: list[str]) -> tuple[torch.Tensor, list[WindowRun], list[int]]:
        """Sliding window per fold, ensembled; stops early when the next fold would overrun the budget."""
        passes = mirror_passes(schedule.mirror_axes)
        tiles = len(self.window.slices(data.shape[1:]))
        ensemble = None
        runs: list[WindowRun] = []
        folds_run: list[int] = []
        for index in range(schedule.folds):
            if clock.budget_s is not None and index > 0:
                per_pass = clock.seconds_since_network_start() / max(sum(r.forward_passes for r in runs), 1)
                if tiles * len(passes) * per_pass > clock.seconds_left():
                    break
            t_fold = seconds(self.device)
            self._activate(index)
            run = WindowRun()
            fold_logits = self.window.predict_logits(self.network, data, passes, run,
                                                     num_classes=self.plan.num_classes)
            # Summed and divided in float16, in fold order, as nnU-Net ensembles; on the host once a fold had to
            # accumulate there (the device is short of memory: do not bring that fold's sums back to it).
            if ensemble is None:
                ensemble = fold_logits
            else:
                ensemble = ensemble.to(fold_logits.device) if fold_logits.device.type == "cpu" else ensemble
                ensemble.add_(fold_logits.to(ensemble.device))
            del fold_logits
            runs.append(run)
            events.extend(run.events)
            folds_run.append(self.folds[index].fold)
            timings[f"network_fold_{self.folds[index].fold}"] = seconds(self.device) - t_fold
        if len(folds_run) > 1:
            ensemble /= len(folds_run)
        # isfinite makes a full-volume bool copy: where the device has no room for it, check (and go on) on the host.
        finite, ensemble = on_host_if_out_of_memory(lambda logits: bool(torch.isfinite(logits).all()), ensemble,
                                                    events=events, what="finiteness check")
        if not finite:
            raise RuntimeError(f"the network's logits hold NaN or infinite values (folds {folds_run})")
        return ensemble, runs, folds_run

    def _postprocess(self, ensemble: torch.Tensor, geometry, unpad) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Undo padding and resampling, softmax, argmax, undo cropping: (mask, lesion probabilities or None)."""
        logits = resample_logits_back(ensemble[(slice(None), *unpad)], geometry, self.plan)
        # float32 softmax of the float16 logits (on CUDA without a float32 copy of the logits first), where the
        # logits are: on the host if the device ran out of memory earlier.
        probabilities = torch.softmax(logits, dim=0, dtype=torch.float32)
        del logits
        lesion = probabilities[self.plan.lesion_label]
        if self.plan.num_classes == 2:
            # argmax without its int64 volume; a tie goes to background, as argmax's first index does.
            mask = (lesion > probabilities[0]).to(torch.uint8)
        else:
            mask = (probabilities.argmax(dim=0) == self.plan.lesion_label).to(torch.uint8)
        lesion_full = uncrop(lesion, geometry, 0.0) if self.options.probabilities else None
        del lesion, probabilities
        return uncrop(mask, geometry, 0), lesion_full

    def _run_notes(self, schedule: Schedule, runs: list[WindowRun], folds_run: list[int],
                   events: list[str]) -> dict[str, object]:
        """What actually ran, and what the time budget dropped."""
        notes: dict[str, object] = {
            "folds_run": folds_run,
            "mirror_axes": list(schedule.mirror_axes),
            "mirroring_passes_per_tile": len(mirror_passes(schedule.mirror_axes)),
            "forward_passes": sum(r.forward_passes for r in runs),
            "tile_batch": runs[-1].tile_batch if runs else self.window.tile_batch,
            "accumulated_on": runs[-1].accumulated_on if runs else str(self.device),
            "device": str(self.device),
        }
        dropped = []
        if len(folds_run) < len(self.folds):
            dropped.append(f"folds {[f.fold for f in self.folds[len(folds_run):]]}")
        if schedule.mirror_axes != self._mirror_axes():
            dropped.append(f"mirroring over axes {sorted(set(self._mirror_axes()) - set(schedule.mirror_axes))}")
        if dropped:
            notes["dropped_for_time_budget"] = dropped
        if events:
            notes["events"] = list(events)
        return notes


@dataclass(frozen=True)
class _BudgetClock:
    """The time budget's arithmetic: seconds left for the network, keeping a reserve for what follows it."""

    budget_s: float | None
    device: torch.device
    origin: float  # when the budget's clock started (process start, or the start of predict)
    reserve_s: float
    network_start: float

    def seconds_left(self) -> float:
        return self.budget_s - (seconds(self.device) - self.origin) - self.reserve_s

    def seconds_since_network_start(self) -> float:
        return seconds(self.device) - self.network_start


@dataclass
class _KeptStudy:
    """A study's CT and PET channels preprocessed once (NnUNetEngine.keep_study)."""

    pet: np.ndarray
    ct: np.ndarray
    spacing: tuple[float, ...]
    static: list[int]  # their indices among the network's channels
    bbox: tuple[tuple[int, int], ...]  # the crop box (after transpose) of these channels
    data: torch.Tensor
    geometry: object


def _channel_subset(plan: Plan, indices: list[int]) -> Plan:
    """The plan with only some of its channels' normalisations (preprocessing treats channels apart)."""
    return replace(plan, channels=tuple(plan.channels[i] for i in indices),
                   channel_names=tuple(plan.channel_names[i] for i in indices))
