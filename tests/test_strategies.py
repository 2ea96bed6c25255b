"""The hardware half solved per network, fixed-reference hypervolume, and compare's scoring
(no Ray: the driver-side pieces on their own; tests/test_e2e_strategies.py runs them whole)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from codesign.config import ConfigError, from_mapping, load

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


def _raw(**changes: object) -> dict:
    """The quickstart experiment without its report key, with ``changes``."""
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw.pop("report")
    raw.update(changes)
    return raw


# ------------------------------------------------------------------ fronts


def _brute_front(points: np.ndarray) -> set[int]:
    keep = set()
    for i, p in enumerate(points):
        dominated = any(np.all(q <= p) and np.any(q < p) for q in points)
        duplicate = any(np.array_equal(points[j], p) for j in range(i))
        if not dominated and not duplicate:
            keep.add(i)
    return keep


@pytest.mark.parametrize("seed", range(5))
def test_non_dominated_equals_brute_force(seed: int) -> None:
    from codesign.report import non_dominated

    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 6, size=(700, 3)).astype(float)  # many ties and duplicates
    assert set(non_dominated(pts).tolist()) == _brute_front(pts)


def test_spread_keeps_both_ends_and_at_most_keep() -> None:
    from codesign.strategies import spread

    front = np.array([[x, 10.0 - x] for x in np.linspace(0, 10, 40)])[::-1]
    picked = spread(front, 5)
    assert len(picked) == 5
    xs = sorted(front[picked, 0])
    assert xs[0] == 0.0 and xs[-1] == 10.0
    assert len(spread(front[:3], 5)) == 3


# ------------------------------------------------------------------ the hardware half


def test_hardware_points_grid_sample_reference_and_accelerator() -> None:
    from search_spaces.dims import FloatRange, IntRange, draw, grid_values, middle

    cfg = load(QUICKSTART)
    space = cfg.space
    assert space.hardware_grid_size() is None  # dram_gbps is a continuous log range
    assert set(space.network_distributions()) | set(space.hardware_distributions()) == set(
        space.distributions())
    pts = space.hardware_points(max_grid=10**6, samples=500, seed=3)
    assert pts == space.hardware_points(max_grid=10**6, samples=500, seed=3)  # seeded
    assert pts != space.hardware_points(max_grid=10**6, samples=500, seed=4)
    assert all(1.0 <= p["hw/dram_gbps"] <= 16.0 for p in pts)
    assert {p["hw/dataflow"] for p in pts} == {"ws", "os", "is"}
    ref = space.reference_hardware()
    assert ref["hw/pe_rows"] == 16 and ref["hw/dataflow"] == "os"
    assert ref["hw/dram_gbps"] == pytest.approx(4.0)  # geometric middle of 1..16
    # the accelerator of a point is the one decode builds
    params = {**space.example_params(), **pts[0]}
    assert space.accelerator(pts[0]) == space.decode(params).accelerator

    # a finite space is enumerated whole, in a stable order
    raw = _raw()
    raw["space"]["accelerator"]["dram_gbps"] = [4.0, 8.0]
    grid_space = from_mapping(raw).space
    assert grid_space.hardware_grid_size() == 3 * 4 * 4 * 3 * 2 * 3
    grid = grid_space.hardware_points(max_grid=10_000, samples=10, seed=0)
    assert len(grid) == 864 and len({tuple(p.values()) for p in grid}) == 864
    assert len(grid_space.hardware_points(max_grid=100, samples=50, seed=0)) <= 50

    assert grid_values(IntRange(2, 10, 4)) == [2, 6, 10]
    assert grid_values(FloatRange(0.0, 0.8, 0.2)) == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert grid_values(FloatRange(1.0, 2.0)) is None
    assert middle(IntRange(1, 9, 2)) == 5 and middle(FloatRange(0.0, 0.8, 0.2)) == 0.4
    drawn = draw(IntRange(1, 1000, log=True), np.random.default_rng(0), 2000)
    assert min(drawn) >= 1 and max(drawn) <= 1000 and np.median(drawn) < 100  # log-uniform


def _solver(**strategy: object):
    from codesign.strategies import HardwareSolver

    raw = _raw(strategy={"name": "nested", **strategy})
    cfg = from_mapping(raw)
    return cfg, HardwareSolver(cfg)


def _network(cfg, **net: object):
    params = {**cfg.space.example_params(), "net/stages": 2, "net/s0/width": 16,
              "net/s1/width": 32, "cmp/weight_bits": 4, "cmp/activation_bits": 4, **net}
    return params, cfg.space.decode(params).network


def test_probe_is_the_least_edp_feasible_configuration() -> None:
    from evaluators.evaluate import constraint_values, price
    from evaluators.specs import DesignPoint, EvaluatorError

    cfg, solver = _solver(hw_samples=200)
    params, network = _network(cfg)
    points = solver.points(network)
    hw, ok = solver.probe(network, points)
    assert ok
    best = None
    for p in points:  # the one-design path, point by point
        try:
            r = price(DesignPoint(network, cfg.space.accelerator(p)))
        except EvaluatorError:
            continue
        if all(v <= 0 for v in constraint_values(r, cfg.budgets).values()):
            edp = r.latency_ms * r.energy_mj
            if best is None or edp < best[0]:
                best = (edp, p)
    assert best is not None and hw == best[1]


def test_probe_without_a_feasible_configuration_takes_the_least_over_budget() -> None:
    raw = _raw(strategy={"name": "nested", "hw_samples": 100},
               constraints={"area_mm2": 1e-6})  # nothing fits
    from codesign.strategies import HardwareSolver

    cfg = from_mapping(raw)
    solver = HardwareSolver(cfg)
    _, network = _network(cfg)
    points = solver.points(network)
    hw, ok = solver.probe(network, points)
    assert not ok
    from evaluators.evaluate import price
    from evaluators.specs import DesignPoint, EvaluatorError

    areas = {}
    for p in points:
        try:
            areas[tuple(p.values())] = price(
                DesignPoint(network, cfg.space.accelerator(p))).area_mm2
        except EvaluatorError:
            pass
    assert areas[tuple(hw.values())] == min(areas.values())


def test_front_pairs_are_feasible_and_non_dominated_among_the_points() -> None:
    from evaluators.evaluate import constraint_values, price
    from evaluators.specs import DesignPoint, EvaluatorError

    cfg, solver = _solver(hw_samples=300, hw_keep=50)
    params, network = _network(cfg)
    density = None
    points = solver.points(network)
    net_params = {k: v for k, v in params.items() if not k.startswith("hw/")}
    pairs = solver.front(network, density, points, net_params)
    assert pairs
    feasible = []
    for p in points:
        try:
            r = price(DesignPoint(network, cfg.space.accelerator(p)))
        except EvaluatorError:
            continue
        if all(v <= 0 for v in constraint_values(r, cfg.budgets).values()):
            feasible.append((r.latency_ms, r.energy_mj))
    feasible_arr = np.array(feasible)
    for pair in pairs:
        assert all(v <= 0 for v in pair.constraints.values())
        assert pair.design.network == network
        me = np.array([pair.report.latency_ms, pair.report.energy_mj])
        assert not np.any(np.all(feasible_arr <= me, axis=1) & np.any(feasible_arr < me, axis=1))
    keep = _solver(hw_samples=300, hw_keep=3)[1].front(network, density, points, net_params)
    assert 1 <= len(keep) <= 3


# ------------------------------------------------------------------ configuration


def test_strategy_and_report_keys_are_checked(tmp_path: Path) -> None:
    raw = _raw(strategy={"name": "nestd", "hw_keep": 0, "grid": 1},
               report={"reference": {"accuracy": 1.5, "latency_ms": "x", "speed": 1},
                       "ideal": [1]})
    with pytest.raises(ConfigError) as e:
        from_mapping(raw, source="exp.yaml")
    lines = e.value.lines()
    for key in ("strategy.name", "strategy.hw_keep", "strategy.grid", "report.reference.accuracy",
                "report.reference.latency_ms", "report.reference.speed", "report.ideal",
                "report.reference: give a value for every objective"):
        assert any(f"exp.yaml: {key}" in line for line in lines), (key, lines)


def test_an_experiment_without_the_new_keys_is_stored_as_before() -> None:
    cfg = from_mapping(_raw())
    assert "strategy" not in cfg.resolved and "report" not in cfg.resolved
    assert cfg.strategy.name == "flat" and cfg.report.reference is None
    assert load(QUICKSTART).report.reference == {"accuracy": 0.8, "latency_ms": 0.05,
                                                 "energy_mj": 0.005}
    with_report = from_mapping(_raw(report={"reference": {
        "accuracy": 0.5, "latency_ms": 1.0, "energy_mj": 1.0}}))
    assert with_report.fingerprint() == from_mapping(_raw()).fingerprint()  # scoring only
    nested = from_mapping(_raw(strategy={"name": "nested"}))
    assert nested.fingerprint() != cfg.fingerprint()


# ------------------------------------------------------------------ hypervolume


def _study(points: list[tuple[float, float]], trained: bool = True) -> list:
    """Feasible trials of (accuracy, latency_ms) values."""
    dists = {"x": optuna.distributions.FloatDistribution(0, 1)}
    out = []
    for i, (acc, lat) in enumerate(points):
        t = optuna.trial.create_trial(
            params={"x": 0.5}, distributions=dists, values=[acc, lat],
            user_attrs={"codesign.trained": trained, "codesign.train_seconds": 36.0},
            system_attrs={"constraints": [-1.0]})
        t.number = i
        out.append(t)
    return out


def _two_objective_cfg(reference: dict | None):
    raw = _raw(objectives=["accuracy", "latency_ms"], constraints={})
    if reference is not None:
        raw["report"] = {"reference": reference}
    return from_mapping(raw)


def test_a_fixed_reference_ranks_studies_as_their_fronts_do() -> None:
    """Own references put a dominated study first; a fixed one does not (the issue's
    random-above-TPE case)."""
    from codesign.report import hypervolume_trace

    weak = _study([(0.90, 1.0), (0.30, 10.0)])  # a far worst point: a large own box
    strong = _study([(0.95, 0.8)])  # dominates both of weak's
    own = _two_objective_cfg(None)
    assert (hypervolume_trace(weak, own).hypervolume[-1]
            > hypervolume_trace(strong, own).hypervolume[-1])
    fixed = _two_objective_cfg({"accuracy": 0.0, "latency_ms": 2.0})
    hv_weak = hypervolume_trace(weak, fixed).hypervolume[-1]
    hv_strong = hypervolume_trace(strong, fixed).hypervolume[-1]
    assert hv_strong > hv_weak
    # by hand: box [0, 1] x [0, 2]; weak covers (1 - 0.9) .. 1 x 1 .. 2 -> 0.9 * 0.5
    assert hv_weak == pytest.approx(0.9 * 0.5)
    assert hv_strong == pytest.approx(0.95 * 0.6)  # (weak's 10 ms lies outside the box)


def test_hypervolume_trace_counts_trainings_and_hours() -> None:
    from codesign.report import hypervolume_trace

    trials = _study([(0.5, 1.5), (0.7, 1.5), (0.9, 1.5)])
    trace = hypervolume_trace(trials, _two_objective_cfg({"accuracy": 0.0, "latency_ms": 2.0}))
    assert trace.trainings == [1, 2, 3]
    assert trace.train_hours == pytest.approx([0.01, 0.02, 0.03])
    assert trace.hypervolume == pytest.approx([0.5 * 0.25, 0.7 * 0.25, 0.9 * 0.25])
    assert trace.at_trainings(2) == pytest.approx(0.7 * 0.25)
    assert trace.at_trainings(0) == 0.0 and trace.at_trainings(99) == trace.hypervolume[-1]


def test_hypervolume_is_moocore_exact_in_3d() -> None:
    from codesign.report import hypervolume

    pts = np.array([[0.2, 0.5, 0.5], [0.5, 0.2, 0.5], [0.5, 0.5, 0.2], [1.2, 0.0, 0.0]])
    # inclusion-exclusion of three boxes [p, 1]^3 (the last point lies outside the box)
    vol = 3 * 0.8 * 0.5 * 0.5 - 3 * 0.5 * 0.5 * 0.5 + 0.5 ** 3
    assert hypervolume(pts) == pytest.approx(vol)


# ------------------------------------------------------------------ compare


def test_parse_arms() -> None:
    from codesign.compare import parse_arms
    from codesign.errors import CodesignError

    arms = parse_arms(["nested", "nested:random", "tpe", "decoupled"])
    assert [(a.strategy, a.sampler) for a in arms] == [
        ("nested", "tpe"), ("nested", "random"), ("flat", "tpe"), ("decoupled", "tpe")]
    sh, = parse_arms(["nested:random+sh+warm"])
    assert (sh.strategy, sh.sampler, sh.halving, sh.warm) == ("nested", "random", True, True)
    for bad in (["nestd"], ["tpe", "tpe"], ["flat"], ["nested:cmaes"], [], ["tpe+fast"],
                ["tpe+sh+sh"]):
        with pytest.raises(CodesignError, match="--strategies"):
            parse_arms(bad)


def test_arm_config_gives_each_run_its_study_seed_and_sampler() -> None:
    from codesign.compare import arm_config, parse_arms

    cfg = load(QUICKSTART)
    nested, nsga2, tpe = parse_arms(["nested", "nsga2", "tpe"])
    run = arm_config(cfg, nested, 2, "sqlite:///x.db", 40)
    assert run.study.name == "quickstart.nested.s2" and run.study.seed == 2
    assert run.strategy.name == "nested" and run.sampler.name == "tpe"
    assert run.space == cfg.space and run.task.dataset == cfg.task.dataset
    # the experiment's own sampler keeps its options; another NSGA-II gets budget / 5
    assert arm_config(cfg, nsga2, 0, "sqlite:///x.db", 40).sampler.options == {
        "population_size": 12}
    assert arm_config(cfg, tpe, 0, "sqlite:///x.db", 40).sampler.options == {}
    halving, = parse_arms(["tpe+sh+warm"])
    run = arm_config(cfg, halving, 1, "sqlite:///x.db", 40)
    assert run.study.name == "quickstart.tpe_sh_warm.s1"
    assert (run.strategy.rungs, run.strategy.eta, run.task.warm_start) == (3, 3, "closest")


def test_score_uses_one_reference_and_the_iso_accuracy_level() -> None:
    from codesign.compare import Arm, RunResult, score

    cfg = _two_objective_cfg(None)

    def trials(points: list[tuple[float, float]]) -> list:
        out = _study(points)
        for t in out:
            t.user_attrs["codesign.hw"] = {"latency_ms": t.values[1], "energy_mj": 2.0}
        return out

    a, b = Arm("a", "flat", "random"), Arm("b", "nested", "tpe")
    runs = [RunResult(a, 0, "a0", 1, 1, 1.0), RunResult(b, 0, "b0", 2, 2, 1.0)]
    data = {"a0": trials([(0.8, 1.0)]), "b0": trials([(0.9, 0.5), (0.85, 0.25)])}
    comp = score(cfg, runs, data, trainings=2)
    assert comp.iso_accuracy == pytest.approx(0.8)
    assert comp.reference["latency_ms"] == pytest.approx(1.1)  # pooled worst x 1.1
    assert runs[0].best_edp == pytest.approx(2.0) and runs[1].best_edp == pytest.approx(0.5)
    assert runs[1].at[1.0] > runs[0].at[1.0]
    assert math.isclose(runs[1].at[0.5], runs[1].trace.at_trainings(1))
    table = {r["strategy"]: r for r in comp.table()}
    assert table["b"]["hv@100%"][1] == 0.0  # one seed: no spread


# ------------------------------------------------------------------ real data


def test_fashion_mnist_defaults_to_the_packaged_folder(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from evaluators.training import datasets

    raw = _raw(task={"dataset": "fashion_mnist", "epochs": 1})
    raw["space"]["network"]["width"] = [8]
    missing = tmp_path / "not-installed"
    monkeypatch.setitem(datasets.DEFAULT_DATA_DIRS, "fashion_mnist",
                        (str(missing), "dataset-fashion-mnist"))
    with pytest.raises(ConfigError) as e:
        from_mapping(raw, source="f.yaml")
    (line,) = e.value.lines()
    assert line.startswith("f.yaml: task.data_dir: ")
    assert "apt-get install dataset-fashion-mnist" in line and str(missing) in line

    packaged = tmp_path / "fashion-mnist"
    packaged.mkdir()
    for name in itertools.chain(datasets._IDX_NAMES):
        (packaged / (name + ".gz")).write_bytes(b"")
    monkeypatch.setitem(datasets.DEFAULT_DATA_DIRS, "fashion_mnist",
                        (str(packaged), "dataset-fashion-mnist"))
    cfg = from_mapping(raw)
    assert cfg.task.data_dir == str(packaged)
    assert cfg.resolved["task"]["data_dir"] == str(packaged)  # stored: resume finds it


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_the_real_fashion_mnist_files_load() -> None:
    from evaluators.training import load_splits

    cfg = load(ROOT / "experiments" / "fashion_bitfusion.yaml")
    assert cfg.task.data_dir == "/usr/share/datasets/fashion-mnist"
    splits = load_splits(cfg.task)
    n = len(splits.train_y) + len(splits.val_y) + len(splits.test_y)
    assert n == 70_000 and len(splits.test_y) == 10_000
    assert tuple(splits.train_x.shape[1:]) == (1, 28, 28)
    assert sorted(set(splits.val_y.tolist())) == list(range(10))


def test_a_changed_report_reference_is_stored_without_a_new_study(tmp_path: Path) -> None:
    from codesign.study import ATTR_EXPERIMENT, create_or_load, open_storage

    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = open_storage(url, create_dirs=True)
    create_or_load(from_mapping(_raw()), storage, url, sampler=None)
    ref = {"accuracy": 0.5, "latency_ms": 1.0, "energy_mj": 1.0}
    study, created = create_or_load(from_mapping(_raw(report={"reference": ref})), storage,
                                    url, sampler=None)
    assert not created
    stored = from_mapping(study.user_attrs[ATTR_EXPERIMENT])
    assert stored.report.reference == ref  # inspect NAME scores with the new box


def test_a_study_of_an_older_strategy_section_continues(tmp_path: Path) -> None:
    """A study stored before strategy.rungs / eta existed (and without report) is the same
    experiment as the file that now has them at their defaults (and a report)."""
    from codesign.study import ATTR_EXPERIMENT, ATTR_FINGERPRINT, create_or_load, open_storage

    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = open_storage(url, create_dirs=True)
    new = from_mapping(_raw(strategy={"name": "nested"}))
    study, _ = create_or_load(new, storage, url, sampler=None)
    old = dict(new.resolved)
    old["strategy"] = {k: v for k, v in old["strategy"].items() if k not in ("rungs", "eta")}
    study.set_user_attr(ATTR_EXPERIMENT, old)
    study.set_user_attr(ATTR_FINGERPRINT, "from-an-older-version")
    ref = {"accuracy": 0.5, "latency_ms": 1.0, "energy_mj": 1.0}
    again = from_mapping(_raw(strategy={"name": "nested"}, report={"reference": ref}))
    _, created = create_or_load(again, storage, url, sampler=None)
    assert not created


# ------------------------------------------------------------------ successive halving state


def test_rungs_that_would_train_the_same_budget_are_refused() -> None:
    with pytest.raises(ConfigError) as e:
        from_mapping(_raw(strategy={"rungs": 3, "eta": 3},
                          task={"dataset": "digits", "epochs": 4}), source="e.yaml")
    (line,) = e.value.lines()
    assert line.startswith("e.yaml: strategy.rungs: ") and "[1, 1, 4] epochs" in line
    cfg = from_mapping(_raw(strategy={"rungs": 3, "eta": 3},
                            task={"dataset": "digits", "epochs": 15}))
    assert cfg.strategy.rung_budgets(15) == [2, 5, 15]


def test_a_failed_promotion_is_made_again_and_never_requeued(tmp_path: Path) -> None:
    """A promotion that a crash (or Ctrl-C) failed leaves its parent promotable, and the
    stale-trial re-queue does not turn it into a rung-0 design."""
    import socket

    from codesign.optuna_adapter import new_trial, set_params
    from codesign.runner import RunOptions, _Session, requeue_stale

    cfg = from_mapping(_raw(strategy={"rungs": 2, "eta": 2}, constraints={},
                            task={"dataset": "digits", "epochs": 4}))
    study = optuna.create_study(directions=cfg.directions)
    dists = cfg.space.distributions()
    params = cfg.space.example_params()
    for i, acc in enumerate((0.5, 0.9)):
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: dists[k] for k in params},
            values=[acc, 1.0, 1.0], system_attrs={"constraints": []},
            user_attrs={"codesign.rung": 0, "codesign.fidelity": 0.5, "codesign.trained": True,
                        "codesign.design_key": f"d{i}@r0", "codesign.training_key": f"k{i}"}))
    running = new_trial(study)  # the promotion of trial 1, left RUNNING by a dead driver
    set_params(study, running, params, dists)
    running.set_user_attr("codesign.promoted_from", 1)
    running.set_user_attr("codesign.driver", f"{socket.gethostname()}:{2**22 + 7}")
    study.enqueue_trial({})  # a WAITING trial: new_trial must leave it queued
    new_trial(study)  # (Study.ask would have taken it)
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 1
    requeue_stale(study)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1  # only the one enqueued by hand
    opts = RunOptions(n_trials=2, workers=1, artifacts=tmp_path, storage_url="x")
    session = _Session(study, cfg, opts)
    assert 1 not in session.promoted
    assert session.promotion().number == 1  # the better half of rung 0, promoted again
