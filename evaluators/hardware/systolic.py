"""The systolic-array template: SCALE-Sim-compatible cycles, a small DRAM tiling mapper, energy.

``HardwareModel`` is the interface every accelerator template implements; ``SystolicModel`` is
the first (and so far only) template. The formulas, units and sources are in
``docs/hardware/systolic.md``; every constant comes from ``evaluators.hardware.tables``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import reduce
from typing import Any, ClassVar, NamedTuple

import numpy as np

from evaluators.hardware import tables
from evaluators.specs import (
    DATAFLOWS,
    DRAM_TYPES,
    TEMPLATES,
    AcceleratorSpec,
    ConvLayer,
    HardwareReport,
    InfeasibleDesign,
    LayerCost,
    SpecError,
)

_INT_FIELDS = ("pe_rows", "pe_cols", "rf_bytes")
_FLOAT_FIELDS = ("glb_kib", "dram_gbps", "freq_mhz")
_BOOL_FIELDS = ("double_buffered", "zero_gating", "weight_compression")
_CHOICE_FIELDS = {"template": TEMPLATES, "dataflow": DATAFLOWS, "dram_type": DRAM_TYPES}

PSUM_BITS = tables.ACCUMULATOR_BITS  # partial sums live at 32 bit in PEs and in the GLB


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_)
    )


def validate_accelerator(acc: AcceleratorSpec) -> list[str]:
    """Every problem of an accelerator spec, one line each: ``"<field>: <rule>, got <value>"``.

    An empty list means the spec is valid. Never raises.
    """
    problems: list[str] = []
    for name, choices in _CHOICE_FIELDS.items():
        v = getattr(acc, name)
        if v not in choices:
            problems.append(f"{name}: must be one of {', '.join(choices)}, got {v!r}")
    for name in _INT_FIELDS:
        v = getattr(acc, name)
        if not _is_int(v) or v <= 0:
            problems.append(f"{name}: must be an integer > 0, got {v!r}")
    for name in _FLOAT_FIELDS:
        v = getattr(acc, name)
        if not _is_real(v) or not math.isfinite(v) or v <= 0:
            problems.append(f"{name}: must be a finite number > 0, got {v!r}")
    for name in _BOOL_FIELDS:
        v = getattr(acc, name)
        if not isinstance(v, (bool, np.bool_)):
            problems.append(f"{name}: must be true or false, got {v!r}")
    return problems


def layer_problems(layer: ConvLayer) -> list[str]:
    """Every problem of a layer's values (positive sizes, filter fits, density in (0, 1])."""
    problems: list[str] = []
    for name in (
        "ifmap_h",
        "ifmap_w",
        "filter_h",
        "filter_w",
        "channels",
        "num_filters",
        "stride",
        "batch",
        "weight_bits",
        "input_bits",
        "output_bits",
        "groups",
    ):
        v = getattr(layer, name)
        if not _is_int(v) or v <= 0:
            problems.append(f"{name}: must be an integer > 0, got {v!r}")
    if not _is_int(layer.padding) or layer.padding < 0:
        problems.append(f"padding: must be an integer >= 0, got {layer.padding!r}")
    d = layer.weight_density
    if not _is_real(d) or not 0.0 < d <= 1.0:
        problems.append(f"weight_density: must be in (0, 1], got {d!r}")
    if not problems and (layer.channels % layer.groups or layer.num_filters % layer.groups):
        problems.append(
            f"groups: must divide channels ({layer.channels}) and num_filters "
            f"({layer.num_filters}), got {layer.groups}"
        )
    if not problems:
        for f, i in (("filter_h", "ifmap_h"), ("filter_w", "ifmap_w")):
            padded = getattr(layer, i) + 2 * layer.padding
            if getattr(layer, f) > padded:
                problems.append(
                    f"{f}: must not exceed the padded input ({i} + 2*padding = {padded}), "
                    f"got {getattr(layer, f)}"
                )
    return problems


# --------------------------------------------------------------------------- the interface


