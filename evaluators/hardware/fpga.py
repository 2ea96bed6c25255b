"""The ``fpga`` template: a tiled CNN engine on a Xilinx Zynq UltraScale+ device.

``FpgaSpec`` names a device class (its DSP48E2, BRAM36, URAM and LUT counts) and describes
one convolution engine built on it in the style of Zhang et al. (FPGA 2015): ``unroll_c``
input channels x ``unroll_k`` output channels x ``unroll_px`` output pixels are computed in
parallel every fabric cycle, fed from on-chip input / weight / output buffers that are tiled
against DRAM. ``FpgaModel`` counts the engine's resources (DSPs from the MAC lanes and the
MACs one DSP packs at the engine's bit width; BRAM36 from each buffer's capacity *and* port
width), rejects a spec whose use exceeds the device budget, and prices each layer as
``max(compute folds, DRAM transfer)`` with the DRAM traffic of ``systolic.plan_tiling``.
Formulas, units, assumptions and sources: ``docs/hardware/fpga.md``. Example:
``experiments/accelerators/fpga_zcu102_like.yaml``.

Sources (short names used below):
    [Zhang15] C. Zhang et al., "Optimizing FPGA-based Accelerator Design for Deep
        Convolutional Neural Networks", FPGA 2015: Tm x Tn unrolled MACs fed by tiled
        input / weight / output buffers (double-buffered), roofline against DRAM bandwidth.
    [DS891] Xilinx DS891, "Zynq UltraScale+ MPSoC Data Sheet: Overview", device table
        (DSP slices, block RAM, UltraRAM, LUTs). The figures below were retrieved through
        secondary copies of that table (see ``DEVICES``), not from the PDF itself.
    [KriaNLP] Xilinx, "Kria KV260 NLP SmartVision tutorial, Hardware Architecture of the
        Accelerator" (xilinx.github.io/kria-apps-docs, 2022.1): "K26 Resource" row, LUTs
        117,120, BRAM 144, DSP 1,248, URAM 64.
    [UG579] Xilinx UG579, "UltraScale Architecture DSP Slice User Guide": the DSP48E2 has a
        27 x 18 two's-complement multiplier.
    [WP486] Xilinx WP486 (2016), "Deep Learning with INT8 Optimization on Xilinx Devices":
        one DSP48E2 computes two INT8 multiply-accumulates that share one operand.
    [WP487] Xilinx WP487 (2017), "8-Bit Dot-Product Acceleration": two parallel INT8
        multiply-adds per DSP48E2, 1.75 (without LUTs) to 2 (with LUTs) per DSP on average.
    [UG573] Xilinx UG573, "UltraScale Architecture Memory Resources": a block RAM is 36 Kb,
        up to 72 bits wide (512 x 72 in simple dual port); other aspect ratios 1K x 36,
        2K x 18, 4K x 9, 8K x 4, 16K x 2, 32K x 1 (as listed in the AMD conversion
        methodology guide, "Internal Memory").
    [PG338] Xilinx PG338, "DPUCZDX8G for Zynq UltraScale+ MPSoCs Product Guide": B4096 is
        pixel x input-channel x output-channel parallelism 8 x 16 x 16 (v3.4, DepthwiseConv
        table); ``dpu_2x_clk`` drives the DSP blocks at twice the general logic clock (v4.1,
        Port Descriptions); v1.2 (2019) Table 9, ZCU102, B4096: 514 DSPs with "low DSP usage"
        (DSPs for multiplication only), 642 with "high DSP usage", 249.5 block RAMs.
    [UG1354] Xilinx UG1354 (Vitis AI Library 2.5), "ZCU104 Evaluation Board": dual B4096
        cores at 300 MHz deliver 2.46 TOPS INT8 peak; ZCU102 runs triple B4096 at 281 MHz.
    [KuonRose07] I. Kuon, J. Rose, "Measuring the Gap Between FPGAs and ASICs", IEEE TCAD
        26(2), 2007 (90 nm): the FPGA/ASIC dynamic power ratio is approximately 14 for
        LUT-and-flip-flop logic, "and, with hard blocks, this gap generally becomes smaller".
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from evaluators.hardware import tables
from evaluators.hardware.base import (
    HardwareModel,
    build_spec,
    check_layer,
    field_problems,
    is_int,
    is_real,
    layer_cost,
    required_fields,
    type_name,
)
from evaluators.hardware.systolic import PSUM_BITS, plan_tiling
from evaluators.specs import (
    DRAM_TYPES,
    AcceleratorSpec,
    ConvLayer,
    InfeasibleDesign,
    LayerCost,
    resource_constraints,
)

FPGA_TEMPLATE = "fpga"

# --------------------------------------------------------------------------- device classes


class Device(NamedTuple):
    """The programmable-logic resources of one device class (whole device, no derating)."""

    dsp: int  # DSP48E2 slices
    bram36: int  # 36 Kb block RAMs
    uram: int  # 288 Kb UltraRAMs (reported, not used by the buffers)
    luts: int  # CLB LUTs (reported, not modeled)
    board: str  # the evaluation board that carries it (a label)
    source: str


DEVICES: dict[str, Device] = {
    # [DS891] via the ZU9EG row of a public SKU table (anulum sc-neurocore, "Zynq UltraScale+
    # target contract": LUT 274,080, DSP 2,520, 36K BRAM 912, URAM 0); 912 BRAM36 = 32.1 Mb.
    "xczu9eg": Device(2520, 912, 0, 274_080, "ZCU102", "DS891 (ZU9EG row)"),
    # [DS891] via a public ZCU104 resource table (230K LUTs, 1,728 DSPs, 312 BRAM, 96 URAM).
    # DS891 itself gives 230,400 LUTs; that exact figure was not retrieved (see the docs).
    "xczu7ev": Device(1728, 312, 96, 230_400, "ZCU104", "DS891 (ZU7EV row)"),
    # [DS891] via the ZU3EG row of the same SKU table (LUT 70,560, DSP 360, BRAM 216, URAM 0).
    "xczu3eg": Device(360, 216, 0, 70_560, "Ultra96", "DS891 (ZU3EG row)"),
    # [KriaNLP] "K26 Resource": LUTs 117,120, BRAM 144, DSP 1,248, URAM 64.
    "xck26": Device(1248, 144, 64, 117_120, "KV260", "Kria NLP SmartVision tutorial"),
}

# --------------------------------------------------------------------------- DSP packing

DSP_A_BITS = 27  # [UG579] DSP48E2 multiplier: 27 x 18 bit, two's complement
DSP_B_BITS = 18
INT8_MACS_PER_DSP = 2  # [WP486]/[WP487]: two INT8 MACs sharing one operand per DSP48E2
INT8_PACK_MAX_BITS = 8
# No citable figure for more than two sub-8-bit MACs per DSP48E2 was found (Xilinx WP521 on
# INT4 was searched for and not retrieved): narrower operands pack like INT8 (2), and a spec
# can state its own figure with ``macs_per_dsp``.

# --------------------------------------------------------------------------- BRAM geometry

BRAM36_BITS = 36 * 1024  # [UG573] 36 Kb per block RAM
# [UG573] (depth, width) aspect ratios of one BRAM36; 512 x 72 only in simple dual port (one
# read and one write port, both 72 bits wide), which is how every engine buffer is used.
BRAM36_SHAPES = (
    (512, 72),
    (1024, 36),
    (2048, 18),
    (4096, 9),
    (8192, 4),
    (16384, 2),
    (32768, 1),
)

# --------------------------------------------------------------------------- energy

# [KuonRose07] FPGA/ASIC dynamic power ratio for LUT logic, ~14 at 90 nm; smaller with hard
# blocks (our MACs are DSP slices and our buffers BRAMs, so 14 is an upper estimate). Applied
# to the project's 45 nm ASIC energies (``tables``: Horowitz MAC, sqrt-fit SRAM) scaled to
# the devices' 16 nm node ([DS891]: TSMC 16 nm FinFET) by ``tables.energy_scale`` (Stillmaker
# & Baas), as the default of ``fpga_asic_energy_ratio``; 0 turns on-chip energy off. No
# static (leakage) power is modeled: no citable figure found.
KUON_ROSE_DYNAMIC_POWER_RATIO = 14.0
DEVICE_NODE_NM = 16  # [DS891] Zynq UltraScale+ MPSoCs: 16 nm FinFET process
BRAM36_BYTES = BRAM36_BITS / 8  # the array one access reads, for ``tables.sram_pj_per_bit``

# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True, kw_only=True)
class FpgaSpec:
    """A Zhang-style CNN engine on a Zynq UltraScale+ device (template ``fpga``).

    Attributes:
        device: device class, one of ``DEVICES`` (``xczu9eg``: ZCU102, ``xczu7ev``: ZCU104,
            ``xczu3eg``: Ultra96, ``xck26``: KV260).
        unroll_c: input channels computed in parallel (Zhang's Tn; PG338's ICP).
        unroll_k: output channels computed in parallel (Zhang's Tm; PG338's OCP).
        freq_mhz: fabric clock of the engine, MHz (cycles are counted at it).
        dram_gbps: DRAM bandwidth the engine gets, GB/s (1e9 bytes/s).
        unroll_px: output pixels (along a row) computed in parallel (PG338's PP); default 1.
        weight_bits, act_bits: the engine's operand widths (weights; input and output
            activations). Narrower layers run at these widths; wider ones cannot run.
        ibuf_kib, wbuf_kib, obuf_kib: input, weight and output (32-bit partial sum) buffers,
            KiB, both halves included when ``double_buffered``.
        double_buffered: ping-pong buffers ([Zhang15]): a tile uses half of each buffer.
        dsp_clock_ratio: DSP clock / fabric clock, 1 or 2 (PG338's ``dpu_2x_clk``: each DSP
            then serves two lane-MACs per fabric cycle).
        macs_per_dsp: MACs one DSP48E2 computes per DSP clock; ``None`` (default): from the
            operand widths (``macs_per_dsp``, the function).
        dsp_budget, bram_budget: fractions of the device's DSPs / BRAM36 the engine may use,
            in (0, 1]; default 1 (no derating: we found no citable one).
        dram_type: DRAM energy per bit (``tables.DRAM_PJ_PER_BIT``); default ``ddr3`` (the
            table has no DDR4 entry; see the docs).
        fpga_asic_energy_ratio: multiplier on the 45 nm ASIC energies of ``tables`` for the
            on-chip (DSP and BRAM) dynamic energy, >= 0; default 14 ([KuonRose07]); 0: on-chip
            energy not modeled.
        name: a label.
        template: always ``fpga``.
    """

    device: str
    unroll_c: int
    unroll_k: int
    freq_mhz: float
    dram_gbps: float
    unroll_px: int = 1
    weight_bits: int = 8
    act_bits: int = 8
    ibuf_kib: float = 64.0
    wbuf_kib: float = 64.0
    obuf_kib: float = 32.0
    double_buffered: bool = True
    dsp_clock_ratio: int = 1
    macs_per_dsp: int | None = None
    dsp_budget: float = 1.0
    bram_budget: float = 1.0
    dram_type: str = "ddr3"
    fpga_asic_energy_ratio: float = KUON_ROSE_DYNAMIC_POWER_RATIO
    name: str = "fpga"
    template: str = FPGA_TEMPLATE

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FpgaSpec:
        """Build a spec from a mapping (values are checked by ``validate``).

        Raises:
            SpecError: unknown or missing keys.
        """
        return build_spec(cls, d, template=FPGA_TEMPLATE, keys=FPGA_KEYS,  # type: ignore[no-any-return]
                          required=FPGA_REQUIRED_KEYS)

    def validate(self) -> list[str]:
        """Every problem of the spec, one line each: ``"<field>: <rule>, got <value>"``.

        Field rules first; then the resource budgets (``budget_problems``). Never raises.
        """
        return field_problems(self, check_field) or self.budget_problems()

    def budget_problems(self, use: dict[str, dict[str, Any]] | None = None) -> list[str]:
        """``dsp_budget`` / ``bram_budget`` lines where the engine needs more DSPs / BRAM36
        than the budget allows (a search makes them constraints instead, see ``FpgaModel``).

        ``use``: this spec's ``resource_use`` when the caller has it. The fields must be valid.
        """
        use = resource_use(self) if use is None else use
        problems = []
        for key, res, what in (("dsp_budget", "dsp", "DSP48E2"), ("bram_budget", "bram36",
                                                                   "BRAM36")):
            r = use[res]
            if r["used"] > r["budget_count"]:
                problems.append(
                    f"{key}: the engine needs {r['used']} {what} ({r['detail']}), over the "
                    f"budget {getattr(self, key):g} x {r['available']} = {r['budget_count']} "
                    f"of {self.device}"
                )
        return problems

    @property
    def lanes(self) -> int:
        """MACs per fabric cycle: ``unroll_c * unroll_k * unroll_px``."""
        return self.unroll_c * self.unroll_k * self.unroll_px


FPGA_KEYS = tuple(f.name for f in dataclasses.fields(FpgaSpec))
# keys an fpga accelerator file must give (the device and the engine's main figures)
FPGA_REQUIRED_KEYS = required_fields(FpgaSpec)

_INT_FIELDS = ("unroll_c", "unroll_k", "unroll_px")
_BITS_FIELDS = ("weight_bits", "act_bits")
_POS_FIELDS = ("freq_mhz", "dram_gbps", "ibuf_kib", "wbuf_kib", "obuf_kib")
_FRACTION_FIELDS = ("dsp_budget", "bram_budget")
MAX_BITS = 32


def check_field(name: str, v: Any) -> tuple[Any, str | None]:
    """Check one ``FpgaSpec`` field: ``(value, None)`` or ``(value, "<rule>, got ...")``.

    Numbers of float fields come back as ``float``. Unknown names are a problem. Never raises.
    """
    got = f"got {v!r} ({type_name(v)})"
    if name == "template":
        return v, None if v == FPGA_TEMPLATE else f"must be {FPGA_TEMPLATE}, got {v!r}"
    if name == "name":
        if not isinstance(v, str) or not v.strip():
            return v, f"must be a non-empty string, {got}"
        return v, None
    if name == "device":
        if not isinstance(v, str) or v not in DEVICES:
            return v, f"must be one of {', '.join(DEVICES)} (a known device class), {got}"
        return v, None
    if name == "dram_type":
        if not isinstance(v, str) or v not in DRAM_TYPES:
            return v, f"must be one of {', '.join(DRAM_TYPES)}, {got}"
        return v, None
    if name == "double_buffered":
        if not isinstance(v, bool):
            return v, f"must be true or false, {got}"
        return v, None
    if name in _INT_FIELDS:
        if not is_int(v) or v <= 0:
            return v, f"must be an integer > 0, {got}"
        return int(v), None
    if name in _BITS_FIELDS:
        if not is_int(v) or not 1 <= v <= MAX_BITS:
            return v, f"must be an integer in 1..{MAX_BITS}, {got}"
        return int(v), None
    if name == "dsp_clock_ratio":
        if not is_int(v) or v not in (1, 2):
            return v, f"must be 1 or 2 (DSP clock / fabric clock), {got}"
        return int(v), None
    if name == "macs_per_dsp":
        if v is None:
            return None, None
        if not is_int(v) or v <= 0:
            return v, f"must be an integer > 0 or null (from the operand widths), {got}"
        return int(v), None
    if name in _POS_FIELDS:
        if not is_real(v) or not math.isfinite(v) or v <= 0:
            return v, f"must be a finite number > 0, {got}"
        return float(v), None
    if name in _FRACTION_FIELDS:
        if not is_real(v) or not 0.0 < v <= 1.0:
            return v, f"must be a number in (0, 1], {got}"
        return float(v), None
    if name == "fpga_asic_energy_ratio":
        if not is_real(v) or not math.isfinite(v) or v < 0:
            return v, f"must be a finite number >= 0 (0: on-chip energy not modeled), {got}"
        return float(v), None
    return v, f"unknown field; known fields: {', '.join(FPGA_KEYS)}"


# --------------------------------------------------------------------------- resources


def dsps_per_multiply(a_bits: int, b_bits: int) -> int:
    """DSP48E2 slices one ``a_bits x b_bits`` signed multiply needs (one per DSP clock).

    One DSP when the operands fit the 27 x 18 multiplier ([UG579]) either way round.
    Otherwise our assumption (no citable table found): the wider operand is split into
    26-bit and the narrower into 17-bit unsigned chunks (the sign bit stays with the top
    chunk), one DSP per pair of chunks: 32 x 32 bit -> 2 x 2 = 4 DSPs.
    """
    wide, narrow = max(a_bits, b_bits), min(a_bits, b_bits)
    if wide <= DSP_A_BITS and narrow <= DSP_B_BITS:
        return 1
    return math.ceil(wide / (DSP_A_BITS - 1)) * math.ceil(narrow / (DSP_B_BITS - 1))


def macs_per_dsp(weight_bits: int, act_bits: int) -> float:
    """MACs one DSP48E2 computes per DSP clock at these operand widths.

    Both <= 8 bit: 2 ([WP486]: two INT8 MACs sharing one operand; no citable figure for more
    at narrower widths). Up to 27 x 18 bit: 1 ([UG579]). Wider: ``1 / dsps_per_multiply``.
    """
    if max(weight_bits, act_bits) <= INT8_PACK_MAX_BITS:
        return float(INT8_MACS_PER_DSP)
    return 1.0 / dsps_per_multiply(weight_bits, act_bits)


def bram36_count(capacity_bits: float, width_bits: int) -> tuple[int, int, int]:
    """BRAM36 blocks for a buffer of ``capacity_bits`` read ``width_bits`` per cycle.

    The buffer is ``width_bits`` wide and ``ceil(capacity / width)`` words deep; it is built
    from banks of one BRAM36 aspect ratio ([UG573], simple dual port): ``ceil(width / w)``
    banks side by side, each ``ceil(depth / d)`` blocks deep, using the shape with the fewest
    blocks. Returns ``(blocks, block_depth, block_width)``. A buffer that feeds many lanes
    needs many blocks even when it is small.
    """
    depth = max(1, math.ceil(capacity_bits / width_bits))
    return min(
        (math.ceil(width_bits / w) * math.ceil(depth / d), d, w) for d, w in BRAM36_SHAPES
    )


def buffer_widths(spec: FpgaSpec) -> dict[str, int]:
    """Bits each buffer delivers per fabric cycle ([Zhang15] engine).

    Input: ``unroll_c * unroll_px`` activations (shared by the ``unroll_k`` output lanes).
    Weights: ``unroll_c * unroll_k`` (shared by the pixel lanes). Output: ``unroll_k *
    unroll_px`` 32-bit partial sums, read and written back every cycle (the simple-dual-port
    read and write ports, each of this width).
    """
    return {
        "ibuf": spec.unroll_c * spec.unroll_px * spec.act_bits,
        "wbuf": spec.unroll_c * spec.unroll_k * spec.weight_bits,
        "obuf": spec.unroll_k * spec.unroll_px * PSUM_BITS,
    }


def resource_use(spec: FpgaSpec) -> dict[str, dict[str, Any]]:
    """DSP48E2, BRAM36, URAM and LUT use of the engine against the device (JSON-able).

    Per resource: ``used``, ``available``, ``fraction`` (used / available), ``budget``
    (fraction allowed), ``budget_count`` (floor(budget * available)), ``constraint``
    (``used / budget_count - 1``: <= 0 is feasible, the convention of ``EvalResult``) and a
    ``detail`` line. URAM is reported unused and LUTs not modeled (``used`` is ``None``).
    ``spec`` must pass the field checks (``check_field``); budgets are not enforced here.
    """
    dev = DEVICES[spec.device]
    per_dsp = (
        float(spec.macs_per_dsp)
        if spec.macs_per_dsp is not None
        else macs_per_dsp(spec.weight_bits, spec.act_bits)
    )
    dsps = math.ceil(spec.lanes / (per_dsp * spec.dsp_clock_ratio))
    caps = {"ibuf": spec.ibuf_kib, "wbuf": spec.wbuf_kib, "obuf": spec.obuf_kib}
    widths = buffer_widths(spec)
    brams = {}
    for buf, width in widths.items():
        n, d, w = bram36_count(caps[buf] * 1024 * 8, width)
        brams[buf] = {"blocks": n, "shape": f"{d}x{w}", "width_bits": width,
                      "kib": caps[buf]}
    bram_used = sum(b["blocks"] for b in brams.values())

    def entry(used: int, available: int, budget: float, detail: str) -> dict[str, Any]:
        count = math.floor(budget * available)
        return {
            "used": used,
            "available": available,
            "fraction": used / available,
            "budget": budget,
            "budget_count": count,
            "constraint": used / count - 1.0 if count > 0 else math.inf,
            "detail": detail,
        }

    return {
        "dsp": entry(
            dsps, dev.dsp, spec.dsp_budget,
            f"{spec.lanes} MAC lanes / ({per_dsp:g} MACs per DSP x DSP clock ratio "
            f"{spec.dsp_clock_ratio})",
        ),
        "bram36": {
            **entry(
                bram_used, dev.bram36, spec.bram_budget,
                " + ".join(f"{k} {b['blocks']} ({b['width_bits']} bit wide, {b['kib']:g} KiB, "
                           f"{b['shape']} blocks)" for k, b in brams.items()),
            ),
            "buffers": brams,
        },
        "uram": {"used": 0, "available": dev.uram, "fraction": 0.0,
                 "detail": "buffers are mapped to BRAM36 only"},
        "lut": {"used": None, "available": dev.luts, "fraction": None,
                "detail": "not modeled"},
    }


# --------------------------------------------------------------------------- the template


class FpgaModel(HardwareModel):
    """A Zhang-style unrolled C x K x pixel engine on a Zynq UltraScale+ device.

    Per layer: compute cycles are the folds of the unrolled dimensions (grouped convs put
    several groups side by side, block-diagonally, when a group is narrower than the lanes);
    DRAM traffic is ``plan_tiling``'s over the three buffers pooled; latency is
    ``max(compute, DRAM bytes / bandwidth)``; energy is MACs and buffer bits at the 45 nm
    ASIC energies of ``tables`` x ``fpga_asic_energy_ratio`` plus DRAM bits x
    ``DRAM_PJ_PER_BIT``. ``area_mm2`` is 0 (an FPGA design has no area of its own; see
    ``resources()``). See docs/hardware/fpga.md.

    Same lifecycle and invariants as ``HardwareModel`` (immutable, picklable, pure);
    ``evaluate_network`` is the base class's.

    The model prices an engine over its DSP / BRAM budget, even over the whole device;
    ``budget_problems()`` names the overshoot, which ``make_model`` raises unless a search
    asks it not to (``enforce_budgets=False``): then ``resource_constraints()`` (in
    ``HardwareReport.resources``) become the study's Optuna constraints.

    Raises:
        SpecError: from ``__init__``: invalid fields.
    """

    template = FPGA_TEMPLATE
    spec_type = FpgaSpec

    @staticmethod
    def spec_problems(acc: FpgaSpec) -> list[str]:
        """The field rules; the budgets are ``budget_problems()``."""
        return field_problems(acc, check_field)

    def __init__(self, acc: FpgaSpec) -> None:
        super().__init__(acc)
        self._resources = resource_use(acc)
        self.num_pes = acc.lanes
        self._f_hz = acc.freq_mhz * 1e6
        self._bytes_per_cycle = acc.dram_gbps * 1e9 / self._f_hz
        pool = acc.ibuf_kib + acc.wbuf_kib + acc.obuf_kib
        self._tile_kib = pool / 2 if acc.double_buffered else pool
        self._buffer = ("the fpga buffers hold", f"ibuf_kib + wbuf_kib + obuf_kib = {pool:g} KiB"
                        + (", half of it per tile (double_buffered)" if acc.double_buffered
                           else ""))  # how plan_tiling's InfeasibleDesign names them
        # the tiling mapper's view of the engine: a WS array of unroll_c rows x unroll_k
        # columns (tiles hold whole lane folds) with one buffer of the pooled tile capacity
        self._tiler = AcceleratorSpec(
            dataflow="ws", pe_rows=acc.unroll_c, pe_cols=acc.unroll_k, glb_kib=self._tile_kib,
            dram_gbps=acc.dram_gbps, freq_mhz=acc.freq_mhz, dram_type=acc.dram_type,
            weight_compression=False,
        )
        r = acc.fpga_asic_energy_ratio * tables.energy_scale(DEVICE_NODE_NM)
        self._mac_pj = r * (tables.mult_pj(acc.weight_bits, acc.act_bits)
                            + tables.add_pj(PSUM_BITS))
        self._bram_pj_bit = r * tables.sram_pj_per_bit(BRAM36_BYTES)
        self._dram_pj_bit = tables.DRAM_PJ_PER_BIT[acc.dram_type]
        w = buffer_widths(acc)
        self._bits_per_cycle = w["ibuf"] + w["wbuf"] + 2 * w["obuf"]

    def resources(self) -> dict[str, dict[str, Any]]:
        """The engine's resource use against the device (``resource_use``; a new copy)."""
        return copy.deepcopy(self._resources)

    def budget_problems(self) -> list[str]:
        """``dsp_budget`` / ``bram_budget`` lines where the engine needs more than allowed."""
        return self.acc.budget_problems(self._resources)

    def resource_constraints(self) -> dict[str, float]:
        """``used / budget_count - 1`` per budgeted resource (<= 0: fits)."""
        return resource_constraints(self._resources)

    @property
    def peak_ops_per_s(self) -> float:
        """2 ops (multiply + add) per MAC lane per fabric cycle."""
        return 2.0 * self.num_pes * self._f_hz

    def area_mm2(self, *, weight_bits: int, input_bits: int) -> float:
        """0.0: a design on an FPGA occupies resources, not mm^2 (see ``resources()``)."""
        return 0.0

    def folds(self, layer: ConvLayer) -> dict[str, int]:
        """How the layer folds onto the lanes: groups side by side and the fold counts.

        ``groups_parallel``: groups computed at once, block-diagonally (1 unless a group's
        channels and filters both fit the lanes). ``compute_cycles = batch * group_folds *
        k_folds * c_folds * E * px_folds * R * S``.
        """
        s = self.acc
        g = layer.groups
        cpg, kpg = layer.channels // g, layer.num_filters // g
        gp = 1
        if cpg <= s.unroll_c and kpg <= s.unroll_k:
            gp = min(g, s.unroll_c // cpg, s.unroll_k // kpg)
        fc = -(-cpg // s.unroll_c)
        fk = -(-kpg // s.unroll_k)
        fg = -(-g // gp)
        fpx = -(-layer.ofmap_w // s.unroll_px)
        cycles = (layer.batch * fg * fk * fc * layer.ofmap_h * fpx
                  * layer.filter_h * layer.filter_w)
        return {"groups_parallel": gp, "group_folds": fg, "k_folds": fk, "c_folds": fc,
                "px_folds": fpx, "compute_cycles": cycles}

    def evaluate_layer(self, layer: ConvLayer) -> LayerCost:
        check_layer(layer)
        s = self.acc
        if layer.weight_bits > s.weight_bits or max(layer.input_bits,
                                                    layer.output_bits) > s.act_bits:
            raise InfeasibleDesign(
                f"layer {layer.name!r}: needs weight/input/output bits {layer.weight_bits}/"
                f"{layer.input_bits}/{layer.output_bits}, the fpga engine is "
                f"weight_bits={s.weight_bits}, act_bits={s.act_bits}"
            )
        fold = self.folds(layer)
        compute = fold["compute_cycles"]

        # DRAM: the tiling mapper at the engine's storage widths (dense weights).
        stored = dataclasses.replace(layer, weight_bits=s.weight_bits, input_bits=s.act_bits,
                                     output_bits=s.act_bits)
        tiling = plan_tiling(stored, self._tiler, self._buffer)
        dram_read = math.ceil(tiling.read_bytes)
        dram_write = math.ceil(tiling.write_bytes)
        dram_bytes = dram_read + dram_write
        dram_cycles = dram_bytes / self._bytes_per_cycle
        total = max(compute, math.ceil(dram_cycles))

        macs = layer.macs
        mac_pj = macs * self._mac_pj
        bram_bits = compute * self._bits_per_cycle + 8 * dram_bytes
        bram_pj = bram_bits * self._bram_pj_bit
        dram_pj = 8 * dram_bytes * self._dram_pj_bit
        res = self._resources
        return layer_cost(
            layer,
            num_pes=self.num_pes,
            compute_cycles=compute,
            total_cycles=total,
            dram_read_bytes=dram_read,
            dram_write_bytes=dram_write,
            mac_energy_pj=mac_pj,
            rf_energy_pj=0.0,
            glb_energy_pj=bram_pj,
            dram_energy_pj=dram_pj,
            latency_ms=total / (s.freq_mhz * 1e3),
            mapping={
                "template": self.template,
                "device": s.device,
                "unroll_c": s.unroll_c,
                "unroll_k": s.unroll_k,
                "unroll_px": s.unroll_px,
                **fold,
                "groups": layer.groups,
                "ideal_cycles": -(-macs // self.num_pes),
                "dram_cycles": dram_cycles,
                "bound": "memory" if dram_cycles > compute else "compute",
                "peak_ops_per_s": self.peak_ops_per_s,
                "dsp_used": res["dsp"]["used"],
                "dsp_available": res["dsp"]["available"],
                "dsp_fraction": res["dsp"]["fraction"],
                "bram36_used": res["bram36"]["used"],
                "bram36_available": res["bram36"]["available"],
                "bram36_fraction": res["bram36"]["fraction"],
                "tile_buffer_kib": self._tile_kib,
                **tiling.mapping(),  # glb_bytes_used: of the pooled buffers
                "bram_bits_accessed": float(bram_bits),
            },
        )
