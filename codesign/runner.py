"""The driver loop: ask -> DesignPoint -> Ray task -> EvalResult -> tell.

The driver is the study's only writer. It keeps at most ``workers`` evaluations in flight as
Ray tasks, tells each result as it arrives, retries an evaluation that crashed (not one that
failed for a deterministic reason such as a diverging loss) up to ``max_retries`` times, and
stops cleanly on Ctrl-C / SIGTERM: finished trials stay, in-flight ones are told FAIL.

Trial user attributes written here (all prefixed ``codesign.``): ``design`` (the decoded
:class:`DesignPoint`), ``training_key``, ``hw`` (network totals), ``layers`` (per-layer costs),
``feasible``, ``infeasible_reason``, ``trained``, ``cached``, ``input_density`` (each layer's
non-zero input fraction measured in training, which the hardware was priced with),
``train_seconds``,
``hw_seconds``, ``weights`` (path of the trained weights), ``warm_from`` and
``warm_tensors`` (warm start: the source's training key or ``checkpoint``, tensors loaded),
``driver``, ``attempts``, ``fail_reason``, ``requeued_from``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from optuna.trial import TrialState

from codesign.config import ExperimentConfig
from codesign.errors import CodesignError, Interrupted, RunAborted
from codesign.study import A
from evaluators.specs import (
    DesignPoint,
    EvalResult,
    EvaluatorError,
    InfeasibleDesign,
    TrainingFailed,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How one driver session runs (may differ between ``run`` and ``resume``)."""

    n_trials: int
    workers: int
    ray_address: str | None = None
    progress: bool = True


@dataclass(frozen=True)
class RunSummary:
    complete: int
    failed_now: int
    requeued: int
    trained_now: int
    cache_hits_now: int
    seconds: float


class CacheEntry(NamedTuple):
    """A finished training the study can reuse (``TrainingCache``)."""

    accuracy: float
    weights: str | None  # path of the trained weights
    input_density: dict[str, float]  # each layer's non-zero input fraction, measured


@dataclass
class _Pending:
    trial: optuna.Trial
    design: DesignPoint
    key: str
    hit: CacheEntry | None  # the training this trial reuses (None: it trains)
    attempt: int
    started: float
    warm_from: str | None = None  # training key (or "checkpoint") its weights started from


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
        study._storage.set_trial_user_attr(t._trial_id, A + "fail_reason", reason)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={A + "requeued_from": t.number})
            n += 1
    return n


class TrainingCache:
    """The study is the cache: training key -> ``CacheEntry``."""

    def __init__(self, study: optuna.Study) -> None:
        self._entries: dict[str, CacheEntry] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
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

    ``closest``: among the networks this study has trained (weights on disk) and pruned no
    more than the new one, the one whose trained state dict shares the most weight elements
    with the new network's fresh module, tensor by tensor, by name and shape (ties: the higher
    validation accuracy, then the earlier training; ``warm_start_score``). ``checkpoint``: the
    file ``task.warm_start_checkpoint`` for every training. ``none``: nothing.

    Lifecycle: one per driver session; built from the study's finished trials, told each new
    training with :meth:`add`, asked with :meth:`pick` before a training is dispatched. What
    ``closest`` picks depends on which trainings have finished at that moment, so with more
    than one worker it can differ between two runs of the same study.
    """

    def __init__(self, study: optuna.Study, cfg: ExperimentConfig) -> None:
        self.mode = cfg.task.warm_start
        self._sources: list[tuple[Any, dict[str, tuple[int, ...]], float]] = []
        self._sources_at: list[tuple[str, str]] = []  # (training key, weights path) of each
        self._keys: set[str] = set()
        self.checkpoint: bytes | None = None  # mode checkpoint: the file's bytes, read once
        if self.mode == "checkpoint":
            self.checkpoint = _read_checkpoint(cfg.task.warm_start_checkpoint or "")
        if self.mode == "closest":
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                self.add(t.user_attrs)

    def add(self, attrs: dict[str, Any]) -> None:
        """Record a finished training (trial user attributes, ``codesign.``-prefixed)."""
        if self.mode != "closest" or not attrs.get(A + "trained"):
            return
        path, design, key = attrs.get(A + "weights"), attrs.get(A + "design"), \
            attrs.get(A + "training_key")
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
            return Path(path).read_bytes(), key
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


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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


def init_ray(address: str | None) -> None:
    """Start a local Ray instance, or connect to the cluster at ``address``."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
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
    """Before anything is created: is the warm-start checkpoint (if any) a readable state
    dict, and (``local``) can this machine ever run one trial of ``cfg``?"""
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


