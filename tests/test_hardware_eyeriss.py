"""The ``eyeriss`` row-stationary template: the Eyeriss chip anchor, properties, errors."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import random
import time
from pathlib import Path

import pytest
import yaml

from evaluators.hardware import read_layers_csv, tables
from evaluators.hardware.eyeriss import (
    EYERISS_KEYS,
    MAPPER_OBJECTIVES,
    AccessEnergies,
    EyerissModel,
    EyerissSpec,
    check_field,
    chip_power_w,
    plan_row_stationary,
)
from evaluators.specs import (
    AcceleratorSpec,
    ConvLayer,
    InfeasibleDesign,
    LayerCost,
    SpecError,
)

ROOT = Path(__file__).resolve().parents[1]
EYERISS_YAML = ROOT / "experiments/accelerators/eyeriss_like.yaml"
ALEXNET_CSV = ROOT / "experiments/layers/alexnet_conv.csv"

# Chen et al., JSSC 2017: AlexNet CONV1-5, batch 4: 35 frames/s at 278 mW (chip, no DRAM).
ANCHOR_FPS, ANCHOR_MW, ANCHOR_BATCH = 35.0, 278.0, 4
B16 = {"weight_bits": 16, "input_bits": 16, "output_bits": 16}


def b16(layer: ConvLayer, batch: int = 1) -> ConvLayer:
    return dataclasses.replace(layer, batch=batch, **B16)


def conv(name: str, hw: int, k: int, c: int, m: int, **kw: int) -> ConvLayer:
    return ConvLayer(name, hw, hw, k, k, c, m, **{**B16, **kw})


def random_layers(n: int, seed: int = 0) -> list[ConvLayer]:
    """Small layers of every kind: strides, padding, groups (depthwise too), FC, batches."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.choice([1, 1, 3, 3, 5, 7])
        g = rng.choice([1, 1, 1, 2, 4])
        c, m = g * rng.randint(1, 20), g * rng.randint(1, 20)
        if rng.random() < 0.1:  # depthwise
            g = c = m = rng.randint(2, 32)
        hw = rng.randint(k, 36)
        if rng.random() < 0.1:  # fully connected: a 1x1 conv on a 1x1 map
            hw, k = 1, 1
        out.append(
            ConvLayer(f"L{i}", hw, hw, k, k, c, m, stride=rng.choice([1, 1, 2]),
                      padding=rng.choice([0, k // 2]), batch=rng.choice([1, 2, 4]), groups=g,
                      **B16)
        )
    return out


LAYERS = random_layers(60)


@pytest.fixture(scope="module")
def spec() -> EyerissSpec:
    data = yaml.safe_load(EYERISS_YAML.read_text())
    return EyerissSpec.from_dict(data)


# JSSC 2017 Table V per layer: chip power (mW) and the fraction of zero input activations
# (transcribed in benchmarks/eyeriss_anchor.py, which cites the two sources).
TABLE_V_MW_ZEROS = {"Conv1": (332.0, 0.0001), "Conv2": (288.0, 0.387), "Conv3": (266.0, 0.725),
                    "Conv4": (235.0, 0.793), "Conv5": (236.0, 0.776)}


def table_v_density(row_name: str) -> float:
    """The non-zero input fraction Table V measured for a CSV row's layer (Conv2_g1: Conv2)."""
    return 1.0 - TABLE_V_MW_ZEROS[row_name.split("_g")[0]][1]


@pytest.fixture(scope="module")
def alexnet(spec: EyerissSpec) -> list[ConvLayer]:
    """The anchor workload: AlexNet CONV1-5 at batch 4, 16 bit, the inputs' zeros of Table V."""
    return [dataclasses.replace(b16(layer, ANCHOR_BATCH),
                                input_density=table_v_density(layer.name))
            for layer in read_layers_csv(ALEXNET_CSV)]


@pytest.fixture(scope="module")
def anchor(spec: EyerissSpec, alexnet: list[ConvLayer]):  # noqa: ANN201
    return EyerissModel(spec).evaluate_network(alexnet)


# --------------------------------------------------------------------------- workload and files


def test_alexnet_csv_has_the_666m_macs_eyeriss_measured() -> None:
    layers = read_layers_csv(ALEXNET_CSV)
    per_image = sum(layer.macs for layer in layers)
    assert per_image == 665_784_864  # CONV1-5 of the grouped AlexNet, 227 x 227 input
    assert abs(per_image / 666e6 - 1) < 1e-3
    assert [layer.ofmap_h for layer in layers] == [55, 27, 27, 13, 13, 13, 13, 13]


def test_yaml_is_the_chip_and_every_key_is_a_field(spec: EyerissSpec) -> None:
    data = yaml.safe_load(EYERISS_YAML.read_text())
    assert set(data) == set(EYERISS_KEYS)
    assert spec == EyerissSpec()
    assert spec.validate() == []
    assert EyerissSpec.from_dict(spec.to_dict()) == spec


# --------------------------------------------------------------------------- the anchor


def test_anchor_frame_rate_within_30_percent(anchor) -> None:  # noqa: ANN001
    fps = ANCHOR_BATCH / (anchor.total.latency_ms * 1e-3)
    assert 0.7 <= fps / ANCHOR_FPS <= 1.3, fps


def test_anchor_power_within_30_percent(anchor) -> None:  # noqa: ANN001
    """Chip power (DRAM excluded) against 278 mW: accesses with data gating at Table V's zeros,
    leakage, and the register spads clocked every cycle (Aladdin's per-bit clock energy); no
    constant is fitted to the chip (docs/hardware/eyeriss.md, section 9)."""
    ratio = chip_power_w(anchor) * 1e3 / ANCHOR_MW
    assert 0.7 <= ratio <= 1.3, ratio
    assert anchor.power_w > chip_power_w(anchor)  # the report's power includes DRAM
    seconds = anchor.total.latency_ms * 1e-3
    leak_w = anchor.total.leakage_energy_pj * 1e-12 / seconds
    clock_w = anchor.total.clock_energy_pj * 1e-12 / seconds
    for c in anchor.layers:  # both are static: the same power in every layer
        assert c.mapping["leakage_w"] == pytest.approx(leak_w)
        assert c.mapping["clock_w"] == pytest.approx(clock_w)
    assert 0 < leak_w < clock_w < chip_power_w(anchor)


def test_register_spads_are_clocked_every_cycle(anchor) -> None:  # noqa: ANN001
    """168 PEs x (12 + 24) words x 16 bit, each bit 7.94 fJ per cycle at 40 nm (Aladdin),
    x 1.454 to 65 nm: 223 mW at 200 MHz, busy or idle."""
    bits = 168 * (12 + 24) * 16
    per_cycle_pj = bits * tables.ALADDIN_REG_CLOCK_FJ_PER_BIT * 1e-3 * tables.energy_scale(65, 40)
    for c in anchor.layers:
        assert c.mapping["register_bits"] == bits == 96_768
        assert c.clock_energy_pj == pytest.approx(per_cycle_pj * c.total_cycles, rel=1e-12)
    assert anchor.layers[0].mapping["clock_w"] == pytest.approx(0.223, abs=0.001)
    # literal figures of docs/hardware/eyeriss.md (sections 6 and 7)
    assert tables.reg_clock_pj_per_bit() * tables.energy_scale(65) == pytest.approx(
        0.011542, rel=1e-4)
    leak = bits * tables.reg_leakage_w_per_bit() * tables.energy_scale(65)
    assert leak == pytest.approx(0.0104, abs=1e-4)  # of the chip's 40.1 mW
    assert anchor.layers[0].mapping["leakage_w"] == pytest.approx(0.0401, abs=1e-4)


@pytest.mark.parametrize("objective", MAPPER_OBJECTIVES)
def test_data_gating_skips_filter_spad_reads_and_macs_on_zero_inputs(objective: str) -> None:
    """Zero inputs save exactly (1 - density) x MACs x (MAC + filter-spad read); the mapping
    (chosen on dense inputs), the cycles and every other access stay."""
    spec = EyerissSpec(mapper_objective=objective)
    model, en = EyerissModel(spec), AccessEnergies.of(spec)
    for layer in LAYERS[:20]:
        dense = model.evaluate_layer(layer)
        for density in (0.6, 0.25):
            c = model.evaluate_layer(dataclasses.replace(layer, input_density=density))
            saved = (1 - density) * layer.macs * (en.mac + en.filter_spad)
            assert dense.energy_pj - c.energy_pj == pytest.approx(saved, rel=1e-9), layer
            assert c.mapping["gated_macs"] == pytest.approx((1 - density) * layer.macs)
            assert (c.total_cycles, c.dram_read_bytes, c.glb_energy_pj) == (
                dense.total_cycles, dense.dram_read_bytes, dense.glb_energy_pj)
            same = {k: v for k, v in c.mapping.items() if "energy" not in k
                    and "spad" not in k and k != "gated_macs"}
            assert same == {k: dense.mapping[k] for k in same}, layer


def test_anchor_runs_compute_bound_with_the_chip_pe_sets(anchor) -> None:  # noqa: ANN001
    by_name = {c.name: c for c in anchor.layers}
    assert all(c.mapping["bound"] == "compute" for c in anchor.layers)
    # CONV1 (11 filter rows, 55 ofmap rows): one 11-row set per 14-column strip (or two
    # side by side on 7-column strips): 11 * 55 / 4 PEs busy on average.
    assert by_name["Conv1"].mapping["avg_active_pes"] == pytest.approx(11 * 55 / 4)
    # CONV2 (5 x 27): two stacked 5-row sets on strips of 14 + 13 ofmap rows: 135 PEs.
    assert by_name["Conv2_g1"].mapping["avg_active_pes"] == pytest.approx(135.0)


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("objective", MAPPER_OBJECTIVES)
def test_dram_traffic_never_below_compulsory(objective: str) -> None:
    model = EyerissModel(EyerissSpec(mapper_objective=objective))
    for layer in LAYERS:
        c = model.evaluate_layer(layer)
        moved = c.dram_read_bytes + c.dram_write_bytes
        compulsory = c.mapping["dram_compulsory_bytes"]
        weights_and_outputs = (layer.weight_count + layer.num_filters * layer.ofmap_h
                               * layer.ofmap_w * layer.batch) * 2
        assert moved >= compulsory >= weights_and_outputs, layer


@pytest.mark.parametrize("objective", MAPPER_OBJECTIVES)
def test_more_bandwidth_never_adds_cycles(objective: str) -> None:
    for layer in LAYERS[:30]:
        prev = math.inf
        for gbps in (0.05, 0.2, 0.72, 2.0, 16.0, 1000.0):
            c = EyerissModel(EyerissSpec(dram_gbps=gbps, mapper_objective=objective)
                             ).evaluate_layer(layer)
            assert c.total_cycles <= prev, (layer, gbps)
            assert c.total_cycles >= c.compute_cycles
            prev = c.total_cycles


GLB_SWEEP = (10.0, 12.0, 16.0, 24.0, 40.0, 64.0, 108.0, 256.0, 1024.0)


def _glb_sweep(layer: ConvLayer, objective: str) -> list:  # noqa: ANN001
    out = []
    for kib in GLB_SWEEP:
        try:
            out.append(EyerissModel(EyerissSpec(glb_kib=kib, mapper_objective=objective)
                                    ).evaluate_layer(layer))
        except InfeasibleDesign:
            assert not out, "a layer that fits a GLB must fit every bigger one"
    return out


def test_bigger_glb_never_adds_dram_traffic() -> None:
    """Guaranteed when the mapper minimizes DRAM traffic (``mapper_objective: dram``)."""
    for layer in LAYERS:
        costs = _glb_sweep(layer, "dram")
        moved = [c.dram_read_bytes + c.dram_write_bytes for c in costs]
        assert moved == sorted(moved, reverse=True), layer
        assert costs, layer


def _ranked(c: LayerCost) -> float:
    """The energy the mapper ranks: accesses plus the register clock over the compute cycles
    (a bigger GLB does leak more, so leakage is not ranked)."""
    per_cycle = c.clock_energy_pj / c.total_cycles
    return c.energy_pj - c.leakage_energy_pj - c.clock_energy_pj + per_cycle * c.compute_cycles


@pytest.mark.parametrize(
    ("objective", "key"),
    [
        ("edp", lambda c: _ranked(c) * c.compute_cycles),
        ("energy", _ranked),
        ("dram", lambda c: c.dram_read_bytes + c.dram_write_bytes),
    ],
)
def test_bigger_glb_never_worsens_what_the_mapper_minimizes(objective: str, key) -> None:  # noqa: ANN001
    for layer in LAYERS:
        values = [key(c) for c in _glb_sweep(layer, objective)]
        assert all(b <= a * (1 + 1e-12) for a, b in zip(values, values[1:])), layer


def test_utilization_at_most_one_and_pes_never_oversubscribed() -> None:
    model = EyerissModel(EyerissSpec())
    for layer in LAYERS:
        c = model.evaluate_layer(layer)
        assert 0 < c.utilization <= c.mapping_utilization <= 1.0 + 1e-12, layer
        m = c.mapping
        sets = m["sets_c"] * m["sets_k"] * m["sets_g"]
        assert m["set_rows"] * m["sets_c"] <= 12 and m["set_cols"] <= 14
        assert sets * m["set_rows"] * m["set_cols"] <= 168, layer
        assert c.compute_cycles >= m["ideal_cycles"]


def test_scratchpads_hold_what_the_mapping_puts_in_them() -> None:
    spec = EyerissSpec()
    for layer in LAYERS:
        m = plan_row_stationary(layer, spec)
        s = layer.filter_w
        assert m["q"] * s <= spec.ifmap_spad_words
        assert m["p"] * m["q"] * s <= spec.filter_spad_words
        assert m["p"] <= spec.psum_spad_words
        assert m["glb_words_used"] <= m["glb_words"]


def test_layer_costs_add_up_to_the_network(anchor) -> None:  # noqa: ANN001
    t, layers = anchor.total, anchor.layers
    for field in ("macs", "compute_cycles", "total_cycles", "dram_read_bytes",
                  "dram_write_bytes"):
        assert getattr(t, field) == sum(getattr(c, field) for c in layers), field
    for field in ("mac_energy_pj", "rf_energy_pj", "glb_energy_pj", "dram_energy_pj",
                  "leakage_energy_pj", "clock_energy_pj", "latency_ms", "energy_pj"):
        assert getattr(t, field) == pytest.approx(sum(getattr(c, field) for c in layers))
    assert anchor.power_w == pytest.approx(t.energy_pj * 1e-12 / (t.latency_ms * 1e-3))
    assert t.latency_ms == pytest.approx(t.total_cycles / (200.0 * 1e3))


def test_a_grouped_conv_costs_what_its_groups_cost(spec: EyerissSpec) -> None:
    """AlexNet CONV2 as one grouped layer equals its two CSV rows (one group each)."""
    model = EyerissModel(spec)
    grouped = ConvLayer("Conv2", 31, 31, 5, 5, 96, 256, batch=4, groups=2, **B16)
    half = ConvLayer("Conv2_g1", 31, 31, 5, 5, 48, 128, batch=4, **B16)
    g, h = model.evaluate_layer(grouped), model.evaluate_layer(half)
    assert g.macs == 2 * h.macs
    assert g.compute_cycles == 2 * h.compute_cycles
    assert g.dram_read_bytes + g.dram_write_bytes == 2 * (h.dram_read_bytes + h.dram_write_bytes)
    assert g.energy_pj == pytest.approx(2 * h.energy_pj)


def test_fully_connected_and_depthwise_layers_run() -> None:
    model = EyerissModel(EyerissSpec())
    fc = model.evaluate_layer(ConvLayer("fc6", 1, 1, 1, 1, 9216, 4096, **B16))
    m = fc.mapping
    # 1x1 sets of one PE: 12 channel sets stacked x 14 filter sets, 12 channels x 18 filters
    # per PE; nearly every PE busy, but every weight is used once per image, so batch 1 is
    # DRAM-bound (docs: section Fully connected and depthwise layers).
    assert (m["set_rows"], m["set_cols"]) == (1, 1)
    assert fc.mapping_utilization > 0.99 and m["bound"] == "memory"
    assert fc.utilization < 0.02
    batched = model.evaluate_layer(ConvLayer("fc6", 1, 1, 1, 1, 9216, 4096, batch=16, **B16))
    assert batched.utilization > 3 * fc.utilization
    dw = model.evaluate_layer(conv("dw", 56, 3, 144, 144, padding=1, groups=144))
    assert dw.mapping["sets_g"] > 1  # groups run side by side on separate PE sets
    assert 0 < dw.utilization <= dw.mapping_utilization <= 1


def test_instances_pickle_and_mappings_are_json(spec: EyerissSpec) -> None:
    model = pickle.loads(pickle.dumps(EyerissModel(spec)))
    layer = conv("c", 28, 3, 32, 32, padding=1)
    cost = model.evaluate_layer(layer)
    json.dumps(cost.mapping)
    assert cost == EyerissModel(spec).evaluate_layer(layer)  # pure: same answer again
    assert cost.mapping["template"] == "eyeriss" and cost.mapping["dataflow"] == "rs"


def test_a_full_array_layer_is_fully_utilized() -> None:
    # 3x3 conv on a 56-row ofmap: 4 stacked 3-row sets x 4 strips of 14 rows = all 168 PEs
    c = EyerissModel(EyerissSpec()).evaluate_layer(conv("r18", 56, 3, 64, 64, padding=1))
    assert c.mapping_utilization == pytest.approx(1.0)
    assert c.compute_cycles == c.mapping["ideal_cycles"]


# --------------------------------------------------------------------------- errors


def test_a_filter_row_wider_than_the_ifmap_spad_is_infeasible() -> None:
    model = EyerissModel(EyerissSpec())
    with pytest.raises(InfeasibleDesign, match=r"filter row of 13 weights.*ifmap_spad_words=12"):
        model.evaluate_layer(ConvLayer("wide", 40, 40, 3, 13, 8, 8, **B16))
    small = EyerissModel(EyerissSpec(filter_spad_words=8))
    with pytest.raises(InfeasibleDesign, match=r"filter_spad_words=8"):
        small.evaluate_layer(conv("c1", 227, 11, 3, 96, stride=4))


def test_tall_filters_fold_over_the_pe_rows() -> None:
    c = EyerissModel(EyerissSpec()).evaluate_layer(ConvLayer("tall", 40, 40, 13, 3, 8, 8,
                                                             **B16))
    assert c.mapping["row_folds"] == 2 and c.mapping["set_rows"] == 7


def test_a_glb_too_small_for_any_tile_is_infeasible() -> None:
    model = EyerissModel(EyerissSpec(glb_kib=8.5, glb_filter_kib=8.0))
    with pytest.raises(InfeasibleDesign, match=r"smallest tile .* global buffer holds 256"):
        model.evaluate_layer(conv("r18", 56, 3, 64, 64, padding=1))


def test_layers_wider_than_the_datapath_are_infeasible() -> None:
    model = EyerissModel(EyerissSpec())
    with pytest.raises(InfeasibleDesign, match=r"32-bit operands.*word_bits=16"):
        model.evaluate_layer(ConvLayer("f", 8, 8, 3, 3, 4, 4, weight_bits=32))
    narrow = model.evaluate_layer(ConvLayer("i8", 8, 8, 3, 3, 4, 4))  # 8 bit runs at 16
    assert narrow.energy_pj == pytest.approx(
        model.evaluate_layer(ConvLayer("i16", 8, 8, 3, 3, 4, 4, **B16)).energy_pj
    )


def test_out_of_domain_layers_raise_spec_error() -> None:
    with pytest.raises(SpecError, match="groups: must divide"):
        EyerissModel(EyerissSpec()).evaluate_layer(conv("g", 8, 3, 6, 4, groups=4))


@pytest.mark.parametrize(
    "field", ["pe_rows", "pe_cols", "ifmap_spad_words", "filter_spad_words",
              "psum_spad_words", "word_bits"]
)
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "12"])
def test_validate_catches_bad_integer_sizes(field: str, bad: object) -> None:
    problems = EyerissSpec(**{field: bad}).validate()
    assert len(problems) == 1
    assert problems[0].startswith(f"{field}: must be an integer > 0, got {bad!r}")
    with pytest.raises(SpecError, match=field):
        EyerissModel(EyerissSpec(**{field: bad}))


