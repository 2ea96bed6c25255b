"""The systolic template's options: leakage, node scaling, dataflow auto with a mapper
objective, precision-scalable PEs (Bit Fusion, bit-serial) and zero-skipping."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from evaluators.hardware import (
    area_mm2,
    evaluate_layer,
    evaluate_network,
    load_accelerator_yaml,
    make_model,
    tables,
    validate_accelerator,
)
from evaluators.hardware.systolic import pe_rate, skipped_length
from evaluators.specs import (
    DATAFLOWS,
    SRAM_DEVICES,
    AcceleratorSpec,
    ConvLayer,
    InputError,
)

CONV2 = ConvLayer("conv2", 58, 58, 3, 3, 64, 64, 1)
FC = ConvLayer("fc", 1, 1, 1, 1, 512, 1000, 1)
ARRAY_32 = AcceleratorSpec(pe_rows=32, pe_cols=32, glb_kib=64.0)


# --------------------------------------------------------------------------- tables


def test_cacti_leakage_table_is_interpolated_through_its_points() -> None:
    assert set(tables.SRAM_LEAKAGE_MW) == set(SRAM_DEVICES)
    for device, points in tables.SRAM_LEAKAGE_MW.items():
        assert len(points) == len(tables.SRAM_LEAKAGE_KIB)
        for kib, mw in zip(tables.SRAM_LEAKAGE_KIB, points):
            assert tables.sram_leakage_w(kib * 1024, device) == pytest.approx(mw * 1e-3)
        sizes = np.geomspace(0.25, 64 * 1024, 60) * 1024
        leaks = [tables.sram_leakage_w(c, device) for c in sizes]
        assert all(a < b for a, b in zip(leaks, leaks[1:]))  # more cells leak more
    # the flavours span orders of magnitude: lstp << lop << hp
    one_mib = {d: tables.sram_leakage_w(2**20, d) for d in SRAM_DEVICES}
    assert one_mib["itrs-lstp"] * 100 < one_mib["itrs-lop"] < one_mib["itrs-hp"] / 10


def test_pe_leakage_is_aladdins_scaled_to_45nm() -> None:
    factor = tables.energy_scale(45, 40)
    assert 1.0 < factor < 1.3  # 45 nm leaks more than 40 nm per device
    assert tables.pe_leakage_w(32, 32) == pytest.approx((80.0 + 2.4) * 1e-6 * factor)
    assert tables.pe_leakage_w(4, 4) < tables.pe_leakage_w(8, 8) < tables.pe_leakage_w(16, 8)


def test_node_scaling_is_one_at_45nm_and_shrinks_with_the_node() -> None:
    assert tables.energy_scale(45) == pytest.approx(1.0)
    assert tables.area_scale(45) == 1.0
    nodes = [130, 90, 65, 45, 32, 28, 20, 16, 14, 10, 7]
    e = [tables.energy_scale(n) for n in nodes]
    a = [tables.area_scale(n) for n in nodes]
    assert all(x > y for x, y in zip(e, e[1:])) and all(x > y for x, y in zip(a, a[1:]))
    assert tables.area_scale(65) == 1.5 and tables.area_scale(7) == 0.059  # the table's row
    with pytest.raises(ValueError, match="outside"):
        tables.energy_scale(5)


# --------------------------------------------------------------------------- leakage


def test_leakage_is_static_power_times_latency() -> None:
    cost = evaluate_layer(CONV2, ARRAY_32)
    model = make_model(ARRAY_32)
    watts = model.leakage_w(weight_bits=8, input_bits=8)
    regs = 1024 * ARRAY_32.rf_bytes * 8 * tables.reg_leakage_w_per_bit()
    assert watts == pytest.approx(
        1024 * tables.pe_leakage_w(8, 8) + regs + tables.sram_leakage_w(64 * 1024, "itrs-lop")
    )
    assert cost.leakage_energy_pj == pytest.approx(watts * cost.latency_ms * 1e9)
    assert cost.mapping["leakage_w"] == pytest.approx(watts)
    parts = (cost.mac_energy_pj, cost.rf_energy_pj, cost.glb_energy_pj, cost.dram_energy_pj)
    assert cost.energy_pj == pytest.approx(
        sum(parts) + cost.leakage_energy_pj + cost.clock_energy_pj
    )
    # an idle array is not free: the same small layer on a 4x larger array leaks more
    small = ConvLayer("tiny", 8, 8, 1, 1, 16, 16, 1)
    big = dataclasses.replace(ARRAY_32, pe_rows=64, pe_cols=64)
    assert evaluate_layer(small, big).leakage_energy_pj > evaluate_layer(small, ARRAY_32)\
        .leakage_energy_pj
    # the flavour changes leakage only
    by_dev = {d: evaluate_layer(CONV2, dataclasses.replace(ARRAY_32, sram_device=d))
              for d in SRAM_DEVICES}
    assert by_dev["itrs-lstp"].leakage_energy_pj < by_dev["itrs-lop"].leakage_energy_pj < \
        by_dev["itrs-hp"].leakage_energy_pj
    assert len({c.dram_energy_pj for c in by_dev.values()}) == 1


def test_register_files_are_clocked_every_cycle_busy_or_idle() -> None:
    """Every PE's ``rf_bytes`` of registers takes Aladdin's 7.94 fJ per bit per cycle (40 nm,
    scaled to the node) on every cycle of the layer, whatever the array's utilization."""
    per_bit = tables.ALADDIN_REG_CLOCK_FJ_PER_BIT * 1e-3 * tables.energy_scale(45, 40)
    assert tables.reg_clock_pj_per_bit() == pytest.approx(per_bit)
    for acc in (ARRAY_32, dataclasses.replace(ARRAY_32, rf_bytes=16, tech_node_nm=28.0)):
        c = evaluate_layer(CONV2, acc)
        bits = acc.pe_rows * acc.pe_cols * acc.rf_bytes * 8
        pj = bits * per_bit * tables.energy_scale(acc.tech_node_nm) * c.total_cycles
        assert c.mapping["register_bits"] == bits
        assert c.clock_energy_pj == pytest.approx(pj, rel=1e-12)
        assert c.mapping["clock_w"] == pytest.approx(pj * 1e-12 / (c.latency_ms * 1e-3))
    # the figures docs/hardware/systolic.md quotes for 32x32 PEs, 4-byte files, 500 MHz
    c = evaluate_layer(CONV2, ARRAY_32)
    assert c.mapping["clock_w"] == pytest.approx(0.1509, abs=1e-4)
    assert c.clock_energy_pj * 1e-6 == pytest.approx(34.75, abs=0.01)  # uJ
    assert c.mapping["leakage_w"] == pytest.approx(0.0173, abs=1e-4)
    # an idle array is clocked too: a 4x larger array spends 4x per cycle on a tiny layer
    small = ConvLayer("tiny", 8, 8, 1, 1, 16, 16, 1)
    big = dataclasses.replace(ARRAY_32, pe_rows=64, pe_cols=64)
    a, b = evaluate_layer(small, ARRAY_32), evaluate_layer(small, big)
    assert b.clock_energy_pj / b.total_cycles == pytest.approx(
        4 * a.clock_energy_pj / a.total_cycles)


