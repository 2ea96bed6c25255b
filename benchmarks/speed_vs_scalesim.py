#!/usr/bin/env python3
"""Speed of our systolic model (``evaluators.hardware``) against SCALE-Sim 3.0.0, in one run.

Both run in this process: SCALE-Sim's Python API and our ``evaluate_layer`` on the same
SCALE-Sim topology rows, on a 32x32 weight-stationary array. ``evaluators.hardware`` needs only
numpy and pyyaml (no torch), so this runs under the SCALE-Sim virtualenv::

    python3 -m venv /tmp/scalesim-venv
    /tmp/scalesim-venv/bin/pip install scalesim==3.0.0 "numpy<2.4" pyyaml
    /tmp/scalesim-venv/bin/python benchmarks/speed_vs_scalesim.py                 # ~2 minutes
    /tmp/scalesim-venv/bin/python benchmarks/speed_vs_scalesim.py --scalesim-network  # + ~5 min

SCALE-Sim is timed once per layer (its fastest setting: ``InterfaceBandwidth = CALC``, no
trace files, not verbose; import time excluded). Ours is the median of many calls of the public
``evaluate_layer(layer, acc)`` (which also builds and validates the model each call), and of
``evaluate_network`` for whole networks. Layer sizes are chosen so that both tools agree on
the output size (SCALE-Sim uses ceil((H - R + s) / s), see docs/hardware/validation.md).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import io
import os
import platform
import statistics
import sys
import tempfile
import time
import timeit
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from evaluators.hardware import evaluate_layer, make_model  # noqa: E402
from evaluators.hardware.io import scalesim_layer  # noqa: E402
from evaluators.specs import AcceleratorSpec, ConvLayer  # noqa: E402

# SCALE-Sim topology rows: name, ifmap h, ifmap w, filter h, filter w, channels, num filters,
# stride. Inputs include the padding. A name containing "DP" is a depthwise layer (SCALE-Sim's
# convention: `channels` one-channel layers with `num filters` filters each).

# ResNet-18 on 224x224 (20 convs + fc). Stride-2 3x3 convs use 57/29/15 (not 58/30/16) and the
# 1x1 s2 downsamples 55/27/13, so SCALE-Sim's ceil rule gives PyTorch's 28/14/7 outputs.
RESNET18 = [
    ("conv1", 229, 229, 7, 7, 3, 64, 2),
    ("layer1.0.conv1", 58, 58, 3, 3, 64, 64, 1),
    ("layer1.0.conv2", 58, 58, 3, 3, 64, 64, 1),
    ("layer1.1.conv1", 58, 58, 3, 3, 64, 64, 1),
    ("layer1.1.conv2", 58, 58, 3, 3, 64, 64, 1),
    ("layer2.0.conv1", 57, 57, 3, 3, 64, 128, 2),
    ("layer2.0.conv2", 30, 30, 3, 3, 128, 128, 1),
    ("layer2.0.down", 55, 55, 1, 1, 64, 128, 2),
    ("layer2.1.conv1", 30, 30, 3, 3, 128, 128, 1),
    ("layer2.1.conv2", 30, 30, 3, 3, 128, 128, 1),
    ("layer3.0.conv1", 29, 29, 3, 3, 128, 256, 2),
    ("layer3.0.conv2", 16, 16, 3, 3, 256, 256, 1),
    ("layer3.0.down", 27, 27, 1, 1, 128, 256, 2),
    ("layer3.1.conv1", 16, 16, 3, 3, 256, 256, 1),
    ("layer3.1.conv2", 16, 16, 3, 3, 256, 256, 1),
    ("layer4.0.conv1", 15, 15, 3, 3, 256, 512, 2),
    ("layer4.0.conv2", 9, 9, 3, 3, 512, 512, 1),
    ("layer4.0.down", 13, 13, 1, 1, 256, 512, 2),
    ("layer4.1.conv1", 9, 9, 3, 3, 512, 512, 1),
    ("layer4.1.conv2", 9, 9, 3, 3, 512, 512, 1),
    ("fc", 1, 1, 1, 1, 512, 1000, 1),
]

# MobileNetV2 (width 1.0) on 224x224: 17 inverted-residual blocks (expand 1x1, depthwise 3x3,
# project 1x1), first conv, last 1x1 conv, fc. Stride-2 depthwise inputs are H+1 (ceil rule).
MOBILENETV2 = [
    ("mbv2_conv1", 225, 225, 3, 3, 3, 32, 2),
    ("b1_DP3x3", 114, 114, 3, 3, 32, 1, 1),
    ("b1_project", 112, 112, 1, 1, 32, 16, 1),
    ("b2_expand", 112, 112, 1, 1, 16, 96, 1),
    ("b2_DP3x3", 113, 113, 3, 3, 96, 1, 2),
    ("b2_project", 56, 56, 1, 1, 96, 24, 1),
    ("b3_expand", 56, 56, 1, 1, 24, 144, 1),
    ("b3_DP3x3", 58, 58, 3, 3, 144, 1, 1),
    ("b3_project", 56, 56, 1, 1, 144, 24, 1),
    ("b4_expand", 56, 56, 1, 1, 24, 144, 1),
    ("b4_DP3x3", 57, 57, 3, 3, 144, 1, 2),
    ("b4_project", 28, 28, 1, 1, 144, 32, 1),
    ("b5_expand", 28, 28, 1, 1, 32, 192, 1),
    ("b5_DP3x3", 30, 30, 3, 3, 192, 1, 1),
    ("b5_project", 28, 28, 1, 1, 192, 32, 1),
    ("b6_expand", 28, 28, 1, 1, 32, 192, 1),
    ("b6_DP3x3", 30, 30, 3, 3, 192, 1, 1),
    ("b6_project", 28, 28, 1, 1, 192, 32, 1),
    ("b7_expand", 28, 28, 1, 1, 32, 192, 1),
    ("b7_DP3x3", 29, 29, 3, 3, 192, 1, 2),
    ("b7_project", 14, 14, 1, 1, 192, 64, 1),
    ("b8_expand", 14, 14, 1, 1, 64, 384, 1),
    ("b8_DP3x3", 16, 16, 3, 3, 384, 1, 1),
    ("b8_project", 14, 14, 1, 1, 384, 64, 1),
    ("b9_expand", 14, 14, 1, 1, 64, 384, 1),
    ("b9_DP3x3", 16, 16, 3, 3, 384, 1, 1),
    ("b9_project", 14, 14, 1, 1, 384, 64, 1),
    ("b10_expand", 14, 14, 1, 1, 64, 384, 1),
    ("b10_DP3x3", 16, 16, 3, 3, 384, 1, 1),
    ("b10_project", 14, 14, 1, 1, 384, 64, 1),
    ("b11_expand", 14, 14, 1, 1, 64, 384, 1),
    ("b11_DP3x3", 16, 16, 3, 3, 384, 1, 1),
    ("b11_project", 14, 14, 1, 1, 384, 96, 1),
    ("b12_expand", 14, 14, 1, 1, 96, 576, 1),
    ("b12_DP3x3", 16, 16, 3, 3, 576, 1, 1),
    ("b12_project", 14, 14, 1, 1, 576, 96, 1),
    ("b13_expand", 14, 14, 1, 1, 96, 576, 1),
    ("b13_DP3x3", 16, 16, 3, 3, 576, 1, 1),
    ("b13_project", 14, 14, 1, 1, 576, 96, 1),
    ("b14_expand", 14, 14, 1, 1, 96, 576, 1),
    ("b14_DP3x3", 15, 15, 3, 3, 576, 1, 2),
    ("b14_project", 7, 7, 1, 1, 576, 160, 1),
    ("b15_expand", 7, 7, 1, 1, 160, 960, 1),
    ("b15_DP3x3", 9, 9, 3, 3, 960, 1, 1),
    ("b15_project", 7, 7, 1, 1, 960, 160, 1),
    ("b16_expand", 7, 7, 1, 1, 160, 960, 1),
    ("b16_DP3x3", 9, 9, 3, 3, 960, 1, 1),
    ("b16_project", 7, 7, 1, 1, 960, 160, 1),
    ("b17_expand", 7, 7, 1, 1, 160, 960, 1),
    ("b17_DP3x3", 9, 9, 3, 3, 960, 1, 1),
    ("b17_project", 7, 7, 1, 1, 960, 320, 1),
    ("mbv2_conv_last", 7, 7, 1, 1, 320, 1280, 1),
    ("mbv2_fc", 1, 1, 1, 1, 1280, 1000, 1),
]

# The ResNet-18 layers timed against SCALE-Sim (one of each distinct shape but conv1 and
# layer4's 3x3s, which take SCALE-Sim about 15-40 s each; --all-layers adds them).
TIMED = [
    "layer1.0.conv1",
    "layer2.0.conv1",
    "layer2.0.conv2",
    "layer2.0.down",
    "layer3.0.conv2",
    "fc",
]

ROWS, COLS = 32, 32
ACC = AcceleratorSpec(
    template="systolic", dataflow="ws", pe_rows=ROWS, pe_cols=COLS, glb_kib=64.0, rf_bytes=8
)

CONFIG = """\
[general]
run_name = speed
[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
IfmapSramSzkB = 64
FilterSramSzkB = 64
OfmapSramSzkB = 64
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Dataflow = ws
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

HEADER = (
    "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
    "Num Filter, Strides,\n"
)


def to_layer(row: tuple) -> ConvLayer:
    """A SCALE-Sim topology row as our ConvLayer; a DP row becomes a depthwise grouped conv."""
    return scalesim_layer(*row)


def run_scalesim(rows: list[tuple]) -> tuple[float, list[int]]:
    """Seconds and per-row 'Total Cycles' (compute cycles) of one SCALE-Sim run."""
    from scalesim.scale_sim import scalesim

    with tempfile.TemporaryDirectory(prefix="speed_vs_scalesim_") as tmp:
        cfg, topo, layout = (os.path.join(tmp, n) for n in ("s.cfg", "t.csv", "l.csv"))
        with open(cfg, "w") as f:
            f.write(CONFIG.format(rows=ROWS, cols=COLS))
        with open(topo, "w") as f:
            f.write(HEADER + "".join(", ".join(map(str, r)) + ",\n" for r in rows))
        with open(layout, "w") as f:
            f.write("Layer name,\n")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            sim = scalesim(
                save_disk_space=True, verbose=False, config=cfg, topology=topo, layout=layout
            )
            sim.run_scale(top_path=os.path.join(tmp, "out"))
        seconds = time.perf_counter() - t0
        with open(os.path.join(tmp, "out", "speed", "COMPUTE_REPORT.csv")) as f:
            lines = f.read().splitlines()[1:]
    cycles = [int(line.split(",")[2]) for line in lines if line.strip()]
    return seconds, cycles


def median_seconds(fn, min_total: float = 0.2) -> float:
    """Median seconds per call over >= 5 batches of >= min_total/5 seconds each."""
    timer = timeit.Timer(fn)
    n, _ = timer.autorange()
    n = max(1, int(n * (min_total / 5) / 0.2))
    return statistics.median(t / n for t in timer.repeat(repeat=7, number=n))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--all-layers", action="store_true", help="also time SCALE-Sim on conv1 and layer4 (slow)"
    )
    ap.add_argument(
        "--scalesim-network",
        action="store_true",
        help="also time SCALE-Sim on the whole ResNet-18 (about 5 minutes)",
    )
    args = ap.parse_args(argv)
    try:
        import scalesim  # noqa: F401
    except ImportError:
        print(
            "run this with the SCALE-Sim venv's python (scalesim is not importable)",
            file=sys.stderr,
        )
        return 2

    print(
        f"SCALE-Sim {metadata.version('scalesim')}, numpy {metadata.version('numpy')}, "
        f"Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; array {ROWS}x{COLS} ws, 8-bit, CALC (no stalls)"
    )
    by_name = {r[0]: r for r in RESNET18}
    names = (
        TIMED
        if not args.all_layers
        else [n for n in by_name if n == "conv1" or n in TIMED or n.startswith("layer4.0.conv")]
    )

    print("\nPer layer: SCALE-Sim (one run) vs ours (median per evaluate_layer call)")
    head = (
        f"{'layer':<16} {'shape HxWxC->K RxS/s':<24} {'cycles SCALE-Sim':>16} "
        f"{'ours':>9} {'SCALE-Sim s':>11} {'ours us':>8} {'ours faster':>12}"
    )
    print(head)
    print("-" * len(head))
    ss_total = ours_total = 0.0
    ss_sec_per_cycle = []
    for name in names:
        row = by_name[name]
        layer = to_layer(row)
        ss_s, (ss_cycles,) = run_scalesim([row])
        ours_s = median_seconds(lambda layer=layer: evaluate_layer(layer, ACC))
        ours_cycles = evaluate_layer(layer, ACC).compute_cycles
        ss_total += ss_s
        ours_total += ours_s
        ss_sec_per_cycle.append(ss_s / ss_cycles)
        _, h, w, r, s, c, k, st = row
        shape = f"{h}x{w}x{c}->{k} {r}x{s}/{st}"
        print(
            f"{name:<16} {shape:<24} {ss_cycles:>16,} {ours_cycles:>9,} {ss_s:>11.2f} "
            f"{ours_s * 1e6:>8.0f} {ss_s / ours_s:>11,.0f}x"
        )
    print("-" * len(head))
    print(
        f"{'all timed layers':<41} {'':>16} {'':>9} {ss_total:>11.2f} "
        f"{ours_total * 1e6:>8.0f} {ss_total / ours_total:>11,.0f}x"
    )

    print("\nWhole networks, ours (median per evaluate_network call; model built once)")
    head = (
        f"{'network':<12} {'rows':>5} {'MACs':>14} {'compute cycles':>15} "
        f"{'total cycles':>13} {'ours ms':>8} {'us/layer':>9}"
    )
    print(head)
    print("-" * len(head))
    model = make_model(ACC)
    results = {}
    for net, rows in (("ResNet-18", RESNET18), ("MobileNetV2", MOBILENETV2)):
        layers = [to_layer(r) for r in rows]
        report = model.evaluate_network(layers)
        secs = median_seconds(lambda layers=layers: model.evaluate_network(layers))
        results[net] = (report, secs)
        print(
            f"{net:<12} {len(rows):>5} {report.total.macs:>14,} "
            f"{report.total.compute_cycles:>15,} {report.total.total_cycles:>13,} "
            f"{secs * 1e3:>8.2f} {secs / len(rows) * 1e6:>9.0f}"
        )
    auto = make_model(dataclasses.replace(ACC, dataflow="auto"))
    for net, rows in (("ResNet-18", RESNET18), ("MobileNetV2", MOBILENETV2)):
        layers = [to_layer(r) for r in rows]
        secs = median_seconds(lambda layers=layers: auto.evaluate_network(layers))
        picked = collections.Counter(
            c.mapping["dataflow"] for c in auto.evaluate_network(layers).layers
        )
        print(f"{net + ', dataflow auto (ws, os and is per layer, EDP)':<52} {secs * 1e3:>8.2f} ms"
              f"  picked {dict(picked)}")
    n_dw = sum("DP" in r[0] for r in MOBILENETV2)
    print(
        f"(MobileNetV2: its {n_dw} depthwise rows are grouped convs, groups = channels, "
        "priced as that many one-channel GEMMs back to back, as SCALE-Sim's 'DP' layers)"
    )

    rn_report, rn_secs = results["ResNet-18"]
    rate = statistics.median(ss_sec_per_cycle)
    est = rate * rn_report.total.compute_cycles
    print(
        f"\nSCALE-Sim on all of ResNet-18, extrapolated from the timed layers "
        f"({rate * 1e6:.0f} us per compute cycle, median): about {est:,.0f} s, "
        f"{est / rn_secs:,.0f}x our {rn_secs * 1e3:.2f} ms"
    )
    if args.scalesim_network:
        ss_s, ss_cycles = run_scalesim(RESNET18)
        ours_cycles = [c.compute_cycles for c in rn_report.layers]
        same = sum(a == b for a, b in zip(ss_cycles, ours_cycles))
        print(
            f"SCALE-Sim on all of ResNet-18, measured: {ss_s:,.1f} s, "
            f"{sum(ss_cycles):,} compute cycles (ours {sum(ours_cycles):,}; "
            f"{same}/{len(ss_cycles)} layers equal); ours faster by {ss_s / rn_secs:,.0f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
