"""Energy and area constants of the accelerator model, each with its source and node.

Every number the cost model multiplies by lives here, next to the publication (or tool table)
it was taken from and the technology node it belongs to. The model is a 45 nm model: the
arithmetic and SRAM energies and the arithmetic areas are Horowitz's 45 nm / 0.9 V figures,
the SRAM area is a TSMC 45 nm figure, the register area is the one 40 nm number we scale.
Derived quantities (fits) are computed once at import from the published points, so the
points themselves stay visible and testable. Nothing here is mutable state.

Sources (short names used below):
    [Horowitz14] M. Horowitz, "Computing's energy problem (and what we can do about it)",
        ISSCC 2014, pp. 10-14. 45 nm, 0.9 V. Energies from the paper's table; the matching
        areas are those of the same table as reproduced in Hennessy & Patterson, "Computer
        Architecture: A Quantitative Approach", 6th ed., Fig. 1.13, and in Gholami et al.,
        "A Survey of Quantization Methods for Efficient Neural Network Inference" (2021),
        Fig. 15 ("45nm technology", citing Horowitz).
    [EIE16] S. Han et al., "EIE: Efficient Inference Engine on Compressed Deep Neural
        Network", ISCA 2016, Table II and Sec. VI: one PE in TSMC 45 nm GP has 162 KB of SRAM
        (128 KB sparse matrix + 32 KB pointers + 2 KB activations) whose "memory" area is
        594,786 um^2; SRAM area and energy were obtained with CACTI (Sec. V).
    [Aladdin14] Y. S. Shao et al., "Aladdin: a pre-RTL, power-performance accelerator
        simulator", ISCA 2014; its 40 nm component table as packaged in Accelergy's
        hwcomponents-library (``hwcomponents_library/library/aladdin.py``): register
        5.98 um^2 per bit.
    [AladdinPF] The same characterization in Aladdin's own source, ``utils/power_func.h``
        (harvard-acc/ALADDIN, "Function units power model normalized to a commercial 40g";
        power in mW, time in ns): per register bit at a 1 ns cycle ``REG_1ns_int_power``
        7.936518e-03 mW, ``REG_1ns_switch_power`` 1.062977e-03 mW, ``REG_1ns_leakage_power``
        7.395312e-05 mW and ``REG_1ns_area`` 5.981433 um^2 (the area above). The internal
        power is the same energy per cycle at every cycle time of the table (7.94 fJ at 1 ns;
        3.967495e-03 mW x 2 ns, 2.644534e-03 x 3, 1.982290e-03 x 4: 7.93-7.94 fJ): it is spent
        per clock edge, apart from the data-dependent switching.
    [AccelergyCACTI] Accelergy CACTI plug-in DRAM table (``accelergy-cacti-plug-in``
        ``cacti_wrapper.py`` and ``hwcomponents-cacti``): pJ per bit transferred, with the
        sources named there (LPDDR, DDR3: Malladi et al. ISCA'12; GDDR5, HBM2: Chatterjee
        et al. MICRO'17; HMC: doi 10.1145/3093336.3037702; LPDDR4: "public data").
    [Eyeriss17] Y.-H. Chen et al., "Eyeriss: an energy-efficient reconfigurable accelerator
        for deep convolutional neural networks", JSSC 2017: data gating skips the MAC's
        switching on zero operands.
    [CACTI7] CACTI 7.0 (Balasubramonian et al., "CACTI 7: New Tools for Interconnect
        Exploration in Innovative Off-Chip Memories", ACM TACO 2017), the build shipped inside
        the zigzag-dse 3.9.1 wheel, run by ``benchmarks/cacti_sram.py``: one-bank RAM, one
        read and one write port, 64-bit word, 45 nm, 360 K, no ECC.
    [StillmakerBaas17] A. Stillmaker, B. Baas, "Scaling equations for the accurate prediction
        of CMOS device performance from 180 nm to 7 nm", Integration 58 (2017) 74-81; the
        tables as used by Accelergy's hwcomponents (``hwcomponents/scaling/techscaling.py``):
        area factors between nodes and per-node energy polynomials a*Vdd^2 + b*Vdd + c.
"""

