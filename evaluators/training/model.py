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

Low-rank factorization (``spec.rank_ratio < 1``) replaces a conv by its factors
(:meth:`ConvPlan.factors`, :class:`LowRankConv`): in the module and, as separate layers, in the
workload. Mixed precision: every :class:`ConvPlan` carries its own input, weight and output
bits (per stage, first and last layer).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

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
    "ConvUnit",
    "LowRankConv",
    "LowRankLinear",
    "Network",
    "PlainCNN",
    "QConv2d",
    "QLinear",
    "apply_pruning",
    "build_model",
    "closest_source",
    "extract_layers",
    "factorize",
    "head",
    "low_rank",
    "plan",
    "remove_pruning",
    "shared_elements",
    "state_shapes",
    "validate_spec",
    "warm_start_score",
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
    for name in ("weight_bits", "activation_bits", "first_layer_bits", "last_layer_bits"):
        v = getattr(spec, name)
        msg = None if v is None and "layer" in name else validate_bits(v, name)
        if msg:
            problems.append(msg)
    for i, st in enumerate(spec.stages):
        for name in ("weight_bits", "activation_bits"):
            v = getattr(st, name)
            msg = None if v is None else validate_bits(v, f"stages[{i}].{name}")
            if msg:
                problems.append(msg)
    if isinstance(spec.rank_ratio, bool) or not isinstance(spec.rank_ratio, (int, float)) or \
            not 0.0 < spec.rank_ratio <= 1.0:
        problems.append(f"rank_ratio must be in (0, 1], got {spec.rank_ratio!r}")
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

    ``act`` is the activation after BN: ``"relu"`` (ReLU + PACT at ``a_bits``) or ``"none"`` (a
    linear output: a projection or the second conv of a residual block). ``in_bits`` /
    ``w_bits`` / ``a_bits``: precision of the input it reads, of its weights, of its output.
    ``ranks``: low-rank factorization: ``()`` dense, ``(r,)`` two SVD factors (1x1 or
    classifier), ``(r_in, r_out)`` a Tucker-2 chain (k x k).
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
    in_bits: int = IMAGE_BITS
    w_bits: int = 8
    a_bits: int = 8
    ranks: tuple[int, ...] = ()

    @property
    def hw_out(self) -> int:
        return (self.hw_in + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1

    def factors(self) -> tuple[ConvPlan, ...]:
        """The convs this conv runs as: itself, or its low-rank factors in order.

        SVD ``(r,)``: ``_u`` (1x1, ``cin -> r``, the stride) then ``_v`` (1x1, ``r -> cout``).
        Tucker-2 ``(r_in, r_out)``: ``_in`` (1x1, ``cin -> r_in``), ``_core`` (k x k,
        ``r_in -> r_out``, the stride), ``_out`` (1x1, ``r_out -> cout``). Intermediate
        tensors are signed, at ``a_bits``.
        """
        if not self.ranks:
            return (self,)
        mid = dict(groups=1, act="none", prunable=False, w_bits=self.w_bits, a_bits=self.a_bits,
                   ranks=())
        if len(self.ranks) == 1:
            (r,) = self.ranks
            u = ConvPlan(f"{self.name}_u", self.cin, r, 1, self.stride, hw_in=self.hw_in,
                         in_bits=self.in_bits, **mid)
            v = ConvPlan(f"{self.name}_v", r, self.cout, 1, 1, hw_in=u.hw_out,
                         in_bits=self.a_bits, **mid)
            return (u, v)
        r_in, r_out = self.ranks
        a = ConvPlan(f"{self.name}_in", self.cin, r_in, 1, 1, hw_in=self.hw_in,
                     in_bits=self.in_bits, **mid)
        core = ConvPlan(f"{self.name}_core", r_in, r_out, self.kernel, self.stride,
                        hw_in=self.hw_in, in_bits=self.a_bits, **mid)
        c = ConvPlan(f"{self.name}_out", r_out, self.cout, 1, 1, hw_in=core.hw_out,
                     in_bits=self.a_bits, **mid)
        return (a, core, c)


@dataclass(frozen=True)
class BlockPlan:
    """A block: its main convs in order, an optional 1x1 shortcut conv, and how it ends.

    ``residual``: the block output is ``main(x) + shortcut(x)`` (identity when ``shortcut`` is
    None). ``post``: what follows the sum: ``"relu"`` (ResNet: ReLU + PACT) or ``"signed"``
    (MobileNetV2's linear bottleneck: signed fake quantization, :class:`SignedQuant`), both at
    ``a_bits``.
    """

    name: str
    convs: tuple[ConvPlan, ...]
    shortcut: ConvPlan | None = None
    residual: bool = False
    post: str = "none"
    a_bits: int = 8

    @property
    def all_convs(self) -> tuple[ConvPlan, ...]:
        """The main convs, then the shortcut conv (the order the module runs them in)."""
        return (*self.convs, *((self.shortcut,) if self.shortcut else ()))


def kept_channels(width: int, spec: NetworkSpec) -> int:
    """Output channels a prunable conv keeps under ``spec``'s structured pruning."""
    if spec.prune_mode != "structured" or spec.prune_ratio <= 0:
        return width
    return max(1, round(width * (1.0 - spec.prune_ratio)))


def nm_keep(spec: NetworkSpec) -> int:
    """N of N:4 sparsity for ``prune_mode == "nm"``."""
    return min(4, max(1, 4 - round(4 * spec.prune_ratio)))


def low_rank(cin: int, cout: int, kernel: int, groups: int, ratio: float) -> tuple[int, ...]:
    """The ranks a conv (or linear, ``kernel = 1``) is factorized to at ``ratio``, ``()`` = dense.

    SVD for 1x1: ``r = max(1, round(ratio * min(cin, cout)))``. Tucker-2 for k x k:
    ``r_in = max(1, round(ratio * cin))``, ``r_out = max(1, round(ratio * cout))``. A layer is
    factorized only where its factors hold fewer weights than it does (a thin layer such as a
    1-channel stem stays dense); grouped and depthwise convs are never factorized.
    """
    if ratio >= 1.0 or groups != 1:
        return ()
    if kernel == 1:
        r = max(1, round(ratio * min(cin, cout)))
        return (r,) if r * (cin + cout) < cin * cout else ()
    r_in, r_out = max(1, round(ratio * cin)), max(1, round(ratio * cout))
    factored = cin * r_in + r_in * r_out * kernel * kernel + r_out * cout
    return (r_in, r_out) if factored < cin * cout * kernel * kernel else ()


def _blocks(spec: NetworkSpec, pruned: bool) -> tuple[BlockPlan, ...]:
    def internal(width: int) -> int:
        return kept_channels(width, spec) if pruned else width

    first = True

    def bits(i: int) -> dict[str, int]:
        nonlocal first
        w, a = spec.stage_bits(i)
        if first and spec.first_layer_bits is not None:
            w = spec.first_layer_bits
        first = False
        return {"w_bits": w, "a_bits": a}

    blocks: list[BlockPlan] = []
    hw, cin, in_bits = spec.input_hw, spec.in_channels, IMAGE_BITS
    if spec.family != "plain_cnn":  # a 3x3 stem conv to the first stage's width
        stem = ConvPlan("stem", cin, spec.stages[0].width, 3, 1, 1, hw, "relu",
                        in_bits=in_bits, **bits(0))
        blocks.append(BlockPlan("stem", (stem,), a_bits=stem.a_bits))
        cin, in_bits = stem.cout, stem.a_bits
    for i, st in enumerate(spec.stages):
        for j in range(st.depth):
            name, stride, k, cout = f"s{i}b{j}", st.stride if j == 0 else 1, st.kernel_size, \
                st.width
            b = bits(i)
            a_bits = b["a_bits"]
            if spec.family == "plain_cnn":
                cout = internal(cout)
                convs = (ConvPlan(name, cin, cout, k, stride, 1, hw, "relu", True, in_bits, **b),)
                blocks.append(BlockPlan(name, convs, a_bits=a_bits))
            elif spec.family == "resnet":
                mid = internal(cout)
                c1 = ConvPlan(f"{name}_conv1", cin, mid, k, stride, 1, hw, "relu", True,
                              in_bits, **b)
                c2 = ConvPlan(f"{name}_conv2", mid, cout, k, 1, 1, c1.hw_out, "none", False,
                              a_bits, **b)
                short = None
                if stride != 1 or cin != cout:
                    short = ConvPlan(f"{name}_short", cin, cout, 1, stride, 1, hw, "none",
                                     False, in_bits, **b)
                blocks.append(BlockPlan(name, (c1, c2), short, True, "relu", a_bits))
            else:  # mobilenetv2
                hidden = cin * st.expansion
                convs_l: list[ConvPlan] = []
                h, src_bits = hw, in_bits
                if st.expansion != 1:
                    hidden = internal(hidden)  # the depthwise conv follows these channels
                    convs_l.append(ConvPlan(f"{name}_expand", cin, hidden, 1, 1, 1, h, "relu",
                                            True, in_bits, **b))
                    src_bits = a_bits
                dw = ConvPlan(f"{name}_dw", hidden, hidden, k, stride, hidden, h, "relu", False,
                              src_bits, **b)
                proj = ConvPlan(f"{name}_project", hidden, cout, 1, 1, 1, dw.hw_out, "none",
                                False, a_bits, **b)
                convs_l += [dw, proj]
                residual = stride == 1 and cin == cout
                blocks.append(BlockPlan(name, tuple(convs_l), None, residual, "signed", a_bits))
            hw = blocks[-1].convs[-1].hw_out
            cin, in_bits = cout, a_bits
    return tuple(blocks)


def _with_ranks(c: ConvPlan, full: ConvPlan, spec: NetworkSpec) -> ConvPlan:
    # ranks follow the unpruned shapes, so the module trained at full width (pruned channels
    # masked) and the physically pruned hardware layers have the same factors
    return replace(c, ranks=low_rank(full.cin, full.cout, full.kernel, full.groups,
                                     spec.rank_ratio))


def plan(spec: NetworkSpec, *, pruned: bool = False, factorized: bool = True
         ) -> tuple[BlockPlan, ...]:
    """The blocks of ``spec``, in order (the classifier is :func:`head`).

    Args:
        pruned: give the shapes after structured pruning (what the hardware runs); the torch
            module is built at full width (``pruned=False``) and its pruned channels masked.
        factorized: give the convs' low-rank ranks (``spec.rank_ratio < 1``); the module is
            trained dense first (``factorized=False``) and factorized half-way.
    """
    blocks = _blocks(spec, pruned)
    if not factorized or spec.rank_ratio >= 1.0:
        return blocks
    full = _blocks(spec, False) if pruned else blocks
    out = []
    for b, fb in zip(blocks, full):
        convs = tuple(_with_ranks(c, fc, spec) for c, fc in zip(b.convs, fb.convs))
        short = (_with_ranks(b.shortcut, fb.shortcut, spec)
                 if b.shortcut is not None and fb.shortcut is not None else None)
        out.append(replace(b, convs=convs, shortcut=short))
    return tuple(out)


def head(spec: NetworkSpec, blocks: tuple[BlockPlan, ...], *, factorized: bool = True
         ) -> ConvPlan:
    """The classifier as a 1x1 conv on the pooled output of ``blocks`` (:func:`plan` of the
    same ``spec``); the logits keep at least 8 bits."""
    last = len(spec.stages) - 1
    w_bits, a_bits = spec.stage_bits(last)
    if spec.last_layer_bits is not None:
        w_bits = spec.last_layer_bits
    cin = blocks[-1].convs[-1].cout
    fc = ConvPlan("fc", cin, spec.num_classes, 1, 1, 1, 1, "none", False, a_bits, w_bits,
                  max(a_bits, 8))
    if factorized and spec.rank_ratio < 1.0:
        full = spec.stages[-1].width
        fc = replace(fc, ranks=low_rank(full, spec.num_classes, 1, 1, spec.rank_ratio))
    return fc


def _svd_split(matrix: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-``r`` truncated SVD of ``matrix`` (``out x in``) as ``(first, second)`` with
    ``second @ first`` its best rank-``r`` approximation, ``sqrt(S)`` split between them."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:r].sqrt()
    return root[:, None] * vh[:r], u[:, :r] * root


class LowRankConv(nn.Sequential):
    """A conv run as its low-rank factors (:meth:`ConvPlan.factors`): ``QConv2d`` layers with
    signed fake quantization (:class:`SignedQuant`) of the intermediate tensors between them.

    :meth:`init_from` sets the factors from a trained dense weight: truncated SVD of the
    ``cout x cin`` matrix (``sqrt(S)`` split between the factors), or Tucker-2 by HOSVD
    (Kim et al., ICLR 2016): the leading left singular vectors of the output- and input-channel
    unfoldings, and the core ``W x_0 U_out^T x_1 U_in^T``.
    """

    def __init__(self, c: ConvPlan) -> None:
        parts: list[nn.Module] = []
        for f in c.factors():
            if parts:
                parts.append(SignedQuant(c.a_bits))
            parts.append(QConv2d(f.cin, f.cout, f.kernel, stride=f.stride,
                                 padding=f.kernel // 2, bias=False, weight_bits=c.w_bits))
        super().__init__(*parts)
        self.ranks = c.ranks

    @property
    def convs(self) -> list[QConv2d]:
        return [m for m in self if isinstance(m, QConv2d)]

    @property
    def out_conv(self) -> QConv2d:
        """The factor that produces the output channels (what structured pruning masks)."""
        return self.convs[-1]

    @torch.no_grad()
    def init_from(self, weight: torch.Tensor) -> None:
        w = weight.detach().float()
        cout, cin = w.shape[:2]
        convs = self.convs
        if len(self.ranks) == 1:
            (r,) = self.ranks
            first, second = _svd_split(w.reshape(cout, cin), r)
            convs[0].weight.copy_(first.reshape(r, cin, 1, 1))
            convs[1].weight.copy_(second.reshape(cout, r, 1, 1))
            return
        r_in, r_out = self.ranks
        u_out = torch.linalg.svd(w.reshape(cout, -1), full_matrices=False)[0][:, :r_out]
        u_in = torch.linalg.svd(w.transpose(0, 1).reshape(cin, -1),
                                full_matrices=False)[0][:, :r_in]
        core = torch.einsum("oihw,or,is->rshw", w, u_out, u_in)
        convs[0].weight.copy_(u_in.t().reshape(r_in, cin, 1, 1))
        convs[1].weight.copy_(core)
        convs[2].weight.copy_(u_out.reshape(cout, r_out, 1, 1))


class LowRankLinear(nn.Sequential):
    """The classifier as two SVD factors (``QLinear``), a signed quantizer between them."""

    def __init__(self, c: ConvPlan) -> None:
        (r,) = c.ranks
        super().__init__(QLinear(c.cin, r, bias=False, weight_bits=c.w_bits),
                         SignedQuant(c.a_bits),
                         QLinear(r, c.cout, weight_bits=c.w_bits))
        self.ranks = c.ranks

    @torch.no_grad()
    def init_from(self, dense: nn.Linear) -> None:
        first, second = _svd_split(dense.weight.detach().float(), self.ranks[0])
        self[0].weight.copy_(first)
        self[2].weight.copy_(second)
        self[2].bias.copy_(dense.bias.detach())


class ConvUnit(nn.Sequential):
    """conv -> BatchNorm -> [ReLU -> PACT]: one :class:`ConvPlan` as a module (``self.plan``).

    ``conv`` is a ``QConv2d``, or a :class:`LowRankConv` once factorized.
    """

    def __init__(self, c: ConvPlan) -> None:
        parts: OrderedDict[str, nn.Module] = OrderedDict(
            conv=LowRankConv(c) if c.ranks else
            QConv2d(c.cin, c.cout, c.kernel, stride=c.stride, padding=c.kernel // 2,
                    groups=c.groups, bias=False, weight_bits=c.w_bits),
            bn=nn.BatchNorm2d(c.cout),
        )
        if c.act == "relu":
            parts["relu"] = nn.ReLU(inplace=True)
            parts["act"] = nn.Identity() if c.a_bits >= FLOAT_BITS else PACT(c.a_bits)
        super().__init__(parts)
        self.plan = c

    @property
    def out_conv(self) -> nn.Conv2d:
        conv = self.conv
        return conv.out_conv if isinstance(conv, LowRankConv) else conv


class Block(nn.Module):
    """A :class:`BlockPlan` as a module. A plain block is its conv unit alone."""

    def __init__(self, b: BlockPlan, spec: NetworkSpec) -> None:
        super().__init__()
        self.kind = ("basic" if spec.family == "resnet" else "inverted")
        self.main = nn.Sequential(*[ConvUnit(c) for c in b.convs])
        self.shortcut = ConvUnit(b.shortcut) if b.shortcut else None
        self.residual = b.residual
        bits = b.a_bits
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
    other families nest (``features.s{i}b{j}.main.0.conv``). ``factorized``: build the
    low-rank layers of ``spec.rank_ratio`` (a trained network), or the dense network that
    training starts from (:func:`factorize` converts it half-way).
    """

    def __init__(self, spec: NetworkSpec, factorized: bool = True) -> None:
        super().__init__()
        planned = plan(spec, factorized=factorized)
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for b in planned:
            blocks[b.name] = (ConvUnit(b.convs[0]) if spec.family == "plain_cnn"
                              or b.name == "stem" else Block(b, spec))
        self.features = nn.Sequential(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        # full width: pruned channels are masked, not removed
        fc = head(spec, planned, factorized=factorized)
        self.classifier: nn.Module = (LowRankLinear(fc) if fc.ranks else
                                      QLinear(fc.cin, fc.cout, weight_bits=fc.w_bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


PlainCNN = Network  # the name earlier code and tests use


def state_shapes(spec: NetworkSpec, *, factorized: bool = True) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the state dict of ``spec``'s module (built on torch's
    meta device: no memory, no initialization; milliseconds)."""
    validate_spec(spec)
    with torch.device("meta"):
        model = Network(spec, factorized)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def shared_elements(source: dict[str, tuple[int, ...]], target: dict[str, tuple[int, ...]]
                    ) -> int:
    """Elements a warm start could copy from ``source`` to ``target`` (name -> shape maps,
    :func:`state_shapes`): the sizes of the tensors present in both with the same shape."""
    return sum(math.prod(shape) for name, shape in source.items() if target.get(name) == shape)


def warm_start_score(source: NetworkSpec, source_shapes: dict[str, tuple[int, ...]],
                     target: NetworkSpec, target_shapes: dict[str, tuple[int, ...]]) -> int:
    """How good trained ``source`` weights are as the start of training ``target``: the
    elements they share (:func:`shared_elements`), or 0 when the source was pruned more (or
    otherwise) than the target, whose training would inherit pruning it did not ask for.

    (Measured on digits, 1 vs 5 epochs, 20 designs: donors sparser than the target lowered the
    brief/long Spearman correlation from 0.93 to 0.75; with this rule 0.93.)
    """
    if source.prune_ratio > 0 and (source.prune_mode != target.prune_mode
                                   or source.prune_ratio > target.prune_ratio):
        return 0
    return shared_elements(source_shapes, target_shapes)


def closest_source(
    target: NetworkSpec,
    sources: Sequence[tuple[NetworkSpec, dict[str, tuple[int, ...]], float]],
) -> int | None:
    """Index of the trained network to warm-start ``target`` from (``task.warm_start:
    closest``), or ``None`` when none shares a weight element with it.

    ``sources``: ``(spec, state_shapes(spec), validation accuracy)`` of each trained network,
    in training order. Best :func:`warm_start_score` against ``target``'s fresh (dense) module;
    ties go to the higher accuracy, then the earlier training.
    """
    if not sources:
        return None
    target_shapes = state_shapes(target, factorized=False)  # training starts dense
    scored = [(warm_start_score(spec, shapes, target, target_shapes), acc, -i)
              for i, (spec, shapes, acc) in enumerate(sources)]
    best = max(scored)
    return -best[2] if best[0] > 0 else None


def factorize(model: Network, spec: NetworkSpec) -> int:
    """Replace the dense layers ``spec.rank_ratio`` factorizes by low-rank factors initialized
    from their current weights (truncated SVD / Tucker-2). Returns the number replaced.

    The caller must rebuild its optimizer: the replaced layers' parameters are new tensors.
    """
    if spec.rank_ratio >= 1.0:
        return 0
    planned = plan(spec)
    ranked = {c.name: c for b in planned for c in b.all_convs}
    n = 0
    for unit in [m for m in model.modules() if isinstance(m, ConvUnit)]:
        c = ranked[unit.plan.name]
        if c.ranks and not isinstance(unit.conv, LowRankConv):
            dense = unit.conv
            low = LowRankConv(c).to(dense.weight.device)
            low.init_from(dense.weight)
            unit.conv, unit.plan = low, c
            n += 1
    fc = head(spec, planned)
    if fc.ranks and not isinstance(model.classifier, LowRankLinear):
        dense_fc = model.classifier
        low_fc = LowRankLinear(fc).to(dense_fc.weight.device)
        low_fc.init_from(dense_fc)
        model.classifier = low_fc
        n += 1
    return n


def build_model(spec: NetworkSpec, *, factorized: bool = True) -> Network:
    """The torch module of ``spec`` (fresh initialization from torch's global RNG).

    Args:
        factorized: with the low-rank layers of ``spec.rank_ratio`` (the trained network, what
            weights are loaded into), or dense (what training starts from, see :func:`factorize`).

    Raises:
        SpecError: ``spec`` is out of domain (unknown family, bad bits, empty stages...).
    """
    validate_spec(spec)
    return Network(spec, factorized)


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
            conv = units[0].out_conv
            keep = kept_channels(conv.out_channels, spec)
            norms = conv.weight.detach().abs().reshape(conv.out_channels, -1).sum(dim=1)
            channel = torch.zeros(conv.out_channels, device=conv.weight.device)
            channel[norms.topk(keep).indices] = 1.0
            for unit in units:
                c = unit.out_conv
                prune.custom_from_mask(c, name="weight",
                                       mask=channel.reshape(-1, 1, 1, 1).expand_as(c.weight))
                prune.custom_from_mask(unit.bn, name="weight", mask=channel.clone())
                prune.custom_from_mask(unit.bn, name="bias", mask=channel.clone())


def _structured_units(model: nn.Module) -> list[list[ConvUnit]]:
    """Groups of conv units whose output channels are pruned together (a prunable conv, plus
    the depthwise conv that reads its channels in an inverted residual)."""
    units: list[list[ConvUnit]] = []
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


def workload_modules(model: nn.Module, spec: NetworkSpec
                     ) -> list[tuple[ConvLayer, QConv2d | QLinear]]:
    """Each layer of ``extract_layers(spec)`` with the module of ``model`` that computes it.

    ``model`` is ``spec``'s network as it is deployed: factorized where ``spec`` says so (what
    :func:`train` returns; ``build_model(spec)``). Modules pair with layers in order; a
    structurally pruned module keeps its full width (masked channels), so it may be wider than
    its layer.

    Raises:
        SpecError: the model's convs and linears do not match the workload (count or kernel).
    """
    layers = extract_layers(spec)
    mods = [m for m in model.modules() if isinstance(m, (QConv2d, QLinear))]
    if len(mods) != len(layers):
        raise SpecError(f"the model has {len(mods)} conv/linear modules, the network spec "
                        f"{len(layers)} layers")
    for layer, m in zip(layers, mods):
        kernel = m.kernel_size[0] if isinstance(m, QConv2d) else 1
        width = _in_width(m)
        if kernel != layer.filter_h or width < layer.channels:
            raise SpecError(f"layer {layer.name!r} ({layer.filter_h}x{layer.filter_h}, "
                            f"{layer.channels} channels) does not match its module ({kernel}x"
                            f"{kernel}, {width} channels)")
    return list(zip(layers, mods))


def _in_width(m: QConv2d | QLinear) -> int:
    """Input channels (features) a conv (linear) module reads."""
    return m.in_channels if isinstance(m, QConv2d) else m.in_features


class InputDensityProbe:
    """Counts the non-zero inputs of every workload layer while the model runs.

    Lifecycle: ``with InputDensityProbe(model, spec) as probe:`` registers a forward pre-hook
    on every conv/linear module (:func:`workload_modules`); run the model on data inside the
    block (any batches, any number of passes); the hooks are removed on exit;
    :meth:`densities` then gives each layer's fraction of non-zero input values: what
    zero-gating hardware sees (``ConvLayer.input_density``). Counts are of the tensor each
    conv reads (after the previous layer's ReLU and activation quantization), over the
    layer's own channels: a structurally pruned module's masked input channels are left out.
    """

    def __init__(self, model: nn.Module, spec: NetworkSpec) -> None:
        self._pairs = workload_modules(model, spec)
        self._nonzero: list[Any] = [0] * len(self._pairs)  # device tensors once counted
        self._total = [0.0] * len(self._pairs)
        self._handles: list[Any] = []

    def __enter__(self) -> InputDensityProbe:
        for i, (layer, m) in enumerate(self._pairs):
            self._handles.append(m.register_forward_pre_hook(
                self._hook(i, layer.channels / _in_width(m))))
        return self

    def _hook(self, i: int, kept: float) -> Any:
        def count(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            self._nonzero[i] += torch.count_nonzero(x)  # on x's device: no sync per batch
            self._total[i] += x.numel() * kept
        return count

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def densities(self) -> dict[str, float]:
        """Layer name -> non-zero input fraction in (0, 1] (a layer whose inputs were all
        zero gets one non-zero value's worth); empty if the model never ran."""
        if not all(self._total):
            return {}
        return {layer.name: min(1.0, max(int(nz), 1) / total)
                for (layer, _), nz, total in zip(self._pairs, self._nonzero, self._total)}


def extract_layers(spec: NetworkSpec, input_hw: int | None = None,
                   input_density: dict[str, float] | None = None) -> tuple[ConvLayer, ...]:
    """The hardware workload of ``spec``: every conv (its low-rank factors as separate layers),
    then the classifier as a 1x1 conv (or its two factors).

    Batch 1, at ``input_hw`` x ``input_hw`` pixels (default: the training resolution
    ``spec.input_hw``; the deployment resolution may differ, global pooling makes the
    classifier independent of it). Each layer's bits are its plan's (:class:`ConvPlan`): the
    first conv reads the 8-bit image, every other layer the previous output's precision
    (per-stage mixed precision, first/last layer weight bits); conv outputs are requantized to
    their stage's activation bits (BatchNorm folded into the conv, ReLU and quantization
    applied at the output); the classifier's logits keep at least 8 bits; 32 means floating
    point. Weight density: ``1 - prune_ratio`` (unstructured), ``N/4`` (N:4), 1 (structured:
    the layers themselves are smaller). Input density: ``input_density[name]`` (measured on
    the trained network, :class:`InputDensityProbe`), else 1 (dense). BatchNorm and pooling
    add no layers (see the module docstring).

    Raises:
        SpecError: ``spec`` is out of domain, or ``input_hw`` is not a positive int.
    """
    validate_spec(spec)
    if input_hw is not None:
        if isinstance(input_hw, bool) or not isinstance(input_hw, int) or input_hw < 1:
            raise SpecError(f"deploy input must be a positive int, got {input_hw!r}")
        spec = replace(spec, input_hw=input_hw)
    if spec.prune_mode == "unstructured":
        density = 1.0 - float(spec.prune_ratio)
    elif spec.prune_mode == "nm":
        density = nm_keep(spec) / 4.0 if spec.prune_ratio > 0 else 1.0
    else:  # structured: the layers themselves are smaller, what is left is dense
        density = 1.0
    planned = plan(spec, pruned=True)
    convs = [c for b in planned for c in b.all_convs]
    convs.append(head(spec, planned))
    return tuple(
        ConvLayer(
            name=f.name,
            ifmap_h=f.hw_in, ifmap_w=f.hw_in,
            filter_h=f.kernel, filter_w=f.kernel,
            channels=f.cin, num_filters=f.cout,
            stride=f.stride,
            padding=f.kernel // 2,
            weight_bits=f.w_bits,
            input_bits=f.in_bits,
            output_bits=f.a_bits,
            weight_density=density,
            groups=f.groups,
            input_density=(input_density or {}).get(f.name, 1.0),
        )
        for c in convs for f in c.factors()
    )
