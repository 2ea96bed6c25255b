"""The joint search space: network, compression and accelerator parts under prefixed keys.

Lifecycle: :func:`build` is called once per process from the parsed ``space`` mapping of an
experiment (it validates and collects every problem); the resulting :class:`JointSpace` is
immutable and picklable. The driver calls :meth:`JointSpace.distributions` for every
``study.ask`` and :meth:`JointSpace.decode` on the sampled parameters. ``decode`` is a pure
function of its input.

Parameter names: ``net/stages``, ``net/s{i}/depth``, ``net/s{i}/width``,
``net/s{i}/kernel`` (one set per possible stage; a stage beyond ``net/stages`` is ignored),
``cmp/weight_bits``, ``cmp/activation_bits``, ``cmp/prune_ratio``, ..., ``hw/<key>``. With
``compression.precision: stage`` the bits are searched per stage instead, as
``cmp/s{i}/weight_bits`` and ``cmp/s{i}/activation_bits`` over the domains written for
``weight_bits`` / ``activation_bits``. Fixed values never become Optuna parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from evaluators.hardware import MODELS
from evaluators.hardware.io import TEMPLATE_FIELDS, load_accelerator_yaml
from evaluators.specs import (
    DATAFLOW_CHOICES,
    DRAM_TYPES,
    FAMILIES,
    MAPPER_OBJECTIVES,
    PE_TYPES,
    PRECISION_MODES,
    PRUNE_MODES,
    SRAM_DEVICES,
    TEMPLATES,
    DesignPoint,
    EvaluatorError,
    NetworkSpec,
    StageSpec,
)
from search_spaces.dims import (
    Choice,
    Dim,
    KeySpec,
    SpaceError,
    at_least,
    between,
    contains,
    distribution,
    draw,
    extremes,
    grid_values,
    in_set,
    middle,
    parse_dim,
    positive,
    to_yaml,
)

BITS = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32)
MAX_STAGES = 6

NETWORK_KEYS: dict[str, KeySpec] = {
    "family": KeySpec("str", "plain_cnn", in_set(FAMILIES), "model family"),
    "stages": KeySpec("int", 2, between(1, MAX_STAGES), "number of stages"),
    "depth": KeySpec("int", [1, 2], between(1, 8), "conv blocks per stage"),
    "width": KeySpec("int", [8, 16, 32], between(1, 1024), "channels of a stage"),
    "kernel": KeySpec(
        "int", [3, 5], lambda v: None if v in (1, 3, 5, 7) else "must be 1, 3, 5 or 7",
        "square kernel size of a stage",
    ),
    "expansion": KeySpec("int", 4, between(1, 8), "inverted-residual expansion (mobilenetv2)"),
}
PER_STAGE = ("depth", "width", "kernel", "expansion")

COMPRESSION_KEYS: dict[str, KeySpec] = {
    "weight_bits": KeySpec("int", [4, 8], in_set(BITS), "weight bits (32 = float)"),
    "activation_bits": KeySpec("int", [4, 8], in_set(BITS), "activation bits (32 = float)"),
    "prune_ratio": KeySpec(
        "float", 0.0, between(0.0, 0.95), "how much pruning removes (see prune_mode)"
    ),
    "prune_mode": KeySpec(
        "str", "unstructured", in_set(PRUNE_MODES), "unstructured | structured | nm"
    ),
    "rank_ratio": KeySpec(
        "float", 1.0, lambda v: None if 0 < v <= 1 else "must be in (0, 1]",
        "low-rank factorization: fraction of each layer's rank kept (1 = off)",
    ),
    "precision": KeySpec(
        "str", "network", in_set(PRECISION_MODES),
        "network: one weight/activation bitwidth; stage: searched per stage",
    ),
    "first_layer_bits": KeySpec(
        "int", None, in_set(BITS), "weight bits of the first conv (null: its stage's)", True
    ),
    "last_layer_bits": KeySpec(
        "int", None, in_set(BITS), "weight bits of the classifier (null: its stage's)", True
    ),
}
STAGE_BITS = ("weight_bits", "activation_bits")
_STAGE_PARAM = re.compile(r"^(net|cmp)/s(\d+)/")

ACCELERATOR_KEYS: dict[str, KeySpec] = {
    "template": KeySpec("str", "systolic", in_set(TEMPLATES), "accelerator template"),
    "dataflow": KeySpec(
        "str", ["ws", "os", "is"], in_set(DATAFLOW_CHOICES), "systolic dataflow (auto: per layer)"
    ),
    "pe_rows": KeySpec("int", [8, 16, 32], between(1, 4096), "PE array rows"),
    "pe_cols": KeySpec("int", [8, 16, 32], between(1, 4096), "PE array columns"),
    "glb_kib": KeySpec("float", [32, 64, 128], positive,
                       "global buffer, KiB (null: sized with each design's array)", True),
    "glb_bytes_per_cycle": KeySpec(
        "float", 0.0, at_least(0), "GLB bandwidth, bytes/cycle (0: unlimited)"
    ),
    "rf_bytes": KeySpec("int", 8, at_least(1), "register file per PE, bytes"),
    "dram_gbps": KeySpec("float", 16.0, positive, "DRAM bandwidth, GB/s"),
    "freq_mhz": KeySpec("float", 500.0, positive, "clock, MHz"),
    "dram_type": KeySpec("str", "lpddr4", in_set(DRAM_TYPES), "DRAM type (energy per bit)"),
    "double_buffered": KeySpec("bool", True, None, "overlap stationary reloads with compute"),
    "zero_gating": KeySpec("bool", True, None, "gate multipliers on zero weights"),
    "weight_compression": KeySpec("bool", True, None, "bitmask-compressed sparse weights"),
    "zero_skipping": KeySpec("bool", False, None, "skip zero weights (fewer cycles, mask cost)"),
    "pe_type": KeySpec("str", "fixed", in_set(PE_TYPES), "fixed | bit_fusion | bit_serial PEs"),
    "pe_bits": KeySpec("int", 8, in_set((2, 4, 8, 16, 32)), "precision-scalable PE width"),
    "mapper_objective": KeySpec(
        "str", "edp", in_set(MAPPER_OBJECTIVES), "what dataflow auto minimizes per layer"
    ),
    "tech_node_nm": KeySpec("float", 45.0, between(7, 130), "technology node, nm"),
    "sram_device": KeySpec("str", "itrs-lop", in_set(SRAM_DEVICES), "SRAM leakage flavour"),
}

# Where a template's spec default is not what a search should start from (or the spec has
# none): the fpga engine's required figures, as in experiments/accelerators/fpga_zcu102_like.yaml
# (ZCU102, its DPU clock from UG1354 and its PS DDR4 bandwidth from UG1182), with the
# parallelism searched. A gpu has no search defaults: every figure must be given (or ``file``).
TEMPLATE_SEARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "fpga": {"device": "xczu9eg", "unroll_c": [8, 16, 32], "unroll_k": [8, 16, 32],
             "freq_mhz": 281.0, "dram_gbps": 21.3},
}
REQUIRED = object()  # the default of a key the space must give
FILE_KEY = "file"  # space.accelerator.file: an accelerator YAML giving every key's default


def _rule(check_field: Callable[[str, Any], tuple[Any, str | None]], name: str
          ) -> Callable[[Any], str | None]:
    """A ``KeySpec.check`` from a template's ``check_field`` (its rule, without the "got")."""
    def check(v: Any) -> str | None:
        problem = check_field(name, v)[1]
        return None if problem is None else problem.split(", got ")[0]
    return check