from __future__ import annotations

import math
from functools import lru_cache

TECH_NODE_NM = 45  # every figure below is at (or scaled to) this node

# --------------------------------------------------------------------------- arithmetic energy

# [Horowitz14] 45 nm: int mult 8x8 bit 0.2 pJ, 32x32 bit 3.1 pJ. We scale with the product of
# the operand widths (array multiplier: partial-product bits), anchored at 8x8:
# E = 0.2 * (w_bits * i_bits) / 64 -> 32x32 gives 3.2 pJ against the table's 3.1 (+3 %).
MULT_8X8_PJ = 0.2
MULT_32X32_PJ_TABLE = 3.1  # [Horowitz14], kept only to state/test the fit's error

# [Horowitz14] 45 nm: int add 8 / 16 / 32 bit = 0.03 / 0.05 / 0.1 pJ. Linear in width,
# anchored at the 32-bit accumulator add: E = 0.1 * bits / 32.
ADD_32_PJ = 0.1
ACCUMULATOR_BITS = 32  # partial sums are accumulated at 32 bit (TPU-like int8 -> int32)

# --------------------------------------------------------------------------- SRAM energy

# [Horowitz14] 45 nm: SRAM read of a 64-bit word from an 8 KB / 32 KB / 1 MB array costs
# 10 / 20 / 100 pJ. (capacity in bytes, pJ per 64-bit access). KB read as KiB.
SRAM_POINTS_64B = ((8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0))
SRAM_WORD_BITS = 64

# Fit E_64(C) = k * sqrt(C_bytes), k chosen by least squares in log space over the three
# points. Result: k = 0.1060 pJ/sqrt(B); errors -4.0 % (8 KB), -4.0 % (32 KB), +8.6 % (1 MB).
# Energy is linear in the bits accessed: E(C, bits) = k * sqrt(C) * bits / 64. Reads and writes
# are charged alike (the table has reads only). Below 8 KB (per-PE register files) this is an
# extrapolation of the same law; it gives 0.0265 pJ for an 8-bit access to a 4-byte file.
SRAM_SQRT_K_PJ = math.exp(
    sum(math.log(e) - 0.5 * math.log(c) for c, e in SRAM_POINTS_64B) / len(SRAM_POINTS_64B)
)


def sram_pj_per_bit(capacity_bytes: float) -> float:
    """Energy of accessing one bit of an SRAM/register file of ``capacity_bytes`` (45 nm)."""
    return SRAM_SQRT_K_PJ * math.sqrt(capacity_bytes) / SRAM_WORD_BITS


def sram_fit_errors() -> list[float]:
    """Relative error of the sqrt fit at each [Horowitz14] point (fit / table - 1)."""
    return [sram_pj_per_bit(c) * SRAM_WORD_BITS / e - 1.0 for c, e in SRAM_POINTS_64B]


# --------------------------------------------------------------------------- DRAM energy

# [AccelergyCACTI] pJ per bit read or written, by DRAM type (interface + device).
DRAM_PJ_PER_BIT = {
    "lpddr4": 8.0,
    "lpddr": 40.0,
    "ddr3": 70.0,
    "gddr5": 14.0,
    "hbm2": 3.9,
    "hmc": 4.2,
}

# --------------------------------------------------------------------------- area (45 nm)

# [Horowitz14] areas, 45 nm: int mult 8 bit 282 um^2, 32 bit 3495 um^2. Fit
# A = MULT_AREA_SLOPE * (w_bits * i_bits) + MULT_AREA_OFFSET through both points (exact
# at both; quadratic in width for square multipliers, bilinear for mixed widths).
MULT_AREA_POINTS_UM2 = ((8, 282.0), (32, 3495.0))
# [Horowitz14] areas, 45 nm: int add 8 / 16 / 32 bit = 36 / 67 / 137 um^2. Linear fit through
# the 8- and 32-bit points (16 bit: 69.7 against 67, +4 %).
ADD_AREA_POINTS_UM2 = ((8, 36.0), (32, 137.0))

