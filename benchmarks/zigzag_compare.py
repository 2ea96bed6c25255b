"""Compare our systolic model with ZigZag's loop-order search on ResNet-18 layers.

Runs ZigZag (``zigzag-dse``) with its two temporal-mapping (loop-order) searches, LOMA and
SALSA, keeping per layer the least-energy mapping either returns, and our
``evaluators.hardware`` model on the same layers, on an accelerator built to mirror ours
(32x32 WS array, C on rows and K on columns, per-PE registers, one 64 KiB global buffer shared
by inputs/weights/outputs, LPDDR4 DRAM at 32 B/cycle) with ZigZag's per-access energies set
from OUR table (``evaluators/hardware/tables.py``). Prints, per layer and measured in this
one run: DRAM bytes, total energy, cycles, seconds per layer and the speed ratio, and, as a
cross-check, ZigZag's cost of OUR chosen tiling (given to ZigZag as a fixed temporal ordering
wherever ZigZag can express it). The assumptions and the differences between the two tools are
in docs/hardware/zigzag.md.

ZigZag is not a project dependency; run this from its own virtualenv::

    python3 -m venv /tmp/zigzag-venv
    /tmp/zigzag-venv/bin/pip install zigzag-dse==3.9.1 six pyyaml
    /tmp/zigzag-venv/bin/python benchmarks/zigzag_compare.py   # about 8 minutes on 1 core

Options: ``--engine both|loma|salsa`` (default both), ``--lpf N`` (LOMA's loop-prime-factor
limit, default 7; its API default 6 runs in ~20 s, 8 takes ~10x longer than 7),
``--salsa-iters N`` and ``--salsa-seeds N`` (SALSA iterations per restart and restarts,
default 2000 x 3), ``--layers a,b`` (a subset by name), ``--repeat N`` (timing repeats for our
model), ``--regs W,I,O`` (ZigZag per-PE register bits).
Only numpy and pyyaml are needed from our side (``evaluators.hardware``; nothing imports
torch).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from evaluators.hardware import make_model, tables  # noqa: E402
from evaluators.specs import AcceleratorSpec, ConvLayer, LayerCost  # noqa: E402

try:
    from zigzag.cost_model.cost_model import CostModelEvaluation
    from zigzag.mapping.data_movement import DataDirection
    from zigzag.mapping.temporal_mapping import TemporalMappingType
    from zigzag.stages.evaluation.cost_model_evaluation import CostModelStage
    from zigzag.stages.main import MainStage
    from zigzag.stages.mapping.salsa import SalsaStage
    from zigzag.stages.mapping.spatial_mapping_generation import SpatialMappingGeneratorStage
    from zigzag.stages.mapping.temporal_mapping_generator_stage import (
        TemporalMappingGeneratorStage,
    )
    from zigzag.stages.parser.accelerator_parser import AcceleratorParserStage
    from zigzag.stages.parser.workload_parser import WorkloadParserStage
    from zigzag.stages.stage import Stage
    from zigzag.stages.workload_iterator import WorkloadStage
except ImportError as exc:  # pragma: no cover - only outside the ZigZag venv
    sys.exit(
        f"zigzag_compare: cannot import zigzag ({exc}). Run it from a venv with "
        "`pip install zigzag-dse==3.9.1 six pyyaml` (see the module docstring)."
    )

# --------------------------------------------------------------------------- our accelerator

ACC = AcceleratorSpec(  # the defaults, spelled out: what the ZigZag architecture mirrors
    template="systolic",
    dataflow="ws",
    pe_rows=32,
    pe_cols=32,
    glb_kib=64.0,
    rf_bytes=4,
    dram_gbps=16.0,
    freq_mhz=500.0,
    dram_type="lpddr4",
    double_buffered=True,
    zero_gating=True,
    weight_compression=True,
)

# SCALE-Sim-style layers: the ifmap already includes the padding (padding = 0), 8-bit operands,
# batch 1. ResNet-18 (He et al. 2016) shapes at 224x224 input.
LAYERS = (
    ConvLayer("conv2_x", 58, 58, 3, 3, 64, 64, 1),  # 56x56x64 -> 64
    ConvLayer("conv3_1", 58, 58, 3, 3, 64, 128, 2),  # 56 -> 28, stride 2
    ConvLayer("conv3_x", 30, 30, 3, 3, 128, 128, 1),  # 28x28x128
    ConvLayer("conv4_1", 30, 30, 3, 3, 128, 256, 2),  # 28 -> 14, stride 2
    ConvLayer("conv4_ds", 28, 28, 1, 1, 128, 256, 2),  # 1x1 stride-2 downsample shortcut
    ConvLayer("conv4_x", 16, 16, 3, 3, 256, 256, 1),  # 14x14x256
    ConvLayer("conv5_x", 9, 9, 3, 3, 512, 512, 1),  # 7x7x512
    ConvLayer("fc", 1, 1, 1, 1, 512, 1000, 1),  # classifier
)

# --------------------------------------------------------------------------- the same energies

E_MAC_PJ = tables.mult_pj(8, 8) + tables.add_pj(tables.ACCUMULATOR_BITS)  # 0.2 + 0.1 pJ
E_RF_PJ_BIT = tables.sram_pj_per_bit(ACC.rf_bytes)  # 0.0033 pJ/bit (4-byte register file)
E_GLB_PJ_BIT = tables.sram_pj_per_bit(ACC.glb_kib * 1024)  # 0.424 pJ/bit (64 KiB)
E_DRAM_PJ_BIT = tables.DRAM_PJ_PER_BIT[ACC.dram_type]  # 8 pJ/bit (LPDDR4)

DRAM_BW_BITS = int(ACC.dram_gbps * 1e9 / (ACC.freq_mhz * 1e6) * 8)  # 256 bit/cycle = 32 B/cycle
GLB_BW_BITS = 16384  # per port per cycle: "enough" (ours has no GLB bandwidth limit)
MIN_BW_BITS = 8  # access granularity: energy = bits moved (rounded up to bytes) x pJ/bit


def _port(name: str, kind: str, bw: int, allocation: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "bandwidth_min": MIN_BW_BITS,
        "bandwidth_max": bw,
        "allocation": allocation,
    }


def _memory(
    size_bits: int,
    operands: list[str],
    pj_bit: float,
    bw: int,
    served: list[str],
    ports: list[dict[str, Any]],
) -> dict[str, Any]:
    # ZigZag charges r_cost / w_cost per access of bandwidth_max bits.
    return {
        "size": size_bits,
        "r_cost": pj_bit * bw,
        "w_cost": pj_bit * bw,
        "area": 0.0,
        "latency": 1,
        "operands": operands,
        "served_dimensions": served,
        "ports": ports,
    }


def _register(size_bits: int, op: str, bw: int) -> dict[str, Any]:
    """A per-PE register of ``size_bits`` moving ``bw`` bits (one word) per port per cycle."""
    if op == "O":
        ports = [
            _port("r_port_1", "read", bw, ["O, tl"]),
            _port("r_port_2", "read", bw, ["O, th"]),
            _port("w_port_1", "write", bw, ["O, fh"]),
            _port("w_port_2", "write", bw, ["O, fl"]),
        ]
    else:
        ports = [
            _port("r_port_1", "read", bw, [f"{op}, tl"]),
            _port("w_port_1", "write", bw, [f"{op}, fh"]),
        ]
    return _memory(size_bits, [op], E_RF_PJ_BIT, bw, [], ports)


def zigzag_accelerator(regs: tuple[int, int, int] = (8, 8, 32)) -> dict[str, Any]:
    """The ZigZag architecture mirroring ``ACC`` (memories listed lowest level first).

    ``regs``: per-PE register sizes in bits for W, I, O. The default mirrors our model (one
    stationary 8-bit weight, the 8-bit input and the 32-bit psum passing through each PE).
    """
    all_ops = ["I1", "I2", "O"]
    reg_w, reg_i, reg_o = regs
    return {
        "name": "codesign_ws_32x32",
        "memories": {
            # per-PE registers (served_dimensions [] = one per PE): one 8-bit weight (the
            # stationary word), one 8-bit input, one 32-bit partial sum
            "rf_w": _register(reg_w, "I2", 8),
            "rf_i": _register(reg_i, "I1", 8),
            "rf_o": _register(reg_o, "O", 32),
            "glb": _memory(
                int(ACC.glb_kib * 1024 * 8),
                all_ops,
                E_GLB_PJ_BIT,
                GLB_BW_BITS,
                ["D1", "D2"],
                [
                    _port("r_port_1", "read", GLB_BW_BITS, ["I1, tl", "I2, tl", "O, tl", "O, th"]),
                    _port(
                        "w_port_1", "write", GLB_BW_BITS, ["I1, fh", "I2, fh", "O, fh", "O, fl"]
                    ),
                ],
            ),
            "dram": _memory(
                10**10,
                all_ops,
                E_DRAM_PJ_BIT,
                DRAM_BW_BITS,
                ["D1", "D2"],
                [
                    _port(
                        "rw_port_1",
                        "read_write",
                        DRAM_BW_BITS,
                        [
                            "I1, fh",
                            "I1, tl",
                            "I2, fh",
                            "I2, tl",
                            "O, fh",
                            "O, tl",
                            "O, fl",
                            "O, th",
                        ],
                    )
                ],
            ),
        },
        "operational_array": {
            "unit_energy": E_MAC_PJ,
            "unit_area": 1.0,
            "dimensions": ["D1", "D2"],
            "sizes": [ACC.pe_rows, ACC.pe_cols],
            "systolic_dimensions": ["D1", "D2"],
        },
    }


_ZZ_SPATIAL = {
    # D1 = rows: input channels C; D2 = columns: output channels K (see docs/hardware/zigzag.md
    # for why C-only equals our R*S*C fold count on these layers)
    "spatial_mapping": {"D1": [f"C, {ACC.pe_rows}"], "D2": [f"K, {ACC.pe_cols}"]},
    "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"},
}
# ZigZag requires a "default" entry; "Conv" (our layers' operator_type) silences its warning.
ZZ_MAPPING = [{"name": "default", **_ZZ_SPATIAL}, {"name": "Conv", **_ZZ_SPATIAL}]


def zigzag_layer(layer: ConvLayer) -> list[dict[str, Any]]:
    s = layer.stride
    return [
        {
            "id": 0,
            "name": layer.name,
            "operator_type": "Conv",
            "equation": "O[b][k][oy][ox]+=W[k][c][fy][fx]*I[b][c][iy][ix]",
            "dimension_relations": [f"ix={s}*ox+1*fx", f"iy={s}*oy+1*fy"],
            "loop_dims": ["B", "K", "C", "OY", "OX", "FY", "FX"],
            "loop_sizes": [
                layer.batch,
                layer.num_filters,
                layer.channels,
                layer.ofmap_h,
                layer.ofmap_w,
                layer.filter_h,
                layer.filter_w,
            ],
            # 32-bit partial sums, 8-bit final outputs: as ours
            "operand_precision": {
                "I": layer.input_bits,
                "W": layer.weight_bits,
                "O": tables.ACCUMULATOR_BITS,
                "O_final": layer.output_bits,
            },
            "operand_source": {"I": 0},  # the input comes from outside (DRAM)
        }
    ]


# --------------------------------------------------------------------------- running ZigZag


def dram_bits_by_operand(cme: CostModelEvaluation) -> dict[str, float]:
    """Bits moved at the DRAM level (all four directions) per layer operand (I, W, O)."""
    out: dict[str, float] = {}
    for op, levels in cme.memory_word_access.items():
        top = levels[-1]  # highest level = DRAM
        # accesses of DRAM_BW_BITS each, counted at MIN_BW_BITS (byte) granularity
        out[str(op)] = sum(top.get(d) for d in DataDirection) * DRAM_BW_BITS
    return out


def _dram_bits_total(cme: CostModelEvaluation) -> float:
    return sum(dram_bits_by_operand(cme).values())


def _energy_key(cme: CostModelEvaluation) -> tuple[float, float]:
    return (cme.energy_total, cme.latency_total2)


class KeepBestStage(Stage):
    """Reduces all (spatial x temporal) mappings ZigZag generates for a layer to two: the one of
    least energy (ZigZag's ``opt='energy'`` answer, ties to lower latency) and the one of least
    DRAM traffic (ties to lower energy), in one pass over the same search."""

    def run(self):
        sub = self.list_of_callables[0](self.list_of_callables[1:], **self.kwargs)
        best_e: CostModelEvaluation | None = None
        best_d: CostModelEvaluation | None = None
        best_d_bits = math.inf
        n = 0
        for cme, _extra in sub.run():
            n += 1
            if best_e is None or _energy_key(cme) < _energy_key(best_e):
                best_e = cme
            bits = _dram_bits_total(cme)
            if best_d is None or (bits, cme.energy_total) < (best_d_bits, best_d.energy_total):
                best_d, best_d_bits = cme, bits
        assert best_e is not None
        yield best_e, {"min_dram": best_d, "evaluated": n}


@dataclass
class ZZResult:
    min_energy: CostModelEvaluation
    min_dram: CostModelEvaluation
    evaluated: int
    seconds: float
    engine: str = "loma"


def best_of(*results: ZZResult) -> ZZResult:
    """ZigZag's answer over several searches: the least-energy mapping any of them returned
    (its own objective), the least-DRAM one any of them saw, their evaluations and time."""
    best = min(results, key=lambda r: _energy_key(r.min_energy))
    min_dram = min(
        (r.min_dram for r in results), key=lambda c: (_dram_bits_total(c), c.energy_total)
    )
    return ZZResult(
        best.min_energy,
        min_dram,
        sum(r.evaluated for r in results),
        sum(r.seconds for r in results),
        best.engine,
    )


def _zigzag_main(layer: ConvLayer, acc_path: str, map_path: str, temporal_stage, **kwargs):
    stages = [
        WorkloadParserStage,
        AcceleratorParserStage,
        WorkloadStage,
        KeepBestStage,
        SpatialMappingGeneratorStage,
        temporal_stage,
        CostModelStage,
    ]
    return MainStage(
        stages,
        accelerator=acc_path,
        workload=zigzag_layer(layer),
        mapping=map_path,
        nb_mappings_generated=1,
        enable_mix_spatial_mapping_generation=False,
        access_same_data_considered_as_no_access=True,  # the API's setting
        temporal_mapping_type=TemporalMappingType("uneven"),  # the API's default
        **kwargs,
    ).run()


def run_zigzag(layer: ConvLayer, acc_path: str, map_path: str, lpf: int) -> ZZResult:
    """ZigZag's LOMA search: every loop order of the layer's prime factors merged down to
    ``lpf`` factors (the API's default engine)."""
    t0 = time.perf_counter()
    answers = _zigzag_main(
        layer,
        acc_path,
        map_path,
        TemporalMappingGeneratorStage,
        loma_lpf_limit=lpf,
        loma_show_progress_bar=False,
    )
    seconds = time.perf_counter() - t0
    cme, (_layer, extra) = answers[0]
    return ZZResult(cme, extra["min_dram"], extra["evaluated"], seconds, "loma")


def run_salsa(
    layer: ConvLayer, acc_path: str, map_path: str, iterations: int, seeds: int
) -> ZZResult:
    """ZigZag's SALSA search (simulated annealing over orders of all prime factors, none
    merged; Jung et al., "SALSA", AICAS 2023), restarted from ``seeds`` seeds, best energy.

    Restarts run one after another: SALSA's own ``salsa_number_of_core`` forks workers that
    inherit the parent's random state, so they would all anneal the same path.
    """
    runs = []
    for seed in range(seeds):
        random.seed(seed)
        np.random.seed(seed)
        t0 = time.perf_counter()
        answers = _zigzag_main(
            layer,
            acc_path,
            map_path,
            SalsaStage,
            salsa_iteration_number=iterations,
            salsa_start_temperature=0.05,  # SALSA's default
            salsa_opt_criterion="energy",
            salsa_number_of_core=1,
        )
        cme = answers[0][0]
        runs.append(ZZResult(cme, cme, iterations, time.perf_counter() - t0, "salsa"))
    return best_of(*runs)


def zz_energy_by_level(cme: CostModelEvaluation) -> tuple[float, float, float, float]:
    """(MAC, RF, GLB, DRAM) pJ; every operand here has the levels [register, glb, dram]."""
    rf = glb = dram = 0.0
    for per_level in cme.mem_energy_breakdown.values():
        rf += per_level[0]
        glb += per_level[1]
        dram += per_level[2]
    return cme.mac_energy, rf, glb, dram


def zz_loops(cme: CostModelEvaluation, op: str) -> str:
    """Temporal loops of one operand per level, innermost first: 'rf: .. | glb: .. | dram: ..'."""
    names = ("rf", "glb", "dram")
    for key, levels in cme.temporal_mapping.mapping_dic_stationary.items():
        if str(key) == op:
            parts = []
            for name, loops in zip(names, levels):
                body = " ".join(f"{d}{int(n) if float(n).is_integer() else n}" for d, n in loops)
                parts.append(f"{name}: {body or '-'}")
            return " | ".join(parts)
    return "?"


def ours_as_zigzag_ordering(layer: ConvLayer, m: dict[str, Any]) -> list[list[Any]] | None:
    """Our chosen tiling as a complete ZigZag temporal ordering (innermost loop first).

    Inside the tile (GLB level): OX ft, OY et, C ct/32, FY, FX, K kt/32 (outputs innermost, so
    the weight stays in its register as in ZigZag's own mappings); above it (DRAM level) the
    K, C and OY > OX tile loops in our ``order``. None when ZigZag cannot express the tiling: a
    tile count that does not divide its dimension (ZigZag's loops are factors), kt or ct not a
    multiple of the 32-wide spatial unrolling, batch > 1 or groups.
    """
    big_k, big_c, e, f = layer.num_filters, layer.channels, layer.ofmap_h, layer.ofmap_w
    kt, ct, et, ft = m["kt"], m["ct"], m["et"], m["ft"]
    if (
        layer.batch != 1
        or layer.groups != 1
        or big_k % kt
        or big_c % ct
        or e % et
        or f % ft
        or kt % ACC.pe_cols
        or ct % ACC.pe_rows
    ):
        return None
    tile = [
        ("OX", ft),
        ("OY", et),
        ("C", ct // ACC.pe_rows),
        ("FY", layer.filter_h),
        ("FX", layer.filter_w),
        ("K", kt // ACC.pe_cols),
    ]
    counts = {"K": big_k // kt, "C": big_c // ct, "OY": e // et, "OX": f // ft}
    outer_first = [d for x in m["order"] for d in {"K": ["K"], "C": ["C"], "S": ["OY", "OX"]}[x]]
    above = [(d, counts[d]) for d in reversed(outer_first)]
    return [[d, int(n)] for d, n in tile + above if n > 1]


def run_zigzag_fixed(
    layer: ConvLayer, acc_path: str, tmp: str, ordering: list[list[Any]]
) -> CostModelEvaluation:
    """ZigZag's cost of one given temporal ordering (its allocator still decides, per operand,
    which loops sit in the GLB and which at DRAM)."""
    map_path = os.path.join(tmp, f"fixed_{layer.name}.yaml")
    with open(map_path, "w") as f:
        entry = {"name": layer.name, **_ZZ_SPATIAL, "temporal_ordering": ordering}
        yaml.safe_dump([*ZZ_MAPPING, entry], f, sort_keys=False)
    return run_zigzag(layer, acc_path, map_path, lpf=2).min_energy


# --------------------------------------------------------------------------- our model


def run_ours(model, layer: ConvLayer, repeat: int) -> tuple[LayerCost, float]:
    cost = model.evaluate_layer(layer)
    t0 = time.perf_counter()
    for _ in range(repeat):
        model.evaluate_layer(layer)
    return cost, (time.perf_counter() - t0) / repeat


# --------------------------------------------------------------------------- report


def _ratio_ok(r: float, limit: float) -> str:
    return "ok" if 1.0 / limit <= r <= limit else "OUT"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lpf", type=int, default=7, help="ZigZag LOMA lpf_limit (default 7)")
    ap.add_argument(
        "--engine",
        choices=("both", "loma", "salsa"),
        default="both",
        help="ZigZag search: LOMA, SALSA, or both with the better answer per layer (default)",
    )
    ap.add_argument(
        "--salsa-iters", type=int, default=2000, help="SALSA iterations per restart (2000)"
    )
    ap.add_argument("--salsa-seeds", type=int, default=3, help="SALSA restarts (default 3)")
    ap.add_argument("--layers", default="", help="comma-separated subset of layer names")
    ap.add_argument("--repeat", type=int, default=200, help="timing repeats for our model")
    ap.add_argument(
        "--regs",
        default="8,8,32",
        help="ZigZag per-PE register bits W,I,O (default 8,8,32 mirrors ours)",
    )
    args = ap.parse_args(argv)
    regs = tuple(int(x) for x in args.regs.split(","))
    if len(regs) != 3 or min(regs) <= 0:
        ap.error(f"--regs needs three positive bit counts W,I,O, got {args.regs!r}")

    logging.getLogger("zigzag").setLevel(logging.WARNING)
    layers = [ly for ly in LAYERS if not args.layers or ly.name in args.layers.split(",")]
    if not layers:
        ap.error(f"no layer matches {args.layers!r}")

    import importlib.metadata as md

    print(
        f"zigzag-dse {md.version('zigzag-dse')}, numpy {md.version('numpy')}, "
        f"python {sys.version.split()[0]}, engine {args.engine} (LOMA lpf_limit {args.lpf}; "
        f"SALSA {args.salsa_iters} iterations x {args.salsa_seeds} restarts)"
    )
    print(
        f"energies (ours, used by both): MAC {E_MAC_PJ:.3f} pJ, RF {E_RF_PJ_BIT:.5f} pJ/bit, "
        f"GLB {E_GLB_PJ_BIT:.4f} pJ/bit, DRAM {E_DRAM_PJ_BIT:.1f} pJ/bit; DRAM "
        f"{DRAM_BW_BITS // 8} B/cycle; ZigZag registers W/I/O {regs[0]}/{regs[1]}/{regs[2]} bit"
    )

    model = make_model(ACC)
    rows = []
    fixed: dict[str, CostModelEvaluation] = {}  # ZigZag's cost of our tiling, where expressible
    per_engine: dict[str, list[ZZResult]] = {}
    with tempfile.TemporaryDirectory(prefix="zigzag_compare_") as tmp:
        acc_path = os.path.join(tmp, "accelerator.yaml")
        map_path = os.path.join(tmp, "mapping.yaml")
        with open(acc_path, "w") as f:
            # sort_keys=False: ZigZag reads the memories lowest level first, in file order
            yaml.safe_dump(zigzag_accelerator(regs), f, sort_keys=False)
        with open(map_path, "w") as f:
            yaml.safe_dump(ZZ_MAPPING, f, sort_keys=False)
        for layer in layers:
            searches = []
            if args.engine in ("both", "loma"):
                searches.append(run_zigzag(layer, acc_path, map_path, args.lpf))
            if args.engine in ("both", "salsa"):
                searches.append(
                    run_salsa(layer, acc_path, map_path, args.salsa_iters, args.salsa_seeds)
                )
            zz = best_of(*searches)
            ours, ours_s = run_ours(model, layer, args.repeat)
            ordering = ours_as_zigzag_ordering(layer, ours.mapping)
            if ordering is not None:
                fixed[layer.name] = run_zigzag_fixed(layer, acc_path, tmp, ordering)
            rows.append((layer, zz, ours, ours_s))
            per_engine[layer.name] = searches
            print(
                f"  {layer.name}: zigzag "
                + ", ".join(
                    f"{r.engine} {r.seconds:.2f} s ({r.evaluated} mappings, "
                    f"{r.min_energy.energy_total / 1e6:.2f} uJ, "
                    f"{_dram_bits_total(r.min_energy) / 8:.0f} B)"
                    for r in searches
                )
                + f"; ours {ours_s * 1e6:.0f} us",
                flush=True,
            )

    print()
    print(
        "Per layer (ratio = ours / ZigZag; ZigZag = the least-energy mapping its searches "
        "returned, 'by' names the engine; DRAM goal 1/1.25..1.25, energy goal 1/1.5..1.5)"
    )
    hdr = (
        f"{'layer':9} {'MMACs':>7} {'compulsory':>10} {'DRAM ZZ':>10} {'DRAM ours':>10} "
        f"{'ratio':>6} {'':3} {'E ZZ uJ':>8} {'E ours uJ':>9} {'ratio':>6} {'':3} "
        f"{'cyc ZZ':>9} {'cyc ours':>9} {'t ZZ s':>7} {'t ours us':>9} {'speedup':>8} "
        f"{'by':>5}"
    )
    print(hdr)
    print("-" * len(hdr))
    tot = dict(mac=0, comp=0.0, dz=0.0, do=0.0, ez=0.0, eo=0.0, cz=0, co=0, tz=0.0, to=0.0)
    for layer, zz, ours, ours_s in rows:
        cme = zz.min_energy
        dz = _dram_bits_total(cme) / 8
        do = ours.dram_read_bytes + ours.dram_write_bytes
        comp = ours.mapping["dram_compulsory_bytes"]
        # ZigZag prices accesses only: ours without leakage and register clocking
        ez = cme.energy_total
        eo = ours.energy_pj - ours.leakage_energy_pj - ours.clock_energy_pj
        cz, co = cme.latency_total2, ours.total_cycles
        print(
            f"{layer.name:9} {layer.macs / 1e6:7.1f} {comp:10.0f} {dz:10.0f} {do:10.0f} "
            f"{do / dz:6.3f} {_ratio_ok(do / dz, 1.25):3} {ez / 1e6:8.2f} {eo / 1e6:9.2f} "
            f"{eo / ez:6.3f} {_ratio_ok(eo / ez, 1.5):3} {cz:9.0f} {co:9d} {zz.seconds:7.2f} "
            f"{ours_s * 1e6:9.1f} {zz.seconds / ours_s:8.0f} {zz.engine:>5}"
        )
        for k, v in (
            ("mac", layer.macs),
            ("comp", comp),
            ("dz", dz),
            ("do", do),
            ("ez", ez),
            ("eo", eo),
            ("cz", cz),
            ("co", co),
            ("tz", zz.seconds),
            ("to", ours_s),
        ):
            tot[k] += v
    print("-" * len(hdr))
    print(
        f"{'total':9} {tot['mac'] / 1e6:7.1f} {tot['comp']:10.0f} {tot['dz']:10.0f} "
        f"{tot['do']:10.0f} {tot['do'] / tot['dz']:6.3f} {'':3} {tot['ez'] / 1e6:8.2f} "
        f"{tot['eo'] / 1e6:9.2f} {tot['eo'] / tot['ez']:6.3f} {'':3} {tot['cz']:9.0f} "
        f"{tot['co']:9d} {tot['tz']:7.2f} {tot['to'] * 1e6:9.1f} {tot['tz'] / tot['to']:8.0f}"
    )
    print()
    print("Speed by ZigZag engine, all layers (one core; ours timed warm on the same layers)")
    for engine in ("loma", "salsa"):
        runs = [r for rs in per_engine.values() for r in rs if r.engine == engine]
        if runs:
            secs = sum(r.seconds for r in runs)
            print(
                f"  {engine:5} {secs:8.2f} s for {sum(r.evaluated for r in runs)} mappings: "
                f"{secs / tot['to']:,.0f}x our {tot['to'] * 1e6:.0f} us"
            )

    print()
    print(
        "DRAM bytes by operand (I / W / O). 'ZZ minD' = the least-DRAM mapping ZigZag's "
        "searches evaluated."
    )
    hdr2 = (
        f"{'layer':9} {'I ZZ':>9} {'I ours':>9} {'W ZZ':>9} {'W ours':>9} {'O ZZ':>9} "
        f"{'O ours':>9} {'ZZ minD':>9} {'ours/minD':>9}"
    )
    print(hdr2)
    print("-" * len(hdr2))
    for layer, zz, ours, _ in rows:
        b = {k: v / 8 for k, v in dram_bits_by_operand(zz.min_energy).items()}
        dmin = _dram_bits_total(zz.min_dram) / 8
        m = ours.mapping
        do = ours.dram_read_bytes + ours.dram_write_bytes
        print(
            f"{layer.name:9} {b['I']:9.0f} {m['dram_input_bytes']:9.0f} {b['W']:9.0f} "
            f"{m['dram_weight_bytes']:9.0f} {b['O']:9.0f} {m['dram_output_bytes']:9.0f} "
            f"{dmin:9.0f} {do / dmin:9.3f}"
        )

    print()
    print(
        "Our tiling priced by ZigZag (the same loop nest given to ZigZag as a fixed temporal "
        "ordering; '-' where ZigZag cannot express it)"
    )
    hdr4 = (
        f"{'layer':9} {'ours':>9} {'ZZ(ours)':>9} {'ratio':>6} {'I ZZ(ours)':>10} "
        f"{'W ZZ(ours)':>10} {'O ZZ(ours)':>10}"
    )
    print(hdr4)
    print("-" * len(hdr4))
    for layer, _zz, ours, _ in rows:
        do = ours.dram_read_bytes + ours.dram_write_bytes
        cme = fixed.get(layer.name)
        if cme is None:
            print(f"{layer.name:9} {do:9.0f} {'-':>9}")
            continue
        b = {k: v / 8 for k, v in dram_bits_by_operand(cme).items()}
        dz = _dram_bits_total(cme) / 8
        print(
            f"{layer.name:9} {do:9.0f} {dz:9.0f} {do / dz:6.3f} {b['I']:10.0f} {b['W']:10.0f} "
            f"{b['O']:10.0f}"
        )
    for name, cme in fixed.items():
        print(f"  {name} in ZigZag: " + "; ".join(f"{op} {zz_loops(cme, op)}" for op in "IWO"))

    print()
    print("Energy by part, uJ: MAC / RF / GLB / DRAM")
    hdr3 = f"{'layer':9} {'ZigZag':>31}   {'ours':>31}"
    print(hdr3)
    print("-" * 75)
    for layer, zz, ours, _ in rows:
        zparts = zz_energy_by_level(zz.min_energy)
        oparts = (ours.mac_energy_pj, ours.rf_energy_pj, ours.glb_energy_pj, ours.dram_energy_pj)
        zs = " ".join(f"{p / 1e6:7.2f}" for p in zparts)
        os_ = " ".join(f"{p / 1e6:7.2f}" for p in oparts)
        print(f"{layer.name:9} {zs}   {os_}")

    print()
    print(
        "Mappings. ZigZag (least energy): temporal loops per operand and level, innermost "
        "first (spatial C32 x K32 not shown); ours: LayerCost.mapping"
    )
    for layer, zz, ours, _ in rows:
        m = ours.mapping
        print(
            f"{layer.name}: ours {m['order']} kt={m['kt']} ct={m['ct']} et={m['et']} "
            f"ft={m['ft']} (tiles K{m['k_tiles']} C{m['c_tiles']} E{m['row_tiles']} "
            f"F{m['col_tiles']}, glb {m['glb_bytes_used']:.0f} B, psum spill "
            f"{m['dram_psum_bytes']:.0f} B); ZigZag latency parts: ideal "
            f"{zz.min_energy.ideal_temporal_cycle:.0f} + stall "
            f"{zz.min_energy.stall_slack_comb:.0f} + onload "
            f"{zz.min_energy.data_onloading_cycle:.0f} + offload "
            f"{zz.min_energy.data_offloading_cycle:.0f}"
        )
        for op in ("I", "W", "O"):
            print(f"    {op}: {zz_loops(zz.min_energy, op)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
