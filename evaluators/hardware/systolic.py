"""The systolic-array template: SCALE-Sim-compatible cycles, a small DRAM tiling mapper, energy.

``SystolicModel`` implements ``HardwareModel`` (``evaluators.hardware.base``). The formulas,
units and sources are in ``docs/hardware/systolic.md``; every constant comes from
``evaluators.hardware.tables``.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from evaluators.hardware import tables
from evaluators.hardware.base import (
    HardwareModel,
    check_layer,
    frozen,
    is_int,
    is_real,
    layer_cost,
    tile_sizes,
    touched_lines,
)
from evaluators.specs import (
    DATAFLOW_CHOICES,
    DATAFLOWS,
    DRAM_TYPES,
    MAPPER_OBJECTIVES,
    PE_TYPES,
    SRAM_DEVICES,
    AcceleratorSpec,
    ConvLayer,
    InfeasibleDesign,
    LayerCost,
)

_INT_FIELDS = ("pe_rows", "pe_cols", "rf_bytes", "pe_bits")
_FLOAT_FIELDS = ("glb_kib", "dram_gbps", "freq_mhz", "tech_node_nm")
NONNEG_FLOAT_FIELDS = ("glb_bytes_per_cycle",)  # 0 means unlimited
_BOOL_FIELDS = ("double_buffered", "zero_gating", "weight_compression", "zero_skipping")
CHOICE_FIELDS = {  # the string fields and their allowed values (the YAML reader uses them)
    "template": ("systolic",),
    "dataflow": DATAFLOW_CHOICES,
    "dram_type": DRAM_TYPES,
    "pe_type": PE_TYPES,
    "mapper_objective": MAPPER_OBJECTIVES,
    "sram_device": SRAM_DEVICES,
}
FUSION_BRICK_BITS = 2  # Bit Fusion's BitBrick: a 2-bit x 2-bit multiplier (Sharma et al. 2018)

PSUM_BITS = tables.ACCUMULATOR_BITS  # partial sums live at 32 bit in PEs and in the GLB


def validate_accelerator(acc: AcceleratorSpec) -> list[str]:
    """Every problem of an accelerator spec, one line each: ``"<field>: <rule>, got <value>"``.

    An empty list means the spec is valid. Never raises.
    """
    problems: list[str] = []
    for name, choices in CHOICE_FIELDS.items():
        v = getattr(acc, name)
        if v not in choices:
            problems.append(f"{name}: must be one of {', '.join(choices)}, got {v!r}")
    for name in _INT_FIELDS:
        v = getattr(acc, name)
        if not is_int(v) or v <= 0:
            problems.append(f"{name}: must be an integer > 0, got {v!r}")
    for name in _FLOAT_FIELDS:
        v = getattr(acc, name)
        if not is_real(v) or not math.isfinite(v) or v <= 0:
            problems.append(f"{name}: must be a finite number > 0, got {v!r}")
    for name in _BOOL_FIELDS:
        v = getattr(acc, name)
        if not isinstance(v, (bool, np.bool_)):
            problems.append(f"{name}: must be true or false, got {v!r}")
    for name in NONNEG_FLOAT_FIELDS:
        v = getattr(acc, name)
        if not is_real(v) or not math.isfinite(v) or v < 0:
            problems.append(f"{name}: must be a finite number >= 0 (0: unlimited), got {v!r}")
    lo, hi = tables.TECH_NODES_NM[-1], tables.TECH_NODES_NM[0]
    node = acc.tech_node_nm
    if is_real(node) and math.isfinite(node) and node > 0 and not lo <= node <= hi:
        problems.append(f"tech_node_nm: must be in [{lo}, {hi}] (the scaling table), got {node}")
    bits = acc.pe_bits
    if acc.pe_type == "bit_fusion" and is_int(bits) and bits > 0 and (
        bits < FUSION_BRICK_BITS or bits & (bits - 1)
    ):
        problems.append(f"pe_bits: must be a power of two >= 2 for bit_fusion, got {bits}")
    return problems


# --------------------------------------------------------------------------- the mapper


class Tiling(NamedTuple):
    """The DRAM tiling the mapper chose for one layer (bytes are per layer, batch included).

    One GLB tile holds ``kt`` output channels, ``ct`` input channels, ``et`` output rows and
    ``ft`` output columns of one image: part of one group, or ``gt`` whole groups of a grouped
    conv. ``order`` is the DRAM-level loop nest over the K, C and spatial (``S`` = image > row >
    column) tiles, outermost first; a grouped conv's group loop is outside all of them.
    """

    order: str  # one of ORDERS
    kt: int  # output channels per tile
    ct: int  # input channels per tile
    et: int  # output rows per tile
    ft: int  # output columns per tile
    gt: int  # whole groups per tile (1: the tile lies within one group)
    k_tiles: int  # K tiles over the whole layer (all groups)
    c_tiles: int  # C tiles per group: partial sums accumulate over this many
    row_tiles: int
    col_tiles: int
    input_bytes: float
    weight_bytes: float
    output_bytes: float  # all output traffic: final outputs + 32-bit psum spills and refetches
    psum_read_bytes: float  # 32-bit partial sums read back from DRAM (inside output_bytes)
    psum_write_bytes: float  # 32-bit partial sums spilled to DRAM (inside output_bytes)
    compulsory_bytes: float
    glb_bytes_used: float
    weights_streamed: bool = False  # WS: weights pass through a fold-sized staging buffer

    @property
    def read_bytes(self) -> float:
        return self.input_bytes + self.weight_bytes + self.psum_read_bytes

    @property
    def write_bytes(self) -> float:
        return self.output_bytes - self.psum_read_bytes

    @property
    def total_bytes(self) -> float:
        return self.input_bytes + self.weight_bytes + self.output_bytes

    def mapping(self) -> dict[str, float | int | str]:
        """The tiling as ``LayerCost.mapping`` entries (JSON-able)."""
        return {
            "order": self.order,
            "kt": self.kt,
            "ct": self.ct,
            "et": self.et,
            "ft": self.ft,
            "groups_per_tile": self.gt,
            "k_tiles": self.k_tiles,
            "c_tiles": self.c_tiles,
            "row_tiles": self.row_tiles,
            "col_tiles": self.col_tiles,
            "glb_bytes_used": self.glb_bytes_used,
            "weights_streamed": self.weights_streamed,
            "dram_input_bytes": self.input_bytes,
            "dram_weight_bytes": self.weight_bytes,
            "dram_output_bytes": self.output_bytes,
            "dram_psum_bytes": self.psum_read_bytes + self.psum_write_bytes,
            "dram_compulsory_bytes": self.compulsory_bytes,
        }


# DRAM-level loop orders over K tiles, C tiles and spatial tiles (S), outermost first. Every
# other order (S split around K or C) moves as much as one of these or more.
ORDERS = ("KCS", "CKS", "KSC", "SKC", "SCK", "CSK")


def _multiples(n: int, g: int) -> np.ndarray:
    """Tile sizes in whole multiples of ``g`` (the last tile may be partial), plus ``n`` itself."""
    return np.minimum(tile_sizes(-(-n // g)) * g, n)


# The helpers below are pure functions of a few integers, memoized because layer shapes
# repeat across layers and trials; their arrays are read-only, so a cached answer cannot change.


@lru_cache(maxsize=4096)
def _axis(n_out: int, n_in: int, r: int, s: int, p: int) -> tuple[np.ndarray, ...]:
    """Tile sizes along one output axis (rows or columns) and the input lines they read.

    Returns ``(t, n_tiles, largest, total)``: the candidate tile sizes (output lines per tile,
    ``tile_sizes(n_out)``), the tile count, and the input lines the largest tile holds and all
    tiles read together (``touched_lines``).
    """
    t = tile_sizes(n_out)
    return frozen(t, -(-n_out // t), *touched_lines(n_out, n_in, r, s, p, t))


@lru_cache(maxsize=4096)
def _channel_tiles(kpg: int, cpg: int, g: int, k_unit: int, c_unit: int) -> tuple[np.ndarray, ...]:
    """The channel candidates of ``plan_tiling``, flat: within one group (gt = 1) any kt x ct
    (``kt`` in multiples of ``k_unit``, ``ct`` of ``c_unit``), or gt whole groups.

    Returns ``(kt, ct, gt, nk, nc, ng, tiles)``: the tile's output channels, input channels and
    whole groups, the K tiles per group, the C tiles per group, the group tiles, and
    ``ng * nk * nc``.
    """
    kts, cts = _multiples(kpg, k_unit), _multiples(cpg, c_unit)
    kt = np.repeat(kts, len(cts))
    ct = np.tile(cts, len(kts))
    gt = np.ones_like(kt)
    if g > 1:
        gts = tile_sizes(g)[1:]
        kt = np.concatenate((kt, gts * kpg))
        ct = np.concatenate((ct, gts * cpg))
        gt = np.concatenate((gt, gts))
    nk = -(-kpg // np.minimum(kt, kpg))  # per group
    nc = -(-cpg // np.minimum(ct, cpg))
    ng = -(-g // gt)
    return frozen(kt, ct, gt, nk, nc, ng, ng * nk * nc)


@lru_cache(maxsize=4096)
def _spatial_tiles(
    oh: int, ih: int, ow: int, iw: int, r: int, s: int, stride: int, pad: int
) -> tuple[np.ndarray, ...]:
    """The spatial candidates of ``plan_tiling``: ``et`` output rows x ``ft`` output columns.

    Returns ``(et, ft, nb, nf, px, tiles, lines, area)``: the tile heights and widths, their
    tile counts along each axis, and over (et, ft): the output pixels per tile, the tiles per
    image, the input pixels all tiles of one image and channel read, and those the largest
    tile holds (see ``_axis``).
    """
    et, nb, rows_max, rows_sum = _axis(oh, ih, r, stride, pad)
    ft, nf, cols_max, cols_sum = _axis(ow, iw, s, stride, pad)
    outer = np.multiply.outer
    return et, ft, nb, nf, *frozen(
        outer(et, ft), outer(nb, nf), outer(rows_sum, cols_sum), outer(rows_max, cols_max)
    )


def weight_dram_bytes(layer: ConvLayer, acc: AcceleratorSpec) -> float:
    """Weight bytes as stored in DRAM: dense, or bitmask + non-zeros when that is smaller
    (always the latter with ``zero_skipping``, whose array reads the mask)."""
    dense = layer.weight_count * layer.weight_bits / 8.0
    if acc.zero_skipping:
        return layer.weight_density * dense + layer.weight_count / 8.0
    if acc.weight_compression and layer.weight_density < 1.0:
        compressed = layer.weight_density * dense + layer.weight_count / 8.0
        return min(dense, compressed)
    return dense


def array_granules(layer: ConvLayer, acc: AcceleratorSpec) -> tuple[int, int, int]:
    """What one fold of the array needs of a GLB tile: ``(k_unit, c_unit, min_pixels)``.

    ``kt`` is a multiple of ``k_unit`` (or all filters of a group), ``ct`` a multiple of
    ``c_unit`` (or all channels of a group), and a tile holds at least ``min_pixels`` output
    pixels. WS and OS put K on the columns: a fold produces ``min(K/G, pe_cols)`` channels at
    once. WS and IS put the ``R*S*C`` window on the rows: ``c_unit`` channels make whole row
    folds (``R*S*c_unit`` is a multiple of ``pe_rows``). OS puts pixels on the rows and IS on
    the columns: a tile holds at least one fold's worth of them.
    """
    kpg = layer.num_filters // layer.groups
    cpg = layer.channels // layer.groups
    rs = layer.filter_h * layer.filter_w
    pixels = layer.ofmap_h * layer.ofmap_w
    df = acc.dataflow
    k_unit = 1 if df == "is" else min(kpg, acc.pe_cols)
    c_unit = 1 if df == "os" else min(cpg, acc.pe_rows // math.gcd(rs, acc.pe_rows))
    min_px = {"ws": 1, "os": min(pixels, acc.pe_rows), "is": min(pixels, acc.pe_cols)}[df]
    return k_unit, c_unit, min_px


def order_flags(k: Any, c: Any, s: Any) -> tuple[tuple[Any, Any, Any], ...]:
    """Per loop order of ``ORDERS``: (weights per spatial tile, inputs per K tile, psums
    spilled per C tile), given whether there is more than one K (``k``), C (``c``) and spatial
    (``s``) tile. Elementwise: the flags may be bools or numpy bool arrays."""
    return (
        (False, c | s, s),  # KCS
        (False, s, k | s),  # CKS
        (c, c | s, False),  # KSC: psums stay in the GLB across C tiles
        (c | k, c, False),  # SKC
        (k | c, False, k),  # SCK
        (k, False, s | k),  # CSK
    )


def _order_traffic(
    w_once: float,
    in_pass: float,
    spill: float,
    nk: int,
    nc: int,
    n_sp: int,
    streamed: bool = False,
) -> list[tuple[float, float, float]]:
    """(input, weight, psum-spill) DRAM bytes of one tile choice under each of ``ORDERS``.

    An operand is fetched again for every iteration of a loop it does not depend on (inputs:
    K; weights: the spatial loops; outputs: C) that lies outside its innermost loop of more
    than one iteration. Partial sums that must leave the GLB go out and come back at 32 bit.
    ``streamed`` weights are not held between tile visits: once per spatial tile, any order.
    """
    flags = order_flags(nk > 1, nc > 1, n_sp > 1)
    return [
        (
            in_pass * (nk if fi else 1),
            w_once * (n_sp if fw or streamed else 1),
            spill * (nc - 1) if fo else 0.0,
        )
        for fw, fi, fo in flags
    ]


def plan_tiling(layer: ConvLayer, acc: AcceleratorSpec,
                buffer: tuple[str, str] | None = None) -> Tiling:
    """Choose the GLB tile and DRAM loop order with the least DRAM traffic that fits the GLB.

    Candidates: ``kt`` output channels, ``ct`` input channels (both sized so the array's
    folds stay whole, see ``array_granules``), ``et`` x ``ft`` output pixels, and the six loop
    orders of ``ORDERS``; for a grouped conv also tiles of whole groups. The GLB holds one
    input tile (touched input rows x columns x ``ct``), one weight tile (``kt * ct * R * S``)
    and one tile of 32-bit partial sums (``et * ft * kt``). Partial sums stay in the GLB while
    the C loop runs inside every output loop; otherwise they are spilled to DRAM and read back
    at 32 bit. Ties on traffic go to fewer tiles. Traffic is never below the compulsory
    minimum (each touched input, each weight and each output moved once).

    With ``ws`` the weights may instead be *streamed*: a fold's weights stay in the array for
    all of the tile's pixels, so each weight of a tile is used once per visit of the tile and
    the GLB needs only a staging buffer of one fold (``pe_rows x pe_cols`` weights: the next
    fold is fetched into it while the array computes the current one; the array's second
    register word, ``double_buffered``, lets it preload from there without a second GLB fold)
    in place of the weight tile. The price: weights are fetched once per spatial tile
    whatever the loop order, so a tile streams only when it does not fit with its weights
    held (holding them never moves more). This frees the GLB for the psums of more output
    channels or a larger input tile (ZigZag's "uneven" mappings give the weights their own,
    lower GLB boundary the same way; docs/hardware/zigzag.md).

    ``buffer``: how the message of ``InfeasibleDesign`` names the buffer, ``(what holds,
    the setting that sizes it)``; default ``("glb holds", "glb_kib=<glb_kib>")`` (another
    template that tiles with this mapper names its own buffers).

    Raises:
        InfeasibleDesign: when not even the smallest tile fits the buffer.
    """
    c = tiling_candidates(layer, acc)
    kt, ct, et, ft, px, in_area = c.kt, c.ct, c.et, c.ft, c.px, c.in_area
    ib, ps = layer.input_bits / 8.0, PSUM_BITS / 8.0
    glb_bytes = acc.glb_kib * 1024.0
    fits = (c.hold_bytes <= glb_bytes) & c.enough_px
    # Streaming never moves less than holding the same tile (it always pays the weight
    # re-fetch), so it is a candidate only where the resident tile does not fit.
    streams = ~fits & (c.stream_bytes <= glb_bytes) & c.enough_px
    if not (fits | streams).any():
        small = np.where(c.enough_px, c.stream_bytes, np.inf)
        i, j, m = np.unravel_index(np.argmin(small), small.shape)
        parts = (
            f"input {ct[i] * ib * in_area[j, m]:.0f} B + weights {c.w_stream[i]:.0f} B"
            f"{' (streamed)' if c.w_stream[i] < c.w_tile[i] else ''} + 32-bit outputs "
            f"{kt[i] * ps * px[j, m]:.0f} B"
        )
        holds, setting = buffer or ("glb holds", f"glb_kib={acc.glb_kib}")
        raise InfeasibleDesign(
            f"layer {layer.name!r}: the smallest tile (kt={kt[i]}, ct={ct[i]}, et={et[j]}, "
            f"ft={ft[m]}: {parts}) needs {small[i, j, m]:.0f} bytes, {holds} "
            f"{glb_bytes:.0f} ({setting})"
        )

    traffic = c.traffic
    if streams.any():  # streamed weights pay d_w in every order; the order picks d_i or d_o
        traffic = np.where(streams, streamed_traffic(c), traffic)
    traffic = np.where(fits | streams, traffic, np.inf)
    best = traffic.min()
    tied = np.flatnonzero(traffic <= best)
    pick = tied[np.argmin(c.tiles.ravel()[tied])]
    i, j, m = np.unravel_index(pick, traffic.shape)
    streamed = bool(streams[i, j, m])
    nk, nc, n_sp = c.nk, c.nc, c.n_sp
    orders = _order_traffic(
        c.w_once, float(c.in_pass[j, m]), c.spill, int(nk[i]), int(nc[i]), int(n_sp[j, m]),
        streamed,
    )
    o = min(range(len(ORDERS)), key=lambda x: sum(orders[x]))
    in_bytes, w_bytes, psum_bytes = orders[o]
    psum_one_way = psum_bytes / 2
    in_once = layer.batch * layer.channels * ib * float(c.in_lines[-1, -1])  # touched, once
    return Tiling(
        order=ORDERS[o],
        kt=int(kt[i]),
        ct=int(ct[i]),
        et=int(et[j]),
        ft=int(ft[m]),
        gt=int(c.gt[i]),
        k_tiles=int(c.ng[i] * nk[i]),
        c_tiles=int(nc[i]),
        row_tiles=int(c.nb[j]),
        col_tiles=int(c.nf[m]),
        input_bytes=in_bytes,
        weight_bytes=w_bytes,
        output_bytes=float(c.out_final) + psum_bytes,
        psum_read_bytes=psum_one_way,
        psum_write_bytes=psum_one_way,
        compulsory_bytes=float(in_once + c.w_once + c.out_final),
        glb_bytes_used=float((c.w_stream if streamed else c.w_tile)[i] + c.rest[i, j, m]),
        weights_streamed=streamed,
    )


class TilingCandidates(NamedTuple):
    """Every tile ``plan_tiling`` weighs for one layer on one array, and its DRAM traffic:
    all that does not depend on the GLB's size (``tiling_candidates``).

    Shapes: ``(a,)`` over channel tiles, ``(b,)`` over tile heights, ``(c,)`` over tile
    widths, ``(b, c)`` and ``(a, b, c)`` over their combinations; bytes are per layer.
    """

    kt: np.ndarray  # (a,) output channels per tile
    ct: np.ndarray  # (a,) input channels per tile
    gt: np.ndarray  # (a,) whole groups per tile
    nk: np.ndarray  # (a,) K tiles per group
    nc: np.ndarray  # (a,) C tiles per group
    ng: np.ndarray  # (a,) group tiles
    et: np.ndarray  # (b,) output rows per tile
    ft: np.ndarray  # (c,) output columns per tile
    nb: np.ndarray  # (b,) row tiles
    nf: np.ndarray  # (c,) column tiles
    px: np.ndarray  # (b, c) output pixels per tile
    in_lines: np.ndarray  # (b, c) input pixels all tiles of one image and channel read
    in_area: np.ndarray  # (b, c) input pixels the largest tile holds
    n_sp: np.ndarray  # (b, c) spatial tiles, images included
    in_pass: np.ndarray  # (b, c) input bytes of one pass over the layer
    w_tile: np.ndarray  # (a,) GLB bytes of a held weight tile
    w_stream: np.ndarray  # (a,) GLB bytes of streamed weights (ws); not ws: w_tile itself
    rest: np.ndarray  # (a, b, c) GLB bytes of the input tile and the 32-bit psum tile
    enough_px: np.ndarray  # (b, c) whether a tile holds a fold's worth of pixels
    hold_bytes: np.ndarray  # (a, b, c) GLB bytes with the weight tile held
    stream_bytes: np.ndarray  # (a, b, c) GLB bytes with the weights streamed
    tiles: np.ndarray  # (a, b, c) tiles of the whole layer (ties on traffic go to fewer)
    traffic: np.ndarray  # (a, b, c) DRAM bytes with the weights held, best loop order
    w_once: float  # weight bytes as stored in DRAM
    out_final: float  # output bytes written once
    spill: float  # bytes of one 32-bit psum round trip
    base: np.ndarray  # (b, c) one input pass + weights once + outputs once
    d_i: np.ndarray  # (a, b, c) input re-fetch penalty
    d_w: np.ndarray  # (1, b, c) weight re-fetch penalty
    d_o: np.ndarray  # (a, 1, 1) psum spill penalty


def tiling_candidates(layer: ConvLayer, acc: AcceleratorSpec) -> TilingCandidates:
    """The tiles of ``plan_tiling`` and their traffic, before any is checked against the GLB.

    A pure function of the layer and of what it reads of ``acc``: ``array_granules``
    (dataflow, ``pe_rows``, ``pe_cols``), ``weight_dram_bytes`` (``zero_skipping``,
    ``weight_compression``) and, for ``ws``, the fold ``pe_rows * pe_cols``; never
    ``glb_kib``. Never raises.
    """
    ib, wb, ob = layer.input_bits / 8.0, layer.weight_bits / 8.0, layer.output_bits / 8.0
    ps = PSUM_BITS / 8.0
    big_k, big_c = layer.num_filters, layer.channels
    r, s_ = layer.filter_h, layer.filter_w
    g = layer.groups
    cpg, kpg = big_c // g, big_k // g  # channels / filters per group
    batch = layer.batch
    k_unit, c_unit, min_px = array_granules(layer, acc)

    kt, ct, gt, nk, nc, ng, ch_tiles = _channel_tiles(kpg, cpg, g, k_unit, c_unit)  # (a,)
    w_tile = kt * (ct // gt) * (r * s_ * wb)
    et, ft, nb, nf, px, img_tiles, in_lines, in_area = _spatial_tiles(
        layer.ofmap_h, layer.ifmap_h, layer.ofmap_w, layer.ifmap_w, r, s_, layer.stride,
        layer.padding,
    )  # (b,), (c,), (b, c)
    n_sp = batch * img_tiles  # spatial tiles incl. images
    in_pass = (batch * big_c * ib) * in_lines  # one pass

    # weights streamed (ws) need only a staging fold in the GLB; never more than the tile
    w_stream = w_tile
    if acc.dataflow == "ws":
        w_stream = np.minimum(w_tile, acc.pe_rows * acc.pe_cols * wb)  # one fold
    rest = (ct * ib)[:, None, None] * in_area + (kt * ps)[:, None, None] * px  # (a, b, c)
    enough_px = px >= min_px

    w_once = weight_dram_bytes(layer, acc)
    out_final = batch * layer.ofmap_h * layer.ofmap_w * big_k * ob
    spill = 2 * batch * layer.ofmap_h * layer.ofmap_w * big_k * ps  # one psum round trip
    # Re-fetch penalties: weights once more per extra spatial tile, inputs once more per extra
    # K tile, partial sums out and back once more per extra C tile. A loop order avoids the
    # penalty of the operand whose irrelevant loop it puts innermost (see _order_traffic); the
    # best of the six orders pays the two smaller ones.
    d_w = (w_once * (n_sp - 1))[None]  # (1, b, c)
    d_i = np.multiply.outer(nk - 1, in_pass)  # (a, b, c)
    d_o = (spill * (nc - 1))[:, None, None]  # (a, 1, 1)
    base = in_pass + (w_once + out_final)
    traffic = d_i + d_w
    traffic += d_o
    traffic -= np.maximum(np.maximum(d_i, d_w), d_o)
    traffic += base
    return TilingCandidates(
        kt=kt, ct=ct, gt=gt, nk=nk, nc=nc, ng=ng, et=et, ft=ft, nb=nb, nf=nf, px=px,
        in_lines=in_lines, in_area=in_area, n_sp=n_sp, in_pass=in_pass, w_tile=w_tile,
        w_stream=w_stream, rest=rest, enough_px=enough_px,
        hold_bytes=w_tile[:, None, None] + rest, stream_bytes=w_stream[:, None, None] + rest,
        tiles=np.multiply.outer(ch_tiles, n_sp), traffic=traffic, w_once=w_once,
        out_final=out_final, spill=spill, base=base, d_i=d_i, d_w=d_w, d_o=d_o,
    )


def streamed_traffic(c: TilingCandidates) -> np.ndarray:
    """``(a, b, c)`` DRAM bytes of each candidate with its weights streamed: they pay the
    weight re-fetch in every order, and the order picks the smaller of the other two."""
    return c.base + c.d_w + np.minimum(c.d_i, c.d_o)


# --------------------------------------------------------------------------- the PE options


def _pow2_at_least(bits: int, floor: int) -> int:
    """The smallest power of two >= ``bits`` and >= ``floor``."""
    return max(floor, 1 << (bits - 1).bit_length())


def pe_rate(acc: AcceleratorSpec, weight_bits: int, input_bits: int) -> tuple[int, int, int, int]:
    """MACs per PE per cycle of a layer's operand widths, as ``(spatial, temporal, wb, ib)``.

    A PE does ``spatial / temporal`` MACs per cycle on operands padded to ``wb`` x ``ib`` bits:
    ``fixed`` 1/1 at the layer's own widths. ``bit_fusion`` (Sharma et al., ISCA 2018): the PE
    is ``(pe_bits / 2)^2`` 2-bit BitBricks; each operand is padded to a power of two >= 2 bits
    and the bricks fuse into ``(pe_bits / wb) * (pe_bits / ib)`` independent products per
    cycle, or, for operands wider than ``pe_bits``, one product over several cycles (temporal
    fusion). ``bit_serial`` (Stripes, Judd et al., MICRO 2016): weights in parallel at up to
    ``pe_bits`` bits, activations one bit per cycle, so a MAC takes
    ``input_bits * ceil(weight_bits / pe_bits)`` cycles.
    """
    if acc.pe_type == "bit_fusion":
        wb = _pow2_at_least(weight_bits, FUSION_BRICK_BITS)
        ib = _pow2_at_least(input_bits, FUSION_BRICK_BITS)
        rate = (acc.pe_bits * acc.pe_bits, wb * ib)  # products per cycle as a fraction
        g = math.gcd(*rate)
        return rate[0] // g, rate[1] // g, wb, ib
    if acc.pe_type == "bit_serial":
        return 1, input_bits * -(-weight_bits // acc.pe_bits), weight_bits, input_bits
    return 1, 1, weight_bits, input_bits


def skipped_length(window: int, density: float, lanes: int) -> int:
    """Positions of a ``window``-long weight axis left after zero-skipping compacts it.

    Each of ``lanes`` filters in flight keeps about ``Binomial(window, density)`` non-zeros;
    the fold lasts as long as the fullest lane. Expected maximum by the Gaussian tail bound:
    ``d*W + sqrt(2 ln lanes) * sqrt(W d (1 - d))``, at most ``W``.
    """
    if density >= 1.0:
        return window
    mean = density * window
    spread = math.sqrt(2.0 * math.log(lanes)) * math.sqrt(window * density * (1.0 - density))
    return max(1, min(window, math.ceil(mean + spread)))


# --------------------------------------------------------------------------- the template


class SystolicModel(HardwareModel):
    """A TPU-like 2-D systolic array with one shared global buffer and per-PE registers.

    Cycles follow SCALE-Sim 3.0.0's stall-free count; DRAM traffic comes from ``plan_tiling``;
    latency is a roofline of compute against DRAM transfer; energy is per-action counts times
    45 nm per-access energies from ``tables`` (scaled to ``tech_node_nm``) plus leakage x
    latency. With ``dataflow: auto`` each layer runs the dataflow that minimizes
    ``mapper_objective``. See docs/hardware/systolic.md.
    """

    template = "systolic"
    spec_type = AcceleratorSpec
    spec_problems = staticmethod(validate_accelerator)  # AcceleratorSpec has no validate()

    def __init__(self, acc: AcceleratorSpec) -> None:
        super().__init__(acc)
        self.num_pes = acc.pe_rows * acc.pe_cols
        self._bytes_per_cycle = acc.dram_gbps * 1e9 / (acc.freq_mhz * 1e6)
        self._node = tables.energy_scale(acc.tech_node_nm)  # energy and leakage, vs 45 nm
        self._rf_pj_bit = tables.sram_pj_per_bit(acc.rf_bytes) * self._node
        self._glb_pj_bit = tables.sram_pj_per_bit(acc.glb_kib * 1024.0) * self._node
        self._dram_pj_bit = tables.DRAM_PJ_PER_BIT[acc.dram_type]  # off chip: not scaled
        self._glb_leak_w = tables.sram_leakage_w(acc.glb_kib * 1024.0, acc.sram_device) * (
            self._node
        )
        # every PE's register file is clocked every cycle, busy or idle (no clock gating)
        self.register_bits = self.num_pes * acc.rf_bytes * 8
        self.clock_pj_per_cycle = self.register_bits * tables.reg_clock_pj_per_bit() * self._node
        self._clock_w = self.clock_pj_per_cycle * acc.freq_mhz * 1e-6  # pJ x MHz -> W
        # what leaks whatever the layer: the register files and the GLB
        self._static_leak_w = (
            self.register_bits * tables.reg_leakage_w_per_bit() * self._node + self._glb_leak_w
        )
        flows = DATAFLOWS if acc.dataflow == "auto" else (acc.dataflow,)
        self._specs = {df: dataclasses.replace(acc, dataflow=df) for df in flows}

    @property
    def peak_ops_per_s(self) -> float:
        """Peak throughput, 2 ops (multiply + add) per PE per cycle (``fixed`` PEs)."""
        return 2.0 * self.num_pes * self.acc.freq_mhz * 1e6

    def _pe_bits(self, weight_bits: int, input_bits: int) -> tuple[int, int]:
        """The multiplier a PE is built with: the operands' widths (``fixed``), ``pe_bits``
        square (``bit_fusion``) or ``pe_bits`` x 1 (``bit_serial``)."""
        acc = self.acc
        if acc.pe_type == "bit_fusion":
            return acc.pe_bits, acc.pe_bits
        if acc.pe_type == "bit_serial":
            return acc.pe_bits, 1
        return weight_bits, input_bits

    def leakage_w(self, *, weight_bits: int, input_bits: int) -> float:
        """Static power: every PE's multiplier, accumulator and register file (Aladdin) plus
        the GLB (CACTI)."""
        pe = tables.pe_leakage_w(*self._pe_bits(weight_bits, input_bits)) * self._node
        return self.num_pes * pe + self._static_leak_w

    def area_mm2(self, *, weight_bits: int, input_bits: int) -> float:
        """PEs (multiplier + 32-bit accumulator adder + register file) plus the GLB SRAM."""
        acc = self.acc
        pe_um2 = (
            tables.mult_area_um2(*self._pe_bits(weight_bits, input_bits))
            + tables.add_area_um2(PSUM_BITS)
            + acc.rf_bytes * 8 * tables.REG_AREA_UM2_PER_BIT
        )
        glb_um2 = acc.glb_kib * tables.SRAM_AREA_UM2_PER_KIB
        return (self.num_pes * pe_um2 + glb_um2) * 1e-6 * tables.area_scale(acc.tech_node_nm)

    def _objective(self, cost: LayerCost) -> float:
        """What ``dataflow: auto`` minimizes, at dense inputs: the zero-input gating saving
        is the same for every dataflow, so leaving it out keeps the choice independent of
        ``input_density`` (a layer's zeros change its energy, never its dataflow)."""
        goal = self.acc.mapper_objective
        if goal == "latency":
            return cost.latency_ms
        energy = cost.energy_pj + cost.mapping["input_gating_saved_pj"]
        if goal == "energy":
            return energy
        return energy * cost.latency_ms

    def evaluate_layer(self, layer: ConvLayer) -> LayerCost:
        check_layer(layer)
        if len(self._specs) == 1:
            return self._evaluate(layer, next(iter(self._specs.values())))
        costs: dict[str, LayerCost] = {}
        failures: list[str] = []
        for df, spec in self._specs.items():
            try:
                costs[df] = self._evaluate(layer, spec)
            except InfeasibleDesign as e:
                failures.append(str(e))
        if not costs:
            raise InfeasibleDesign(f"dataflow auto: no dataflow runs it ({'; '.join(failures)})")
        scores = {df: self._objective(c) for df, c in costs.items()}
        best = min(scores, key=scores.__getitem__)  # ties: the order of DATAFLOWS
        cost = costs[best]
        cost.mapping["dataflow_choice"] = {
            "objective": self.acc.mapper_objective, "candidates": scores
        }
        return cost

    def _evaluate(self, layer: ConvLayer, acc: AcceleratorSpec) -> LayerCost:
        """The cost of ``layer`` under the single dataflow of ``acc``."""
        rows, cols = acc.pe_rows, acc.pe_cols
        spatial_rate, temporal_rate, wbits, ibits = pe_rate(acc, layer.weight_bits,
                                                            layer.input_bits)
        # A grouped conv is ``groups`` independent GEMMs run one after another.
        groups = layer.groups
        window = layer.filter_h * layer.filter_w * (layer.channels // groups)
        pixels = layer.ofmap_h * layer.ofmap_w * layer.batch
        k = layer.num_filters // groups
        density = layer.weight_density
        df = acc.dataflow
        if acc.zero_skipping:  # the weight axis (the window) keeps the fullest lane's non-zeros
            window = skipped_length(window, density, k if df == "is" else min(k, cols))
            density = 1.0  # what is left runs dense (no gating gain on top)

        # Conv -> GEMM views (SCALE-Sim): spatial rows, spatial cols, temporal; and the bit
        # widths of the stationary, row-streamed and column-streamed operands.
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

        # A precision-scalable PE does ``spatial_rate`` products at once (more logical
        # columns) or one product in ``temporal_rate`` cycles (a longer stream).
        fr, fc = -(-sr // rows), -(-sc // (cols * spatial_rate))
        t_cycles = t * temporal_rate
        folds = fr * fc
        # SCALE-Sim 3.0.0 stall-free cycles: per fold, WS/IS preload the stationary operand
        # (rows cycles), then fill (rows + cols), stream T, drain; OS has no preload.
        per_fold = (rows if df == "os" else 2 * rows) + cols + t_cycles - 2
        compute = groups * (folds * per_fold - 1)  # SCALE-Sim runs groups as separate layers
        hidden = 0
        if df != "os" and acc.double_buffered and acc.rf_bytes * 8 >= 2 * stat_bits:
            # the next fold's preload overlaps this fold
            hidden = (groups * folds - 1) * min(rows, t_cycles)
        compute_overlapped = compute - hidden

        tiling = plan_tiling(layer, acc)
        dram_read = math.ceil(tiling.read_bytes)
        dram_write = math.ceil(tiling.write_bytes)
        dram_bytes = dram_read + dram_write
        dram_cycles = dram_bytes / self._bytes_per_cycle

        # MACs the array performs (zero-skipping drops the zeros it compacted away).
        macs = layer.macs * (layer.weight_density if acc.zero_skipping else 1.0)
        input_gated_pj = 0.0  # per MAC: what zero inputs save (not ranked, see _objective)
        if acc.pe_type == "bit_serial":  # temporal_rate shift-adds of a pe_bits x 1 product
            mac_pj = temporal_rate * (tables.mult_pj(acc.pe_bits, 1) + tables.add_pj(PSUM_BITS))
        else:
            mult_pj = tables.mult_pj(wbits, ibits)  # padded widths: the bricks that switch
            if acc.zero_gating:  # no switching unless both operands are non-zero
                mult_pj *= density
                input_gated_pj = mult_pj * (1.0 - layer.input_density)
                mult_pj *= layer.input_density
            mac_pj = mult_pj + tables.add_pj(PSUM_BITS)
        mac_pj *= macs * self._node
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
        # a roofline per level: compute, GLB port bandwidth, DRAM bandwidth
        glb_cycles = glb_bits / 8 / acc.glb_bytes_per_cycle if acc.glb_bytes_per_cycle else 0.0
        limits = {"compute": compute_overlapped, "glb": glb_cycles, "memory": dram_cycles}
        bound = max(limits, key=limits.__getitem__)  # ties: compute first
        total = max(compute_overlapped, math.ceil(glb_cycles), math.ceil(dram_cycles))
        latency_ms = total / (acc.freq_mhz * 1e3)
        dram_pj = 8 * dram_bytes * self._dram_pj_bit
        leak_w = self.leakage_w(weight_bits=layer.weight_bits, input_bits=layer.input_bits)
        leak_pj = leak_w * latency_ms * 1e9  # W x ms -> pJ

        pes = self.num_pes
        return layer_cost(
            layer,
            num_pes=pes,
            compute_cycles=compute,
            total_cycles=total,
            dram_read_bytes=dram_read,
            dram_write_bytes=dram_write,
            mac_energy_pj=mac_pj,
            rf_energy_pj=rf_pj,
            glb_energy_pj=glb_pj,
            dram_energy_pj=dram_pj,
            leakage_energy_pj=leak_pj,
            clock_energy_pj=self.clock_pj_per_cycle * total,
            latency_ms=latency_ms,
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
                "pe_type": acc.pe_type,
                "macs_per_pe_cycle": spatial_rate / temporal_rate,
                "executed_macs": macs,
                "ideal_cycles": -(-layer.macs // pes),
                "compute_cycles_overlapped": compute_overlapped,
                "preload_cycles_hidden": hidden,
                "dram_cycles": dram_cycles,
                "glb_cycles": glb_cycles,
                "bound": bound,
                "leakage_w": leak_w,
                "input_gating_saved_pj": input_gated_pj * macs * self._node,
                "clock_w": self._clock_w,
                "register_bits": self.register_bits,
                **tiling.mapping(),
            },
        )
