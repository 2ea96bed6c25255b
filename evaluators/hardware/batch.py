"""Batch pricing: one workload on many accelerator configurations at once.

The nested and decoupled strategies solve the hardware half of a design per trained network:
its layers are priced on every accelerator configuration of the space (or thousands of
sampled ones), and the non-dominated configurations become (network, accelerator) pairs.
:func:`price_batch` is that path. Its numbers are the one-design path's
(``make_model(acc, enforce_budgets=False).evaluate_network(layers)``), configuration by
configuration; a test compares them on random configurations.

Systolic configurations (``AcceleratorSpec``, template ``systolic``) are priced together,
with numpy arrays over configurations: per layer and dataflow, the configurations whose
``plan_tiling`` candidates coincide (``tiling_candidates`` reads the dataflow's fold granules,
the weight storage and the ``ws`` fold, never ``glb_kib``) share one candidate set, and the
tile each GLB size picks comes from one pass over it (``_pick_tiles``); everything after the
tiling is ``SystolicModel._evaluate``'s arithmetic, operation for operation, on arrays, with
the per-accelerator constants read from each configuration's own ``SystolicModel``. The
messages of unmappable configurations come from the one-design path (the first layer that
fails, priced alone). Other templates, spec subclasses and a workload with out-of-domain
layers go through :func:`price_each`.

Lifecycle: a pure function of ``(layers, accs)``; no I/O, no global state that could change
an answer (the systolic mapper's shape caches are read-only). Safe to call from a Ray worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from evaluators.hardware import tables
from evaluators.hardware.base import layer_problems
from evaluators.hardware.systolic import (
    PSUM_BITS,
    SystolicModel,
    TilingCandidates,
    array_granules,
    order_flags,
    pe_rate,
    skipped_length,
    streamed_traffic,
    tiling_candidates,
    weight_dram_bytes,
)
from evaluators.specs import (
    DATAFLOWS,
    AcceleratorSpec,
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

    The numbers are :func:`price_each`'s, configuration by configuration (systolic ones are
    computed with arrays over configurations, see the module docstring).

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
    if any(layer_problems(layer) for layer in layers) or max(
        layer.macs for layer in layers
    ) > _MAX_MACS:  # the one-design path raises (or not) as it meets them; int64 bounds
        return price_each(layers, accs)
    fast = [i for i, acc in enumerate(accs)
            if type(acc) is AcceleratorSpec and acc.template == SystolicModel.template]
    if len(fast) == len(accs):
        return _price_systolic(layers, accs)
    taken = set(fast)
    slow = [i for i in range(len(accs)) if i not in taken]
    parts = [(slow, price_each(layers, [accs[i] for i in slow]))]
    if fast:
        parts.append((fast, _price_systolic(layers, [accs[i] for i in fast])))
    return _merge(len(accs), parts)


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


def _merge(n: int, parts: Sequence[tuple[Sequence[int], BatchPrices]]) -> BatchPrices:
    """One ``BatchPrices`` of ``n`` configurations from parts priced apart (their positions)."""
    cols: dict[str, np.ndarray] = {m: np.full(n, np.nan) for m in METRICS}
    cycles = np.zeros(n, dtype=np.int64)
    mappable = np.zeros(n, dtype=bool)
    reasons: list[str | None] = [None] * n
    resources: list[dict[str, dict[str, Any]] | None] = [None] * n
    for where, part in parts:
        at = np.asarray(where, dtype=np.intp)
        for m in METRICS:
            cols[m][at] = getattr(part, m)
        cycles[at] = part.total_cycles
        mappable[at] = part.mappable
        for i, r, res in zip(where, part.reasons, part.resources):
            reasons[i], resources[i] = r, res
    return BatchPrices(**cols, total_cycles=cycles, mappable=mappable, reasons=tuple(reasons),
                       resources=tuple(resources))


# --------------------------------------------------------------------------- systolic, batched

# Above this many MACs in one layer the int64 cycle and GLB-bit counts could overflow; such
# workloads take the one-design path (Python integers).
_MAX_MACS = 2**44
# GLB sizes are ranked in chunks of at most this many distinct values (``_pick_tiles``).
_CHUNK = 64
_BIG = np.iinfo(np.int64).max


class _Configs:
    """Valid systolic configurations as arrays (index = position), with their models.

    The per-accelerator constants are the models' own (``SystolicModel.__init__``), so both
    paths multiply by the same numbers.
    """

    def __init__(self, models: Sequence[SystolicModel]) -> None:
        accs = [m.acc for m in models]
        self.models = models

        def ints(name: str) -> np.ndarray:
            return np.array([getattr(a, name) for a in accs], dtype=np.int64)

        def flags(name: str) -> np.ndarray:
            return np.array([bool(getattr(a, name)) for a in accs], dtype=bool)

        def floats(values: list[Any]) -> np.ndarray:
            return np.array(values, dtype=np.float64)

        self.dataflow = np.array([a.dataflow for a in accs], dtype=object)
        self.goal = np.array([a.mapper_objective for a in accs], dtype=object)
        self.rows, self.cols, self.rf_bytes = ints("pe_rows"), ints("pe_cols"), ints("rf_bytes")
        self.double_buffered = flags("double_buffered")
        self.zero_gating = flags("zero_gating")
        self.zero_skipping = flags("zero_skipping")
        self.glb_bytes = floats([a.glb_kib * 1024.0 for a in accs])
        self.glb_bytes_per_cycle = floats([a.glb_bytes_per_cycle for a in accs])
        self.khz = floats([a.freq_mhz * 1e3 for a in accs])  # latency_ms = cycles / khz
        self.num_pes = np.array([m.num_pes for m in models], dtype=np.int64)
        self.bytes_per_cycle = floats([m._bytes_per_cycle for m in models])
        self.node = floats([m._node for m in models])
        self.rf_pj_bit = floats([m._rf_pj_bit for m in models])
        self.glb_pj_bit = floats([m._glb_pj_bit for m in models])
        self.dram_pj_bit = floats([m._dram_pj_bit for m in models])
        self.clock_pj_per_cycle = floats([m.clock_pj_per_cycle for m in models])
        self.static_leak_w = floats([m._static_leak_w for m in models])
        # PE kinds (pe_type, pe_bits) and array shapes (what plan_tiling reads), by code
        self.kinds, self.kind = _codes([(a.pe_type, a.pe_bits) for a in accs])
        self.serial = np.array([a.pe_type == "bit_serial" for a in accs], dtype=bool)
        self.shapes, self.shape = _codes(
            [(a.pe_rows, a.pe_cols, bool(a.zero_skipping), bool(a.weight_compression))
             for a in accs])
        self._shape_acc = [accs[i] for i in np.unique(self.shape, return_index=True)[1]]
        self._kind_model = [models[i] for i in np.unique(self.kind, return_index=True)[1]]
        self._flow_accs: dict[tuple[int, str], AcceleratorSpec] = {}

    def __len__(self) -> int:
        return len(self.models)

    def shape_acc(self, shape: int, dataflow: str) -> AcceleratorSpec:
        """A configuration of array shape ``shape`` under ``dataflow`` (what the mapper reads)."""
        key = (shape, dataflow)
        acc = self._flow_accs.get(key)
        if acc is None:
            acc = dataclasses.replace(self._shape_acc[shape], dataflow=dataflow)
            self._flow_accs[key] = acc
        return acc

    def kind_model(self, kind: int) -> SystolicModel:
        """A model whose PEs are of kind ``kind``."""
        return self._kind_model[kind]


def _codes(keys: list[Any]) -> tuple[list[Any], np.ndarray]:
    """The distinct keys (first-seen order) and each key's index among them."""
    index: dict[Any, int] = {}
    codes = np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.intp)
    return list(index), codes


