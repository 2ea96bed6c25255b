"""The nested, decoupled and successive-halving strategies and ``codesign compare`` through
the real CLI, with real Ray and SQLite (module-scoped: a few short studies)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
import yaml
from cli_helpers import codesign

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
A = "codesign."


def _experiment(tmp: Path, name: str, **changes: object) -> Path:
    raw = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    raw["study"] = {"name": name, "seed": 0, "n_trials": 3}
    raw["task"] = {"dataset": "digits", "epochs": 2, "batch_size": 64, "lr": 0.3}
    raw["space"]["network"] = {"stages": [1, 2], "depth": [1], "width": [8, 16],
                               "kernel": [3]}
    raw["sampler"] = {"name": "random"}
    raw["report"] = {"reference": {"accuracy": 0.0, "latency_ms": 0.5, "energy_mj": 0.05}}
    raw.update(changes)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("strategies")


def _study(work: Path, name: str, db: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{work / 'runs' / db}")


def test_nested_records_priced_pairs_that_reach_the_front(work: Path) -> None:
    from codesign.report import pareto_trials
    from evaluators.evaluate import constraint_values, price
    from evaluators.specs import Budgets, DesignPoint

    exp = _experiment(work, "nest", strategy={"name": "nested", "hw_samples": 300,
                                              "hw_keep": 4})
    r = codesign("run", str(exp), "--no-progress", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "3 finished networks" in r.stdout and "pairs recorded" in r.stdout
    study = _study(work, "nest", "nest.db")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    asked = [t for t in trials if A + "pair_of" not in t.user_attrs]
    pairs = [t for t in trials if A + "pair_of" in t.user_attrs]
    assert len(asked) == 3 and pairs
    by_number = {t.number: t for t in trials}
    budgets = Budgets(area_mm2=0.5, power_w=0.25)
    for t in pairs:
        parent = by_number[t.user_attrs[A + "pair_of"]]
        assert parent.user_attrs[A + "trained"]
        assert t.user_attrs[A + "training_key"] == parent.user_attrs[A + "training_key"]
        assert t.values[0] == parent.values[0]  # the network's accuracy
        assert t.params.keys() == parent.params.keys()  # a whole design of the space
        design = DesignPoint.from_dict(t.user_attrs[A + "design"])
        report = price(design, None, parent.user_attrs.get(A + "input_density"))
        assert t.values[1:] == pytest.approx([report.latency_ms, report.energy_mj], rel=1e-12)
        assert all(v <= 0 for v in constraint_values(report, budgets).values())
    front = pareto_trials(study)
    assert front and any(A + "pair_of" in t.user_attrs for t in front)
    doc = json.loads(codesign("inspect", "nest", "--json", cwd=work).stdout)
    assert doc["hypervolume"]["fixed"] is True
    assert doc["hypervolume"]["reference"]["latency_ms"] == 0.5
    assert doc["hypervolume"]["value"] > 0


def test_successive_halving_promotes_from_the_previous_rung(work: Path) -> None:
    exp = _experiment(work, "halving", strategy={"name": "flat", "rungs": 2, "eta": 2},
                      study={"name": "halving", "seed": 0, "n_trials": 4},
                      task={"dataset": "digits", "epochs": 4, "batch_size": 64, "lr": 0.3},
                      constraints={})
    r = codesign("run", str(exp), "--no-progress", cwd=work)
    assert r.returncode == 0, r.stderr
    study = _study(work, "halving", "halving.db")
    trials = {t.number: t for t in study.get_trials()}
    low = [t for t in trials.values() if t.user_attrs.get(A + "rung") == 0]
    top = [t for t in trials.values() if t.user_attrs.get(A + "rung") == 1]
    assert len(low) == 4 and 2 <= len(top) <= 3
    assert all(t.user_attrs[A + "fidelity"] == 0.5 for t in low)
    for t in top:
        parent = trials[t.user_attrs[A + "promoted_from"]]
        assert parent.user_attrs[A + "rung"] == 0 and t.params == parent.params
        assert t.user_attrs[A + "warm_from"] == parent.user_attrs[A + "training_key"]
        assert t.user_attrs[A + "warm_tensors"] > 0
        assert t.user_attrs[A + "fidelity"] == 1.0
    ranked = sorted(low, key=lambda t: -t.values[0])
    # the best half of rung 0 by non-dominated rank: every promoted design is on the
    # rung's front or next to it, and the rung's most accurate design is promoted
    assert ranked[0].number in {t.user_attrs[A + "promoted_from"] for t in top}
    doc = json.loads(codesign("inspect", "halving", "--json", cwd=work).stdout)
    assert {p["trial"] for p in doc["pareto"]} <= {t.number for t in top}


def test_compare_scores_strategies_at_equal_trainings(work: Path) -> None:
    exp = _experiment(work, "cmp", strategy={"hw_samples": 200, "hw_keep": 3})
    args = ("compare", str(exp), "--strategies", "nested,random,decoupled", "--seeds", "2",
            "--trainings", "3", "--no-progress")
    r = codesign(*args, cwd=work, timeout=600)
    assert r.returncode == 0, r.stderr
    out = work / "runs" / "cmp-compare"
    for name in ("runs.csv", "summary.csv", "trace.csv", "hypervolume.png", "README.md"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [(r["strategy"], r["seed"]) for r in rows] == [
        (s, k) for k in "01" for s in ("nested", "random", "decoupled")]
    assert all(float(r["trainings"]) == 3 for r in rows)
    for r_ in rows:
        assert float(r_["hv_at_25pct"]) <= float(r_["hv_at_50pct"]) <= float(r_["hv_at_100pct"])
    assert (out / "hypervolume.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "nested" in r.stdout and "hv@100%" in r.stdout and "seed spread" in r.stdout
    trace = list(csv.DictReader((out / "trace.csv").open()))
    assert len(trace) == 6 * 4  # trainings 0..3 of each run

    db = "cmp-compare.db"
    decoupled = _study(work, "cmp.decoupled.s0", db)
    stage1 = [t for t in decoupled.get_trials() if A + "pair_of" not in t.user_attrs]
    assert {t.params["hw/pe_rows"] for t in stage1} == {16}  # the reference accelerator
    assert any(A + "pair_of" in t.user_attrs for t in decoupled.get_trials())
    nested = _study(work, "cmp.nested.s1", db)
    assert nested.user_attrs  # its own study, seed 1
    assert nested.user_attrs["codesign.experiment"]["study"]["seed"] == 1

    again = codesign(*args, cwd=work, timeout=600)  # resumable: every run is at its budget
    assert again.returncode == 0, again.stderr
    rows2 = list(csv.DictReader((out / "runs.csv").open()))
    drop = lambda row: {k: v for k, v in row.items() if k != "seconds"}  # noqa: E731
    assert [drop(x) for x in rows2] == [drop(x) for x in rows]
    (out / "mine.txt").write_text("keep me")
    assert codesign(*args, cwd=work, timeout=600).returncode == 0
    assert (out / "mine.txt").read_text() == "keep me"  # never deleted


def test_compare_refuses_bad_strategies_and_foreign_folders(work: Path) -> None:
    exp = _experiment(work, "bad")
    r = codesign("compare", str(exp), "--strategies", "nested,annealing", cwd=work)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "unknown strategy 'annealing'" in r.stderr
    foreign = work / "notes"
    foreign.mkdir()
    (foreign / "paper.tex").write_text("x")
    r = codesign("compare", str(exp), "--out", str(foreign), cwd=work)
    assert r.returncode == 2 and "holds no codesign export" in r.stderr
    assert not (work / "runs" / "bad-compare.db").exists()  # refused before any run
