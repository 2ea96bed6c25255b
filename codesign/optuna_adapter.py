"""The one place where codesign reaches past Optuna's public API.

Optuna 5 has no public call for these; each function says what it relies on, so an Optuna
upgrade that moves one breaks here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
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


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume of minimized ``points`` below ``reference`` (``optuna._hypervolume``)."""
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(points, reference))


def live_trial(study: optuna.Study, trial: FrozenTrial) -> optuna.Trial:
    """A ``Trial`` handle of a stored trial, as optuna-dashboard's ``save_note`` takes one
    (relies on ``FrozenTrial._trial_id``)."""
    return optuna.Trial(study, trial._trial_id)
