"""The ``eyeriss`` template: a row-stationary (RS) spatial array, after the Eyeriss v1 chip.

``EyerissSpec`` holds the chip's knobs (PE array, global buffer, the three per-PE scratchpads,
word width, clock, DRAM); ``EyerissModel`` maps each layer with the row-stationary dataflow
(a small vectorized mapper picks the per-PE filter/channel counts ``p``/``q``, the set
replication ``r``/``t``, the strip width ``e`` and the DRAM tile), counts the accesses at every
level (scratchpads, inter-PE network, global buffer, DRAM) and prices them with the 65 nm
Eyeriss-like energy table of Timeloop/Accelergy. Formulas, units, assumptions, sources and
the AlexNet anchor: ``docs/hardware/eyeriss.md``. Example accelerator:
``experiments/accelerators/eyeriss_like.yaml``.

Sources (short names used below):
    [Chen16] Y.-H. Chen, J. Emer, V. Sze, "Eyeriss: A Spatial Architecture for Energy-Efficient
        Dataflow for Convolutional Neural Networks", ISCA 2016. The RS dataflow: a logical PE
        set of R filter rows x E ofmap rows per 2-D convolution; filter rows reused across a
        PE row, ifmap rows along diagonals, partial sums accumulated up a PE column; per-PE
        parameters p (filters), q (channels), sets r (channels) and t (filters); strip-mining
        of E. Relative energy per access at 65 nm, 16 bit: MAC 1x, RF 1x, neighbour PE 2x,
        global buffer 6x, DRAM 200x.
    [Chen17] Y.-H. Chen, T. Krishna, J. Emer, V. Sze, "Eyeriss: An Energy-Efficient
        Reconfigurable Accelerator for Deep Convolutional Neural Networks", IEEE JSSC 52(1),
        2017. 168 PEs (12 x 14), 16-bit fixed point, 100-250 MHz; Sec. V-A: a 108 kB GLB of
        which 100 kB holds ifmaps and psums and 8 kB (two banks) holds filter weights "to
        compensate for insufficient off-chip bandwidth"; the filter spad is a 224 x 16 b SRAM,
        the ifmap and psum spads (12 x 16 b, 24 x 16 b) are registers; psums are truncated to
        16 b. AlexNet CONV1-5 (666 M MACs per 227 x 227 image), batch 4: 35 frames/s at 278 mW
        (chip power, DRAM not included).
    [TimeloopEyeriss] The Timeloop/Accelergy "eyeriss_like" example design (65 nm table, as
        collected in the project's reference/hardware.md): MAC (8 x 8 multiply, 16-bit add)
        0.208 pJ; ifmap spad (12 x 16 b) read 0.20 pJ; weight spad (192 x 16 b) read 1.98 pJ;
        psum spad (16 x 16 b) read 0.25 pJ; 128 KB global buffer (32 banks, 64-bit) read
        18.18 pJ, write 14.14 pJ per 64-bit access; LPDDR4 512 pJ per 64 bits. Its GLB keeps
        inputs and outputs and bypasses weights (weights go DRAM -> weight spad).
    [Horowitz14] M. Horowitz, ISSCC 2014, 45 nm: int mult 8 bit 0.2 pJ, int add 16 bit
        0.05 pJ (used only to split the table's MAC into its multiply and add parts).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from evaluators.hardware import tables
from evaluators.hardware.base import (
    HardwareModel,
    build_spec,
    check_layer,
    field_problems,
    frozen,
    is_int,
    is_real,
    layer_cost,
    tile_sizes,
    touched_lines,
    type_name,
)
from evaluators.specs import (
    DRAM_TYPES,
    SRAM_DEVICES,
    ConvLayer,
    HardwareReport,
    InfeasibleDesign,
    LayerCost,
)

EYERISS_TEMPLATE = "eyeriss"
# What the mapper minimizes first (see ``plan_row_stationary`` and the docs, section Mapper).
MAPPER_OBJECTIVES = ("edp", "energy", "dram")

# --------------------------------------------------------------------------- energy table (65 nm)

TECH_NODE_NM = 65  # [TimeloopEyeriss] / [Chen17]; the only node the table below is valid at

# [TimeloopEyeriss] MAC = 8 x 8-bit multiply + 16-bit add, 0.208 pJ. Split into multiply and add
# with Horowitz's 45 nm ratio (``tables``: 8-bit mult 0.2 pJ : 16-bit add 0.05 pJ -> 80 % : 20 %;
# our assumption: the ratio carries over to 65 nm). The multiply scales with the product of the
# operand widths, the add with the accumulator width (Eyeriss accumulates at the word width).
MAC_REF_PJ = 0.208
MAC_REF_MULT_BITS = 8
MAC_REF_ADD_BITS = 16
_MULT_REF_45NM_PJ = tables.mult_pj(MAC_REF_MULT_BITS, MAC_REF_MULT_BITS)  # [Horowitz14]
MULT_SHARE = _MULT_REF_45NM_PJ / (_MULT_REF_45NM_PJ + tables.add_pj(MAC_REF_ADD_BITS))
ADD_SHARE = 1.0 - MULT_SHARE

# [TimeloopEyeriss] per-read energy of a 16-bit word and the scratchpad depth it was taken at.
# Writes are charged as reads (the table gives reads; Accelergy prices register-file reads and
# writes alike). Other depths scale with sqrt(depth / reference depth): our assumption, the same
# square-root law ``tables.py`` fits to Horowitz's SRAM points.
SPAD_REF_BITS = 16
IFMAP_SPAD_REF = (12, 0.20)  # (words, pJ per read)
FILTER_SPAD_REF = (192, 1.98)
PSUM_SPAD_REF = (16, 0.25)

# [TimeloopEyeriss] global buffer, per 64-bit access. Its 128 KB are 32 banks of 4 KB, and the
# Eyeriss GLB is built of 4 kB banks too ([Chen17] Sec. V-A: 512 x 64 b SRAMs), so the energy of
# one access is that of one bank: we keep it independent of ``glb_kib`` (our assumption).
GLB_READ_PJ_64B = 18.18
GLB_WRITE_PJ_64B = 14.14
GLB_ACCESS_BITS = 64

# [Chen16] moving a word to a neighbouring PE costs 2x a MAC (at 16 bit). We charge one such
# hop for every word a PE receives over the array network (from the GLB or from another PE).
NOC_HOP_REL_MAC = 2.0
NOC_REF_BITS = 16

# DRAM: pJ per bit from ``tables.DRAM_PJ_PER_BIT`` ([AccelergyCACTI]); its LPDDR4 figure, 8 pJ/bit,
# is the same as [TimeloopEyeriss]'s 512 pJ per 64 bits.

# Leakage and clock: no figure of the Eyeriss chip itself was found; ``EyerissModel`` uses the
# generic Aladdin (logic, registers) and CACTI 7 (SRAM) figures of ``tables`` scaled to 65 nm
# (see the docs): ``leakage_w`` and, for the register spads clocked every cycle,
# ``AccessEnergies.clock_cycle``.

# --------------------------------------------------------------------------- the spec

_INT_FIELDS = (
    "pe_rows",
    "pe_cols",
    "ifmap_spad_words",
    "filter_spad_words",
    "psum_spad_words",
    "word_bits",
)
_POS_FIELDS = ("glb_kib", "dram_gbps", "freq_mhz")


@dataclass(frozen=True, kw_only=True)
class EyerissSpec:
    """An Eyeriss-like row-stationary accelerator (template ``eyeriss``). Defaults: the chip.

    Attributes:
        pe_rows, pe_cols: PE array (12 x 14 on the chip).
        glb_kib: global buffer, KiB (108 kB on the chip).
        glb_filter_kib: the part of ``glb_kib`` that stages filter weights on their way from
            DRAM to the filter spads (8 kB on the chip, [Chen17] Sec. V-A); the rest holds
            ifmaps and partial sums. Filters are never reused from it.
        ifmap_spad_words, filter_spad_words, psum_spad_words: per-PE scratchpads in words
            (12, 224, 24 on the chip).
        word_bits: datapath width, bits (16: operands, partial sums and DRAM words). Layers
            with wider operands cannot run; narrower ones run at this width.
        freq_mhz: core clock, MHz. 200: the clock of the AlexNet measurement the anchor
            uses ([Chen17]; the chip runs at 100-250 MHz).
        dram_gbps: off-chip bandwidth, GB/s (1e9 bytes/s).
        dram_type: DRAM energy per bit (``tables.DRAM_PJ_PER_BIT``).
        process_nm: technology node, nm. Only 65 (the node of the energy table) is accepted.
        mapper_objective: what the per-layer mapper minimizes first: ``edp`` (energy x
            compute cycles; default), ``energy`` or ``dram`` (DRAM traffic). Each never gets
            worse when the GLB grows; the others may (docs, section Mapper).
        sram_device: CACTI device flavour of the GLB and filter spads (their leakage), as for
            the systolic template.
        template: always ``eyeriss``.
    """

    pe_rows: int = 12
    pe_cols: int = 14
    glb_kib: float = 108.0
    glb_filter_kib: float = 8.0
    ifmap_spad_words: int = 12
    filter_spad_words: int = 224
    psum_spad_words: int = 24
    word_bits: int = 16
    freq_mhz: float = 200.0
    dram_gbps: float = 0.72
    dram_type: str = "lpddr4"
    process_nm: int = TECH_NODE_NM
    mapper_objective: str = "edp"
    sram_device: str = "itrs-lop"
    template: str = EYERISS_TEMPLATE

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EyerissSpec:
        """Build a spec from a mapping; absent keys take the defaults (the chip).

        Raises:
            SpecError: unknown keys (the message lists the known ones). Values are checked
                by ``validate``, not here.
        """
        return build_spec(cls, d, template=EYERISS_TEMPLATE,  # type: ignore[no-any-return]
                          keys=EYERISS_KEYS)

    def validate(self) -> list[str]:
        """Every problem of the spec, one line each: ``"<field>: <rule>, got <value>"``.

        An empty list means the spec is valid. Never raises.
        """
        problems = field_problems(self, check_field)
        if not problems and self.glb_filter_kib >= self.glb_kib:
            problems.append(
                f"glb_filter_kib: must be below glb_kib ({self.glb_kib:g}; the rest holds "
                f"ifmaps and partial sums), got {self.glb_filter_kib!r}"
            )
        return problems

    @property
    def num_pes(self) -> int:
        return self.pe_rows * self.pe_cols


EYERISS_KEYS = tuple(f.name for f in dataclasses.fields(EyerissSpec))


def check_field(name: str, v: Any) -> tuple[Any, str | None]:
    """Check one ``EyerissSpec`` field: ``(value, None)`` or ``(value, "<rule>, got ...")``.

    Numbers of float fields come back as ``float``. Unknown names are a problem. Never raises.
    (For a YAML reader: the same rules and messages as ``EyerissSpec.validate``.)
    """
    if name == "template":
        return v, None if v == EYERISS_TEMPLATE else f"must be {EYERISS_TEMPLATE}, got {v!r}"
    if name == "mapper_objective":
        if not isinstance(v, str) or v not in MAPPER_OBJECTIVES:
            return v, f"must be one of {', '.join(MAPPER_OBJECTIVES)}, got {v!r}"
        return v, None
    if name in ("dram_type", "sram_device"):
        choices = DRAM_TYPES if name == "dram_type" else SRAM_DEVICES
        if not isinstance(v, str) or v not in choices:
            return v, f"must be one of {', '.join(choices)}, got {v!r}"
        return v, None
    if name == "process_nm":
        if not is_real(v) or v != TECH_NODE_NM:
            return v, (
                f"must be {TECH_NODE_NM} (the node of the energy table, the only one "
                f"modeled), got {v!r}"
            )
        return v, None
    if name in _INT_FIELDS:
        if not is_int(v) or v <= 0:
            return v, f"must be an integer > 0, got {v!r} ({type_name(v)})"
        return v, None
    if name in _POS_FIELDS:
        if not is_real(v) or not math.isfinite(v) or v <= 0:
            return v, f"must be a finite number > 0, got {v!r} ({type_name(v)})"
        return float(v), None
    if name == "glb_filter_kib":
        if not is_real(v) or not math.isfinite(v) or v < 0:
            return v, f"must be a finite number >= 0, got {v!r} ({type_name(v)})"
        return float(v), None
    return v, f"unknown field; known fields: {', '.join(EYERISS_KEYS)}"


# --------------------------------------------------------------------------- per-access energies


@dataclass(frozen=True)
class AccessEnergies:
    """Energy of one action at the spec's word width and scratchpad sizes, pJ (65 nm)."""

    mac: float  # one multiply-accumulate
    add: float  # one add (a partial sum arriving from another PE or the GLB)
    ifmap_spad: float  # one word read or written
    filter_spad: float
    psum_spad: float
    glb_read: float  # one word
    glb_write: float
    noc_hop: float  # one word received by a PE over the array network
    dram: float  # one word read or written
    clock_cycle: float  # one cycle of the array: every register-spad bit clocked

    @classmethod
    def of(cls, spec: EyerissSpec) -> AccessEnergies:
        b = spec.word_bits
        mult_ref = MAC_REF_PJ * MULT_SHARE
        add_ref = MAC_REF_PJ * ADD_SHARE

        def mac(bits: int) -> float:
            mult = mult_ref * bits * bits / MAC_REF_MULT_BITS**2
            return mult + add_ref * bits / MAC_REF_ADD_BITS

        def spad(ref: tuple[int, float], words: int) -> float:
            depth, pj = ref
            return pj * math.sqrt(words / depth) * b / SPAD_REF_BITS

        return cls(
            mac=mac(b),
            add=add_ref * b / MAC_REF_ADD_BITS,
            ifmap_spad=spad(IFMAP_SPAD_REF, spec.ifmap_spad_words),
            filter_spad=spad(FILTER_SPAD_REF, spec.filter_spad_words),
            psum_spad=spad(PSUM_SPAD_REF, spec.psum_spad_words),
            glb_read=GLB_READ_PJ_64B * b / GLB_ACCESS_BITS,
            glb_write=GLB_WRITE_PJ_64B * b / GLB_ACCESS_BITS,
            noc_hop=NOC_HOP_REL_MAC * mac(NOC_REF_BITS) * b / NOC_REF_BITS,
            dram=tables.DRAM_PJ_PER_BIT[spec.dram_type] * b,
            clock_cycle=register_bits(spec) * tables.reg_clock_pj_per_bit()
            * tables.energy_scale(spec.process_nm),
        )


