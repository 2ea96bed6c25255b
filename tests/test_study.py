"""Study storage, create/load rules, stale-trial re-queueing and the training cache.

Parametrized over the storage backends that run here without a server (SQLite file and
Optuna journal file). No Ray: these are the driver-side pieces on their own.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from codesign.cli import main
from codesign.config import from_mapping, load
from codesign.errors import StudyConflict
from codesign.runner import TrainingCache, requeue_stale
from codesign.samplers import make
from codesign.study import create_or_load, load_existing, open_storage
from evaluators.specs import DesignPoint

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


@pytest.fixture(params=["sqlite", "journal"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    return f"journal:{tmp_path}/s.log"


def test_create_load_and_conflict(url: str) -> None:
    cfg = load(QUICKSTART)
    storage = open_storage(url)
    study, created = create_or_load(cfg, storage, url, sampler=make(cfg.sampler, seed=0))
    assert created and study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    again, created = create_or_load(cfg, storage, url, sampler=make(cfg.sampler, seed=0))
    assert not created and again.study_name == "quickstart"
    # the stored experiment rebuilds the same config (what resume/inspect/export rely on)
    _, stored = load_existing("quickstart", storage, url)
    assert stored.fingerprint() == cfg.fingerprint()
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["space"]["accelerator"]["glb_kib"] = [8, 16]
    raw["study"]["n_trials"] = 5  # not part of the fingerprint
    changed = from_mapping(raw)
    with pytest.raises(StudyConflict, match="space.accelerator.glb_kib"):
        create_or_load(changed, storage, url, sampler=None)


def test_study_from_an_older_codesign_continues(url: str) -> None:
    """Keys a newer codesign added, at their defaults, are no change of experiment, and the
    training-cache keys of the old trials stay valid."""
    cfg = load(QUICKSTART)
    storage = open_storage(url)
    study, _ = create_or_load(cfg, storage, url, sampler=None)
    older = json.loads(json.dumps(cfg.resolved))
    for key in ("deploy_input", "warm_start", "warm_start_checkpoint"):
        del older["task"][key]
    for key in ("rank_ratio", "precision", "first_layer_bits", "last_layer_bits"):
        del older["space"]["compression"][key]
    study.set_user_attr("codesign.experiment", older)
    study.set_user_attr("codesign.fingerprint", "made-by-an-older-version")
    again, created = create_or_load(cfg, storage, url, sampler=None)
    assert not created and again.user_attrs["codesign.fingerprint"] == cfg.fingerprint()
    # a new key set away from its default is a change
    again.set_user_attr("codesign.experiment", older)
    again.set_user_attr("codesign.fingerprint", "made-by-an-older-version")
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["space"]["compression"]["rank_ratio"] = 0.5
    with pytest.raises(StudyConflict, match="space.compression.rank_ratio"):
        create_or_load(from_mapping(raw), storage, url, sampler=None)
    # a design stored without the added fields has the same training key as one with them
    design = cfg.space.decode(optuna.create_study().ask(cfg.space.distributions()).params)
    old_dict = design.to_dict()
    for key in ("rank_ratio", "first_layer_bits", "last_layer_bits"):
        del old_dict["network"][key]
    for stage in old_dict["network"]["stages"]:
        del stage["weight_bits"], stage["activation_bits"]
    assert DesignPoint.from_dict(old_dict).training_key(cfg.task) == design.training_key(cfg.task)


def test_every_sampler_builds_and_asks() -> None:
    cfg = load(QUICKSTART)
    for name, opts in [("nsga2", {"population_size": 4}), ("nsga3", {}), ("tpe", {}),
                       ("gp", {}), ("random", {}), ("qmc", {"qmc_type": "halton"})]:
        raw = yaml.safe_load(QUICKSTART.read_text())
        raw["sampler"] = {"name": name, **opts}
        c = from_mapping(raw)
        study = optuna.create_study(directions=c.directions, sampler=make(c.sampler, seed=1))
        t = study.ask(c.space.distributions())
        c.space.check_params(t.params)
        design = c.space.decode(t.params)
        assert design.accelerator.pe_rows in (4, 8, 16, 32)
    assert cfg.sampler.name == "nsga2"


def test_requeue_stale_running_trials(url: str) -> None:
    cfg = load(QUICKSTART)
    storage = open_storage(url)
    study, _ = create_or_load(cfg, storage, url, sampler=make(cfg.sampler, seed=0))
    import os
    import socket

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs: the driver of `dead` crashed
    dead = study.ask(cfg.space.distributions())
    dead.set_user_attr("codesign.driver", f"{socket.gethostname()}:{gone.pid}")
    remote = study.ask(cfg.space.distributions())  # another host's live driver (PostgreSQL)
    remote.set_user_attr("codesign.driver", "another-host:4242")
    alive = study.ask(cfg.space.distributions())

    # a live driver on this host: the parent of this process (pytest's launcher or shell)
    alive.set_user_attr("codesign.driver", f"{socket.gethostname()}:{os.getppid()}")
    assert requeue_stale(study) == 1
    t = study.trials[dead.number]
    assert t.state == TrialState.FAIL and "re-queued" in t.user_attrs["codesign.fail_reason"]
    assert study.trials[alive.number].state == TrialState.RUNNING
    assert study.trials[remote.number].state == TrialState.RUNNING
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == t.params
    assert waiting[0].user_attrs["codesign.requeued_from"] == dead.number


def test_training_cache_reads_completed_trials(url: str) -> None:
    cfg = load(QUICKSTART)
    study, _ = create_or_load(cfg, open_storage(url), url, sampler=None)
    t = study.ask(cfg.space.distributions())
    for k, v in {"codesign.trained": True, "codesign.training_key": "k1",
                 "codesign.accuracy": 0.9, "codesign.weights": "w.pt",
                 "codesign.input_density": {"s0b0": 0.5}}.items():
        t.set_user_attr(k, v)
    study.tell(t, [0.9, 1.0, 1.0])
    failed = study.ask(cfg.space.distributions())
    failed.set_user_attr("codesign.training_key", "k2")
    study.tell(failed, state=TrialState.FAIL)
    old = study.ask(cfg.space.distributions())  # trained by a version that measured no zeros
    for k, v in {"codesign.trained": True, "codesign.training_key": "k3",
                 "codesign.accuracy": 0.8}.items():
        old.set_user_attr(k, v)
    study.tell(old, [0.8, 1.0, 1.0])
    cache = TrainingCache(study.get_trials(states=(TrialState.COMPLETE,)))
    assert cache.get("k1") == (0.9, "w.pt", {"s0b0": 0.5}) and cache.get("k2") is None
    assert cache.get("k3") is None  # trained again, so that it is priced with its zeros


def test_evaluate_prices_a_cache_hit_with_its_zeros() -> None:
    """A cache hit is priced (budgets included) with the cached training's input densities:
    less energy than dense, the same cycles, constraints never above the dense ones."""
    from evaluators.evaluate import constraint_values, evaluate, price
    from evaluators.training import extract_layers

    cfg = load(QUICKSTART)
    study = optuna.create_study(directions=cfg.directions, sampler=make(cfg.sampler, seed=5))
    design = cfg.space.decode(study.ask(cfg.space.distributions()).params)
    design = dataclasses.replace(
        design, accelerator=dataclasses.replace(design.accelerator, zero_gating=True))
    density = {layer.name: 0.4 for layer in extract_layers(design.network)}
    r = evaluate(design, cfg.task, cfg.budgets, cached_accuracy=0.77,
                 cached_input_density=density)
    dense = price(design, cfg.task.deploy_input)
    assert r.cached == r.feasible and r.training is None
    assert r.hardware.total.energy_pj < dense.total.energy_pj
    assert r.hardware.total.total_cycles == dense.total.total_cycles
    assert r.hardware.to_dict() == price(design, cfg.task.deploy_input, density).to_dict()
    for name, v in constraint_values(dense, cfg.budgets).items():
        assert r.constraints[name] <= v


def test_evaluate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load(QUICKSTART)
    study = optuna.create_study(directions=cfg.directions, sampler=make(cfg.sampler, seed=3))
    params = study.ask(cfg.space.distributions()).params
    p = tmp_path / "p.json"
    p.write_text(json.dumps(params))
    assert main(["evaluate", str(QUICKSTART), "--params", str(p), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["design"] == cfg.space.decode(params).to_dict()
    assert doc["hardware"]["latency_ms"] > 0 and doc["hardware"]["area_mm2"] > 0
    assert doc["feasible"] == all(v <= 0 for v in doc["constraints"].values())
    if doc["feasible"]:
        assert doc["training"] and 0 <= doc["accuracy"] <= 1
    else:
        assert doc["training"] is None and doc["accuracy"] == 0.0


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"hw/pe_rows": 5}, "hw/pe_rows: 5 is not in [4, 8, 16, 32]"),
        ({"hw/pe_array": 5}, "hw/pe_array: unknown parameter"),
        ({"hw/rf_bytes": 16}, "hw/rf_bytes: fixed to 8"),
        ({}, "missing parameter"),
    ],
)
def test_evaluate_bad_params(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             params: dict, words: str) -> None:
    cfg = load(QUICKSTART)
    study = optuna.create_study(directions=cfg.directions)
    good = study.ask(cfg.space.distributions()).params
    full = {**good, **params} if params else {}
    p = tmp_path / "p.json"
    p.write_text(json.dumps(full))
    assert main(["evaluate", str(QUICKSTART), "--params", str(p)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.startswith(f"error: {p}: ")


def test_evaluate_unreadable_params(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "p.json"
    p.write_text("{not json")
    assert main(["evaluate", str(QUICKSTART), "--params", str(p)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {p}: json: cannot be read")


def test_hw_command_contract(tmp_path: Path) -> None:
    acc = tmp_path / "acc.yaml"
    acc.write_text("{template: systolic, dataflow: ws, pe_rows: 32, pe_cols: 32}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "codesign", "hw", "--accelerator", str(acc), "--layers",
         str(ROOT / "experiments" / "layers" / "resnet18_conv2.csv"), "--json"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    for key in ("compute_cycles", "total_cycles", "utilization", "dram_read_bytes",
                "dram_write_bytes", "energy_pj", "latency_ms"):
        assert key in doc["total"] and key in doc["layers"][0]
    # SCALE-Sim 3.0.0's stall-free WS count for this layer on 32x32 (reference/hardware.md)
    assert doc["layers"][0]["compute_cycles"] == 116_279


def test_hw_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acc = tmp_path / "acc.yaml"
    acc.write_text("{template: systolic, dataflow: xs, pe_rows: 32, pe_cols: 32}\n")
    layers = ROOT / "experiments" / "layers" / "resnet18_conv2.csv"
    assert main(["hw", "--accelerator", str(acc), "--layers", str(layers)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {acc}: dataflow"), err
    acc.write_text("{template: eyeriss}\n")
    bad = tmp_path / "layers.csv"
    bad.write_text("Layer name,H,W,R,S,C,K,Stride,Input Density\nc,8,8,3,3,4,4,1,2\n")
    assert main(["hw", "--accelerator", str(acc), "--layers", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {bad}: row 2: Input Density: must be a number in (0, 1], got '2'"]


def test_a_design_left_unfinished_max_crashes_times_is_not_requeued(url: str) -> None:
    cfg = load(QUICKSTART)
    study, _ = create_or_load(cfg, open_storage(url), url, sampler=make(cfg.sampler, seed=0))
    import socket

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}"
    params = None
    for crash in range(1, 4):  # three drivers, each killed while the design ran
        if params is None:
            trial = study.ask(cfg.space.distributions())
            params = trial.params
        else:
            trial = study.ask(cfg.space.distributions())  # the re-queued design
            assert trial.params == params
        trial.set_user_attr("codesign.driver", dead)
        trial.set_user_attr("codesign.design_key", "slow-design")
        assert requeue_stale(study, max_crashes=3) == (1 if crash < 3 else 0)
    last = study.trials[-1]
    assert last.state == TrialState.FAIL
    assert "3 times (execution.max_crashes=3); not re-queued" in (
        last.user_attrs["codesign.fail_reason"])
    assert not study.get_trials(states=(TrialState.WAITING,))


def test_a_driver_of_another_host_is_dead_once_its_lease_lapses(url: str) -> None:
    import time as _time

    from codesign.optuna_adapter import claim

    cfg = load(QUICKSTART)
    study, _ = create_or_load(cfg, open_storage(url), url, sampler=make(cfg.sampler, seed=0))

    def running(driver: str) -> None:
        trial = study.ask(cfg.space.distributions())
        trial.set_user_attr("codesign.driver", driver)

    def beat(driver: str, age_s: float, lease_s: float = 60.0) -> None:
        holder = {"driver": driver, "t": _time.time() - age_s, "lease_s": lease_s}
        assert claim(study, f"beat:{driver}", holder, lambda h: True) is None

    running("fresh-host:1")  # its lease holds
    beat("fresh-host:1", age_s=5)
    running("old-codesign-host:1")  # no beat at all: never taken for dead from here
    running("lapsed-host:1")  # its beat is older than its lease
    beat("lapsed-host:1", age_s=61)
    assert requeue_stale(study) == 1
    state = {t.user_attrs["codesign.driver"]: t.state for t in study.trials
             if t.state != TrialState.WAITING}
    assert state == {"fresh-host:1": TrialState.RUNNING,
                     "old-codesign-host:1": TrialState.RUNNING,
                     "lapsed-host:1": TrialState.FAIL}
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
