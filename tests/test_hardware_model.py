"""Golden values and properties of the systolic accelerator model (evaluators.hardware)."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from evaluators.hardware import (
    SystolicModel,
    area_mm2,
    evaluate_layer,
    evaluate_network,
    load_accelerator_yaml,
    make_model,
    plan_tiling,
    tables,
    validate_accelerator,
)
from evaluators.specs import (
    AcceleratorSpec,
    ConvLayer,
    InfeasibleDesign,
    LayerCost,
    SpecError,
)

ROOT = Path(__file__).resolve().parents[1]

# ResNet-18 conv2 as a SCALE-Sim layer: 58x58 ifmap (56x56 + the padding), 3x3, 64 -> 64.
CONV2 = ConvLayer("conv2", 58, 58, 3, 3, 64, 64, 1)
ARRAY_32 = AcceleratorSpec(pe_rows=32, pe_cols=32, glb_kib=64.0)


def _random_layer(rng: np.random.Generator, **overrides) -> ConvLayer:
    r = int(rng.choice([1, 3, 5, 7]))
    stride = int(rng.integers(1, 3))
    pad = int(rng.integers(0, r // 2 + 1))
    h = int(rng.integers(max(r - 2 * pad, 1), 40))
    values = dict(
        name="rand",
        ifmap_h=h,
        ifmap_w=int(rng.integers(max(r - 2 * pad, 1), 40)),
        filter_h=r,
        filter_w=r,
        channels=int(rng.integers(1, 200)),
        num_filters=int(rng.integers(1, 300)),
        stride=stride,
        padding=pad,
        batch=int(rng.integers(1, 4)),
        weight_bits=int(rng.choice([2, 4, 8, 16])),
        input_bits=int(rng.choice([4, 8, 16])),
        output_bits=int(rng.choice([8, 16, 32])),
        weight_density=float(rng.choice([1.0, 0.5, 0.1])),
    )
    values.update(overrides)
    return ConvLayer(**values)


def _random_acc(rng: np.random.Generator, **overrides) -> AcceleratorSpec:
    values = dict(
        dataflow=str(rng.choice(["ws", "os", "is"])),
        pe_rows=int(rng.integers(2, 70)),
        pe_cols=int(rng.integers(2, 70)),
        glb_kib=float(rng.choice([16.0, 64.0, 256.0, 2048.0])),
        rf_bytes=int(rng.choice([4, 8])),
        dram_gbps=float(rng.uniform(1.0, 100.0)),
        freq_mhz=float(rng.uniform(100.0, 1000.0)),
        dram_type=str(rng.choice(["lpddr4", "ddr3", "hbm2"])),
    )
    values.update(overrides)
    return AcceleratorSpec(**values)


def _feasible_cases(seed: int, n: int):
    """(layer, acc) pairs drawn with a seeded RNG; infeasible draws are skipped."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        layer, acc = _random_layer(rng), _random_acc(rng)
        try:
            evaluate_layer(layer, acc)
        except InfeasibleDesign:
            continue
        out.append((layer, acc))
    return out


# --------------------------------------------------------------------------- golden values


@pytest.mark.parametrize(
    ("dataflow", "cycles"), [("ws", 116_279), ("os", 125_047), ("is", 278_711)]
)
def test_scalesim_golden_compute_cycles(dataflow: str, cycles: int) -> None:
    # SCALE-Sim 3.0.0, 32x32 PEs, no stalls (reference/hardware.md).
    acc = dataclasses.replace(ARRAY_32, dataflow=dataflow)
    assert evaluate_layer(CONV2, acc).compute_cycles == cycles


def test_ideal_cycles_hand_derived() -> None:
    cost = evaluate_layer(CONV2, ARRAY_32)
    assert CONV2.macs == 56 * 56 * 64 * 64 * 9 == 115_605_504
    assert cost.mapping["ideal_cycles"] == 112_896 == CONV2.macs // 1024
    assert cost.mapping_utilization == pytest.approx(112_896 / 116_279)


def test_ws_mapping_is_reported() -> None:
    m = evaluate_layer(CONV2, ARRAY_32).mapping
    assert (m["spatial_rows"], m["spatial_cols"], m["temporal"]) == (576, 64, 3136)
    assert (m["folds_row"], m["folds_col"], m["folds"]) == (18, 2, 36)
    assert m["order"] in ("k_outer", "rows_outer")
    assert m["kt"] >= 1 and m["et"] >= 1
    json.dumps(m)  # JSON-able