def register_bits(spec: EyerissSpec) -> int:
    """Bits of the register spads (ifmap and psum) of the whole array."""
    return spec.num_pes * (spec.ifmap_spad_words + spec.psum_spad_words) * spec.word_bits


# --------------------------------------------------------------------------- shape helpers

# Pure functions of a few integers, memoized because layer shapes repeat across layers and
# trials; their arrays are read-only, so a cached answer cannot change.


@lru_cache(maxsize=4096)
def _lines(n_out: int, n_in: int, k: int, s: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Real input lines touched by tiles of ``t`` output lines, for every ``t = 1..n_out``.

    Returns ``(largest, total)`` indexed by ``t - 1`` (``base.touched_lines``): the lines the
    largest tile touches and the lines all tiles touch together (the halo between neighbouring
    tiles counted once per tile). Padding lines are not real (never stored or fetched); a
    stride larger than the filter skips lines.
    """
    t = np.arange(1, n_out + 1)
    return frozen(*touched_lines(n_out, n_in, k, s, pad, t))  # type: ignore[return-value]


def _counts(n: int) -> np.ndarray:
    """The distinct sizes ``ceil(n / k)`` for ``k = 1..n``, descending (one per tile count)."""
    return tile_sizes(n)[::-1]  # a read-only view of the cached array


@lru_cache(maxsize=1024)
def _strips(n_rows: int, pe_cols: int) -> tuple[np.ndarray, ...]:
    """Strip-mining of the ofmap rows over the PE columns and the DRAM tiles of strips.

    Candidate strip widths ``e``: for every number ``b`` of PE sets side by side, the widest
    strip with ``b * e <= pe_cols``, balanced (``e = ceil(E / ceil(E / (pe_cols // b)))``).
    For each, the spatial DRAM tiles hold ``m`` strips (``m`` one per distinct tile count).
    Returns flat ``(e, strips, m, tile_rows)`` over all (e, m) pairs.
    """
    # each e <= pe_cols // b: ceil(E / ceil(E / c)) never exceeds c
    es = sorted({-(-n_rows // -(-n_rows // (pe_cols // b))) for b in range(1, pe_cols + 1)},
                reverse=True)
    ev, nsv, mv, trv = [], [], [], []
    for e in es:
        ns = -(-n_rows // e)
        for m in _counts(ns):
            ev.append(e)
            nsv.append(ns)
            mv.append(int(m))
            trv.append(min(int(m) * e, n_rows))
    return frozen(*(np.array(v, dtype=np.int64) for v in (ev, nsv, mv, trv)))


def _cdiv(a: Any, b: Any) -> Any:
    return -(-a // b)


@lru_cache(maxsize=4096)
def _channel_splits(cp: int, a: int, q_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate ``(r, q)`` pairs: channel sets stacked in a column, channels per PE.

    Every ``r <= min(a, cp)``. For each, one ``q`` per channel block count
    ``ceil(cp / (q * r))`` reachable with ``q <= q_max``: the balanced (smallest) one. A larger
    ``q`` with the same block count is never better: the same blocks and cycles, a tighter
    filter-spad limit on ``p`` and a bigger GLB tile.
    """
    pairs = []
    for r in range(1, min(a, cp) + 1):
        blocks = sorted({_cdiv(cp, q * r) for q in range(1, q_max + 1)})
        pairs += [(r, _cdiv(cp, r * nb)) for nb in blocks]
    rv, qv = (np.array(v, dtype=np.int64) for v in zip(*pairs))
    return frozen(rv, qv)  # type: ignore[return-value]


# --------------------------------------------------------------------------- the mapper

_RESIDENT = frozen(np.array([False, True]))[0]  # the tile's ifmap streamed / kept in the GLB


@lru_cache(maxsize=1024)
def _grid(big_e: int, cols: int, cp: int, a: int, q_max: int, n_img: int, kp: int,
          g: int) -> tuple[np.ndarray, ...]:
    """The mapper's candidate grid, flat: (e, m) x (r, q) x n x resident. Returns the
    per-candidate strip width ``e``, strips, tile rows, ``r``, ``q``, images per tile,
    resident flag, and the filter sets ``t`` and parallel groups ``gs`` that fill the array
    (``a`` sets fit vertically). Read-only; a function of the layer shape and the array."""
    e, ns, _, tr = _strips(big_e, cols)
    r, q = _channel_splits(cp, a, q_max)
    n = _counts(n_img)
    shape = (len(e), len(r), len(n), len(_RESIDENT))
    ix = np.indices(shape).reshape(len(shape), -1)
    e_, ns_, tr_ = e[ix[0]], ns[ix[0]], tr[ix[0]]
    r_, q_, n_, res_ = r[ix[1]], q[ix[1]], n[ix[2]], _RESIDENT[ix[3]]
    b = cols // e_  # PE sets side by side
    stacks = b * (a // r_)  # columns of r stacked sets
    t = np.minimum(kp, stacks)
    gs = np.minimum(g, stacks // t)  # t <= stacks: at least 1
    return frozen(e_, ns_, tr_, r_, q_, n_, res_, t, gs)


def _argmin_lex(first: np.ndarray, second: np.ndarray, third: np.ndarray) -> int:
    """Index of the least ``(first, second, third)``; the lowest index among exact ties."""
    tied = np.flatnonzero(first <= first.min())
    if len(tied) > 1:
        tied = tied[second[tied] <= second[tied].min()]
        if len(tied) > 1:
            tied = tied[third[tied] <= third[tied].min()]
    return int(tied[0])


def plan_row_stationary(
    layer: ConvLayer, spec: EyerissSpec, energies: AccessEnergies | None = None
) -> dict[str, Any]:
    """Choose the row-stationary mapping and DRAM tile of one layer; count every access.

    Candidates (all enumerated at once with numpy): the strip width ``e`` (ofmap rows per PE
    set), the channel sets ``r`` stacked in a PE column, the channels per PE ``q``, the images
    ``n`` and strips ``m`` per DRAM tile, and whether the tile's ifmap stays in the GLB across
    the filter blocks (``resident``). The filter sets ``t`` and parallel groups ``gs`` fill
    the array; ``p`` (filters per PE) is the largest that fits the filter and psum spads and
    the GLB, balanced over the filter blocks. The choice (on dense inputs: data gating saves
    the same on every candidate, so ``input_density`` never changes the mapping) minimizes
    ``spec.mapper_objective``
    (``edp``: energy x compute cycles, then energy, then DRAM; ``energy``: energy, then
    cycles, then DRAM; ``dram``: DRAM words, then EDP, then energy). Every candidate's cycles,
    DRAM words and energy are non-increasing in the GLB size, so the minimized key never
    grows with the GLB. ``energies``: ``AccessEnergies.of(spec)``, given by a caller that has
    it already (the model computes it once per spec). Returns a dict of JSON-able scalars (see
    the docs).

    Raises:
        InfeasibleDesign: a filter row does not fit the ifmap or filter spad, or no tile fits
            the global buffer.
    """
    rows, cols = spec.pe_rows, spec.pe_cols
    g = layer.groups
    kp, cp = layer.num_filters // g, layer.channels // g
    big_r, big_s, u, pad = layer.filter_h, layer.filter_w, layer.stride, layer.padding
    big_e, big_f, n_img = layer.ofmap_h, layer.ofmap_w, layer.batch

    q_max = min(cp, spec.ifmap_spad_words // big_s, spec.filter_spad_words // big_s)
    if q_max < 1:
        raise InfeasibleDesign(
            f"layer {layer.name!r}: a filter row of {big_s} weights (filter_w) must fit the "
            f"ifmap spad (sliding window) and the filter spad, got ifmap_spad_words="
            f"{spec.ifmap_spad_words}, filter_spad_words={spec.filter_spad_words}"
        )

    # Filter rows on the PE rows: R > pe_rows folds the filter into rf chunks of h rows.
    rf = _cdiv(big_r, rows)
    h = _cdiv(big_r, rf)
    h_last = big_r - (rf - 1) * h
    a = rows // h  # PE sets stacked vertically

    e_, ns_, tr_, r_, q_, n_, res_, t, gs = _grid(big_e, cols, cp, a, q_max, n_img, kp, g)

    rows_max, rows_sum = _lines(big_e, layer.ifmap_h, big_r, u, pad)
    cols_real = int(_lines(big_f, layer.ifmap_w, big_s, u, pad)[0][-1])
    cols_pad = (big_f - 1) * min(u, big_s) + big_s  # words a PE row receives (zeros included)
    cap = math.floor((spec.glb_kib - spec.glb_filter_kib) * 1024 * 8 / spec.word_bits)

    # GLB: the tile's ifmap (all channels if resident, else one channel block) + one filter
    # block's partial sums for the tile.
    ch = np.where(res_, cp, np.minimum(cp, q_ * r_))
    if_tile = gs * ch * rows_max[tr_ - 1] * cols_real * n_
    psum_per_p = t * gs * tr_ * big_f * n_
    p_fit = (cap - if_tile) // psum_per_p
    p_spad = np.minimum(spec.psum_spad_words, spec.filter_spad_words // (big_s * q_))
    p_lim = np.minimum(np.minimum(p_spad, _cdiv(kp, t)), p_fit)
    ok = p_lim >= 1
    if not ok.any():
        need = if_tile + psum_per_p
        i = int(np.argmin(need))
        raise InfeasibleDesign(
            f"layer {layer.name!r}: the smallest tile (ifmap {int(if_tile[i])} words + "
            f"partial sums of one filter {int(psum_per_p[i])} words at {spec.word_bits} bit, "
            f"e={int(e_[i])}, rows={int(tr_[i])}, images={int(n_[i])}) needs "
            f"{int(need[i])} words, the global buffer holds {cap} "
            f"(glb_kib={spec.glb_kib:g} - glb_filter_kib={spec.glb_filter_kib:g})"
        )
    sel = np.flatnonzero(ok)
    e_, ns_, tr_, r_, q_, n_, res_ = (x[sel] for x in (e_, ns_, tr_, r_, q_, n_, res_))
    t, gs, p_lim, if_tile, psum_per_p = (x[sel] for x in (t, gs, p_lim, if_tile, psum_per_p))

    nkb = _cdiv(kp, p_lim * t)  # filter blocks
    p = _cdiv(kp, t * nkb)  # balanced
    ncb = _cdiv(cp, q_ * r_)  # channel blocks
    ngb = _cdiv(g, gs)  # group blocks
    k_last = kp - (nkb - 1) * p * t
    c_last = cp - (ncb - 1) * q_ * r_
    ks = (nkb - 1) * p + _cdiv(k_last, t)  # filters each PE runs, over all filter blocks
    cs = (ncb - 1) * q_ + _cdiv(c_last, r_)  # channels each PE runs
    compute = ngb * n_img * ns_ * rf * ks * cs * big_s * big_f

    # ---- DRAM words
    w_words = layer.weight_count
    o_words = g * n_img * kp * big_e * big_f
    n_sp = _cdiv(n_img, n_) * _cdiv(big_e, tr_)
    i_pass = g * n_img * cp * cols_real * rows_sum[tr_ - 1]
    dram_w = w_words * n_sp  # weights bypass the GLB: loaded once per spatial tile
    dram_i = i_pass * np.where(res_, 1, nkb)
    dram = dram_w + dram_i + o_words

    # ---- on-chip accesses (words)
    macs = layer.macs
    # Ifmap rows the array reads per filter block: every strip needs (len-1)*min(U,h)+h rows
    # per filter-row chunk. Real (stored) rows from the GLB; padded rows to the PEs.
    min_uh = (rf - 1) * min(u, h) + min(u, h_last)
    rows_pad = (big_e - ns_) * min_uh + ns_ * big_r
    rows_pad_full = (big_e - ns_) * min(u, big_r) + ns_ * big_r
    glb_if_read = nkb * g * n_img * cp * cols_real * rows_sum[e_ - 1] * rows_pad / rows_pad_full
    psum_out = o_words * rf * ncb  # partial-sum rows leaving the array
    psum_in = psum_out - o_words  # read back into the bottom of a column
    glb_read = glb_if_read + psum_in + o_words + dram_w  # + outputs to DRAM, filter staging
    glb_write = dram_i + psum_out + dram_w  # ifmap fills, psums, filter staging
    noc_f = dram_w * e_  # a filter row goes to every PE of its set row
    noc_i = nkb * t * g * n_img * cp * cols_pad * big_e * big_r  # diagonal multicast, t copies
    chain = o_words * rf * ncb * (h * r_ - 1)  # psums passed up the stacked sets
    noc_p = chain + psum_out + psum_in
    en = AccessEnergies.of(spec) if energies is None else energies
    mac_pj = macs * en.mac + (chain + psum_in) * en.add
    rf_pj = (
        (macs + noc_i) * en.ifmap_spad
        + (macs + noc_f) * en.filter_spad
        + (2 * macs + chain + psum_in) * en.psum_spad
    )
    noc_pj = (noc_f + noc_i + noc_p) * en.noc_hop
    glb_sram_pj = glb_read * en.glb_read + glb_write * en.glb_write
    dram_pj = dram * en.dram
    energy = mac_pj + rf_pj + noc_pj + glb_sram_pj + dram_pj
    # ranked: at dense inputs, with the register clock over the compute cycles (a mapping
    # that idles the array pays for the cycles); leakage is left out, as a bigger GLB leaks
    # more and the minimized key must not grow with it
    ranked = energy + compute * en.clock_cycle
    edp = ranked * compute
    keys = {
        "edp": (edp, ranked, dram),
        "energy": (ranked, compute, dram),
        "dram": (dram, edp, ranked),
    }[spec.mapper_objective]
    i = _argmin_lex(*keys)

    def f(x: Any) -> float:
        return float(x[i]) if isinstance(x, np.ndarray) else float(x)

    def k(x: Any) -> int:
        return int(x[i]) if isinstance(x, np.ndarray) else int(x)

    i_once = g * n_img * cp * cols_real * int(rows_sum[big_e - 1])
    # Data gating ([Chen17] Sec. V-C): on a zero input the PE skips the filter-spad read and
    # the MAC; the ifmap-spad read (which finds the zero) and the psum-spad accesses stay. The
    # saving is the same for every candidate, so the mapping is chosen on dense inputs and
    # does not depend on input_density.
    skipped = macs * (1.0 - layer.input_density)
    return {
        "set_rows": h,
        "set_cols": k(e_),
        "row_folds": rf,
        "strips": k(ns_),
        "sets_c": k(r_),
        "sets_k": k(t),
        "sets_g": k(gs),
        "p": k(p),
        "q": k(q_),
        "k_blocks": k(nkb),
        "c_blocks": k(ncb),
        "g_blocks": k(ngb),
        "tile_images": k(n_),
        "tile_rows": k(tr_),
        "spatial_tiles": k(n_sp),
        "ifmap_resident": bool(res_[i]),
        "glb_words_used": k(if_tile + p * psum_per_p),
        "glb_words": cap,
        "compute_cycles": k(compute),
        "dram_weight_words": k(dram_w),
        "dram_input_words": k(dram_i),
        "dram_output_words": o_words,
        "dram_compulsory_words": w_words + i_once + o_words,
        "glb_read_words": f(glb_read),
        "glb_write_words": f(glb_write),
        "noc_words": f(noc_f + noc_i + noc_p),
        "gated_macs": skipped,
        "filter_spad_accesses": f(macs + noc_f) - skipped,
        "ifmap_spad_accesses": f(macs + noc_i),
        "psum_spad_accesses": f(2 * macs + chain + psum_in),
        "mac_energy_pj": f(mac_pj) - skipped * en.mac,
        "rf_energy_pj": f(rf_pj) - skipped * en.filter_spad,
        "noc_energy_pj": f(noc_pj),
        "glb_sram_energy_pj": f(glb_sram_pj),
        "dram_energy_pj": f(dram_pj),
        "candidates": int(len(ok)),
        "feasible_candidates": int(len(sel)),
    }


# --------------------------------------------------------------------------- the template

_COST_FIELDS = ("mac_energy_pj", "rf_energy_pj", "dram_energy_pj")  # the plan's, in LayerCost


class EyerissModel(HardwareModel):
    """An Eyeriss-like spatial array running the row-stationary dataflow.

    Per layer: ``plan_row_stationary`` picks the mapping and DRAM tile and counts accesses;
    latency is ``max(compute cycles, DRAM bytes / bandwidth)``; energy is accesses x the 65 nm
    per-access energies of ``AccessEnergies`` (network hops and GLB SRAM are reported together
    as ``glb_energy_pj``; the split is in ``mapping``), with zero inputs gated by the layer's
    ``input_density``, plus the register spads clocked every cycle
    (``energies.clock_cycle`` x total cycles) and leakage x latency (``leakage_w``).
    See docs/hardware/eyeriss.md.

    Same lifecycle and invariants as ``HardwareModel`` (immutable, picklable, pure);
    ``evaluate_network`` is the base class's.
    """

    template = EYERISS_TEMPLATE
    spec_type = EyerissSpec

    def __init__(self, acc: EyerissSpec) -> None:
        super().__init__(acc)
        self.num_pes = acc.num_pes
        self.energies = AccessEnergies.of(acc)  # per access, for every layer's plan
        self._bytes_per_cycle = acc.dram_gbps * 1e9 / (acc.freq_mhz * 1e6)
        self.register_bits = register_bits(acc)  # the register spads, clocked every cycle
        self._clock_w = self.energies.clock_cycle * acc.freq_mhz * 1e-6  # pJ x MHz -> W
        self.leakage_w = self._leakage_w()

    def _leakage_w(self) -> float:
        """Static power, W: every PE's ``word_bits`` multiplier and adder (Aladdin), filter
        spad (CACTI) and register spads (Aladdin), and the GLB (CACTI), from 45 nm to 65 nm
        by ``tables.energy_scale``."""
        s = self.acc
        b = s.word_bits
        datapath = tables.mult_leakage_w(b, b) + tables.add_leakage_w(b)
        spad_bytes = s.filter_spad_words * b / 8
        per_pe = datapath + tables.sram_leakage_w(spad_bytes, s.sram_device)
        glb = tables.sram_leakage_w(s.glb_kib * 1024.0, s.sram_device)
        regs = self.register_bits * tables.reg_leakage_w_per_bit()
        return (self.num_pes * per_pe + glb + regs) * tables.energy_scale(s.process_nm)

    def area_mm2(self, *, weight_bits: int, input_bits: int) -> float:
        """PEs (multiplier, adder, scratchpads) plus the GLB, scaled from 45 nm to 65 nm.

        The datapath is ``word_bits`` wide whatever the layer widths. Constants from
        ``tables`` (45 nm: Horowitz multiplier/adder, Aladdin registers for the ifmap and psum
        spads, EIE SRAM density for the filter spad and the GLB), scaled to 65 nm by
        ``tables.area_scale`` (Stillmaker & Baas: x 1.5). No overhead for the network,
        control, clock tree or I/O: a lower bound (docs/hardware/eyeriss.md, section Area).
        """
        s = self.acc
        b = s.word_bits
        pe_um2 = (
            tables.mult_area_um2(b, b)
            + tables.add_area_um2(b)
            + (s.ifmap_spad_words + s.psum_spad_words) * b * tables.REG_AREA_UM2_PER_BIT
            + s.filter_spad_words * b / 8 / 1024 * tables.SRAM_AREA_UM2_PER_KIB
        )
        glb_um2 = s.glb_kib * tables.SRAM_AREA_UM2_PER_KIB
        return (self.num_pes * pe_um2 + glb_um2) * tables.area_scale(s.process_nm) * 1e-6

    def evaluate_layer(self, layer: ConvLayer) -> LayerCost:
        check_layer(layer)
        s = self.acc
        widest = max(layer.weight_bits, layer.input_bits, layer.output_bits)
        if widest > s.word_bits:
            raise InfeasibleDesign(
                f"layer {layer.name!r}: needs {widest}-bit operands (weight/input/output bits "
                f"{layer.weight_bits}/{layer.input_bits}/{layer.output_bits}), the eyeriss "
                f"datapath is word_bits={s.word_bits}"
            )
        plan = plan_row_stationary(layer, s, self.energies)
        bpw = s.word_bits / 8.0
        dram_read = math.ceil((plan["dram_weight_words"] + plan["dram_input_words"]) * bpw)
        dram_write = math.ceil(plan["dram_output_words"] * bpw)
        dram_cycles = (dram_read + dram_write) / self._bytes_per_cycle
        compute = plan["compute_cycles"]
        total = max(compute, math.ceil(dram_cycles))
        macs = layer.macs
        pes = self.num_pes
        mapping = {
            "template": self.template,
            "dataflow": "rs",
            # the LayerCost fields are not repeated; the GLB/NoC split of glb_energy_pj is kept
            **{k: v for k, v in plan.items() if k not in _COST_FIELDS},
            "ideal_cycles": -(-macs // pes),
            "avg_active_pes": macs / compute,
            "dram_cycles": dram_cycles,
            "bound": "memory" if dram_cycles > compute else "compute",
            "dram_compulsory_bytes": plan["dram_compulsory_words"] * bpw,
            "leakage_w": self.leakage_w,
            "clock_w": self._clock_w,
            "register_bits": self.register_bits,
        }
        latency_ms = total / (s.freq_mhz * 1e3)
        return layer_cost(
            layer,
            num_pes=pes,
            compute_cycles=compute,
            total_cycles=total,
            dram_read_bytes=dram_read,
            dram_write_bytes=dram_write,
            mac_energy_pj=plan["mac_energy_pj"],
            rf_energy_pj=plan["rf_energy_pj"],
            glb_energy_pj=plan["glb_sram_energy_pj"] + plan["noc_energy_pj"],
            dram_energy_pj=plan["dram_energy_pj"],
            leakage_energy_pj=self.leakage_w * latency_ms * 1e9,  # W x ms -> pJ
            clock_energy_pj=self.energies.clock_cycle * total,
            latency_ms=latency_ms,
            mapping=mapping,
        )


def chip_power_w(report: HardwareReport | LayerCost) -> float:
    """Average power of the accelerator chip alone (DRAM energy left out), W, of a network
    (its total) or of one layer's cost.

    The figure a chip measurement such as Eyeriss's 278 mW compares with;
    ``report.power_w`` includes the DRAM.
    """
    cost = report.total if isinstance(report, HardwareReport) else report
    seconds = cost.latency_ms * 1e-3
    chip_pj = cost.energy_pj - cost.dram_energy_pj
    return chip_pj * 1e-12 / seconds if seconds > 0 else 0.0
