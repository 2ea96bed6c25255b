"""Batch pricing: ``price_batch`` gives ``price_each``'s numbers, configuration by configuration
(systolic ones with arrays over configurations)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from evaluators.hardware import EyerissSpec, FpgaSpec, GpuSpec, systolic
from evaluators.hardware.batch import METRICS, BatchPrices, price_batch, price_each
from evaluators.hardware.systolic import SystolicModel, tiling_candidates
from evaluators.specs import (
    DATAFLOW_CHOICES,
    DRAM_TYPES,
    MAPPER_OBJECTIVES,
    PE_TYPES,
    SRAM_DEVICES,
    AcceleratorSpec,
    Budgets,
    ConvLayer,
    NetworkSpec,
    SpecError,
    StageSpec,
)
from evaluators.training import extract_layers


def mobilenet() -> tuple[ConvLayer, ...]:
    """Depthwise and stride-2 layers, unstructured 50 % pruning, one sparse input."""
    spec = NetworkSpec("mobilenetv2", 3, 32, 10,
                       (StageSpec(1, 16, 3, 1), StageSpec(2, 24, 3, 2, expansion=6),
                        StageSpec(1, 32, 3, 2, expansion=6)), prune_ratio=0.5)
    return extract_layers(spec, input_density={"s1b0_dw": 0.4, "s1b0_project": 0.55})


def resnet() -> tuple[ConvLayer, ...]:
    """Mixed precision per stage (2-, 4- and 8-bit operands), 2:4 sparsity, a 1x1/2 shortcut."""
    spec = NetworkSpec("resnet", 3, 32, 10,
                       (StageSpec(1, 16, 3, 1, weight_bits=4, activation_bits=4),
                        StageSpec(1, 32, 3, 2, weight_bits=2, activation_bits=4)),
                       first_layer_bits=8, last_layer_bits=8, prune_ratio=0.5, prune_mode="nm")
    return extract_layers(spec)


def odd_layers() -> tuple[ConvLayer, ...]:
    """Grouped convs, 16-bit and mixed operands, batch 2, padding, stride 2 and 3, an FC."""
    return (
        ConvLayer("grouped", 19, 19, 3, 3, 32, 64, stride=2, padding=1, groups=4,
                  weight_density=0.3, input_density=0.45),
        ConvLayer("dw5", 23, 23, 5, 5, 48, 48, stride=1, padding=2, groups=48, batch=2),
        ConvLayer("wide16", 9, 9, 3, 3, 40, 72, padding=1, weight_bits=16, input_bits=16,
                  output_bits=16, weight_density=0.8),
        ConvLayer("mixed", 14, 14, 1, 1, 72, 200, weight_bits=3, input_bits=6, stride=3,
                  input_density=0.7),
        ConvLayer("fc", 1, 1, 1, 1, 200, 1000, weight_bits=4, weight_density=0.25),
    )


WORKLOADS = {"mobilenet": mobilenet, "resnet": resnet, "odd": odd_layers}

GPU = GpuSpec(peak_tops_int8=624.0, peak_tops_int4=1248.0, peak_tflops_fp16=312.0,
              peak_tflops_fp32=19.5, dram_gbps=2039.0, l2_mib=40.0, efficiency=0.7,
              bandwidth_efficiency=0.88, clock_mhz=1410.0, tdp_w=400.0, idle_w=60.0,
              dram_pj_per_bit=3.9, die_mm2=826.0, process_nm=7.0, kernel_launch_us=0.0)
# an engine over its DSP budget: priced anyway, its resources say by how much
FPGA = FpgaSpec(device="xczu3eg", unroll_c=16, unroll_k=32, unroll_px=4, freq_mhz=200.0,
                dram_gbps=4.0, dsp_budget=0.5)


def random_acc(rng: np.random.Generator) -> AcceleratorSpec:
    """A systolic configuration with every option drawn; small GLBs and register files make
    some unmappable."""
    pe_type = str(rng.choice(PE_TYPES))
    bits = [2, 4, 8, 16] if pe_type == "bit_fusion" else [1, 2, 4, 8]
    return AcceleratorSpec(
        dataflow=str(rng.choice(DATAFLOW_CHOICES)),
        pe_rows=int(rng.choice([2, 4, 8, 12, 16, 32, 64])),
        pe_cols=int(rng.choice([2, 4, 8, 16, 24, 32, 128])),
        glb_kib=float(rng.choice([0.25, 1.0, 4.0, 16.0, 64.0, 512.0]) * rng.uniform(0.7, 1.4)),
        glb_bytes_per_cycle=float(rng.choice([0.0, rng.uniform(4.0, 512.0)])),
        rf_bytes=int(rng.choice([1, 2, 4, 8])),
        dram_gbps=float(rng.uniform(1.0, 100.0)),
        freq_mhz=float(rng.uniform(100.0, 1500.0)),
        dram_type=str(rng.choice(DRAM_TYPES)),
        double_buffered=bool(rng.random() < 0.5),
        zero_gating=bool(rng.random() < 0.5),
        weight_compression=bool(rng.random() < 0.5),
        zero_skipping=bool(rng.random() < 0.3),
        pe_type=pe_type,
        pe_bits=int(rng.choice(bits)),
        mapper_objective=str(rng.choice(MAPPER_OBJECTIVES)),
        tech_node_nm=float(rng.choice([7.0, 16.0, 22.0, 45.0, 65.0, 130.0])),
        sram_device=str(rng.choice(SRAM_DEVICES)),
    )


def assert_same(a: BatchPrices, b: BatchPrices) -> None:
    assert a.reasons == b.reasons
    np.testing.assert_array_equal(a.mappable, b.mappable)
    np.testing.assert_array_equal(a.total_cycles, b.total_cycles)
    assert a.total_cycles.dtype == b.total_cycles.dtype == np.int64
    for m in METRICS:
        np.testing.assert_allclose(getattr(a, m), getattr(b, m), rtol=1e-12, atol=0,
                                   equal_nan=True, err_msg=m)
    assert a.resources == b.resources


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_batch_equals_one_by_one_on_random_configurations(workload: str) -> None:
    layers = WORKLOADS[workload]()
    rng = np.random.default_rng(sorted(WORKLOADS).index(workload))
    accs = [random_acc(rng) for _ in range(200)]
    # the same shapes at many GLB sizes: configurations share one candidate set
    base = accs[0]
    accs += [dataclasses.replace(base, dataflow=df, glb_kib=float(kib))
             for df in DATAFLOW_CHOICES for kib in np.geomspace(0.5, 256.0, 40)]
    batch, each = price_batch(layers, accs), price_each(layers, accs)
    assert_same(batch, each)
    assert 0 < batch.mappable.sum() < len(accs)  # both kinds drawn
    why = " ".join(r for r in batch.reasons if r)
    assert "needs rf_bytes" in why and "glb holds" in why


def test_glb_sizes_at_every_tile_boundary() -> None:
    """GLB sizes exactly at, just below and just above the candidates' footprints (held and
    streamed), more than one chunk of them: the tile picked at each is ``plan_tiling``'s."""
    layer = ConvLayer("c", 20, 20, 3, 3, 24, 40, padding=1, weight_density=0.5)
    accs = []
    for df in ("ws", "os", "is"):
        acc = AcceleratorSpec(dataflow=df, pe_rows=8, pe_cols=8, rf_bytes=4)
        c = tiling_candidates(layer, acc)
        sizes = np.unique(np.concatenate((c.hold_bytes.ravel(), c.stream_bytes.ravel())))
        sizes = sizes[:: max(1, sizes.size // 60)]
        kib = np.concatenate((sizes, np.nextafter(sizes, 0), np.nextafter(sizes, np.inf))) / 1024
        accs += [dataclasses.replace(acc, glb_kib=float(k)) for k in kib if k > 0]
    assert len(accs) > 200
    prices = price_batch([layer], accs)
    assert_same(prices, price_each([layer], accs))
    assert 0 < prices.mappable.sum() < len(accs)


def test_systolic_configurations_are_not_priced_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mappable systolic configurations never reach the one-design path."""
    layers = mobilenet()
    accs = [AcceleratorSpec(dataflow=df, glb_kib=kib, pe_type=pe)
            for df in DATAFLOW_CHOICES for kib in (64.0, 100.0) for pe in PE_TYPES]
    expected = price_each(layers, accs)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("priced one by one")

    monkeypatch.setattr(SystolicModel, "evaluate_layer", refuse)
    monkeypatch.setattr(systolic, "plan_tiling", refuse)
    assert_same(price_batch(layers, accs), expected)


def test_unmappable_reason_is_the_first_failing_layer() -> None:
    fits = ConvLayer("small", 8, 8, 1, 1, 8, 8)
    big = ConvLayer("big", 64, 64, 3, 3, 256, 256, padding=1)
    accs = [AcceleratorSpec(glb_kib=1.0), AcceleratorSpec(dataflow="os", rf_bytes=2),
            AcceleratorSpec(dataflow="auto", glb_kib=0.3, rf_bytes=2)]
    prices = price_batch([fits, big, big], accs)
    assert not prices.mappable.any()
    assert prices.reasons == price_each([fits, big, big], accs).reasons
    assert prices.reasons[0].startswith("layer 'big': the smallest tile")
    assert "needs rf_bytes >= 4" in prices.reasons[1]
    assert prices.reasons[2].startswith("dataflow auto: no dataflow runs it")
    assert np.isnan(prices.latency_ms).all() and (prices.total_cycles == 0).all()


def test_invalid_specs_are_unmappable_with_every_problem() -> None:
    layers = odd_layers()
    accs = [AcceleratorSpec(pe_rows=0), AcceleratorSpec(),
            AcceleratorSpec(pe_type="bit_fusion", pe_bits=6, dataflow="diagonal"),
            AcceleratorSpec(tech_node_nm=3.0, glb_bytes_per_cycle=-1.0)]
    prices = price_batch(layers, accs)
    assert_same(prices, price_each(layers, accs))
    assert list(prices.mappable) == [False, True, False, False]
    assert prices.reasons[0] == "pe_rows: must be an integer > 0, got 0"
    assert "dataflow: must be one of" in prices.reasons[2] and "pe_bits" in prices.reasons[2]
    assert "tech_node_nm" in prices.reasons[3] and "glb_bytes_per_cycle" in prices.reasons[3]


def test_mixed_templates_keep_their_order() -> None:
    layers = mobilenet()
    rng = np.random.default_rng(7)
    accs = [random_acc(rng), GPU, random_acc(rng), EyerissSpec(), FPGA,
            dataclasses.replace(AcceleratorSpec(), template="eyeriss"), random_acc(rng),
            AcceleratorSpec(glb_kib=256.0)]
    prices = price_batch(layers, accs)
    assert_same(prices, price_each(layers, accs))
    assert len(prices) == len(accs) and prices.mappable[[1, 3, 7]].all()
    assert "template" in prices.reasons[5]
    assert prices.resources[4] is not None  # the FPGA's resource use travels with it
    assert prices.constraint_values(Budgets())["dsp"][4] > 0


def test_a_layer_name_changes_no_number() -> None:
    """Repeated shapes are priced once per call; their names still reach the reasons."""
    a = ConvLayer("a", 30, 30, 3, 3, 64, 64, padding=1)
    layers = [a, dataclasses.replace(a, name="b"), dataclasses.replace(a, name="c")]
    accs = [AcceleratorSpec(), AcceleratorSpec(glb_kib=0.5), AcceleratorSpec(dataflow="os")]
    prices = price_batch(layers, accs)
    assert_same(prices, price_each(layers, accs))
    one = price_batch(layers[:1], accs)
    np.testing.assert_array_equal(prices.total_cycles, 3 * one.total_cycles)
    assert prices.reasons[1].startswith("layer 'a'")


def test_empty_and_bad_workloads() -> None:
    with pytest.raises(SpecError, match="no layers"):
        price_batch([], [AcceleratorSpec()])
    bad = ConvLayer("bad", 8, 8, 3, 3, 8, 8, weight_density=1.5)
    with pytest.raises(SpecError, match="weight_density"):
        price_batch([bad], [AcceleratorSpec(), GPU])
    empty = price_batch(odd_layers(), [])
    assert len(empty) == 0 and empty.latency_ms.shape == (0,)
