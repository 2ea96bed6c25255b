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

from evaluators.specs import FAMILIES, ConvLayer, NetworkSpec, SpecError
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


def plan(spec: NetworkSpec) -> tuple[BlockPlan, ...]:
    """The blocks of ``spec``, in order (the classifier is not included)."""
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
                convs = (ConvPlan(name, cin, cout, k, stride, 1, hw, "relu"),)
                blocks.append(BlockPlan(name, convs))
            elif spec.family == "resnet":
                c1 = ConvPlan(f"{name}_conv1", cin, cout, k, stride, 1, hw, "relu")
                c2 = ConvPlan(f"{name}_conv2", cout, cout, k, 1, 1, c1.hw_out, "none")
                short = None
                if stride != 1 or cin != cout:
                    short = ConvPlan(f"{name}_short", cin, cout, 1, stride, 1, hw, "none")
                blocks.append(BlockPlan(name, (c1, c2), short, True, "relu"))
            else:  # mobilenetv2
                hidden = cin * st.expansion
                convs_l: list[ConvPlan] = []
                h = hw
                if st.expansion != 1:
                    convs_l.append(ConvPlan(f"{name}_expand", cin, hidden, 1, 1, 1, h, "relu"))
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
        width = spec.stages[-1].width
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


def apply_pruning(model: nn.Module, ratio: float) -> None:
    """Mask the ``ratio`` smallest-magnitude weights of every conv/linear layer (L1, per layer).

    Uses ``torch.nn.utils.prune.l1_unstructured``: the weight becomes ``weight_orig * mask``
    and stays masked through further training until :func:`remove_pruning`.
    """
    for _, m in prunable_modules(model):
        prune.l1_unstructured(m, name="weight", amount=float(ratio))


def remove_pruning(model: nn.Module) -> None:
    """Make pruning permanent: plain ``weight`` parameters with exact zeros, no masks."""
    for _, m in prunable_modules(model):
        if prune.is_pruned(m):
            prune.remove(m, "weight")


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
    density = 1.0 - float(spec.prune_ratio)
    a_bits, w_bits = spec.activation_bits, spec.weight_bits
    layers: list[ConvLayer] = []
    for block in plan(spec):
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
    cin = spec.stages[-1].width
    layers.append(ConvLayer(
        name="fc", ifmap_h=1, ifmap_w=1, filter_h=1, filter_w=1,
        channels=cin, num_filters=spec.num_classes, stride=1, padding=0,
        weight_bits=w_bits, input_bits=a_bits, output_bits=max(a_bits, 8),
        weight_density=density,
    ))
    return tuple(layers)
