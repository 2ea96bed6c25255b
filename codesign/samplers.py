"""Optuna samplers by name, built from a validated :class:`SamplerConfig`.

Constraints need no ``constraints_func``: the driver records them with
``trial.set_constraint`` (Optuna 5), and every sampler here that supports constraints reads
them from the trials.
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