(_m_lo_b, _m_lo_a), (_m_hi_b, _m_hi_a) = MULT_AREA_POINTS_UM2
MULT_AREA_SLOPE_UM2 = (_m_hi_a - _m_lo_a) / (_m_hi_b**2 - _m_lo_b**2)  # 3.3469 um^2/bit^2
MULT_AREA_OFFSET_UM2 = _m_lo_a - MULT_AREA_SLOPE_UM2 * _m_lo_b**2  # 67.8 um^2
(_a_lo_b, _a_lo_a), (_a_hi_b, _a_hi_a) = ADD_AREA_POINTS_UM2
ADD_AREA_SLOPE_UM2 = (_a_hi_a - _a_lo_a) / (_a_hi_b - _a_lo_b)  # 4.208 um^2/bit
ADD_AREA_OFFSET_UM2 = _a_lo_a - ADD_AREA_SLOPE_UM2 * _a_lo_b  # 2.33 um^2

# [EIE16] TSMC 45 nm GP, CACTI: 594,786 um^2 of SRAM macros for 162 KB per PE.
# -> 3,671.5 um^2 per KiB (0.0036715 mm^2/KiB; about 0.45 um^2 per bit including periphery).
EIE_SRAM_AREA_UM2 = 594_786.0
EIE_SRAM_KIB = 162.0
SRAM_AREA_UM2_PER_KIB = EIE_SRAM_AREA_UM2 / EIE_SRAM_KIB

# [Aladdin14] 40 nm register: 5.98 um^2 per bit. Scaled to 45 nm by the square of the feature
# size, (45/40)^2 = 1.266 (our assumption: ideal area scaling): 7.57 um^2 per bit. Used for the
# per-PE register file (``rf_bytes``), which is flip-flops rather than an SRAM macro.
ALADDIN_REG_AREA_UM2_PER_BIT_40NM = 5.98
REG_AREA_UM2_PER_BIT = ALADDIN_REG_AREA_UM2_PER_BIT_40NM * (TECH_NODE_NM / 40.0) ** 2

# No overhead factor (wiring, control, I/O, clock tree, DRAM PHY) is applied: we found no
# citable one for this template.

# --------------------------------------------------------------------------- register clocking

# [AladdinPF] 40 nm, per register bit: the flip-flop's internal energy per clock cycle
# (7.936518e-03 mW at a 1 ns cycle = 7.94 fJ) and its leakage (7.395312e-05 mW = 74.0 nW).
# Aladdin charges the internal energy per register access, because its datapaths gate idle
# registers; an accelerator template that clocks its register files every cycle (no clock
# gating, the assumption of ``systolic`` and ``eyeriss``) spends it on every cycle, busy or
# idle: E_clock = bits x cycles x 7.94 fJ. It is the flip-flops' own clock-pin energy; the
# clock tree's buffers and wires are not in it. Hwcomponents-library's packaging of the same
# table lists a register leakage of 0; the source above gives 74 nW per bit, which we use.
ALADDIN_REG_CLOCK_FJ_PER_BIT = 7.936518  # per bit per cycle, 40 nm
ALADDIN_REG_LEAK_NW_PER_BIT = 73.95312  # per bit, 40 nm

# --------------------------------------------------------------------------- leakage (45 nm)

# [Aladdin14] 40 nm leakage power (hwcomponents-library ``aladdin.py``): 32x32-bit multiplier
# 80 uW (0.08 pJ per 1 ns cycle), 32-bit adder 2.4 uW (registers: "register clocking" above).
# Scaled like the dynamic energies: the multiplier with the product of its operand widths,
# the adder with its width; from 40 to 45 nm by ``energy_scale`` (Accelergy scales leakage
# power by the same factor). Their leakage per um^2 (12.6 nW for the multiplier, 8.6 for the
# adder) is that of CACTI's itrs-lop SRAM below (12.8 nW/um^2 at 1 MiB), the flavour we
# default to.
ALADDIN_NODE_NM = 40
ALADDIN_MULT32_LEAK_UW = 80.0
ALADDIN_ADD32_LEAK_UW = 2.4

