"""The library API the command line is a thin layer over (and that scripts can call).

Each function takes typed values, returns typed values and raises codesign's exceptions
(``ConfigError``, ``CodesignError`` and its kinds, ``evaluators`` errors); none prints,
except the progress bar a run is asked for. The CLI maps the exceptions to exit codes.

    cfg = api.validate("experiments/quickstart.yaml")
    study, summary = api.run(cfg)
    study, summary = api.resume("quickstart", n_trials=80)
    doc = api.inspect("quickstart")
    result = api.compare(cfg, strategies=["nested", "tpe", "random", "decoupled"], seeds=3,
                         trainings=40)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from codesign.compare import Comparison
    from codesign.config import ExperimentConfig
    from codesign.runner import RunSummary


def validate(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Load and check an experiment YAML (every problem at once; nothing is created).

    Raises:
        ConfigError: one ``(key path, message)`` per problem.
    """
    from codesign.config import load

    return load(path)


def session(cfg: ExperimentConfig, study: optuna.Study, url: str, *, n_trials: int,
            workers: int | None = None, ray_address: str | None = None,
            progress: bool = True, resume_flags: Sequence[str] = (),
            max_trainings: int | None = None) -> RunSummary:
    """One driver session on an open study: the sampler seeded from the study's seed, trial
    count and driver slot (a second driver on the study gets its own stream), the driver
    run to ``n_trials`` (the study's distinct designs; networks for nested and decoupled)
    or ``max_trainings``, and the dashboard's Pareto notes refreshed.

    Raises:
        Interrupted, RunAborted, CodesignError: as ``codesign.runner.run_study``.
    """
    from codesign.dashboard import mark_pareto
    from codesign.runner import RunOptions, driver_slot, release_driver_slot, run_study
    from codesign.samplers import make, session_seed
    from codesign.study import artifacts_dir

    n_existing = len(study.get_trials(deepcopy=False))
    slot = driver_slot(study)  # several drivers on one study: one sampler stream each
    study.sampler = make(cfg.sampler, seed=session_seed(cfg.study.seed, n_existing,
                                                        cfg.sampler.name, slot))
    opts = RunOptions(
        n_trials=n_trials,
        workers=cfg.execution.workers if workers is None else workers,
        artifacts=artifacts_dir(study, cfg, url),
        storage_url=url,
        ray_address=ray_address or cfg.execution.ray_address,
        progress=progress,
        resume_flags=tuple(resume_flags),
        max_trainings=max_trainings,
    )
    try:
        return run_study(study, cfg, opts)
    finally:
        release_driver_slot(study, slot)
        try:  # what optuna-dashboard shows as the feasible front; never hides the run's end
            mark_pareto(study, cfg)
        except Exception as e:  # noqa: BLE001
            print(f"warning: the Pareto notes for optuna-dashboard were not written ({e})",
                  file=sys.stderr)


def open_study(cfg: ExperimentConfig, url: str | None = None) -> tuple[optuna.Study, str]:
    """Create the experiment's study, or open it when it exists with the same experiment,
    after the checks a run makes before creating anything (dataset readable, sampler
    options, resources). Returns the study and its storage URL.

    Raises:
        CodesignError: the study exists with a different experiment, and the precheck's.
    """
    from codesign.runner import precheck
    from codesign.samplers import make
    from codesign.study import create_or_load, is_default_location, open_storage

    url = url or cfg.study.storage
    make(cfg.sampler, seed=cfg.study.seed)  # its options are checked before any file is made
    precheck(cfg, local=not cfg.execution.ray_address, ray_address=cfg.execution.ray_address)
    storage = open_storage(url, create_dirs=is_default_location(url))
    study, _ = create_or_load(cfg, storage, url, sampler=None)
    return study, url


def run(cfg: ExperimentConfig, *, storage: str | None = None, n_trials: int | None = None,
        workers: int | None = None, progress: bool = True,
        max_trainings: int | None = None) -> tuple[optuna.Study, RunSummary]:
    """Create (or continue) the experiment's study and run it to ``n_trials`` (default:
    the experiment's) or ``max_trainings``."""
    study, url = open_study(cfg, storage)
    summary = session(cfg, study, url, n_trials=n_trials or cfg.study.n_trials,
                      workers=workers, progress=progress, max_trainings=max_trainings)
    return study, summary


def resume(name: str, *, storage: str | None = None, n_trials: int | None = None,
           workers: int | None = None, progress: bool = True,
           max_trainings: int | None = None) -> tuple[optuna.Study, RunSummary]:
    """Continue a stored study with its stored experiment to ``n_trials`` (default: the
    experiment's); trials a dead driver left RUNNING are failed and re-queued."""
    from codesign.runner import precheck

    study, cfg, url = load_study(name, storage)
    precheck(cfg, local=not cfg.execution.ray_address, ray_address=cfg.execution.ray_address)
    summary = session(cfg, study, url, n_trials=n_trials or cfg.study.n_trials,
                      workers=workers, progress=progress, max_trainings=max_trainings)
    return study, summary


def load_study(name: str, storage: str | None = None
               ) -> tuple[optuna.Study, ExperimentConfig, str]:
    """An existing study with its stored experiment and storage URL.

    Raises:
        CodesignError: no such storage or study (naming the studies there).
    """
    from codesign.study import default_url, load_existing, open_storage

    url = storage or default_url(name)
    study, cfg = load_existing(name, open_storage(url, must_exist=True), url)
    return study, cfg, url


def inspect(name: str, storage: str | None = None) -> dict[str, Any]:
    """The ``codesign inspect --json`` document of a study."""
    from codesign.report import summary

    study, cfg, url = load_study(name, storage)
    return summary(study, cfg, url)


def export(name: str, out: str | os.PathLike[str], *, storage: str | None = None,
           fmt: str = "yaml", test_accuracy: bool = True, overwrite: bool = False) -> Any:
    """Export a study's distinct Pareto designs to the folder ``out`` (``codesign export``)."""
    from codesign.export import export_study
    from codesign.study import artifacts_dir

    study, cfg, url = load_study(name, storage)
    return export_study(study, cfg, str(out), artifacts=artifacts_dir(study, cfg, url),
                        fmt=fmt, storage_url=url, test_accuracy=test_accuracy,
                        overwrite=overwrite)


def compare(cfg: ExperimentConfig, *, strategies: Sequence[str], seeds: int,
            trainings: int, storage: str | None = None, workers: int | None = None,
            out: str | os.PathLike[str] | None = None, progress: bool = True,
            log: Any = None) -> Comparison:
    """Run every strategy with every seed at an equal budget of trainings, on studies of
    one storage (``codesign.compare``), and score them at one fixed reference point."""
    from codesign.compare import run_comparison

    return run_comparison(cfg, strategies=list(strategies), seeds=seeds, trainings=trainings,
                          storage=storage, workers=workers,
                          out=Path(out) if out is not None else None, progress=progress,
                          log=log)
