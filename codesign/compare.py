"""``codesign compare``: search strategies against each other at an equal budget of trainings.

Every strategy runs once per seed on its own study of one storage (``<name>.<label>.s<k>``,
seed ``study.seed + k``), each until it has spent ``trainings`` trainings: trainings are the
honest unit of compute here (a pricing costs milliseconds, a training seconds to hours);
trials and wall time are reported beside them. All runs are scored against one reference
point: ``report.reference`` of the experiment, else one derived from every run's feasible
designs together (``codesign.report.reference_point`` over the pooled trials), so the
hypervolumes compare. A comparison is resumable: an existing study continues to the budget.

Strategies: ``nested``, ``decoupled`` (``codesign.strategies``) and the flat samplers
(``nsga2``, ``nsga3``, ``tpe``, ``gp``, ``random``, ``qmc``: one sampler over the whole joint
space). ``nested`` and ``decoupled`` propose their networks with TPE unless written
``nested:<sampler>``. A sampler keeps the experiment's options when it is the experiment's
sampler; NSGA-II / NSGA-III otherwise get a population of a fifth of the budget (at least 4),
so that they see more than one generation. Two suffixes change how an arm trains: ``+sh``
successive halving (``strategy.rungs: 3, eta: 3``: a ninth, a third and all of the training
budget) and ``+warm`` (``task.warm_start: closest``), e.g. ``nested+sh+warm``; without them
an arm trains as the experiment says.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from codesign.config import SAMPLERS, STRATEGIES, ExperimentConfig, from_mapping
from codesign.errors import CodesignError
from codesign.report import HypervolumeTrace, feasible, hypervolume_trace, reference_point
from codesign.study import A

CHECKPOINTS = (0.25, 0.5, 1.0)  # fractions of the training budget the table reports
ATTR_SECONDS = A + "compare_seconds"  # study attr: wall seconds its compare sessions took


@dataclass(frozen=True)
class Arm:
    """One strategy of a comparison: ``label`` as written (``nested``, ``nested:random``,
    ``tpe``), the strategy and the sampler it runs."""

    label: str
    strategy: str
    sampler: str
    halving: bool = False  # +sh: successive halving over the training budget
    warm: bool = False  # +warm: warm start from the closest trained network


def parse_arms(labels: Sequence[str]) -> list[Arm]:
    """``--strategies`` -> arms.

    Raises:
        CodesignError: an unknown name, or one given twice.
    """
    arms: list[Arm] = []
    for label in labels:
        base, *suffixes = label.split("+")
        name, _, sampler = base.partition(":")
        unknown = [x for x in suffixes if x not in ("sh", "warm")]
        flags = {"halving": "sh" in suffixes, "warm": "warm" in suffixes}
        if unknown or len(set(suffixes)) != len(suffixes):
            arm = None
        elif name in SAMPLERS and not sampler:
            arm = Arm(label, "flat", name, **flags)
        elif name in STRATEGIES and name != "flat" and (sampler or "tpe") in SAMPLERS:
            arm = Arm(label, name, sampler or "tpe", **flags)
        else:
            arm = None
        if arm is None:
            raise CodesignError(
                f"--strategies: unknown strategy {label!r}; known: nested, decoupled (each "
                f"optionally :<sampler>) and the samplers {', '.join(SAMPLERS)}, each "
                "optionally +sh (successive halving) and +warm (warm start)")
        if any(a.label == label for a in arms):
            raise CodesignError(f"--strategies: {label!r} is given twice")
        arms.append(arm)
    if not arms:
        raise CodesignError("--strategies: give at least one strategy")
    return arms


def arm_config(cfg: ExperimentConfig, arm: Arm, seed_index: int, storage: str,
               trainings: int) -> ExperimentConfig:
    """The experiment of one run: its own study name and seed, the arm's strategy and
    sampler, the comparison's storage; everything else as ``cfg``."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.resolved.items()}
    raw["study"] = {"name": run_name(cfg, arm, seed_index), "seed": cfg.study.seed + seed_index,
                    "n_trials": 10**6,  # the budget is trainings (RunOptions.max_trainings)
                    "storage": storage}
    options = dict(cfg.sampler.options) if arm.sampler == cfg.sampler.name else {}
    if arm.sampler in ("nsga2", "nsga3") and arm.sampler != cfg.sampler.name:
        options["population_size"] = max(4, trainings // 5)
    raw["sampler"] = {"name": arm.sampler, **options}
    raw["strategy"] = {**vars(cfg.strategy), "name": arm.strategy}
    if arm.halving:
        raw["strategy"].update(rungs=3, eta=3)
    if arm.warm:
        raw["task"] = {**raw["task"], "warm_start": "closest"}
        raw["task"].pop("warm_start_checkpoint", None)
    return from_mapping(raw, source=f"{cfg.source} ({arm.label}, seed {seed_index})")


def run_name(cfg: ExperimentConfig, arm: Arm, seed_index: int) -> str:
    label = arm.label.replace(":", "-").replace("+", "_")
    return f"{cfg.study.name}.{label}.s{seed_index}"


@dataclass
class RunResult:
    """One (strategy, seed) run, scored."""

    arm: Arm
    seed_index: int
    study: str
    trials: int
    trainings: float  # full-budget units spent (``score`` sets it from the trace)
    seconds: float
    trace: HypervolumeTrace | None = None
    train_hours: float = 0.0
    at: dict[float, float] = field(default_factory=dict)  # budget fraction -> hypervolume
    best_edp: float | None = None  # least latency_ms x energy_mj at the iso-accuracy level


@dataclass
class Comparison:
    """What ``compare`` measured: every run, the reference point, the iso-accuracy level
    and where the files went."""

    runs: list[RunResult]
    reference: dict[str, float]
    reference_fixed: bool
    iso_accuracy: float | None
    trainings: int
    out: Path | None = None

    def table(self) -> list[dict[str, Any]]:
        """One row per strategy: mean and standard deviation over seeds."""
        rows = []
        for label in dict.fromkeys(r.arm.label for r in self.runs):
            runs = [r for r in self.runs if r.arm.label == label]
            row: dict[str, Any] = {"strategy": label, "seeds": len(runs)}
            for q in CHECKPOINTS:
                row[f"hv@{q:.0%}"] = _mean_sd([r.at[q] for r in runs])
            edps = [r.best_edp for r in runs if r.best_edp is not None]
            row["best_edp"] = _mean_sd(edps) if edps else None
            row["trials"] = _mean_sd([r.trials for r in runs])
            row["train_hours"] = _mean_sd([r.train_hours for r in runs])
            row["hv_per_train_hour"] = _mean_sd(
                [r.at[CHECKPOINTS[-1]] / r.train_hours for r in runs if r.train_hours > 0])
            row["trainings"] = _mean_sd([r.trainings for r in runs])
            row["seconds"] = _mean_sd([r.seconds for r in runs])
            rows.append(row)
        return rows

    def verdicts(self) -> list[str]:
        """The best strategy at the full budget against ``random`` and ``decoupled``: the
        difference of the means against the sum of the two standard deviations."""
        rows = {r["strategy"]: r for r in self.table()}
        key = f"hv@{CHECKPOINTS[-1]:.0%}"
        best = max(rows.values(), key=lambda r: r[key][0])
        lines = []
        for other in ("random", "decoupled"):
            if other not in rows or other == best["strategy"]:
                continue
            (m1, s1), (m2, s2) = best[key], rows[other][key]
            beyond = m1 - m2 > s1 + s2
            lines.append(f"{best['strategy']} vs {other}: hypervolume {m1:.4f} vs {m2:.4f} "
                         f"(difference {m1 - m2:+.4f}, seed spreads {s1:.4f} + {s2:.4f}): "
                         f"{'beyond' if beyond else 'not beyond'} the seed spread")
        return lines


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    vals = [float(v) for v in values]
    if not vals:
        return (math.nan, math.nan)
    return (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)


def run_comparison(cfg: ExperimentConfig, *, strategies: list[str], seeds: int,
                   trainings: int, storage: str | None, workers: int | None,
                   out: Path | None, progress: bool = True,
                   log: Any = None) -> Comparison:
    """Run (or continue) every arm x seed to ``trainings`` trainings, then score them.

    ``log``: a callable given one line per finished run (the CLI prints them).

    Raises:
        CodesignError: bad strategies or budget, and what a run raises.
    """
    from codesign.api import open_study, session

    arms = parse_arms(strategies)
    if seeds < 1 or trainings < 1:
        raise CodesignError("--seeds and --trainings must be at least 1")
    url = storage or default_storage(cfg)
    if out is not None:
        from codesign.files import check_folder, check_target

        out = check_target(out, "--out")
        check_folder(out, "--out", overwrite=True)  # refuses a foreign folder before running
    runs: list[RunResult] = []
    trials: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for k in range(seeds):
        for arm in arms:
            run_cfg = arm_config(cfg, arm, k, url, trainings)
            study, _ = open_study(run_cfg, url)
            t0 = time.perf_counter()
            summary = session(run_cfg, study, url, n_trials=run_cfg.study.n_trials,
                              workers=workers, progress=progress, max_trainings=trainings)
            if not summary.nothing_to_do:
                spent = float(study.user_attrs.get(ATTR_SECONDS, 0.0))
                study.set_user_attr(ATTR_SECONDS, spent + time.perf_counter() - t0)
            trials[study.study_name] = study.get_trials(deepcopy=False)
            result = RunResult(arm=arm, seed_index=k, study=study.study_name,
                               trials=len(trials[study.study_name]), trainings=0,
                               seconds=float(study.user_attrs.get(ATTR_SECONDS, 0.0)))
            runs.append(result)
            if log is not None:
                spent = study.user_attrs.get(ATTR_SECONDS, 0.0)
                log(f"{arm.label} seed {k}: {result.trials} trials, {spent:.0f} s")
    comparison = score(cfg, runs, trials, trainings)
    if out is not None:
        write_outputs(comparison, out)
        comparison = replace(comparison, out=out)
    return comparison


def default_storage(cfg: ExperimentConfig) -> str:
    """Where a comparison of ``cfg`` keeps its runs' studies unless told otherwise."""
    return f"sqlite:///runs/{cfg.study.name}-compare.db"


def _edp(t: optuna.trial.FrozenTrial) -> float | None:
    hw = t.user_attrs.get(A + "hw") or {}
    if "latency_ms" in hw and "energy_mj" in hw:
        return float(hw["latency_ms"]) * float(hw["energy_mj"])
    return None


def score(cfg: ExperimentConfig, runs: list[RunResult],
          trials: dict[str, list[optuna.trial.FrozenTrial]], trainings: int) -> Comparison:
    """Hypervolume traces at one reference point, the checkpoints, and the least EDP among
    the feasible designs at least as accurate as ``iso_accuracy`` (the lowest of the runs'
    best feasible accuracies, so that every run has a design there)."""
    pooled = [t for ts in trials.values() for t in ts]
    fixed = cfg.report.reference is not None
    ref = reference_point(pooled, cfg)
    acc_at = cfg.objectives.index("accuracy") if "accuracy" in cfg.objectives else None
    best_accs = []
    for r in runs:
        ok = [t for t in trials[r.study] if feasible(t)]
        if acc_at is not None and ok:
            best_accs.append(max(t.values[acc_at] for t in ok))
    iso = min(best_accs) if acc_at is not None and len(best_accs) == len(runs) else None
    for r in runs:
        r.trace = hypervolume_trace(trials[r.study], cfg, reference=ref)
        r.trainings = r.trace.trainings[-1] if r.trace.trainings else 0
        r.train_hours = r.trace.train_hours[-1] if r.trace.train_hours else 0.0
        r.at = {q: r.trace.at_trainings(math.ceil(q * trainings)) for q in CHECKPOINTS}
        if iso is not None:
            edps = [e for t in trials[r.study] if feasible(t) and t.values[acc_at] >= iso
                    and (e := _edp(t)) is not None]
            r.best_edp = min(edps) if edps else None
    return Comparison(runs=runs, reference=ref, reference_fixed=fixed, iso_accuracy=iso,
                      trainings=trainings)


def text_table(comparison: Comparison) -> str:
    """The per-strategy table as text (mean +- standard deviation over seeds)."""
    from codesign.report import text_table as layout

    cols = ["strategy", *(f"hv@{q:.0%}" for q in CHECKPOINTS), "best EDP (ms*mJ)",
            "trials", "trainings", "train h", "hv/train h", "wall s"]
    cells = []
    for row in comparison.table():
        edp = row["best_edp"]
        cells.append([
            row["strategy"],
            *(f"{row[f'hv@{q:.0%}'][0]:.4f}±{row[f'hv@{q:.0%}'][1]:.4f}" for q in CHECKPOINTS),
            "-" if edp is None else f"{edp[0]:.3g}±{edp[1]:.2g}",
            f"{row['trials'][0]:.0f}", f"{row['trainings'][0]:.3g}",
            f"{row['train_hours'][0]:.3f}",
            f"{row['hv_per_train_hour'][0]:.3g}±{row['hv_per_train_hour'][1]:.2g}",
            f"{row['seconds'][0]:.0f}±{row['seconds'][1]:.0f}",
        ])
    return "\n".join(layout(cols, cells, rule=True))


def write_outputs(comparison: Comparison, out: Path) -> None:
    """``runs.csv`` (one row per run), ``summary.csv`` (per strategy), ``trace.csv`` (the
    hypervolume after each training of each run), ``trace_hours.csv`` (after each trial,
    with the training hours spent), ``hypervolume.png``, ``README.md`` (the table): built
    beside ``out`` and published as one codesign folder."""
    from codesign.files import check_folder, publish_folder, write_atomic

    earlier = check_folder(out, "--out", overwrite=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        write_atomic(tmp / "runs.csv", _csv(
            ["strategy", "seed", "study", "trials", "trainings", "train_hours", "seconds",
             *(f"hv_at_{int(q * 100)}pct" for q in CHECKPOINTS), "best_edp_ms_mj"],
            [[r.arm.label, r.seed_index, r.study, r.trials, f"{r.trainings:.4g}",
              f"{r.train_hours:.5f}", f"{r.seconds:.1f}",
              *(f"{r.at[q]:.6f}" for q in CHECKPOINTS),
              "" if r.best_edp is None else f"{r.best_edp:.6g}"] for r in comparison.runs]))
        write_atomic(tmp / "summary.csv", _csv(
            ["strategy", "seeds", *(f"hv_at_{int(q * 100)}pct_{s}" for q in CHECKPOINTS
                                    for s in ("mean", "sd")), "best_edp_mean", "best_edp_sd",
             "trials_mean", "seconds_mean"],
            [[row["strategy"], row["seeds"],
              *(f"{row[f'hv@{q:.0%}'][i]:.6f}" for q in CHECKPOINTS for i in (0, 1)),
              *(("", "") if row["best_edp"] is None
                else (f"{row['best_edp'][0]:.6g}", f"{row['best_edp'][1]:.6g}")),
              f"{row['trials'][0]:.1f}", f"{row['seconds'][0]:.1f}"]
             for row in comparison.table()]))
        write_atomic(tmp / "trace.csv", _csv(
            ["strategy", "seed", "trainings", "hypervolume"],
            [[r.arm.label, r.seed_index, n, f"{_hv_at(r, n):.6f}"]
             for r in comparison.runs for n in range(comparison.trainings + 1)]))
        write_atomic(tmp / "trace_hours.csv", _csv(
            ["strategy", "seed", "trial", "train_hours", "hypervolume"],
            [[r.arm.label, r.seed_index, n, f"{h:.6f}", f"{v:.6f}"] for r in comparison.runs
             if r.trace is not None
             for n, h, v in zip(r.trace.numbers, r.trace.train_hours, r.trace.hypervolume)]))
        write_atomic(tmp / "hypervolume.png", figure(comparison))
        write_atomic(tmp / "README.md", markdown(comparison))
        publish_folder(tmp, out, earlier, {"study": "compare", "storage": ""})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _hv_at(r: RunResult, n: int) -> float:
    return r.trace.at_trainings(n) if r.trace is not None else 0.0


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def markdown(comparison: Comparison) -> str:
    ref = ", ".join(f"{k}={v:.4g}" for k, v in comparison.reference.items())
    how = "report.reference of the experiment" if comparison.reference_fixed else (
        "derived from every run's feasible designs together")
    iso = ("-" if comparison.iso_accuracy is None else f"{comparison.iso_accuracy:.4f}")
    lines = [f"# Strategy comparison at {comparison.trainings} trainings", "",
             f"Reference point ({how}): {ref}. Best EDP: the least latency x energy among "
             f"feasible designs with accuracy >= {iso}.", "", "```", text_table(comparison),
             "```", "", *comparison.verdicts(), ""]
    return "\n".join(lines)


def figure(comparison: Comparison) -> bytes:
    """PNG: mean hypervolume vs trainings per strategy, the band from the worst to the best
    seed; beside it each run's hypervolume vs the training hours it spent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from codesign.files import PLOT_MARK

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8))
    x = np.arange(comparison.trainings + 1)
    for label in dict.fromkeys(r.arm.label for r in comparison.runs):
        runs = [r for r in comparison.runs if r.arm.label == label]
        ys = np.array([[_hv_at(r, n) for n in x] for r in runs])
        line, = ax.plot(x, ys.mean(axis=0), label=f"{label} ({len(runs)} seeds)", lw=1.8)
        ax.fill_between(x, ys.min(axis=0), ys.max(axis=0), color=line.get_color(),
                        alpha=0.18, lw=0)
        for i, r in enumerate(runs):
            if r.trace is not None and r.trace.numbers:
                bx.step(r.trace.train_hours, r.trace.hypervolume, where="post", lw=1.1,
                        color=line.get_color(), alpha=0.8, label=label if i == 0 else None)
    ax.set_xlabel("trainings (full-budget units)")
    ax.set_ylabel("hypervolume (fixed reference)")
    ax.set_title("hypervolume vs trainings: mean, band = min..max over seeds", fontsize=10)
    bx.set_xlabel("training hours spent")
    bx.set_title("hypervolume vs training hours, one line per run", fontsize=10)
    for a in (ax, bx):
        a.grid(alpha=0.3)
        a.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": PLOT_MARK.decode()})
    plt.close(fig)
    return buf.getvalue()