def test_folds_use_ceil() -> None:
    # Spatial rows = R*S*C = pe_rows + 1 needs two row folds; the whole array is charged.
    acc = AcceleratorSpec(pe_rows=32, pe_cols=32, double_buffered=False)
    fits = evaluate_layer(ConvLayer("a", 8, 8, 1, 1, 32, 32, 1), acc)
    over = evaluate_layer(ConvLayer("b", 8, 8, 1, 1, 33, 32, 1), acc)
    assert fits.mapping["folds_row"] == 1 and over.mapping["folds_row"] == 2
    per_fold = 2 * 32 + 32 + 64 - 2
    assert fits.compute_cycles == per_fold - 1
    assert over.compute_cycles == 2 * per_fold - 1
    assert over.mapping_utilization < fits.mapping_utilization


def test_double_buffering_hides_preloads() -> None:
    cost = evaluate_layer(CONV2, ARRAY_32)  # rf_bytes=4 holds two 8-bit weights
    m = cost.mapping
    assert m["preload_cycles_hidden"] == (36 - 1) * min(32, 3136)
    assert m["compute_cycles_overlapped"] == cost.compute_cycles - m["preload_cycles_hidden"]
    single = dataclasses.replace(ARRAY_32, rf_bytes=1)
    off = dataclasses.replace(ARRAY_32, double_buffered=False)
    for acc in (single, off):
        c = evaluate_layer(CONV2, acc)
        assert c.mapping["preload_cycles_hidden"] == 0
        assert c.mapping["compute_cycles_overlapped"] == c.compute_cycles == 116_279
    os_cost = evaluate_layer(CONV2, dataclasses.replace(ARRAY_32, dataflow="os"))
    assert os_cost.mapping["preload_cycles_hidden"] == 0


def test_register_file_must_hold_a_stationary_word() -> None:
    with pytest.raises(InfeasibleDesign, match="rf_bytes >= 4"):
        evaluate_layer(CONV2, dataclasses.replace(ARRAY_32, dataflow="os", rf_bytes=2))
    wide = dataclasses.replace(CONV2, input_bits=16)
    with pytest.raises(InfeasibleDesign, match="rf_bytes >= 2"):
        evaluate_layer(wide, dataclasses.replace(ARRAY_32, dataflow="is", rf_bytes=1))


def test_latency_is_a_roofline_of_compute_and_dram() -> None:
    for layer, acc in _feasible_cases(seed=1, n=40):
        c = evaluate_layer(layer, acc)
        bytes_per_cycle = acc.dram_gbps * 1e9 / (acc.freq_mhz * 1e6)
        dram_cycles = (c.dram_read_bytes + c.dram_write_bytes) / bytes_per_cycle
        assert c.mapping["dram_cycles"] == pytest.approx(dram_cycles)
        assert c.total_cycles == max(
            c.mapping["compute_cycles_overlapped"], math.ceil(c.mapping["dram_cycles"])
        )
        assert c.latency_ms == pytest.approx(c.total_cycles / (acc.freq_mhz * 1e3))
        assert 0 < c.utilization <= 1 and 0 < c.mapping_utilization <= 1


# --------------------------------------------------------------------------- DRAM and mapper


def test_whole_layer_in_buffer_is_exactly_compulsory() -> None:
    c = evaluate_layer(CONV2, dataclasses.replace(ARRAY_32, glb_kib=4096.0))
    compulsory = 58 * 58 * 64 + 3 * 3 * 64 * 64 + 56 * 56 * 64
    assert c.dram_read_bytes + c.dram_write_bytes == compulsory
    assert c.dram_write_bytes == 56 * 56 * 64


def test_dram_never_below_compulsory() -> None:
    for layer, acc in _feasible_cases(seed=2, n=120):
        c = evaluate_layer(layer, acc)
        ib, ob = layer.input_bits / 8, layer.output_bits / 8
        weights = layer.weight_count * layer.weight_bits / 8
        if acc.weight_compression and layer.weight_density < 1:
            weights = min(weights, layer.weight_density * weights + layer.weight_count / 8)
        inputs = layer.batch * layer.ifmap_h * layer.ifmap_w * layer.channels * ib
        outputs = layer.batch * layer.ofmap_h * layer.ofmap_w * layer.num_filters * ob
        assert c.dram_read_bytes >= math.floor(inputs + weights)
        assert c.dram_write_bytes >= math.floor(outputs)
        assert c.mapping["dram_compulsory_bytes"] == pytest.approx(inputs + weights + outputs)