def run_study(study: optuna.Study, cfg: ExperimentConfig, opts: RunOptions) -> RunSummary:
    """Run the driver loop until the study has ``opts.n_trials`` COMPLETE trials.

    Raises:
        Interrupted: on Ctrl-C / SIGTERM (after marking in-flight trials failed).
        RunAborted: when failures exceed ``max(10, 2 * n_trials)`` in this session.
    """
    import ray

    t_start = time.perf_counter()
    requeued = requeue_stale(study)
    cache = TrainingCache(study)
    space = cfg.space
    dists = space.distributions()
    threads = max(1, int(cfg.execution.cpus_per_trial))
    task = replace(cfg.task, num_threads=threads)
    artifacts = Path(cfg.study.artifacts_dir)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if complete >= opts.n_trials:
        return RunSummary(complete, 0, requeued, 0, 0, 0.0)
    warm = WarmStarts(study, cfg)

    init_ray(opts.ray_address)
    _check_resources(cfg, local=not opts.ray_address)
    from evaluators.evaluate import evaluate

    remote = ray.remote(evaluate).options(
        num_cpus=cfg.execution.cpus_per_trial, num_gpus=cfg.execution.gpus_per_trial,
        max_retries=0,
    )
    checkpoint_ref = None if warm.checkpoint is None else ray.put(warm.checkpoint)
    pending: dict[Any, _Pending] = {}
    # A trial whose network is being trained right now by another trial waits for that
    # training instead of training the same network twice.
    training_now: set[str] = set()
    diverged: dict[str, str] = {}  # training key -> where and why its training failed
    deferred: dict[str, list[_Pending]] = {}
    failed = trained = hits = 0
    max_failures = max(10, 2 * opts.n_trials)
    last_failure = ""
    bar = _progress(opts, study.study_name, complete)

    def dispatch(p: _Pending) -> None:
        init, p.warm_from = warm.pick(p.design.network) if p.hit is None else (None, None)
        if init is not None and init is warm.checkpoint:  # the same bytes for every training:
            init = checkpoint_ref  # into Ray's object store once, not copied per task
        hit = p.hit
        ref = remote.remote(p.design, task, cfg.budgets,
                            cached_accuracy=hit.accuracy if hit else None,
                            cached_input_density=hit.input_density if hit else None,
                            init_state=init)
        pending[ref] = p

    def start(p: _Pending) -> None:
        if p.hit is None and p.key in diverged and _within_budgets(p.design, cfg):
            # training this network failed deterministically before: do not train it again
            # (an over-budget design is still dispatched: it is priced, never trained)
            fail(p, f"not trained: the same network failed in {diverged[p.key]}")
            return
        if p.hit is None:
            if p.key in training_now:
                deferred.setdefault(p.key, []).append(p)
                return
            training_now.add(p.key)
        dispatch(p)

    def release(p: _Pending) -> None:
        """``p`` has its final outcome: start the trials that waited for its training."""
        if p.hit is not None:
            return
        training_now.discard(p.key)
        for q in deferred.pop(p.key, []):
            q.hit = cache.get(p.key)
            start(q)

    def retry(p: _Pending) -> bool:
        """Run a crashed evaluation again if it has retries left."""
        if p.attempt >= cfg.execution.max_retries:
            return False
        p.attempt += 1
        dispatch(p)
        return True

    def n_deferred() -> int:
        return sum(len(v) for v in deferred.values())

    def fail(p: _Pending, reason: str, state: TrialState = TrialState.FAIL) -> None:
        nonlocal failed, last_failure
        p.trial.set_user_attr(A + "fail_reason", reason[:2000])
        p.trial.set_user_attr(A + "attempts", p.attempt + 1)
        study.tell(p.trial, state=state)
        failed += 1
        last_failure = reason
        log.info("trial %d %s: %s", p.trial.number, state.name.lower(), reason)

    try:
        with _graceful_stop() as stop:
            while True:
                if stop.set:
                    raise KeyboardInterrupt
                while (len(pending) < opts.workers
                       and complete + len(pending) + n_deferred() < opts.n_trials):
                    if failed > max_failures:
                        break
                    trial = study.ask(dists)
                    design = space.decode(trial.params)
                    key = design.training_key(task)
                    trial.set_user_attr(A + "design", design.to_dict())
                    trial.set_user_attr(A + "training_key", key)
                    trial.set_user_attr(A + "driver", _driver_id())
                    start(_Pending(trial, design, key, cache.get(key), 0,
                                   time.perf_counter()))
                if not pending:
                    if failed > max_failures and complete < opts.n_trials:
                        raise RunAborted(
                            f"stopped after {failed} failed trials (last: {last_failure}); "
                            "see `codesign inspect` for the reasons"
                        )
                    break
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in done:
                    p = pending.pop(ref)
                    try:
                        result: EvalResult = ray.get(ref)
                        state = _tell(study, cfg, p, result, artifacts, cache, warm)
                        if state != TrialState.COMPLETE:
                            failed += 1
                            release(p)
                            continue
                        complete += 1
                        trained += result.training is not None
                        hits += result.cached
                        if bar is not None:
                            bar.update(1)
                    except ray.exceptions.RayTaskError as e:
                        # the original exception (its message, not Ray's traceback text)
                        cause = e.cause if isinstance(e.cause, BaseException) else e
                        if isinstance(cause, InfeasibleDesign):
                            fail(p, f"unmappable: {cause}", TrialState.PRUNED)
                        elif isinstance(cause, EvaluatorError):  # deterministic: no retry
                            fail(p, f"{type(cause).__name__}: {cause}")
                            if isinstance(cause, TrainingFailed):
                                diverged[p.key] = f"trial {p.trial.number} ({cause})"
                        elif retry(p):
                            continue
                        else:
                            fail(p, f"{type(cause).__name__}: {str(cause).splitlines()[-1]}")
                    except ray.exceptions.RayError as e:  # worker died, task lost
                        if retry(p):
                            continue
                        fail(p, f"{type(e).__name__}: {str(e).splitlines()[0]}")
                    release(p)
                if bar is not None:
                    bar.set_postfix(running=len(pending), failed=failed, cached=hits,
                                    refresh=False)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        waiting = [q for qs in deferred.values() for q in qs]
        for p in [*pending.values(), *waiting]:
            p.trial.set_user_attr(A + "fail_reason", "interrupted (Ctrl-C or SIGTERM)")
            study.tell(p.trial, state=TrialState.FAIL)
        raise Interrupted(
            f"interrupted: {complete} finished trials kept, {len(pending) + len(waiting)} "
            f"in-flight trials marked failed; continue with "
            f"`codesign resume {study.study_name}`"
        ) from None
    finally:
        if bar is not None:
            bar.close()
    return RunSummary(complete, failed, requeued, trained, hits,
                      time.perf_counter() - t_start)


def _tell(
    study: optuna.Study,
    cfg: ExperimentConfig,
    p: _Pending,
    result: EvalResult,
    artifacts: Path,
    cache: TrainingCache,
    warm: WarmStarts,
) -> TrialState:
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
            path = artifacts / "weights" / f"{result.training_key}.pt"
            if not path.exists():
                _write_atomic(path, tr.state_dict)
            attrs["weights"] = str(path)
    elif p.hit is not None:  # priced with the cached training's zeros
        if result.cached:
            attrs["weights"] = p.hit.weights
        attrs["input_density"] = p.hit.input_density
    for k, v in attrs.items():
        trial.set_user_attr(A + k, v)
    for name, value in result.constraints.items():
        trial.set_constraint(name, value)
    told = study.tell(trial, objective_values(result, cfg.objectives))
    if told.state == TrialState.COMPLETE:
        done = {A + k: v for k, v in attrs.items()} | {A + "training_key": p.key,
                                                        A + "design": p.design.to_dict()}
        cache.add(done)
        warm.add(done)
    return told.state


def _progress(opts: RunOptions, name: str, initial: int) -> Any:
    if not opts.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=opts.n_trials, initial=initial, desc=name, unit="trial",
                file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