def test_network_total_adds_leakage_and_clock() -> None:
    report = evaluate_network([CONV2, FC], ARRAY_32)
    for part in ("leakage_energy_pj", "clock_energy_pj"):
        assert getattr(report.total, part) == pytest.approx(
            sum(getattr(c, part) for c in report.layers))
        assert report.total.to_dict()[part] > 0
    doc = report.to_dict()["total"]  # what `codesign hw --json` prints
    parts = ("mac_energy_pj", "rf_energy_pj", "glb_energy_pj", "dram_energy_pj",
             "leakage_energy_pj", "clock_energy_pj")
    assert doc["energy_pj"] == pytest.approx(sum(doc[p] for p in parts))


def test_a_smaller_node_scales_on_chip_energy_and_area_not_dram() -> None:
    at28 = dataclasses.replace(ARRAY_32, tech_node_nm=28.0)
    c45, c28 = evaluate_layer(CONV2, ARRAY_32), evaluate_layer(CONV2, at28)
    f = tables.energy_scale(28)
    for part in ("mac_energy_pj", "rf_energy_pj", "glb_energy_pj", "leakage_energy_pj",
                 "clock_energy_pj"):
        assert getattr(c28, part) == pytest.approx(getattr(c45, part) * f)
    assert c28.dram_energy_pj == c45.dram_energy_pj
    assert c28.total_cycles == c45.total_cycles
    a45 = area_mm2(ARRAY_32, weight_bits=8, input_bits=8)
    assert area_mm2(at28, weight_bits=8, input_bits=8) == pytest.approx(
        a45 * tables.area_scale(28)
    )


