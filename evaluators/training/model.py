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

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from evaluators.specs import FAMILIES, ConvLayer, NetworkSpec, SpecError
from evaluators.training.quant import FLOAT_BITS, PACT, quantize_weight, validate_bits

__all__ = [
    "PlainCNN",
    "QConv2d",
    "QLinear",
    "apply_pruning",
    "build_model",
    "extract_layers",
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
        for name in ("depth", "width", "kernel_size", "stride"):
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


class PlainCNN(nn.Module):
    """Stages of conv-BN-ReLU-quant blocks, global average pooling, a linear classifier."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        cin = spec.in_channels
        for i, st in enumerate(spec.stages):
            for j in range(st.depth):
                act: nn.Module = (nn.Identity() if spec.activation_bits >= FLOAT_BITS
                                  else PACT(spec.activation_bits))
                blocks[f"s{i}b{j}"] = nn.Sequential(OrderedDict(
                    conv=QConv2d(cin, st.width, st.kernel_size,
                                 stride=st.stride if j == 0 else 1,
                                 padding=st.kernel_size // 2, bias=False,
                                 weight_bits=spec.weight_bits),
                    bn=nn.BatchNorm2d(st.width),
                    relu=nn.ReLU(inplace=True),
                    act=act,
                ))
                cin = st.width
        self.features = nn.Sequential(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = QLinear(cin, spec.num_classes, weight_bits=spec.weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def build_model(spec: NetworkSpec) -> nn.Module:
    """The torch module of ``spec`` (fresh initialization from torch's global RNG).

    Raises:
        SpecError: ``spec`` is out of domain (unknown family, bad bits, empty stages...).
    """
    validate_spec(spec)
    return PlainCNN(spec)


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
    hw, cin = spec.input_hw, spec.in_channels
    for i, st in enumerate(spec.stages):
        for j in range(st.depth):
            layer = ConvLayer(
                name=f"s{i}b{j}",
                ifmap_h=hw, ifmap_w=hw,
                filter_h=st.kernel_size, filter_w=st.kernel_size,
                channels=cin, num_filters=st.width,
                stride=st.stride if j == 0 else 1,
                padding=st.kernel_size // 2,
                weight_bits=w_bits,
                input_bits=IMAGE_BITS if not layers else a_bits,
                output_bits=a_bits,
                weight_density=density,
            )
            layers.append(layer)
            hw, cin = layer.ofmap_h, st.width
    layers.append(ConvLayer(
        name="fc", ifmap_h=1, ifmap_w=1, filter_h=1, filter_w=1,
        channels=cin, num_filters=spec.num_classes, stride=1, padding=0,
        weight_bits=w_bits, input_bits=a_bits, output_bits=max(a_bits, 8),
        weight_density=density,
    ))
    return tuple(layers)
