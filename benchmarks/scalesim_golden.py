#!/usr/bin/env python3
"""Run the real SCALE-Sim 3.0.0 on a golden set of layers and write its cycle counts to JSON.

This script does NOT import codesign/evaluators: it runs under a separate virtualenv that holds
only SCALE-Sim, so the golden numbers cannot be influenced by our model. The test
``tests/test_scalesim_golden.py`` compares ``evaluators.hardware.evaluate_layer`` against the
JSON it writes.

Setup (once; scalesim 3.0.0 fails with numpy >= 2.4)::

    python3 -m venv /tmp/scalesim-venv
    /tmp/scalesim-venv/bin/pip install scalesim==3.0.0 "numpy<2.4"

Run (from the repository root; about 3 minutes on 2 cores)::

    /tmp/scalesim-venv/bin/python benchmarks/scalesim_golden.py            # all cases
    /tmp/scalesim-venv/bin/python benchmarks/scalesim_golden.py --jobs 4   # more workers

How SCALE-Sim is run: one topology CSV with one layer, one config per (array, dataflow), the
bandwidth mode ``InterfaceBandwidth = CALC`` (SCALE-Sim's "estimate bandwidth" mode: its read
buffers always hit, so the array never stalls on memory), no sparsity, no custom layouts,
one-byte words (hard-coded in SCALE-Sim). The stall-free compute cycles are the ``Total
Cycles`` column of its ``COMPUTE_REPORT.csv`` (the one printed as "Compute cycles" in its
verbose output; ``Total Cycles (incl. prefetch)`` adds the DRAM prefetch before the first
compute). The script checks that ``Stall Cycles`` is 0 for every case.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "tests", "data", "scalesim_golden.json")

# SCALE-Sim's topology columns (its own header spelling), in order.
TOPO_COLUMNS = (
    "Layer name",
    "IFMAP Height",
    "IFMAP Width",
    "Filter Height",
    "Filter Width",
    "Channels",
    "Num Filter",
    "Strides",
)

# name: (ifmap h, ifmap w, filter h, filter w, channels, num filters, stride), description.
# Only depthwise layers may have "DP" in their name (SCALE-Sim splits those per channel).
LAYERS: dict[str, tuple[tuple[int, ...], str]] = {
    # Tiny layers, run on the small and rectangular arrays (SCALE-Sim is slow on big folds).
    "tiny_conv3x3": ((10, 10, 3, 3, 8, 12, 1), "3x3 conv, K=12 not a multiple of 8/32"),
    "tiny_s2_ceil": (
        (10, 10, 3, 3, 8, 8, 2),
        "stride 2 with (H-R) odd: SCALE-Sim ofmap 5x5, floor rule 4x4",
    ),
    "tiny_pw": ((7, 7, 1, 1, 24, 20, 1), "1x1 pointwise, 49 pixels"),
    "tiny_fc": ((1, 1, 1, 1, 40, 10, 1), "fully connected 40 -> 10 (1x1 ifmap)"),
    "tiny_first7x7": ((19, 19, 7, 7, 3, 8, 2), "first-conv style 7x7 s2 on 3 channels"),
    # Real and shrunk network layers, on 8x32 .. 128x128 arrays.
    "r18_conv2": ((58, 58, 3, 3, 64, 64, 1), "ResNet-18 conv2_x (56x56 padded to 58)"),
    "r18_conv2_small": ((16, 16, 3, 3, 64, 64, 1), "ResNet-18 conv2_x shrunk to 16x16"),
    "r18_conv3_s2": ((57, 57, 3, 3, 64, 128, 2), "ResNet-18 conv3_1 3x3 s2 (57: (H-R) even)"),
    "r18_conv3_s2_pad58": (
        (58, 58, 3, 3, 64, 128, 2),
        "ResNet-18 conv3_1 3x3 s2 as padded 58x58: SCALE-Sim ofmap 29x29, PyTorch 28x28",
    ),
    "r18_down1x1_s2": (
        (56, 56, 1, 1, 64, 128, 2),
        "ResNet-18 downsample 1x1 s2: SCALE-Sim ofmap 29x29, PyTorch 28x28",
    ),
    "r18_fc": ((1, 1, 1, 1, 512, 1000, 1), "ResNet-18 fc 512 -> 1000"),
    "r18_conv1": ((229, 229, 7, 7, 3, 64, 2), "ResNet-18 conv1 7x7 s2 (229: ofmap 112x112)"),
    "r18_conv1_small": ((63, 63, 7, 7, 3, 64, 2), "ResNet-18 conv1 shrunk to 63x63 -> 29x29"),
    "mbv2_pw_expand": ((28, 28, 1, 1, 32, 192, 1), "MobileNetV2 1x1 expansion 32 -> 192"),
    "odd_3x5": ((23, 19, 3, 5, 37, 45, 1), "non-square input and filter, odd sizes"),
    "alexnet_conv1_small": ((35, 35, 11, 11, 3, 24, 4), "AlexNet conv1 11x11 s4 shrunk"),
    # Depthwise: SCALE-Sim runs a layer whose name contains "DP" as `Channels` separate layers
    # with one channel each (and `Num Filter` filters each); its report has one row per channel.
    "mbv2_DP3x3_s1": ((18, 18, 3, 3, 16, 1, 1), "depthwise 3x3 s1, 16 channels (16x16 out)"),
    "mbv2_DP3x3_s2": ((17, 17, 3, 3, 24, 1, 2), "depthwise 3x3 s2, 24 channels (8x8 out)"),
}

DATAFLOWS = ("ws", "os", "is")

# (layers, arrays, dataflows): the golden set is the union of these products.
GROUPS: list[tuple[tuple[str, ...], tuple[tuple[int, int], ...], tuple[str, ...]]] = [
    (
        ("tiny_conv3x3", "tiny_s2_ceil", "tiny_pw", "tiny_fc", "tiny_first7x7"),
        ((4, 4), (8, 8), (8, 32), (32, 8)),
        DATAFLOWS,
    ),
    (("r18_conv2",), ((32, 32), (128, 128)), DATAFLOWS),
    (("r18_conv2_small",), ((16, 16), (8, 32), (32, 8)), DATAFLOWS),
    (("r18_conv3_s2",), ((32, 32), (128, 128)), DATAFLOWS),
    (("r18_conv3_s2_pad58",), ((32, 32),), ("ws", "os")),
    (("r18_down1x1_s2",), ((32, 32),), ("ws",)),
    (("r18_fc", "mbv2_pw_expand"), ((32, 32), (128, 128)), DATAFLOWS),
    (("r18_conv1",), ((128, 128),), ("ws", "os")),
    (("r18_conv1_small", "alexnet_conv1_small"), ((16, 16), (32, 32)), DATAFLOWS),
    (("odd_3x5",), ((16, 16), (32, 32), (8, 32)), DATAFLOWS),
    (("mbv2_DP3x3_s1", "mbv2_DP3x3_s2"), ((8, 8), (32, 32)), DATAFLOWS),
]

# SRAM sizes (kB) per operand. In CALC mode the read buffers never miss, so these do not change
# the compute cycles; the ofmap buffer is kept large so that output writes never stall either.
SRAM_KB = {"ifmap": 1024, "filter": 1024, "ofmap": 1024}

CONFIG_TEMPLATE = """\
[general]
run_name = {run_name}

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
IfmapSramSzkB = {ifmap}
FilterSramSzkB = {filter}
OfmapSramSzkB = {ofmap}
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Dataflow = {dataflow}
Bandwidth = 10
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
IfmapSRAMBankBandwidth = 10
IfmapSRAMBankNum = 10
IfmapSRAMBankPort = 2
FilterCustomLayout = False
FilterSRAMBankBandwidth = 10
FilterSRAMBankNum = 10
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
SparseRep = ellpack_block
OptimizedMapping = false
BlockSize = 8
RandomNumberGeneratorSeed = 40