@cache
def accelerator_keys(template: str) -> dict[str, KeySpec]:
    """The ``space.accelerator`` keys of ``template``: ``ACCELERATOR_KEYS`` for ``systolic``;
    for another template, one key per field of its spec, typed and checked like its
    accelerator file (``evaluators.hardware.io.TEMPLATE_FIELDS``), defaulting to the spec's
    value (the Eyeriss chip, ...) or ``TEMPLATE_SEARCH_DEFAULTS``."""
    if template == "systolic":
        return ACCELERATOR_KEYS
    t = TEMPLATE_FIELDS[template]
    keys = {"template": ACCELERATOR_KEYS["template"]}
    for f in dataclasses.fields(t.spec):
        if f.name == "template":
            continue
        kind = str(f.type).replace("| None", "").strip()
        default = TEMPLATE_SEARCH_DEFAULTS.get(template, {}).get(
            f.name, REQUIRED if f.default is dataclasses.MISSING else f.default)
        keys[f.name] = KeySpec(kind, default, _rule(t.check_field, f.name),
                               f"see docs/hardware/{template}.md", "None" in str(f.type))
    return keys


def accelerator_spec(template: str, values: Mapping[str, Any]) -> Any:
    """The template's spec from one value per key; each value is given the field's own type
    by the template's ``check_field`` (an int sampled for a float key becomes a float)."""
    fields = TEMPLATE_FIELDS[template]
    # None: the spec's own default (a nullable key, e.g. a systolic glb_kib sized with the
    # array); the spec's rules refuse it where a field has no such default
    return fields.spec(**{k: v if v is None else fields.check_field(k, v)[0]
                          for k, v in values.items()})


