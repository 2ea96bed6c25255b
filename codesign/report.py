"""Read-only views of a study: Pareto rows, hypervolume, the ``inspect`` JSON, text tables.

Hypervolume is computed in a normalized loss space, so that it reads as "fraction of the
reference box dominated": each objective is mapped to [0, 1] between its ideal (0) and its
reference (1): accuracy as ``(ideal - accuracy) / (ideal - reference)``, a minimized
objective as ``(value - ideal) / (reference - ideal)``. With ``report.reference`` set in the
experiment, the box is fixed and hypervolumes of studies of that experiment compare (ideal:
``report.ideal``, default accuracy 1 and 0 for the others). Without it, each study's own box:
reference accuracy 0, and for a minimized objective its budget when the experiment sets one,
else 1.1 x its worst value over the feasible complete trials; that number ranks nothing
across studies. Only feasible COMPLETE trials count. Computed with moocore (exact, WFG-type
algorithms in C).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from codesign.config import OBJECTIVES, ExperimentConfig
from codesign.optuna_adapter import full_trials, read_trials
from codesign.study import ATTR_PROVENANCE, ATTR_TARGET, A, counts_by_state
from codesign.urls import display_url
from evaluators.specs import DesignPoint, EvaluatorError

JSON_SCHEMA_VERSION = 1


def fidelity(t: FrozenTrial) -> float:
    """The fraction of the training budget ``t`` was trained on (1 without successive
    halving)."""
    return float(t.user_attrs.get(A + "fidelity", 1.0))


def full_budget(t: FrozenTrial) -> bool:
    """Whether ``t`` was trained on the whole training budget (not on a lower rung of
    successive halving)."""
    return fidelity(t) >= 1.0


def feasible(t: FrozenTrial) -> bool:
    """A COMPLETE trial within every budget, trained on the full budget (successive
    halving's lower rungs never count)."""
    return (t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())
            and full_budget(t))


def non_dominated(points: np.ndarray, *, keep_ties: bool = False) -> np.ndarray:
    """Indices of the rows of ``points`` (minimized columns) that no other row dominates,
    in row order; of equal rows only the first unless ``keep_ties``.

    The distinct rows in lexicographic order, each compared with the non-dominated ones
    before it: a row's dominators all come before it, and a dominated row is dominated by a
    non-dominated one, so this is the pairwise definition at O(distinct rows x front)."""
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or np.isnan(points).any():  # NaN: no order; the pairwise test
        return _non_dominated_pairwise(points, keep_ties=keep_ties)
    n = len(points)
    if n == 0:
        return np.flatnonzero(np.ones(0, dtype=bool))
    rows, first, inverse = np.unique(points, axis=0, return_index=True, return_inverse=True)
    front = np.empty_like(rows)
    size = 0
    mine = np.zeros(len(rows), dtype=bool)
    for k, row in enumerate(rows):  # an earlier distinct row <= this one dominates it
        if not size or not np.any(np.all(front[:size] <= row, axis=1)):
            mine[k] = True
            front[size] = row
            size += 1
    inverse = inverse.reshape(-1)
    keep = mine[inverse]
    if not keep_ties:  # an exact duplicate of an earlier row is dropped
        keep &= first[inverse] == np.arange(n)
    return np.flatnonzero(keep)


def _non_dominated_pairwise(points: np.ndarray, *, keep_ties: bool) -> np.ndarray:
    """:func:`non_dominated` by comparing every pair of rows (rows with NaN)."""
    n = len(points)
    keep = np.ones(n, dtype=bool)
    for start in range(0, n, 512):  # (chunk, n) comparisons at a time
        block = points[start:start + 512]
        le = np.all(points[None, :, :] <= block[:, None, :], axis=2)
        lt = np.any(points[None, :, :] < block[:, None, :], axis=2)
        mine = ~np.any(le & lt, axis=1)
        if not keep_ties:  # an exact duplicate of an earlier row is dropped
            same = np.all(points[None, :, :] == block[:, None, :], axis=2)
            earlier = np.arange(n)[None, :] < np.arange(start, start + len(block))[:, None]
            mine &= ~np.any(same & earlier, axis=1)
        keep[start:start + len(block)] = mine
    return np.flatnonzero(keep)


