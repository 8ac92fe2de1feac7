"""What inference needs from plans.json and dataset.json, read once and checked, as plain records."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from algorithm.nnunet.network import NETWORK_CLASSES
from petct.errors import InputError

NORMALIZATION_SCHEMES = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization")
# nnU-Net's own resampling function: the only one reproduced (and the default of every stock planner).
DEFAULT_RESAMPLING_FN = "resample_data_or_seg_to_shape"
DEFAULT_DATA_RESAMPLING = {"order": 3, "order_z": 0, "force_separate_z": None}
DEFAULT_PROBABILITY_RESAMPLING = {"order": 1, "order_z": 0, "force_separate_z": None}
# Label names that mark the lesion class in multi-label datasets.
LESION_LABEL_NAMES = ("lesion", "tumor", "tumour")


@dataclass(frozen=True)
class Resampling:
    """nnU-Net's resample_data_or_seg_to_shape settings; `function` is the name the plan gives."""

    function: str
    order: int
    order_z: int
    force_separate_z: bool | None

    @classmethod
    def from_plan(cls, configuration: dict, key: str, default: dict) -> "Resampling":
        kwargs = {**default, **{k: v for k, v in (configuration.get(f"{key}_kwargs") or {}).items()
                                if k in default}}
        return cls(function=str(configuration.get(key, DEFAULT_RESAMPLING_FN)), order=int(kwargs["order"]),
                   order_z=int(kwargs["order_z"]), force_separate_z=kwargs["force_separate_z"])


@dataclass(frozen=True)
class ChannelNorm:
    """How one input channel is normalised (per plans.json)."""

    scheme: str
    use_mask: bool
    mean: float = 0.0
    std: float = 1.0
    lower: float = 0.0  # percentile_00_5
    upper: float = 0.0  # percentile_99_5


@dataclass(frozen=True)
class Plan:
    """One configuration of one results folder, resolved and validated."""

    configuration: str
    network_class: str
    arch_kwargs: dict
    patch_size: tuple[int, int, int]
    spacing: tuple[float, float, float]  # after transpose, like patch_size
    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]
    channel_names: tuple[str, ...]
    channels: tuple[ChannelNorm, ...]
    num_classes: int
    lesion_label: int  # index of the lesion class among the network outputs
    data_resampling: Resampling
    probability_resampling: Resampling
    image_reader_writer: str


def _resolve_configuration(configurations: dict, name: str, *, path: Path) -> dict:
    """A configuration with its `inherits_from` chain merged, as nnU-Net's PlansManager does."""
    seen: list[str] = []
    chain = []
    while True:
        if name not in configurations:
            raise InputError(f"configuration {name!r} not found (available: {', '.join(configurations)})", path=path)
        if name in seen:
            raise InputError(f"circular inherits_from: {' -> '.join(seen + [name])}", path=path)
        seen.append(name)
        chain.append(configurations[name])
        parent = configurations[name].get("inherits_from")
        if parent is None:
            break
        name = parent
    merged: dict = {}
    for cfg in reversed(chain):
        merged.update(cfg)
    return merged


