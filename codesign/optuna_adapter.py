"""The one place where codesign reaches past Optuna's public API.

Optuna 5 has no public call for these; each function says what it relies on, so an Optuna
upgrade that moves one breaks here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

# The system attribute optuna-dashboard 0.21 (and Optuna before 5.0) reads a trial's
# constraints from: a list of floats, in a fixed order. Optuna 5 reads it too
# (``optuna.study._constrained_optimization._get_constraints_from_system_attrs``, as
# constraints "0", "1", ...), so writing it alone gives samplers each value once.
LEGACY_CONSTRAINTS_KEY = "constraints"


def set_constraints(study: optuna.Study, trial: optuna.Trial, values: Sequence[float]) -> None:
    """Record a running trial's constraint values where both Optuna 5's samplers and
    optuna-dashboard read them (relies on ``Study._storage`` and ``Trial._trial_id``)."""
    study._storage.set_trial_system_attr(trial._trial_id, LEGACY_CONSTRAINTS_KEY,
                                         [float(v) for v in values])


def fail_stale(study: optuna.Study, trial: FrozenTrial, reason_key: str, reason: str) -> None:
    """Mark a trial another (dead) driver left RUNNING as FAIL, with a reason user attribute
    (relies on ``Study._storage`` and ``FrozenTrial._trial_id``: ``study.tell`` only takes
    trials of this process's ``ask``)."""
    study._storage.set_trial_user_attr(trial._trial_id, reason_key, reason)
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def trial_count(storage: optuna.storages.BaseStorage, summary: Any) -> int:
    """Trials of a study listed by ``storage.get_all_studies()`` (relies on
    ``FrozenStudy._study_id``)."""
    return len(storage.get_all_trials(summary._study_id, deepcopy=False))


def live_trial(study: optuna.Study, trial: FrozenTrial) -> optuna.Trial:
    """A ``Trial`` handle of a stored trial, as optuna-dashboard's ``save_note`` takes one
    (relies on ``FrozenTrial._trial_id``)."""
    return optuna.Trial(study, trial._trial_id)


def set_params(study: optuna.Study, trial: optuna.Trial, params: dict[str, Any],
               distributions: dict[str, Any]) -> None:
    """Give a running trial parameters its sampler did not propose (the accelerator half a
    nested strategy solves): relies on ``Study._storage`` and ``Trial._trial_id``, as
    ``Trial.suggest_*`` would only ask the sampler."""
    for name, value in params.items():
        dist = distributions[name]
        study._storage.set_trial_param(trial._trial_id, name, dist.to_internal_repr(value),
                                       dist)


def new_trial(study: optuna.Study) -> optuna.Trial:
    """A new RUNNING trial of ``study`` that takes no WAITING (enqueued) trial off the queue,
    as ``Study.ask`` would (relies on ``Study._storage`` and ``Study._study_id``)."""
    trial_id = study._storage.create_new_trial(study._study_id)
    return optuna.Trial(study, trial_id)


def add_complete(study: optuna.Study, *, params: dict[str, Any],
                 distributions: dict[str, Any], values: Sequence[float],
                 constraints: Sequence[float], user_attrs: dict[str, Any]) -> FrozenTrial:
    """Record a finished trial the driver evaluated itself (a nested strategy's further
    pairs), its constraints where ``set_constraints`` puts them, and return it as stored
    (``Study.add_trial``'s checks, then ``Study._storage`` and ``Study._study_id``, as
    ``add_trial`` returns nothing and reading the study back would read every trial)."""
    trial = optuna.trial.create_trial(
        params=params, distributions=distributions, values=[float(v) for v in values],
        user_attrs=user_attrs,
        system_attrs={LEGACY_CONSTRAINTS_KEY: [float(v) for v in constraints]})
    trial._validate()
    if len(study.directions) != len(values):
        raise ValueError(f"{len(values)} values for {len(study.directions)} objectives")
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=trial)
    return study._storage.get_trial(trial_id)
