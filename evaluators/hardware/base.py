"""What every accelerator template shares: the ``HardwareModel`` interface, the value checks of
layers and specs, and the tile-shape helpers of the mappers.

The templates (``systolic``, ``gpu``, ``eyeriss``) each subclass ``HardwareModel``; this module
imports none of them.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import lru_cache, reduce
from typing import Any, ClassVar

import numpy as np

from evaluators.specs import ConvLayer, HardwareReport, LayerCost, SpecError

# --------------------------------------------------------------------------- value checks


def is_int(v: Any) -> bool:
    """An integer (Python or numpy), not a boolean."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_real(v: Any) -> bool:
    """A real number (Python or numpy int/float), not a boolean."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_)
    )


def type_name(v: Any) -> str:
    """The YAML-ish name of a value's type for messages: ``integer``, ``number``, ``string``..."""
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
        type(v), type(v).__name__
    )


def field_problems(
    spec: Any, check_field: Callable[[str, Any], tuple[Any, str | None]]
) -> list[str]:
    """``"<field>: <problem>"`` for every dataclass field of ``spec`` that ``check_field``
    rejects, in field order."""
    return [
        f"{f.name}: {p}"
        for f in dataclasses.fields(spec)
        if (p := check_field(f.name, getattr(spec, f.name))[1]) is not None
    ]


_LAYER_INT_FIELDS = (
    "ifmap_h",
    "ifmap_w",
    "filter_h",
    "filter_w",
    "channels",
    "num_filters",
    "stride",
    "batch",
    "weight_bits",
    "input_bits",
    "output_bits",
    "groups",
)


def layer_problems(layer: ConvLayer) -> list[str]:
    """Every problem of a layer's values (positive sizes, filter fits, density in (0, 1])."""
    problems: list[str] = []
    for name in _LAYER_INT_FIELDS:
        v = getattr(layer, name)
        if not is_int(v) or v <= 0:
            problems.append(f"{name}: must be an integer > 0, got {v!r}")
    if not is_int(layer.padding) or layer.padding < 0:
        problems.append(f"padding: must be an integer >= 0, got {layer.padding!r}")
    for name in ("weight_density", "input_density"):
        d = getattr(layer, name)
        if not is_real(d) or not 0.0 < d <= 1.0:
            problems.append(f"{name}: must be in (0, 1], got {d!r}")
    if not problems and (layer.channels % layer.groups or layer.num_filters % layer.groups):
        problems.append(
            f"groups: must divide channels ({layer.channels}) and num_filters "
            f"({layer.num_filters}), got {layer.groups}"
        )
    if not problems:
        for f, i in (("filter_h", "ifmap_h"), ("filter_w", "ifmap_w")):
            padded = getattr(layer, i) + 2 * layer.padding
            if getattr(layer, f) > padded:
                problems.append(
                    f"{f}: must not exceed the padded input ({i} + 2*padding = {padded}), "
                    f"got {getattr(layer, f)}"
                )
    return problems


def required_fields(cls: type) -> tuple[str, ...]:
    """The fields of a spec dataclass that have no default (a file must give them)."""
    return tuple(f.name for f in dataclasses.fields(cls)
                 if f.default is dataclasses.MISSING
                 and f.default_factory is dataclasses.MISSING)


def build_spec(cls: type, d: dict[str, Any], *, template: str, keys: Sequence[str],
               required: Sequence[str] = ()) -> Any:
    """``cls(**d)`` for a template's spec, after checking the keys (values are checked when a
    model is built, by the spec's rules).

    Raises:
        SpecError: a key the template does not have (the message lists the known ones), or a
            required key missing.
    """
    unknown = [k for k in d if k not in keys]
    if unknown:
        raise SpecError(f"{unknown[0]}: unknown key; known {template} keys: {', '.join(keys)}")
    missing = [k for k in required if k not in d]
    if missing:
        raise SpecError(f"{missing[0]}: missing; required for template {template}")
    return cls(**d)


def check_layer(layer: ConvLayer) -> None:
    """Raise ``SpecError`` listing every problem of ``layer`` (see ``layer_problems``)."""
    problems = layer_problems(layer)
    if problems:
        raise SpecError(f"layer {layer.name!r}: " + "; ".join(problems))


# --------------------------------------------------------------------------- the interface


