"""The ``eyeriss`` template against the Eyeriss chip: AlexNet CONV1-5 at batch 4.

Prints per-layer and total latency, MACs, utilization, energy and power for AlexNet CONV1-5
(``experiments/layers/alexnet_conv.csv``; the grouped layers are one row per group) on
``experiments/accelerators/eyeriss_like.yaml``, then frames/s and chip milliwatts against the
measured anchor (Chen et al., JSSC 2017: 35 frames/s at 278 mW, batch 4, 200 MHz, chip power
without DRAM) with the ratio and whether it is within +-30 %, each layer against the paper's
Table V (latency, power, active PEs) with the chip's power split into the part that follows
the non-zero inputs and the part that does not, and the speed of the model.

    python benchmarks/eyeriss_anchor.py [--accelerator A.yaml] [--layers L.csv] [--batch 4]
                                        [--repeat 50]

Needs only numpy and pyyaml (``evaluators.hardware``; nothing imports torch).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from evaluators.hardware import load_accelerator_yaml, read_layers_csv  # noqa: E402
from evaluators.hardware.eyeriss import (  # noqa: E402
    EyerissModel,
    EyerissSpec,
    chip_power_w,
)
from evaluators.specs import ConvLayer, LayerCost, SpecError  # noqa: E402

# Chen et al., JSSC 2017 (abstract): AlexNet CONV layers, batch 4: 35 frames/s at 278 mW
# (chip power, DRAM not included), 0.0029 DRAM accesses (16-bit words) per MAC.
ANCHOR_FPS = 35.0
ANCHOR_MW = 278.0
ANCHOR_DRAM_ACCESS_PER_MAC = 0.0029
ANCHOR_BATCH = 4
TOLERANCE = 0.30

# Chen et al., JSSC 2017, Table V ("Performance breakdown of the five CONV layers in AlexNet
# at 1 V. Batch size (N) is 4. The core and link clocks run at 200 and 60 MHz"): per layer,
# chip power (mW), processing latency (ms; the total latency adds the 60 MHz I/O link time),
# active PEs and the fraction of zeros in the input feature maps. The table is an image in
# the paper; these values are from two independent transcriptions that agree on power and
# processing latency: cucapra/fodlam data/eyeriss-alexnet.csv (all columns) and the reference
# values of nn_dataflow's test_eyeriss_isscc16 (power, processing latency).
TABLE_V = {  # layer: (power mW, processing ms, active PEs, ifmap zero fraction)
    "Conv1": (332.0, 16.5, 154, 0.0001),
    "Conv2": (288.0, 39.2, 135, 0.387),
    "Conv3": (266.0, 21.8, 156, 0.725),
    "Conv4": (235.0, 16.0, 156, 0.793),
    "Conv5": (236.0, 10.0, 156, 0.776),
}


def load_spec(path: Path) -> EyerissSpec:
    """A ``template: eyeriss`` YAML file as an ``EyerissSpec`` (``load_accelerator_yaml``).

    Raises:
        InputError: a bad file (see ``load_accelerator_yaml``).
        SpecError: a valid file of another template.
    """
    spec = load_accelerator_yaml(path)
    if not isinstance(spec, EyerissSpec):
        raise SpecError(f"{path}: template: must be eyeriss, got {spec.template!r}")
    return spec


def alexnet_layers(
    csv: Path, spec: EyerissSpec, batch: int, *, dense: bool = False
) -> list[ConvLayer]:
    """The CSV's layers at ``batch`` and the chip's word width, each with the non-zero input
    fraction Table V measured for its network layer (``dense``: 1.0 everywhere; a row whose
    layer is not in Table V stays dense)."""
    bits = spec.word_bits
    return [
        dataclasses.replace(
            layer, batch=batch, weight_bits=bits, input_bits=bits, output_bits=bits,
            input_density=1.0 if dense else 1.0 - TABLE_V.get(_layer_key(layer.name),
                                                              (0, 0, 0, 0.0))[3],
        )
        for layer in read_layers_csv(csv)
    ]


def _layer_key(row_name: str) -> str:
    """The network layer of a CSV row: ``Conv2_g1`` -> ``Conv2``."""
    return re.sub(r"_g\d+$", "", row_name)


def _merge(costs: tuple[LayerCost, ...]) -> list[tuple[str, LayerCost]]:
    """Per network layer: the rows of one grouped layer (``Conv2_g1``, ``Conv2_g2``) summed."""
    merged: dict[str, LayerCost] = {}
    for c in costs:
        key = _layer_key(c.name)
        merged[key] = merged[key] + c if key in merged else c
    return list(merged.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accelerator", type=Path,
                    default=REPO / "experiments/accelerators/eyeriss_like.yaml")
    ap.add_argument("--layers", type=Path, default=REPO / "experiments/layers/alexnet_conv.csv")
    ap.add_argument("--batch", type=int, default=ANCHOR_BATCH)
    ap.add_argument("--repeat", type=int, default=50, help="timing repeats (warm)")
    ap.add_argument("--dense", action="store_true",
                    help="price dense inputs (no data gating) instead of Table V's zeros")
    args = ap.parse_args(argv)

    spec = load_spec(args.accelerator)
    layers = alexnet_layers(args.layers, spec, args.batch, dense=args.dense)
    t0 = time.perf_counter()
    model = EyerissModel(spec)
    report = model.evaluate_network(layers)
    cold_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    for _ in range(args.repeat):
        EyerissModel(spec).evaluate_network(layers)
    warm_ms = (time.perf_counter() - t0) * 1e3 / max(1, args.repeat)

    f_hz = spec.freq_mhz * 1e6
    print(f"accelerator: {args.accelerator.relative_to(REPO)}  "
          f"({spec.pe_rows}x{spec.pe_cols} PEs, {spec.glb_kib:g} KiB GLB, "
          f"{spec.word_bits}-bit, {spec.freq_mhz:g} MHz, {spec.dram_gbps:g} GB/s "
          f"{spec.dram_type}, mapper_objective={spec.mapper_objective})")
    dens = ", ".join(f"{n} {d:.3f}" for n, d in dict(
        (_layer_key(la.name), la.input_density) for la in layers).items())
    print(f"layers: {args.layers.relative_to(REPO)}  batch {args.batch}; non-zero input "
          f"fraction{' (--dense)' if args.dense else ' (Table V)'}: {dens}\n")
    head = (f"{'row':<9} {'MMACs':>7} {'act.PEs':>7} {'map.util':>8} {'util':>5} {'ms':>7} "
            f"{'uJ':>8} {'chip mW':>7} {'pJ/MAC':>6} {'DRAM KB':>8} {'bound':>7}  mapping")
    print(head)
    print("-" * len(head))
    for c in report.layers:
        mp = c.mapping
        desc = (f"e={mp['set_cols']} r={mp['sets_c']} t={mp['sets_k']} p={mp['p']} "
                f"q={mp['q']} kb={mp['k_blocks']} cb={mp['c_blocks']} n={mp['tile_images']} "
                f"rows={mp['tile_rows']} tiles={mp['spatial_tiles']} "
                f"{'res' if mp['ifmap_resident'] else 'str'}")
        print(f"{c.name:<9} {c.macs / 1e6:7.1f} {mp['avg_active_pes']:7.1f} "
              f"{c.mapping_utilization:8.3f} {c.utilization:5.3f} {c.latency_ms:7.2f} "
              f"{c.energy_pj * 1e-6:8.1f} {chip_power_w(c) * 1e3:7.1f} "
              f"{c.energy_pj / c.macs:6.2f} "
              f"{(c.dram_read_bytes + c.dram_write_bytes) / 1024:8.0f} {mp['bound']:>7}  {desc}")

    print("\nper network layer (groups summed):")
    print(f"{'layer':<7} {'MMACs':>7} {'act.PEs':>7} {'ms':>7} {'chip mW':>7} {'DRAM MB':>8}")
    merged = dict(_merge(report.layers))
    for name, c in merged.items():
        print(f"{name:<7} {c.macs / 1e6:7.1f} {c.macs / c.compute_cycles:7.1f} "
              f"{c.latency_ms:7.2f} {chip_power_w(c) * 1e3:7.1f} "
              f"{(c.dram_read_bytes + c.dram_write_bytes) / 1e6:8.2f}")

    t = report.total
    seconds = t.latency_ms * 1e-3
    fps = args.batch / seconds
    chip_mw = chip_power_w(report) * 1e3
    dram_bytes = t.dram_read_bytes + t.dram_write_bytes
    words_per_mac = dram_bytes / (spec.word_bits / 8) / t.macs
    chip_pj = t.energy_pj - t.dram_energy_pj
    print(f"\ntotal (batch {args.batch}):")
    print(f"  MACs            {t.macs:,} ({t.macs / args.batch / 1e6:.1f} M per image)")
    print(f"  latency         {t.latency_ms:.2f} ms ({t.total_cycles:,} cycles at "
          f"{f_hz / 1e6:g} MHz; compute {t.compute_cycles:,})")
    print(f"  utilization     {t.utilization:.3f} (mapping {t.mapping_utilization:.3f}; "
          f"{t.macs / t.compute_cycles:.1f} of {model.num_pes} PEs busy on average)")
    noc_pj = sum(c.mapping["noc_energy_pj"] for c in report.layers)
    print(f"  energy          {t.energy_pj * 1e-6:.1f} uJ = {t.energy_pj / t.macs:.2f} pJ/MAC "
          f"(MAC {t.mac_energy_pj / t.macs:.2f}, spads {t.rf_energy_pj / t.macs:.2f}, "
          f"GLB+NoC {t.glb_energy_pj / t.macs:.2f} [GLB {(t.glb_energy_pj - noc_pj) / t.macs:.2f}"
          f", NoC {noc_pj / t.macs:.2f}], register clock {t.clock_energy_pj / t.macs:.2f}, "
          f"leakage {t.leakage_energy_pj / t.macs:.2f}, DRAM {t.dram_energy_pj / t.macs:.2f})")
    print(f"  chip energy     {chip_pj * 1e-6:.1f} uJ = {chip_pj / t.macs:.2f} pJ/MAC (no DRAM)")
    print(f"  DRAM            {dram_bytes / 1e6:.2f} MB = {words_per_mac:.4f} word accesses/MAC "
          f"(chip: {ANCHOR_DRAM_ACCESS_PER_MAC}, with run-length compression)")
    print(f"  power           chip {chip_mw:.1f} mW, with DRAM {report.power_w * 1e3:.1f} mW")
    print(f"  area            {report.area_mm2:.2f} mm^2 at {spec.process_nm} nm (lower bound: "
          f"no NoC, control, clock tree or I/O)")

    print("\nanchor (Chen et al., JSSC 2017; AlexNet CONV1-5, batch 4, 200 MHz):")
    # energy per MAC on chip: the power over the frame rate, free of the latency error
    chip_pj_per_mac = ANCHOR_MW * 1e-3 / (ANCHOR_FPS * t.macs / args.batch) * 1e12
    rows = (("frames/s", fps, ANCHOR_FPS), ("chip mW", chip_mw, ANCHOR_MW),
            ("pJ/MAC", chip_pj / t.macs, chip_pj_per_mac))
    for what, model_v, chip_v in rows:
        ratio = model_v / chip_v
        ok = abs(ratio - 1) <= TOLERANCE
        print(f"  {what:<9} model {model_v:8.1f}  chip {chip_v:6.1f}  ratio {ratio:5.2f}  "
              f"{'within' if ok else 'OUTSIDE'} +-{TOLERANCE:.0%}")
    if args.batch != ANCHOR_BATCH:
        print(f"  (the anchor was measured at batch {ANCHOR_BATCH}; this run used {args.batch})")
    else:
        per_layer_vs_table_v(merged, gated=not args.dense)

    print(f"\nmodel speed: {cold_ms:.2f} ms per network on the first call (cold shape caches), "
          f"{warm_ms:.2f} ms warm (mean of {args.repeat}); {len(layers)} layer rows, "
          f"{warm_ms / len(layers) * 1e3:.0f} us per row")
    return 0


def per_layer_vs_table_v(merged: dict[str, LayerCost], gated: bool) -> None:
    """Per layer (``merged``: network layer -> its rows' summed cost) against Table V, and
    both the chip's and the model's power split into a part that follows the non-zero input
    activations (data gating) and a part that does not."""
    how = "data gating at Table V's zeros" if gated else "dense inputs, no data gating"
    print(f"\nper layer against Table V (JSSC 2017; model: {how}):")
    print(f"{'layer':<6} {'zeros':>6} {'chip ms':>7} {'model':>6} {'ratio':>5}   "
          f"{'chip mW':>7} {'model':>6} {'ratio':>5}   {'act.PEs':>7} {'model':>6}")
    model_mw, static_mw = [], []
    for name, (mw, ms, pes, zeros) in TABLE_V.items():
        c = merged[name]
        model_mw.append(chip_power_w(c) * 1e3)
        static_mw.append((c.leakage_energy_pj + c.clock_energy_pj) * 1e-6 / c.latency_ms)
        print(f"{name:<6} {zeros:6.1%} {ms:7.1f} {c.latency_ms:6.2f} {c.latency_ms / ms:5.2f}   "
              f"{mw:7.0f} {model_mw[-1]:6.1f} {model_mw[-1] / mw:5.2f}   {pes:7d} "
              f"{c.macs / c.compute_cycles:6.1f}")
    # Least squares over the five layers: P = P_fixed + P_dense * (1 - zeros). Data gating
    # ([Chen17] Sec. V-C) switches off a PE's filter-spad read and MAC on a zero input, so the
    # part of the power that tracks activity scales with the non-zero fraction; what does not
    # (clock, control, leakage) is the intercept. The model's per-layer powers get the same fit
    # when it gates (with dense inputs its slope would be meaningless).
    nonzero = np.array([1.0 - v[3] for v in TABLE_V.values()])
    chip = np.array([v[0] for v in TABLE_V.values()])
    for who, power in (("chip", chip), ("model", np.array(model_mw))):
        if who == "model" and not gated:
            break
        slope, fixed = np.polyfit(nonzero, power, 1)
        fit = fixed + slope * nonzero
        r2 = 1 - ((power - fit) ** 2).sum() / ((power - power.mean()) ** 2).sum()
        print(f"{who:<5} power = {fixed:5.0f} mW + {slope:5.0f} mW x (non-zero input fraction)"
              f"  (least squares over the 5 layers, R^2 {r2:.2f})")
    print(f"model's activity-independent power (leakage + register clock), mean over the "
          f"layers: {np.mean(static_mw):.0f} mW")


if __name__ == "__main__":
    raise SystemExit(main())