@pytest.mark.parametrize("field", ["glb_kib", "dram_gbps", "freq_mhz"])
@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, "108"])
def test_validate_catches_bad_positive_numbers(field: str, bad: object) -> None:
    problems = EyerissSpec(**{field: bad}).validate()
    assert any(p.startswith(f"{field}: must be a finite number > 0, got {bad!r}")
               for p in problems), problems


def test_validate_lists_every_problem_and_cross_field_rules() -> None:
    spec = EyerissSpec(pe_rows=0, glb_kib=-1.0, dram_type="ddr9", process_nm=45,
                       mapper_objective="speed", glb_filter_kib=-1.0)
    fields = [p.split(":")[0] for p in spec.validate()]
    assert fields == ["pe_rows", "glb_kib", "glb_filter_kib", "dram_type", "process_nm",
                      "mapper_objective"]
    assert EyerissSpec(glb_kib=8.0).validate() == [
        "glb_filter_kib: must be below glb_kib (8; the rest holds ifmaps and partial sums), "
        "got 8.0"
    ]
    with pytest.raises(SpecError) as err:
        EyerissModel(spec)
    assert str(err.value).count(";") == 5  # all six problems in one message


def test_the_model_takes_only_an_eyeriss_spec() -> None:
    with pytest.raises(SpecError, match="takes a EyerissSpec"):
        EyerissModel(AcceleratorSpec())  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"bogus: unknown key; known eyeriss keys: pe_rows"):
        EyerissSpec.from_dict({"bogus": 1})
    assert check_field("glb_kib", 64)[0] == 64.0 and isinstance(check_field("glb_kib", 64)[0],
                                                                 float)
    assert check_field("nope", 1)[1].startswith("unknown field")