# --------------------------------------------------------------------------- dataflow auto


@pytest.mark.parametrize("objective", ["edp", "energy", "latency"])
def test_dataflow_auto_picks_the_best_of_the_three(objective: str) -> None:
    auto = dataclasses.replace(ARRAY_32, dataflow="auto", mapper_objective=objective)
    for layer in (CONV2, FC, ConvLayer("dw", 30, 30, 3, 3, 32, 32, 1, groups=32)):
        fixed = {df: evaluate_layer(layer, dataclasses.replace(auto, dataflow=df))
                 for df in DATAFLOWS}
        score = {
            "latency": lambda c: c.latency_ms,
            "energy": lambda c: c.energy_pj,
            "edp": lambda c: c.energy_pj * c.latency_ms,
        }[objective]
        best = min(DATAFLOWS, key=lambda df: score(fixed[df]))
        got = evaluate_layer(layer, auto)
        assert got.mapping["dataflow"] == best
        assert got.total_cycles == fixed[best].total_cycles
        assert got.energy_pj == pytest.approx(fixed[best].energy_pj)
        cands = got.mapping["dataflow_choice"]["candidates"]
        assert set(cands) == set(DATAFLOWS) and cands[best] == min(cands.values())
        assert got.mapping["dataflow_choice"]["objective"] == objective


def test_dataflow_auto_skips_a_dataflow_that_cannot_run() -> None:
    # one byte of register per PE cannot hold OS's 32-bit partial sum; WS and IS still run
    acc = dataclasses.replace(ARRAY_32, dataflow="auto", rf_bytes=1, mapper_objective="latency")
    cost = evaluate_layer(CONV2, acc)
    assert set(cost.mapping["dataflow_choice"]["candidates"]) == {"ws", "is"}


def test_for_a_fixed_dataflow_the_objective_changes_nothing() -> None:
    costs = [evaluate_layer(CONV2, dataclasses.replace(ARRAY_32, mapper_objective=o))
             for o in ("edp", "energy", "latency")]
    assert len({(c.total_cycles, c.energy_pj) for c in costs}) == 1


# --------------------------------------------------------------------------- PE types


def test_bit_fusion_rates() -> None:
    acc = dataclasses.replace(ARRAY_32, pe_type="bit_fusion", pe_bits=8)
    assert pe_rate(acc, 8, 8) == (1, 1, 8, 8)
    assert pe_rate(acc, 4, 4) == (4, 1, 4, 4)
    assert pe_rate(acc, 2, 2) == (16, 1, 2, 2)
    assert pe_rate(acc, 2, 8) == (4, 1, 2, 8)
    assert pe_rate(acc, 3, 5) == (2, 1, 4, 8)  # padded to the next power of two
    assert pe_rate(acc, 1, 1) == (16, 1, 2, 2)  # the brick is 2 bits
    assert pe_rate(acc, 16, 8) == (1, 2, 16, 8)  # temporal fusion
    assert pe_rate(acc, 16, 16) == (1, 4, 16, 16)
    assert pe_rate(ARRAY_32, 4, 4) == (1, 1, 4, 4)  # fixed PEs


def test_bit_serial_rates() -> None:
    acc = dataclasses.replace(ARRAY_32, pe_type="bit_serial", pe_bits=8)
    assert pe_rate(acc, 8, 8) == (1, 8, 8, 8)
    assert pe_rate(acc, 8, 2) == (1, 2, 8, 2)
    assert pe_rate(acc, 16, 4) == (1, 8, 16, 4)  # two weight chunks x 4 activation bits


def test_bit_fusion_folds_output_channels_onto_fused_pes() -> None:
    acc = dataclasses.replace(ARRAY_32, pe_type="bit_fusion", pe_bits=8)
    layer = ConvLayer("c", 16, 16, 3, 3, 64, 256, 1, weight_bits=4, input_bits=4)
    cost = evaluate_layer(layer, acc)
    m = cost.mapping
    assert m["macs_per_pe_cycle"] == 4
    assert m["folds_col"] == math.ceil(256 / (32 * 4)) == 2
    per_fold = 2 * 32 + 32 + m["temporal"] - 2
    assert cost.compute_cycles == m["folds_row"] * m["folds_col"] * per_fold - 1
    at8 = evaluate_layer(dataclasses.replace(layer, weight_bits=8, input_bits=8), acc)
    assert at8.mapping["folds_col"] == 8 and at8.compute_cycles > cost.compute_cycles


