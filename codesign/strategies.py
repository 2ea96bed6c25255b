"""The hardware half of a design, solved per network without training (nested, decoupled).

A network's accuracy needs a training (seconds to hours); its cost on an accelerator needs the
hardware model (well under a millisecond a layer). The ``nested`` and ``decoupled``
strategies (``strategy:`` in the experiment, :class:`codesign.config.StrategyConfig`) spend
their trainings on networks and solve the accelerator half for each trained network with
:class:`HardwareSolver`: the network's layers are priced on every accelerator configuration
of the space (or thousands of sampled ones) in one batch (``evaluators.hardware.batch``),
and the feasible configurations that no other one beats on the experiment's hardware
objectives become the network's (network, accelerator) pairs.

Lifecycle: one :class:`HardwareSolver` per driver session, built from the experiment; its
methods are pure functions of their arguments and the experiment (no storage, no Ray).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from codesign.config import ExperimentConfig
from codesign.report import non_dominated
from evaluators.specs import DesignPoint, HardwareReport, NetworkSpec

HW_OBJECTIVES = ("latency_ms", "energy_mj", "area_mm2", "power_w")


@dataclass(frozen=True)
class Pair:
    """One accelerator configuration chosen for a network, priced by the one-design path
    (``evaluators.evaluate.price``) so that its record is a flat trial's."""

    hw_params: dict[str, Any]  # the searched hw/ parameters
    design: DesignPoint
    report: HardwareReport
    constraints: dict[str, float]


def spread(points: np.ndarray, keep: int) -> np.ndarray:
    """At most ``keep`` row indices of a front spread along it: the rows sorted by their
    first column, taken at evenly spaced ranks (both ends included)."""
    order = np.lexsort(points.T[::-1])
    if len(order) <= keep:
        return order
    ranks = np.unique(np.round(np.linspace(0, len(order) - 1, keep)).astype(int))
    return order[ranks]


class HardwareSolver:
    """Prices a network on the accelerator configurations of the experiment's space.

    ``points(seed)``: the configurations (the grid, or ``hw_samples`` drawn with ``seed``).
    ``probe``: before training, the configuration a network is trained on (the feasible one
    of least energy-delay product at dense inputs), and whether any configuration is
    feasible at all (if none is, the network is never trained). ``front``: after training,
    the network priced again with its measured input densities, and its pairs.
    """

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.space = cfg.space
        self.options = cfg.strategy
        self.hw_objectives = [o for o in cfg.objectives if o in HW_OBJECTIVES]
        self.grid = self.space.hardware_grid_size()
        self._specs_of: tuple[list[dict[str, Any]], list[Any]] | None = None
        self._grid_points: list[dict[str, Any]] | None = None

    def _specs(self, points: list[dict[str, Any]]) -> list[Any]:
        """The accelerator specs of ``points`` (built once per list: a network is priced on
        the same list before and after its training, and on the grid every time)."""
        if self._specs_of is None or self._specs_of[0] is not points:
            self._specs_of = (points, [self.space.accelerator(p) for p in points])
        return self._specs_of[1]

    def points(self, network: NetworkSpec) -> list[dict[str, Any]]:
        """The configurations ``network`` is priced on: the grid (one list, the same for
        every network), or ``hw_samples`` drawn with ``hardware_seed``, so that a network
        proposed again gets the same configurations, the same probe and so the same design
        (a repeat, never a new evaluation)."""
        o = self.options
        if self.grid is not None and self.grid <= o.hw_grid_max:
            if self._grid_points is None:
                self._grid_points = self.space.hardware_points(
                    max_grid=o.hw_grid_max, samples=o.hw_samples, seed=0)
            return self._grid_points
        return self.space.hardware_points(max_grid=o.hw_grid_max, samples=o.hw_samples,
                                          seed=hardware_seed(self.cfg.study.seed, network))

    def _price(self, network: NetworkSpec, points: list[dict[str, Any]],
               density: dict[str, float] | None) -> tuple[Any, np.ndarray, np.ndarray]:
        """(batch prices, constraint rows (n, c), feasible mask) of ``network`` on
        ``points``."""
        from evaluators.hardware.batch import price_batch
        from evaluators.training import extract_layers

        layers = extract_layers(network, self.cfg.task.deploy_input, density or None)
        prices = price_batch(layers, self._specs(points))
        cons = prices.constraint_values(self.cfg.budgets)
        rows = (np.stack(list(cons.values()), axis=1) if cons
                else np.zeros((len(points), 0)))
        ok = prices.mappable & np.all(np.nan_to_num(rows, nan=np.inf) <= 0, axis=1)
        return prices, rows, ok

    def probe(self, network: NetworkSpec, points: list[dict[str, Any]]
              ) -> tuple[dict[str, Any], bool]:
        """The configuration to train ``network`` on, and whether it meets every budget.

        Feasible ones: the least latency x energy (dense inputs). None feasible: the
        mappable one whose worst budget overshoot is least (the trial records it as an
        over-budget design); none mappable: the first (the trial is recorded unmappable).
        """
        prices, rows, ok = self._price(network, points, None)
        if ok.any():
            edp = np.where(ok, prices.latency_ms * prices.energy_mj, np.inf)
            return points[int(np.argmin(edp))], True
        if prices.mappable.any():
            worst = np.where(prices.mappable,
                             rows.max(axis=1) if rows.shape[1] else 0.0, np.inf)
            return points[int(np.argmin(worst))], False
        return points[0], False

    def front(self, network: NetworkSpec, density: dict[str, float] | None,
              points: list[dict[str, Any]], fixed: dict[str, Any]) -> list[Pair]:
        """The network's pairs: its feasible configurations that no other one dominates on
        the hardware objectives, priced with ``density`` (at most ``hw_keep``, spread along
        the front). ``fixed``: the network's own searched parameters."""
        from evaluators.evaluate import constraint_values, price

        prices, _, ok = self._price(network, points, density)
        if not ok.any():
            return []
        idx = np.flatnonzero(ok)
        if self.hw_objectives:
            values = np.stack([prices.metrics()[o][idx] for o in self.hw_objectives], axis=1)
            front = idx[non_dominated(values)]
            chosen = front[spread(values[np.searchsorted(idx, front)],
                                  self.options.hw_keep)]
        else:  # no hardware objective: the least energy-delay product stands for the rest
            chosen = idx[[int(np.argmin(prices.latency_ms[idx] * prices.energy_mj[idx]))]]
        pairs = []
        for i in sorted(int(c) for c in chosen):
            design = self.space.decode({**fixed, **points[i]})
            report = price(design, self.cfg.task.deploy_input, density or None)
            pairs.append(Pair(points[i], design, report,
                              constraint_values(report, self.cfg.budgets)))
        return pairs


def hardware_seed(study_seed: int, network: NetworkSpec) -> int:
    """The seed of the configurations sampled for ``network`` (reproducible from the
    study's seed and the network alone)."""
    from evaluators.specs import stable_hash

    return int(stable_hash({"seed": study_seed, "network": network.to_dict()}), 16) % 2**32
