"""Where evaluations run: one ``Executor`` protocol, a Ray and an in-process implementation.

Lifecycle: build one per driver session (after ``ray_connect.connect`` for Ray);
``submit`` an ``EvalRequest`` (returns a handle), ``wait`` for outcomes (each handle's
exactly once: a result, the evaluation's own exception, a lost worker, or a timeout),
``cancel`` a handle (its outcome is never reported), ``close`` at the end. Workers never
touch the study: they price and train, and return an ``EvalResult``.

Device pinning: a trial asks ``gpus_per_trial`` GPUs (fractional allowed) and any custom
Ray resources; Ray gives the task its devices (``CUDA_VISIBLE_DEVICES``). A task given no
GPU trains on the CPU even where the node has GPUs (``task.device: auto`` would otherwise
take one Ray did not assign); one given a GPU trains on it.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from evaluators.specs import Budgets, DesignPoint, EvalResult, TaskSpec

Kind = Literal["ok", "error", "lost", "timeout"]


@dataclass(frozen=True)
class EvalRequest:
    """One evaluation: ``evaluators.evaluate.evaluate``'s arguments."""

    design: DesignPoint
    task: TaskSpec
    budgets: Budgets
    cached_accuracy: float | None = None
    cached_input_density: dict[str, float] | None = None
    init_state: Any = None  # bytes, or what ``Executor.share`` returned for them
    gpus: float = 0.0  # what the trial was given (device pinning)
    timeout_s: float | None = None  # the evaluation stops itself after this long (a Ray task)


@dataclass(frozen=True)
class Outcome:
    """How one submitted evaluation ended. ``kind``: ``ok`` (``result``), ``error`` (the
    evaluation raised ``error``), ``lost`` (the worker or its node died: ``message``),
    ``timeout`` (cancelled after ``execution.trial_timeout_s``)."""

    handle: int
    kind: Kind
    result: EvalResult | None = None
    error: BaseException | None = None
    message: str = ""
    seconds: float = 0.0
    node: str | None = None  # the Ray node that ran it (its id), when Ray ran it


class Executor(Protocol):
    def submit(self, request: EvalRequest) -> int: ...

    def wait(self, timeout_s: float) -> list[Outcome]: ...

    def cancel(self, handle: int) -> None: ...

    def share(self, data: bytes) -> Any: ...

    def close(self) -> None: ...


def run_request(request: EvalRequest) -> EvalResult:
    """Evaluate ``request`` here, on the device it was given (see the module docstring)."""
    from evaluators.evaluate import evaluate

    task = request.task
    if task.device == "auto" and request.gpus <= 0:
        task = replace(task, device="cpu")  # no GPU was assigned to this trial
    init = request.init_state
    if init is not None and not isinstance(init, bytes):  # a Ray object reference
        import ray

        init = ray.get(init)
    return evaluate(request.design, task, request.budgets,
                    cached_accuracy=request.cached_accuracy,
                    cached_input_density=request.cached_input_density, init_state=init)


TIMEOUT_EXIT = 75  # a worker ending itself at the trial's timeout

def _ray_task(request: EvalRequest) -> tuple[EvalResult, str, list[str]]:
    """``run_request`` as a Ray task: its result, the node that ran it, the GPUs Ray gave it
    (Ray has set ``CUDA_VISIBLE_DEVICES`` to them: the trainer's ``cuda`` is the first).
    ``request.timeout_s`` is counted from the task's start (not its wait in Ray's queue),
    by a timer in the worker that ends the worker process (exit code ``TIMEOUT_EXIT``):
    an exception raised wherever the evaluation is could leave a module half-imported in a
    process Ray reuses, and a fresh process replaces it. The driver sees the task lost after
    at least ``timeout_s`` and reports it as ``timeout``."""
    import signal

    import ray

    ctx = ray.get_runtime_context()
    timed = request.timeout_s is not None and hasattr(signal, "setitimer")
    if timed:
        def expire(signum: int, frame: Any) -> None:
            os._exit(TIMEOUT_EXIT)

        old = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, request.timeout_s)
    try:
        result = run_request(request)
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    return result, ctx.get_node_id(), [str(g) for g in ray.get_gpu_ids()]


