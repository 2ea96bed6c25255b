"""The ``gpu`` roofline template: roofline properties, energy model, YAML reader, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from pathlib import Path

import pytest
import yaml

from codesign.cli import main
from evaluators.hardware import (
    MODELS,
    GpuRooflineModel,
    GpuSpec,
    SystolicModel,
    accelerator_yaml_problems,
    evaluate_network,
    load_accelerator_yaml,
    make_model,
    read_layers_csv,
)
from evaluators.hardware.gpu import GPU_KEYS, GPU_REQUIRED_KEYS, dram_power_w
from evaluators.specs import AcceleratorSpec, ConvLayer, InputError, SpecError

ROOT = Path(__file__).resolve().parents[1]
A100_YAML = ROOT / "experiments/accelerators/gpu_a100_like.yaml"
CONV2_CSV = ROOT / "experiments/layers/resnet18_conv2.csv"

# A100 SXM4 80GB datasheet figures, with round assumed fractions and no launch cost, so the
# two roofs are exact in the property tests.
SPEC = GpuSpec(
    peak_tops_int8=624.0,
    peak_tops_int4=1248.0,
    peak_tflops_fp16=312.0,
    peak_tflops_fp32=19.5,
    dram_gbps=2039.0,
    l2_mib=40.0,
    efficiency=0.7,
    bandwidth_efficiency=0.88,
    clock_mhz=1410.0,
    tdp_w=400.0,
    idle_w=60.0,
    dram_pj_per_bit=3.9,
    die_mm2=826.0,
    process_nm=7.0,
    kernel_launch_us=0.0,
    name="test",
)


def fc(n_in: int, n_out: int, *, batch: int = 1, bits: int = 8) -> ConvLayer:
    return ConvLayer(f"fc{n_in}x{n_out}b{batch}", 1, 1, 1, 1, n_in, n_out, batch=batch,
                     weight_bits=bits, input_bits=bits, output_bits=bits)


def conv3x3(c: int, k: int, hw: int, *, batch: int = 1, bits: int = 8) -> ConvLayer:
    return ConvLayer(f"conv{c}x{k}@{hw}b{batch}", hw, hw, 3, 3, c, k, padding=1, batch=batch,
                     weight_bits=bits, input_bits=bits, output_bits=bits)


LAYERS = [
    fc(4096, 4096),
    fc(512, 1000, batch=64),
    conv3x3(64, 64, 56),
    conv3x3(256, 256, 56, batch=32),
    conv3x3(3, 64, 224, bits=16),
    ConvLayer("dw", 112, 112, 3, 3, 32, 32, padding=1, groups=32),
    ConvLayer("pw", 56, 56, 1, 1, 128, 256, stride=2, weight_bits=4, input_bits=4),
    ConvLayer("fp32", 28, 28, 3, 3, 128, 128, padding=1, weight_bits=32, input_bits=32,
              output_bits=32),
]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _a100_text(**changes: object) -> str:
    """The example YAML with keys replaced (a value of ``...`` deletes the key)."""
    data = yaml.safe_load(A100_YAML.read_text())
    for k, v in changes.items():
        if v is ...:
            data.pop(k, None)
        else:
            data[k] = v
    return yaml.safe_dump(data, sort_keys=False)


# --------------------------------------------------------------------------- roofline


def test_batch1_fc_layer_is_memory_bound() -> None:
    cost = make_model(SPEC).evaluate_layer(fc(4096, 4096))
    m = cost.mapping
    assert m["bound"] == "memory" and m["precision"] == "int8"
    # activations (8 KiB) stay in L2; the 16 MiB of int8 weights come from DRAM: 2 ops/byte
    assert m["activations_in_l2"] is True
    assert cost.dram_read_bytes == 4096 * 4096 and cost.dram_write_bytes == 0
    assert m["arithmetic_intensity_ops_per_byte"] == pytest.approx(2.0)
    assert m["memory_time_us"] == pytest.approx(4096 * 4096 / (2039e9 * 0.88) * 1e6)
    assert cost.latency_ms * 1e3 == pytest.approx(m["memory_time_us"])


def test_large_3x3_conv_is_compute_bound() -> None:
    layer = conv3x3(256, 256, 56, batch=32)  # 59 G MACs; 51 MB of activations > 40 MiB L2
    cost = make_model(SPEC).evaluate_layer(layer)
    m = cost.mapping
    assert m["bound"] == "compute" and m["activations_in_l2"] is False
    assert m["compute_time_us"] == pytest.approx(2 * layer.macs / (624e12 * 0.7) * 1e6)
    act_in = 32 * 256 * 56 * 56
    assert cost.dram_read_bytes == 256 * 256 * 9 + act_in and cost.dram_write_bytes == act_in
    assert m["arithmetic_intensity_ops_per_byte"] > m["ridge_ops_per_byte"]


def _variants() -> list[GpuSpec]:
    r = dataclasses.replace
    return [
        SPEC,
        r(SPEC, kernel_launch_us=5.0),
        r(SPEC, l2_mib=0.0),
        r(SPEC, dram_gbps=100.0, efficiency=1.0, bandwidth_efficiency=1.0),
        r(SPEC, peak_tops_int4=None, efficiency=0.3, bandwidth_efficiency=0.5),
    ]


@pytest.mark.parametrize("spec", _variants())
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.name)
def test_latency_is_the_larger_roof_plus_launch(spec: GpuSpec, layer: ConvLayer) -> None:
    cost = make_model(spec).evaluate_layer(layer)
    m = cost.mapping
    latency_us = cost.latency_ms * 1e3 * (1 + 1e-12)  # ms <-> us rounding
    assert latency_us >= m["compute_time_us"] and latency_us >= m["memory_time_us"]
    assert latency_us == pytest.approx(
        max(m["compute_time_us"], m["memory_time_us"]) + spec.kernel_launch_us
    )
    assert m["bound"] == ("compute" if m["compute_time_us"] >= m["memory_time_us"] else "memory")
    bytes_moved = cost.dram_read_bytes + cost.dram_write_bytes
    assert m["memory_time_us"] == pytest.approx(
        bytes_moved / (spec.dram_gbps * 1e9 * spec.bandwidth_efficiency) * 1e6, rel=1e-6
    )


@pytest.mark.parametrize(
    ("field", "values"),
    [
        ("dram_gbps", [100.0, 500.0, 2039.0, 3350.0, 8000.0]),
        ("bandwidth_efficiency", [0.2, 0.5, 0.88, 1.0]),
        ("efficiency", [0.1, 0.5, 0.7, 1.0]),
        ("peak_tops_int8", [100.0, 312.0, 624.0, 2000.0]),
        ("l2_mib", [0.0, 1.0, 6.0, 40.0, 50.0]),
    ],
)
def test_more_bandwidth_compute_or_l2_never_adds_latency(field: str, values: list[float]) -> None:
    for layer in LAYERS:
        latencies = [
            make_model(dataclasses.replace(SPEC, **{field: v})).evaluate_layer(layer).latency_ms
            for v in values
        ]
        assert all(b <= a for a, b in zip(latencies, latencies[1:])), (layer.name, latencies)


def test_ridge_point_is_peak_over_bandwidth() -> None:
    assert SPEC.ridge_ops_per_byte == pytest.approx(624e12 / 2039e9)  # 306 ops/byte
    model = make_model(SPEC)
    for layer, peak in ((fc(64, 64), 624e12), (fc(64, 64, bits=16), 312e12),
                        (fc(64, 64, bits=4), 1248e12), (fc(64, 64, bits=32), 19.5e12)):
        m = model.evaluate_layer(layer).mapping
        assert m["ridge_ops_per_byte"] == pytest.approx(peak / 2039e9)
        assert m["ridge_achieved_ops_per_byte"] == pytest.approx(peak * 0.7 / (2039e9 * 0.88))


def test_bound_switches_at_the_ridge_point() -> None:
    """With both fractions at 1 a layer is compute-bound exactly when its intensity reaches
    the ridge point (FC 4096 -> 4096, batch 1..511, nothing kept in L2)."""
    spec = dataclasses.replace(SPEC, efficiency=1.0, bandwidth_efficiency=1.0, l2_mib=0.0)
    model = make_model(spec)
    seen = set()
    for batch in range(1, 512, 3):
        m = model.evaluate_layer(fc(4096, 4096, batch=batch)).mapping
        compute = m["arithmetic_intensity_ops_per_byte"] >= spec.ridge_ops_per_byte
        assert m["bound"] == ("compute" if compute else "memory"), batch
        seen.add(m["bound"])
    assert seen == {"compute", "memory"}


def test_activations_stay_in_l2_only_when_input_and_output_fit_together() -> None:
    layer = conv3x3(64, 64, 64)  # 64*64*64 = 256 KiB in, 256 KiB out at 8 bit
    fits = make_model(dataclasses.replace(SPEC, l2_mib=0.5)).evaluate_layer(layer)
    spills = make_model(dataclasses.replace(SPEC, l2_mib=0.499)).evaluate_layer(layer)
    assert fits.mapping["activations_in_l2"] and not spills.mapping["activations_in_l2"]
    assert fits.dram_read_bytes == 64 * 64 * 9 and fits.dram_write_bytes == 0
    assert spills.dram_read_bytes == 64 * 64 * 9 + 2**18 and spills.dram_write_bytes == 2**18


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize(
    ("wbits", "ibits", "int4", "precision", "width"),
    [
        (4, 4, True, "int4", 4),
        (2, 3, True, "int4", 4),
        (4, 8, True, "int8", 8),
        (4, 4, False, "int8", 8),  # no int4 path: sub-8-bit runs at the int8 rate
        (8, 8, True, "int8", 8),
        (12, 8, True, "fp16", 16),
        (16, 16, True, "fp16", 16),
        (32, 8, True, "fp32", 32),
    ],
)
def test_precision_is_the_narrowest_path_holding_both_operands(
    wbits: int, ibits: int, int4: bool, precision: str, width: int
) -> None:
    spec = SPEC if int4 else dataclasses.replace(SPEC, peak_tops_int4=None)
    layer = ConvLayer("l", 1, 1, 1, 1, 256, 256, weight_bits=wbits, input_bits=ibits)
    cost = make_model(spec).evaluate_layer(layer)
    assert cost.mapping["precision"] == precision
    assert cost.mapping["weight_storage_bits"] == width
    assert cost.mapping["dram_weight_bytes"] == 256 * 256 * width / 8


def test_sub_8_bit_without_int4_is_priced_as_int8() -> None:
    model = make_model(dataclasses.replace(SPEC, peak_tops_int4=None))
    for layer in LAYERS[:4]:
        low = dataclasses.replace(layer, weight_bits=3, input_bits=5, output_bits=5)
        assert model.evaluate_layer(low).latency_ms == model.evaluate_layer(layer).latency_ms


def test_output_is_stored_at_its_own_width() -> None:
    layer = dataclasses.replace(fc(256, 1000), output_bits=32)  # int8 GEMM, fp32 logits
    cost = make_model(dataclasses.replace(SPEC, l2_mib=0.0)).evaluate_layer(layer)
    assert cost.mapping["precision"] == "int8" and cost.mapping["output_storage_bits"] == 32
    assert cost.dram_write_bytes == 1000 * 4


# --------------------------------------------------------------------------- energy, report


@pytest.mark.parametrize("spec", _variants())
def test_power_stays_between_idle_and_tdp(spec: GpuSpec) -> None:
    model = make_model(spec)
    for layer in LAYERS:
        cost = model.evaluate_layer(layer)
        seconds = cost.latency_ms * 1e-3
        power = cost.energy_pj * 1e-12 / seconds
        assert spec.idle_w <= power <= spec.tdp_w, layer.name
        assert cost.mapping["board_power_w"] == pytest.approx(power)
        assert cost.rf_energy_pj == 0.0 and cost.glb_energy_pj == 0.0
        bits = 8 * (cost.dram_read_bytes + cost.dram_write_bytes)
        assert cost.dram_energy_pj == pytest.approx(bits * spec.dram_pj_per_bit, rel=1e-6)
        u = cost.mapping["compute_fraction_of_peak"]
        core_w = spec.idle_w + (spec.tdp_w - spec.idle_w - dram_power_w(spec)) * u
        assert cost.mac_energy_pj == pytest.approx(core_w * seconds * 1e12)


def test_full_compute_and_bandwidth_draw_tdp() -> None:
    spec = dataclasses.replace(SPEC, efficiency=1.0, bandwidth_efficiency=1.0, l2_mib=0.0)
    model = make_model(spec)
    # an FC at exactly the ridge point keeps both roofs busy for the whole latency
    for batch in range(150, 170):
        cost = model.evaluate_layer(fc(4096, 4096, batch=batch))
        m = cost.mapping
        busy = min(m["compute_time_us"], m["memory_time_us"]) / max(
            m["compute_time_us"], m["memory_time_us"]
        )
        if busy > 0.99:
            assert m["board_power_w"] == pytest.approx(spec.tdp_w, rel=0.01)
            break
    else:  # pragma: no cover
        pytest.fail("no batch near the ridge point")


def test_network_report_reuses_the_base_class_path() -> None:
    layers = read_layers_csv(CONV2_CSV) + [fc(512, 1000), conv3x3(64, 64, 56, bits=4)]
    report = evaluate_network(layers, SPEC)
    assert report.area_mm2 == 826.0
    assert report.latency_ms == pytest.approx(sum(c.latency_ms for c in report.layers))
    assert report.power_w == pytest.approx(
        report.total.energy_pj * 1e-12 / (report.latency_ms * 1e-3)
    )
    assert report.total.num_pes == max(c.num_pes for c in report.layers)


def test_cycles_and_lanes_are_at_the_clock() -> None:
    model = make_model(SPEC)
    assert model.mac_lanes("int8") == math.ceil(624e12 / (2 * 1410e6))  # 108 SM x 4 TC x 512
    assert model.mac_lanes("fp16") == math.ceil(312e12 / (2 * 1410e6))
    cost = model.evaluate_layer(conv3x3(256, 256, 56, batch=32))
    assert cost.num_pes == model.mac_lanes("int8")
    assert cost.total_cycles == math.ceil(cost.latency_ms * 1e-3 * 1410e6)
    assert cost.mapping_utilization == pytest.approx(0.7, rel=1e-4)  # the efficiency
    assert 0 < cost.utilization <= cost.mapping_utilization <= 1


def test_bad_layer_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="layer 'x': channels: must be an integer > 0"):
        make_model(SPEC).evaluate_layer(ConvLayer("x", 8, 8, 3, 3, 0, 4))


# --------------------------------------------------------------------------- spec, dispatch


def test_spec_round_trips_and_model_pickles() -> None:
    assert GpuSpec.from_dict(SPEC.to_dict()) == SPEC
    model = make_model(SPEC)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.evaluate_layer(LAYERS[2]) == model.evaluate_layer(LAYERS[2])


def test_make_model_dispatches_on_the_template_and_spec_type() -> None:
    assert MODELS["gpu"] is GpuRooflineModel and MODELS["systolic"] is SystolicModel
    assert isinstance(make_model(SPEC), GpuRooflineModel)
    assert isinstance(make_model(AcceleratorSpec()), SystolicModel)
    with pytest.raises(SpecError, match="the 'gpu' model takes a GpuSpec, got AcceleratorSpec"):
        make_model(AcceleratorSpec(template="gpu"))
    with pytest.raises(SpecError, match="template: the 'systolic' model takes a AcceleratorSpec"):
        make_model(dataclasses.replace(SPEC, template="systolic"))
    with pytest.raises(SpecError, match="takes a GpuSpec"):
        GpuRooflineModel(AcceleratorSpec())  # type: ignore[arg-type]


def test_invalid_spec_lists_every_problem() -> None:
    bad = dataclasses.replace(SPEC, dram_gbps=-1.0, efficiency=0.0, name="",
                              peak_tops_int4=float("nan"), tdp_w="400")  # type: ignore[arg-type]
    lines = bad.validate()
    assert [line.split(":")[0] for line in lines] == [
        "dram_gbps", "efficiency", "tdp_w", "peak_tops_int4", "name"
    ]
    assert "dram_gbps: must be a finite number > 0, got -1.0" in lines
    assert "efficiency: must be a number in (0, 1], got 0.0" in lines
    assert "tdp_w: must be a finite number > 0, got '400' (string)" in lines
    with pytest.raises(SpecError) as info:
        make_model(bad)
    assert str(info.value) == "; ".join(lines)


def test_cross_field_power_rules() -> None:
    assert dataclasses.replace(SPEC, idle_w=400.0).validate() == [
        "idle_w: must be below tdp_w (400), got 400.0"
    ]
    (line,) = dataclasses.replace(SPEC, idle_w=350.0).validate()  # + 63.6 W of HBM
    assert line.startswith("tdp_w: must exceed idle_w + DRAM power at full bandwidth (350 + ")
    assert SPEC.validate() == []


# --------------------------------------------------------------------------- YAML


def test_a100_example_loads_with_datasheet_figures() -> None:
    spec = load_accelerator_yaml(A100_YAML)
    assert isinstance(spec, GpuSpec)
    assert (spec.peak_tops_int8, spec.peak_tops_int4, spec.peak_tflops_fp16,
            spec.peak_tflops_fp32) == (624.0, 1248.0, 312.0, 19.5)
    assert (spec.dram_gbps, spec.l2_mib, spec.tdp_w, spec.die_mm2, spec.process_nm,
            spec.clock_mhz) == (2039.0, 40.0, 400.0, 826.0, 7.0, 1410.0)
    assert isinstance(spec.dram_gbps, float)
    assert dataclasses.replace(spec, kernel_launch_us=0.0, name="test") == SPEC
    assert set(yaml.safe_load(A100_YAML.read_text())) == set(GPU_KEYS)


def test_optional_keys_take_their_defaults(tmp_path: Path) -> None:
    p = _write(tmp_path, "g.yaml", _a100_text(name=..., peak_tops_int4=..., l2_mib=...))
    spec = load_accelerator_yaml(p)
    assert isinstance(spec, GpuSpec)
    assert (spec.name, spec.peak_tops_int4, spec.l2_mib) == ("gpu", None, 0.0)
    p = _write(tmp_path, "h.yaml", _a100_text(peak_tops_int4=None))
    assert load_accelerator_yaml(p).peak_tops_int4 is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("changes", "key", "fragment"),
    [
        ({"dram_gbps": -2039}, "dram_gbps", "must be a finite number > 0, got -2039"),
        ({"dram_gbps": "fast"}, "dram_gbps", "got 'fast' (string)"),
        ({"tdp_w": "4e2"}, "tdp_w", "write it with a dot"),
        ({"efficiency": 0}, "efficiency", "must be a number in (0, 1], got 0"),
        ({"efficiency": 1.5}, "efficiency", "must be a number in (0, 1], got 1.5"),
        ({"efficiency": True}, "efficiency", "got True (boolean)"),
        ({"bandwidth_efficiency": [0.9]}, "bandwidth_efficiency", "got [0.9] (list)"),
        ({"l2_mib": -1}, "l2_mib", "must be a finite number >= 0, got -1"),
        ({"kernel_launch_us": float("inf")}, "kernel_launch_us", "got inf"),
        ({"peak_tops_int4": 0}, "peak_tops_int4", "> 0 or null"),
        ({"name": 7}, "name", "must be a non-empty string, got 7 (integer)"),
        ({"pe_rows": 32}, "pe_rows", "unknown key; known gpu keys: peak_tops_int8"),
        ({"dram_gbps": ...}, "dram_gbps", "missing; required for template gpu"),
        ({"idle_w": 500}, "idle_w", "must be below tdp_w (400), got 500.0"),
    ],
)
def test_bad_gpu_yaml_names_the_key(
    tmp_path: Path, changes: dict[str, object], key: str, fragment: str
) -> None:
    p = _write(tmp_path, "g.yaml", _a100_text(**changes))
    with pytest.raises(InputError) as info:
        load_accelerator_yaml(p)
    assert info.value.key == key
    assert fragment in info.value.message
    assert str(info.value).startswith(f"{p}: {key}: ")


def test_gpu_yaml_collects_every_problem(tmp_path: Path) -> None:
    p = _write(tmp_path, "g.yaml", _a100_text(efficiency=0, bogus=1, clock_mhz=...))
    spec, problems = accelerator_yaml_problems(p)
    assert spec is None
    assert [e.key for e in problems] == ["efficiency", "bogus", "clock_mhz"]
    assert set(GPU_REQUIRED_KEYS) <= set(GPU_KEYS) and "clock_mhz" in GPU_REQUIRED_KEYS


def test_systolic_files_are_unchanged_and_point_at_the_gpu_template(tmp_path: Path) -> None:
    edge = load_accelerator_yaml(ROOT / "experiments/accelerators/edge_systolic.yaml")
    assert isinstance(edge, AcceleratorSpec) and edge.pe_rows == 16
    with pytest.raises(InputError) as info:  # a GPU key without template: gpu
        load_accelerator_yaml(_write(tmp_path, "a.yaml", "efficiency: 0.7\n"))
    assert info.value.key == "efficiency"
    assert "unknown key" in info.value.message and "template: gpu" in info.value.message
    with pytest.raises(InputError, match="must be one of systolic, eyeriss, fpga, gpu, got 'tpu'"):
        load_accelerator_yaml(_write(tmp_path, "b.yaml", "template: tpu\n"))


# --------------------------------------------------------------------------- CLI


def test_hw_cli_on_the_a100_example(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["hw", "--accelerator", str(A100_YAML), "--layers", str(CONV2_CSV), "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("compute_cycles", "total_cycles", "utilization", "dram_read_bytes",
                "dram_write_bytes", "energy_pj", "latency_ms"):
        assert key in doc["total"] and key in doc["layers"][0]
    layer = doc["layers"][0]
    assert layer["mapping"]["template"] == "gpu" and layer["mapping"]["bound"] == "compute"
    assert layer["mapping"]["precision"] == "int8"
    assert layer["dram_read_bytes"] == 64 * 64 * 9  # weights; activations stay in L2
    # 5 us launch + 2 x 115.6 M MACs at 0.7 x 624 TOPS
    assert doc["total"]["latency_ms"] == pytest.approx(5e-3 + 2 * 115_605_504 / (0.7 * 624e12)
                                                       * 1e3)
    assert doc["total"]["area_mm2"] == 826.0
    assert main(args[:-1]) == 0
    assert "area 826 mm2" in capsys.readouterr().out


def test_hw_cli_on_a_network_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = {
        "family": "resnet", "in_channels": 3, "input_hw": 32, "num_classes": 10,
        "weight_bits": 4, "activation_bits": 4,
        "stages": [{"depth": 1, "width": 16, "kernel_size": 3, "stride": 1},
                   {"depth": 1, "width": 32, "kernel_size": 3, "stride": 2}],
    }
    p = _write(tmp_path, "network.yaml", yaml.safe_dump(net))
    assert main(["hw", "--accelerator", str(A100_YAML), "--network", str(p), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    precisions = {layer["mapping"]["precision"] for layer in doc["layers"]}
    assert precisions == {"int8", "int4"}  # the stem reads the 8-bit image
    assert doc["total"]["latency_ms"] > 0


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"dram_gbps": -1}, "dram_gbps"),
        ({"efficiency": 0}, "efficiency"),
        ({"efficiency": 1.01}, "efficiency"),
        ({"l2_cache_mib": 40}, "l2_cache_mib"),
        ({"tdp_w": "400 W"}, "tdp_w"),
    ],
)
def test_hw_cli_bad_gpu_yaml_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, object], key: str
) -> None:
    acc = _write(tmp_path, "acc.yaml", _a100_text(**changes))
    assert main(["hw", "--accelerator", str(acc), "--layers", str(CONV2_CSV)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {acc}: {key}: "), err
    assert captured.out == ""