def minimized(trials: Sequence[FrozenTrial], directions: Sequence[str]) -> np.ndarray:
    """The trials' values as rows to minimize (maximized objectives negated)."""
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.array([t.values for t in trials], dtype=float).reshape(-1, len(signs)) * signs


def constraints_of(t: FrozenTrial) -> dict[str, float]:
    """A trial's constraint values by name. The driver records them as one list (the form
    both Optuna 5's samplers and optuna-dashboard read, ``codesign.optuna_adapter``), so
    Optuna names them ``"0"``, ``"1"``, ...; their names are the user attribute
    ``codesign.constraint_names``. Studies of older versions carry Optuna's named form."""
    values = t.constraints
    names = t.user_attrs.get(A + "constraint_names")
    if names and list(values) == [str(i) for i in range(len(names))]:
        return dict(zip(names, values.values()))
    return dict(values)


def design_key(t: FrozenTrial) -> str | None:
    """The identity of a trial's design (a hash of the decoded design point; trials whose
    parameters differ only where the design does not use them share it)."""
    key = t.user_attrs.get(A + "design_key")
    if key is None and t.user_attrs.get(A + "design"):  # a trial of an older codesign
        try:
            key = DesignPoint.from_dict(t.user_attrs[A + "design"]).design_key()
        except (EvaluatorError, KeyError, TypeError, ValueError):
            return None
    return key