class _LayerPrices(NamedTuple):
    """One layer on some configurations, under one dataflow (``(m,)`` arrays)."""

    ok: np.ndarray  # the configuration can run the layer
    total_cycles: np.ndarray
    latency_ms: np.ndarray
    mac_pj: np.ndarray
    rf_pj: np.ndarray
    glb_pj: np.ndarray
    dram_pj: np.ndarray
    leak_pj: np.ndarray
    clock_pj: np.ndarray
    gating_saved_pj: np.ndarray  # ``mapping["input_gating_saved_pj"]``

    @property
    def energy_pj(self) -> np.ndarray:
        return self.mac_pj + self.rf_pj + self.glb_pj + self.dram_pj + self.leak_pj + self.clock_pj

    def objective(self, goal: np.ndarray) -> np.ndarray:
        """``SystolicModel._objective`` per configuration (``goal``: its mapper_objective);
        ``inf`` where the layer cannot run."""
        energy = self.energy_pj + self.gating_saved_pj
        obj = np.where(goal == "latency", self.latency_ms,
                       np.where(goal == "energy", energy, energy * self.latency_ms))
        return np.where(self.ok, obj, np.inf)


_COST_FIELDS = _LayerPrices._fields[1:-1]  # the costs that add up over layers


def _price_systolic(layers: Sequence[ConvLayer], accs: Sequence[AcceleratorSpec]) -> BatchPrices:
    """``price_each`` for systolic ``AcceleratorSpec``s, with arrays over configurations."""
    n = len(accs)
    models: list[SystolicModel] = []
    valid: list[int] = []
    reasons: list[str | None] = [None] * n
    for i, acc in enumerate(accs):
        try:
            models.append(SystolicModel(acc))
            valid.append(i)
        except SpecError as e:  # as make_model raises it
            reasons[i] = str(e)
    cols = {m: np.full(n, np.nan) for m in METRICS}
    cycles = np.zeros(n, dtype=np.int64)
    mappable = np.zeros(n, dtype=bool)
    if models:
        cfg = _Configs(models)
        totals, first_bad = _price_network(layers, cfg)
        ok = first_bad < 0
        at = np.asarray(valid, dtype=np.intp)
        energy_pj = (totals["mac_pj"] + totals["rf_pj"] + totals["glb_pj"] + totals["dram_pj"]
                     + totals["leak_pj"] + totals["clock_pj"])
        latency_ms = totals["latency_ms"]
        seconds = latency_ms * 1e-3
        with np.errstate(divide="ignore", invalid="ignore"):
            power = np.where(seconds > 0, energy_pj * 1e-12 / seconds, 0.0)
        wbits = max(layer.weight_bits for layer in layers)
        ibits = max(layer.input_bits for layer in layers)
        area = np.array([m.area_mm2(weight_bits=wbits, input_bits=ibits) for m in models])
        for name, col in (("latency_ms", latency_ms), ("energy_mj", energy_pj * 1e-9),
                          ("area_mm2", area), ("power_w", power)):
            cols[name][at[ok]] = col[ok]
        cycles[at[ok]] = totals["total_cycles"][ok]
        mappable[at[ok]] = True
        for v in np.flatnonzero(~ok):
            reason, report = _unmappable(models[v], layers, int(first_bad[v]))
            i = valid[v]
            reasons[i] = reason
            if report is not None:  # the arrays disagreed with the model: take the model's
                for name, value in report.metrics().items():
                    cols[name][i] = value
                cycles[i] = report.total.total_cycles
                mappable[i] = True
    return BatchPrices(**cols, total_cycles=cycles, mappable=mappable, reasons=tuple(reasons),
                       resources=(None,) * n)