# --------------------------------------------------------------------------- energy table


def test_per_access_energies_at_the_chip_configuration() -> None:
    e = AccessEnergies.of(EyerissSpec())
    mac16 = 0.208 * (0.8 * 4 + 0.2)  # 8x8 mult x4 (quadratic), 16-bit add x1
    assert e.mac == pytest.approx(mac16)
    assert e.ifmap_spad == pytest.approx(0.20)
    assert e.filter_spad == pytest.approx(1.98 * math.sqrt(224 / 192))
    assert e.psum_spad == pytest.approx(0.25 * math.sqrt(24 / 16))
    assert e.glb_read == pytest.approx(18.18 / 4) and e.glb_write == pytest.approx(14.14 / 4)
    assert e.noc_hop == pytest.approx(2 * mac16)
    assert e.dram == pytest.approx(512 / 64 * 16)  # LPDDR4 8 pJ/bit
    e8 = AccessEnergies.of(EyerissSpec(word_bits=8))
    assert e8.mac == pytest.approx(0.208 * (0.8 + 0.2 * 0.5))
    assert e8.dram == pytest.approx(e.dram / 2)


def test_area_is_a_bottom_up_lower_bound_of_the_die() -> None:
    area = EyerissModel(EyerissSpec()).area_mm2(weight_bits=16, input_bits=16)
    assert 1.0 < area < 12.25  # Eyeriss core 3.5 x 3.5 mm (ISSCC 2016); ours has no overhead
    bigger = EyerissModel(EyerissSpec(glb_kib=216.0)).area_mm2(weight_bits=16, input_bits=16)
    assert bigger > area


# --------------------------------------------------------------------------- speed


def test_alexnet_prices_in_a_few_milliseconds(spec: EyerissSpec, alexnet) -> None:  # noqa: ANN001
    model = EyerissModel(spec)
    model.evaluate_network(alexnet)  # warm the shape caches
    t0 = time.perf_counter()
    for _ in range(5):
        model.evaluate_network(alexnet)
    per_network_ms = (time.perf_counter() - t0) / 5 * 1e3
    assert per_network_ms < 50.0, per_network_ms  # about 2 ms on the development machine