def test_larger_glb_never_adds_dram_traffic() -> None:
    rng = np.random.default_rng(3)
    for _ in range(60):
        layer = _random_layer(rng)
        prev = None
        for kib in (8.0, 16.0, 32.0, 64.0, 128.0, 512.0, 4096.0):
            acc = AcceleratorSpec(glb_kib=kib)
            try:
                t = plan_tiling(layer, acc)
            except InfeasibleDesign:
                assert prev is None  # once a size fits, every larger one fits
                continue
            traffic = t.input_bytes + t.weight_bytes + t.output_bytes
            assert traffic >= t.compulsory_bytes - 1e-6
            if prev is not None:
                assert traffic <= prev + 1e-6
            prev = traffic


def test_mapper_respects_the_buffer_and_infeasible_message() -> None:
    t = plan_tiling(CONV2, ARRAY_32)
    assert t.glb_bytes_used <= 64 * 1024
    with pytest.raises(InfeasibleDesign, match=r"needs \d+ bytes, glb holds 1024"):
        plan_tiling(CONV2, dataclasses.replace(ARRAY_32, glb_kib=1.0))
    with pytest.raises(InfeasibleDesign):
        evaluate_network([CONV2], dataclasses.replace(ARRAY_32, glb_kib=1.0))


def test_weight_compression_only_when_smaller() -> None:
    acc = dataclasses.replace(ARRAY_32, glb_kib=4096.0)
    dense_bytes = CONV2.weight_count
    sparse = dataclasses.replace(CONV2, weight_density=0.25)
    c = evaluate_layer(sparse, acc)
    assert c.mapping["dram_weight_bytes"] == pytest.approx(0.25 * dense_bytes + dense_bytes / 8)
    nearly_dense = dataclasses.replace(CONV2, weight_density=0.95)
    assert evaluate_layer(nearly_dense, acc).mapping["dram_weight_bytes"] == dense_bytes
    off = dataclasses.replace(acc, weight_compression=False)
    assert evaluate_layer(sparse, off).mapping["dram_weight_bytes"] == dense_bytes


# --------------------------------------------------------------------------- properties


def test_more_bandwidth_never_adds_cycles() -> None:
    for layer, acc in _feasible_cases(seed=4, n=60):
        slow = evaluate_layer(layer, acc).total_cycles
        fast = evaluate_layer(layer, dataclasses.replace(acc, dram_gbps=acc.dram_gbps * 3))
        assert fast.total_cycles <= slow


def test_fewer_bits_never_add_mac_energy() -> None:
    rng = np.random.default_rng(5)
    acc = AcceleratorSpec(glb_kib=4096.0)
    for _ in range(60):
        layer = _random_layer(rng, weight_bits=16, input_bits=16)
        base = evaluate_layer(layer, acc).mac_energy_pj
        for wb, ib in ((8, 16), (16, 8), (8, 8), (4, 8), (2, 4)):
            fewer = dataclasses.replace(layer, weight_bits=wb, input_bits=ib)
            e = evaluate_layer(fewer, acc).mac_energy_pj
            assert e <= base
            base_same_w = evaluate_layer(dataclasses.replace(layer, weight_bits=wb), acc)
            assert e <= base_same_w.mac_energy_pj


def test_more_pes_never_increase_compute_cycles_when_evenly_divisible() -> None:
    rng = np.random.default_rng(6)
    for _ in range(60):
        df = str(rng.choice(["ws", "os", "is"]))
        small = (int(rng.choice([4, 8, 16])), int(rng.choice([4, 8, 16])))
        big = (small[0] * int(rng.choice([1, 2, 4])), small[1] * int(rng.choice([1, 2, 4])))
        # Make every spatial extent a multiple of the bigger array's sides (8x8 ofmap for
        # os/is, whose pixel dimension is spatial; 64 is a multiple of every side drawn).
        r = int(rng.choice([1, 3]))
        m1, m2, free = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 50))
        if df == "ws":  # rows = R*S*C, cols = K
            c, k = big[0] * m1, big[1] * m2
        elif df == "os":  # rows = E*F = 64, cols = K
            c, k = free, big[1] * m2
        else:  # rows = R*S*C, cols = E*F = 64
            c, k = big[0] * m1, free
        layer = ConvLayer("l", 7 + r, 7 + r, r, r, c, k, 1)
        assert layer.ofmap_h * layer.ofmap_w % big[0] == 0 and 64 % big[1] == 0
        a = AcceleratorSpec(dataflow=df, pe_rows=small[0], pe_cols=small[1], glb_kib=4096.0)
        b = dataclasses.replace(a, pe_rows=big[0], pe_cols=big[1])
        assert evaluate_layer(layer, b).compute_cycles <= evaluate_layer(layer, a).compute_cycles