def test_bit_serial_takes_activation_bits_cycles_per_mac() -> None:
    acc = dataclasses.replace(ARRAY_32, pe_type="bit_serial", pe_bits=8, double_buffered=False)
    layer = ConvLayer("c", 16, 16, 3, 3, 3, 32, 1, weight_bits=8, input_bits=4)  # 27 rows
    cost = evaluate_layer(layer, acc)
    t = cost.mapping["temporal"]
    assert cost.compute_cycles == 2 * 32 + 32 + 4 * t - 2 - 1  # one fold, T streamed 4x slower


@pytest.mark.parametrize("pe_type", ["fixed", "bit_fusion", "bit_serial"])
def test_fewer_bits_never_add_cycles_or_mac_energy(pe_type: str) -> None:
    acc = dataclasses.replace(ARRAY_32, pe_type=pe_type, pe_bits=8)
    rng = np.random.default_rng(7)
    for _ in range(40):
        c, k, h = (int(x) for x in rng.integers(1, 200, 3))
        w1, w2 = sorted(int(x) for x in rng.choice([1, 2, 3, 4, 6, 8, 16], 2))
        i1, i2 = sorted(int(x) for x in rng.choice([1, 2, 3, 4, 6, 8, 16], 2))
        lo = ConvLayer("lo", h + 2, h + 2, 3, 3, c, k, 1, weight_bits=w1, input_bits=i1)
        hi = dataclasses.replace(lo, weight_bits=w2, input_bits=i2)
        a, b = evaluate_layer(lo, acc), evaluate_layer(hi, acc)
        assert a.compute_cycles <= b.compute_cycles
        assert a.mac_energy_pj <= b.mac_energy_pj


def test_precision_scalable_pes_are_sized_by_pe_bits() -> None:
    fusion = dataclasses.replace(ARRAY_32, pe_type="bit_fusion", pe_bits=8)
    assert area_mm2(fusion, weight_bits=2, input_bits=2) == area_mm2(
        fusion, weight_bits=8, input_bits=8
    ) == pytest.approx(area_mm2(ARRAY_32, weight_bits=8, input_bits=8))
    serial = dataclasses.replace(ARRAY_32, pe_type="bit_serial", pe_bits=8)
    assert area_mm2(serial, weight_bits=8, input_bits=8) < area_mm2(
        ARRAY_32, weight_bits=8, input_bits=8
    )


# --------------------------------------------------------------------------- zero-skipping


def test_skipped_length() -> None:
    assert skipped_length(576, 1.0, 32) == 576
    assert skipped_length(576, 0.5, 1) == 288  # one lane: exactly its expected non-zeros
    lens = [skipped_length(576, d, 32) for d in (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)]
    assert all(a < b for a, b in zip(lens, lens[1:]))
    for d in (0.1, 0.5, 0.9):
        assert 576 * d <= skipped_length(576, d, 32) <= 576
        assert skipped_length(576, d, 2) <= skipped_length(576, d, 128)  # more lanes, more skew


def test_zero_skipping_trades_cycles_for_mask_bits() -> None:
    skip = dataclasses.replace(ARRAY_32, zero_skipping=True, weight_compression=False)
    dense, sparse = CONV2, dataclasses.replace(CONV2, weight_density=0.25)
    # a dense layer gains nothing and pays the 1-bit-per-weight mask
    d_on, d_off = evaluate_layer(dense, skip), evaluate_layer(dense, ARRAY_32)
    assert d_on.compute_cycles == d_off.compute_cycles
    w = dense.weight_count
    assert d_on.mapping["dram_weight_bytes"] == pytest.approx(w + w / 8)
    # a 25 %-dense layer runs its compacted window: fewer row folds, fewer MACs
    s_on, s_off = evaluate_layer(sparse, skip), evaluate_layer(sparse, ARRAY_32)
    assert s_on.mapping["spatial_rows"] == skipped_length(576, 0.25, 32) < 576
    assert s_on.compute_cycles < s_off.compute_cycles
    assert s_on.mapping["executed_macs"] == pytest.approx(0.25 * sparse.macs)
    assert s_on.mac_energy_pj < s_off.mac_energy_pj
    assert s_on.mapping["dram_weight_bytes"] == pytest.approx(0.25 * w + w / 8)
    # OS streams the window in time: the stream shortens instead
    os_skip = dataclasses.replace(skip, dataflow="os")
    assert evaluate_layer(sparse, os_skip).mapping["temporal"] == skipped_length(576, 0.25, 32)