# [CACTI7] leakage (subthreshold + gate) of an SRAM of each capacity, mW, 45 nm, 360 K, per
# ITRS device flavour (hp: high performance, lop: low operating power, lstp: low standby
# power). Dynamic read energies of the same runs: 6.5 / 18.6 / 100 pJ per 64 bits for itrs-hp
# at 8 KiB / 32 KiB / 1 MiB, against [Horowitz14]'s 10 / 20 / 100 (see docs/hardware).
SRAM_LEAKAGE_KIB = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
SRAM_LEAKAGE_MW = {
    "itrs-hp": (1.551, 3.451, 6.793, 12.64, 23.49, 46.63, 93.26, 173, 343.9, 687.8, 1376, 2751,
                5497, 1.099e04, 2.193e04),
    "itrs-lop": (0.1377, 0.2694, 0.4793, 0.8896, 1.566, 3.133, 5.727, 11.14, 22.28, 42.36, 83.24,
                 177.9, 350.5, 701, 1407),
    "itrs-lstp": (0.0003496, 0.0007811, 0.001533, 0.002854, 0.005231, 0.01046, 0.01933, 0.03866,
                  0.07731, 0.1479, 0.2956, 0.5912, 1.178, 2.356, 4.712),
}

# --------------------------------------------------------------------------- node scaling

# [StillmakerBaas17] area factor from 45 nm to each node (the 45 nm row of the table).
TECH_NODES_NM = (130, 90, 65, 45, 32, 20, 16, 14, 10, 7)
AREA_FROM_45NM = (6.4, 2.8, 1.5, 1.0, 0.46, 0.21, 0.19, 0.17, 0.1, 0.059)
# [StillmakerBaas17] energy per switch of each node, a*Vdd^2 + b*Vdd + c (relative units).
ENERGY_POLY = (
    (7.171, -6.709, 2.904),
    (4.762, -4.781, 2.092),
    (3.755, -4.398, 1.975),
    (1.103, -0.362, 0.2767),
    (0.9559, -0.7823, 0.471),
    (0.373, -0.1582, 0.04104),
    (0.2958, -0.1241, 0.03024),
    (0.2363, -0.09675, 0.02239),
    (0.2068, -0.09311, 0.02375),
    (0.1776, -0.09097, 0.02447),
)
SCALING_VDD = 0.9  # [Horowitz14]'s supply, used for both nodes of every energy ratio


def _interp_node(node_nm: float, values: tuple[float, ...]) -> float:
    """``values`` (one per ``TECH_NODES_NM``) interpolated linearly in nm at ``node_nm``."""
    nodes = TECH_NODES_NM
    if not nodes[-1] <= node_nm <= nodes[0]:
        raise ValueError(f"node {node_nm} nm is outside {nodes[-1]}-{nodes[0]} nm")
    for (hi, v_hi), (lo, v_lo) in zip(zip(nodes, values), zip(nodes[1:], values[1:])):
        if lo <= node_nm <= hi:
            return v_lo + (v_hi - v_lo) * (node_nm - lo) / (hi - lo)
    raise AssertionError("unreachable")  # pragma: no cover


@lru_cache(maxsize=256)  # a pure function of a few numbers
def area_scale(node_nm: float) -> float:
    """Area at ``node_nm`` over area at 45 nm ([StillmakerBaas17], linear in nm between nodes)."""
    return _interp_node(node_nm, AREA_FROM_45NM)


