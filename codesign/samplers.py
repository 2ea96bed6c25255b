"""Optuna samplers by name, built from a validated :class:`SamplerConfig`.

Constraints need no ``constraints_func``: the driver records them on each trial
(``codesign.optuna_adapter.set_constraints``), and every sampler here that supports
constraints reads them from the trials.
"""

from __future__ import annotations

import optuna

from codesign.config import SamplerConfig


def make(cfg: SamplerConfig, *, seed: int) -> optuna.samplers.BaseSampler:
    """A fresh sampler; called once per driver process (its state lives in the study)."""
    o = dict(cfg.options)
    if cfg.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **o)
    if cfg.name == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed, **o)
    if cfg.name == "tpe":
        o.setdefault("constant_liar", True)  # several trials run at once
        return optuna.samplers.TPESampler(seed=seed, **o)
    if cfg.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **o)
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, **o)
    raise AssertionError(f"unvalidated sampler {cfg.name!r}")


def session_seed(seed: int, n_existing: int, name: str = "", driver: int = 0) -> int:
    """The seed of sampler ``name`` in a driver session that finds ``n_existing`` trials in
    its study: ``seed`` for a new study, else one derived from both, so that a resumed
    sampler does not replay the draws it made the first time (reproducible from the study's
    state). ``qmc`` keeps ``seed``: its sequence is keyed by the seed and continues from the
    study's trial count, so a new seed would restart it. ``driver``: the session's driver
    slot among the study's running drivers (``runner.driver_slot``); a second driver
    started beside the first gets a stream of its own."""
    if (n_existing == 0 and driver == 0) or name == "qmc":
        return seed
    from evaluators.specs import stable_hash

    key: dict[str, int] = {"seed": seed, "trials": n_existing}
    if driver:
        key["driver"] = driver
    return int(stable_hash(key), 16) % 2**32
