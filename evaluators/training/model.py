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
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from evaluators.specs import ConvLayer, NetworkSpec, SpecError
from evaluators.training.quant import FLOAT_BITS, PACT, SignedQuant, quantize_weight

# the plan of a network and its hardware workload need no torch: `workload`, re-exported here
from evaluators.training.workload import (
    BlockPlan,
    ConvPlan,
    extract_layers,
    head,
    kept_channels,
    low_rank,
    nm_keep,
    plan,
    validate_spec,
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