class HardwareModel(ABC):
    """An accelerator template priced analytically (one instance per ``AcceleratorSpec``).

    Lifecycle:
        1. ``Model(acc)``: called once per accelerator (per trial). Validates the spec and
           precomputes per-accelerator constants; microseconds, no I/O.
        2. ``evaluate_layer(layer)``: called once per layer, any number of times, in any order,
           from any thread or process. A pure function of ``(acc, layer)``.
        3. ``area_mm2(weight_bits=..., input_bits=...)``: pure; the multiplier is sized for the
           widest operands it must support.
        ``evaluate_network`` (provided) runs the layers one after another and sums their costs.

    Invariants every implementation keeps: instances are immutable after ``__init__`` and
    picklable (they travel to Ray workers); no method does I/O, reads or writes global state,
    or caches results across calls in a way that could change an answer; returned
    ``LayerCost`` values are new objects whose ``mapping`` holds only JSON-able values.

    Raises:
        SpecError: from ``__init__`` when the spec is invalid (message lists every problem),
            and from ``evaluate_layer`` when a layer's values are out of their domain.
        InfeasibleDesign: from ``evaluate_layer`` / ``evaluate_network`` when the accelerator
            cannot run the layer at all (e.g. no tile fits its buffers).
    """

    template: ClassVar[str]

    def __init__(self, acc: AcceleratorSpec) -> None:
        problems = validate_accelerator(acc)
        if not problems and acc.template != self.template:
            problems.append(f"template: this model is {self.template!r}, got {acc.template!r}")
        if problems:
            raise SpecError("; ".join(problems))
        self.acc = acc

    @abstractmethod
    def evaluate_layer(self, layer: ConvLayer) -> LayerCost:
        """Cost of one layer on this accelerator (pure)."""

    @abstractmethod
    def area_mm2(self, *, weight_bits: int, input_bits: int) -> float:
        """Silicon area of this accelerator in mm^2 (pure)."""

    def evaluate_network(self, layers: Sequence[ConvLayer]) -> HardwareReport:
        """Price layers run one after another: costs add up, power = energy / latency."""
        if not layers:
            raise SpecError("layers: the network has no layers")
        costs = tuple(self.evaluate_layer(layer) for layer in layers)
        total = reduce(lambda a, b: a + b, costs, _zero_cost(costs[0].num_pes))
        area = self.area_mm2(
            weight_bits=max(layer.weight_bits for layer in layers),
            input_bits=max(layer.input_bits for layer in layers),
        )
        seconds = total.latency_ms * 1e-3
        power = total.energy_pj * 1e-12 / seconds if seconds > 0 else 0.0
        return HardwareReport(layers=costs, total=total, area_mm2=area, power_w=power)


def _zero_cost(num_pes: int) -> LayerCost:
    return LayerCost(
        name="total",
        macs=0,
        compute_cycles=0,
        total_cycles=0,
        utilization=0.0,
        mapping_utilization=0.0,
        dram_read_bytes=0,
        dram_write_bytes=0,
        mac_energy_pj=0.0,
        rf_energy_pj=0.0,
        glb_energy_pj=0.0,
        dram_energy_pj=0.0,
        latency_ms=0.0,
        num_pes=num_pes,
    )


# --------------------------------------------------------------------------- the mapper


class Tiling(NamedTuple):
    """The DRAM tiling the mapper chose for one layer (bytes are per layer, batch included)."""

    order: str  # "k_outer" (weights read once) or "rows_outer" (inputs read once)
    kt: int  # output channels per tile
    et: int  # output rows per tile
    k_tiles: int
    row_tiles: int
    input_bytes: float
    weight_bytes: float
    output_bytes: float
    compulsory_bytes: float
    glb_bytes_used: float


_ORDERS = ("k_outer", "rows_outer")