[run_presets]
InterfaceBandwidth = CALC
UseRamulatorTrace = False
"""


def topology_row(name: str) -> dict[str, int | str]:
    """The layer as SCALE-Sim's topology CSV row (header name -> value)."""
    values, _ = LAYERS[name]
    return dict(zip(TOPO_COLUMNS, (name, *values)))


def topology_csv(name: str) -> str:
    values, _ = LAYERS[name]
    # SCALE-Sim drops the last comma-separated field of every row: keep the trailing comma.
    return ", ".join(TOPO_COLUMNS) + ",\n" + ", ".join(map(str, (name, *values))) + ",\n"


def all_cases() -> list[dict]:
    cases, seen = [], set()
    for layers, arrays, dataflows in GROUPS:
        for name in layers:
            for rows, cols in arrays:
                for df in dataflows:
                    cid = f"{name}/{rows}x{cols}/{df}"
                    if cid in seen:
                        raise ValueError(f"duplicate case {cid}")
                    seen.add(cid)
                    cases.append(
                        {"id": cid, "layer": name, "rows": rows, "cols": cols, "dataflow": df}
                    )
    return cases


def run_case(case: dict) -> dict:
    """Run SCALE-Sim on one case in a scratch directory; returns the case with its results."""
    from scalesim.scale_sim import scalesim  # imported in the worker process

    with tempfile.TemporaryDirectory(prefix="scalesim_golden_") as tmp:
        cfg = os.path.join(tmp, "scale.cfg")
        topo = os.path.join(tmp, "topology.csv")
        layout = os.path.join(tmp, "layout.csv")  # required; unused without custom layouts
        with open(cfg, "w") as f:
            f.write(
                CONFIG_TEMPLATE.format(
                    run_name="golden",
                    rows=case["rows"],
                    cols=case["cols"],
                    dataflow=case["dataflow"],
                    **SRAM_KB,
                )
            )
        with open(topo, "w") as f:
            f.write(topology_csv(case["layer"]))
        with open(layout, "w") as f:
            f.write("Layer name,\n")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            sim = scalesim(
                save_disk_space=True,
                verbose=False,
                config=cfg,
                topology=topo,
                layout=layout,
                input_type_gemm=False,
            )
            sim.run_scale(top_path=os.path.join(tmp, "out"))
        seconds = time.perf_counter() - t0
        ofmap = [int(v) for v in sim.topo.get_layer_ofmap_dims(0)]
        report = os.path.join(tmp, "out", "golden", "COMPUTE_REPORT.csv")
        with open(report, newline="") as f:
            rows = [[c.strip() for c in r] for r in csv.reader(f)]
    header = rows[0]
    layers = [dict(zip(header, r)) for r in rows[1:] if any(r)]
    first = layers[0]
    out = dict(case)
    out["layer"] = topology_row(case["layer"])
    out.update(
        compute_cycles=sum(int(g["Total Cycles"]) for g in layers),
        total_cycles_incl_prefetch=sum(int(g["Total Cycles (incl. prefetch)"]) for g in layers),
        stall_cycles=sum(int(g["Stall Cycles"]) for g in layers),
        overall_util_pct=round(float(first["Overall Util %"]), 6),
        mapping_efficiency_pct=round(float(first["Mapping Efficiency %"]), 6),
        compute_util_pct=round(float(first["Compute Util %"]), 6),
        scalesim_ofmap_hw=ofmap,
    )
    if len(layers) > 1:  # a depthwise ("DP") layer: one report row per channel
        per_layer = {int(g["Total Cycles"]) for g in layers}
        if len(per_layer) != 1:
            raise RuntimeError(f"{case['id']}: per-channel cycles differ: {sorted(per_layer)}")
        out["scalesim_layers"] = len(layers)
        out["compute_cycles_per_layer"] = per_layer.pop()
    out["_seconds"] = seconds
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="JSON to write (default: %(default)s)")
    ap.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: all cores)",
    )
    ap.add_argument("--only", default="", help="run only case ids containing this text")
    args = ap.parse_args(argv)

    try:
        import scalesim  # noqa: F401
    except ImportError:
        print(
            "scalesim is not importable: run this with the SCALE-Sim venv's python",
            file=sys.stderr,
        )
        return 2
    if "evaluators" in sys.modules:  # pragma: no cover - defensive
        print("refusing to run with our package imported", file=sys.stderr)
        return 2

    cases = [c for c in all_cases() if args.only in c["id"]]
    print(f"{len(cases)} cases, {args.jobs} workers", flush=True)
    t0 = time.perf_counter()
    results = []
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.jobs) as pool:
        for i, r in enumerate(pool.imap_unordered(run_case, cases), 1):
            results.append(r)
            print(
                f"[{i:3d}/{len(cases)}] {r['id']:<34} {r['compute_cycles']:>9,} cycles "
                f"({r['_seconds']:.1f} s)",
                flush=True,
            )
    wall = time.perf_counter() - t0
    order = {c["id"]: i for i, c in enumerate(cases)}
    results.sort(key=lambda r: order[r["id"]])
    stalled = [r["id"] for r in results if r["stall_cycles"] != 0]
    if stalled:
        print(f"ERROR: stalls in CALC mode for {stalled}", file=sys.stderr)
        return 1
    cpu = sum(r.pop("_seconds") for r in results)

    doc = {
        "generator": "benchmarks/scalesim_golden.py",
        "scalesim_version": metadata.version("scalesim"),
        "numpy_version": metadata.version("numpy"),
        "python_version": platform.python_version(),
        "settings": {
            "InterfaceBandwidth": "CALC",
            "sram_kb": SRAM_KB,
            "word_bytes": 1,
            "compute_cycles": "COMPUTE_REPORT.csv 'Total Cycles' (stall-free: Stall Cycles = 0)",
            "utilization": "COMPUTE_REPORT.csv 'Overall Util %', 'Mapping Efficiency %', "
            "'Compute Util %'",
            "scalesim_ofmap_hw": "SCALE-Sim's own ofmap size, ceil((H - R + s) / s)",
            "depthwise": "'DP' layers run as scalesim_layers one-channel layers; compute_cycles "
            "and total_cycles_incl_prefetch are their sums, utilizations are "
            "per channel layer (all equal)",
        },
        "layer_notes": {name: note for name, (_, note) in LAYERS.items()},
        "cases": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("{\n")
        items = list(doc.items())
        for k, (key, value) in enumerate(items):
            sep = "," if k < len(items) - 1 else ""
            if key == "cases":
                f.write(' "cases": [\n')
                for j, case in enumerate(value):
                    f.write("  " + json.dumps(case) + ("," if j < len(value) - 1 else "") + "\n")
                f.write(" ]" + sep + "\n")
            else:
                f.write(f" {json.dumps(key)}: {json.dumps(value)}{sep}\n")
        f.write("}\n")
    print(
        f"wrote {len(results)} cases to {args.out} in {wall:.0f} s wall "
        f"({cpu:.0f} s of SCALE-Sim time)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
