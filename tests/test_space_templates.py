"""Every accelerator template in the search space: its keys, ``file``, decoding, constraints.

The systolic keys are covered by test_space.py / test_config.py; here the eyeriss, fpga and
gpu templates, an accelerator file as the base of a space, and an FPGA's DSP / BRAM36 use as
constraints (the e2e module runs an fpga study through the real CLI).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
import yaml

from codesign.cli import main
from evaluators.evaluate import constraint_values, evaluate, price
from evaluators.hardware import EyerissSpec, FpgaSpec, GpuSpec, load_accelerator_yaml
from evaluators.specs import AcceleratorSpec, Budgets, DesignPoint, TaskSpec
from search_spaces import SpaceError, build

ROOT = Path(__file__).resolve().parents[1]
ACC = ROOT / "experiments" / "accelerators"
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


def space(accelerator: dict) -> object:
    return build({"network": {"stages": 1, "width": 8, "depth": 1, "kernel": 3},
                  "compression": {"weight_bits": 8, "activation_bits": 8},
                  "accelerator": accelerator}, in_channels=1, input_hw=8, num_classes=10)


def sample(sp: object, seed: int = 0) -> DesignPoint:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return sp.decode(study.ask(sp.distributions()).params)


def problems(accelerator: dict) -> list[tuple[str, str]]:
    with pytest.raises(SpaceError) as e:
        space(accelerator)
    return e.value.problems


def test_eyeriss_defaults_are_the_chip_and_listed_keys_are_searched() -> None:
    sp = space({"template": "eyeriss", "pe_rows": [8, 12], "glb_kib": {"low": 54, "high": 216}})
    assert set(sp.distributions()) == {"hw/pe_rows", "hw/glb_kib"}
    for seed in range(5):
        acc = sample(sp, seed).accelerator
        assert isinstance(acc, EyerissSpec) and acc.validate() == []
        assert acc.pe_rows in (8, 12) and 54 <= acc.glb_kib <= 216
        assert isinstance(acc.glb_kib, float)  # a range sampled as int or float: the field type
        chip = EyerissSpec()
        assert dataclasses.replace(acc, pe_rows=chip.pe_rows, glb_kib=chip.glb_kib) == chip
    # the resolved space writes every key back; building it again gives the same space
    assert build(sp.to_yaml(), in_channels=1, input_hw=8, num_classes=10) == sp


def test_fpga_searches_its_parallelism_by_default() -> None:
    sp = space({"template": "fpga"})
    assert set(sp.distributions()) == {"hw/unroll_c", "hw/unroll_k"}
    acc = sample(sp).accelerator
    assert isinstance(acc, FpgaSpec) and acc.device == "xczu9eg"
    assert acc.freq_mhz == 281.0 and acc.dram_gbps == 21.3


def test_file_gives_every_default_and_keys_beside_it_override() -> None:
    sp = space({"file": str(ACC / "gpu_a100_like.yaml")})
    assert sp.template == "gpu" and sp.distributions() == {}
    assert sample(sp).accelerator == load_accelerator_yaml(ACC / "gpu_a100_like.yaml")
    sp = space({"file": str(ACC / "fpga_zcu102_like.yaml"), "unroll_px": [1, 2]})
    file = load_accelerator_yaml(ACC / "fpga_zcu102_like.yaml")
    acc = sample(sp).accelerator
    assert dataclasses.replace(acc, unroll_px=file.unroll_px) == file
    sp = space({"file": str(ACC / "edge_systolic.yaml"), "pe_rows": [8, 16]})
    acc = sample(sp).accelerator
    assert isinstance(acc, AcceleratorSpec) and acc.pe_rows in (8, 16)
    assert "file" not in sp.to_yaml()["accelerator"]  # resolved: self-contained


def test_design_points_of_every_template_round_trip() -> None:
    for acc in ({"template": "eyeriss"}, {"template": "fpga"},
                {"file": str(ACC / "gpu_a100_like.yaml")}, {"template": "systolic"}):
        d = sample(space(acc))
        again = DesignPoint.from_dict(yaml.safe_load(yaml.safe_dump(d.to_dict())))
        assert again == d


@pytest.mark.parametrize(("accelerator", "key", "words"), [
    ({"template": ["systolic", "eyeriss"]}, "space.accelerator.template",
     "one template per study"),
    ({"template": "tpu"}, "space.accelerator.template", "must be one of"),
    ({"template": "gpu"}, "space.accelerator.peak_tops_int8", "gpu_a100_like.yaml"),
    ({"template": "eyeriss", "dataflow": "ws"}, "space.accelerator.dataflow",
     "unknown key; known: ['dram_gbps'"),
    ({"template": "eyeriss", "pe_rows": [8, 0]}, "space.accelerator.pe_rows[1]",
     "must be an integer > 0, got 0"),
    ({"template": "eyeriss", "glb_filter_kib": [8.0, 120.0]},
     "space.accelerator.glb_filter_kib", "must be below glb_kib"),
    ({"template": "fpga", "device": "xc7z020"}, "space.accelerator.device", "must be one of"),
    ({"template": "fpga", "dsp_budget": 1.5}, "space.accelerator.dsp_budget", "(0, 1]"),
    ({"file": str(ACC / "gpu_a100_like.yaml"), "idle_w": [60.0, 450.0]},
     "space.accelerator.idle_w", "must be below tdp_w"),
    ({"file": "no/such.yaml"}, "space.accelerator.file", "not found"),
    ({"file": 3}, "space.accelerator.file", "expected a path"),
    ({"file": str(ACC / "edge_systolic.yaml"), "template": "eyeriss"},
     "space.accelerator.template", "differs from the file's template 'systolic'"),
])
def test_bad_template_keys_name_the_key(accelerator: dict, key: str, words: str) -> None:
    found = problems(accelerator)
    assert len(found) == 1, found  # no cascade of follow-on errors
    assert found[0][0] == key and words in found[0][1], found


def test_bad_accelerator_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "acc.yaml"
    bad.write_text("template: eyeriss\npe_rows: -1\n")
    ((key, msg),) = problems({"file": str(bad)})
    assert key == "space.accelerator.file" and f"{bad}: pe_rows: must be" in msg


def test_fpga_over_budget_is_priced_and_infeasible_not_an_error() -> None:
    sp = space({"template": "fpga", "unroll_c": [64], "unroll_k": [8, 256],
                "dsp_budget": 0.25})
    small, big = (dataclasses.replace(sample(sp), accelerator=dataclasses.replace(
        sample(sp).accelerator, unroll_k=k)) for k in (8, 256))
    for design, over in ((small, False), (big, True)):
        report = price(design)
        dsp = report.resources["dsp"]
        assert dsp["used"] == 64 * (8 if not over else 256) // 2  # 2 INT8 MACs per DSP48E2
        c = constraint_values(report, Budgets())
        assert set(c) == {"dsp", "bram36"}
        assert (c["dsp"] > 0) is over
        assert c["dsp"] == pytest.approx(dsp["used"] / int(0.25 * 2520) - 1)
    task = TaskSpec(dataset="digits", epochs=1)
    result = evaluate(big, task, Budgets())
    assert not result.feasible and result.training is None
    assert result.infeasible_reason.startswith("dsp 8192 > budget 630 of 2520")


def test_config_rejects_area_on_fpga(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = yaml.safe_load(QUICKSTART.read_text())
    exp["space"]["accelerator"] = {"template": "fpga"}
    exp["objectives"] = ["accuracy", "area_mm2"]
    exp.pop("report")  # its reference names the quickstart's objectives
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": ")[2] for line in err] == ["objectives", "constraints.area_mm2"]
    assert "Traceback" not in "\n".join(err) and list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("name", ["fpga_zcu102.yaml", "eyeriss_search.yaml"])
def test_example_experiments_are_valid(name: str, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)  # their accelerator files are named from the repository root
    assert main(["validate", f"experiments/{name}"]) == 0, capsys.readouterr().err


def test_gpu_baseline_study_searches_the_network_only() -> None:
    sp = build({"network": {"width": [8, 16]},
                "accelerator": {"file": str(ACC / "gpu_a100_like.yaml")}},
               in_channels=1, input_hw=8, num_classes=10)
    d = sample(sp)
    assert isinstance(d.accelerator, GpuSpec)
    assert price(d).latency_ms > 0