@dataclass
class InProcessExecutor:
    """Runs each evaluation in this process, one at a time, when ``wait`` is called (tests,
    ``--workers 0``). A timeout cannot interrupt it: ``timeout_s`` is checked after the
    evaluation, which then counts as timed out."""

    timeout_s: float | None = None
    _queue: deque[tuple[int, EvalRequest]] = field(default_factory=deque)
    _next: int = 0

    def submit(self, request: EvalRequest) -> int:
        self._next += 1
        self._queue.append((self._next, request))
        return self._next

    def wait(self, timeout_s: float) -> list[Outcome]:
        if not self._queue:
            return []
        handle, request = self._queue.popleft()
        t0 = time.perf_counter()
        try:
            result = run_request(request)
        except Exception as e:  # noqa: BLE001 - the evaluation's own error, reported
            return [Outcome(handle, "error", error=e, seconds=time.perf_counter() - t0)]
        seconds = time.perf_counter() - t0
        if self.timeout_s is not None and seconds > self.timeout_s:
            return [Outcome(handle, "timeout", message=_timeout_message(self.timeout_s),
                            seconds=seconds)]
        return [Outcome(handle, "ok", result=result, seconds=seconds)]

    def cancel(self, handle: int) -> None:
        self._queue = deque((h, r) for h, r in self._queue if h != handle)

    def share(self, data: bytes) -> Any:
        return data

    def close(self) -> None:
        self._queue.clear()


def _timeout_message(timeout_s: float) -> str:
    return f"timed out after {timeout_s:g} s (execution.trial_timeout_s); cancelled"


class RayExecutor:
    """Each evaluation a Ray task with the trial's resources (``ray_connect.task_options``);
    Ray does not retry tasks (the driver decides). A task running past ``timeout_s`` stops
    itself (``_ray_task``: its worker process exits) and is reported as ``timeout`` (so is
    any task lost after running that long); as a backstop (a worker stuck
    outside Python), one not back ``2 * timeout_s + 60`` s after it was submitted is
    cancelled (forcibly: its worker process is killed), also as ``timeout``."""

    def __init__(self, options: dict[str, Any], timeout_s: float | None = None) -> None:
        import ray

        self._ray = ray
        self._remote = ray.remote(_ray_task).options(max_retries=0, **options)
        self._limit_s = timeout_s
        self._timeout_s = None if timeout_s is None else 2 * timeout_s + 60
        self._refs: dict[Any, tuple[int, float]] = {}  # ref -> (handle, start time)
        self._next = 0

    def submit(self, request: EvalRequest) -> int:
        self._next += 1
        request = replace(request, timeout_s=self._limit_s)
        self._refs[self._remote.remote(request)] = (self._next, time.perf_counter())
        return self._next

    def wait(self, timeout_s: float) -> list[Outcome]:
        ray = self._ray
        if not self._refs:
            return []
        now = time.perf_counter()
        if self._timeout_s is not None:
            first_due = min(t0 for _, t0 in self._refs.values()) + self._timeout_s
            timeout_s = max(0.0, min(timeout_s, first_due - now))
        refs = list(self._refs)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout_s)
        if ready:  # everything else already done, too
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        out = [self._outcome(ref) for ref in ready]
        if self._timeout_s is not None:
            now = time.perf_counter()
            for ref, (handle, t0) in list(self._refs.items()):
                if now - t0 > self._timeout_s:
                    ray.cancel(ref, force=True)
                    del self._refs[ref]
                    out.append(Outcome(handle, "timeout", seconds=now - t0,
                                       message=_timeout_message(self._timeout_s)))
        return out

    def _outcome(self, ref: Any) -> Outcome:
        ray = self._ray
        handle, t0 = self._refs.pop(ref)
        seconds = time.perf_counter() - t0
        try:
            value = ray.get(ref)
            if isinstance(value, tuple):  # _ray_task's (result, node, gpus)
                return Outcome(handle, "ok", result=value[0], seconds=seconds, node=value[1])
            return Outcome(handle, "ok", result=value, seconds=seconds)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(e.cause, BaseException) else e
            return Outcome(handle, "error", error=cause, seconds=seconds)
        except ray.exceptions.RayError as e:  # the worker or its node died, the task lost
            if self._limit_s is not None and seconds >= self._limit_s:  # its timer ended it
                return Outcome(handle, "timeout", seconds=seconds,
                               message=_timeout_message(self._limit_s))
            return Outcome(handle, "lost", seconds=seconds,
                           message=f"{type(e).__name__}: {str(e).splitlines()[0]}")

    def cancel(self, handle: int) -> None:
        for ref, (h, _) in list(self._refs.items()):
            if h == handle:
                self._ray.cancel(ref, force=True)
                del self._refs[ref]

    def share(self, data: bytes) -> Any:
        return self._ray.put(data)

    def close(self) -> None:
        for ref in list(self._refs):
            self._ray.cancel(ref, force=True)
        self._refs.clear()
