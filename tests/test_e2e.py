"""End-to-end: the real ``codesign`` CLI, real local Ray, a real SQLite file. No mocks.

Ray starts in seconds, so this module runs few studies: one small study that every read-only
command (inspect, export, plot) then uses, one hardware-only study for the training cache,
and one study killed with SIGKILL and resumed.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest
import yaml
from cli_helpers import ENV, ROOT, codesign
from optuna.trial import TrialState

from codesign.report import constraints_of

pytestmark = pytest.mark.slow  # real Ray, whole studies


def experiment(name: str, n_trials: int, **overrides: dict) -> dict:
    exp = {
        "schema_version": 1,
        "study": {"name": name, "seed": 1, "n_trials": n_trials},
        "objectives": ["accuracy", "latency_ms", "energy_mj"],
        "constraints": {"area_mm2": 50.0},
        "sampler": {"name": "nsga2", "population_size": 4},
        "task": {"dataset": "digits", "epochs": 2, "batch_size": 64},
        "space": {
            "network": {"stages": [1, 2], "depth": 1, "width": [8, 16], "kernel": 3},
            "compression": {"weight_bits": [4, 8], "activation_bits": 8,
                            "prune_ratio": [0.0, 0.5]},
            "accelerator": {"dataflow": ["ws", "os"], "pe_rows": [8, 16],
                            "pe_cols": [8, 16], "glb_kib": [16, 64]},
        },
        "execution": {"workers": 2, "max_retries": 1},
    }
    for section, values in overrides.items():
        exp[section] = {**exp.get(section, {}), **values}
    return exp


def load(cwd: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/runs/{name}.db")


def small_experiment() -> dict:
    """The shared small study also exercises warm start, per-stage precision, low-rank
    factorization and a deployment resolution that differs from the training one."""
    exp = experiment("small", 8)
    exp["task"].update(warm_start="closest", deploy_input=16)
    exp["space"]["compression"].update(precision=["network", "stage"], rank_ratio=[0.5, 1.0])
    return exp


@pytest.fixture(scope="module")
def small_study(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("e2e")
    (cwd / "exp.yaml").write_text(yaml.safe_dump(small_experiment()))
    proc = codesign("run", "exp.yaml", cwd=cwd)
    return cwd, proc


def test_run_finishes_with_pareto_table(small_study: tuple[Path, subprocess.CompletedProcess]
                                        ) -> None:
    cwd, proc = small_study
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pareto set:" in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if "accuracy" in line)
    for col in ("accuracy", "latency_ms", "energy_mj", "area_mm2", "array", "dataflow"):
        assert col in header
    study = load(cwd, "small")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) >= 8
    assert all(len(t.values) == 3 for t in done)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert study.best_trials
    assert study.metric_names == ["accuracy", "latency_ms", "energy_mj"]
    attrs = study.user_attrs
    assert attrs["codesign.experiment"]["study"]["name"] == "small"
    assert attrs["codesign.provenance"]["versions"]["optuna"].startswith("5.")
    trained = [t for t in done if t.user_attrs["codesign.trained"]]
    assert trained and all(0.0 <= t.values[0] <= 1.0 for t in done)
    # trained accuracies are real: well above chance (0.1, 10 classes) after 2 epochs; which
    # compressed designs the sampler's second generation proposes (and so the best of 8, from
    # 0.48 to 0.9 in our runs) depends on the hardware objectives
    assert max(t.values[0] for t in trained) > 0.3
    for t in trained:
        assert Path(cwd, t.user_attrs["codesign.weights"]).is_file()
        assert "area_mm2" in constraints_of(t)


def test_warm_start_and_deploy_resolution(small_study: tuple[Path, subprocess.CompletedProcess]
                                          ) -> None:
    cwd, _ = small_study
    done = load(cwd, "small").get_trials(states=(TrialState.COMPLETE,))
    trained = [t for t in done if t.user_attrs["codesign.trained"]]
    warm = [t for t in trained if t.user_attrs.get("codesign.warm_from")]
    keys = {t.user_attrs["codesign.training_key"] for t in trained}
    # the first trainings start cold (nothing trained yet); later ones from a trained network
    assert len(warm) < len(trained) and warm
    assert all(t.user_attrs["codesign.warm_tensors"] > 0 for t in warm)
    assert all(t.user_attrs["codesign.warm_from"] in keys for t in warm)
    for t in done:  # the hardware saw the deployment resolution (16), not digits' 8
        first = t.user_attrs["codesign.layers"][0]
        assert first["name"] in ("s0b0", "s0b0_in") and first["macs"] % (16 * 16) == 0
    doc = json.loads(codesign("inspect", "small", "--json", cwd=cwd).stdout)
    assert doc["cache"]["warm_started"] == len(warm)


def test_inspect_json(small_study: tuple[Path, subprocess.CompletedProcess]) -> None:
    cwd, _ = small_study
    proc = codesign("inspect", "small", "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["trials_by_state"]["complete"] >= 8
    assert doc["pareto"] and set(doc["pareto"][0]["values"]) == {"accuracy", "latency_ms",
                                                                 "energy_mj"}
    assert 0.0 < doc["hypervolume"]["value"] <= 1.0
    assert set(doc["best"]) == {"accuracy", "latency_ms", "energy_mj"}
    assert doc["cache"]["trainings"] >= 1
    text = codesign("inspect", "small", cwd=cwd)
    assert text.returncode == 0 and "hypervolume" in text.stdout and "Pareto set" in text.stdout
    listing = codesign("inspect", "--storage", "sqlite:///runs/small.db", cwd=cwd)
    assert listing.returncode == 0 and listing.stdout.startswith("small:")


def test_export_yaml_and_csv(small_study: tuple[Path, subprocess.CompletedProcess]) -> None:
    cwd, _ = small_study
    proc = codesign("export", "small", "--out", "exports/small", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    out = cwd / "exports" / "small"
    index = yaml.safe_load((out / "index.yaml").read_text())
    assert index["designs"]
    for row in index["designs"]:
        folder = out / row["folder"]
        for f in ("network.yaml", "accelerator.yaml", "metrics.yaml", "layers.csv",
                  "layer_costs.csv", "weights.pt"):
            assert (folder / f).is_file(), f
        m = yaml.safe_load((folder / "metrics.yaml").read_text())
        assert 0.0 <= m["test_accuracy"] <= 1.0
        # the zeros the hardware was priced with, one fraction per layer of layers.csv
        assert set(m["input_density"]) == {r["name"] for r in csv.DictReader(
            open(folder / "layer_costs.csv"))}
        assert all(0 < v <= 1 for v in m["input_density"].values())
        assert m["provenance"]["study"] == "small" and m["provenance"]["versions"]
        with open(folder / "layers.csv") as fh:
            rows = list(csv.reader(fh))
        assert rows[0][0] == "Layer name" and len(rows) >= 3
        assert int(rows[1][1]) == 16 + 2 * (int(rows[1][3]) // 2)  # deploy_input, padded
    # an exported network goes straight into the hardware model alone
    first = out / index["designs"][0]["folder"]
    hw = codesign("hw", "--accelerator", str(ROOT / "experiments/accelerators/edge_systolic.yaml"),
                  "--network", str(first / "network.yaml"), "--deploy-input", "16", "--json",
                  cwd=cwd)
    assert hw.returncode == 0, hw.stderr
    rows = json.loads(hw.stdout)["layers"]
    with open(first / "layers.csv") as fh:
        assert [r["name"] for r in rows] == [row[0] for row in list(csv.reader(fh))[1:]]
    with open(first / "layer_costs.csv") as fh:
        assert [r["macs"] for r in rows] == [int(r["macs"]) for r in csv.DictReader(fh)]
    again = codesign("export", "small", "--out", "exports/small", cwd=cwd)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    as_csv = codesign("export", "small", "--out", "exports/csv", "--format", "csv",
                      "--no-test-accuracy", cwd=cwd)
    assert as_csv.returncode == 0, as_csv.stderr
    with open(cwd / "exports" / "csv" / "index.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(index["designs"])


def test_plot_png(small_study: tuple[Path, subprocess.CompletedProcess]) -> None:
    cwd, _ = small_study
    proc = codesign("plot", "small", "--out", "front.png", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    data = (cwd / "front.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    bad = codesign("plot", "small", "--out", "front.gif", cwd=cwd)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --out")


def test_named_commands_on_missing_study(small_study: tuple[Path, subprocess.CompletedProcess]
                                         ) -> None:
    cwd, _ = small_study
    proc = codesign("inspect", "nosuch", "--storage", "sqlite:///runs/small.db", cwd=cwd)
    assert proc.returncode == 2
    assert "no study named 'nosuch'" in proc.stderr and "small" in proc.stderr


def test_run_refuses_changed_experiment(small_study: tuple[Path, subprocess.CompletedProcess]
                                        ) -> None:
    cwd, _ = small_study
    exp = small_experiment()
    exp["space"]["accelerator"]["pe_rows"] = [4, 8]
    (cwd / "changed.yaml").write_text(yaml.safe_dump(exp))
    before = len(load(cwd, "small").trials)
    proc = codesign("run", "changed.yaml", cwd=cwd)
    assert proc.returncode == 2
    assert "different experiment" in proc.stderr and "space.accelerator.pe_rows" in proc.stderr
    assert len(load(cwd, "small").trials) == before


def test_training_cache_trains_each_network_once(tmp_path: Path) -> None:
    """A space that varies only the accelerator trains its single network exactly once."""
    exp = experiment("hwonly", 6)
    exp["space"]["network"] = {"stages": 2, "depth": 1, "width": 8, "kernel": 3}
    exp["space"]["compression"] = {"weight_bits": 8, "activation_bits": 8, "prune_ratio": 0.0}
    exp["sampler"] = {"name": "random"}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    proc = codesign("run", "exp.yaml", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load(tmp_path, "hwonly")
    every = study.get_trials(states=(TrialState.COMPLETE,))
    # 16 designs in the space: the random sampler proposes some twice; a repeat is recorded
    # with its first trial's values, and n_trials counts distinct designs
    done = [t for t in every if "codesign.repeat_of" not in t.user_attrs]
    assert len(done) == 6 and len({t.user_attrs["codesign.design_key"] for t in done}) == 6
    first = {t.number: t for t in done}
    for t in every:
        if "codesign.repeat_of" in t.user_attrs:
            original = first[t.user_attrs["codesign.repeat_of"]]
            assert t.values == original.values and t.constraints == original.constraints
            assert t.user_attrs["codesign.design_key"] == original.user_attrs[
                "codesign.design_key"]
    assert sum(t.user_attrs["codesign.trained"] for t in done) == 1
    assert sum(t.user_attrs["codesign.cached"] for t in done) == 5
    assert len({t.values[0] for t in every}) == 1
    # the input zeros measured in the one training price every trial, cached ones included:
    # zero gating (on by default) lowers the energy, never the cycles
    from evaluators.evaluate import price
    from evaluators.specs import DesignPoint

    density = done[0].user_attrs["codesign.input_density"]
    assert density and min(density.values()) < 1.0
    for t in done:
        assert t.user_attrs["codesign.input_density"] == density
        design = DesignPoint.from_dict(t.user_attrs["codesign.design"])
        gated, dense = price(design, None, density).total, price(design).total
        assert t.user_attrs["codesign.hw"]["energy_pj"] == pytest.approx(gated.energy_pj)
        assert gated.energy_pj < dense.energy_pj and gated.total_cycles == dense.total_cycles


def test_fpga_study_resources_are_constraints_and_exports_round_trip(tmp_path: Path) -> None:
    """A study on the fpga template (its keys from an accelerator file, the parallelism
    searched): DSP / BRAM36 use are Optuna constraints, an engine over its budget is priced
    but not trained, and an exported accelerator is a file ``codesign hw`` reads back."""
    exp = experiment("fpga", 6)
    exp["constraints"] = {"power_w": 100.0}
    exp["space"]["network"] = {"stages": 2, "depth": 1, "width": 8, "kernel": 3}
    exp["space"]["compression"] = {"weight_bits": 8, "activation_bits": 8, "prune_ratio": 0.0}
    exp["space"]["accelerator"] = {
        "file": str(ROOT / "experiments/accelerators/fpga_zcu102_like.yaml"),
        "unroll_c": [4, 8], "unroll_k": [4, 8, 128], "dsp_budget": 0.1,
    }
    exp["sampler"] = {"name": "random"}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    proc = codesign("run", "exp.yaml", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dsp" in proc.stdout and "bram36" in proc.stdout  # the Pareto table's columns
    done = [t for t in load(tmp_path, "fpga").get_trials(states=(TrialState.COMPLETE,))
            if "codesign.repeat_of" not in t.user_attrs]
    assert len(done) == 6  # all six designs of the space (repeated proposals aside)
    overs = []
    for t in done:
        hw = t.user_attrs["codesign.hw"]
        dsp = hw["resources"]["dsp"]
        lanes = t.params["hw/unroll_c"] * t.params["hw/unroll_k"] * 8  # unroll_px 8 (file)
        assert dsp["used"] == -(-lanes // 4)  # 2 INT8 MACs per DSP x DSP clock ratio 2
        over = dsp["used"] > int(0.1 * 2520)
        assert set(constraints_of(t)) == {"power_w", "dsp", "bram36"}
        assert (constraints_of(t)["dsp"] > 0) is over
        assert t.user_attrs["codesign.feasible"] is not over
        assert t.user_attrs["codesign.trained"] or t.user_attrs["codesign.cached"] or over
        if over:
            assert "dsp" in t.user_attrs["codesign.infeasible_reason"]
        overs.append(over)
    assert any(overs) and not all(overs)  # the seed draws both kinds (unroll_k 128: over)
    proc = codesign("export", "fpga", "--out", "ex", "--no-test-accuracy", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    index = yaml.safe_load((tmp_path / "ex" / "index.yaml").read_text())
    folder = tmp_path / "ex" / index["designs"][0]["folder"]
    hw = codesign("hw", "--accelerator", str(folder / "accelerator.yaml"), "--layers",
                  str(folder / "layers.csv"), "--json", cwd=tmp_path)
    assert hw.returncode == 0, hw.stderr
    assert json.loads(hw.stdout)["resources"]["dsp"]["used"] <= int(0.1 * 2520)


def test_sigkill_then_resume(tmp_path: Path) -> None:
    # long enough trials (15 epochs) that the poll below sees 3 of 10 finish well before the
    # last one: at 4 epochs a whole study could finish between two polls
    exp = experiment("killme", 10, task={"epochs": 15})
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "codesign", "run", "exp.yaml",
                             "--no-progress"], cwd=tmp_path, env=ENV, start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        before = _wait_for_complete(tmp_path, "killme", proc, 3)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert 3 <= len(before) < 10, ("the study should be killed mid-way; the run said: "
                                   + (tmp_path / "run.log").read_text()[-3000:])
    study = load(tmp_path, "killme")
    running = study.get_trials(states=(TrialState.RUNNING,))
    # a trial killed inside `ask` may have no parameters yet: nothing to re-queue then
    running_at_kill = [t.number for t in running if t.params]

    res = codesign("resume", "killme", "--no-progress", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    study = load(tmp_path, "killme")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    done = {t.number: tuple(t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(done) >= 10
    for number, values in before.items():  # no finished trial lost or changed
        assert done[number] == values
    requeued = [t for t in study.trials if "codesign.requeued_from" in t.user_attrs]
    assert sorted(t.user_attrs["codesign.requeued_from"] for t in requeued) == running_at_kill
    for t in running:
        t = study.trials[t.number]
        assert t.state == TrialState.FAIL and "driver that stopped" in t.user_attrs[
            "codesign.fail_reason"]


def _wait_for_complete(cwd: Path, name: str, proc: subprocess.Popen, n: int,
                       db: Path | None = None) -> dict:
    """Poll the study's SQLite file (read-only, a short query: never in the driver's way)
    until ``n`` trials are COMPLETE; their values by trial number."""
    deadline = time.time() + 180
    done: dict[int, tuple[float, ...]] = {}
    db = db or cwd / "runs" / f"{name}.db"
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        if not db.exists():
            continue
        try:
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
                rows = con.execute(
                    "SELECT t.number, v.objective, v.value FROM trials t JOIN trial_values v "
                    "ON v.trial_id = t.trial_id WHERE t.state = 'COMPLETE' "
                    "ORDER BY t.number, v.objective").fetchall()
        except sqlite3.Error:  # not created yet, or busy for a moment
            continue
        values: dict[int, list[float]] = {}
        for number, _, value in rows:
            values.setdefault(number, []).append(value)
        done = {k: tuple(v) for k, v in values.items()}
        if len(done) >= n:
            break
    return done


def test_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    """Ctrl-C keeps what finished, fails what was in flight, and names the command that
    continues the study: with its non-default storage, and that command works."""
    exp = experiment("ctrlc", 40, task={"epochs": 6})
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    (tmp_path / "elsewhere").mkdir()
    db = tmp_path / "elsewhere" / "c.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen([sys.executable, "-m", "codesign", "run", "exp.yaml",
                             "--storage", url, "--n-trials", "30", "--no-progress"],
                            cwd=tmp_path, env=ENV, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        before = _wait_for_complete(tmp_path, "ctrlc", proc, 3, db)
        proc.send_signal(signal.SIGINT)  # the driver only, as a terminal's Ctrl-C would
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    # the target of the interrupted session (30, not the YAML's 40) goes with the command
    assert "interrupted" in err and f"codesign resume ctrlc --storage {url} --n-trials 30" in err
    assert "Traceback" not in err
    study = optuna.load_study(study_name="ctrlc", storage=url)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    done = {t.number: tuple(t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(done) < 30
    for number, values in before.items():
        assert done[number] == values
    for t in study.get_trials(states=(TrialState.FAIL,)):
        assert t.user_attrs["codesign.fail_reason"].startswith("interrupted")
    # the suggested command, as printed (and one design more, to keep the test short)
    hint = err.split("continue with `", 1)[1].split("`", 1)[0]
    words = shlex.split(hint)
    assert words[:2] == ["codesign", "resume"]
    again = codesign(*words[1:], "--n-trials", str(len(done) + 1), "--no-progress",
                     cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{len(done) + 1} finished designs" in again.stdout


def test_diverging_network_is_trained_once_then_run_aborts(tmp_path: Path) -> None:
    """A network whose loss becomes NaN fails with the reason, is not retrained by later
    trials, and a run that can only fail stops with exit code 1 instead of looping."""
    exp = experiment("nan", 3, task={"lr": 1.0e12, "epochs": 1})
    exp["space"]["network"] = {"stages": 2, "depth": 1, "width": 8, "kernel": 3}
    exp["space"]["compression"] = {"weight_bits": 32, "activation_bits": 32, "prune_ratio": 0.0}
    exp["constraints"] = {}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    proc = codesign("run", "exp.yaml", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "stopped after" in proc.stderr and "Traceback" not in proc.stderr
    every = load(tmp_path, "nan").get_trials(states=(TrialState.FAIL,))
    # a proposal of a design that already failed for good is a repeat: told, never run
    failed = [t for t in every if "codesign.repeat_of" not in t.user_attrs]
    reasons = [t.user_attrs["codesign.fail_reason"] for t in failed]
    assert sum(r.startswith("TrainingFailed: loss became") for r in reasons) == 1
    assert sum(r.startswith("not trained: the same network failed") for r in reasons) >= 10
    assert len({t.user_attrs["codesign.design_key"] for t in failed}) == len(failed)
    by_number = {t.number: t for t in every}
    for t in every:
        if "codesign.repeat_of" in t.user_attrs:
            first = by_number[t.user_attrs["codesign.repeat_of"]]
            assert t.user_attrs["codesign.fail_reason"] == first.user_attrs["codesign.fail_reason"]
