#!/usr/bin/env python3
"""Driver overhead: codesign's driver against a bare Optuna ask/tell loop, on one storage.

Part 1, **ms per trial** when evaluating costs nothing: every evaluation returns at once
(an executor that hands back one result priced beforehand, so the figure is the driver's
own work: asking, the trial's writes, claims, reading results back, bookkeeping). The
baseline, in the same run and on the same kind of storage, is a bare Optuna loop with the
same sampler and search space: ``study.ask(distributions)``, the constraint values written
as codesign writes them, ``study.tell(trial, values)``. Storages: SQLite and journal files,
and PostgreSQL when a URL is given (``--postgres URL``) or a throwaway server can be
started on 127.0.0.1 (``--start-postgres``, tests/pg_server.py).

Part 2, **speed-up from 1 to 8 workers** on sleep-bound trials: real Ray tasks on a local
instance bound to 127.0.0.1 (each trial sleeps ``--sleep-s`` and asks 1/8 of a CPU, so 8
fit on this 2-core machine), the wall time of ``--sleep-trials`` trials with 1 and with 8
workers::

    python benchmarks/orchestration.py                      # ~2 min
    python benchmarks/orchestration.py --trials 500 --start-postgres
    python benchmarks/orchestration.py --skip-part1 --sleep-storage journal
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import optuna  # noqa: E402

from codesign.config import load  # noqa: E402
from codesign.driver.executor import InProcessExecutor, Outcome  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Instant(InProcessExecutor):
    """Every evaluation returns ``result`` at once (the driver's cost alone)."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result

    def wait(self, timeout_s: float) -> list[Outcome]:
        out = [Outcome(h, "ok", result=self.result) for h, _ in self._queue]
        self._queue.clear()
        return out


def canned_result(cfg: Any) -> Any:
    """One design of the space, priced (no training): what every evaluation returns."""
    from evaluators.evaluate import evaluate

    study = optuna.create_study(directions=cfg.directions,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask(cfg.space.distributions())
    design = cfg.space.decode(trial.params)
    return evaluate(design, cfg.task, cfg.budgets, cached_accuracy=0.9,
                    cached_input_density={})


def bare_optuna(url: Any, cfg: Any, n: int) -> float:
    from codesign.optuna_adapter import LEGACY_CONSTRAINTS_KEY
    from codesign.samplers import make

    study = optuna.create_study(storage=url, directions=cfg.directions,
                                sampler=make(cfg.sampler, seed=1))
    dists = cfg.space.distributions()
    t0 = time.perf_counter()
    for i in range(n):
        trial = study.ask(dists)
        study._storage.set_trial_system_attr(trial._trial_id, LEGACY_CONSTRAINTS_KEY,
                                             [-1.0, -1.0])
        study.tell(trial, [0.9 - 1e-4 * i, 1.0 + i, 2.0])
    return (time.perf_counter() - t0) / n * 1e3


def codesign_driver(url: str, cfg: Any, n: int, result: Any, tmp: Path) -> float:
    from codesign.runner import RunOptions, run_study
    from codesign.samplers import make
    from codesign.study import create_or_load, open_storage

    cfg = replace(cfg, study=replace(cfg.study, n_trials=n))
    study, _ = create_or_load(cfg, open_storage(url), url, sampler=None)
    study.sampler = make(cfg.sampler, seed=1)
    opts = RunOptions(n_trials=n, workers=1, artifacts=tmp / "art", storage_url=url,
                      progress=False, executor=Instant(result))
    t0 = time.perf_counter()
    summary = run_study(study, cfg, opts)
    seconds = time.perf_counter() - t0
    trials = len(study.get_trials(deepcopy=False))
    return seconds / trials * 1e3, summary


def part1(args: argparse.Namespace, cfg: Any, tmp: Path) -> None:
    result = canned_result(cfg)
    urls: list[tuple[str, Any]] = [
        ("sqlite", lambda k: f"sqlite:///{tmp}/{k}.db"),
        ("journal", lambda k: f"journal:{tmp}/{k}.log"),
    ]
    server = None
    pg = args.postgres
    if pg is None and args.start_postgres:
        from pg_server import PostgresServer  # tests/pg_server.py

        server = PostgresServer()
        pg = server.start()
    if pg:
        urls.append(("postgresql", lambda k: pg))
    print(f"Part 1: ms per trial, {args.trials} trials, sampler {cfg.sampler.name}, every "
          "evaluation instant")
    print(f"{'storage':<11} {'bare optuna':>12} {'codesign':>10} {'ratio':>7} "
          f"{'overhead':>9}")
    try:
        for name, url_of in urls:
            from codesign.study import open_storage

            bare = bare_optuna(open_storage(url_of("bare")), cfg, args.trials)
            cfg_n = replace(cfg, study=replace(cfg.study, name=f"orch-{name}"))
            ours, summary = codesign_driver(url_of("codesign"), cfg_n, args.trials, result,
                                            tmp)
            print(f"{name:<11} {bare:>10.1f}ms {ours:>8.1f}ms {ours / bare:>6.2f}x "
                  f"{ours - bare:>7.1f}ms   ({summary.complete} designs, "
                  f"{summary.repeats_now} repeats)")
    finally:
        if server is not None:
            server.stop()


def part2(args: argparse.Namespace, cfg: Any, tmp: Path) -> None:
    import ray

    from codesign.driver.executor import RayExecutor
    from codesign.runner import RunOptions, connect_ray, run_study
    from codesign.samplers import make
    from codesign.study import create_or_load, open_storage

    result = canned_result(cfg)
    # Ray keeps at most num_cpus (here 2) idle worker processes and stops the others after
    # a second idle; a long study keeps its 8 busy, so keep the 8 started below as well
    # (else a trial of the first wave waits ~0.6 s for a process start: Ray's cost, not
    # the driver's, paid once per study)
    os.environ.setdefault("RAY_num_workers_soft_limit", "8")
    connect_ray(cfg, None)

    def sleepy(request: Any) -> Any:
        time.sleep(args.sleep_s)
        return result

    class Sleepy(RayExecutor):
        def __init__(self) -> None:
            super().__init__({"num_cpus": 0.125})
            self._remote = ray.remote(sleepy).options(max_retries=0, num_cpus=0.125)

    print(f"\nPart 2: {args.sleep_trials} trials sleeping {args.sleep_s:g} s each, real Ray "
          f"tasks, {args.sleep_storage}")
    # Ray starts its worker processes on demand, two at a time here, and stops idle ones
    # after a second: start 8 right before each timing, as a long study keeps them busy, so
    # that the figure is the driver's, not the processes' start
    warm = ray.remote(lambda: time.sleep(0.5)).options(num_cpus=0.125)
    times = {}
    for workers in (1, 8):
        url = (f"sqlite:///{tmp}/sleep-{workers}.db" if args.sleep_storage == "sqlite"
               else f"journal:{tmp}/sleep-{workers}.log")
        c = replace(cfg, study=replace(cfg.study, name=f"sleep-{workers}",
                                       n_trials=args.sleep_trials))
        study, _ = create_or_load(c, open_storage(url), url, sampler=None)
        study.sampler = make(c.sampler, seed=1)
        opts = RunOptions(n_trials=args.sleep_trials, workers=workers, artifacts=tmp / "a",
                          storage_url=url, progress=False, executor=Sleepy())
        ray.get([warm.remote() for _ in range(8)])
        t0 = time.perf_counter()
        run_study(study, c, opts)
        times[workers] = time.perf_counter() - t0
        print(f"  {workers} worker{'s' if workers > 1 else ''}: {times[workers]:6.1f} s")
    print(f"  speed-up 1 -> 8 workers: {times[1] / times[8]:.2f}x (ideal 8x)")
    ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default=str(REPO / "experiments" / "quickstart.yaml"))
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--postgres", help="a PostgreSQL URL to measure on (a database of its own)")
    ap.add_argument("--start-postgres", action="store_true",
                    help="start a throwaway PostgreSQL server on 127.0.0.1")
    ap.add_argument("--sleep-trials", type=int, default=24)
    ap.add_argument("--sleep-s", type=float, default=1.0)
    ap.add_argument("--sleep-storage", choices=["sqlite", "journal"], default="sqlite")
    ap.add_argument("--skip-sleep", action="store_true")
    ap.add_argument("--skip-part1", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cfg = load(args.experiment)
    with tempfile.TemporaryDirectory(prefix="orch") as d:
        if not args.skip_part1:
            part1(args, cfg, Path(d))
        if not args.skip_sleep:
            part2(args, cfg, Path(d))


if __name__ == "__main__":
    main()