def _label_layout(dataset: dict, *, path: Path) -> tuple[int, int]:
    """(number of network outputs, lesion output index) from dataset.json labels."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputError("'labels' is missing or empty", path=path)
    if "regions_class_order" in dataset or any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise InputError("region-based labels are not supported (one softmax over classes is)", path=path)
    values = {}
    for name, value in labels.items():
        if name == "ignore":
            continue
        values[str(name).lower()] = int(value)
    ordered = sorted(values.values())
    if ordered != list(range(len(ordered))) or len(ordered) < 2:
        raise InputError(f"labels must be 0..K-1 with a background and at least one class, got {labels}", path=path)
    if len(ordered) == 2:
        return 2, 1
    lesion = [v for k, v in values.items() if any(word in k for word in LESION_LABEL_NAMES)]
    if len(lesion) != 1:
        raise InputError(f"{len(ordered)} classes and not exactly one named like "
                         f"{'/'.join(LESION_LABEL_NAMES)}: cannot tell which is the lesion", path=path)
    return len(ordered), lesion[0]


def _channel_norms(cfg: dict, plans: dict, n_channels: int, *, path: Path) -> tuple[ChannelNorm, ...]:
    schemes = cfg.get("normalization_schemes")
    use_mask = cfg.get("use_mask_for_norm")
    if not isinstance(schemes, list) or len(schemes) != n_channels:
        raise InputError(f"normalization_schemes must list {n_channels} schemes (one per channel in "
                         f"dataset.json), got {schemes!r}", path=path)
    if not isinstance(use_mask, list) or len(use_mask) != n_channels:
        raise InputError(f"use_mask_for_norm must list {n_channels} booleans, got {use_mask!r}", path=path)
    props = plans.get("foreground_intensity_properties_per_channel") or {}
    norms = []
    for c, scheme in enumerate(schemes):
        if scheme not in NORMALIZATION_SCHEMES:
            raise InputError(f"unsupported normalization scheme {scheme!r} for channel {c} "
                             f"(supported: {', '.join(NORMALIZATION_SCHEMES)})", path=path)
        if scheme == "CTNormalization":
            p = props.get(str(c))
            try:
                norms.append(ChannelNorm(scheme, bool(use_mask[c]), mean=float(p["mean"]), std=float(p["std"]),
                                         lower=float(p["percentile_00_5"]), upper=float(p["percentile_99_5"])))
            except (KeyError, TypeError, ValueError):
                raise InputError(f"CTNormalization of channel {c} needs foreground_intensity_properties_per_channel"
                                 f"[\"{c}\"] with mean, std, percentile_00_5 and percentile_99_5", path=path) from None
        else:
            norms.append(ChannelNorm(scheme, bool(use_mask[c])))
    return tuple(norms)


def _triple(value, what: str, *, path: Path, cast=int) -> tuple:
    if not isinstance(value, list) or len(value) != 3:
        raise InputError(f"{what} must have three entries (3D configurations only), got {value!r}", path=path)
    return tuple(cast(v) for v in value)


def read_plan(plans: dict, dataset: dict, configuration: str, *, plans_path: Path, dataset_path: Path) -> Plan:
    """Resolve `configuration` of plans.json and check everything inference relies on."""
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict):
        raise InputError("'configurations' is missing", path=plans_path)
    cfg = _resolve_configuration(configurations, configuration, path=plans_path)
    if cfg.get("previous_stage"):
        raise InputError(f"configuration {configuration!r} is a cascade stage (needs the previous stage's "
                         "segmentation); only single-stage configurations are supported", path=plans_path)
    arch = cfg.get("architecture")
    if not isinstance(arch, dict) or "network_class_name" not in arch or "arch_kwargs" not in arch:
        raise InputError(f"configuration {configuration!r} has no 'architecture' section with network_class_name "
                         "and arch_kwargs (plans from nnU-Net before 2.3; re-run nnUNetv2_plan_experiment)",
                         path=plans_path)
    network_class = str(arch["network_class_name"])
    if network_class.rsplit(".", 1)[-1] not in NETWORK_CLASSES:
        raise InputError(f"unsupported network class {network_class!r} (supported: {', '.join(NETWORK_CLASSES)})",
                         path=plans_path)
    channel_names = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channel_names, dict) or not channel_names:
        raise InputError("'channel_names' is missing or empty", path=dataset_path)
    try:
        names = tuple(str(channel_names[str(i)]) for i in range(len(channel_names)))
    except KeyError:
        raise InputError(f"channel_names keys must be \"0\"..\"{len(channel_names) - 1}\", "
                         f"got {list(channel_names)}", path=dataset_path) from None
    num_classes, lesion_label = _label_layout(dataset, path=dataset_path)
    transpose_forward = plans.get("transpose_forward", [0, 1, 2])
    transpose_backward = plans.get("transpose_backward", [0, 1, 2])
    for what, value in (("transpose_forward", transpose_forward), ("transpose_backward", transpose_backward)):
        if sorted(value) != [0, 1, 2]:
            raise InputError(f"{what} must be a permutation of [0, 1, 2], got {value!r}", path=plans_path)
    return Plan(
        configuration=configuration,
        network_class=network_class,
        arch_kwargs=dict(arch["arch_kwargs"]),
        patch_size=_triple(cfg.get("patch_size"), "patch_size", path=plans_path),
        spacing=_triple(cfg.get("spacing"), "spacing", path=plans_path, cast=float),
        transpose_forward=tuple(int(v) for v in transpose_forward),
        transpose_backward=tuple(int(v) for v in transpose_backward),
        channel_names=names,
        channels=_channel_norms(cfg, plans, len(names), path=plans_path),
        num_classes=num_classes,
        lesion_label=lesion_label,
        data_resampling=Resampling.from_plan(cfg, "resampling_fn_data", DEFAULT_DATA_RESAMPLING),
        probability_resampling=Resampling.from_plan(cfg, "resampling_fn_probabilities",
                                                    DEFAULT_PROBABILITY_RESAMPLING),
        image_reader_writer=str(plans.get("image_reader_writer", "SimpleITKIO")),
    )