# --------------------------------------------------------------------------- input


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(tech_node_nm=3.0), "tech_node_nm"),
        (dict(tech_node_nm=200.0), "tech_node_nm"),
        (dict(pe_type="bit_fusion", pe_bits=6), "pe_bits"),
        (dict(pe_type="bit_fusion", pe_bits=1), "pe_bits"),
        (dict(pe_type="nibble"), "pe_type"),
        (dict(mapper_objective="area"), "mapper_objective"),
        (dict(sram_device="itrs-xx"), "sram_device"),
        (dict(dataflow="rs"), "dataflow"),
    ],
)
def test_bad_option_values_name_the_field(changes: dict, field: str) -> None:
    problems = validate_accelerator(dataclasses.replace(ARRAY_32, **changes))
    assert len(problems) == 1 and problems[0].startswith(f"{field}: ")


def test_options_from_yaml(tmp_path: Path) -> None:
    p = tmp_path / "a.yaml"
    p.write_text(
        "template: systolic\ndataflow: auto\npe_rows: 16\npe_cols: 16\nmapper_objective: "
        "latency\npe_type: bit_fusion\npe_bits: 8\nzero_skipping: true\ntech_node_nm: 28.0\n"
        "sram_device: itrs-hp\n"
    )
    acc = load_accelerator_yaml(p)
    assert (acc.dataflow, acc.pe_type, acc.tech_node_nm, acc.sram_device) == (
        "auto", "bit_fusion", 28.0, "itrs-hp"
    )
    assert acc.zero_skipping is True
    p.write_text("template: systolic\npe_type: nibble\n")
    with pytest.raises(InputError) as info:
        load_accelerator_yaml(p)
    assert info.value.key == "pe_type" and "bit_fusion" in info.value.message
    p.write_text("template: systolic\ntech_node_nm: 3.0\n")
    with pytest.raises(InputError) as info:
        load_accelerator_yaml(p)
    assert info.value.key == "tech_node_nm" and "[7, 130]" in info.value.message
    p.write_text("template: systolic\nglb_bytes_per_cycle: -2.0\n")
    with pytest.raises(InputError) as info:
        load_accelerator_yaml(p)
    assert info.value.key == "glb_bytes_per_cycle" and ">= 0 (0: unlimited)" in info.value.message


# --------------------------------------------------------------------------- GLB roofline


def test_glb_bandwidth_is_a_roofline_level() -> None:
    free = evaluate_layer(CONV2, ARRAY_32)  # 0: unlimited, SCALE-Sim's assumption
    assert free.mapping["glb_cycles"] == 0.0 and free.mapping["bound"] == "compute"
    glb_bits = free.glb_energy_pj / make_model(ARRAY_32)._glb_pj_bit
    previous = free.total_cycles
    for bw in (256.0, 64.0, 16.0, 4.0):
        c = evaluate_layer(CONV2, dataclasses.replace(ARRAY_32, glb_bytes_per_cycle=bw))
        assert c.mapping["glb_cycles"] == pytest.approx(glb_bits / 8 / bw)
        assert c.total_cycles == max(previous, c.total_cycles) >= previous  # less never helps
        assert c.total_cycles == max(free.total_cycles, math.ceil(glb_bits / 8 / bw))
        assert c.dram_read_bytes == free.dram_read_bytes  # the tiling does not change
        previous = c.total_cycles
    assert c.mapping["bound"] == "glb"
    problems = validate_accelerator(dataclasses.replace(ARRAY_32, glb_bytes_per_cycle=-1.0))
    assert problems == ["glb_bytes_per_cycle: must be a finite number >= 0 (0: unlimited), "
                        "got -1.0"]