@lru_cache(maxsize=256)  # a pure function of a few numbers
def energy_scale(to_nm: float, from_nm: float = TECH_NODE_NM) -> float:
    """Energy (and leakage power) at ``to_nm`` over that at ``from_nm``, both at 0.9 V."""
    per_node = tuple(a * SCALING_VDD**2 + b * SCALING_VDD + c for a, b, c in ENERGY_POLY)
    return _interp_node(to_nm, per_node) / _interp_node(from_nm, per_node)


def mult_leakage_w(weight_bits: int, input_bits: int) -> float:
    """Leakage of one integer multiplier at 45 nm, W (Aladdin's, quadratic in width)."""
    uw = ALADDIN_MULT32_LEAK_UW * weight_bits * input_bits / 1024.0
    return uw * 1e-6 * energy_scale(TECH_NODE_NM, ALADDIN_NODE_NM)


def reg_clock_pj_per_bit() -> float:
    """Clock energy of one register bit per cycle at 45 nm, pJ ([AladdinPF], 40 nm scaled)."""
    return ALADDIN_REG_CLOCK_FJ_PER_BIT * 1e-3 * energy_scale(TECH_NODE_NM, ALADDIN_NODE_NM)


def reg_leakage_w_per_bit() -> float:
    """Leakage of one register bit at 45 nm, W ([AladdinPF], 40 nm scaled)."""
    return ALADDIN_REG_LEAK_NW_PER_BIT * 1e-9 * energy_scale(TECH_NODE_NM, ALADDIN_NODE_NM)


def add_leakage_w(bits: int) -> float:
    """Leakage of one integer adder at 45 nm, W (Aladdin's, linear in width)."""
    return ALADDIN_ADD32_LEAK_UW * bits / 32.0 * 1e-6 * energy_scale(TECH_NODE_NM, ALADDIN_NODE_NM)


@lru_cache(maxsize=256)  # a pure function of a few numbers
def pe_leakage_w(weight_bits: int, input_bits: int) -> float:
    """Leakage of one PE's multiplier and 32-bit accumulator adder at 45 nm, W."""
    return mult_leakage_w(weight_bits, input_bits) + add_leakage_w(ACCUMULATOR_BITS)


@lru_cache(maxsize=256)  # a pure function of a few numbers
def sram_leakage_w(capacity_bytes: float, device: str) -> float:
    """Leakage of an SRAM of ``capacity_bytes`` at 45 nm, W: [CACTI7] points interpolated
    log-log, and proportional to capacity beyond the smallest and largest point."""
    kib = capacity_bytes / 1024.0
    xs, ys = SRAM_LEAKAGE_KIB, SRAM_LEAKAGE_MW[device]
    if kib <= xs[0]:
        return ys[0] * kib / xs[0] * 1e-3
    if kib >= xs[-1]:
        return ys[-1] * kib / xs[-1] * 1e-3
    i = next(j for j in range(1, len(xs)) if kib <= xs[j])
    t = math.log(kib / xs[i - 1]) / math.log(xs[i] / xs[i - 1])
    return math.exp(math.log(ys[i - 1]) + t * math.log(ys[i] / ys[i - 1])) * 1e-3


def mult_pj(weight_bits: int, input_bits: int) -> float:
    """Energy of one integer multiply (45 nm), quadratic in width: 0.2 pJ at 8x8 bit."""
    return MULT_8X8_PJ * (weight_bits * input_bits) / 64.0


def add_pj(bits: int) -> float:
    """Energy of one integer add (45 nm), linear in width: 0.1 pJ at 32 bit."""
    return ADD_32_PJ * bits / 32.0


def mult_area_um2(weight_bits: int, input_bits: int) -> float:
    """Area of one integer multiplier (45 nm); exact at 8x8 (282) and 32x32 (3495 um^2)."""
    return MULT_AREA_SLOPE_UM2 * weight_bits * input_bits + MULT_AREA_OFFSET_UM2


def add_area_um2(bits: int) -> float:
    """Area of one integer adder (45 nm); exact at 8 (36) and 32 bit (137 um^2)."""
    return ADD_AREA_SLOPE_UM2 * bits + ADD_AREA_OFFSET_UM2