def test_zero_gating_scales_multiplier_energy_by_density() -> None:
    sparse = dataclasses.replace(CONV2, weight_density=0.5)
    gated = evaluate_layer(sparse, ARRAY_32).mac_energy_pj
    plain = evaluate_layer(sparse, dataclasses.replace(ARRAY_32, zero_gating=False))
    assert gated == pytest.approx(CONV2.macs * (0.2 * 0.5 + 0.1))
    assert plain.mac_energy_pj == pytest.approx(CONV2.macs * (0.2 + 0.1))


# --------------------------------------------------------------------------- costs add up


def test_costs_add_up() -> None:
    layers = [
        CONV2,
        ConvLayer("down", 58, 58, 3, 3, 64, 128, 2),
        ConvLayer("pw", 28, 28, 1, 1, 128, 256, 1, weight_density=0.3),
        ConvLayer("fc", 1, 1, 1, 1, 512, 1000, 1),
    ]
    report = evaluate_network(layers, ARRAY_32)
    t = report.total
    assert len(report.layers) == 4
    assert t.energy_pj == pytest.approx(sum(c.energy_pj for c in report.layers), rel=1e-12)
    assert t.total_cycles == sum(c.total_cycles for c in report.layers)
    assert t.compute_cycles == sum(c.compute_cycles for c in report.layers)
    assert t.dram_read_bytes == sum(c.dram_read_bytes for c in report.layers)
    assert t.macs == sum(layer.macs for layer in layers)
    assert t.latency_ms == pytest.approx(sum(c.latency_ms for c in report.layers))
    for field in ("mac_energy_pj", "rf_energy_pj", "glb_energy_pj", "dram_energy_pj"):
        assert getattr(t, field) == pytest.approx(sum(getattr(c, field) for c in report.layers))
    assert report.power_w == pytest.approx(t.energy_pj * 1e-12 / (t.latency_ms * 1e-3))
    assert report.area_mm2 == pytest.approx(area_mm2(ARRAY_32, weight_bits=8, input_bits=8))
    json.dumps(report.to_dict())


def test_single_layer_network_equals_layer() -> None:
    report = evaluate_network([CONV2], ARRAY_32)
    layer = evaluate_layer(CONV2, ARRAY_32)
    assert isinstance(report.total, LayerCost) and report.total.name == "total"
    assert report.total.total_cycles == layer.total_cycles
    assert report.total.energy_pj == pytest.approx(layer.energy_pj)


# --------------------------------------------------------------------------- TPU v1 anchor


def test_tpu_v1_peak_and_memory_bound_fc() -> None:
    tpu = load_accelerator_yaml(ROOT / "experiments/accelerators/tpu_v1_like.yaml")
    model = make_model(tpu)
    assert isinstance(model, SystolicModel)
    assert model.peak_ops_per_s == 2 * 256 * 256 * 700e6
    assert model.peak_ops_per_s / 1e12 == pytest.approx(91.75, abs=0.01)
    fc = ConvLayer("fc", 1, 1, 1, 1, 2048, 2048, 1)  # batch-1 MLP layer, int8
    c = model.evaluate_layer(fc)
    assert c.mapping["dram_cycles"] > c.mapping["compute_cycles_overlapped"]
    assert c.mapping["bound"] == "memory"
    assert c.total_cycles == math.ceil(c.mapping["dram_cycles"])
    assert c.dram_read_bytes >= 2048 * 2048  # every weight comes from DRAM once


# --------------------------------------------------------------------------- energy and area


def test_energy_tables_match_their_sources() -> None:
    assert tables.mult_pj(8, 8) == pytest.approx(0.2)
    assert tables.mult_pj(32, 32) == pytest.approx(3.2)  # table: 3.1 (+3 %)
    assert tables.add_pj(32) == pytest.approx(0.1)
    assert tables.add_pj(8) == pytest.approx(0.025)  # table: 0.03
    errors = tables.sram_fit_errors()
    assert errors == pytest.approx([-0.0403, -0.0403, 0.0858], abs=1e-3)
    assert tables.sram_pj_per_bit(8 * 1024) * 64 == pytest.approx(10.0, rel=0.05)
    assert tables.DRAM_PJ_PER_BIT["lpddr4"] == 8.0 and tables.DRAM_PJ_PER_BIT["ddr3"] == 70.0


