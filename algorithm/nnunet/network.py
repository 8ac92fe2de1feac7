"""PlainConvUNet and ResidualEncoderUNet rebuilt from a plan, state-dict compatible with nnU-Net checkpoints.

The module tree (attribute names, nesting, and the places where one module is registered twice) follows
dynamic_network_architectures exactly, because nnU-Net checkpoints store every alias: a conv appears as
both `...convs.0.conv.weight` and `...convs.0.all_modules.0.weight`, and the encoder appears again under
`decoder.encoder.`. Only inference is needed, so there is no weight initialisation and no deep supervision
output (the deep-supervision heads still exist so that their weights load).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# Operation names as plans.json spells them (module path or short torch.nn path), mapped to torch classes.
# An allowlist rather than pydoc.locate: a plan is data and should not be able to import arbitrary code.
_CONV_OPS = {"Conv3d": nn.Conv3d}
_NORM_OPS = {"InstanceNorm3d": nn.InstanceNorm3d, "BatchNorm3d": nn.BatchNorm3d}
_DROPOUT_OPS = {"Dropout": nn.Dropout, "Dropout3d": nn.Dropout3d}
_NONLINS = {"LeakyReLU": nn.LeakyReLU, "ReLU": nn.ReLU, "PReLU": nn.PReLU, "ELU": nn.ELU, "GELU": nn.GELU,
            "SiLU": nn.SiLU}
_BLOCKS = ("BasicBlockD", "BottleneckD")
NETWORK_CLASSES = ("PlainConvUNet", "ResidualEncoderUNet")


class ArchitectureError(ValueError):
    """The plan names an architecture or an option this rebuild does not support."""


def _short_name(qualified: str) -> str:
    return qualified.rsplit(".", 1)[-1]


def _lookup(table: dict, name: str | None, what: str, *, optional: bool = False):
    if name is None:
        if optional:
            return None
        raise ArchitectureError(f"{what} is missing")
    cls = table.get(_short_name(str(name)))
    if cls is None:
        raise ArchitectureError(f"unsupported {what} {name!r} (supported: {', '.join(sorted(table))})")
    return cls


def _per_stage(value, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def _triple(value) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * 3


@dataclass(frozen=True)
class Ops:
    """The layer classes and their keyword arguments shared by every block of one network."""

    conv: type
    norm: type | None
    norm_kwargs: dict = field(default_factory=dict)
    dropout: type | None = None
    dropout_kwargs: dict = field(default_factory=dict)
    nonlin: type | None = None
    nonlin_kwargs: dict = field(default_factory=dict)
    conv_bias: bool = False


class ConvDropoutNormReLU(nn.Module):
    def __init__(self, ops: Ops, in_ch: int, out_ch: int, kernel, stride, *, use_dropout: bool = True,
                 use_nonlin: bool = True, conv_bias: bool | None = None, nonlin_first: bool = False):
        super().__init__()
        kernel = _triple(kernel)
        self.conv = ops.conv(in_ch, out_ch, kernel, _triple(stride), padding=[(k - 1) // 2 for k in kernel],
                             dilation=1, bias=ops.conv_bias if conv_bias is None else conv_bias)
        layers: list[nn.Module] = [self.conv]
        if use_dropout and ops.dropout is not None:
            self.dropout = ops.dropout(**ops.dropout_kwargs)
            layers.append(self.dropout)
        if ops.norm is not None:
            self.norm = ops.norm(out_ch, **ops.norm_kwargs)
            layers.append(self.norm)
        if use_nonlin and ops.nonlin is not None:
            self.nonlin = ops.nonlin(**ops.nonlin_kwargs)
            layers.append(self.nonlin)
        if nonlin_first and ops.norm is not None and use_nonlin and ops.nonlin is not None:
            layers[-1], layers[-2] = layers[-2], layers[-1]
        self.all_modules = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_modules(x)


class StackedConvBlocks(nn.Module):
    def __init__(self, ops: Ops, n_convs: int, in_ch: int, out_ch: int, kernel, first_stride, *,
                 nonlin_first: bool = False):
        super().__init__()
        self.convs = nn.Sequential(*[
            ConvDropoutNormReLU(ops, in_ch if i == 0 else out_ch, out_ch, kernel, first_stride if i == 0 else 1,
                                nonlin_first=nonlin_first)
            for i in range(n_convs)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class _Encoder(nn.Module):
    """Stages run in order (after an optional stem); each stage's output is a skip connection for the decoder."""

    def _set_stages(self, stages: list[nn.Module], *, features: list[int], strides: list, kernels: list) -> None:
        self.stages = nn.Sequential(*stages)
        self.output_channels = list(features)
        self.strides = [_triple(s) for s in strides]
        self.kernel_sizes = list(kernels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.stem is not None:
            x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class PlainConvEncoder(_Encoder):
    def __init__(self, ops: Ops, in_ch: int, features: list[int], kernels: list, strides: list,
                 n_convs: list[int], *, nonlin_first: bool):
        super().__init__()
        self.stem = None
        stages = []
        for feat, kernel, stride, n in zip(features, kernels, strides, n_convs):
            stages.append(nn.Sequential(StackedConvBlocks(ops, n, in_ch, feat, kernel, stride,
                                                          nonlin_first=nonlin_first)))
            in_ch = feat
        self._set_stages(stages, features=features, strides=strides, kernels=kernels)


class BasicBlockD(nn.Module):
    def __init__(self, ops: Ops, in_ch: int, out_ch: int, kernel, stride):
        super().__init__()
        self.conv1 = ConvDropoutNormReLU(ops, in_ch, out_ch, kernel, stride)
        self.conv2 = ConvDropoutNormReLU(ops, out_ch, out_ch, kernel, 1, use_dropout=False, use_nonlin=False)
        self.nonlin2 = ops.nonlin(**ops.nonlin_kwargs) if ops.nonlin is not None else nn.Identity()
        self.skip = _residual_skip(ops, in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        out = out + self.skip(x)
        return self.nonlin2(out)


class BottleneckD(nn.Module):
    def __init__(self, ops: Ops, in_ch: int, bottleneck_ch: int, out_ch: int, kernel, stride):
        super().__init__()
        self.conv1 = ConvDropoutNormReLU(ops, in_ch, bottleneck_ch, 1, 1, use_dropout=False)
        self.conv2 = ConvDropoutNormReLU(ops, bottleneck_ch, bottleneck_ch, kernel, stride)
        self.conv3 = ConvDropoutNormReLU(ops, bottleneck_ch, out_ch, 1, 1, use_dropout=False, use_nonlin=False)
        self.nonlin3 = ops.nonlin(**ops.nonlin_kwargs) if ops.nonlin is not None else nn.Identity()
        self.skip = _residual_skip(ops, in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.conv2(self.conv1(x)))
        out = out + self.skip(x)
        return self.nonlin3(out)


def _residual_skip(ops: Ops, in_ch: int, out_ch: int, stride) -> nn.Module:
    """ResNet-D shortcut: average pooling where the block strides, a 1x1 conv where the width changes."""
    stride = _triple(stride)
    layers: list[nn.Module] = []
    if any(s != 1 for s in stride):
        layers.append(nn.AvgPool3d(stride, stride))
    if in_ch != out_ch:
        layers.append(ConvDropoutNormReLU(ops, in_ch, out_ch, 1, 1, use_dropout=False, use_nonlin=False,
                                          conv_bias=False))
    # nn.Identity holds no parameters, so the state dict matches the original's plain lambda.
    return nn.Sequential(*layers) if layers else nn.Identity()


class StackedResidualBlocks(nn.Module):
    def __init__(self, ops: Ops, n_blocks: int, in_ch: int, out_ch: int, kernel, first_stride, *,
                 block: str, bottleneck_ch: int | None):
        super().__init__()
        blocks = []
        for i in range(n_blocks):
            cin, stride = (in_ch, first_stride) if i == 0 else (out_ch, 1)
            if block == "BasicBlockD":
                blocks.append(BasicBlockD(ops, cin, out_ch, kernel, stride))
            else:
                if bottleneck_ch is None:
                    raise ArchitectureError("BottleneckD blocks need bottleneck_channels")
                blocks.append(BottleneckD(ops, cin, bottleneck_ch, out_ch, kernel, stride))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ResidualEncoder(_Encoder):
    def __init__(self, ops: Ops, in_ch: int, features: list[int], kernels: list, strides: list,
                 n_blocks: list[int], *, block: str, bottleneck_channels: list, stem_channels: int | None):
        super().__init__()
        stem_channels = features[0] if stem_channels is None else stem_channels
        self.stem = StackedConvBlocks(ops, 1, in_ch, stem_channels, kernels[0], 1)
        in_ch = stem_channels
        stages = []
        for feat, kernel, stride, n, bott in zip(features, kernels, strides, n_blocks, bottleneck_channels):
            stages.append(StackedResidualBlocks(ops, n, in_ch, feat, kernel, stride, block=block, bottleneck_ch=bott))
            in_ch = feat
        self._set_stages(stages, features=features, strides=strides, kernels=kernels)


class UNetDecoder(nn.Module):
    def __init__(self, ops: Ops, encoder: nn.Module, num_classes: int, n_convs: list[int], *, nonlin_first: bool):
        super().__init__()
        # Registered again here because nnU-Net's decoder holds its encoder, so checkpoints carry decoder.encoder.*.
        self.encoder = encoder
        channels, strides, kernels = encoder.output_channels, encoder.strides, encoder.kernel_sizes
        stages, transpconvs, seg_layers = [], [], []
        for s in range(1, len(channels)):
            below, skip = channels[-s], channels[-(s + 1)]
            stride = strides[-s]
            transpconvs.append(nn.ConvTranspose3d(below, skip, stride, stride, bias=ops.conv_bias))
            stages.append(StackedConvBlocks(ops, n_convs[s - 1], 2 * skip, skip, kernels[-(s + 1)], 1,
                                            nonlin_first=nonlin_first))
            seg_layers.append(nn.Conv3d(skip, num_classes, 1, 1, 0, bias=True))
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(transpconvs)
        # Only the last head is used at inference; the others are the deep-supervision heads.
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for s, (up, stage) in enumerate(zip(self.transpconvs, self.stages)):
            x = stage(torch.cat((up(x), skips[-(s + 2)]), 1))
        return self.seg_layers[-1](x)


class UNet(nn.Module):
    """Encoder plus decoder: the common shape of both nnU-Net network classes."""

    def __init__(self, encoder: nn.Module, decoder: UNetDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


_COMMON_KWARGS = {"n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage_decoder",
                  "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op", "dropout_op_kwargs", "nonlin",
                  "nonlin_kwargs", "deep_supervision"}
_CLASS_KWARGS = {"PlainConvUNet": {"n_conv_per_stage", "nonlin_first"},
                 "ResidualEncoderUNet": {"n_blocks_per_stage", "block", "bottleneck_channels", "stem_channels"}}


def build_network(class_name: str, arch_kwargs: dict, *, input_channels: int, num_classes: int) -> UNet:
    """The network a plan's `architecture` section describes; raises ArchitectureError for what is unsupported."""
    short = _short_name(class_name)
    if short not in NETWORK_CLASSES:
        raise ArchitectureError(f"unsupported network class {class_name!r} (supported: {', '.join(NETWORK_CLASSES)})")
    unknown = set(arch_kwargs) - _COMMON_KWARGS - _CLASS_KWARGS[short]
    if unknown:
        raise ArchitectureError(f"unsupported architecture option(s) for {short}: {', '.join(sorted(unknown))}")
    kw = arch_kwargs
    try:
        n = int(kw["n_stages"])
        conv = _lookup(_CONV_OPS, kw.get("conv_op"), "conv_op (only 3D networks are supported)")
        ops = Ops(conv=conv,
                  norm=_lookup(_NORM_OPS, kw.get("norm_op"), "norm_op", optional=True),
                  norm_kwargs=dict(kw.get("norm_op_kwargs") or {}),
                  dropout=_lookup(_DROPOUT_OPS, kw.get("dropout_op"), "dropout_op", optional=True),
                  dropout_kwargs=dict(kw.get("dropout_op_kwargs") or {}),
                  nonlin=_lookup(_NONLINS, kw.get("nonlin"), "nonlin", optional=True),
                  nonlin_kwargs=dict(kw.get("nonlin_kwargs") or {}),
                  conv_bias=bool(kw.get("conv_bias", False)))
        features = [int(f) for f in _per_stage(kw["features_per_stage"], n)]
        kernels = _per_stage(kw["kernel_sizes"], n)
        strides = _per_stage(kw["strides"], n)
        n_dec = [int(v) for v in _per_stage(kw["n_conv_per_stage_decoder"], n - 1)]
        if not (len(features) == len(kernels) == len(strides) == n and len(n_dec) == n - 1):
            raise ArchitectureError(f"per-stage lists do not match n_stages={n}")
        if short == "PlainConvUNet":
            nonlin_first = bool(kw.get("nonlin_first", False))
            encoder = PlainConvEncoder(ops, input_channels, features, kernels, strides,
                                       [int(v) for v in _per_stage(kw["n_conv_per_stage"], n)],
                                       nonlin_first=nonlin_first)
        else:
            nonlin_first = False
            block = _short_name(str(kw.get("block") or "BasicBlockD"))
            if block not in _BLOCKS:
                raise ArchitectureError(f"unsupported residual block {kw.get('block')!r}")
            encoder = ResidualEncoder(ops, input_channels, features, kernels, strides,
                                      [int(v) for v in _per_stage(kw["n_blocks_per_stage"], n)], block=block,
                                      bottleneck_channels=_per_stage(kw.get("bottleneck_channels"), n),
                                      stem_channels=kw.get("stem_channels"))
    except KeyError as exc:
        raise ArchitectureError(f"architecture option {exc.args[0]!r} is missing") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ArchitectureError):
            raise
        raise ArchitectureError(f"malformed architecture options: {exc}") from None
    return UNet(encoder, UNetDecoder(ops, encoder, num_classes, n_dec, nonlin_first=nonlin_first))
