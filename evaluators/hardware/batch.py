"""Batch pricing: one workload on many accelerator configurations at once.

The nested and decoupled strategies solve the hardware half of a design per trained network:
its layers are priced on every accelerator configuration of the space (or thousands of
sampled ones), and the non-dominated configurations become (network, accelerator) pairs.
:func:`price_batch` is that path. Its numbers are the one-design path's
(``make_model(acc, enforce_budgets=False).evaluate_network(layers)``), configuration by
configuration; a test compares them on random configurations.

Lifecycle: a pure function of ``(layers, accs)``; no I/O, no global state that could change
an answer (the systolic mapper's shape caches are read-only). Safe to call from a Ray worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluators.specs import (
    Budgets,
    ConvLayer,
    HardwareReport,
    InfeasibleDesign,
    SpecError,
    resource_constraints,
)

METRICS = ("latency_ms", "energy_mj", "area_mm2", "power_w")


@dataclass(frozen=True)
class BatchPrices:
    """Network-level figures of one workload on ``n`` accelerator configurations.

    Attributes:
        latency_ms, energy_mj, area_mm2, power_w: ``(n,)`` float arrays, the names of
            ``HardwareReport.metrics()``; NaN where the configuration cannot run the workload.
        total_cycles: ``(n,)`` int64, the network's cycles (0 where it cannot run).
        mappable: ``(n,)`` bool, whether the configuration runs every layer.
        reasons: per configuration, why it cannot run (``InfeasibleDesign`` or ``SpecError``
            message), ``None`` where it can.
        resources: per configuration, a programmable device's resource use (``None`` for a
            chip); budgeted resources become constraints as in ``constraint_values``.
    """

    latency_ms: np.ndarray
    energy_mj: np.ndarray
    area_mm2: np.ndarray
    power_w: np.ndarray
    total_cycles: np.ndarray
    mappable: np.ndarray
    reasons: tuple[str | None, ...]
    resources: tuple[dict[str, dict[str, Any]] | None, ...]

    def __len__(self) -> int:
        return len(self.mappable)

    def metrics(self) -> dict[str, np.ndarray]:
        """Name -> ``(n,)`` array, as ``HardwareReport.metrics()`` per configuration."""
        return {m: getattr(self, m) for m in METRICS}

    def constraint_values(self, budgets: Budgets) -> dict[str, np.ndarray]:
        """``evaluators.evaluate.constraint_values`` for every configuration at once
        (``(n,)`` arrays; NaN where a configuration cannot run)."""
        from evaluators.evaluate import NO_FIT

        values = self.metrics()
        out = {name: (values[name] - b) / b
               for name, b in budgets.to_dict().items() if b is not None}
        names = sorted({k for r in self.resources if r
                        for k in resource_constraints(r)})
        for name in names:
            col = np.full(len(self), np.nan)
            for i, r in enumerate(self.resources):
                if r is not None and self.mappable[i]:
                    col[i] = min(resource_constraints(r).get(name, 0.0), NO_FIT)
            out[name] = col
        return out


def price_batch(layers: Sequence[ConvLayer], accs: Sequence[Any]) -> BatchPrices:
    """Price ``layers`` (run one after another) on each of ``accs``.

    Args:
        layers: the workload, as ``evaluators.training.extract_layers`` gives it (with the
            measured input densities, when known).
        accs: accelerator specs of any template, in any mix.

    Returns:
        ``BatchPrices`` in the order of ``accs``. A configuration that cannot run a layer, or
        whose spec is invalid, is not raised: ``mappable`` is False and ``reasons`` says why.

    Raises:
        SpecError: ``layers`` is empty or a layer is out of its domain.
    """
    if not layers:
        raise SpecError("layers: the network has no layers")
    return price_each(layers, accs)


def price_each(layers: Sequence[ConvLayer], accs: Sequence[Any]) -> BatchPrices:
    """The reference path: each configuration priced by its own model, one after another."""
    from evaluators.hardware import make_model

    reports: list[HardwareReport | None] = []
    reasons: list[str | None] = []
    for acc in accs:
        try:
            reports.append(make_model(acc, enforce_budgets=False).evaluate_network(layers))
            reasons.append(None)
        except (InfeasibleDesign, SpecError) as e:
            if isinstance(e, SpecError) and not isinstance(e, InfeasibleDesign):
                _layer_problem(e, layers)
            reports.append(None)
            reasons.append(str(e))
    return from_reports(reports, reasons)


def _layer_problem(e: SpecError, layers: Sequence[ConvLayer]) -> None:
    """Re-raise a ``SpecError`` that is the workload's fault (it would hit every config)."""
    from evaluators.hardware.base import layer_problems

    for layer in layers:
        if layer_problems(layer):
            raise e


def from_reports(reports: Sequence[HardwareReport | None],
                 reasons: Sequence[str | None]) -> BatchPrices:
    """``BatchPrices`` from per-configuration reports (``None``: cannot run)."""
    n = len(reports)
    cols = {m: np.full(n, np.nan) for m in METRICS}
    cycles = np.zeros(n, dtype=np.int64)
    for i, r in enumerate(reports):
        if r is None:
            continue
        for m, v in r.metrics().items():
            cols[m][i] = v
        cycles[i] = r.total.total_cycles
    return BatchPrices(
        **cols, total_cycles=cycles,
        mappable=np.array([r is not None for r in reports], dtype=bool),
        reasons=tuple(reasons), resources=tuple(r.resources if r else None for r in reports))
