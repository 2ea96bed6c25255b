"""Experiment YAML: load -> validate -> build an immutable :class:`ExperimentConfig`.

Every problem in a file is collected before one :class:`ConfigError` is raised; each problem
is ``(dotted.key.path, message with the bad value)``. YAML is read with a safe loader that
also refuses duplicate keys; tags that would build Python objects are refused, never run.
Loading has no side effects: nothing is created on disk.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from codesign.urls import display_url
from evaluators.specs import DATASETS, DEVICES, WARM_STARTS, Budgets, TaskSpec, stable_hash
from search_spaces import JointSpace, SpaceError
from search_spaces import build as build_space
from search_spaces.dims import at_least, between, in_set, positive, type_ok

SCHEMA_VERSION = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# objective name -> Optuna direction
OBJECTIVES: dict[str, str] = {
    "accuracy": "maximize",
    "latency_ms": "minimize",
    "energy_mj": "minimize",
    "area_mm2": "minimize",
    "power_w": "minimize",
}
CONSTRAINTS = ("area_mm2", "power_w", "latency_ms")

# sampler name -> {option: (kind, check)}
_INT, _FLOAT, _BOOL, _STR = "int", "float", "bool", "str"
SAMPLERS: dict[str, dict[str, tuple[str, Callable[[Any], str | None] | None]]] = {
    "nsga2": {
        "population_size": (_INT, at_least(2)),
        "mutation_prob": (_FLOAT, between(0, 1)),
        "crossover_prob": (_FLOAT, between(0, 1)),
        "swapping_prob": (_FLOAT, between(0, 1)),
    },
    "nsga3": {
        "population_size": (_INT, at_least(2)),
        "dividing_parameter": (_INT, at_least(1)),
        "mutation_prob": (_FLOAT, between(0, 1)),
        "crossover_prob": (_FLOAT, between(0, 1)),
    },
    "tpe": {
        "n_startup_trials": (_INT, at_least(0)),
        "n_ei_candidates": (_INT, at_least(1)),
        "multivariate": (_BOOL, None),
        "constant_liar": (_BOOL, None),
    },
    "gp": {
        "n_startup_trials": (_INT, at_least(0)),
        "deterministic_objective": (_BOOL, None),
    },
    "random": {},
    "qmc": {
        "qmc_type": (_STR, in_set(("sobol", "halton"))),
        "scramble": (_BOOL, None),
    },
}


class ConfigError(ValueError):
    """An experiment file is invalid. ``problems`` holds ``(key path, message)`` pairs."""

    def __init__(self, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.path}: {key}: {msg}" for key, msg in self.problems]


@dataclass(frozen=True)
class StudyConfig:
    name: str
    seed: int
    n_trials: int
    storage: str  # resolved URL
    artifacts_dir: str | None  # absolute; None: beside the storage file (study.artifacts_dir)


@dataclass(frozen=True)
class SamplerConfig:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutionConfig:
    ray_address: str | None = None
    workers: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_retries: int = 1
    # custom Ray resources each trial needs (e.g. {"accelerator_type:H100": 0.001})
    resources_per_trial: dict[str, float] = field(default_factory=dict)
    trial_timeout_s: float | None = None  # an evaluation running longer is cancelled, failed
    # a design whose evaluation was left unfinished this many times (its worker or the
    # driver died) is not re-queued again
    max_crashes: int = 3
    # a driver whose lease in the study is older than this is taken for dead by the study's
    # other drivers (its trials failed and re-queued; see codesign/driver/lease.py)
    lease_s: float = 60.0


STRATEGIES = ("flat", "nested", "decoupled")


@dataclass(frozen=True)
class StrategyConfig:
    """How the search spends its trainings (``strategy:``; see experiments/README.md).

    ``flat``: the sampler proposes whole designs (network and accelerator together).
    ``nested``: the sampler proposes the network and compression; each network's accelerator
    half is solved without training: its layers are priced on every accelerator
    configuration of the space (the grid, when it has at most ``hw_grid_max`` points, else
    ``hw_samples`` sampled ones), the network is trained if one of them meets the budgets,
    and the non-dominated feasible configurations (at most ``hw_keep``) become
    (network, accelerator) pairs of the study. ``decoupled``: the network half first, on the
    reference accelerator (the middle of each accelerator range), then the accelerator half
    for the Pareto networks of that search, as ``nested`` solves it.

    ``rungs`` > 1: successive halving on the training budget, with any of the three. A new
    design is trained on ``eta ** -(rungs - 1)`` of the budget (rung 0); whenever a worker is
    free, the best ``1 / eta`` of a rung's finished designs (by non-dominated rank, then
    accuracy) are trained again on ``eta`` times more, from the previous rung's weights, up
    to the full budget. Only full-budget accuracies enter the front, the hypervolume and
    the pairs.
    """

    name: str = "flat"
    hw_grid_max: int = 20000
    hw_samples: int = 4000
    hw_keep: int = 8
    rungs: int = 1
    eta: int = 3

    @property
    def solves_hardware(self) -> bool:
        return self.name != "flat"

    def rung_budgets(self, budget: int) -> list[int]:
        """The epochs (or steps) each rung trains, of a full ``budget``: ``budget *
        eta ** (rung - (rungs - 1))`` rounded, at least 1; the top rung's is ``budget``."""
        return [max(1, round(budget * float(self.eta) ** (r - (self.rungs - 1))))
                for r in range(self.rungs)]


