"""Read-only views of a study: Pareto rows, hypervolume, the ``inspect`` JSON, text tables.

Hypervolume is computed in a normalized loss space so that it reads as "fraction of the
reference box dominated": accuracy becomes ``1 - accuracy`` (reference 1), every minimized
objective ``value / reference`` (reference 1), where the reference is that objective's budget
when the experiment sets one, else 1.1 x its worst value over the feasible complete trials.
Only feasible COMPLETE trials count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from codesign.config import OBJECTIVES, ExperimentConfig
from codesign.study import ATTR_PROVENANCE, A, counts_by_state

JSON_SCHEMA_VERSION = 1


def feasible(t: FrozenTrial) -> bool:
    return t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())


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


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, non-dominated COMPLETE trials, sorted by the first objective (best first)."""
    trials = study.best_trials
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    return sorted(trials, key=lambda t: (sign * t.values[0], t.number))


def reference_point(study: optuna.Study, cfg: ExperimentConfig) -> dict[str, float]:
    ok = [t for t in study.get_trials(deepcopy=False) if feasible(t)]
    ref = {}
    for i, name in enumerate(cfg.objectives):
        if name == "accuracy":
            ref[name] = 0.0
            continue
        budget = getattr(cfg.budgets, name, None)
        worst = max((t.values[i] for t in ok), default=1.0)
        ref[name] = float(budget) if budget else 1.1 * worst if worst > 0 else 1.0
    return ref


def _losses(values: np.ndarray, cfg: ExperimentConfig, ref: dict[str, float]) -> np.ndarray:
    cols = []
    for i, name in enumerate(cfg.objectives):
        if name == "accuracy":
            cols.append(1.0 - values[:, i])
        else:
            cols.append(values[:, i] / ref[name])
    return np.stack(cols, axis=1)


def hypervolume_history(
    study: optuna.Study, cfg: ExperimentConfig
) -> tuple[list[int], list[float], dict[str, float]]:
    """Hypervolume after each finished trial (in trial-number order) and the reference."""
    from optuna._hypervolume import compute_hypervolume

    ref = reference_point(study, cfg)
    trials = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state.is_finished()),
        key=lambda t: t.number,
    )
    numbers, hv = [], []
    points: list[np.ndarray] = []
    current = 0.0
    ones = np.ones(len(cfg.objectives))
    for t in trials:
        if feasible(t):
            loss = _losses(np.array([t.values]), cfg, ref)[0]
            if np.all(loss < ones):
                points.append(loss)
                current = float(compute_hypervolume(np.array(points), ones))
        numbers.append(t.number)
        hv.append(current)
    return numbers, hv, ref


def cache_stats(study: optuna.Study) -> dict[str, Any]:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trained = sum(1 for t in done if t.user_attrs.get(A + "trained"))
    hits = sum(1 for t in done if t.user_attrs.get(A + "cached"))
    skipped = sum(1 for t in done if t.user_attrs.get(A + "feasible") is False)
    warm = sum(1 for t in done if t.user_attrs.get(A + "warm_from"))
    needing = trained + hits
    return {"trainings": trained, "hits": hits, "infeasible_not_trained": skipped,
            "hit_rate": hits / needing if needing else 0.0, "warm_started": warm}


def summary(study: optuna.Study, cfg: ExperimentConfig, storage_url: str) -> dict[str, Any]:
    """The ``codesign inspect --json`` document (schema documented in the README)."""
    pareto = pareto_trials(study)
    numbers, hv, ref = hypervolume_history(study, cfg)
    done = [t for t in study.get_trials(deepcopy=False) if feasible(t)]
    best = {}
    for i, name in enumerate(cfg.objectives):
        if done:
            pick = (max if OBJECTIVES[name] == "maximize" else min)(
                done, key=lambda t, i=i: t.values[i])
            best[name] = {"trial": pick.number, "value": pick.values[i]}
    failures = [
        {"trial": t.number, "state": t.state.name.lower(),
         "reason": t.user_attrs.get(A + "fail_reason")}
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL, TrialState.PRUNED))
    ]
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "study": study.study_name,
        "storage": storage_url,
        "objectives": list(cfg.objectives),
        "directions": cfg.directions,
        "constraints": {k: v for k, v in cfg.budgets.to_dict().items() if v is not None},
        "n_trials_target": cfg.study.n_trials,
        "trials_by_state": counts_by_state(study),
        "feasible_complete": len(done),
        "pareto": [trial_record(t, cfg) for t in pareto],
        "hypervolume": {"value": hv[-1] if hv else 0.0, "reference": ref,
                        "normalization": "1-accuracy; value/reference for the others"},
        "best": best,
        "cache": cache_stats(study),
        "failures": failures,
        "provenance": study.user_attrs.get(ATTR_PROVENANCE, {}),
    }


def trial_record(t: FrozenTrial, cfg: ExperimentConfig) -> dict[str, Any]:
    return {
        "trial": t.number,
        "values": dict(zip(cfg.objectives, t.values)),
        "metrics": metrics(t),
        "constraints": dict(t.constraints),
        "params": dict(t.params),
        "design": t.user_attrs.get(A + "design"),
        "training_key": t.user_attrs.get(A + "training_key"),
        "weights": t.user_attrs.get(A + "weights"),
    }


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return "-" if v is None else str(v)


def pareto_table(study: optuna.Study, cfg: ExperimentConfig, *, limit: int = 30) -> str:
    """The Pareto set as an aligned text table (metrics first, then the design)."""
    trials = pareto_trials(study)
    if not trials:
        return "Pareto set: empty (no feasible finished trial yet)"
    rows = []
    for t in trials[:limit]:
        rows.append({"trial": t.number, **metrics(t), **design_summary(t)})
    cols = list(rows[0])  # metrics first (an FPGA's: DSP / BRAM36 in place of area)
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    lines = [f"Pareto set: {len(trials)} design(s)" + (f", first {limit}" if
                                                        len(trials) > limit else "")]
    return "\n".join(lines + text_table(cols, cells, rule=True))


def text_table(cols: list[str], cells: list[list[str]], *, rule: bool = False) -> list[str]:
    """Right-aligned text columns under a header (and a ``----`` rule when asked)."""
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    if rule:
        lines.append("  ".join("-" * w for w in widths))
    return lines + ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in cells]