def _unmappable(model: SystolicModel, layers: Sequence[ConvLayer],
                bad: int) -> tuple[str | None, HardwareReport | None]:
    """Why ``model`` cannot run ``layers``: the message of the first layer that fails
    (``bad``), as ``evaluate_network`` raises it; should that layer run after all, the
    one-design path's whole answer."""
    try:
        model.evaluate_layer(layers[bad])
    except InfeasibleDesign as e:
        return str(e), None
    try:
        return None, model.evaluate_network(layers)
    except InfeasibleDesign as e:
        return str(e), None


def _price_network(layers: Sequence[ConvLayer],
                   cfg: _Configs) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Network totals per configuration (``LayerCost.__add__`` in layer order) and the index
    of the first layer each cannot run (-1: runs them all)."""
    n = len(cfg)
    auto = cfg.dataflow == "auto"
    totals: dict[str, np.ndarray] = {f: np.zeros(n) for f in _COST_FIELDS}
    totals["total_cycles"] = np.zeros(n, dtype=np.int64)
    first_bad = np.full(n, -1, dtype=np.int64)
    seen: dict[tuple[ConvLayer, str], _LayerPrices] = {}  # a layer's name changes no number
    for li, layer in enumerate(layers):
        shape = dataclasses.replace(layer, name="")
        ok = np.zeros(n, dtype=bool)
        costs = {f: np.zeros(n, dtype=totals[f].dtype) for f in _COST_FIELDS}
        auto_prices: list[_LayerPrices] = []
        auto_at = np.flatnonzero(auto)
        for df in DATAFLOWS:
            sel = np.flatnonzero((cfg.dataflow == df) | auto)
            if not sel.size:
                continue
            p = seen.get((shape, df))
            if p is None:
                p = seen[shape, df] = _price_dataflow(layer, df, cfg, sel)
            fixed = ~auto[sel]
            dst = sel[fixed]
            ok[dst] = p.ok[fixed]
            for f in _COST_FIELDS:
                costs[f][dst] = getattr(p, f)[fixed]
            if auto_at.size:
                pos = np.searchsorted(sel, auto_at)
                auto_prices.append(_LayerPrices(*(a[pos] for a in p)))
        if auto_at.size:  # the dataflow of least objective, ties in the order of DATAFLOWS
            scores = np.stack([p.objective(cfg.goal[auto_at]) for p in auto_prices])
            best = np.argmin(scores, axis=0)
            ok[auto_at] = np.isfinite(scores[best, np.arange(auto_at.size)])
            for f in _COST_FIELDS:
                stacked = np.stack([getattr(p, f) for p in auto_prices])
                costs[f][auto_at] = stacked[best, np.arange(auto_at.size)]
        first_bad[(first_bad < 0) & ~ok] = li
        for f in _COST_FIELDS:
            totals[f] = totals[f] + costs[f]
    return totals, first_bad


def _price_dataflow(layer: ConvLayer, df: str, cfg: _Configs, sel: np.ndarray) -> _LayerPrices:
    """``SystolicModel._evaluate(layer, acc with dataflow df)`` for configurations ``sel``."""
    m = sel.size
    kind = cfg.kind[sel]
    # pe_rate, the multiplier energy and the PE leakage of each PE kind, at this layer's bits
    per_kind = []
    for model in (cfg.kind_model(k) for k in range(len(cfg.kinds))):
        sp, tr, wb, ib = pe_rate(model.acc, layer.weight_bits, layer.input_bits)
        serial_pj = tr * (tables.mult_pj(model.acc.pe_bits, 1) + tables.add_pj(PSUM_BITS))
        leak = tables.pe_leakage_w(*model._pe_bits(layer.weight_bits, layer.input_bits))
        per_kind.append((sp, tr, wb, ib, tables.mult_pj(wb, ib), serial_pj, leak))
    sp, tr, wbits, ibits = (np.array([k[c] for k in per_kind], dtype=np.int64)[kind]
                            for c in range(4))
    mult_pj, serial_pj, pe_leak = (np.array([k[c] for k in per_kind])[kind] for c in (4, 5, 6))

    rows, cols, rf = cfg.rows[sel], cfg.cols[sel], cfg.rf_bytes[sel]
    zs = cfg.zero_skipping[sel]
    groups = layer.groups
    window0 = layer.filter_h * layer.filter_w * (layer.channels // groups)
    window = np.full(m, window0, dtype=np.int64)
    pixels = layer.ofmap_h * layer.ofmap_w * layer.batch
    k = layer.num_filters // groups
    density = np.full(m, float(layer.weight_density))
    if zs.any():  # the weight axis keeps the fullest lane's non-zeros
        lanes = np.full(int(zs.sum()), k) if df == "is" else np.minimum(k, cols[zs])
        lane_values, inv = np.unique(lanes, return_inverse=True)
        kept = np.array([skipped_length(window0, layer.weight_density, int(v))
                         for v in lane_values], dtype=np.int64)
        window[zs] = kept[inv]
        density[zs] = 1.0

    full = np.full
    if df == "ws":
        sr, sc, t = window, full(m, k), full(m, pixels)
        stat_bits, row_bits, col_bits, col_psum = wbits, ibits, full(m, PSUM_BITS), True
    elif df == "os":
        sr, sc, t = full(m, pixels), full(m, k), window
        stat_bits, row_bits, col_bits, col_psum = full(m, PSUM_BITS), ibits, wbits, False
    else:  # "is"
        sr, sc, t = window, full(m, pixels), full(m, k)
        stat_bits, row_bits, col_bits, col_psum = ibits, wbits, full(m, PSUM_BITS), True
    rf_ok = rf * 8 >= stat_bits

    fr, fc = -(-sr // rows), -(-sc // (cols * sp))
    t_cycles = t * tr
    folds = fr * fc
    per_fold = (rows if df == "os" else 2 * rows) + cols + t_cycles - 2
    compute = groups * (folds * per_fold - 1)
    if df == "os":
        compute_overlapped = compute
    else:
        overlaps = cfg.double_buffered[sel] & (rf * 8 >= 2 * stat_bits)
        hidden = np.where(overlaps, (groups * folds - 1) * np.minimum(rows, t_cycles), 0)
        compute_overlapped = compute - hidden

    tile_ok, read_bytes, write_bytes = _tiling_bytes(layer, df, cfg, sel)
    ok = rf_ok & tile_ok
    dram_read = np.ceil(np.where(ok, read_bytes, 0.0)).astype(np.int64)
    dram_write = np.ceil(np.where(ok, write_bytes, 0.0)).astype(np.int64)
    dram_bytes = dram_read + dram_write
    dram_cycles = dram_bytes / cfg.bytes_per_cycle[sel]

    node = cfg.node[sel]
    macs = np.where(zs, layer.macs * layer.weight_density, layer.macs * 1.0)
    serial = cfg.serial[sel]
    gating = cfg.zero_gating[sel] & ~serial
    gated_mult = mult_pj * density
    input_gated_pj = np.where(gating, gated_mult * (1.0 - layer.input_density), 0.0)
    mult_pj = np.where(gating, gated_mult * layer.input_density, mult_pj)
    mac_pj = np.where(serial, serial_pj, mult_pj + tables.add_pj(PSUM_BITS))
    mac_pj = mac_pj * (macs * node)
    rf_pj = macs * (wbits + ibits + PSUM_BITS) * cfg.rf_pj_bit[sel]
    glb_bits = (
        groups
        * (
            sr * sc * stat_bits
            + fc * sr * t * row_bits
            + ((2 * fr - 1) if col_psum else fr) * sc * t * col_bits
        )
        + 8 * dram_bytes
    )
    glb_pj = glb_bits * cfg.glb_pj_bit[sel]
    port = cfg.glb_bytes_per_cycle[sel]
    glb_cycles = np.where(port != 0, glb_bits / 8 / np.where(port != 0, port, 1.0), 0.0)
    total = np.maximum(compute_overlapped,
                       np.maximum(np.ceil(glb_cycles).astype(np.int64),
                                  np.ceil(dram_cycles).astype(np.int64)))
    latency_ms = total / cfg.khz[sel]
    dram_pj = 8 * dram_bytes * cfg.dram_pj_bit[sel]
    leak_w = cfg.num_pes[sel] * (pe_leak * node) + cfg.static_leak_w[sel]
    leak_pj = leak_w * latency_ms * 1e9
    return _LayerPrices(
        ok=ok, total_cycles=total, latency_ms=latency_ms, mac_pj=mac_pj, rf_pj=rf_pj,
        glb_pj=glb_pj, dram_pj=dram_pj, leak_pj=leak_pj,
        clock_pj=cfg.clock_pj_per_cycle[sel] * total,
        gating_saved_pj=input_gated_pj * macs * node,
    )


def _tiling_bytes(layer: ConvLayer, df: str, cfg: _Configs,
                  sel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``plan_tiling`` under ``df`` for configurations ``sel``: whether a tile fits, and the
    tiling's ``read_bytes`` and ``write_bytes`` (0 where none fits)."""
    shape = cfg.shape[sel]
    # array shapes whose candidates coincide: the same fold granules, weight storage and fold
    groups: dict[tuple[Any, ...], list[int]] = {}
    for s in np.unique(shape).tolist():
        acc = cfg.shape_acc(s, df)
        key = (array_granules(layer, acc), weight_dram_bytes(layer, acc),
               acc.pe_rows * acc.pe_cols if df == "ws" else 0)
        groups.setdefault(key, []).append(s)
    group_of = np.empty(len(cfg.shapes), dtype=np.intp)
    for g, shapes in enumerate(groups.values()):
        group_of[shapes] = g
    gid = group_of[shape]
    order = np.argsort(gid, kind="stable")
    bounds = np.flatnonzero(np.diff(gid[order])) + 1
    # per configuration: the picked tile's counts, gathered group by group
    at: list[np.ndarray] = []
    picked: list[list[np.ndarray]] = []
    for members in np.split(order, bounds):
        c = tiling_candidates(layer, cfg.shape_acc(int(shape[members[0]]), df))
        q, inv = np.unique(cfg.glb_bytes[sel[members]], return_inverse=True)
        pick = np.empty(q.size, dtype=np.int64)
        streamed = np.empty(q.size, dtype=bool)
        for lo in range(0, q.size, _CHUNK):
            chunk = slice(lo, lo + _CHUNK)
            pick[chunk], streamed[chunk] = _pick_tiles(c, q[chunk])
        pick, streamed = pick[inv], streamed[inv]
        fit = pick >= 0
        i, j, m = np.unravel_index(pick[fit], c.traffic.shape)
        n_fit = int(fit.sum())
        at.append(members[fit])
        picked.append([c.in_pass[j, m], c.nk[i], c.nc[i], c.n_sp[j, m], streamed[fit],
                       np.full(n_fit, c.w_once), np.full(n_fit, c.spill),
                       np.full(n_fit, c.out_final)])
    ok = np.zeros(sel.size, dtype=bool)
    read = np.zeros(sel.size)
    write = np.zeros(sel.size)
    if at:
        where = np.concatenate(at)
        ok[where] = True
        read[where], write[where] = _tile_bytes(*(np.concatenate(a) for a in zip(*picked)))
    return ok, read, write