@dataclass(frozen=True)
class ReportConfig:
    """How studies are scored (``report:``). ``reference``: per objective, the worst value
    that still counts towards the hypervolume; ``ideal``: the best (default: accuracy 1,
    the others 0). Each objective is normalised to [0, 1] between the two, so the
    hypervolume of two studies of one experiment compares. ``reference`` unset: each study's
    own (the budget, else 1.1 x its worst feasible value), which does not compare."""

    reference: dict[str, float] | None = None
    ideal: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment. ``resolved`` is the full YAML mapping with defaults filled in."""

    source: str
    study: StudyConfig
    objectives: tuple[str, ...]
    budgets: Budgets
    sampler: SamplerConfig
    task: TaskSpec
    space: JointSpace
    execution: ExecutionConfig
    resolved: dict[str, Any]
    strategy: StrategyConfig = StrategyConfig()
    report: ReportConfig = ReportConfig()

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    def fingerprint(self) -> str:
        """Hash of what defines the study's results (not trial count, storage or execution)."""
        r = dict(self.resolved)
        r.pop("execution", None)
        r.pop("report", None)  # how studies are scored, not what they find
        r["study"] = {k: v for k, v in r["study"].items() if k in ("name", "seed")}
        return stable_hash(r)


# --------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also rejects duplicate keys in a mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (list, dict)):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Read one YAML document safely. Raises :class:`ConfigError` with a one-line reason."""
    p = str(path)
    try:
        text = Path(p).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(p, [("file", "not found")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(p, [("file", f"cannot be read ({e})")]) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}" if mark else "yaml"
        problem = str(e.problem or e)
        if "could not determine a constructor" in problem:
            tag = problem.split("tag", 1)[-1].strip(" '")
            problem = f"YAML tag '{tag}' is refused (only plain YAML data is accepted)"
        raise ConfigError(p, [(where, problem)]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "yaml"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(p, [(where, f"malformed YAML: {problem}")]) from None


# --------------------------------------------------------------------------- sections


class _Section:
    """Reads typed keys of one mapping, collecting problems under a dotted path."""

    def __init__(self, raw: Any, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            problems.append((path, f"expected a mapping, got {raw!r}"))
            raw = {}
        self.raw = raw
        self.read: set[str] = set()

    def get(
        self,
        key: str,
        kind: str,
        default: Any,
        check: Callable[[Any], str | None] | None = None,
        nullable: bool = False,
    ) -> Any:
        self.read.add(key)
        if key not in self.raw:
            return default
        v = self.raw[key]
        where = f"{self.path}.{key}"
        if v is None and nullable:
            return None
        ok = type_ok(kind, v)
        if not ok:
            self.problems.append((where, f"expected {kind}, got {v!r} ({type(v).__name__})"))
            return default
        if check is not None:
            msg = check(v)
            if msg:
                self.problems.append((where, f"{msg}, got {v!r}"))
                return default
        return float(v) if kind == _FLOAT else v

    def finish(self) -> None:
        for key in sorted(set(map(str, self.raw)) - self.read):
            self.problems.append(
                (f"{self.path}.{key}", f"unknown key; known: {', '.join(sorted(self.read))}")
            )


_pos = positive
_nonneg = at_least(0)


def _seed(v: Any) -> str | None:
    return None if 0 <= v < 2**32 else "must be in [0, 2**32 - 1]"


def _fraction(v: Any) -> str | None:
    return None if 0 < v < 1 else "must be in (0, 1)"


def load(path: str | os.PathLike[str], *, check_data: bool = True) -> ExperimentConfig:
    """Read, validate and build an experiment. Raises :class:`ConfigError` listing all problems.

    The files the experiment reads (``task.data_dir``, ``task.warm_start_checkpoint``,
    ``space.accelerator.file``) are found from the YAML file's folder when relative, and
    kept as absolute paths; what codesign writes (``study.storage``, ``study.artifacts_dir``)
    is relative to the working folder.

    Args:
        path: the experiment YAML.
        check_data: also check that the dataset's files exist under ``task.data_dir``.
    """
    src = str(path)
    raw = read_yaml(src)
    if not isinstance(raw, Mapping):
        raise ConfigError(src, [("(top level)", f"expected a mapping, got {raw!r}")])
    return from_mapping(raw, source=src, check_data=check_data,
                        base_dir=os.path.dirname(os.path.abspath(src)))


def _resources(section: Any, key: str, problems: list[tuple[str, str]]) -> dict[str, float]:
    """``execution.resources_per_trial``: resource name -> a positive amount."""
    section.read.add(key)
    raw, where = section.raw.get(key) or {}, f"{section.path}.{key}"
    if not isinstance(raw, dict):
        problems.append((where, f"expected a mapping of resource name to amount, got {raw!r}"))
        return {}
    out: dict[str, float] = {}
    for name, amount in raw.items():
        if not isinstance(name, str) or name in ("CPU", "GPU", "memory"):
            problems.append((f"{where}.{name}", "give CPU and GPU as cpus_per_trial / "
                             "gpus_per_trial; other names are custom Ray resources"))
        elif isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
            problems.append((f"{where}.{name}", f"expected a positive number, got {amount!r}"))
        else:
            out[name] = float(amount)
    return out


def _input_path(path: str, base_dir: str | None) -> str:
    """An input file named in an experiment, absolute (relative ones from ``base_dir``)."""
    path = os.path.expanduser(path)
    return os.path.abspath(os.path.join(base_dir or os.getcwd(), path))


def from_mapping(
    raw: Mapping[str, Any], *, source: str = "<experiment>", check_data: bool = True,
    base_dir: str | None = None,
) -> ExperimentConfig:
    """Validate an already-parsed experiment mapping (see :func:`load`).

    Args:
        base_dir: the folder relative input paths are found from (:func:`load`: the YAML's
            folder; ``None``: the working folder, as for a stored experiment, whose paths are
            absolute already).
    """
    problems: list[tuple[str, str]] = []
    top = _Section(raw, "", problems)
    version = raw.get("schema_version")
    top.read.add("schema_version")
    if version is None:
        problems.append(("schema_version", f"missing; write `schema_version: {SCHEMA_VERSION}`"))
    elif version != SCHEMA_VERSION or isinstance(version, bool):
        problems.append(("schema_version", f"unsupported version {version!r}; this codesign "
                         f"reads version {SCHEMA_VERSION}"))

    # study ---------------------------------------------------------------------------
    top.read.add("study")
    s = _Section(raw.get("study"), "study", problems)
    name = s.get("name", _STR, None,
                 lambda v: None if NAME_RE.match(v) else
                 "must be 1-64 letters, digits, '_', '.', '-' and start with a letter or digit")
    if "name" not in s.raw:
        problems.append(("study.name", "missing (the study's name, also its default file name)"))
    seed = s.get("seed", _INT, 0, _seed)
    n_trials = s.get("n_trials", _INT, 20, _pos)
    storage = s.get("storage", _STR, None, None, nullable=True)
    artifacts = s.get("artifacts_dir", _STR, None, None, nullable=True)
    s.finish()
    safe = name or "study"
    study = StudyConfig(
        name=safe,
        seed=seed,
        n_trials=n_trials,
        storage=storage or f"sqlite:///runs/{safe}.db",
        # absolute, so resume/export from another folder find the weights; unset: beside
        # the storage file, chosen when the study is created (codesign.study.artifacts_dir)
        artifacts_dir=os.path.abspath(artifacts) if artifacts else None,
    )

    # objectives / constraints ----------------------------------------------------------
    top.read.add("objectives")
    objectives_raw = raw.get("objectives", ["accuracy", "latency_ms", "energy_mj"])
    objectives: tuple[str, ...] = ("accuracy", "latency_ms", "energy_mj")
    if not isinstance(objectives_raw, list) or not objectives_raw:
        problems.append(("objectives", f"expected a non-empty list of names from "
                         f"{list(OBJECTIVES)}, got {objectives_raw!r}"))
    else:
        bad = [o for o in objectives_raw if o not in OBJECTIVES]
        if bad:
            problems.append(("objectives", f"unknown objective(s) {bad}; known: "
                             f"{list(OBJECTIVES)}"))
        elif len(set(objectives_raw)) != len(objectives_raw):
            problems.append(("objectives", f"duplicate objectives in {objectives_raw}"))
        else:
            objectives = tuple(objectives_raw)

    top.read.add("constraints")
    c = _Section(raw.get("constraints"), "constraints", problems)
    budgets = Budgets(**{k: c.get(k, _FLOAT, None, _pos, nullable=True) for k in CONSTRAINTS})
    c.finish()

    # sampler -----------------------------------------------------------------------
    top.read.add("sampler")
    sm = _Section(raw.get("sampler"), "sampler", problems)
    sname = sm.get("name", _STR, "nsga2",
                   lambda v: None if v in SAMPLERS else f"must be one of {list(SAMPLERS)}")
    options = {}
    for opt, (kind, check) in SAMPLERS.get(sname, {}).items():
        sm.read.add(opt)  # known, so a misspelled option lists the chosen sampler's options
        if opt in sm.raw:
            options[opt] = sm.get(opt, kind, None, check)
    sm.finish()
    sampler = SamplerConfig(sname, options)

    # task ----------------------------------------------------------------------------
    top.read.add("task")
    t = _Section(raw.get("task"), "task", problems)
    defaults = TaskSpec()
    dataset = t.get("dataset", _STR, defaults.dataset,
                    lambda v: None if v in DATASETS else f"unknown dataset; known: "
                    f"{list(DATASETS)}")
    data_dir = t.get("data_dir", _STR, None, None, nullable=True)
    if data_dir is not None:
        data_dir = _input_path(data_dir, base_dir)  # workers and resume see the same folder
    elif isinstance(dataset, str):
        from evaluators.training import default_data_dir

        data_dir = default_data_dir(dataset)  # a packaged copy (Debian's dataset-*), if any
    epochs = t.get("epochs", _INT, None, _pos, nullable=True)
    steps = t.get("steps", _INT, None, _pos, nullable=True)
    if epochs is not None and steps is not None:
        problems.append(("task.steps", "give either epochs or steps, not both"))
    if epochs is None and steps is None:
        epochs = defaults.epochs
    warm = t.get("warm_start", _STR, defaults.warm_start, in_set(WARM_STARTS))
    checkpoint = t.get("warm_start_checkpoint", _STR, None, None, nullable=True)
    if warm == "checkpoint" and checkpoint is None:
        problems.append(("task.warm_start_checkpoint",
                         "missing (warm_start: checkpoint needs a state dict file)"))
    elif checkpoint is not None and warm != "checkpoint":
        problems.append(("task.warm_start_checkpoint",
                         f"only used with warm_start: checkpoint (warm_start is {warm!r})"))
    elif checkpoint is not None:
        checkpoint = _input_path(checkpoint, base_dir)  # resume may run from another folder
        if not os.path.isfile(checkpoint):
            problems.append(("task.warm_start_checkpoint", f"file not found: {checkpoint}"))
    task = TaskSpec(
        dataset=dataset,
        data_dir=data_dir,
        epochs=epochs,
        steps=steps,
        batch_size=t.get("batch_size", _INT, defaults.batch_size, _pos),
        lr=t.get("lr", _FLOAT, defaults.lr, _pos),
        weight_decay=t.get("weight_decay", _FLOAT, defaults.weight_decay, _nonneg),
        device=t.get("device", _STR, defaults.device,
                     lambda v: None if v in DEVICES else f"must be one of {list(DEVICES)}"),
        seed=seed,
        split_seed=t.get("split_seed", _INT, defaults.split_seed, _seed),
        val_fraction=t.get("val_fraction", _FLOAT, defaults.val_fraction, _fraction),
        test_fraction=t.get("test_fraction", _FLOAT, defaults.test_fraction, _fraction),
        deploy_input=t.get("deploy_input", _INT, None, _pos, nullable=True),
        warm_start=warm,
        warm_start_checkpoint=checkpoint,
    )
    if task.val_fraction + task.test_fraction >= 0.9:
        problems.append(("task.test_fraction", "val_fraction + test_fraction must be < 0.9, "
                         f"got {task.val_fraction} + {task.test_fraction}"))
    t.finish()
    info = (1, 8, 10)
    if dataset in DATASETS:
        from evaluators.training import check_dataset_files, dataset_info

        info = dataset_info(dataset)
        if check_data:
            for msg in check_dataset_files(dataset, data_dir):
                problems.append(("task.data_dir", msg))

    # execution -----------------------------------------------------------------------
    top.read.add("execution")
    e = _Section(raw.get("execution"), "execution", problems)
    execution = ExecutionConfig(
        ray_address=e.get("ray_address", _STR, None, None, nullable=True),
        workers=e.get("workers", _INT, 2, _nonneg),  # 0: in this process, one at a time
        cpus_per_trial=e.get("cpus_per_trial", _FLOAT, 1.0, _pos),
        gpus_per_trial=e.get("gpus_per_trial", _FLOAT, 0.0, _nonneg),
        max_retries=e.get("max_retries", _INT, 1, _nonneg),
        resources_per_trial=_resources(e, "resources_per_trial", problems),
        trial_timeout_s=e.get("trial_timeout_s", _FLOAT, None, _pos, nullable=True),
        max_crashes=e.get("max_crashes", _INT, 3, _pos),
        lease_s=e.get("lease_s", _FLOAT, 60.0, _pos),
    )
    e.finish()

    # strategy / report -----------------------------------------------------------------
    top.read.add("strategy")
    st = _Section(raw.get("strategy"), "strategy", problems)
    strategy = StrategyConfig(
        name=st.get("name", _STR, "flat", in_set(STRATEGIES)),
        hw_grid_max=st.get("hw_grid_max", _INT, StrategyConfig.hw_grid_max, _pos),
        hw_samples=st.get("hw_samples", _INT, StrategyConfig.hw_samples, _pos),
        hw_keep=st.get("hw_keep", _INT, StrategyConfig.hw_keep, _pos),
        rungs=st.get("rungs", _INT, StrategyConfig.rungs, between(1, 6)),
        eta=st.get("eta", _INT, StrategyConfig.eta, at_least(2)),
    )
    st.finish()
    if strategy.rungs > 1 and (task.epochs or task.steps):
        unit = "epochs" if task.epochs is not None else "steps"
        rungs = strategy.rung_budgets(int(task.epochs or task.steps or 1))
        if len(set(rungs)) < len(rungs):
            problems.append(("strategy.rungs", f"{strategy.rungs} rungs of eta "
                             f"{strategy.eta} train {rungs} {unit}: two rungs would train the "
                             f"same budget; raise task.{unit} to at least "
                             f"{strategy.eta ** (strategy.rungs - 1)} or use fewer rungs"))
    top.read.add("report")
    report = _report_section(raw.get("report"), objectives, problems)

    # space ---------------------------------------------------------------------------
    top.read.add("space")
    space = None
    try:
        space = build_space(raw.get("space"), in_channels=info[0], input_hw=info[1],
                            num_classes=info[2], base_dir=base_dir)
    except SpaceError as err:
        problems.extend(err.problems)
    if space is not None and space.template == "fpga":  # its designs have no mm^2 of their own
        if "area_mm2" in objectives:
            problems.append(("objectives", "area_mm2 is 0 on template fpga (a design uses the "
                             "device's DSPs and BRAM, kept within dsp_budget / bram_budget of "
                             "space.accelerator as constraints); drop it"))
        if budgets.area_mm2 is not None:
            problems.append(("constraints.area_mm2", "template fpga has no area; bound its "
                             "resources with space.accelerator.dsp_budget / bram_budget"))

    for k in sorted(set(map(str, raw)) - top.read):
        problems.append((k, f"unknown key; known: {', '.join(sorted(top.read))}"))

    if problems:
        raise ConfigError(source, problems)
    assert space is not None
    resolved = {
        "schema_version": SCHEMA_VERSION,
        # the stored copy never holds a database password (optuna-dashboard shows it)
        "study": {**vars(study), "storage": display_url(study.storage)},
        "objectives": list(objectives),
        "constraints": {k: v for k, v in budgets.to_dict().items() if v is not None},
        "sampler": {"name": sampler.name, **sampler.options},
        "task": {k: v for k, v in task.to_dict().items() if k not in ("seed", "num_threads")},
        "space": space.to_yaml(),
        "execution": dict(vars(execution)),
    }
    if "strategy" in raw:  # absent: flat, and a stored study of an older version matches
        resolved["strategy"] = dict(vars(strategy))
    if "report" in raw:
        resolved["report"] = {"reference": report.reference, "ideal": report.ideal}
    return ExperimentConfig(
        source=source,
        study=study,
        objectives=objectives,
        budgets=budgets,
        sampler=sampler,
        task=task,
        space=space,
        execution=execution,
        resolved=resolved,
        strategy=strategy,
        report=report,
    )


def _report_section(raw: Any, objectives: tuple[str, ...],
                    problems: list[tuple[str, str]]) -> ReportConfig:
    r = _Section(raw, "report", problems)
    points: dict[str, dict[str, float] | None] = {}
    for key in ("reference", "ideal"):
        value = r.raw.get(key)
        r.read.add(key)
        if value is None:
            points[key] = None
            continue
        if not isinstance(value, Mapping):
            problems.append((f"report.{key}", f"expected a mapping objective -> value, "
                             f"got {value!r}"))
            points[key] = None
            continue
        point: dict[str, float] = {}
        for name, v in value.items():
            if name not in objectives:
                problems.append((f"report.{key}.{name}", f"not an objective of this "
                                 f"experiment; objectives: {list(objectives)}"))
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                problems.append((f"report.{key}.{name}", f"expected a number, got {v!r}"))
            else:
                point[name] = float(v)
        points[key] = point
    r.finish()
    ref, ideal = points["reference"], points["ideal"] or {}
    if ref is not None:
        missing = [o for o in objectives if o not in ref]
        if missing:
            problems.append(("report.reference", f"give a value for every objective; "
                             f"missing: {missing}"))
        for name in ref:
            best = ideal.get(name, IDEAL.get(name, 0.0))
            worse = ref[name] < best if OBJECTIVES.get(name) == "maximize" else ref[name] > best
            if name in objectives and not worse:
                problems.append((f"report.reference.{name}", f"must be worse than the ideal "
                                 f"{best:g}, got {ref[name]:g}"))
    return ReportConfig(reference=ref, ideal=ideal)


IDEAL = {"accuracy": 1.0}  # the ideal of an objective report.ideal leaves out (others: 0)
