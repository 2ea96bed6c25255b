"""The plan of the network a :class:`NetworkSpec` describes, and its hardware workload,
without torch (:mod:`evaluators.training.model` builds the torch module from the same plan
and re-exports these names).

:func:`plan` / :func:`head` give every conv of the network (:class:`ConvPlan`: shapes, bits,
low-rank ranks) in the order the module runs them; :func:`extract_layers` turns them into the
``ConvLayer`` workload the accelerator model prices (see :mod:`evaluators.training.model` for
how BatchNorm, ReLU, quantization and pooling are folded away).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from evaluators.specs import FAMILIES, PRUNE_MODES, ConvLayer, NetworkSpec, SpecError

FLOAT_BITS = 32


def validate_bits(bits: int, what: str) -> str | None:
    """A problem message when ``bits`` is not 1..16 or 32, else ``None``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not (
            1 <= bits <= 16 or bits == FLOAT_BITS):
        return f"{what} must be an int in 1..16 or 32 (float), got {bits!r}"
    return None


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