def test_energy_breakdown_of_conv2() -> None:
    c = evaluate_layer(CONV2, ARRAY_32)
    assert c.mac_energy_pj == pytest.approx(CONV2.macs * 0.3)
    rf_bit = tables.sram_pj_per_bit(4)
    assert c.rf_energy_pj == pytest.approx(CONV2.macs * (8 + 8 + 32) * rf_bit)
    dram_bytes = c.dram_read_bytes + c.dram_write_bytes
    assert c.dram_energy_pj == pytest.approx(dram_bytes * 8 * 8.0)
    glb_bits = 576 * 64 * 8 + 2 * 576 * 3136 * 8 + (2 * 18 - 1) * 64 * 3136 * 32
    glb_bits += 8 * dram_bytes
    assert c.glb_energy_pj == pytest.approx(glb_bits * tables.sram_pj_per_bit(64 * 1024))


def test_area_fits_and_totals() -> None:
    assert tables.mult_area_um2(8, 8) == pytest.approx(282.0)
    assert tables.mult_area_um2(32, 32) == pytest.approx(3495.0)
    assert tables.add_area_um2(8) == pytest.approx(36.0)
    assert tables.add_area_um2(32) == pytest.approx(137.0)
    assert tables.SRAM_AREA_UM2_PER_KIB == pytest.approx(594_786 / 162)
    pe = 282.0 + 137.0 + 32 * tables.REG_AREA_UM2_PER_BIT
    expected = (1024 * pe + 64 * tables.SRAM_AREA_UM2_PER_KIB) * 1e-6
    assert area_mm2(ARRAY_32, weight_bits=8, input_bits=8) == pytest.approx(expected)
    assert area_mm2(ARRAY_32, weight_bits=4, input_bits=8) < expected
    bigger = dataclasses.replace(ARRAY_32, glb_kib=128.0)
    assert area_mm2(bigger, weight_bits=8, input_bits=8) > expected


# --------------------------------------------------------------------------- validation


def test_validate_accelerator_accepts_the_default() -> None:
    assert validate_accelerator(AcceleratorSpec()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pe_rows", 0),
        ("pe_cols", -4),
        ("pe_rows", 2.5),
        ("pe_cols", True),
        ("glb_kib", 0.0),
        ("rf_bytes", 0),
        ("dram_gbps", -1.0),
        ("freq_mhz", float("nan")),
        ("freq_mhz", "fast"),
        ("template", "eyeriss"),
        ("dataflow", "rs"),
        ("dram_type", "ddr5"),
        ("zero_gating", "yes"),
    ],
)
def test_validate_accelerator_names_field_and_value(field: str, value: object) -> None:
    acc = dataclasses.replace(AcceleratorSpec(), **{field: value})
    problems = validate_accelerator(acc)
    assert len(problems) == 1
    assert problems[0].startswith(f"{field}: ")
    assert repr(value) in problems[0]
    with pytest.raises(SpecError, match=field):
        evaluate_network([CONV2], acc)


def test_validate_accelerator_collects_all_problems() -> None:
    acc = AcceleratorSpec(pe_rows=0, pe_cols=0, dataflow="xx")
    assert len(validate_accelerator(acc)) == 3


def test_bad_layers_raise_spec_error() -> None:
    with pytest.raises(SpecError, match="filter_h"):
        evaluate_layer(ConvLayer("big", 2, 8, 3, 3, 4, 4, 1), ARRAY_32)
    with pytest.raises(SpecError, match="channels"):
        evaluate_layer(ConvLayer("zero", 8, 8, 3, 3, 0, 4, 1), ARRAY_32)
    with pytest.raises(SpecError, match="weight_density"):
        evaluate_layer(dataclasses.replace(CONV2, weight_density=0.0), ARRAY_32)
    with pytest.raises(SpecError, match="no layers"):
        evaluate_network([], ARRAY_32)


def test_padding_is_supported() -> None:
    same = ConvLayer("same", 56, 56, 3, 3, 64, 64, 1, padding=1)
    assert (same.ofmap_h, same.ofmap_w) == (56, 56)
    assert evaluate_layer(same, ARRAY_32).compute_cycles == 116_279


def test_model_is_picklable_and_pure() -> None:
    model = make_model(ARRAY_32)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.evaluate_layer(CONV2) == model.evaluate_layer(CONV2)
    assert model.evaluate_layer(CONV2) == model.evaluate_layer(CONV2)
    assert model.acc == ARRAY_32