class HardwareModel(ABC):
    """An accelerator template priced analytically (one instance per accelerator spec).

    Lifecycle:
        1. ``Model(acc)``: called once per accelerator (per trial). Validates the spec and
           precomputes per-accelerator constants; microseconds, no I/O.
        2. ``evaluate_layer(layer)``: called once per layer, any number of times, in any order,
           from any thread or process. A pure function of ``(acc, layer)``.
        3. ``area_mm2(weight_bits=..., input_bits=...)``: pure; the multiplier is sized for the
           widest operands it must support.
        4. ``resources()``: pure; ``None`` unless the template is a programmable device.
        ``evaluate_network`` (provided) runs the layers one after another and sums their costs.

    Invariants every implementation keeps: instances are immutable after ``__init__`` and
    picklable (they travel to Ray workers); no method does I/O, reads or writes global state,
    or caches results across calls in a way that could change an answer; returned
    ``LayerCost`` values are new objects whose ``mapping`` holds only JSON-able values.

    Raises:
        SpecError: from ``__init__`` when the spec is invalid (message lists every problem),
            and from ``evaluate_layer`` when a layer's values are out of their domain.
        InfeasibleDesign: from ``evaluate_layer`` / ``evaluate_network`` when the accelerator
            cannot run the layer at all (e.g. no tile fits its buffers).
    """

    template: ClassVar[str]
    spec_type: ClassVar[type]  # the spec class this template is built from

    @staticmethod
    def spec_problems(acc: Any) -> list[str]:
        """Every problem of a spec of ``spec_type`` (its ``validate()`` unless overridden)."""
        return acc.validate()

    def __init__(self, acc: Any) -> None:
        if not isinstance(acc, self.spec_type):
            raise SpecError(f"template: the {self.template!r} model takes a "
                            f"{self.spec_type.__name__}, got {type(acc).__name__}")
        problems = self.spec_problems(acc)
        if not problems and acc.template != self.template:
            problems.append(f"template: this model is {self.template!r}, got {acc.template!r}")
        if problems:
            raise SpecError("; ".join(problems))
        self.acc = acc

    @abstractmethod
    def evaluate_layer(self, layer: ConvLayer) -> LayerCost:
        """Cost of one layer on this accelerator (pure)."""

    @abstractmethod
    def area_mm2(self, *, weight_bits: int, input_bits: int) -> float:
        """Silicon area of this accelerator in mm^2 (pure)."""

    def resources(self) -> dict[str, dict[str, Any]] | None:
        """Use of a programmable device's resources (JSON-able), or ``None`` for a chip whose
        size is its ``area_mm2`` (every template but ``fpga``)."""
        return None

    def budget_problems(self) -> list[str]:
        """``"<field>: ..."`` lines for the resource budgets the accelerator exceeds (pure).
        ``make_model`` raises them unless a search asks it not to (then the budgets become
        constraints, from ``resources()``). A chip has none."""
        return []

    def evaluate_network(self, layers: Sequence[ConvLayer]) -> HardwareReport:
        """Price layers run one after another: costs add up, power = energy / latency."""
        if not layers:
            raise SpecError("layers: the network has no layers")
        costs = tuple(self.evaluate_layer(layer) for layer in layers)
        total = reduce(lambda a, b: a + b, costs, _zero_cost(costs[0].num_pes))
        area = self.area_mm2(
            weight_bits=max(layer.weight_bits for layer in layers),
            input_bits=max(layer.input_bits for layer in layers),
        )
        seconds = total.latency_ms * 1e-3
        power = total.energy_pj * 1e-12 / seconds if seconds > 0 else 0.0
        return HardwareReport(layers=costs, total=total, area_mm2=area, power_w=power,
                              resources=self.resources())


def layer_cost(
    layer: ConvLayer, *, num_pes: int, compute_cycles: int, total_cycles: int, **rest: Any
) -> LayerCost:
    """The ``LayerCost`` of ``layer``: its name and MACs, the two utilizations (MACs over
    ``num_pes`` x total / compute cycles) and the template's other fields (``rest``)."""
    macs = layer.macs
    return LayerCost(
        name=layer.name,
        macs=macs,
        compute_cycles=compute_cycles,
        total_cycles=total_cycles,
        utilization=macs / (num_pes * total_cycles),
        mapping_utilization=macs / (num_pes * compute_cycles),
        num_pes=num_pes,
        **rest,
    )


def _zero_cost(num_pes: int) -> LayerCost:
    return LayerCost(
        name="total",
        macs=0,
        compute_cycles=0,
        total_cycles=0,
        utilization=0.0,
        mapping_utilization=0.0,
        dram_read_bytes=0,
        dram_write_bytes=0,
        mac_energy_pj=0.0,
        rf_energy_pj=0.0,
        glb_energy_pj=0.0,
        dram_energy_pj=0.0,
        latency_ms=0.0,
        num_pes=num_pes,
    )


# --------------------------------------------------------------------------- mapper shape helpers

# Pure functions of a few integers, memoized (``touched_lines`` by its callers) because layer
# shapes repeat across layers and trials; cached arrays are read-only, so an answer cannot change.


def frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays, made read-only (safe to hand out from a cache)."""
    for a in arrays:
        a.setflags(write=False)
    return arrays


@lru_cache(maxsize=4096)
def tile_sizes(n: int) -> np.ndarray:
    """The distinct tile sizes ceil(n / t) for t = 1..n, ascending (read-only).

    Each gives a different tile count; any other size has the same count as one of these and
    a larger footprint, so a mapper never needs it.
    """
    sizes = -(-n // np.arange(n, 0, -1, dtype=np.int64))  # non-decreasing
    new = np.ones(n, dtype=bool)
    new[1:] = sizes[1:] != sizes[:-1]
    return frozen(sizes[new])[0]  # (not np.unique: its first call imports numpy.ma, ~5 ms)


def touched_lines(
    n_out: int, n_in: int, k: int, s: int, pad: int, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Real input lines read by tiles of ``t`` output lines along one axis, for each ``t``.

    The axis has ``n_out`` output lines from ``n_in`` input lines (window ``k``, stride ``s``,
    padding ``pad`` on each side). Returns ``(largest, total)``: the lines the largest tile
    reads and the lines all tiles read together (the halo between neighbouring tiles read once
    per tile). Only lines a window touches count: padding is never fetched, and a stride larger
    than the window skips lines.
    """
    e = np.arange(n_out)
    lo = np.clip(e * s - pad, 0, n_in)  # real input lines output line e reads: [lo, hi)
    hi = np.clip(e * s - pad + k, 0, n_in)
    e0 = t[:, None] * e[None, :]  # tile starts, (len(t), n_out)
    valid = e0 < n_out
    e0 = np.minimum(e0, n_out - 1)
    e1 = np.minimum(e0 + t[:, None], n_out)
    if s <= k:  # windows overlap or touch: a tile reads one contiguous band
        per = hi[e1 - 1] - lo[e0]
    else:  # gaps between windows: only the covered lines
        cum = np.concatenate(([0], np.cumsum(hi - lo)))
        per = cum[e1] - cum[e0]
    per = np.where(valid, per, 0)
    return per.max(axis=1), per.sum(axis=1)