def _pick_tiles(c: TilingCandidates, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tile ``plan_tiling`` picks at each GLB size of ``q`` (ascending, distinct, at most
    ``_CHUNK``): ``(flat candidate index or -1 where none fits, weights streamed)``.

    At GLB size ``g`` a candidate is held where ``hold_bytes <= g`` and streamed where
    ``stream_bytes <= g < hold_bytes`` (with enough pixels), so each of its two options is
    open on a run ``[lo, hi)`` of ``q``'s indices. ``plan_tiling`` takes the least
    ``(traffic, tiles, flat index)`` among the open options. Options that move more than one
    open at every size never win; those left that share a run are reduced to their least,
    and those few are ranked for every size.
    """
    nq = q.size
    hold = np.where(c.enough_px, c.hold_bytes, np.inf).ravel()
    a_hold = np.searchsorted(q, hold)  # held from this size index on
    traffic = c.traffic.ravel()
    everywhere = a_hold == 0
    bound = traffic[everywhere].min() if everywhere.any() else np.inf
    held = np.flatnonzero((a_hold < nq) & (traffic <= bound))
    if c.w_stream is c.w_tile:  # not ws: stream_bytes is hold_bytes, nothing streams
        streams = held[:0]
    else:
        stream = np.where(c.enough_px, c.stream_bytes, np.inf).ravel()
        a_stream = np.searchsorted(q, stream)  # streamed from here until a_hold
        streams = np.flatnonzero(a_stream < a_hold)
        if streams.size:
            s_traffic = streamed_traffic(c).ravel()[streams]
            keep = s_traffic <= bound
            streams, s_traffic = streams[keep], s_traffic[keep]
    if not held.size + streams.size:
        return np.full(nq, -1, dtype=np.int64), np.zeros(nq, dtype=bool)
    idx = np.concatenate((held, streams))
    lo = np.concatenate((a_hold[held], a_stream[streams] if streams.size else streams))
    hi = np.concatenate((np.full(held.size, nq), a_hold[streams]))
    traffic = traffic[held]
    if streams.size:
        traffic = np.concatenate((traffic, s_traffic))
    tiles = c.tiles.ravel()[idx]
    key = idx * 2  # the flat index, and whether the option streams
    key[held.size:] += 1
    # the least option of each run [lo, hi): least traffic, then fewest tiles, then index
    run = (lo * (nq + 1) + hi).astype(np.uint16)  # small ints: a radix sort
    order = np.argsort(run, kind="stable")
    run, traffic, tiles, key = run[order], traffic[order], tiles[order], key[order]
    starts = np.flatnonzero(np.concatenate(([True], run[1:] != run[:-1])))
    counts = np.diff(np.append(starts, run.size))
    t_min = np.minimum.reduceat(traffic, starts)
    tiles = np.where(traffic == np.repeat(t_min, counts), tiles, _BIG)
    n_min = np.minimum.reduceat(tiles, starts)
    key = np.where(tiles == np.repeat(n_min, counts), key, _BIG)
    k_min = np.minimum.reduceat(key, starts)
    # rank the runs' winners once; each size takes the best winner whose run covers it
    w_run = run[starts].astype(np.int64)
    w_lo, w_hi = w_run // (nq + 1), w_run % (nq + 1)
    by_rank = np.lexsort((k_min, n_min, t_min))
    rank = np.empty(by_rank.size, dtype=np.int64)
    rank[by_rank] = np.arange(by_rank.size)
    at = np.arange(nq)[:, None]
    best = np.where((w_lo <= at) & (at < w_hi), rank, by_rank.size).min(axis=1)
    fit = best < by_rank.size
    won = k_min[by_rank[np.where(fit, best, 0)]]
    return np.where(fit, won // 2, -1), fit & (won % 2 == 1)


def _tile_bytes(in_pass: np.ndarray, nk: np.ndarray, nc: np.ndarray, n_sp: np.ndarray,
                streamed: np.ndarray, w_once: np.ndarray, spill: np.ndarray,
                out_final: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Tiling.read_bytes`` and ``write_bytes`` of picked tiles (the ``TilingCandidates``
    entries at each pick): the loop order of least traffic (``_order_traffic``; ties: the
    order of ``ORDERS``)."""
    per_order = [
        (in_pass * np.where(fi, nk, 1), w_once * np.where(fw | streamed, n_sp, 1),
         np.where(fo, spill * (nc - 1), 0.0))
        for fw, fi, fo in order_flags(nk > 1, nc > 1, n_sp > 1)
    ]
    sums = np.stack([i_b + w_b + p_b for i_b, w_b, p_b in per_order])
    o = np.argmin(sums, axis=0)
    cols = np.arange(in_pass.size)
    in_b, w_b, psum_b = (np.stack([t[x] for t in per_order])[o, cols] for x in range(3))
    return in_b + w_b + psum_b / 2, (out_final + psum_b) - psum_b / 2
