"""The driver session: ask -> DesignPoint -> executor -> EvalResult -> tell.

The driver is the study's writer for its own trials. The scheduler
(:mod:`codesign.driver.scheduler`, pure) decides what starts, waits, repeats, is retried
or fails; the executor (:mod:`codesign.driver.executor`: Ray tasks, or this process with
``workers: 0``) runs evaluations; this module joins them to the study. At most ``workers``
trials are in flight, those waiting for a training or for another driver included. An
evaluation that crashed (its worker or node died, not a deterministic failure such as a
diverging loss) is retried up to ``max_retries`` times; one that runs past
``execution.trial_timeout_s`` is cancelled and failed for good; Ctrl-C / SIGTERM stops
cleanly: finished trials stay, in-flight ones are told FAIL.

**One write per step.** A trial's attributes and claims are written in one transaction when
it starts, and its result (attributes, constraints, values, state, claims released) in one
when it ends (``optuna_adapter.write_trial``): a driver killed at any moment leaves each
trial RUNNING or finished, never half-told; ``resume`` fails and re-queues what a dead
driver left RUNNING, except a design left unfinished ``execution.max_crashes`` times.

**Several drivers, one study** (a PostgreSQL server, or a journal or SQLite file several
processes reach). The study holds *claims* (``optuna_adapter.claim``: a compare-and-swap
on the storage): one of the study's ``n_trials`` *seats* per new design, its design, its
network's training. A driver never evaluates a design or trains a network another one
holds: it waits for that outcome and reuses it (a repeat, a cache hit). Claims of a dead
driver, or of a trial no longer running, are taken over. ``n_trials`` is the study's
target: every driver stops when the study has it. Each driver's sampler has its own
stream (``driver_slot``).

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
``pair_of`` (a pair a nested or decoupled strategy recorded for the network of that trial),
``node`` (the Ray node that evaluated it).

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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from codesign.config import ExperimentConfig
from codesign.driver.executor import EvalRequest, InProcessExecutor, Outcome, RayExecutor
from codesign.driver.lease import Heartbeat, beats, lapsed
from codesign.driver.scheduler import Action, Scheduler
from codesign.errors import CodesignError, Interrupted, RunAborted
from codesign.files import own_weights, write_atomic
from codesign.optuna_adapter import (
    LEGACY_CONSTRAINTS_KEY,
    add_complete,
    ask_as,
    claim,
    claim_many,
    claims,
    fail_stale,
    new_trial,
    release,
    set_params,
    write_trial,
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
    # where evaluations run (``codesign.driver.executor``); None: Ray (``workers`` >= 1) or
    # this process (``workers`` 0). Given by tests and benchmarks.
    executor: Any = None


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
    claims: list[str] = field(default_factory=list)  # study claims it holds (released told)
    seatless: bool = False  # waits for a seat of the study's target (``claim_design``)
    node: str | None = None  # the Ray node that evaluated it
    unwritten: dict[str, Any] = field(default_factory=dict)  # attributes not yet stored


def _driver_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# The driver sessions running in this process (``_Session.session``): a trial of this
# process's pid is alive while its session is (library users may run several at once).
_LIVE_SESSIONS: set[str] = set()


def _alive(driver: str | None, session: str | None = None,
           beats: dict[str, dict[str, Any]] | None = None) -> bool:
    """Whether the driver that started a RUNNING trial is still alive: on this host, its
    process is; on any host, its lease has not lapsed (``beats``: the study's, see
    :mod:`codesign.driver.lease`; a driver of another host without a beat counts as alive).
    ``session``: the trial's session, which tells the live sessions of this process from
    those of an earlier run in it."""
    if not driver or ":" not in driver:
        return False
    if beats is not None and driver != _driver_id() and lapsed(beats.get(driver)):
        return False
    host, pid = driver.rsplit(":", 1)
    if host != socket.gethostname():
        return True  # another host's driver: alive while its lease holds
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return session in _LIVE_SESSIONS
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# a RUNNING trial with no driver on record yet is being set up by a driver (asked, its
# attributes written with its claims a moment later) for at most this long
_SETUP_S = 30.0


def _being_started(t: FrozenTrial) -> bool:
    """Whether ``t`` was just asked by a driver that has not written its name yet."""
    if A + "driver" in t.user_attrs or t.datetime_start is None:
        return False
    import datetime as _dt

    return (_dt.datetime.now() - t.datetime_start).total_seconds() < _SETUP_S


def _gone(holder: dict[str, Any], beats: dict[str, dict[str, Any]] | None = None) -> bool:
    """Whether the driver of a claim that names no trial (a driver slot, a promotion) is
    gone; a claim of this process stays (another session of it may hold it)."""
    return (holder.get("driver") != _driver_id()
            and not _alive(holder.get("driver"), beats=beats))


def driver_slot(study: optuna.Study) -> int:
    """Claim the lowest driver slot of ``study`` that no live driver holds (0 for a study
    with one driver): what tells several drivers' sampler streams apart. Released by
    ``release_driver_slot``."""
    me = {"driver": _driver_id(), "session": uuid.uuid4().hex}
    held = beats(study)
    for slot in range(1024):
        if claim(study, f"driver:{slot}", me, lambda h: _gone(h, held)) is None:
            return slot
    return 1024


def release_driver_slot(study: optuna.Study, slot: int) -> None:
    """Give up the slot ``driver_slot`` took."""
    release(study, [f"driver:{slot}"])


def requeue_stale(study: optuna.Study, max_crashes: int = 3) -> int:
    """Fail trials left RUNNING by a dead driver and enqueue their designs again, unless
    the design's evaluation was already left unfinished ``max_crashes`` times (its worker
    or its driver died each time: it is then failed for good).

    Returns:
        The number of trials re-queued.
    """
    n = 0
    held = beats(study)
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if not _alive(t.user_attrs.get(A + "driver"), t.user_attrs.get(A + "session"),
                           held)
             and not _being_started(t)]
    if not stale:
        _release_orphan_claims(study)
        return 0
    crashes: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if _UNFINISHED in str(t.user_attrs.get(A + "fail_reason", "")):
            key = t.user_attrs.get(A + "design_key")
            if key:
                crashes[key] = crashes.get(key, 0) + 1
    for t in stale:
        try:
            n += _requeue_one(study, t, crashes, max_crashes)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another driver starting beside this one failed it first
    _release_orphan_claims(study)
    return n


def _requeue_one(study: optuna.Study, t: FrozenTrial, crashes: dict[str, int],
                 max_crashes: int) -> int:
    """Fail one stale trial and re-queue its design (``requeue_stale``); 1 if re-queued."""
    n = 0
    params = t.params or t.system_attrs.get("fixed_params")  # popped, not yet sampled
    key = t.user_attrs.get(A + "design_key")
    seen = crashes.get(key, 0) + 1 if key else 1
    if key:
        crashes[key] = seen
    if not params:
        fail_stale(study, t, A + "fail_reason", f"{_UNFINISHED} before its design was "
                   "sampled")
    elif seen >= max_crashes:
        fail_stale(study, t, A + "fail_reason",
                   f"{_UNFINISHED} {seen} times (execution.max_crashes={max_crashes}); "
                   "not re-queued again")
    else:
        fail_stale(study, t, A + "fail_reason", f"{_UNFINISHED}; its design was "
                   "re-queued")
        if A + "promoted_from" not in t.user_attrs:  # a promotion: promoted anew
            study.enqueue_trial(params, user_attrs={A + "requeued_from": t.number})
            n += 1
    return n


def _release_orphan_claims(study: optuna.Study) -> None:
    """Give up the claims (seats, designs, networks) still held for trials that are no
    longer running: a driver killed while it evaluated them could not."""
    held = {name: h for name, h in claims(study).items()
            if not h.get("final") and isinstance(h.get("trial"), int) and h["trial"] >= 0}
    if not held:
        return
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    orphans = {name: h for name, h in held.items() if h["trial"] not in running}
    if orphans:
        release(study, list(orphans), expect=orphans)  # unless taken or settled meanwhile


_UNFINISHED = "left RUNNING by a driver that stopped"


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


def connect_ray(cfg: ExperimentConfig, address: str | None) -> None:
    """Start a private local Ray instance (``address`` None) or join the cluster at
    ``address`` (``codesign.driver.ray_connect.connect``), checking that some node can run
    one trial of ``cfg``; nothing when Ray is already initialised in this process.

    Raises:
        CodesignError: one line saying what failed (unreachable, authentication, versions,
            a trial no node can run).
    """
    import ray

    from codesign.driver.ray_connect import connect, trial_request

    if ray.is_initialized():
        return
    ex = cfg.execution
    connect(address, request=trial_request(ex.cpus_per_trial, ex.gpus_per_trial,
                                           ex.resources_per_trial))


def _within_budgets(design: DesignPoint, cfg: ExperimentConfig) -> bool:
    """Whether the design meets every budget (the hardware model alone, milliseconds)."""
    from evaluators.evaluate import constraint_values, price

    try:
        report = price(design, cfg.task.deploy_input)
        return all(v <= 0 for v in constraint_values(report, cfg.budgets).values())
    except EvaluatorError:
        return True


def precheck(cfg: ExperimentConfig, *, local: bool, ray_address: str | None = None) -> None:
    """Before anything is created or started: can the dataset be read (every file, its
    header against its size, with a size limit), is the warm-start checkpoint (if any) a
    readable state dict, and can one trial of ``cfg`` ever run: (``local``) on this
    machine, else on the cluster at ``ray_address`` (joined here, so that a cluster that
    cannot be reached leaves nothing behind; the session then uses that connection).

    Raises:
        DatasetFileError, DatasetError: the dataset cannot be read (exit code 2).
        CodesignError: the checkpoint, the connection or the resources.
    """
    from evaluators.training import check_dataset_readable

    check_dataset_readable(cfg.task)
    if cfg.task.warm_start == "checkpoint":
        _read_checkpoint(cfg.task.warm_start_checkpoint or "")
    address = ray_address or cfg.execution.ray_address
    if not local:
        if address:
            connect_ray(cfg, address)
        return
    if cfg.execution.resources_per_trial:
        names = ", ".join(sorted(cfg.execution.resources_per_trial))
        raise CodesignError(f"execution.resources_per_trial: a local run's node has no "
                            f"custom resources ({names}); run on a cluster whose nodes "
                            "declare them (`ray start --resources ...`) with --ray-address")
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
    """Run the driver loop until the study has ``opts.n_trials`` distinct finished designs
    (the study's, whichever driver finished them).

    Raises:
        Interrupted: on Ctrl-C / SIGTERM (after marking in-flight trials failed).
        RunAborted: when failures exceed ``max(10, 2 * n_trials)`` in this session.
        CodesignError: a worker cannot read the dataset (in-flight trials marked failed).
    """
    t_start = time.perf_counter()
    requeued = requeue_stale(study, cfg.execution.max_crashes)
    session = _Session(study, cfg, opts)
    if (session.complete >= opts.n_trials and session.promotion(last_round=True) is None
            or session.trainings_spent()):
        if cfg.strategy.name == "decoupled":  # stage 2 of a session stopped before it
            session.stage_two()
        return replace(session.summary(requeued, 0.0), nothing_to_do=True)
    study.set_user_attr(ATTR_TARGET, opts.n_trials)  # the target of the latest session run
    heartbeat = Heartbeat(study, session.driver, cfg.execution.lease_s)
    heartbeat.start()
    _LIVE_SESSIONS.add(session.session)
    try:
        session.connect()
        session.loop()
        if cfg.strategy.name == "decoupled":
            session.stage_two()
    finally:
        session.close()
        _LIVE_SESSIONS.discard(session.session)
        heartbeat.stop()
    return session.summary(requeued, time.perf_counter() - t_start)


# how often (seconds) a session reads what other drivers of its study have finished
REFRESH_S = 1.0


@dataclass
class _Session:
    """One driver session's state; :func:`run_study` is its lifecycle (build, ``connect``,
    ``loop``, ``close``). The :class:`~codesign.driver.scheduler.Scheduler` decides what
    starts, waits, repeats or fails; the executor runs evaluations; this class does the
    study's reads and writes (one write per trial step: ``optuna_adapter.write_trial``) and
    the claims that keep two drivers of one study off the same design and network.
    Methods named after what the loop does: ``fill`` asks trials up to the limits,
    ``carry_out`` performs the scheduler's actions, ``finish`` tells a returned result,
    ``refresh`` reads other drivers' results."""

    study: optuna.Study
    cfg: ExperimentConfig
    opts: RunOptions
    handles: dict[int, _Pending] = field(default_factory=dict)  # executor handle -> job
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
    bar: Any = None
    executor: Any = None
    warm: WarmStarts | None = None  # made by ``connect``

    def __post_init__(self) -> None:
        self.driver = _driver_id()
        self.session = uuid.uuid4().hex  # several sessions may share one process (the API)
        self.live: set[int] = set()  # this session's trials not yet told
        self.stale_holders: set[tuple[Any, Any]] = set()  # (session, trial) found stale
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
        known = {key: min(g, key=lambda t: (t.state != TrialState.COMPLETE, t.number))
                 for key, g in groups.items() if not key.startswith("#")}
        self.sched = Scheduler(
            workers=max(1, self.opts.workers), max_retries=self.cfg.execution.max_retries,
            hit_for=self.cache.get, within_budgets=lambda p: _within_budgets(p.design,
                                                                              self.cfg),
            claim_design=self.claim_design, claim_training=self.claim_training,
            known=known)
        self.counted: set[str] = set()  # what ``complete`` counts (``_counts_as``)
        self.seen: set[int] = set()  # trials whose results this session has taken in
        for t in ended:
            self.take_in(t, own=False, startup=True)
        self.done_trials = done
        self.last_refresh = self.last_sweep = time.perf_counter()
        self.beats = beats(self.study)  # the drivers' leases, as of the last ``refresh``
        self.others: dict[str, dict[str, Any]] = {}  # other drivers' design claims
        # the study's seats (``claim_design``): n_trials less the designs finished before
        # seats existed (by an older codesign)
        final_seats = sum(bool(h.get("final")) for h in claims(self.study, "seat:").values())
        self.seat_limit = self.opts.n_trials - max(0, self.complete - final_seats)
        self.max_failures = max(10, 2 * (self.opts.max_trainings or self.opts.n_trials))

    @property
    def complete(self) -> int:
        return len(self.counted)

    def _counts_as(self, t: FrozenTrial) -> str | None:
        """What a finished trial adds to the study's count of distinct finished designs
        (``n_trials``): its design; with successive halving, its design at rung 0; with
        nested or decoupled, its network (a recorded pair adds nothing)."""
        if t.state != TrialState.COMPLETE:
            return None
        attrs = t.user_attrs
        if self.solver is not None:
            if A + "pair_of" in attrs or attrs.get(A + "rung"):
                return None
            return attrs.get(A + "training_key") or f"#{t.number}"
        if self.top > 0 and attrs.get(A + "rung"):
            return None
        return attrs.get(A + "design_key") or f"#{t.number}"

    def take_in(self, t: FrozenTrial, *, own: bool, startup: bool = False) -> bool:
        """Account for a finished trial (this session's ``own``, or found in the study);
        returns whether it is a new distinct design."""
        if t.number in self.seen:
            return False
        self.seen.add(t.number)
        attrs = t.user_attrs
        if t.state == TrialState.COMPLETE:
            if not startup and not own:
                self.cache.add(attrs)
                if self.warm is not None:  # (refresh runs once connected)
                    self.warm.add(attrs)
            rung = int(attrs.get(A + "rung", 0))
            if self.solver is not None and A + "pair_of" not in attrs and not rung:
                self.networks.add(attrs.get(A + "training_key", ""))
            if rung < self.top and _fidelity(t) < 1.0 and _promotable(t, self.budgets_blind):
                self.rung_done.setdefault(rung, []).append(t)
            if not own and not startup and attrs.get(A + "trained"):
                self.trained_before += _fidelity(t)
        if not own and not startup:
            dkey = attrs.get(A + "design_key")
            if dkey and (t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                         or attrs.get(A + "fail_final")):
                self.sched.learn(dkey, t)
        key = self._counts_as(t)
        if key is None or key in self.counted:
            return False
        self.counted.add(key)
        return True

    # ---------------------------------------------------------------- claims

    def _stale(self, holder: dict[str, Any]) -> bool:
        """Whether a claim's holder may be replaced: its trial is no longer running or its
        driver (on this host) is gone."""
        if holder.get("final"):
            return False  # the design or network has its outcome (in the trial it names)
        if holder.get("session") == self.session:
            return holder.get("trial") not in self.live
        if not _alive(holder.get("driver"), holder.get("session"), self.beats):
            return True
        number = holder.get("trial")
        if not isinstance(number, int) or number < 0:
            return not isinstance(number, int)
        try:
            trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(
                self.study._study_id, number)
            return self.study._storage.get_trial(trial_id).state != TrialState.RUNNING
        except KeyError:
            return True

    def driver_attrs(self) -> dict[str, Any]:
        """What a trial of this session carries from its creation: who runs it."""
        return {A + "driver": self.driver, A + "session": self.session}

    def holder(self, p: _Pending) -> dict[str, Any]:
        return {"trial": p.trial.number, "driver": self.driver, "session": self.session}

    def _stale_cached(self, holder: dict[str, Any]) -> bool:
        """``_stale``, remembered per (session, trial): a stale holder stays stale."""
        key = (holder.get("session"), holder.get("trial"))
        if key in self.stale_holders:
            return True
        if self._stale(holder):
            self.stale_holders.add(key)
            return True
        return False

    def _claim(self, p: _Pending, name: str) -> bool:
        """``p`` holds the claim ``name``: taken with its first write (``admit``), else
        now (a holder found stale is replaced)."""
        if name in p.claims:
            return True
        got = claim(self.study, name, self.holder(p), self._stale) is None
        if got:
            p.claims.append(name)
        return got

    def settled(self, p: _Pending, *, design: bool, training: bool,
                seat: bool = False) -> dict[str, Any]:
        """The claims of ``p`` that stay once it is told, naming its trial as the final
        outcome: its design's (finished or unmappable), its network's (trained), its seat
        (finished: it counts towards ``n_trials``); others are released."""
        final = {"trial": p.trial.number, "final": True}
        return {c: final for c in p.claims
                if (design and c.startswith("design:"))
                or (training and c.startswith("training:"))
                or (seat and c.startswith("seat:"))}

    def claim_design(self, p: _Pending) -> bool:
        """Claim ``p``'s design, and, for a new design of the study's count (rung 0), one of
        the study's ``n_trials`` seats first: two drivers never start more designs than the
        study's target (a seat is settled when its design finishes, given up when it fails).
        """
        countable = p.parent is None
        if countable and not any(c.startswith("seat:") for c in p.claims) and not (
                self.take_seat(p)):
            p.seatless = True
            release(self.study, p.claims)  # nothing held while it waits for a seat
            p.claims = []
            return False
        p.seatless = False
        if self._claim(p, "design:" + p.dkey):
            return True
        release(self.study, p.claims)  # its seat, and its network if it was taken with it
        p.claims = []
        return False

    def free_seat(self) -> str | None:
        """The lowest seat below ``seat_limit`` nobody holds (one read; ``take_seat``
        looks at stale holders)."""
        held = claims(self.study, "seat:")
        return next((f"seat:{i}" for i in range(self.seat_limit)
                     if f"seat:{i}" not in held), None)

    def take_seat(self, p: _Pending) -> bool:
        """Claim the lowest free seat below ``seat_limit`` for ``p`` (one read, one write
        when nothing races)."""
        held = claims(self.study, "seat:")
        for i in range(self.seat_limit):
            h = held.get(f"seat:{i}")
            if h is None or (not h.get("final") and self._stale(h)):
                if self._claim(p, f"seat:{i}"):
                    return True
        return False

    def claim_training(self, p: _Pending) -> bool:
        return self._claim(p, "training:" + p.key)

    # ---------------------------------------------------------------- lifecycle

    def connect(self) -> None:
        self.warm = WarmStarts(self.done_trials, self.cfg, self.opts.artifacts)
        ex = self.cfg.execution
        if self.opts.executor is not None:
            self.executor = self.opts.executor
        elif self.opts.workers == 0:  # in this process, one evaluation at a time
            self.executor = InProcessExecutor(timeout_s=ex.trial_timeout_s)
        else:
            from codesign.driver.ray_connect import task_options

            connect_ray(self.cfg, self.opts.ray_address)
            self.executor = RayExecutor(task_options(ex.cpus_per_trial, ex.gpus_per_trial,
                                                     ex.resources_per_trial),
                                        timeout_s=ex.trial_timeout_s)
        self.checkpoint_ref = (None if self.warm.checkpoint is None
                               else self.executor.share(self.warm.checkpoint))
        self.bar = _progress(self.opts, self.study.study_name, self.complete)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.executor is not None:
            self.executor.close()

    def summary(self, requeued: int, seconds: float) -> RunSummary:
        return RunSummary(complete=self.complete, failed_now=self.failed, requeued=requeued,
                          trained_now=self.trained, cache_hits_now=self.hits,
                          over_budget_now=self.over_budget, repeats_now=self.repeated,
                          seconds=seconds, unmappable_now=self.unmappable,
                          exhausted=self.exhausted, pairs_now=self.pairs)

    def loop(self) -> None:
        try:
            with _graceful_stop() as stop:
                while True:
                    if stop.set:
                        raise KeyboardInterrupt
                    self.refresh()
                    self.fill()
                    if self.sched.idle():
                        if self.failed > self.max_failures and self.complete < self.opts.n_trials:
                            raise RunAborted(
                                f"stopped after {self.failed} failed trials (last: "
                                f"{self.last_failure}); see {self.hint('inspect')} for the "
                                "reasons")
                        if (self.complete < self.opts.n_trials and not self.exhausted
                                and not self.trainings_spent()):
                            had = bool(self.others)
                            if self.others_busy():
                                time.sleep(0.2)  # other drivers may still reach the target
                                self.refresh(force=True)
                                continue
                            if had:  # their designs died with them: ask again
                                continue
                        break
                    if not self.handles:  # only waiting for other drivers
                        if self.complete >= self.opts.n_trials:
                            self.drop_seatless()
                            if self.sched.idle():
                                continue
                        time.sleep(min(REFRESH_S, 0.2))
                        self.refresh(force=True)
                        continue
                    for outcome in self.executor.wait(0.5):
                        self.finish(outcome)
                    if self.bar is not None:
                        self.bar.set_postfix(running=len(self.handles), failed=self.failed,
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

    def refresh(self, *, force: bool = False) -> None:
        """Take in what other drivers of the study finished since the last look (at most
        every ``REFRESH_S``), and let the jobs that waited for them go on."""
        now = time.perf_counter()
        if not force and now - self.last_refresh < REFRESH_S:
            return
        self.last_refresh = now
        new = False
        for t in self.study.get_trials(deepcopy=False, states=(
                TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
            if t.number not in self.seen and (t.state != TrialState.FAIL
                                              or t.user_attrs.get(A + "fail_final")):
                new = self.take_in(t, own=False) or new
        if new and self.bar is not None:
            self.bar.n = self.complete
            self.bar.refresh()
        self.beats = beats(self.study)  # a row per driver (not every seat and network claim)
        if (now - self.last_sweep > self.cfg.execution.lease_s / 2
                and any(lapsed(b) for b in self.beats.values())):
            self.last_sweep = now  # a driver's lease lapsed: its trials are failed, re-queued
            requeue_stale(self.study, self.cfg.execution.max_crashes)
        self.others = {name: h for name, h in claims(self.study, "design:").items()
                       if not h.get("final")
                       and h.get("session") != self.session and not self._stale_cached(h)}
        self.carry_out(self.sched.poll())

    def drop_seatless(self) -> None:
        """The study reached its target while jobs waited for a seat (other drivers filled
        them): fail those jobs, never run."""
        waiting, self.sched.foreign_design = self.sched.foreign_design, []
        for p in waiting:
            if p.seatless:
                self.fail(p, "not run: the study reached its target (n_trials) with other "
                             "drivers' designs")
            else:
                self.sched.foreign_design.append(p)

    def others_in_flight(self) -> int:
        """Distinct new designs other drivers of the study are evaluating (their claims, as
        of the last ``refresh``; successive halving: at rung 0)."""
        if self.top > 0:
            return sum(name.endswith("@r0") for name in self.others)
        return len(self.others)

    def others_busy(self) -> bool:
        """Whether another live driver is still evaluating a design of the study."""
        self.others = {n: h for n, h in self.others.items() if not self._stale(h)}
        return bool(self.others)

    def hint(self, verb: str, *extra: str) -> str:
        """The command that reaches this study, as a message suggests it."""
        return suggest(verb, self.study.study_name, self.opts.storage_url, *extra)

    def abandon(self, reason: str) -> int:
        """Cancel what is in flight and tell every trial not finished FAIL with ``reason``."""
        if self.executor is not None:
            self.executor.close()
        trials = [*self.handles.values(), *self.sched.drain()]
        for p in trials:
            write_trial(self.study, p.trial._trial_id, state=TrialState.FAIL,
                        user_attrs=self.attrs_of(p, {A + "fail_reason": reason}),
                        release=p.claims)
        self.handles.clear()
        return len(trials)

    # ---------------------------------------------------------------- asking

    def in_flight(self) -> int:
        """Distinct new designs being evaluated (running, or waiting for their training or
        another driver; successive halving: at rung 0)."""
        if self.top > 0:
            return self.sched.designs_in_flight(lambda key: key.endswith("@r0"))
        return self.sched.designs_in_flight()

    def fill(self) -> None:
        """While ``workers`` leaves room (waiting trials count) and trainings are left:
        promote what successive halving promotes, else ask new trials while the distinct
        designs finished and in flight are short of ``n_trials``."""
        while self.sched.room() > 0 and not self.trainings_spent():
            if self.failed > self.max_failures:
                return
            started = self.complete + self.in_flight() + self.others_in_flight()
            parent = self.promotion(last_round=started >= self.opts.n_trials)
            if parent is not None:
                self.promote(parent)
                continue
            if started >= self.opts.n_trials:
                return
            if self.streak >= MAX_REPEAT_STREAK:  # ask again once a result has come back
                self.exhausted = self.sched.idle()
                return
            trial = ask_as(self.study, self.dists, self.driver_attrs())
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
        """The evaluation of ``design`` at ``rung`` as trial ``trial`` (attributes set, in
        one write)."""
        task = self.task_at(rung)
        key, dkey = design.training_key(task), design.design_key()
        if rung < self.top:  # a lower rung's evaluation is not the design's full one
            dkey = f"{dkey}@r{rung}"
        attrs: dict[str, Any] = {"design": design.to_dict(), "design_key": dkey,
                                 "training_key": key, "driver": self.driver,
                                 "session": self.session}
        if self.top > 0:
            attrs |= {"rung": rung, "fidelity": self.fidelity(rung)}
        self.live.add(trial.number)
        p = _Pending(trial, design, key, dkey, self.cache.get(key), 0, time.perf_counter(),
                     points=points, rung=rung, task=task)
        p.unwritten = {A + k: v for k, v in attrs.items()}  # written with its next write
        return p

    def attrs_of(self, p: _Pending, attrs: dict[str, Any]) -> dict[str, Any]:
        """``attrs`` with what ``p`` has not written yet (then written: cleared)."""
        out, p.unwritten = {**p.unwritten, **attrs}, {}
        return out

    def admit(self, p: _Pending) -> None:
        """Tell a repeat of a known design, wait for one in flight, or start ``p``. A new
        design takes what it will claim (a seat, its design, its network) and writes its
        attributes in one transaction first, so that the scheduler's claims are answered
        without a write each."""
        repeat = p.dkey in self.sched.known or p.dkey in self.sched.evaluating
        self.streak = self.streak + 1 if repeat else 0
        if p.dkey in self.sched.evaluating:  # it waits: its driver is on record meanwhile
            write_trial(self.study, p.trial._trial_id, user_attrs=self.attrs_of(p, {}))
        elif not repeat:
            names = []
            seat = self.free_seat() if p.parent is None else None
            if seat is not None or p.parent is not None:  # no free seat: claim nothing yet
                names = [seat] if seat is not None else []
                names.append("design:" + p.dkey)
                if (p.hit is None and p.key not in self.sched.training_now
                        and p.key not in self.sched.diverged):
                    names.append("training:" + p.key)
            p.claims += sorted(claim_many(self.study, names, self.holder(p),
                                          trial_id=p.trial._trial_id,
                                          user_attrs=self.attrs_of(p, {})))
        self.carry_out(self.sched.admit(p))

    def carry_out(self, actions: list[Action]) -> None:
        """Perform the scheduler's actions (and those they lead to)."""
        queue = list(actions)
        while queue:
            a = queue.pop(0)
            p = a.job
            if a.kind == "dispatch":
                if p.hit is None:
                    self.training_cost[p.key] = self.fidelity(p.rung)
                self.dispatch(p)
            elif a.kind == "repeat":
                self.tell_repeat(p, a.detail)
            else:  # fail: for good, without evaluating
                told = self.fail(p, a.detail, final=True)
                queue += self.sched.ended(p, told, final=True)

    def trainings_spent(self) -> bool:
        """Whether the trainings run and running (in full-budget units) reach
        ``max_trainings`` (a running evaluation that will not train, being over budget,
        counts until it returns)."""
        cap = self.opts.max_trainings
        running = sum(self.training_cost.get(k, 1.0) for k in self.sched.training_now)
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
        """Evaluate ``parent``'s design on the next rung, from its weights (unless another
        driver of the study promotes it)."""
        self.promoted.add(parent.number)
        holder = {"trial": -1, "driver": self.driver, "session": self.session}
        if claim(self.study, f"promotion:{parent.number}", holder,
                 lambda h: _gone(h, self.beats)) is not None:
            return  # another driver's promotion
        rung = int(parent.user_attrs.get(A + "rung", 0)) + 1
        # every parameter is the parent's, not the sampler's, and no re-queued design is
        # taken off the queue (Study.ask would)
        trial = new_trial(self.study, self.driver_attrs())
        set_params(self.study, trial, dict(parent.params), self.full_dists)
        root = int(parent.user_attrs.get(A + "rung_root", parent.number))
        design = self.cfg.space.decode(parent.params)
        points = None
        if self.cfg.strategy.name == "nested" and rung == self.top:
            points = self.hardware_points(design.network)
        p = self.pending_for(trial, design, rung, points)
        p.unwritten |= {A + "promoted_from": parent.number, A + "rung_root": root}
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
        request = EvalRequest(p.design, p.task or self.task, budgets,
                              cached_accuracy=hit.accuracy if hit else None,
                              cached_input_density=hit.input_density if hit else None,
                              init_state=init, gpus=self.cfg.execution.gpus_per_trial)
        self.handles[self.executor.submit(request)] = p

    # ---------------------------------------------------------------- results

    def finish(self, outcome: Outcome) -> None:
        """Tell the outcome of one evaluation (or retry or fail it) and start what waited."""
        p = self.handles.pop(outcome.handle)
        self.sched.returned(p)
        self.streak = 0  # the sampler has something new to go on
        try:
            told = self.tell_outcome(p, outcome)
        except optuna.exceptions.UpdateFinishedTrialError:
            told = self.taken_over(p)
        if told is None:
            return  # retried
        final = told.state != TrialState.FAIL or bool(told.user_attrs.get(A + "fail_final"))
        self.carry_out(self.sched.ended(p, told, final=final))

    def taken_over(self, p: _Pending) -> FrozenTrial:
        """``p``'s trial was failed (and its design re-queued) by another driver while this
        one evaluated it: this driver's lease had lapsed (its storage unreachable or the
        process stalled longer than ``execution.lease_s``). Its result is not stored."""
        log.warning("trial %d was failed by another driver while this one evaluated it "
                    "(this driver's lease lapsed: execution.lease_s=%s); its result is "
                    "dropped, the design was re-queued", p.trial.number,
                    self.cfg.execution.lease_s)
        self.told(p.trial.number)
        self.failed += 1
        return self.study._storage.get_trial(p.trial._trial_id)

    def tell_outcome(self, p: _Pending, outcome: Outcome) -> FrozenTrial | None:
        """Tell ``p``'s outcome (None: it was retried instead)."""
        if outcome.kind == "ok":
            assert outcome.result is not None
            p.node = outcome.node
            told = self.tell_result(p, outcome.result)
        elif outcome.kind == "timeout":
            told = self.fail(p, outcome.message, final=True)
        elif outcome.kind == "lost":  # worker died, task lost
            if self.retry(p):
                return None
            told = self.fail(p, outcome.message)
        else:
            cause = outcome.error
            if isinstance(cause, DatasetError):
                self.fail(p, f"{type(cause).__name__}: {cause}")
                raise _DatasetUnreadable(str(cause)) from None
            if isinstance(cause, InfeasibleDesign):
                told = self.fail(p, f"unmappable: {cause}", TrialState.PRUNED)
            elif isinstance(cause, EvaluatorError):  # deterministic: no retry, no re-run
                told = self.fail(p, f"{type(cause).__name__}: {cause}", final=True)
                if isinstance(cause, TrainingFailed):
                    self.sched.failed_training(p, f"trial {p.trial.number} ({cause})")
            elif self.retry(p):
                return None
            else:
                told = self.fail(p, f"{type(cause).__name__}: "
                                    f"{str(cause).splitlines()[-1] if str(cause) else ''}")
        return told

    def tell_result(self, p: _Pending, result: EvalResult) -> FrozenTrial:
        """Tell a returned result and take in what it adds (cache, rungs, pairs, counts)."""
        if self.cfg.strategy.name == "decoupled":
            result = _with_budgets(result, self.cfg.budgets)
        told = self.tell(p, result)
        if told.state != TrialState.COMPLETE:
            return told
        new = self.take_in(told, own=True)
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
        return told

    def retry(self, p: _Pending) -> bool:
        """Run a crashed evaluation again if it has retries left."""
        actions = self.sched.retry(p)
        if not actions:
            return False
        self.carry_out(actions)
        return True

    def fail(self, p: _Pending, reason: str, state: TrialState = TrialState.FAIL, *,
             final: bool = False) -> FrozenTrial:
        """Tell ``p`` FAIL (or PRUNED: unmappable, final) with ``reason``, in one write;
        ``final``: for a reason that another evaluation of the same design would meet again
        (its repeats are told so, never evaluated)."""
        attrs: dict[str, Any] = {A + "fail_reason": reason[:2000], A + "attempts": p.attempt + 1}
        if final or state == TrialState.PRUNED:
            attrs[A + "fail_final"] = True
        if not final and state == TrialState.FAIL and p.parent is not None:
            self.promoted.discard(p.parent)  # a promotion that may well run another time
            release(self.study, [f"promotion:{p.parent}"])
        settle = self.settled(p, design=final or state == TrialState.PRUNED, training=False)
        told = write_trial(self.study, p.trial._trial_id, user_attrs=self.attrs_of(p, attrs),
                           state=state, release=[c for c in p.claims if c not in settle],
                           settle=settle)
        assert told is not None
        self.told(told.number)
        if state == TrialState.PRUNED:
            self.unmappable += 1
        else:
            self.failed += 1
            self.last_failure = reason
        log.info("trial %d %s: %s", p.trial.number, state.name.lower(), reason)
        return told

    def tell(self, p: _Pending, result: EvalResult) -> FrozenTrial:
        """Tell a result: its attributes, constraints, values and state in one write (a
        killed driver leaves the trial RUNNING or finished, never half-told)."""
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
        if p.node is not None:
            attrs["node"] = p.node  # the Ray node that evaluated it
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
        user = self.attrs_of(p, {A + k: v for k, v in attrs.items()})
        constraints = [float(v) for v in result.constraints.values()]
        values = objective_values(result, self.cfg.objectives)
        if not all(math.isfinite(v) for v in [*constraints, *values]):  # Optuna refuses NaN
            write_trial(self.study, p.trial._trial_id, user_attrs=user)
            return self.fail(p, f"values or constraints are not finite: {values}, "
                                f"{result.constraints}", final=True)
        settle = self.settled(p, design=True, training=result.training is not None, seat=True)
        told = write_trial(self.study, p.trial._trial_id, user_attrs=user,
                           system_attrs={LEGACY_CONSTRAINTS_KEY: constraints},
                           state=TrialState.COMPLETE, values=values,
                           release=[c for c in p.claims if c not in settle], settle=settle)
        assert told is not None
        self.live.discard(told.number)
        done = user | {A + "training_key": p.key, A + "design": p.design.to_dict()}
        self.cache.add(done)
        self.warm.add(done)
        return told

    def told(self, number: int) -> None:
        """Trial ``number`` of this session has its outcome in the study."""
        self.seen.add(number)
        self.live.discard(number)

    def tell_repeat(self, p: _Pending, first: FrozenTrial) -> None:
        """Tell ``p`` (a repeat of the design of trial ``first``) with ``first``'s outcome,
        without evaluating anything, in one write."""
        self.repeated += 1
        attrs: dict[str, Any] = {A + "repeat_of": first.number}
        if first.state != TrialState.COMPLETE:  # unmappable, or failed for good
            attrs[A + "fail_reason"] = first.user_attrs.get(A + "fail_reason", "")
            write_trial(self.study, p.trial._trial_id, user_attrs=self.attrs_of(p, attrs),
                        state=first.state, release=p.claims)
            self.told(p.trial.number)
            return
        for k in ("feasible", "infeasible_reason", "accuracy", "hw", "layers",
                  "input_density", "weights"):
            if A + k in first.user_attrs:
                attrs[A + k] = first.user_attrs[A + k]
        named = constraints_of(first)
        attrs |= {A + "trained": False, A + "cached": False,
                  A + "constraint_names": list(named)}
        write_trial(self.study, p.trial._trial_id, user_attrs=self.attrs_of(p, attrs),
                    system_attrs={LEGACY_CONSTRAINTS_KEY: [float(v) for v in named.values()]},
                    state=TrialState.COMPLETE, values=list(first.values), release=p.claims)
        self.told(p.trial.number)

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
            if dkey in self.sched.known or dkey in self.sched.evaluating:
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
                "driver": self.driver}.items() if v is not None}
            table = {"accuracy": accuracy, **pair.report.metrics()}
            params = {**net_params, **pair.hw_params}
            added = add_complete(
                self.study, params=params,
                distributions={k: self.full_dists[k] for k in params},
                values=[float(table[o]) for o in self.cfg.objectives],
                constraints=list(pair.constraints.values()), user_attrs=user)
            self.sched.known[dkey] = added
            self.seen.add(added.number)
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
