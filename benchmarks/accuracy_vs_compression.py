"""How validation accuracy responds to bits and pruning on digits (fixed architecture).

Prints, averaged over 3 seeds: accuracy for 32/8/4/2/1-bit weights and activations, and for
0/30/60/90 % unstructured, structured and 2:4-style (N:4) pruning at 8 bits. Then the rank
fidelity of brief training: Spearman correlation between the validation accuracy after a brief
budget and after a 5x longer one, over random designs of the quickstart space.

    python benchmarks/accuracy_vs_compression.py [--epochs 10] [--seeds 3] [--designs 12]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np

from evaluators.specs import NetworkSpec, StageSpec, TaskSpec
from evaluators.training import train
from evaluators.training.model import nm_keep

ROOT = Path(__file__).resolve().parents[1]
ARCH = (StageSpec(1, 32, 3, 1), StageSpec(2, 64, 3, 2))


def accuracy(spec: NetworkSpec, epochs: int, seeds: int) -> tuple[float, float]:
    accs = [train(spec, TaskSpec(epochs=epochs, seed=s)).val_accuracy for s in range(seeds)]
    return statistics.mean(accs), statistics.pstdev(accs)


def spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--designs", type=int, default=12)
    args = p.parse_args()
    t0 = time.perf_counter()
    base = NetworkSpec("plain_cnn", 1, 8, 10, ARCH)
    print(f"digits, plain_cnn {ARCH[0].width}/{ARCH[1].width}x2, {args.epochs} epochs, "
          f"mean +- std over {args.seeds} seeds (validation accuracy)\n")
    print("bits (W=A)   accuracy")
    for bits in (32, 8, 4, 2, 1):
        spec = dataclasses.replace(base, weight_bits=bits, activation_bits=bits)
        m, s = accuracy(spec, args.epochs, args.seeds)
        print(f"{bits:>10}   {m:.4f} +- {s:.4f}")
    print("\npruning at 8 bits   unstructured       structured         nm (N:4; at most 3 of 4 "
          "pruned)")
    for ratio in (0.0, 0.3, 0.6, 0.9):
        cells = []
        for mode in ("unstructured", "structured", "nm"):
            spec = dataclasses.replace(base, prune_ratio=ratio, prune_mode=mode)
            m, s = accuracy(spec, args.epochs, args.seeds)
            note = f" ({nm_keep(spec)}:4)" if mode == "nm" else ""
            cells.append(f"{m:.4f} +- {s:.4f}{note}")
        print(f"{ratio:>17.0%}   " + "   ".join(cells))

    # Rank fidelity of brief training on random designs of the quickstart space.
    import optuna

    from codesign.config import load

    cfg = load(ROOT / "experiments" / "quickstart.yaml")
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(directions=cfg.directions, sampler=sampler)
    brief = max(1, args.epochs // 2)
    short, long_ = [], []
    for _ in range(args.designs):
        net = cfg.space.decode(study.ask(cfg.space.distributions()).params).network
        short.append(train(net, TaskSpec(epochs=brief, seed=0)).val_accuracy)
        long_.append(train(net, TaskSpec(epochs=5 * brief, seed=0)).val_accuracy)
    print(f"\nbrief-training fidelity over {args.designs} random quickstart designs: "
          f"Spearman({brief} epochs, {5 * brief} epochs) = {spearman(short, long_):.3f}")
    print(f"(mean accuracy {statistics.mean(short):.3f} -> {statistics.mean(long_):.3f}; "
          "warm start: not implemented yet)")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
