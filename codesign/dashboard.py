"""What optuna-dashboard shows of a codesign study, beyond Optuna's own records.

optuna-dashboard 0.21 computes its "best trials" from the objective values alone, without
constraints, so an over-budget design (told with accuracy 0 and its real, often tiny,
latency) can sit on the front it draws. codesign therefore names the real front:

- the study user attribute ``codesign.pareto_trials``: the first trial of each feasible
  Pareto design (always written);
- with optuna-dashboard installed (``pip install "codesign[dashboard]"``), a study note
  with the table of those designs, and a trial note on each of them (a trial that has left
  the front since gets its note replaced by one that says so).

Constraint values reach the dashboard's trial list because the driver records them in the
form it reads (``codesign.optuna_adapter.set_constraints``).
"""

from __future__ import annotations

import logging

import optuna

from codesign.config import ExperimentConfig
from codesign.optuna_adapter import live_trial
from codesign.report import StudyView, constraints_of, fmt_value, metrics, repeats
from evaluators.specs import stable_hash

log = logging.getLogger(__name__)

ATTR_PARETO = "codesign.pareto_trials"
ATTR_NOTED = "codesign.dashboard_notes"  # trial number -> hash of the note codesign wrote


def mark_pareto(study: optuna.Study, cfg: ExperimentConfig) -> None:
    """Record the feasible Pareto designs where optuna-dashboard shows them (see module).

    Called by the driver at the end of every session; writes only study attributes and
    notes, never a trial's values.
    """
    read = StudyView(study)  # the study read once
    front = read.pareto
    numbers = sorted(t.number for t in front)
    study.set_user_attr(ATTR_PARETO, numbers)
    try:
        from optuna_dashboard import save_note
    except ImportError:
        log.debug("optuna-dashboard is not installed: no dashboard notes")
        return
    shared = repeats(read)
    objectives = list(cfg.objectives)
    rows = ["| trial | " + " | ".join(objectives) + " | same design |",
            "|---" * (len(objectives) + 2) + "|"]
    for t in front:
        also = ", ".join(map(str, shared.get(t.number, []))) or "-"
        values = " | ".join(fmt_value(v) for v in t.values)
        rows.append(f"| {t.number} | {values} | {also} |")
    budgets = {k: v for k, v in cfg.budgets.to_dict().items() if v is not None}
    save_note(study, "\n".join([
        f"## {study.study_name}: {len(front)} feasible Pareto design(s)",
        "",
        "The dashboard's own front ignores constraints; these are the designs that meet "
        f"every budget ({', '.join(f'{k} <= {v:g}' for k, v in budgets.items()) or 'none'})"
        f" and are not dominated on {', '.join(objectives)}. Each also carries a trial note.",
        "",
        *rows,
    ]))
    notes: dict[int, tuple[optuna.trial.FrozenTrial, str]] = {}
    for t in front:
        m = {k: fmt_value(v) for k, v in metrics(t).items()}
        cons = ", ".join(f"{k} {v:+.3g}" for k, v in constraints_of(t).items())
        also = shared.get(t.number)
        notes[t.number] = t, "\n".join([
            "**Feasible Pareto design** (codesign)",
            "",
            ", ".join(f"{k} {v}" for k, v in m.items()),
            "",
            f"Constraint values (<= 0 is within budget): {cons or 'none'}.",
            *([f"Same design as trials {', '.join(map(str, also))}."] if also else []),
        ])
    written = {int(k): v for k, v in study.user_attrs.get(ATTR_NOTED, {}).items()}
    by_number = {t.number: t for t in read.trials}
    for n in sorted(set(written) - set(numbers)):
        if n in by_number:
            notes[n] = by_number[n], "No longer on the feasible Pareto front (codesign)."
    now = {}
    for n, (t, body) in notes.items():
        digest = stable_hash(body)
        if written.get(n) != digest:  # each note is written once, when it changes
            save_note(live_trial(study, t), body)
        if n in numbers:
            now[str(n)] = digest
    study.set_user_attr(ATTR_NOTED, now)
