"""The driver loop: ask -> DesignPoint -> Ray task -> EvalResult -> tell.

The driver is the study's only writer. It keeps at most ``workers`` evaluations in flight as
Ray tasks, tells each result as it arrives, retries an evaluation that crashed (not one that
failed for a deterministic reason such as a diverging loss) up to ``max_retries`` times, and
stops cleanly on Ctrl-C / SIGTERM: finished trials stay, in-flight ones are told FAIL.

**Repeats.** A sampler may propose a design the study has already evaluated (NSGA-II's
crossover on a discrete space does, and so does any sampler resumed with the seed it had).
Such a trial is not evaluated again: it is told with its first trial's values and
constraints and marked ``repeat_of`` (a repeat of a design still being evaluated waits for
it). ``n_trials`` counts distinct designs, so repeats never use up the budget; the report,
plot and export list each design once, with the trials that share it. If the sampler
proposes nothing new ``MAX_REPEAT_STREAK`` times in a row while nothing is running, the run
ends: the space is (nearly) exhausted.

Trial user attributes written here (all prefixed ``codesign.``): ``design`` (the decoded
:class:`DesignPoint`), ``design_key``, ``training_key``, ``hw`` (network totals), ``layers``
(per-layer costs), ``feasible``, ``infeasible_reason``, ``constraint_names`` (the names of
the trial's constraint values, in order), ``trained``, ``cached``, ``input_density`` (each
layer's non-zero input fraction measured in training, which the hardware was priced with),
``train_seconds``, ``hw_seconds``, ``weights`` (path of the trained weights), ``warm_from``
and ``warm_tensors`` (warm start: the source's training key or ``checkpoint``, tensors
loaded), ``driver``, ``attempts``, ``fail_reason``, ``requeued_from``, ``repeat_of``,
``pair_of`` (a pair a nested or decoupled strategy recorded for the network of that trial).

**Strategies** (``strategy:``, :mod:`codesign.strategies`). ``flat``: the sampler proposes
whole designs. ``nested``: it proposes the network half; the driver prices the network on
the accelerator configurations of the space before training (the trial gets the feasible
one of least energy-delay product, or, when none is feasible, the least over budget, and is
then never trained), and after training records the network's non-dominated feasible
configurations as further trials (``pair_of``). ``decoupled``: stage 1 trains the sampler's
networks on the reference accelerator whatever the budgets; once the budget is spent,
stage 2 records the hardware pairs of stage 1's non-dominated networks (no training). With
``nested`` and ``decoupled``, ``n_trials`` counts distinct networks. A session may also stop
at a number of trainings (``RunOptions.max_trainings``, what ``codesign compare`` gives every
strategy).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from codesign.config import ExperimentConfig
from codesign.errors import CodesignError, Interrupted, RunAborted
from codesign.files import own_weights, write_atomic
from codesign.optuna_adapter import (
    add_complete,
    fail_stale,
    new_trial,
    set_constraints,
    set_params,
)
from codesign.report import by_design, constraints_of, minimized, non_dominated
from codesign.report import fidelity as _fidelity
from codesign.strategies import HardwareSolver
from codesign.study import ATTR_TARGET, A, suggest
from evaluators.specs import (
    Budgets,
    DatasetError,
    DesignPoint,
    EvalResult,
    EvaluatorError,
    InfeasibleDesign,
    NetworkSpec,
    TaskSpec,
    TrainingFailed,
)

log = logging.getLogger(__name__)

# proposals in a row of designs already evaluated, with nothing running, that end a run
MAX_REPEAT_STREAK = 20


@dataclass(frozen=True)
class RunOptions:
    """How one driver session runs (may differ between ``run`` and ``resume``).

    Attributes:
        n_trials: distinct finished designs to reach, in total.
        artifacts: the study's weights folder (``codesign.study.artifacts_dir``).
        storage_url: the study's storage, for the commands that messages suggest.
        resume_flags: the options this session was given that ``resume NAME`` would not
            find in the study (``--n-trials``, ``--ray-address``, ``--workers``), for the
            Ctrl-C message.
    """

    n_trials: int
    workers: int
    artifacts: Path
    storage_url: str
    ray_address: str | None = None
    progress: bool = True
    resume_flags: tuple[str, ...] = ()  # what `resume NAME` needs to run as this session did
    max_trainings: int | None = None  # stop once the study has run this many trainings


@dataclass(frozen=True)
class RunSummary:
    """What one session did. ``complete`` counts the study's distinct finished designs;
    ``unmappable_now`` the designs the accelerator cannot run (PRUNED), ``failed_now`` the
    evaluations that failed, ``repeats_now`` the proposals of designs already evaluated
    (told with their first trial's outcome, whatever it was)."""

    complete: int
    failed_now: int
    requeued: int
    trained_now: int
    cache_hits_now: int
    over_budget_now: int
    repeats_now: int
    seconds: float
    unmappable_now: int = 0
    exhausted: bool = False  # stopped early: the sampler proposed only evaluated designs
    nothing_to_do: bool = False  # the study had reached its target before the session
    pairs_now: int = 0  # (network, accelerator) pairs a nested / decoupled strategy recorded


class CacheEntry(NamedTuple):
    """A finished training the study can reuse (``TrainingCache``)."""

    accuracy: float
    weights: str | None  # path of the trained weights
    input_density: dict[str, float]  # each layer's non-zero input fraction, measured


@dataclass
class _Pending:
    trial: optuna.Trial
    design: DesignPoint
    key: str  # training key
    dkey: str  # design key
    hit: CacheEntry | None  # the training this trial reuses (None: it trains)
    attempt: int
    started: float
    warm_from: str | None = None  # training key (or "checkpoint") its weights started from
    points: list[dict[str, Any]] | None = None  # nested: the configurations it was priced on
    rung: int = 0  # successive halving: its rung (else 0, the only one)
    task: TaskSpec | None = None  # the rung's training budget (None: the session's task)
    init: bytes | None = None  # a promotion: the weights of its previous rung
    parent: int | None = None  # a promotion: the trial it continues


def _driver_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(driver: str | None) -> bool:
    """Whether the driver that started a RUNNING trial is still alive (this host only)."""
    if not driver or ":" not in driver:
        return False
    host, pid = driver.rsplit(":", 1)
    if host != socket.gethostname():
        return True  # another host's driver (a shared PostgreSQL study): never touch its trials
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def requeue_stale(study: optuna.Study) -> int:
    """Fail trials left RUNNING by a dead driver and enqueue their designs again.

    Returns:
        The number of trials re-queued.
    """
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _alive(t.user_attrs.get(A + "driver")):
            continue
        reason = ("left RUNNING by a driver that stopped; its design was re-queued" if t.params
                  else "left RUNNING by a driver that stopped before its design was sampled")
        fail_stale(study, t, A + "fail_reason", reason)
        if t.params and A + "promoted_from" not in t.user_attrs:  # a promotion: promoted anew
            study.enqueue_trial(t.params, user_attrs={A + "requeued_from": t.number})
            n += 1
    return n


class TrainingCache:
    """The study is the cache: training key -> ``CacheEntry``."""

    def __init__(self, trials: list[FrozenTrial]) -> None:
        self._entries: dict[str, CacheEntry] = {}
        for t in trials:
            self.add(t.user_attrs)

    def add(self, attrs: dict[str, Any]) -> None:
        """Record a finished training (trial user attributes, ``codesign.``-prefixed). One
        recorded without measured input densities (a study begun by an older version) is not
        reused: its network is trained again, so every trial is priced with its zeros."""
        if (attrs.get(A + "trained") and attrs.get(A + "training_key")
                and attrs.get(A + "input_density")):
            acc = attrs.get(A + "accuracy")
            if acc is not None:
                self._entries[attrs[A + "training_key"]] = CacheEntry(
                    acc, attrs.get(A + "weights"), attrs[A + "input_density"])

    def get(self, key: str) -> CacheEntry | None:
        return self._entries.get(key)


class WarmStarts:
    """Chooses the warm-start weights of each training (``task.warm_start``).

    ``closest``: among the networks this study has trained (weights in its artifacts folder)
    and pruned no more than the new one, the one whose trained state dict shares the most
    weight elements with the new network's fresh module, tensor by tensor, by name and shape
    (ties: the higher validation accuracy, then the earlier training; ``warm_start_score``).
    ``checkpoint``: the file ``task.warm_start_checkpoint`` for every training. ``none``:
    nothing.

    Lifecycle: one per driver session; built from the study's finished trials, told each new
    training with :meth:`add`, asked with :meth:`pick` before a training is dispatched. What
    ``closest`` picks depends on which trainings have finished at that moment, so with more
    than one worker it can differ between two runs of the same study.
    """

    def __init__(self, trials: list[FrozenTrial], cfg: ExperimentConfig,
                 artifacts: Path) -> None:
        self.mode = cfg.task.warm_start
        self._artifacts = artifacts
        self._sources: list[tuple[Any, dict[str, tuple[int, ...]], float]] = []
        self._sources_at: list[tuple[str, Path]] = []  # (training key, weights path) of each
        self._keys: set[str] = set()
        self.checkpoint: bytes | None = None  # mode checkpoint: the file's bytes, read once
        if self.mode == "checkpoint":
            self.checkpoint = _read_checkpoint(cfg.task.warm_start_checkpoint or "")
        if self.mode == "closest":
            for t in trials:
                self.add(t.user_attrs)

    def add(self, attrs: dict[str, Any]) -> None:
        """Record a finished training (trial user attributes, ``codesign.``-prefixed)."""
        if self.mode != "closest" or not attrs.get(A + "trained"):
            return
        design, key = attrs.get(A + "design"), attrs.get(A + "training_key")
        path = own_weights(attrs.get(A + "weights"), self._artifacts, key)  # no other file
        if not (path and design and key) or key in self._keys:
            return
        from evaluators.training.model import state_shapes

        net = DesignPoint.from_dict(design).network
        self._sources.append((net, state_shapes(net), float(attrs.get(A + "accuracy", 0))))
        self._sources_at.append((key, path))
        self._keys.add(key)

    def pick(self, network: Any) -> tuple[bytes | None, str | None]:
        """(weights bytes, where they come from) for training ``network``, or (None, None)."""
        if self.mode == "checkpoint":
            return self.checkpoint, "checkpoint"
        if self.mode != "closest" or not self._sources:
            return None, None
        from evaluators.training.model import closest_source

        best = closest_source(network, self._sources)
        if best is None:
            return None, None
        key, path = self._sources_at[best]
        try:
            return path.read_bytes(), key
        except OSError as e:
            log.warning("warm start: cannot read %s (%s); training from scratch", path, e)
            return None, None


def _read_checkpoint(path: str) -> bytes:
    """The warm-start checkpoint's bytes, checked to be a state dict (nothing in it runs)."""
    from evaluators.specs import SpecError
    from evaluators.training.loop import read_state_dict

    try:
        data = Path(path).read_bytes()
        read_state_dict(data, "the file")
    except (OSError, SpecError) as e:
        raise CodesignError(f"task.warm_start_checkpoint: {path}: {e}") from None
    return data


def objective_values(result: EvalResult, objectives: tuple[str, ...]) -> list[float]:
    table = {"accuracy": result.accuracy, **result.hardware.metrics()}
    return [float(table[o]) for o in objectives]


class _StopFlag:
    """Set by the first SIGINT/SIGTERM; the loop stops at its next safe point.

    A second signal raises ``KeyboardInterrupt`` at once (a forced stop may leave one trial
    RUNNING; ``resume`` fails and re-queues it).
    """

    def __init__(self) -> None:
        self.set = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True


@contextmanager
def _graceful_stop() -> Iterator[_StopFlag]:
    flag = _StopFlag()
    try:
        old = {sig: signal.signal(sig, flag) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: no signal handling
        yield flag
        return
    try:
        yield flag
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def init_ray(address: str | None) -> None:
    """Start a local Ray instance, or connect to the cluster at ``address``."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:
        # Ray 2.60 turns token authentication on for a new local instance (kept) and warns
        # that it did on every start: that warning alone is silenced
        logging.getLogger(_RAY_AUTH_LOGGER).setLevel(logging.ERROR)
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                  logging_level=logging.WARNING)
    try:
        if address:
            import evaluators

            # Ship the evaluators package (workers import nothing else of ours); the nodes
            # need torch, numpy and scikit-learn installed.
            ray.init(address=address, runtime_env={"py_modules": [evaluators]}, **kwargs)
        else:
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise CodesignError(f"ray: cannot connect to {address or 'a local instance'} "
                            f"({str(e).splitlines()[0]})") from None


def _check_resources(cfg: ExperimentConfig, *, local: bool) -> None:
    """Refuse a per-trial request no node can ever meet (Ray would queue it forever)."""
    import ray

    have = ray.cluster_resources()
    need = {"CPU": cfg.execution.cpus_per_trial, "GPU": cfg.execution.gpus_per_trial}
    short = [f"{k.lower()}s_per_trial={v:g} but the {'machine' if local else 'cluster'} has "
             f"{have.get(k, 0):g}" for k, v in need.items() if v > have.get(k, 0)]
    if short:
        msg = "execution: " + "; ".join(short) + " (no trial could ever be scheduled)"
        if local:
            raise CodesignError(msg)
        log.warning("%s; waiting for the cluster to grow", msg)


def _within_budgets(design: DesignPoint, cfg: ExperimentConfig) -> bool:
    """Whether the design meets every budget (the hardware model alone, milliseconds)."""
    from evaluators.evaluate import constraint_values, price

    try:
        report = price(design, cfg.task.deploy_input)
        return all(v <= 0 for v in constraint_values(report, cfg.budgets).values())
    except EvaluatorError:
        return True


def precheck(cfg: ExperimentConfig, *, local: bool) -> None:
    """Before anything is created or started: can the dataset be read (every file, its
    header against its size, with a size limit), is the warm-start checkpoint (if any) a
    readable state dict, and (``local``) can this machine ever run one trial of ``cfg``?

    Raises:
        DatasetFileError, DatasetError: the dataset cannot be read (exit code 2).
        CodesignError: the checkpoint or the resources.
    """
    from evaluators.training import check_dataset_readable

    check_dataset_readable(cfg.task)
    if cfg.task.warm_start == "checkpoint":
        _read_checkpoint(cfg.task.warm_start_checkpoint or "")
    if not local:
        return
    cpus = os.cpu_count() or 1
    if cfg.execution.cpus_per_trial > cpus:
        raise CodesignError(f"execution: cpus_per_trial={cfg.execution.cpus_per_trial:g} but "
                            f"this machine has {cpus} CPUs (no trial could ever be scheduled)")
    if cfg.execution.gpus_per_trial > 0:
        import torch

        gpus = torch.cuda.device_count()
        if cfg.execution.gpus_per_trial > gpus:
            raise CodesignError(f"execution: gpus_per_trial={cfg.execution.gpus_per_trial:g} "
                                f"but this machine has {gpus} GPUs (no trial could ever be "
                                "scheduled)")


class _DatasetUnreadable(Exception):
    """A worker could not read the dataset: every other trial would fail the same way."""


def run_study(study: optuna.Study, cfg: ExperimentConfig, opts: RunOptions) -> RunSummary:
    """Run the driver loop until the study has ``opts.n_trials`` distinct finished designs.

    Raises:
        Interrupted: on Ctrl-C / SIGTERM (after marking in-flight trials failed).
        RunAborted: when failures exceed ``max(10, 2 * n_trials)`` in this session.
        CodesignError: a worker cannot read the dataset (in-flight trials marked failed).
    """
    t_start = time.perf_counter()
    requeued = requeue_stale(study)
    session = _Session(study, cfg, opts)
    if (session.complete >= opts.n_trials and session.promotion(last_round=True) is None
            or session.trainings_spent()):
        if cfg.strategy.name == "decoupled":  # stage 2 of a session stopped before it
            session.stage_two()
        return replace(session.summary(requeued, 0.0), nothing_to_do=True)
    study.set_user_attr(ATTR_TARGET, opts.n_trials)  # the target of the latest session run
    session.connect()
    try:
        session.loop()
        if cfg.strategy.name == "decoupled":
            session.stage_two()
    finally:
        session.close()
    return session.summary(requeued, time.perf_counter() - t_start)


@dataclass
class _Session:
    """One driver session's state; :func:`run_study` is its lifecycle (build, ``connect``,
    ``loop``, ``close``). Methods named after what the loop does: ``fill`` asks trials up to
    the limits, ``start`` dispatches or defers one, ``finish`` tells a returned result,
    ``release`` starts what waited for it."""

    study: optuna.Study
    cfg: ExperimentConfig
    opts: RunOptions
    pending: dict[Any, _Pending] = field(default_factory=dict)  # Ray ref -> evaluation
    # A trial whose network is being trained right now by another trial waits for that
    # training instead of training the same network twice.
    training_now: set[str] = field(default_factory=set)
    deferred: dict[str, list[_Pending]] = field(default_factory=dict)  # training key -> ...
    diverged: dict[str, str] = field(default_factory=dict)  # training key -> where and why
    # design key -> the repeats waiting for the evaluation of that design now running
    evaluating: dict[str, list[_Pending]] = field(default_factory=dict)
    failed: int = 0
    unmappable: int = 0
    trained: int = 0
    hits: int = 0
    over_budget: int = 0
    repeated: int = 0
    exhausted: bool = False
    streak: int = 0  # repeats proposed in a row since the last new design or result
    last_failure: str = ""
    pairs: int = 0
    marks_reached: int = 0  # decoupled: quarters of the budget stage 2 has run at
    networks: set[str] = field(default_factory=set)  # nested/decoupled: trained-for keys

    def __post_init__(self) -> None:
        ended = self.study.get_trials(deepcopy=False,
                                      states=(TrialState.COMPLETE, TrialState.PRUNED))
        done = [t for t in ended if t.state == TrialState.COMPLETE]
        self.cache = TrainingCache(done)
        self.full_dists = self.cfg.space.distributions()
        self.solver = HardwareSolver(self.cfg) if self.cfg.strategy.solves_hardware else None
        # nested / decoupled: the sampler proposes the network half; the driver the rest
        self.dists = (self.cfg.space.network_distributions() if self.solver
                      else self.full_dists)
        # trainings in full-budget units (a successive-halving rung costs its fidelity)
        self.trained_before = sum(_fidelity(t) for t in done if t.user_attrs.get(A + "trained"))
        self.spent = 0.0
        self.training_cost: dict[str, float] = {}  # training key running -> its fidelity
        threads = max(1, int(self.cfg.execution.cpus_per_trial))
        self.task = replace(self.cfg.task, num_threads=threads)
        self.top = self.cfg.strategy.rungs - 1  # successive halving's full-budget rung
        full = self.task.epochs if self.task.epochs is not None else self.task.steps
        self.rung_budgets = self.cfg.strategy.rung_budgets(int(full or 1))
        # decoupled stage 1 looks at no budget: over-budget networks are promoted too
        self.budgets_blind = self.cfg.strategy.name == "decoupled"
        self.rung_done: dict[int, list[FrozenTrial]] = {}  # rung < top -> promotable trials
        for t in done:
            if _fidelity(t) < 1.0 and _promotable(t, self.budgets_blind):
                self.rung_done.setdefault(int(t.user_attrs.get(A + "rung", 0)), []).append(t)
        self.rank_cache: dict[int, tuple[int, list[FrozenTrial]]] = {}
        self.promoted: set[int] = set()
        if self.top > 0:  # a promotion that failed (not for good) is made again
            self.promoted = {int(t.user_attrs[A + "promoted_from"])
                             for t in self.study.get_trials(deepcopy=False)
                             if A + "promoted_from" in t.user_attrs and (
                                 t.state != TrialState.FAIL
                                 or t.user_attrs.get(A + "fail_final"))}
        # design key -> its first trial with a deterministic outcome: finished, unmappable,
        # or (this session) failed for a reason that another evaluation would not change;
        # a finished trial wins over an unmappable one (an older mapper's verdict)
        groups = by_design(ended)
        self.known: dict[str, FrozenTrial] = {
            key: min(g, key=lambda t: (t.state != TrialState.COMPLETE, t.number))
            for key, g in groups.items() if not key.startswith("#")}
        self.complete = sum(any(t.state == TrialState.COMPLETE for t in g)
                            for g in groups.values())
        if self.top > 0:  # successive halving: the designs started (rung 0)
            self.complete = len({t.user_attrs.get(A + "design_key") for t in done
                                 if not t.user_attrs.get(A + "rung")})
        if self.solver is not None:  # distinct networks, not designs
            self.networks = {t.user_attrs.get(A + "training_key", "") for t in done
                             if A + "pair_of" not in t.user_attrs
                             and not t.user_attrs.get(A + "rung")}
            self.complete = len(self.networks)
        self.done_trials = done
        self.max_failures = max(10, 2 * (self.opts.max_trainings or self.opts.n_trials))

    # ---------------------------------------------------------------- lifecycle

    def connect(self) -> None:
        import ray

        from evaluators.evaluate import evaluate

        self.warm = WarmStarts(self.done_trials, self.cfg, self.opts.artifacts)
        init_ray(self.opts.ray_address)
        _check_resources(self.cfg, local=not self.opts.ray_address)
        self.remote = ray.remote(evaluate).options(
            num_cpus=self.cfg.execution.cpus_per_trial,
            num_gpus=self.cfg.execution.gpus_per_trial, max_retries=0,
        )
        self.checkpoint_ref = (None if self.warm.checkpoint is None
                               else ray.put(self.warm.checkpoint))
        self.bar = _progress(self.opts, self.study.study_name, self.complete)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def summary(self, requeued: int, seconds: float) -> RunSummary:
        return RunSummary(complete=self.complete, failed_now=self.failed, requeued=requeued,
                          trained_now=self.trained, cache_hits_now=self.hits,
                          over_budget_now=self.over_budget, repeats_now=self.repeated,
                          seconds=seconds, unmappable_now=self.unmappable,
                          exhausted=self.exhausted, pairs_now=self.pairs)

    def loop(self) -> None:
        import ray

        try:
            with _graceful_stop() as stop:
                while True:
                    if stop.set:
                        raise KeyboardInterrupt
                    self.fill()
                    if not self.pending:
                        if self.failed > self.max_failures and self.complete < self.opts.n_trials:
                            raise RunAborted(
                                f"stopped after {self.failed} failed trials (last: "
                                f"{self.last_failure}); see {self.hint('inspect')} for the "
                                "reasons")
                        break
                    done, _ = ray.wait(list(self.pending), num_returns=1, timeout=0.5)
                    for ref in done:
                        self.finish(ref)
                    if self.bar is not None:
                        self.bar.set_postfix(running=len(self.pending), failed=self.failed,
                                             cached=self.hits, repeats=self.repeated,
                                             refresh=False)
        except KeyboardInterrupt:
            n = self.abandon("interrupted (Ctrl-C or SIGTERM)")
            raise Interrupted(
                f"interrupted: {self.complete} finished designs kept, {n} in-flight trials "
                f"marked failed; continue with {self.hint('resume', *self.opts.resume_flags)}"
            ) from None
        except _DatasetUnreadable as e:
            self.abandon(f"not run: {e}")
            raise CodesignError(f"task.data_dir: a worker cannot read the dataset ({e}); "
                                "the run stopped, as every trial would fail the same way"
                                ) from None
        except RunAborted:
            raise
        except Exception as e:  # the driver itself failed (disk full, storage gone, ...)
            try:
                self.abandon(f"driver error: {type(e).__name__}: {e}")
            except Exception:  # noqa: BLE001 - the storage may be what failed; resume fails
                log.warning("could not mark the in-flight trials failed", exc_info=True)
            raise

    def hint(self, verb: str, *extra: str) -> str:
        """The command that reaches this study, as a message suggests it."""
        return suggest(verb, self.study.study_name, self.opts.storage_url, *extra)

    def abandon(self, reason: str) -> int:
        """Cancel what is in flight and tell every trial not finished FAIL with ``reason``."""
        import ray

        for ref in self.pending:
            ray.cancel(ref, force=True)
        waiting = [q for qs in self.deferred.values() for q in qs]
        waiting += [q for qs in self.evaluating.values() for q in qs]
        trials = [*self.pending.values(), *waiting]
        for p in trials:
            p.trial.set_user_attr(A + "fail_reason", reason)
            self.study.tell(p.trial, state=TrialState.FAIL)
        self.pending.clear()
        self.deferred.clear()
        self.evaluating.clear()
        return len(trials)

    # ---------------------------------------------------------------- asking

    def in_flight(self) -> int:
        """Distinct new designs being evaluated (running, or waiting for their training;
        successive halving: at rung 0)."""
        if self.top > 0:
            return sum(key.endswith("@r0") for key in self.evaluating)
        return len(self.evaluating)

    def fill(self) -> None:
        """While fewer than ``workers`` evaluations run (and trainings are left): promote
        what successive halving promotes, else ask new trials while the distinct designs
        finished and in flight are short of ``n_trials``."""
        while len(self.pending) < self.opts.workers and not self.trainings_spent():
            if self.failed > self.max_failures:
                return
            last = self.complete + self.in_flight() >= self.opts.n_trials
            parent = self.promotion(last_round=last)
            if parent is not None:
                self.promote(parent)
                continue
            if self.complete + self.in_flight() >= self.opts.n_trials:
                return
            if self.streak >= MAX_REPEAT_STREAK:  # ask again once a result has come back
                self.exhausted = not self.pending and not self.evaluating
                return
            trial = self.study.ask(self.dists)
            params, points = trial.params, None
            if self.solver is not None:  # the accelerator half: the driver's
                hw, points = self.hardware_for(trial.number, params)
                set_params(self.study, trial, hw, self.full_dists)
                params = {**params, **hw}
            if self.top > 0:
                points = None  # pairs are recorded at the full budget only
            p = self.pending_for(trial, self.cfg.space.decode(params), 0, points)
            self.admit(p)

    def pending_for(self, trial: optuna.Trial, design: DesignPoint, rung: int,
                    points: list[dict[str, Any]] | None) -> _Pending:
        """The evaluation of ``design`` at ``rung`` as trial ``trial`` (attributes set)."""
        task = self.task_at(rung)
        key, dkey = design.training_key(task), design.design_key()
        if rung < self.top:  # a lower rung's evaluation is not the design's full one
            dkey = f"{dkey}@r{rung}"
        trial.set_user_attr(A + "design", design.to_dict())
        trial.set_user_attr(A + "design_key", dkey)
        trial.set_user_attr(A + "training_key", key)
        trial.set_user_attr(A + "driver", _driver_id())
        if self.top > 0:
            trial.set_user_attr(A + "rung", rung)
            trial.set_user_attr(A + "fidelity", self.fidelity(rung))
        return _Pending(trial, design, key, dkey, self.cache.get(key), 0, time.perf_counter(),
                        points=points, rung=rung, task=task)

    def admit(self, p: _Pending) -> None:
        """Tell a repeat of a known design, wait for one in flight, or start ``p``."""
        dkey = p.dkey
        if dkey in self.known:
            self.tell_repeat(p, self.known[dkey])
            self.streak += 1
        elif dkey in self.evaluating:  # the same design is running: wait for it
            self.evaluating[dkey].append(p)
            self.streak += 1
        else:
            self.streak = 0
            self.evaluating[dkey] = []
            self.start(p)

    def trainings_spent(self) -> bool:
        """Whether the trainings run and running (in full-budget units) reach
        ``max_trainings`` (a running evaluation that will not train, being over budget,
        counts until it returns)."""
        cap = self.opts.max_trainings
        running = sum(self.training_cost.get(k, 1.0) for k in self.training_now)
        return cap is not None and self.trained_before + self.spent + running >= cap - 1e-9

    def task_at(self, rung: int) -> TaskSpec:
        """The session's task at ``rung``'s budget (``StrategyConfig.rung_budgets``)."""
        if rung >= self.top:
            return self.task
        unit = "steps" if self.task.steps is not None else "epochs"
        return replace(self.task, **{unit: self.rung_budgets[rung]})

    def fidelity(self, rung: int) -> float:
        """The fraction of the full training budget ``rung`` trains (what it costs)."""
        return self.rung_budgets[rung] / self.rung_budgets[-1]

    # ---------------------------------------------------------------- successive halving

    def promotion(self, *, last_round: bool = False) -> FrozenTrial | None:
        """The next trial successive halving trains on the next rung: from the highest
        rung down, the best of a rung's not yet promoted trials if it ranks within the
        rung's top ``1 / eta`` (non-dominated rank, then accuracy, then trial number).
        ``last_round`` (no new design will be asked): the top ``1 / eta`` rounded up, so
        that every rung that has a result promotes one."""
        eta = self.cfg.strategy.eta
        for rung in range(self.top - 1, -1, -1):
            done = self.rung_done.get(rung, [])
            quota = -(-len(done) // eta) if last_round else len(done) // eta
            if quota == 0:
                continue
            for t in self.ranked(rung)[:quota]:
                if t.number not in self.promoted:
                    return t
        return None

    def ranked(self, rung: int) -> list[FrozenTrial]:
        """``rung``'s promotable results best first (``_ranked``), ranked again only when
        the rung has a new one (``promotion`` asks at every pass of the loop)."""
        done = self.rung_done.get(rung, [])
        cached = self.rank_cache.get(rung)
        if cached is None or cached[0] != len(done):
            cached = self.rank_cache[rung] = (len(done), _ranked(done, self.cfg))
        return cached[1]

    def promote(self, parent: FrozenTrial) -> None:
        """Evaluate ``parent``'s design on the next rung, from its weights."""
        self.promoted.add(parent.number)
        rung = int(parent.user_attrs.get(A + "rung", 0)) + 1
        # every parameter is the parent's, not the sampler's, and no re-queued design is
        # taken off the queue (Study.ask would)
        trial = new_trial(self.study)
        set_params(self.study, trial, dict(parent.params), self.full_dists)
        root = int(parent.user_attrs.get(A + "rung_root", parent.number))
        trial.set_user_attr(A + "promoted_from", parent.number)
        trial.set_user_attr(A + "rung_root", root)
        design = self.cfg.space.decode(parent.params)
        points = None
        if self.cfg.strategy.name == "nested" and rung == self.top:
            points = self.hardware_points(design.network)
        p = self.pending_for(trial, design, rung, points)
        p.parent = parent.number
        key = parent.user_attrs.get(A + "training_key")
        path = own_weights(parent.user_attrs.get(A + "weights"), self.opts.artifacts, key)
        if path is not None and p.hit is None:
            try:
                p.init, p.warm_from = path.read_bytes(), key
            except OSError as e:
                log.warning("successive halving: cannot read %s (%s); training from "
                            "scratch", path, e)
        self.admit(p)

    def hardware_for(self, number: int, params: dict[str, Any]
                     ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        """The accelerator half of trial ``number`` (network half ``params``): decoupled,
        the reference accelerator; nested, ``HardwareSolver.probe`` over the configurations
        it is priced on (returned with it)."""
        assert self.solver is not None
        space = self.cfg.space
        reference = space.reference_hardware()
        if self.cfg.strategy.name == "decoupled":
            return reference, None
        network = space.decode({**params, **reference}).network
        points = self.hardware_points(network)
        hw, _ = self.solver.probe(network, points)
        return hw, points

    def hardware_points(self, network: NetworkSpec) -> list[dict[str, Any]]:
        """The configurations ``network`` is priced on (``HardwareSolver.points``)."""
        assert self.solver is not None
        return self.solver.points(network)

    def start(self, p: _Pending) -> None:
        if p.hit is None and p.key in self.diverged and _within_budgets(p.design, self.cfg):
            # training this network failed deterministically before: do not train it again
            # (an over-budget design is still dispatched: it is priced, never trained)
            told = self.fail(p, f"not trained: the same network failed in "
                             f"{self.diverged[p.key]}", final=True)
            self.done_with(p, told)
            return
        if p.hit is None:
            if p.key in self.training_now:
                self.deferred.setdefault(p.key, []).append(p)
                return
            self.training_now.add(p.key)
            self.training_cost[p.key] = self.fidelity(p.rung)
        self.dispatch(p)

    def dispatch(self, p: _Pending) -> None:
        warm = self.warm
        if p.init is not None:  # a promotion starts from its previous rung's weights
            init = p.init
        else:
            init, p.warm_from = warm.pick(p.design.network) if p.hit is None else (None, None)
        if init is not None and init is warm.checkpoint:  # the same bytes for every training:
            init = self.checkpoint_ref  # into Ray's object store once, not copied per task
        hit = p.hit
        # decoupled: stage 1 trains its networks whatever the reference accelerator costs
        budgets = Budgets() if self.cfg.strategy.name == "decoupled" else self.cfg.budgets
        ref = self.remote.remote(p.design, p.task or self.task, budgets,
                                 cached_accuracy=hit.accuracy if hit else None,
                                 cached_input_density=hit.input_density if hit else None,
                                 init_state=init)
        self.pending[ref] = p

    # ---------------------------------------------------------------- results

    def finish(self, ref: Any) -> None:
        """Tell the result behind ``ref`` (or retry or fail it) and start what waited."""
        import ray

        p = self.pending.pop(ref)
        self.streak = 0  # the sampler has something new to go on
        told: FrozenTrial | None = None
        try:
            result: EvalResult = ray.get(ref)
            if self.cfg.strategy.name == "decoupled":
                result = _with_budgets(result, self.cfg.budgets)
            told = self.tell(p, result)
            if told.state != TrialState.COMPLETE:
                if A + "fail_reason" not in told.user_attrs:  # a value Optuna refused
                    self.failed += 1
            else:
                new = p.rung == 0 and (self.solver is None or p.key not in self.networks)
                if new:
                    self.complete += 1
                if p.rung == 0:
                    self.networks.add(p.key)
                if p.rung < self.top and _promotable(told, self.budgets_blind):
                    self.rung_done.setdefault(p.rung, []).append(told)
                if result.training is not None:
                    self.spent += self.fidelity(p.rung)
                if p.points is not None and result.feasible:
                    self.record_pairs(told, p.points)
                if (self.cfg.strategy.name == "decoupled" and result.training is not None
                        and self.at_mark()):
                    self.stage_two()
                self.trained += result.training is not None
                self.hits += result.cached
                self.over_budget += not result.feasible
                if self.bar is not None and new:
                    self.bar.update(1)
        except ray.exceptions.RayTaskError as e:
            # the original exception (its message, not Ray's traceback text)
            cause = e.cause if isinstance(e.cause, BaseException) else e
            if isinstance(cause, DatasetError):
                self.fail(p, f"{type(cause).__name__}: {cause}")
                raise _DatasetUnreadable(str(cause)) from None
            if isinstance(cause, InfeasibleDesign):
                told = self.fail(p, f"unmappable: {cause}", TrialState.PRUNED)
            elif isinstance(cause, EvaluatorError):  # deterministic: no retry, no re-run
                told = self.fail(p, f"{type(cause).__name__}: {cause}", final=True)
                if isinstance(cause, TrainingFailed):
                    self.diverged[p.key] = f"trial {p.trial.number} ({cause})"
            elif self.retry(p):
                return
            else:
                told = self.fail(p, f"{type(cause).__name__}: {str(cause).splitlines()[-1]}")
        except ray.exceptions.RayError as e:  # worker died, task lost
            if self.retry(p):
                return
            told = self.fail(p, f"{type(e).__name__}: {str(e).splitlines()[0]}")
        self.release(p)
        self.done_with(p, told)

    def retry(self, p: _Pending) -> bool:
        """Run a crashed evaluation again if it has retries left."""
        if p.attempt >= self.cfg.execution.max_retries:
            return False
        p.attempt += 1
        self.dispatch(p)
        return True

    def release(self, p: _Pending) -> None:
        """``p`` has its final outcome: start the trials that waited for its training."""
        if p.hit is not None:
            return
        self.training_now.discard(p.key)
        for q in self.deferred.pop(p.key, []):
            q.hit = self.cache.get(p.key)
            self.start(q)

    def done_with(self, p: _Pending, told: FrozenTrial | None) -> None:
        """The evaluation of ``p``'s design ended as ``told``: a finished or unmappable
        design is known from now on and its waiting repeats are told so; after a failure
        the first of them evaluates the design again."""
        waiting = self.evaluating.pop(p.dkey, [])
        if told is not None and (told.state != TrialState.FAIL
                                 or told.user_attrs.get(A + "fail_final")):
            self.known[p.dkey] = told  # another evaluation would end the same way
            for q in waiting:
                self.tell_repeat(q, told)
        elif waiting:  # a crash: the design may well run the next time
            first, *rest = waiting
            self.evaluating[p.dkey] = rest
            first.hit = self.cache.get(first.key)
            self.start(first)

    def fail(self, p: _Pending, reason: str, state: TrialState = TrialState.FAIL, *,
             final: bool = False) -> FrozenTrial:
        """Tell ``p`` FAIL (or PRUNED: unmappable) with ``reason``; ``final``: for a reason
        that another evaluation of the same design would meet again (its repeats are told
        so, never evaluated)."""
        p.trial.set_user_attr(A + "fail_reason", reason[:2000])
        p.trial.set_user_attr(A + "attempts", p.attempt + 1)
        if final:
            p.trial.set_user_attr(A + "fail_final", True)
        elif p.parent is not None:  # a promotion that may well run another time
            self.promoted.discard(p.parent)
        told = self.study.tell(p.trial, state=state)
        if state == TrialState.PRUNED:
            self.unmappable += 1
        else:
            self.failed += 1
            self.last_failure = reason
        log.info("trial %d %s: %s", p.trial.number, state.name.lower(), reason)
        return told

    def tell(self, p: _Pending, result: EvalResult) -> FrozenTrial:
        trial = p.trial
        hw = result.hardware.to_dict()
        if "resources" in hw:  # a programmable device's use, kept with the network's figures
            hw["total"]["resources"] = hw["resources"]
        attrs: dict[str, Any] = {
            "feasible": result.feasible,
            "infeasible_reason": result.infeasible_reason,
            "accuracy": result.accuracy,
            "hw": hw["total"],
            "layers": hw["layers"],
            "trained": result.training is not None,
            "cached": result.cached,
            "hw_seconds": result.hw_seconds,
            "attempts": p.attempt + 1,
            "wall_seconds": time.perf_counter() - p.started,
            "constraint_names": list(result.constraints),
        }
        if result.training is not None:
            tr = result.training
            attrs["train_seconds"] = tr.train_seconds
            attrs["train_steps"] = tr.steps
            attrs["train_loss"] = tr.train_loss
            attrs["device"] = tr.device
            attrs["input_density"] = tr.input_density or None
            if p.warm_from is not None:
                attrs["warm_from"] = p.warm_from
                attrs["warm_tensors"] = tr.warm_started_tensors
            if tr.state_dict:
                path = self.opts.artifacts / "weights" / f"{result.training_key}.pt"
                if not path.exists():
                    write_atomic(path, tr.state_dict)
                attrs["weights"] = str(path)
        elif p.hit is not None:  # priced with the cached training's zeros
            if result.cached:
                attrs["weights"] = p.hit.weights
            attrs["input_density"] = p.hit.input_density
        for k, v in attrs.items():
            trial.set_user_attr(A + k, v)
        values = list(result.constraints.values())
        if not all(math.isfinite(v) for v in values):  # Optuna's samplers refuse NaN
            return self.fail(p, f"constraint values are not finite: {result.constraints}",
                             final=True)
        set_constraints(self.study, trial, values)
        told = self.study.tell(trial, objective_values(result, self.cfg.objectives))
        if told.state == TrialState.COMPLETE:
            done = {A + k: v for k, v in attrs.items()} | {A + "training_key": p.key,
                                                            A + "design": p.design.to_dict()}
            self.cache.add(done)
            self.warm.add(done)
        return told

    def tell_repeat(self, p: _Pending, first: FrozenTrial) -> None:
        """Tell ``p`` (a repeat of the design of trial ``first``) with ``first``'s outcome,
        without evaluating anything."""
        trial = p.trial
        trial.set_user_attr(A + "repeat_of", first.number)
        self.repeated += 1
        if first.state != TrialState.COMPLETE:  # unmappable, or failed for good
            trial.set_user_attr(A + "fail_reason", first.user_attrs.get(A + "fail_reason", ""))
            self.study.tell(trial, state=first.state)
            return
        for k in ("feasible", "infeasible_reason", "accuracy", "hw", "layers",
                  "input_density", "weights"):
            if A + k in first.user_attrs:
                trial.set_user_attr(A + k, first.user_attrs[A + k])
        trial.set_user_attr(A + "trained", False)
        trial.set_user_attr(A + "cached", False)
        named = constraints_of(first)
        trial.set_user_attr(A + "constraint_names", list(named))
        set_constraints(self.study, trial, list(named.values()))
        self.study.tell(trial, list(first.values))


    # ---------------------------------------------------------------- hardware pairs

    def record_pairs(self, told: FrozenTrial, points: list[dict[str, Any]]) -> None:
        """Record the pairs of ``told``'s network (its accuracy, its measured input
        densities) on ``points``, except designs the study has already."""
        assert self.solver is not None
        attrs = told.user_attrs
        net_params = {k: v for k, v in told.params.items() if k in self.dists}
        network = DesignPoint.from_dict(attrs[A + "design"]).network
        density = attrs.get(A + "input_density")
        accuracy = float(attrs[A + "accuracy"])
        for pair in self.solver.front(network, density, points, net_params):
            dkey = pair.design.design_key()
            if dkey in self.known or dkey in self.evaluating:
                continue
            hw = pair.report.to_dict()
            if "resources" in hw:  # a programmable device's use, as tell keeps it
                hw["total"]["resources"] = hw["resources"]
            user = {A + k: v for k, v in {
                "design": pair.design.to_dict(), "design_key": dkey,
                "training_key": attrs.get(A + "training_key"), "feasible": True,
                "infeasible_reason": None, "accuracy": accuracy, "hw": hw["total"],
                "layers": hw["layers"], "trained": False, "cached": False,
                "input_density": density, "weights": attrs.get(A + "weights"),
                "constraint_names": list(pair.constraints), "pair_of": told.number,
                "driver": _driver_id()}.items() if v is not None}
            table = {"accuracy": accuracy, **pair.report.metrics()}
            params = {**net_params, **pair.hw_params}
            added = add_complete(
                self.study, params=params,
                distributions={k: self.full_dists[k] for k in params},
                values=[float(table[o]) for o in self.cfg.objectives],
                constraints=list(pair.constraints.values()), user_attrs=user)
            self.known[dkey] = added
            self.pairs += 1

    def at_mark(self) -> bool:
        """Decoupled: whether stage 1 has just reached another quarter of its budget
        (``max_trainings``, in full trainings, else ``n_trials`` networks)."""
        if self.opts.max_trainings is not None:
            budget, spent = self.opts.max_trainings, self.trained_before + self.spent
        else:
            budget, spent = self.opts.n_trials, self.complete
        reached = sum(spent >= math.ceil(q * budget) - 1e-9 for q in (0.25, 0.5, 0.75, 1.0))
        if reached > self.marks_reached:
            self.marks_reached = reached
            return True
        return False

    def stage_two(self) -> None:
        """Decoupled stage 2: the pairs of every network that no other trained one
        dominates on the objectives at the reference accelerator (budgets aside: stage 1
        never looked at them), each network once. Run at each quarter of the budget
        (``at_mark``) and at the end, so that the study holds at every quarter what a
        decoupled search of that budget finds (and the pairs of networks later dominated
        at the reference: no training, and in the baseline's favour)."""
        assert self.solver is not None
        done_key = A + "stage_two_done"
        done = set(self.study.user_attrs.get(done_key, []))
        trained = [t for t in self.study.get_trials(deepcopy=False,
                                                    states=(TrialState.COMPLETE,))
                   if t.user_attrs.get(A + "trained") and _fidelity(t) >= 1.0]
        if not trained:
            return
        for i in non_dominated(minimized(trained, self.cfg.directions)):
            t = trained[int(i)]
            key = t.user_attrs.get(A + "training_key")
            if key in done:
                continue
            network = DesignPoint.from_dict(t.user_attrs[A + "design"]).network
            self.record_pairs(t, self.hardware_points(network))
            done.add(key)
            self.study.set_user_attr(done_key, sorted(done))


def _promotable(t: FrozenTrial, budgets_blind: bool = False) -> bool:
    """A lower-rung result successive halving may promote: with a trained (or cached)
    accuracy, within every budget unless ``budgets_blind`` (decoupled stage 1)."""
    within = budgets_blind or all(v <= 0 for v in t.constraints.values())
    return within and (bool(t.user_attrs.get(A + "trained"))
                       or bool(t.user_attrs.get(A + "cached")))


def _ranked(trials: list[FrozenTrial], cfg: ExperimentConfig) -> list[FrozenTrial]:
    """``trials`` best first: by non-dominated rank on the objectives, then accuracy (when
    it is one), then trial number."""
    rest = list(range(len(trials)))
    values = minimized(trials, cfg.directions)
    rank = [0] * len(trials)
    level = 0
    while rest:
        front = [rest[i] for i in non_dominated(values[rest], keep_ties=True)]
        for i in front:
            rank[i] = level
        rest = [i for i in rest if i not in set(front)]
        level += 1
    acc = cfg.objectives.index("accuracy") if "accuracy" in cfg.objectives else None
    return [trials[i] for i in sorted(
        range(len(trials)),
        key=lambda i: (rank[i], -trials[i].values[acc] if acc is not None else 0.0,
                       trials[i].number))]


def _with_budgets(result: EvalResult, budgets: Budgets) -> EvalResult:
    """A result priced and trained without budgets (decoupled stage 1), with its
    constraints and feasibility against ``budgets``."""
    from evaluators.evaluate import constraint_values, violation

    constraints = constraint_values(result.hardware, budgets)
    violated = [k for k, v in constraints.items() if v > 0]
    reason = ", ".join(violation(result.hardware, budgets, k) for k in violated) or None
    return replace(result, constraints=constraints, feasible=not violated,
                   infeasible_reason=reason)


def _progress(opts: RunOptions, name: str, initial: int) -> Any:
    if not opts.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=opts.n_trials, initial=initial, desc=name, unit="design",
                file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
