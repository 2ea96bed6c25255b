#!/usr/bin/env python3
"""Brief-training fidelity of an experiment, with and without warm start.

Random designs of the experiment's space are trained on a brief budget and on a ``--factor``
times longer one; the Spearman rank correlation between the two says how well the brief
budget a search spends ranks networks. The brief training is run twice: from a fresh
initialization (cold) and, as ``task.warm_start: closest`` does in a study, from the closest
network trained before it (warm; the designs in the same order). Prints both correlations,
the mean accuracies and the training seconds.

    python benchmarks/brief_fidelity.py experiments/fashion_bitfusion.yaml --designs 12
    python benchmarks/brief_fidelity.py experiments/quickstart.yaml --designs 12 --brief 5

``--brief``: the brief budget in the experiment's unit (steps when the experiment gives
``task.steps``, else epochs; default: the experiment's own budget).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def _train(args: tuple) -> tuple[float, float, bytes | None]:
    """(validation accuracy, seconds, state dict) of one training (a worker process)."""
    from evaluators.training import train

    net, task, init = args
    t0 = time.perf_counter()
    report = train(net, task, init)
    return report.val_accuracy, time.perf_counter() - t0, report.state_dict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment")
    ap.add_argument("--designs", type=int, default=12)
    ap.add_argument("--brief", type=int, help="brief budget (steps or epochs)")
    ap.add_argument("--factor", type=int, default=5, help="the long budget is this x brief")
    ap.add_argument("--jobs", type=int, default=2, help="trainings run at once")
    ap.add_argument("--seed", type=int, default=0, help="of the random designs")
    args = ap.parse_args(argv)

    import optuna

    from codesign.config import load
    from evaluators.training.model import closest_source, state_shapes

    cfg = load(args.experiment)
    unit = "steps" if cfg.task.steps is not None else "epochs"
    brief = args.brief or getattr(cfg.task, unit)
    task = dataclasses.replace(cfg.task, num_threads=1, warm_start="none")
    short = dataclasses.replace(task, **{unit: brief})
    long_ = dataclasses.replace(task, **{unit: brief * args.factor})
    warm_task = dataclasses.replace(short, warm_start="closest")
    study = optuna.create_study(directions=cfg.directions,
                                sampler=optuna.samplers.RandomSampler(seed=args.seed))
    nets = [cfg.space.decode(study.ask(cfg.space.distributions()).params).network
            for _ in range(args.designs)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        cold_runs = list(pool.map(_train, [(n, short, None) for n in nets]))
        long_runs = pool.map(_train, [(n, long_, None) for n in nets])
        # the warm chain runs beside the long trainings: each design from the closest
        # warm-trained design before it, as the driver picks
        warm_runs: list[tuple[float, float, bytes | None]] = []
        sources: list[tuple] = []
        for i, net in enumerate(nets):
            best = closest_source(net, sources)
            run = cold_runs[i] if best is None else _train(
                (net, warm_task, warm_runs[best][2]))
            warm_runs.append(run)
            sources.append((net, state_shapes(net), run[0]))
        long_runs = list(long_runs)
    cold = [r[0] for r in cold_runs]
    warm = [r[0] for r in warm_runs]
    longer = [r[0] for r in long_runs]
    secs = {k: sum(r[1] for r in v) for k, v in
            (("cold", cold_runs), ("warm", warm_runs), ("long", long_runs))}
    print(f"{cfg.study.name}: {len(nets)} random designs, {brief} vs {brief * args.factor} "
          f"{unit} ({cfg.task.dataset})")
    print(f"  Spearman(brief, long), cold start: {spearman(cold, longer):.3f}  "
          f"(mean accuracy {statistics.mean(cold):.4f}; long {statistics.mean(longer):.4f})")
    print(f"  Spearman(brief, long), warm start: {spearman(warm, longer):.3f}  "
          f"(mean accuracy {statistics.mean(warm):.4f})")
    print(f"  training seconds: brief cold {secs['cold']:.0f}, brief warm {secs['warm']:.0f}, "
          f"long {secs['long']:.0f}; wall {time.perf_counter() - t0:.0f} s")
    for i, (c, w, g) in enumerate(zip(cold, warm, longer)):
        print(f"    design {i:2d}: cold {c:.4f}  warm {w:.4f}  long {g:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