def by_design(trials: Iterable[FrozenTrial]) -> dict[str, list[FrozenTrial]]:
    """``trials`` grouped by design, each group in trial-number order (its first trial
    first); a trial without a design key is a group of its own."""
    groups: dict[str, list[FrozenTrial]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        groups.setdefault(design_key(t) or f"#{t.number}", []).append(t)
    return groups


# the user attributes the read-only views use of every trial; the others (the design, the
# hardware figures, the per-layer costs: most of a trial's size) only of the trials they
# show, through ``StudyView.full``
VIEW_ATTRS = tuple(A + k for k in (
    "design_key", "fidelity", "repeat_of", "fail_reason", "trained", "train_seconds",
    "cached", "feasible", "warm_from", "pair_of", "constraint_names"))


class StudyView:
    """One read of a study for the read-only views (``inspect``, ``plot``, ``export``,
    ``report``): :attr:`trials`, every trial in trial order with the user attributes
    :data:`VIEW_ATTRS` only (``codesign.optuna_adapter.read_trials``; all of them on a
    journal storage), and :meth:`full`, the whole trial of one of them as Optuna stores it.

    What it derives (the groups by design, the Pareto set) is kept with it; a trial added
    to the study later is not in it: read a new one for that. The functions below that take
    a study take a view too, so that one command reads the study once.
    """

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        trials = read_trials(study, VIEW_ATTRS)
        older = [t for t in trials if t.state == TrialState.COMPLETE
                 and A + "design_key" not in t.user_attrs and A + "design" not in t.user_attrs]
        if older:  # trials of an older codesign: their design keys come from their designs
            designs = {t.number: t.user_attrs for t in read_trials(study, [A + "design"],
                                                                   only=older)}
            for t in older:
                t.user_attrs.update(designs.get(t.number, {}))
        self.trials = trials
        self._full: dict[int, FrozenTrial] = {}

    def full(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The whole trials (parameters and every user attribute) of ``trials``, finished
        ones of :attr:`trials`, read together."""
        missing = [t for t in trials if t.number not in self._full]
        for t in full_trials(self.study, missing):
            self._full[t.number] = t
        return [self._full[t.number] for t in trials]

    @cached_property
    def complete(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]

    @cached_property
    def feasible(self) -> list[FrozenTrial]:
        """The :func:`feasible` trials, in trial order."""
        return [t for t in self.trials if feasible(t)]

    @cached_property
    def groups(self) -> dict[str, list[FrozenTrial]]:
        """:func:`by_design` of the COMPLETE trials."""
        return by_design(self.complete)

    @cached_property
    def pareto(self) -> list[FrozenTrial]:
        """:func:`pareto_trials`, whole trials."""
        ok = self.feasible  # feasible trials are COMPLETE
        directions = [d.name.lower() for d in self.study.directions]
        front = [ok[i] for i in non_dominated(minimized(ok, directions), keep_ties=True)]
        trials = [g[0] for g in by_design(front).values()]
        sign = -1 if self.study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
        return self.full(sorted(trials, key=lambda t: (sign * t.values[0], t.number)))


def view(study: optuna.Study | StudyView) -> StudyView:
    """``study`` read once for the read-only views (a view stays as it is)."""
    return study if isinstance(study, StudyView) else StudyView(study)


def repeats(study: optuna.Study | StudyView) -> dict[int, list[int]]:
    """First trial of each design that several finished trials share -> the later ones
    (a repeat is recorded with its first trial's values; ``codesign.repeat_of``)."""
    return _shared(view(study).groups)


def _shared(groups: dict[str, list[FrozenTrial]]) -> dict[int, list[int]]:
    return {g[0].number: [t.number for t in g[1:]] for g in groups.values() if len(g) > 1}


def _bits(net: dict[str, Any], key: str) -> str:
    """``"8"``, or per stage ``"8/4/4"`` (mixed precision); ``f8``/``l8``: first/last layer."""
    per = [s.get(key) or net[key] for s in net["stages"]]
    text = str(per[0]) if len(set(per)) == 1 else "/".join(map(str, per))
    if key == "weight_bits":
        for tag in ("first", "last"):
            if net.get(f"{tag}_layer_bits") is not None:
                text += f" {tag[0]}{net[f'{tag}_layer_bits']}"
    return text


def design_summary(t: FrozenTrial) -> dict[str, Any]:
    """The design parameters of a trial as short, printable fields."""
    d = t.user_attrs.get(A + "design")
    if not d:
        return {}
    net, hw = d["network"], d["accelerator"]
    stages = "/".join(
        f"{s['depth']}x{s['width']}k{s['kernel_size']}"
        + (f"e{s['expansion']}" if s.get("expansion", 1) != 1 else "")
        for s in net["stages"]
    )
    return {
        "family": net["family"],
        "stages": stages,
        "w_bits": _bits(net, "weight_bits"),
        "a_bits": _bits(net, "activation_bits"),
        "prune": net["prune_ratio"],
        "rank": net.get("rank_ratio", 1.0),
        **_accelerator_summary(hw),
    }


def _accelerator_summary(hw: dict[str, Any]) -> dict[str, Any]:
    """The same five columns for every template: compute array, dataflow, on-chip buffer
    (KiB), DRAM bandwidth and clock."""
    template = hw.get("template", "systolic")
    if template == "fpga":
        return {"array": f"{hw['unroll_c']}x{hw['unroll_k']}x{hw['unroll_px']}",
                "dataflow": f"fpga {hw['device']}",
                "glb_kib": hw["ibuf_kib"] + hw["wbuf_kib"] + hw["obuf_kib"],
                "dram_gbps": hw["dram_gbps"], "freq_mhz": hw["freq_mhz"]}
    if template == "gpu":
        return {"array": hw["name"], "dataflow": "gpu roofline",
                "glb_kib": hw["l2_mib"] * 1024, "dram_gbps": hw["dram_gbps"],
                "freq_mhz": hw["clock_mhz"]}
    return {"array": f"{hw['pe_rows']}x{hw['pe_cols']}",
            "dataflow": hw["dataflow"] if template == "systolic" else "rs",
            "glb_kib": hw["glb_kib"], "dram_gbps": hw["dram_gbps"], "freq_mhz": hw["freq_mhz"]}


def metrics(t: FrozenTrial) -> dict[str, Any]:
    """Accuracy and the hardware figures; an FPGA design's DSP / BRAM36 use in place of its
    area (it has none)."""
    hw = t.user_attrs.get(A + "hw", {})
    out = {
        "accuracy": t.user_attrs.get(A + "accuracy"),
        "latency_ms": hw.get("latency_ms"),
        "energy_mj": hw.get("energy_mj"),
        "area_mm2": hw.get("area_mm2"),
        "power_w": hw.get("power_w"),
    }
    resources = hw.get("resources")
    if resources:
        del out["area_mm2"]
        for name in ("dsp", "bram36"):
            r = resources.get(name, {})
            out[name] = f"{r.get('used')}/{r.get('available')}"
    return out


def pareto_trials(study: optuna.Study | StudyView) -> list[FrozenTrial]:
    """Feasible, non-dominated COMPLETE trials, one per distinct design (its first trial;
    :func:`repeats` lists the others), sorted by the first objective (best first)."""
    return list(view(study).pareto)


def hypervolume(losses: np.ndarray) -> float:
    """Hypervolume of normalized ``losses`` (rows; minimized) below the point (1, ..., 1)."""
    import moocore

    inside = losses[np.all(losses < 1.0, axis=1)]
    if not len(inside):
        return 0.0
    return float(moocore.hypervolume(inside, ref=np.ones(losses.shape[1])))


def reference_point(study: optuna.Study | StudyView | Sequence[FrozenTrial],
                    cfg: ExperimentConfig) -> dict[str, float]:
    """The hypervolume reference: ``report.reference`` when the experiment fixes it, else
    the study's own (see the module docstring)."""
    if cfg.report.reference is not None:
        return {o: cfg.report.reference[o] for o in cfg.objectives}
    ok = (view(study).feasible if isinstance(study, (optuna.Study, StudyView))
          else [t for t in study if feasible(t)])
    ref = {}
    for i, name in enumerate(cfg.objectives):
        if name == "accuracy":
            ref[name] = 0.0
            continue
        budget = getattr(cfg.budgets, name, None)
        worst = max((t.values[i] for t in ok), default=1.0)
        ref[name] = float(budget) if budget else 1.1 * worst if worst > 0 else 1.0
    return ref


def ideal_point(cfg: ExperimentConfig) -> dict[str, float]:
    """The normalization's best values: ``report.ideal`` (with a fixed reference), else
    accuracy 1 and 0 for the others."""
    given = cfg.report.ideal if cfg.report.reference is not None else {}
    return {o: given.get(o, 1.0 if o == "accuracy" else 0.0) for o in cfg.objectives}


def losses(values: np.ndarray, cfg: ExperimentConfig, ref: dict[str, float]) -> np.ndarray:
    """Objective rows -> normalized losses (0 at the ideal, 1 at the reference)."""
    ideal = ideal_point(cfg)
    cols = []
    for i, name in enumerate(cfg.objectives):
        span = ref[name] - ideal[name]
        if OBJECTIVES[name] == "maximize":
            cols.append((ideal[name] - values[:, i]) / -span)
        else:
            cols.append((values[:, i] - ideal[name]) / span)
    return np.stack(cols, axis=1)


@dataclass(frozen=True)
class HypervolumeTrace:
    """The hypervolume after each finished trial, in trial-number order, with the work
    spent up to it: trainings run (``codesign.trained``) and their hours
    (``codesign.train_seconds``). ``reference``: the point it was computed against."""

    numbers: list[int]
    hypervolume: list[float]
    trainings: list[float]
    train_hours: list[float]
    reference: dict[str, float]

    def at_trainings(self, budget: float) -> float:
        """The hypervolume once ``budget`` trainings had been spent (the last trial before
        the next training; the final value when the study spent fewer)."""
        best = 0.0
        for hv, n in zip(self.hypervolume, self.trainings):
            if n > budget + 1e-9:
                break
            best = hv
        return best


def hypervolume_trace(trials: Sequence[FrozenTrial], cfg: ExperimentConfig,
                      reference: dict[str, float] | None = None) -> HypervolumeTrace:
    """:class:`HypervolumeTrace` of ``trials`` (a study's), against ``reference`` (default
    :func:`reference_point`)."""
    ref = reference or reference_point(trials, cfg)
    done = _finish_order(trials)
    inside = _inside_losses(done, cfg, ref)
    trace = HypervolumeTrace([], [], [], [], ref)
    points: list[np.ndarray] = []
    front = np.empty((0, len(cfg.objectives)))  # the non-dominated ones of ``points``
    current, trainings, seconds = 0.0, 0.0, 0.0
    for t in done:
        if t.user_attrs.get(A + "trained"):  # in full trainings (successive halving: less)
            trainings += fidelity(t)
            seconds += float(t.user_attrs.get(A + "train_seconds") or 0.0)
        loss = inside.get(t.number)
        if loss is not None:
            points.append(loss)
            # a point that one before it is <= in every objective adds no volume: the
            # hypervolume is computed again (of every point so far, as the last value of
            # final_hypervolume is) only after a point that does
            if not np.any(np.all(front <= loss, axis=1)):
                current = hypervolume(np.array(points))
                front = np.vstack([front[~np.all(loss <= front, axis=1)], loss])
        trace.numbers.append(t.number)
        trace.hypervolume.append(current)
        trace.trainings.append(trainings)
        trace.train_hours.append(seconds / 3600.0)
    return trace


def final_hypervolume(trials: Sequence[FrozenTrial], cfg: ExperimentConfig,
                      reference: dict[str, float]) -> float:
    """The last value of :func:`hypervolume_trace` (0 without one), without the trace: the
    hypervolume of every feasible point inside the box, computed as the trace does."""
    inside = _inside_losses(_finish_order(trials), cfg, reference)
    return hypervolume(np.array(list(inside.values()))) if inside else 0.0


def _finish_order(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The finished trials in the order they finished: a pair recorded after a training
    comes after it, though a trial asked before it (and still running then) has a smaller
    number."""
    return sorted((t for t in trials if t.state.is_finished()),
                  key=lambda t: (t.datetime_complete or datetime.max, t.number))


def _inside_losses(done: Sequence[FrozenTrial], cfg: ExperimentConfig,
                   ref: dict[str, float]) -> dict[int, np.ndarray]:
    """Trial number -> normalized losses of the feasible trials of ``done`` inside the box
    (every coordinate below 1), in the order of ``done``."""
    ok = [t for t in done if feasible(t)]
    if not ok:
        return {}
    rows = losses(np.array([t.values for t in ok], dtype=float), cfg, ref)
    return {t.number: row for t, row in zip(ok, rows) if np.all(row < 1.0)}


def hypervolume_history(
    study: optuna.Study | StudyView, cfg: ExperimentConfig
) -> tuple[list[int], list[float], dict[str, float]]:
    """Hypervolume after each finished trial (in trial-number order) and the reference."""
    trace = hypervolume_trace(view(study).trials, cfg)
    return trace.numbers, trace.hypervolume, trace.reference


def cache_stats(study: optuna.Study | StudyView) -> dict[str, Any]:
    """Trainings, training-cache hits, over-budget designs (never trained), warm starts and
    repeats (trials that proposed a design already evaluated, told with its outcome: no work
    at all; ``codesign.repeat_of``)."""
    every = view(study).trials
    again = {t.number for t in every if A + "repeat_of" in t.user_attrs}
    done = [t for t in every if t.state == TrialState.COMPLETE and t.number not in again]
    runs = [t for t in done if t.user_attrs.get(A + "trained")]
    hits = sum(1 for t in done if t.user_attrs.get(A + "cached"))
    skipped = sum(1 for t in done if t.user_attrs.get(A + "feasible") is False
                  and not t.user_attrs.get(A + "trained"))  # decoupled trains over budget
    warm = sum(1 for t in runs if t.user_attrs.get(A + "warm_from"))
    pairs = sum(1 for t in done if A + "pair_of" in t.user_attrs)
    needing = len(runs) + hits
    return {"trainings": len(runs), "hits": hits, "infeasible_not_trained": skipped,
            "hit_rate": hits / needing if needing else 0.0, "warm_started": warm,
            "repeats": len(again), "pairs": pairs,
            # successive halving: trainings in units of the full budget
            "training_units": sum(fidelity(t) for t in runs)}


def summary(study: optuna.Study | StudyView, cfg: ExperimentConfig,
            storage_url: str) -> dict[str, Any]:
    """The ``codesign inspect --json`` document (schema documented in the README)."""
    sv = view(study)
    study = sv.study
    pareto = sv.pareto
    ref = reference_point(sv, cfg)
    hv = final_hypervolume(sv.feasible, cfg, ref)
    done = sv.feasible
    best = {}
    for i, name in enumerate(cfg.objectives):
        if done:
            pick = (max if OBJECTIVES[name] == "maximize" else min)(
                done, key=lambda t, i=i: t.values[i])
            best[name] = {"trial": pick.number, "value": pick.values[i]}
    failures = [  # a repeat of a failed design is listed under its first trial alone
        {"trial": t.number, "state": t.state.name.lower(),
         "reason": t.user_attrs.get(A + "fail_reason")}
        for t in sv.trials if t.state in (TrialState.FAIL, TrialState.PRUNED)
        and A + "repeat_of" not in t.user_attrs
    ]
    groups = sv.groups
    shared = _shared(groups)
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "study": study.study_name,
        "storage": display_url(storage_url),
        "objectives": list(cfg.objectives),
        "directions": cfg.directions,
        "constraints": {k: v for k, v in cfg.budgets.to_dict().items() if v is not None},
        "n_trials_target": int(study.user_attrs.get(ATTR_TARGET, cfg.study.n_trials)),
        "trials_by_state": counts_by_state(study, sv.trials),
        "distinct_complete": len(groups),
        "feasible_complete": len(done),
        "pareto": [trial_record(t, cfg, shared.get(t.number, [])) for t in pareto],
        "hypervolume": {"value": hv, "reference": ref,
                        "ideal": ideal_point(cfg),
                        "fixed": cfg.report.reference is not None,
                        "normalization": "(value - ideal) / (reference - ideal) per "
                                         "objective (accuracy: ideal - value)"},
        "best": best,
        "cache": cache_stats(sv),
        "failures": failures,
        "provenance": study.user_attrs.get(ATTR_PROVENANCE, {}),
    }


def trial_record(t: FrozenTrial, cfg: ExperimentConfig,
                 repeat_trials: list[int] | None = None) -> dict[str, Any]:
    return {
        "trial": t.number,
        "repeat_trials": repeat_trials or [],
        "values": dict(zip(cfg.objectives, t.values)),
        "metrics": metrics(t),
        "constraints": constraints_of(t),
        "params": dict(t.params),
        "design": t.user_attrs.get(A + "design"),
        "training_key": t.user_attrs.get(A + "training_key"),
        "weights": t.user_attrs.get(A + "weights"),
    }


def fmt_value(v: Any) -> str:
    """A number as tables show it (4 significant digits), ``-`` for nothing."""
    if isinstance(v, float):
        if v == 0:
            return "0"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return "-" if v is None else str(v)


def pareto_table(study: optuna.Study | StudyView, cfg: ExperimentConfig, *,
                 limit: int = 30) -> str:
    """The Pareto set as an aligned text table (metrics first, then the design)."""
    sv = view(study)
    trials = sv.pareto
    if not trials:
        return "Pareto set: empty (no feasible finished trial yet)"
    shared = repeats(sv)
    rows = []
    for t in trials[:limit]:
        again = shared.get(t.number)
        rows.append({"trial": t.number, **({"also": ",".join(map(str, again))} if again
                                           else {}),
                     **metrics(t), **design_summary(t)})
    also = ["also"] if any("also" in r for r in rows) else []
    # metrics first (an FPGA's: DSP / BRAM36 in place of area), then the design
    cols = ["trial", *also, *(c for c in rows[0] if c not in ("trial", "also"))]
    cells = [[fmt_value(r.get(c)) for c in cols] for r in rows]
    lines = [f"Pareto set: {len(trials)} distinct design(s)" + (f", first {limit}" if
                                                                 len(trials) > limit else "")]
    if also:
        lines.append("(also: later trials that proposed the same design)")
    return "\n".join(lines + text_table(cols, cells, rule=True))


def text_table(cols: list[str], cells: list[list[str]], *, rule: bool = False) -> list[str]:
    """Right-aligned text columns under a header (and a ``----`` rule when asked)."""
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    if rule:
        lines.append("  ".join("-" * w for w in widths))
    return lines + ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in cells]
