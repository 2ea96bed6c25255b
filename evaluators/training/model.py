"""The network a :class:`NetworkSpec` describes, as a torch module and as a hardware workload.

``plain_cnn``: for each stage, ``depth`` blocks of ``QConv2d`` (kernel ``k``, padding ``k // 2``,
the stage's stride on its first block, 1 after, no bias) -> ``BatchNorm2d`` -> ``ReLU`` ->
activation fake-quant (PACT; identity at 32 bits); then global average pooling and a
``QLinear`` classifier. Block ``j`` of stage ``i`` is ``features.s{i}b{j}``; its hardware layer
is named ``s{i}b{j}``; the classifier is ``classifier`` / ``fc``.

:func:`extract_layers` describes the same network as the accelerator runs it: BatchNorm is
folded into the preceding conv (scale into the weights, shift into a bias) for deployment, so
it costs no layer of its own; ReLU, activation quantization and pooling are done on the fly at
the array's output and are ignored as layers (global average pooling is tiny next to the convs).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from evaluators.specs import FAMILIES, PRUNE_MODES, ConvLayer, NetworkSpec, SpecError
from evaluators.training.quant import (
    FLOAT_BITS,
    PACT,
    SignedQuant,
    quantize_weight,
    validate_bits,
)

__all__ = [
    "BlockPlan",
    "ConvPlan",
    "Network",
    "PlainCNN",
    "QConv2d",
    "QLinear",
    "apply_pruning",
    "build_model",
    "extract_layers",
    "plan",
    "remove_pruning",
    "validate_spec",
]

IMAGE_BITS = 8  # the first layer reads the raw image, 8 bits per pixel


def validate_spec(spec: NetworkSpec) -> None:
    """Raise :class:`SpecError` listing every out-of-domain value of ``spec``."""
    problems: list[str] = []
    if spec.family not in FAMILIES:
        problems.append(f"family must be one of {list(FAMILIES)}, got {spec.family!r}")
    for name in ("in_channels", "input_hw", "num_classes"):
        v = getattr(spec, name)
        if not isinstance(v, int) or v < 1:
            problems.append(f"{name} must be a positive int, got {v!r}")
    if not spec.stages:
        problems.append("stages must not be empty")
    for i, st in enumerate(spec.stages):
        for name in ("depth", "width", "kernel_size", "stride", "expansion"):
            v = getattr(st, name)
            if not isinstance(v, int) or v < 1:
                problems.append(f"stages[{i}].{name} must be a positive int, got {v!r}")
    for name in ("weight_bits", "activation_bits"):
        msg = validate_bits(getattr(spec, name), name)
        if msg:
            problems.append(msg)
    if spec.prune_mode not in PRUNE_MODES:
        problems.append(f"prune_mode must be one of {list(PRUNE_MODES)}, got {spec.prune_mode!r}")
    if not 0.0 <= spec.prune_ratio < 1.0:
        problems.append(f"prune_ratio must be in [0, 1), got {spec.prune_ratio!r}")
    if problems:
        raise SpecError("invalid network spec: " + "; ".join(problems))


class QConv2d(nn.Conv2d):
    """``Conv2d`` whose weight is fake-quantized to ``weight_bits`` in every forward pass."""

    def __init__(self, *args: object, weight_bits: int = FLOAT_BITS, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.weight_bits = weight_bits

    def quantized_weight(self) -> torch.Tensor:
        return quantize_weight(self.weight, self.weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.quantized_weight(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class QLinear(nn.Linear):
    """``Linear`` whose weight is fake-quantized to ``weight_bits`` in every forward pass."""

    def __init__(self, *args: object, weight_bits: int = FLOAT_BITS, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.weight_bits = weight_bits

    def quantized_weight(self) -> torch.Tensor:
        return quantize_weight(self.weight, self.weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


@dataclass(frozen=True)
class ConvPlan:
    """One conv of the network: what both the torch module and the hardware layer are built from.

    ``act`` is the activation after BN: ``"relu"`` (ReLU + PACT at ``activation_bits``) or
    ``"none"`` (a linear output: a projection or the second conv of a residual block).
    """

    name: str
    cin: int
    cout: int
    kernel: int
    stride: int
    groups: int
    hw_in: int
    act: str
    prunable: bool = False  # its output channels are internal: structured pruning may drop them

    @property
    def hw_out(self) -> int:
        return (self.hw_in + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1


@dataclass(frozen=True)
class BlockPlan:
    """A block: its main convs in order, an optional 1x1 shortcut conv, and how it ends.

    ``residual``: the block output is ``main(x) + shortcut(x)`` (identity when ``shortcut`` is
    None). ``post``: what follows the sum: ``"relu"`` (ResNet: ReLU + PACT) or ``"signed"``
    (MobileNetV2's linear bottleneck: signed fake quantization, :class:`SignedQuant`).
    """

    name: str
    convs: tuple[ConvPlan, ...]
    shortcut: ConvPlan | None = None
    residual: bool = False
    post: str = "none"


def kept_channels(width: int, spec: NetworkSpec) -> int:
    """Output channels a prunable conv keeps under ``spec``'s structured pruning."""
    if spec.prune_mode != "structured" or spec.prune_ratio <= 0:
        return width
    return max(1, round(width * (1.0 - spec.prune_ratio)))


def nm_keep(spec: NetworkSpec) -> int:
    """N of N:4 sparsity for ``prune_mode == "nm"``."""
    return min(4, max(1, 4 - round(4 * spec.prune_ratio)))


def plan(spec: NetworkSpec, *, pruned: bool = False) -> tuple[BlockPlan, ...]:
    """The blocks of ``spec``, in order (the classifier is not included).

    Args:
        pruned: give the shapes after structured pruning (what the hardware runs); the torch
            module is built at full width (``pruned=False``) and its pruned channels masked.
    """
    def internal(width: int) -> int:
        return kept_channels(width, spec) if pruned else width

    blocks: list[BlockPlan] = []
    hw, cin = spec.input_hw, spec.in_channels
    if spec.family != "plain_cnn":  # a 3x3 stem conv to the first stage's width
        stem = ConvPlan("stem", cin, spec.stages[0].width, 3, 1, 1, hw, "relu")
        blocks.append(BlockPlan("stem", (stem,)))
        cin = stem.cout
    for i, st in enumerate(spec.stages):
        for j in range(st.depth):
            name, stride, k, cout = f"s{i}b{j}", st.stride if j == 0 else 1, st.kernel_size, \
                st.width
            if spec.family == "plain_cnn":
                cout = internal(cout)
                convs = (ConvPlan(name, cin, cout, k, stride, 1, hw, "relu", True),)
                blocks.append(BlockPlan(name, convs))
            elif spec.family == "resnet":
                mid = internal(cout)
                c1 = ConvPlan(f"{name}_conv1", cin, mid, k, stride, 1, hw, "relu", True)
                c2 = ConvPlan(f"{name}_conv2", mid, cout, k, 1, 1, c1.hw_out, "none")
                short = None
                if stride != 1 or cin != cout:
                    short = ConvPlan(f"{name}_short", cin, cout, 1, stride, 1, hw, "none")
                blocks.append(BlockPlan(name, (c1, c2), short, True, "relu"))
            else:  # mobilenetv2
                hidden = cin * st.expansion
                convs_l: list[ConvPlan] = []
                h = hw
                if st.expansion != 1:
                    hidden = internal(hidden)  # the depthwise conv follows these channels
                    convs_l.append(
                        ConvPlan(f"{name}_expand", cin, hidden, 1, 1, 1, h, "relu", True))
                dw = ConvPlan(f"{name}_dw", hidden, hidden, k, stride, hidden, h, "relu")
                proj = ConvPlan(f"{name}_project", hidden, cout, 1, 1, 1, dw.hw_out, "none")
                convs_l += [dw, proj]
                residual = stride == 1 and cin == cout
                blocks.append(BlockPlan(name, tuple(convs_l), None, residual, "signed"))
            hw = blocks[-1].convs[-1].hw_out
            cin = cout
    return tuple(blocks)


def _conv_unit(c: ConvPlan, spec: NetworkSpec) -> nn.Sequential:
    parts: OrderedDict[str, nn.Module] = OrderedDict(
        conv=QConv2d(c.cin, c.cout, c.kernel, stride=c.stride, padding=c.kernel // 2,
                     groups=c.groups, bias=False, weight_bits=spec.weight_bits),
        bn=nn.BatchNorm2d(c.cout),
    )
    if c.act == "relu":
        parts["relu"] = nn.ReLU(inplace=True)
        parts["act"] = (nn.Identity() if spec.activation_bits >= FLOAT_BITS
                        else PACT(spec.activation_bits))
    return nn.Sequential(parts)


class Block(nn.Module):
    """A :class:`BlockPlan` as a module. A plain block is its conv unit alone."""

    def __init__(self, b: BlockPlan, spec: NetworkSpec) -> None:
        super().__init__()
        self.kind = ("basic" if spec.family == "resnet" else "inverted")
        self.main = nn.Sequential(*[_conv_unit(c, spec) for c in b.convs])
        self.shortcut = _conv_unit(b.shortcut, spec) if b.shortcut else None
        self.residual = b.residual
        bits = spec.activation_bits
        if b.post == "relu":
            self.post: nn.Module = nn.Sequential(
                nn.ReLU(), nn.Identity() if bits >= FLOAT_BITS else PACT(bits))
        elif b.post == "signed":
            self.post = SignedQuant(bits)
        else:
            self.post = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main(x)
        if self.residual:
            y = y + (self.shortcut(x) if self.shortcut is not None else x)
        return self.post(y)


class Network(nn.Module):
    """Blocks, global average pooling, a linear classifier (the same for every family).

    A ``plain_cnn`` block ``s{i}b{j}`` is its conv unit itself (``features.s{i}b{j}.conv``);
    other families nest (``features.s{i}b{j}.main.0.conv``).
    """

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for b in plan(spec):
            blocks[b.name] = (_conv_unit(b.convs[0], spec) if spec.family == "plain_cnn"
                              or b.name == "stem" else Block(b, spec))
        self.features = nn.Sequential(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        width = spec.stages[-1].width  # full width: pruned channels are masked, not removed
        self.classifier = QLinear(width, spec.num_classes, weight_bits=spec.weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


PlainCNN = Network  # the name earlier code and tests use


def build_model(spec: NetworkSpec) -> nn.Module:
    """The torch module of ``spec`` (fresh initialization from torch's global RNG).

    Raises:
        SpecError: ``spec`` is out of domain (unknown family, bad bits, empty stages...).
    """
    validate_spec(spec)
    return Network(spec)


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every conv and linear layer of ``model`` (those pruning applies to), in order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def apply_pruning(model: nn.Module, spec: NetworkSpec) -> None:
    """Mask weights of ``model`` as ``spec.prune_mode`` says (masks stay through training).

    - ``unstructured``: ``prune.l1_unstructured`` at ``prune_ratio`` on every conv and linear.
    - ``nm``: in every group of 4 consecutive weights of a filter (input-channel-major, zero
      padded), keep the ``N`` largest magnitudes (``prune.custom_from_mask``).
    - ``structured``: in every prunable conv (a block's internal channels, see :func:`plan`),
      keep the :func:`kept_channels` filters of largest L1 norm; the dropped filters and their
      BatchNorm scale and shift are masked, so the channel is exactly zero (a removed channel),
      and a depthwise conv reading it is masked the same way.
    """
    if spec.prune_mode == "unstructured":
        for _, m in prunable_modules(model):
            prune.l1_unstructured(m, name="weight", amount=float(spec.prune_ratio))
    elif spec.prune_mode == "nm":
        keep = nm_keep(spec)
        for _, m in prunable_modules(model):
            w = m.weight.detach().reshape(m.weight.shape[0], -1).abs()
            pad = (-w.shape[1]) % 4
            groups = F.pad(w, (0, pad)).reshape(w.shape[0], -1, 4)
            top = groups.topk(keep, dim=2).indices
            mask = torch.zeros_like(groups).scatter_(2, top, 1.0)
            mask = mask.reshape(w.shape[0], -1)[:, : w.shape[1]].reshape(m.weight.shape)
            prune.custom_from_mask(m, name="weight", mask=mask)
    else:
        for units in _structured_units(model):
            head = units[0]
            conv: nn.Conv2d = head.conv
            keep = kept_channels(conv.out_channels, spec)
            norms = conv.weight.detach().abs().reshape(conv.out_channels, -1).sum(dim=1)
            channel = torch.zeros(conv.out_channels)
            channel[norms.topk(keep).indices] = 1.0
            for unit in units:
                c = unit.conv
                prune.custom_from_mask(c, name="weight",
                                       mask=channel.reshape(-1, 1, 1, 1).expand_as(c.weight))
                prune.custom_from_mask(unit.bn, name="weight", mask=channel.clone())
                prune.custom_from_mask(unit.bn, name="bias", mask=channel.clone())


def _structured_units(model: nn.Module) -> list[list[nn.Module]]:
    """Groups of conv units whose output channels are pruned together (a prunable conv, plus
    the depthwise conv that reads its channels in an inverted residual)."""
    units: list[list[nn.Module]] = []
    features = getattr(model, "features", None)
    if features is None:
        return units
    for name, block in features.named_children():
        if name == "stem":
            continue
        if isinstance(block, Block):
            main = list(block.main)
            if block.kind == "basic":
                units.append([main[0]])
            elif block.kind == "inverted" and len(main) == 3:
                units.append([main[0], main[1]])
        else:  # a plain conv unit
            units.append([block])
    return units


def remove_pruning(model: nn.Module) -> None:
    """Make pruning permanent: plain parameters with exact zeros, no masks."""
    for m in model.modules():
        for pname in ("weight", "bias"):
            if prune.is_pruned(m) and hasattr(m, f"{pname}_orig"):
                prune.remove(m, pname)


def extract_layers(spec: NetworkSpec) -> tuple[ConvLayer, ...]:
    """The hardware workload of ``spec``: every conv, then the classifier as a 1x1 conv.

    Batch 1. The first conv reads the 8-bit image (``input_bits = 8``); every other layer reads
    ``activation_bits`` activations. Weights are ``weight_bits``; conv outputs are
    requantized to ``activation_bits`` (BatchNorm folded into the conv, ReLU and quantization
    applied at the output); the classifier's logits keep at least 8 bits. 32 bits means
    floating point and is passed through as 32. ``weight_density = 1 - prune_ratio``.
    BatchNorm and pooling add no layers (see the module docstring).

    Raises:
        SpecError: ``spec`` is out of domain.
    """
    validate_spec(spec)
    if spec.prune_mode == "unstructured":
        density = 1.0 - float(spec.prune_ratio)
    elif spec.prune_mode == "nm":
        density = nm_keep(spec) / 4.0 if spec.prune_ratio > 0 else 1.0
    else:  # structured: the layers themselves are smaller, what is left is dense
        density = 1.0
    a_bits, w_bits = spec.activation_bits, spec.weight_bits
    layers: list[ConvLayer] = []
    for block in plan(spec, pruned=True):
        for c in (*block.convs, *((block.shortcut,) if block.shortcut else ())):
            layers.append(ConvLayer(
                name=c.name,
                ifmap_h=c.hw_in, ifmap_w=c.hw_in,
                filter_h=c.kernel, filter_w=c.kernel,
                channels=c.cin, num_filters=c.cout,
                stride=c.stride,
                padding=c.kernel // 2,
                weight_bits=w_bits,
                input_bits=IMAGE_BITS if not layers else a_bits,
                output_bits=a_bits,
                weight_density=density,
                groups=c.groups,
            ))
    cin = layers[-1].num_filters
    layers.append(ConvLayer(
        name="fc", ifmap_h=1, ifmap_w=1, filter_h=1, filter_w=1,
        channels=cin, num_filters=spec.num_classes, stride=1, padding=0,
        weight_bits=w_bits, input_bits=a_bits, output_bits=max(a_bits, 8),
        weight_density=density,
    ))
    return tuple(layers)
