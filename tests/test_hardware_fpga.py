"""The ``fpga`` template: resources (DSP packing, BRAM by width and depth), budgets, folds,
DRAM traffic, depthwise convs, the DPU anchor, the YAML reader and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evaluators.hardware import (
    MODELS,
    FpgaModel,
    FpgaSpec,
    accelerator_yaml_problems,
    evaluate_network,
    load_accelerator_yaml,
    make_model,
    read_layers_csv,
)
from evaluators.hardware.fpga import (
    BRAM36_BITS,
    DEVICES,
    FPGA_REQUIRED_KEYS,
    bram36_count,
    dsps_per_multiply,
    macs_per_dsp,
    resource_use,
)
from evaluators.specs import ConvLayer, InfeasibleDesign, InputError, SpecError

ROOT = Path(__file__).resolve().parents[1]
ZCU102_YAML = ROOT / "experiments/accelerators/fpga_zcu102_like.yaml"
ALEXNET_CSV = ROOT / "experiments/layers/alexnet_conv.csv"

SPEC = FpgaSpec(device="xczu9eg", unroll_c=8, unroll_k=16, unroll_px=4, freq_mhz=200.0,
                dram_gbps=10.0)


def conv(c: int, k: int, hw: int, r: int = 3, *, groups: int = 1, pad: int = 1,
         stride: int = 1, bits: int = 8) -> ConvLayer:
    return ConvLayer(f"c{c}k{k}hw{hw}r{r}g{groups}", hw, hw, r, r, c, k, stride=stride,
                     padding=pad, groups=groups, weight_bits=bits, input_bits=bits,
                     output_bits=bits)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


MINIMAL = {"template": "fpga", "device": "xczu7ev", "unroll_c": 8, "unroll_k": 8,
           "freq_mhz": 200, "dram_gbps": 19.2}

# --------------------------------------------------------------------------- DSP packing


def test_macs_per_dsp_by_operand_width() -> None:
    assert macs_per_dsp(8, 8) == 2  # WP486: two INT8 MACs per DSP48E2
    assert macs_per_dsp(4, 4) == 2  # no citable INT4 figure: packs like INT8
    assert macs_per_dsp(8, 16) == 1
    assert macs_per_dsp(16, 16) == 1
    assert macs_per_dsp(18, 27) == macs_per_dsp(27, 18) == 1  # the 27 x 18 multiplier
    assert dsps_per_multiply(24, 24) == 2  # 24 bits do not fit the 18-bit port
    assert dsps_per_multiply(32, 32) == 4
    assert macs_per_dsp(32, 32) == 0.25


@pytest.mark.parametrize(
    ("changes", "dsps"),
    [
        ({}, 256),  # 512 lanes / 2 per DSP
        ({"weight_bits": 16, "act_bits": 16}, 512),
        ({"weight_bits": 32, "act_bits": 32}, 2048),
        ({"dsp_clock_ratio": 2}, 128),  # DSPs at twice the fabric clock
        ({"macs_per_dsp": 4}, 128),  # a stated packing overrides the width rule
        ({"unroll_px": 3}, 192),
        ({"unroll_c": 3, "unroll_k": 3, "unroll_px": 1}, 5),  # ceil(9 / 2)
    ],
)
def test_dsp_count_is_lanes_over_packing(changes: dict[str, object], dsps: int) -> None:
    spec = dataclasses.replace(SPEC, **changes)
    use = resource_use(spec)["dsp"]
    assert use["used"] == dsps
    assert use["available"] == 2520
    assert use["fraction"] == pytest.approx(dsps / 2520)


# --------------------------------------------------------------------------- BRAM geometry


def test_bram_count_by_width_and_depth() -> None:
    assert bram36_count(BRAM36_BITS, 72)[0] == 1  # one block, 512 x 72
    assert bram36_count(BRAM36_BITS, 73)[0] == 2  # one bit too wide
    assert bram36_count(1024 * 8, 512)[0] == 8  # 1 KiB but 512 bits a cycle: 8 x 72-bit
    assert bram36_count(64 * 1024 * 8, 8)[0] == 16  # deep and narrow: capacity-bound
    assert bram36_count(128 * 1024 * 8, 1024) == (29, 1024, 36)  # 29 x 36 bit, 1K deep
    for kib in (0.5, 3, 17, 64, 200):
        for width in (1, 8, 36, 64, 72, 100, 256, 1024, 4096):
            n, d, w = bram36_count(kib * 8192, width)
            assert n * BRAM36_BITS >= kib * 8192  # holds the capacity
            assert n >= math.ceil(width / 72)  # and feeds the width
            assert n * d * w >= kib * 8192 and n % math.ceil(width / w) == 0


def test_bram_use_adds_the_three_buffers() -> None:
    use = resource_use(SPEC)["bram36"]
    # widths: ibuf 8*4*8 = 256, wbuf 8*16*8 = 1024, obuf 16*4*32 = 2048 bits
    bufs = use["buffers"]
    assert [bufs[b]["width_bits"] for b in ("ibuf", "wbuf", "obuf")] == [256, 1024, 2048]
    assert bufs["ibuf"]["blocks"] == bram36_count(64 * 8192, 256)[0]
    assert bufs["obuf"]["blocks"] == 29  # 2048 bits: 29 x 72-bit banks, 128 deep
    assert use["used"] == sum(b["blocks"] for b in bufs.values())
    assert use["available"] == 912


def test_devices_hold_the_cited_counts() -> None:
    assert DEVICES["xczu9eg"][:3] == (2520, 912, 0)
    assert DEVICES["xczu9eg"].bram36 * 36 * 1024 / 2**20 == pytest.approx(32.1, abs=0.05)  # Mb
    assert DEVICES["xczu7ev"][:3] == (1728, 312, 96)
    assert DEVICES["xczu3eg"][:3] == (360, 216, 0)
    assert DEVICES["xck26"][:3] == (1248, 144, 64)


# --------------------------------------------------------------------------- budgets


def test_over_budget_spec_is_rejected_naming_the_resource() -> None:
    big = dataclasses.replace(SPEC, device="xczu3eg", unroll_c=32, unroll_k=32, unroll_px=1)
    assert resource_use(big)["dsp"]["constraint"] > 0
    with pytest.raises(SpecError, match=r"^dsp_budget: the engine needs 512 DSP48E2 .* "
                                        r"budget 1 x 360 = 360 of xczu3eg$"):
        make_model(big)
    # a lower budget rejects what the whole device would hold: 256 DSPs > 0.1 x 2520
    with pytest.raises(SpecError, match=r"dsp_budget: .* 256 DSP48E2 .* 0.1 x 2520 = 252"):
        make_model(dataclasses.replace(SPEC, dsp_budget=0.1))
    bram = dataclasses.replace(SPEC, device="xck26", ibuf_kib=1024.0)
    with pytest.raises(SpecError, match=r"^bram_budget: the engine needs \d+ BRAM36 .* of xck26"):
        make_model(bram)
    ok = make_model(SPEC)
    assert isinstance(ok, FpgaModel)
    assert all(v <= 0 for v in ok.resource_constraints().values())
    assert ok.resources()["dsp"]["used"] == 256


def test_budgets_are_the_models_budget_problems() -> None:
    """The model always prices; ``budget_problems()`` names the overshoot, which
    ``make_model`` raises unless a search asks it not to."""
    big = dataclasses.replace(SPEC, device="xczu3eg", unroll_c=32, unroll_k=32, unroll_px=1)
    model = make_model(big, enforce_budgets=False)
    assert model.budget_problems() == big.budget_problems()
    assert model.budget_problems()[0].startswith("dsp_budget: the engine needs 512 DSP48E2")
    assert model.resource_constraints()["dsp"] > 0
    assert make_model(SPEC).budget_problems() == []
    assert model.resources() == resource_use(big)  # a copy: changing it changes nothing
    model.resources()["dsp"]["used"] = -1
    assert model.resources()["dsp"]["used"] == 512


def test_a_tile_that_does_not_fit_names_the_fpga_buffers() -> None:
    tiny = dataclasses.replace(SPEC, ibuf_kib=0.05, wbuf_kib=0.05, obuf_kib=0.05)
    with pytest.raises(InfeasibleDesign, match=(
            r"needs 264 bytes, the fpga buffers hold 77 \(ibuf_kib \+ wbuf_kib \+ obuf_kib = "
            r"0.15 KiB, half of it per tile \(double_buffered\)\)$")):
        make_model(tiny).evaluate_layer(conv(256, 256, 28))


# --------------------------------------------------------------------------- cycles


def test_compute_cycles_are_the_folds() -> None:
    # 20 -> 40 channels, 3x3, 10x10 output; unroll 8 x 16 x 4:
    # c folds 3, k folds 3, px folds ceil(10/4) = 3, rows 10, window 9 -> 2430 cycles
    layer = conv(20, 40, 10)
    cost = make_model(SPEC).evaluate_layer(layer)
    m = cost.mapping
    assert (m["c_folds"], m["k_folds"], m["px_folds"], m["group_folds"]) == (3, 3, 3, 1)
    assert cost.compute_cycles == 3 * 3 * 10 * 3 * 9 == 2430
    assert cost.macs == 10 * 10 * 40 * 20 * 9
    assert cost.mapping_utilization == pytest.approx(720_000 / (512 * 2430))
    # a layer that fills every lane exactly: utilization 1
    full = make_model(SPEC).evaluate_layer(conv(16, 32, 8))
    assert full.mapping_utilization == pytest.approx(1.0)
    assert full.num_pes == 512


def test_batch_multiplies_cycles() -> None:
    layer = conv(16, 32, 8)
    one = make_model(SPEC).evaluate_layer(layer)
    four = make_model(SPEC).evaluate_layer(dataclasses.replace(layer, batch=4))
    assert four.compute_cycles == 4 * one.compute_cycles


def test_latency_is_the_roofline_and_monotone_in_bandwidth() -> None:
    layer = conv(64, 64, 28)
    latencies = []
    for gbps in (0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 500.0):
        cost = make_model(dataclasses.replace(SPEC, dram_gbps=gbps)).evaluate_layer(layer)
        dram_cycles = (cost.dram_read_bytes + cost.dram_write_bytes) / (gbps * 1e9 / 200e6)
        assert cost.total_cycles == max(cost.compute_cycles, math.ceil(dram_cycles))
        assert cost.latency_ms == pytest.approx(cost.total_cycles / 200e3)
        latencies.append(cost.latency_ms)
    assert latencies == sorted(latencies, reverse=True)
    assert latencies[0] > latencies[-1]  # memory-bound at 0.5 GB/s, compute-bound at 500


@pytest.mark.parametrize("kib", [4.0, 16.0, 64.0, 512.0])
def test_dram_traffic_never_below_compulsory(kib: float) -> None:
    spec = dataclasses.replace(SPEC, ibuf_kib=kib, wbuf_kib=kib, obuf_kib=kib)
    model = make_model(spec)
    for layer in (conv(64, 128, 28), conv(3, 64, 32), conv(256, 256, 7),
                  conv(32, 32, 16, groups=32), conv(512, 1000, 1, r=1, pad=0)):
        cost = model.evaluate_layer(layer)
        moved = cost.dram_read_bytes + cost.dram_write_bytes
        assert moved >= cost.mapping["dram_compulsory_bytes"] - 1e-6


def test_depthwise_runs_and_is_poorly_used() -> None:
    model = make_model(dataclasses.replace(SPEC, unroll_c=16, unroll_k=16, unroll_px=1))
    dw = model.evaluate_layer(conv(32, 32, 16, groups=32))
    m = dw.mapping
    # one channel and one filter per group: 16 groups side by side on the diagonal
    assert (m["groups_parallel"], m["group_folds"], m["c_folds"], m["k_folds"]) == (16, 2, 1, 1)
    assert dw.compute_cycles == 2 * 16 * 16 * 9
    assert dw.mapping_utilization == pytest.approx(1 / 16)
    dense = model.evaluate_layer(conv(32, 32, 16))
    assert dense.mapping_utilization == pytest.approx(1.0)
    # a grouped conv whose groups are wider than the lanes runs one group at a time
    grouped = model.evaluate_layer(conv(64, 64, 8, groups=2))
    assert (grouped.mapping["groups_parallel"], grouped.mapping["group_folds"]) == (1, 2)
    assert grouped.mapping_utilization == pytest.approx(1.0)


def test_layers_wider_than_the_engine_or_too_big_for_the_buffers_cannot_run() -> None:
    model = make_model(SPEC)
    with pytest.raises(InfeasibleDesign, match="weight_bits=8, act_bits=8"):
        model.evaluate_layer(conv(16, 16, 8, bits=16))
    tiny = make_model(dataclasses.replace(SPEC, ibuf_kib=0.01, wbuf_kib=0.01, obuf_kib=0.01))
    with pytest.raises(InfeasibleDesign, match="ibuf_kib \\+ wbuf_kib \\+ obuf_kib"):
        tiny.evaluate_layer(conv(64, 64, 32))
    # narrower layers run at the engine's width
    four = model.evaluate_layer(conv(16, 32, 8, bits=4))
    assert four.compute_cycles == model.evaluate_layer(conv(16, 32, 8)).compute_cycles


# --------------------------------------------------------------------------- energy, area


def test_energy_parts_and_area() -> None:
    model = make_model(SPEC)
    cost = model.evaluate_layer(conv(16, 32, 8))
    assert cost.mac_energy_pj > 0 and cost.glb_energy_pj > 0 and cost.dram_energy_pj > 0
    assert cost.rf_energy_pj == 0.0
    assert cost.dram_energy_pj == pytest.approx(
        8 * (cost.dram_read_bytes + cost.dram_write_bytes) * 70.0)  # ddr3 default
    off = make_model(dataclasses.replace(SPEC, fpga_asic_energy_ratio=0.0))
    c0 = off.evaluate_layer(conv(16, 32, 8))
    assert c0.mac_energy_pj == c0.glb_energy_pj == 0.0
    assert c0.dram_energy_pj == cost.dram_energy_pj
    half = make_model(dataclasses.replace(SPEC, fpga_asic_energy_ratio=7.0))
    assert half.evaluate_layer(conv(16, 32, 8)).mac_energy_pj == pytest.approx(
        cost.mac_energy_pj / 2)
    assert model.area_mm2(weight_bits=8, input_bits=8) == 0.0


def test_model_is_picklable_and_the_spec_round_trips() -> None:
    model = make_model(SPEC)
    again = pickle.loads(pickle.dumps(model))
    layer = conv(16, 32, 8)
    assert again.evaluate_layer(layer) == model.evaluate_layer(layer)
    assert FpgaSpec.from_dict(SPEC.to_dict()) == SPEC
    with pytest.raises(SpecError, match="^tn: unknown key"):
        FpgaSpec.from_dict({**SPEC.to_dict(), "tn": 4})
    assert MODELS["fpga"] is FpgaModel
    json.dumps(model.evaluate_layer(layer).to_dict())
    json.dumps(model.resources())


# --------------------------------------------------------------------------- DPU anchor


def test_dpu_b4096_like_engine_against_pg338_and_ug1354() -> None:
    """A B4096-like engine (PP 8 x ICP 16 x OCP 16, INT8, DSPs at 2x clock, PG338).

    PG338 v1.2 Table 9 (ZCU102, "low DSP usage": DSPs multiply only): 514 DSPs per core;
    we count 2048 lanes / (2 MACs x 2) = 512 (-0.4 %). UG1354 (2.5): dual B4096 at 300 MHz
    on ZCU104 = 2.46 TOPS INT8 peak; we get 2 x 2 x 2048 x 300e6 = 2.4576 TOPS.
    """
    dpu = FpgaSpec(device="xczu7ev", unroll_c=16, unroll_k=16, unroll_px=8, freq_mhz=300.0,
                   dram_gbps=19.2, dsp_clock_ratio=2)
    model = make_model(dpu)
    dsps = model.resources()["dsp"]["used"]
    assert dsps == 512
    assert dsps / 514 - 1 == pytest.approx(-0.0039, abs=1e-4)
    assert 2 * model.peak_ops_per_s / 1e12 == pytest.approx(2.46, rel=0.002)
    # two such engines fit the ZU7EV's DSPs (1,728), as the ZCU104 build does
    assert 2 * dsps <= DEVICES["xczu7ev"].dsp


# --------------------------------------------------------------------------- YAML and CLI


def test_minimal_yaml_and_the_example_file_load(tmp_path: Path) -> None:
    spec = load_accelerator_yaml(_write(tmp_path, "a.yaml", yaml.safe_dump(MINIMAL)))
    assert isinstance(spec, FpgaSpec)
    assert spec.freq_mhz == 200.0 and isinstance(spec.freq_mhz, float)
    assert spec.unroll_px == 1 and spec.weight_bits == 8
    assert set(FPGA_REQUIRED_KEYS) == {"device", "unroll_c", "unroll_k", "freq_mhz",
                                       "dram_gbps"}
    example = load_accelerator_yaml(ZCU102_YAML)
    assert isinstance(example, FpgaSpec) and example.device == "xczu9eg"
    report = evaluate_network(read_layers_csv(ALEXNET_CSV), example)
    assert report.latency_ms > 0 and report.area_mm2 == 0.0
    assert report.layers[0].mapping["dsp_used"] == 512


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        ({"tn": 4}, "tn", "unknown key; known fpga keys: device"),
        ({"unroll_c": 0}, "unroll_c", "must be an integer > 0, got 0 (integer)"),
        ({"freq_mhz": "fast"}, "freq_mhz", "must be a finite number > 0"),
        ({"device": "xc7z020"}, "device", "must be one of xczu9eg, xczu7ev, xczu3eg, xck26"),
        ({"dsp_clock_ratio": 3}, "dsp_clock_ratio", "must be 1 or 2"),
        ({"dram_type": "ddr4"}, "dram_type", "must be one of lpddr4"),
        ({"dsp_budget": 1.5}, "dsp_budget", "must be a number in (0, 1]"),
        ({"unroll_c": 64, "unroll_k": 64, "device": "xczu3eg"}, "dsp_budget",
         "the engine needs 2048 DSP48E2"),
        ({"dram_gbps": None}, "dram_gbps", "must be a finite number > 0"),
    ],
)
def test_bad_yaml_names_the_key(tmp_path: Path, changes: dict[str, object], key: str,
                                message: str) -> None:
    p = _write(tmp_path, "acc.yaml", yaml.safe_dump({**MINIMAL, **changes}))
    with pytest.raises(InputError) as e:
        load_accelerator_yaml(p)
    assert e.value.key == key
    assert message in e.value.message
    assert "\n" not in str(e.value)


def test_missing_required_key(tmp_path: Path) -> None:
    data = {k: v for k, v in MINIMAL.items() if k != "dram_gbps"}
    spec, problems = accelerator_yaml_problems(_write(tmp_path, "acc.yaml",
                                                      yaml.safe_dump(data)))
    assert spec is None
    assert [(p.key, p.message) for p in problems] == [
        ("dram_gbps", "missing; required for template fpga")]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "codesign.cli", "hw", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_json_on_the_example_and_bad_input_exits_2(tmp_path: Path) -> None:
    ok = _cli("--accelerator", str(ZCU102_YAML), "--layers", str(ALEXNET_CSV), "--json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert [la["mapping"]["template"] for la in doc["layers"]] == ["fpga"] * 8
    assert doc["total"]["area_mm2"] == 0.0 and doc["total"]["latency_ms"] > 0
    assert doc["resources"]["dsp"]["used"] == 512 and doc["resources"]["dsp"]["available"] == 2520
    text = _cli("--accelerator", str(ZCU102_YAML), "--layers", str(ALEXNET_CSV))
    assert "uses dsp 512/2520 (20.3 %), bram36" in text.stdout and "mm2" not in text.stdout
    bad = _write(tmp_path, "acc.yaml", yaml.safe_dump({**MINIMAL, "device": "xc7z020"}))
    proc = _cli("--accelerator", str(bad), "--layers", str(ALEXNET_CSV), "--json")
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: device: must be one of"), err
    assert "Traceback" not in proc.stderr and proc.stdout == ""