def _tile_sizes(n: int) -> np.ndarray:
    """The distinct tile sizes ceil(n / t) for t = 1..n, ascending.

    Each gives a different tile count; any other size has the same count as one of these and
    a larger footprint, so the mapper never needs it.
    """
    return np.unique(-(-n // np.arange(1, n + 1, dtype=np.int64)))


def weight_dram_bytes(layer: ConvLayer, acc: AcceleratorSpec) -> float:
    """Weight bytes as stored in DRAM: dense, or bitmask + non-zeros when that is smaller."""
    dense = layer.weight_count * layer.weight_bits / 8.0
    if acc.weight_compression and layer.weight_density < 1.0:
        compressed = layer.weight_density * dense + layer.weight_count / 8.0
        return min(dense, compressed)
    return dense


def plan_tiling(layer: ConvLayer, acc: AcceleratorSpec) -> Tiling:
    """Choose the (kt, et, loop order) with the least DRAM traffic that fits the GLB.

    The global buffer holds one input tile (``(et-1)*stride + R`` padded rows, full padded
    width, all channels), one weight tile (``R*S*C*kt``) and one 32-bit output tile
    (``et*F*kt``). Ties on traffic go to fewer tiles, then to K-outer. Traffic is never below
    the compulsory minimum (each input, weight and output moved once).

    Raises:
        InfeasibleDesign: when not even ``kt = 1, et = 1`` fits the buffer.
    """
    ib, wb, ob = layer.input_bits / 8.0, layer.weight_bits / 8.0, layer.output_bits / 8.0
    big_k, big_e, big_f = layer.num_filters, layer.ofmap_h, layer.ofmap_w
    r, s_, c = layer.filter_h, layer.filter_w, layer.channels
    g = layer.groups
    cpg, kpg = c // g, big_k // g  # channels / filters per group
    stride, pad = layer.stride, layer.padding
    batch = layer.batch
    hp, wp = layer.ifmap_h + 2 * pad, layer.ifmap_w + 2 * pad
    glb_bytes = acc.glb_kib * 1024.0

    kt = _tile_sizes(big_k)  # (a,)
    et = _tile_sizes(big_e)  # (b,)
    nk = -(-big_k // kt)
    nb = -(-big_e // et)

    # A k-tile of a grouped conv needs only the input channels of the groups it covers.
    ch_tile = np.minimum(c, -(-kt // kpg) * cpg)  # (a,)
    in_tile = np.minimum((et - 1) * stride + r, hp) * (wp * ib)  # (b,) per channel
    w_tile = kt * (r * s_ * cpg * wb)  # (a,)
    out_tile = np.multiply.outer(kt, et) * (big_f * PSUM_BITS / 8.0)  # (a, b)
    in_tile = np.multiply.outer(ch_tile, in_tile)  # (a, b)
    need = w_tile[:, None] + in_tile + out_tile
    fits = need <= glb_bytes
    if not fits[0, 0]:
        raise InfeasibleDesign(
            f"layer {layer.name!r}: the smallest tile (kt=1, et=1: input "
            f"{in_tile[0, 0]:.0f} B + weights {w_tile[0]:.0f} B + 32-bit outputs "
            f"{out_tile[0, 0]:.0f} B) needs {need[0, 0]:.0f} bytes, "
            f"glb holds {glb_bytes:.0f} (glb_kib={acc.glb_kib})"
        )

    in_once = layer.ifmap_h * layer.ifmap_w * c * ib  # one image, no padding
    # Input rows one pass over the row tiles reads (halo overlap counted), minus padding rows.
    rows_read = np.maximum(stride * (big_e - nb) + nb * r - 2 * pad, 0)
    in_pass = np.maximum(in_once, rows_read * (layer.ifmap_w * c * ib))  # (b,), >= compulsory
    w_once = weight_dram_bytes(layer, acc)
    out_bytes = batch * big_e * big_f * big_k * ob

    # K-outer: for k-tile: for image: for row-tile. Weights once; inputs once per k-tile unless
    # the whole input (one image) is a single resident tile.
    in_resident = (nb == 1) & (batch == 1)
    # Each k-tile reads the channels its groups need: nk * ch_tile / C passes (1 for groups
    # that tile evenly; nk for an ordinary conv).
    k_passes = np.maximum(1.0, nk * ch_tile / c)  # (a,)
    in_k = batch * in_pass[None, :] * np.where(in_resident, 1, k_passes[:, None])  # (a, b)
    w_k = np.full_like(in_k, w_once)
    # Rows-outer: for image: for row-tile: for k-tile. Inputs once; weights once per row tile
    # (and image) unless all weights are a single resident tile.
    in_r = np.broadcast_to(batch * in_pass[None, :], in_k.shape)
    w_r = w_once * np.where(nk[:, None] == 1, 1, batch * nb[None, :])  # (a, b)

    traffic = np.stack((in_k + w_k, in_r + w_r)) + out_bytes  # (2, a, b)
    traffic = np.where(fits[None], traffic, np.inf)
    best = traffic.min()
    tiles = np.multiply.outer(nk, nb)
    tied = np.flatnonzero(traffic.ravel() <= best)
    pick = tied[np.argmin(np.broadcast_to(tiles, traffic.shape).ravel()[tied])]
    o, i, j = np.unravel_index(pick, traffic.shape)
    if o == 0:
        in_bytes, w_bytes = float(in_k[i, j]), float(w_k[i, j])
    else:
        in_bytes, w_bytes = float(in_r[i, j]), float(w_r[i, j])
    return Tiling(
        order=_ORDERS[o],
        kt=int(kt[i]),
        et=int(et[j]),
        k_tiles=int(nk[i]),
        row_tiles=int(nb[j]),
        input_bytes=in_bytes,
        weight_bytes=w_bytes,
        output_bytes=float(out_bytes),
        compulsory_bytes=float(batch * in_once + w_once + out_bytes),
        glb_bytes_used=float(need[i, j]),
    )


# --------------------------------------------------------------------------- the template


class SystolicModel(HardwareModel):
    """A TPU-like 2-D systolic array with one shared global buffer and per-PE registers.

    Cycles follow SCALE-Sim 3.0.0's stall-free count; DRAM traffic comes from ``plan_tiling``;
    latency is a roofline of compute against DRAM transfer; energy is per-action counts times
    45 nm per-access energies from ``tables``. See docs/hardware/systolic.md.
    """

    template = "systolic"

    def __init__(self, acc: AcceleratorSpec) -> None:
        super().__init__(acc)
        self.num_pes = acc.pe_rows * acc.pe_cols
        self._bytes_per_cycle = acc.dram_gbps * 1e9 / (acc.freq_mhz * 1e6)
        self._rf_pj_bit = tables.sram_pj_per_bit(acc.rf_bytes)
        self._glb_pj_bit = tables.sram_pj_per_bit(acc.glb_kib * 1024.0)
        self._dram_pj_bit = tables.DRAM_PJ_PER_BIT[acc.dram_type]
        self._acc_add_pj = tables.add_pj(PSUM_BITS)

    @property
    def peak_ops_per_s(self) -> float:
        """Peak throughput, 2 ops (multiply + add) per PE per cycle."""
        return 2.0 * self.num_pes * self.acc.freq_mhz * 1e6

    def area_mm2(self, *, weight_bits: int, input_bits: int) -> float:
        """PEs (multiplier + 32-bit accumulator adder + register file) plus the GLB SRAM."""
        acc = self.acc
        pe_um2 = (
            tables.mult_area_um2(weight_bits, input_bits)
            + tables.add_area_um2(PSUM_BITS)
            + acc.rf_bytes * 8 * tables.REG_AREA_UM2_PER_BIT
        )
        glb_um2 = acc.glb_kib * tables.SRAM_AREA_UM2_PER_KIB
        return (self.num_pes * pe_um2 + glb_um2) * 1e-6

    def evaluate_layer(self, layer: ConvLayer) -> LayerCost:
        problems = layer_problems(layer)
        if problems:
            raise SpecError(f"layer {layer.name!r}: " + "; ".join(problems))
        acc = self.acc
        rows, cols = acc.pe_rows, acc.pe_cols
        wbits, ibits = layer.weight_bits, layer.input_bits
        # A grouped conv is ``groups`` independent GEMMs run one after another.
        groups = layer.groups
        window = layer.filter_h * layer.filter_w * (layer.channels // groups)
        pixels = layer.ofmap_h * layer.ofmap_w * layer.batch
        k = layer.num_filters // groups

        # Conv -> GEMM views (SCALE-Sim): spatial rows, spatial cols, temporal; and the bit
        # widths of the stationary, row-streamed and column-streamed operands.
        df = acc.dataflow
        if df == "ws":
            sr, sc, t = window, k, pixels
            stat_bits, row_bits, col_bits, col_psum = wbits, ibits, PSUM_BITS, True
        elif df == "os":
            sr, sc, t = pixels, k, window
            stat_bits, row_bits, col_bits, col_psum = PSUM_BITS, ibits, wbits, False
        else:  # "is"
            sr, sc, t = window, pixels, k
            stat_bits, row_bits, col_bits, col_psum = ibits, wbits, PSUM_BITS, True

        if acc.rf_bytes * 8 < stat_bits:
            raise InfeasibleDesign(
                f"layer {layer.name!r}: dataflow {df} keeps a {stat_bits}-bit stationary word "
                f"in each PE register file, needs rf_bytes >= {stat_bits / 8:g}, "
                f"got {acc.rf_bytes}"
            )

        fr, fc = -(-sr // rows), -(-sc // cols)
        folds = fr * fc
        # SCALE-Sim 3.0.0 stall-free cycles: per fold, WS/IS preload the stationary operand
        # (rows cycles), then fill (rows + cols), stream T, drain; OS has no preload.
        per_fold = (rows if df == "os" else 2 * rows) + cols + t - 2
        compute = groups * (folds * per_fold - 1)  # SCALE-Sim runs groups as separate layers
        hidden = 0
        if df != "os" and acc.double_buffered and acc.rf_bytes * 8 >= 2 * stat_bits:
            # the next fold's preload overlaps this fold
            hidden = (groups * folds - 1) * min(rows, t)
        compute_overlapped = compute - hidden

        tiling = plan_tiling(layer, acc)
        dram_read = math.ceil(tiling.input_bytes + tiling.weight_bytes)
        dram_write = math.ceil(tiling.output_bytes)
        dram_bytes = dram_read + dram_write
        dram_cycles = dram_bytes / self._bytes_per_cycle
        total = max(compute_overlapped, math.ceil(dram_cycles))

        macs = layer.macs
        mult_pj = tables.mult_pj(wbits, ibits)
        if acc.zero_gating:
            mult_pj *= layer.weight_density
        mac_pj = macs * (mult_pj + self._acc_add_pj)
        # RF: per MAC one access per operand (stationary read, streamed operand passed
        # register-to-register, 32-bit psum update).
        rf_pj = macs * (wbits + ibits + PSUM_BITS) * self._rf_pj_bit
        glb_bits = (
            groups
            * (
                sr * sc * stat_bits
                + fc * sr * t * row_bits
                + (2 * fr - 1 if col_psum else fr) * sc * t * col_bits
            )
            + 8 * dram_bytes  # DRAM fills written into the GLB, outputs read out of it
        )
        glb_pj = glb_bits * self._glb_pj_bit
        dram_pj = 8 * dram_bytes * self._dram_pj_bit

        pes = self.num_pes
        return LayerCost(
            name=layer.name,
            macs=macs,
            compute_cycles=compute,
            total_cycles=total,
            utilization=macs / (pes * total),
            mapping_utilization=macs / (pes * compute),
            dram_read_bytes=dram_read,
            dram_write_bytes=dram_write,
            mac_energy_pj=mac_pj,
            rf_energy_pj=rf_pj,
            glb_energy_pj=glb_pj,
            dram_energy_pj=dram_pj,
            latency_ms=total / (acc.freq_mhz * 1e3),
            num_pes=pes,
            mapping={
                "template": self.template,
                "dataflow": df,
                "spatial_rows": sr,
                "spatial_cols": sc,
                "temporal": t,
                "folds_row": fr,
                "folds_col": fc,
                "folds": folds,
                "groups": groups,
                "ideal_cycles": -(-macs // pes),
                "compute_cycles_overlapped": compute_overlapped,
                "preload_cycles_hidden": hidden,
                "dram_cycles": dram_cycles,
                "bound": "memory" if dram_cycles > compute_overlapped else "compute",
                "order": tiling.order,
                "kt": tiling.kt,
                "et": tiling.et,
                "k_tiles": tiling.k_tiles,
                "row_tiles": tiling.row_tiles,
                "glb_bytes_used": tiling.glb_bytes_used,
                "dram_input_bytes": tiling.input_bytes,
                "dram_weight_bytes": tiling.weight_bytes,
                "dram_output_bytes": tiling.output_bytes,
                "dram_compulsory_bytes": tiling.compulsory_bytes,
            },
        )