PARTS: dict[str, tuple[str, dict[str, KeySpec]]] = {
    "network": ("net", NETWORK_KEYS),
    "compression": ("cmp", COMPRESSION_KEYS),
    "accelerator": ("hw", ACCELERATOR_KEYS),  # the keys of systolic; see accelerator_keys
}


@dataclass(frozen=True)
class JointSpace:
    """An immutable joint space. ``dims`` maps every parameter name to its dimension."""

    dims: dict[str, Dim]
    in_channels: int
    input_hw: int
    num_classes: int

    @property
    def template(self) -> str:
        """The accelerator template every design of this space uses (one per study)."""
        return str(self.dims["hw/template"].value)  # type: ignore[union-attr]

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions of the searched (non-fixed) parameters, in a stable order."""
        out = {}
        for name, dim in self.dims.items():
            dist = distribution(dim)
            if dist is not None:
                out[name] = dist
        return out

    def example_params(self) -> dict[str, Any]:
        """A complete point of the space (every searched parameter, at its first choice or
        lower bound): a skeleton for ``codesign evaluate --params``."""
        out = {}
        for name in self.distributions():
            dim = self.dims[name]
            out[name] = dim.choices[0] if isinstance(dim, Choice) else dim.low  # type: ignore
        return out

    def network_distributions(self) -> dict[str, Any]:
        """The searched parameters of the network and compression halves (``net/``,
        ``cmp/``): what a nested or decoupled strategy's sampler proposes."""
        return {n: d for n, d in self.distributions().items() if not n.startswith("hw/")}

    def hardware_distributions(self) -> dict[str, Any]:
        """The searched accelerator parameters (``hw/``)."""
        return {n: d for n, d in self.distributions().items() if n.startswith("hw/")}

    def hardware_grid_size(self) -> int | None:
        """The number of accelerator configurations of the space when every searched
        ``hw/`` dimension is finite (choices, stepped ranges), else ``None``."""
        size = 1
        for name in self.hardware_distributions():
            values = grid_values(self.dims[name])
            if values is None:
                return None
            size *= len(values)
        return size

    def hardware_points(self, *, max_grid: int, samples: int, seed: int
                        ) -> list[dict[str, Any]]:
        """Accelerator configurations (searched ``hw/`` parameters) to price a network on:
        the whole grid, in a stable order, when it has at most ``max_grid`` points; else
        ``samples`` points drawn with the numpy seed ``seed`` (uniform per dimension,
        log-uniform on log ranges), duplicates dropped."""
        names = list(self.hardware_distributions())
        size = self.hardware_grid_size()
        if size is not None and size <= max_grid:
            grids = [grid_values(self.dims[n]) or [] for n in names]
            return [dict(zip(names, point)) for point in itertools.product(*grids)]
        import numpy as np

        rng = np.random.default_rng(seed)
        columns = [draw(self.dims[n], rng, samples) for n in names]
        seen: dict[tuple[Any, ...], None] = {}
        for point in zip(*columns):
            seen.setdefault(tuple(point), None)
        return [dict(zip(names, point)) for point in seen]

    def reference_hardware(self) -> dict[str, Any]:
        """The middle of every searched accelerator dimension (``dims.middle``): the
        decoupled strategy's reference accelerator."""
        return {n: middle(self.dims[n]) for n in self.hardware_distributions()}

    def accelerator(self, hw_params: Mapping[str, Any]) -> Any:
        """The accelerator spec of searched ``hw/`` parameters (+ the fixed ones), as
        :meth:`decode` builds it."""
        v = {**self._fixed_hw, **hw_params}
        return accelerator_spec(self.template,
                                {key: v[f"hw/{key}"] for key in accelerator_keys(self.template)})

    @functools.cached_property
    def _fixed_hw(self) -> dict[str, Any]:  # the space is immutable: computed once
        return {n: v for n, v in self.fixed().items() if n.startswith("hw/")}

    def fixed(self) -> dict[str, Any]:
        return {n: d.value for n, d in self.dims.items() if distribution(d) is None}

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise :class:`SpaceError` unless ``params`` is a point of this space."""
        searched = self.distributions()
        problems = []
        stages = params.get("net/stages", self.dims["net/stages"])
        stages = stages.value if hasattr(stages, "value") else stages
        for name in searched:
            m = _STAGE_PARAM.match(name)
            inactive = m is not None and isinstance(stages, int) and int(m.group(2)) >= stages
            if name not in params and inactive:
                continue  # a stage the design does not have
            if name not in params:
                problems.append((name, "missing parameter"))
            elif not contains(self.dims[name], params[name]):
                problems.append((name, f"{params[name]!r} is not in {to_yaml(self.dims[name])}"))
        for name in params:
            if name not in self.dims:
                problems.append((name, f"unknown parameter; known: {sorted(searched)}"))
            elif name not in searched and params[name] != self.dims[name].value:
                problems.append((name, f"fixed to {self.dims[name].value!r} in the experiment"))
        if problems:
            raise SpaceError(problems)

    def decode(self, params: Mapping[str, Any]) -> DesignPoint:
        """Sampled parameters (+ fixed values) -> a typed :class:`DesignPoint`."""
        v = {**self.fixed(), **params}
        inverted = v["net/family"] == "mobilenetv2"
        n_stages = int(v["net/stages"])
        if v["cmp/precision"] == "stage":
            # canonical form (the training cache compares networks): the network's bits are
            # stage 0's, and a stage's own bits are set only where they differ
            w = [int(v[f"cmp/s{i}/weight_bits"]) for i in range(n_stages)]
            a = [int(v[f"cmp/s{i}/activation_bits"]) for i in range(n_stages)]
        else:
            w = [int(v["cmp/weight_bits"])] * n_stages
            a = [int(v["cmp/activation_bits"])] * n_stages
        stages = tuple(
            StageSpec(
                depth=int(v[f"net/s{i}/depth"]),
                width=int(v[f"net/s{i}/width"]),
                kernel_size=int(v[f"net/s{i}/kernel"]),
                stride=1 if i == 0 else 2,
                # only inverted residuals have an expansion: keep the others canonical so the
                # training cache sees equal networks as equal
                expansion=int(v[f"net/s{i}/expansion"]) if inverted else 1,
                weight_bits=None if w[i] == w[0] else w[i],
                activation_bits=None if a[i] == a[0] else a[i],
            )
            for i in range(n_stages)
        )
        first, last = v["cmp/first_layer_bits"], v["cmp/last_layer_bits"]
        network = NetworkSpec(
            family=v["net/family"],
            in_channels=self.in_channels,
            input_hw=self.input_hw,
            num_classes=self.num_classes,
            stages=stages,
            weight_bits=w[0],
            activation_bits=a[0],
            prune_ratio=round(float(v["cmp/prune_ratio"]), 6),
            prune_mode=v["cmp/prune_mode"],
            rank_ratio=round(float(v["cmp/rank_ratio"]), 6),
            # an override equal to the layer's own bits is no override (canonical form)
            first_layer_bits=None if first is None or int(first) == w[0] else int(first),
            last_layer_bits=None if last is None or int(last) == w[-1] else int(last),
        )
        hw = {key: v[f"hw/{key}"] for key in accelerator_keys(self.template)}
        return DesignPoint(network=network, accelerator=accelerator_spec(self.template, hw))

    def to_yaml(self) -> dict[str, Any]:
        """The resolved space in YAML spelling (every key, defaults filled in)."""
        out: dict[str, dict[str, Any]] = {}
        for part, (prefix, keys) in PARTS.items():
            if prefix == "hw":
                keys = accelerator_keys(self.template)
            sec: dict[str, Any] = {}
            for key in keys:
                if prefix == "net" and key in PER_STAGE or f"{prefix}/{key}" not in self.dims:
                    sec[key] = to_yaml(self.dims[f"{prefix}/s0/{key}"])
                else:
                    sec[key] = to_yaml(self.dims[f"{prefix}/{key}"])
            out[part] = sec
        return out


def build(
    space: Mapping[str, Any] | None,
    *,
    in_channels: int,
    input_hw: int,
    num_classes: int,
    path: str = "space",
    base_dir: str | None = None,
) -> JointSpace:
    """Validate the ``space`` section and build the joint space.

    ``base_dir``: the folder a relative ``accelerator.file`` is found from (the experiment
    YAML's folder; ``None``: the working folder).

    Raises:
        SpaceError: with every problem found (dotted key paths under ``path``).
    """
    problems: list[tuple[str, str]] = []
    space = {} if space is None else space
    if not isinstance(space, Mapping):
        raise SpaceError([(path, f"expected a mapping, got {type(space).__name__}")])
    unknown = sorted(set(map(str, space)) - set(PARTS))
    for key in unknown:
        problems.append((f"{path}.{key}", f"unknown key; known: {sorted(PARTS)}"))
    dims: dict[str, Dim] = {}
    for part, (prefix, keys) in PARTS.items():
        raw = space.get(part)
        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            problems.append((f"{path}.{part}", f"expected a mapping, got {raw!r}"))
            raw = {}
        if prefix == "hw":
            n = len(problems)
            raw, keys = _accelerator_part(raw, f"{path}.{part}", problems, base_dir)
            if len(problems) > n:  # no template to check the other keys against
                continue
        for key in sorted(set(map(str, raw)) - set(keys)):
            problems.append((f"{path}.{part}.{key}", f"unknown key; known: {sorted(keys)}"))
        missing = [k for k, spec in keys.items() if k not in raw and spec.default is REQUIRED]
        if missing:
            problems.append((f"{path}.{part}.{missing[0]}", f"missing, with {missing[1:]}: "
                             f"template {raw['template']} needs every one (or give "
                             f"{FILE_KEY}: an accelerator YAML such as "
                             f"experiments/accelerators/gpu_a100_like.yaml)"))
        for key, spec in keys.items():
            if key in missing:
                continue
            dim = parse_dim(raw.get(key, spec.default), spec, f"{path}.{part}.{key}", problems)
            if prefix == "net" and key in PER_STAGE:
                for i in range(MAX_STAGES):
                    dims[f"net/s{i}/{key}"] = dim
            else:
                dims[f"{prefix}/{key}"] = dim
    if not problems:
        max_stages = max(extremes(dims["net/stages"]))
        for i in range(max_stages, MAX_STAGES):
            for key in PER_STAGE:
                del dims[f"net/s{i}/{key}"]
        modes = extremes(dims["cmp/precision"])
        if "stage" in modes:
            for key in STAGE_BITS:
                for i in range(max_stages):
                    dims[f"cmp/s{i}/{key}"] = dims[f"cmp/{key}"]
                if "network" not in modes:  # the network-wide bits would be sampled unused
                    del dims[f"cmp/{key}"]
        _cross_rules(dims, path, problems)
    if problems:
        raise SpaceError(problems)
    return JointSpace(dims, in_channels, input_hw, num_classes)


def _accelerator_part(
    raw: Mapping[str, Any], path: str, problems: list[tuple[str, str]],
    base_dir: str | None = None,
) -> tuple[dict[str, Any], dict[str, KeySpec]]:
    """``space.accelerator`` with its ``file`` (if any) folded in: ``(raw, keys)``.

    ``file`` names an accelerator YAML (read like ``codesign hw`` reads it; a relative path
    from ``base_dir``, the experiment's folder); its values become the defaults of the keys,
    and the keys written beside it override them (a list or range there is searched).
    ``template`` comes from the space, else from the file, else ``systolic``; one template
    per study.
    """
    raw = {str(k): v for k, v in raw.items()}
    base: dict[str, Any] = {}
    if FILE_KEY in raw:
        file = raw.pop(FILE_KEY)
        if not isinstance(file, str):
            problems.append((f"{path}.{FILE_KEY}", f"expected a path, got {file!r}"))
        else:
            where = base_dir or os.getcwd()
            full = os.path.join(where, os.path.expanduser(file))
            try:
                spec = load_accelerator_yaml(full)
                base = spec.to_dict()
            except EvaluatorError as e:
                note = "" if os.path.isabs(file) else f" (relative paths are found from {where})"
                problems.append((f"{path}.{FILE_KEY}", f"{e}{note}"))
            else:
                base.update(_sized_with_the_array(spec, full))
    template = raw.get("template", base.get("template", "systolic"))
    if not isinstance(template, str) or template not in TEMPLATE_FIELDS:
        hint = (" (one template per study: run a study for each)"
                if isinstance(template, list) else "")
        problems.append((f"{path}.template", f"must be one of {list(TEMPLATES)}, "
                         f"got {template!r}{hint}"))
        template = "systolic"
    if base.get("template", template) != template:
        problems.append((f"{path}.template", f"{template!r} differs from the {FILE_KEY}'s "
                         f"template {base['template']!r}"))
        base = {}
    raw["template"] = template
    return {**base, **raw}, accelerator_keys(template)


def _sized_with_the_array(spec: Any, path: str) -> dict[str, Any]:
    """The keys of a systolic accelerator file that it leaves to their array-sized default
    (``glb_kib``), as ``None``: a design of the space that searches the array around the
    file then gets its own default buffer, not the file's array's."""
    if getattr(spec, "template", None) != "systolic":
        return {}
    with open(path, encoding="utf-8") as f:
        written = yaml.safe_load(f) or {}  # read and checked once already
    return {} if "glb_kib" in written else {"glb_kib": None}


def _cross_rules(dims: dict[str, Dim], path: str, problems: list[tuple[str, str]]) -> None:
    """Rules between keys that no single key can check."""
    template = dims["hw/template"].value  # type: ignore[union-attr]
    if template != "systolic":
        _spec_rules(template, dims, f"{path}.accelerator", problems)
        return
    # The register file must hold one stationary word for every sampled bitwidth; a
    # dataflow-specific check (psums are 32 bit under os) is done by the hardware model.
    min_rf = min(extremes(dims["hw/rf_bytes"]))
    bits_dims = [d for n, d in dims.items() if n.startswith("cmp/") and n.endswith(
        ("weight_bits", "first_layer_bits", "last_layer_bits"))]
    max_wbits = max(b for d in bits_dims for b in extremes(d) if b is not None)
    if min_rf * 8 < min(max_wbits, 32):
        problems.append((
            f"{path}.accelerator.rf_bytes",
            f"a {min_rf}-byte register file cannot hold one {max_wbits}-bit weight; "
            f"raise rf_bytes to at least {-(-min(max_wbits, 32) // 8)}",
        ))


MAX_RULE_POINTS = 4096  # corner points of a space checked against a template's cross-field rules


def _spec_rules(template: str, dims: dict[str, Dim], path: str,
                problems: list[tuple[str, str]]) -> None:
    """A template's cross-field rules (``validate()``: eyeriss ``glb_filter_kib < glb_kib``,
    gpu ``idle_w < tdp_w``, ...) at every combination of the keys' extremes (choices, range
    bounds), up to ``MAX_RULE_POINTS`` of them; the first point that breaks one is reported.
    An fpga engine over its DSP / BRAM budget is not an error here: it is a constraint."""
    names = list(accelerator_keys(template))
    values = [extremes(dims[f"hw/{k}"]) for k in names]
    spec_problems = MODELS[template].spec_problems  # the rules a model is built under
    for point in itertools.islice(itertools.product(*values), MAX_RULE_POINTS):
        lines = spec_problems(accelerator_spec(template, dict(zip(names, point))))
        if lines:
            key, msg = lines[0].split(": ", 1)  # "<field>: <rule>, got <value>"
            searched = {k: v for k, v, d in zip(names, point, values) if len(d) > 1}
            where = f" (at {searched})" if searched else ""
            problems.append((f"{path}.{key}", msg + where))
            return
