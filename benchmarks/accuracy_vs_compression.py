"""How validation accuracy responds to bits and pruning on digits (fixed architecture).

Prints, averaged over 3 seeds: accuracy for 32/8/4/2/1-bit weights and activations, for
0/30/60/90 % unstructured, structured and 2:4-style (N:4) pruning at 8 bits, for low-rank
factorization at rank ratios 1/0.75/0.5/0.25 (with the weights left), and for 2-bit networks
with 8-bit first/last layers. Then the rank fidelity of brief training: Spearman correlation
between the validation accuracy after a brief budget and after a 5x longer one, over random
designs of the quickstart space, with and without warm start (each design initialized from the
closest design trained before it, as ``task.warm_start: closest`` does in a study).

    python benchmarks/accuracy_vs_compression.py [--epochs 10] [--seeds 3] [--designs 12]
        [--brief 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time
from pathlib import Path

import numpy as np

from evaluators.specs import NetworkSpec, StageSpec, TaskSpec
from evaluators.training import extract_layers, train
from evaluators.training.model import closest_source, nm_keep, state_shapes

ROOT = Path(__file__).resolve().parents[1]
ARCH = (StageSpec(1, 32, 3, 1), StageSpec(2, 64, 3, 2))


@functools.cache  # several table rows are the same network (e.g. 8 bits, ratio 1.0, 0 %)
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
    p.add_argument("--brief", type=int, default=None,
                   help="epochs of brief training (default: --epochs // 2); long = 5x")
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

    print("\nlow-rank at 8 bits   accuracy           weights   MACs (share of dense)")
    dense_layers = extract_layers(base)
    for ratio in (1.0, 0.75, 0.5, 0.25):
        spec = dataclasses.replace(base, rank_ratio=ratio)
        layers = extract_layers(spec)
        m, s = accuracy(spec, args.epochs, args.seeds)
        w = sum(x.weight_count for x in layers) / sum(x.weight_count for x in dense_layers)
        macs = sum(x.macs for x in layers) / sum(x.macs for x in dense_layers)
        print(f"{ratio:>18}   {m:.4f} +- {s:.4f}   {w:7.2f}   {macs:.2f}")
    print("\nmixed precision      accuracy")
    for label, kw in (("W=A=2", {}), ("W=A=2, first/last W=8", dict(first_layer_bits=8,
                                                                        last_layer_bits=8))):
        spec = dataclasses.replace(base, weight_bits=2, activation_bits=2, **kw)
        m, s = accuracy(spec, args.epochs, args.seeds)
        print(f"{label:>22}   {m:.4f} +- {s:.4f}")
    fidelity(args)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


def fidelity(args: argparse.Namespace) -> None:
    """Spearman(brief, 5x longer) over random quickstart designs, cold and warm-started."""
    import optuna

    from codesign.config import load

    cfg = load(ROOT / "experiments" / "quickstart.yaml")
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(directions=cfg.directions, sampler=sampler)
    brief = args.brief or max(1, args.epochs // 2)
    nets = [cfg.space.decode(study.ask(cfg.space.distributions()).params).network
            for _ in range(args.designs)]
    cold, warm, long_ = [], [], []
    sources: list[tuple[NetworkSpec, dict, float]] = []  # the warm runs so far
    weights: list[bytes] = []
    for net in nets:
        first = train(net, TaskSpec(epochs=brief, seed=0))
        cold.append(first.val_accuracy)
        long_.append(train(net, TaskSpec(epochs=5 * brief, seed=0)).val_accuracy)
        best = closest_source(net, sources)  # what the driver picks
        # nothing close trained yet: the warm run is the cold one (train reads only init)
        report = first if best is None else train(
            net, TaskSpec(epochs=brief, seed=0, warm_start="closest"), weights[best])
        warm.append(report.val_accuracy)
        sources.append((net, state_shapes(net), report.val_accuracy))
        weights.append(report.state_dict)
    print(f"\nbrief-training fidelity over {len(nets)} random quickstart designs "
          f"({brief} vs {5 * brief} epochs):")
    print(f"  Spearman, cold start: {spearman(cold, long_):.3f}  "
          f"(mean accuracy {statistics.mean(cold):.3f}; long {statistics.mean(long_):.3f})")
    print(f"  Spearman, warm start: {spearman(warm, long_):.3f}  "
          f"(mean accuracy {statistics.mean(warm):.3f}; each design from the closest one "
          "trained before it)")


if __name__ == "__main__":
    main()
