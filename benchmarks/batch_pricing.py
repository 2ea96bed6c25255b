#!/usr/bin/env python3
"""Batch pricing speed: one workload on many systolic configurations, one by one and batched.

``evaluators.hardware.batch.price_each`` prices each configuration with its own model
(``make_model(acc, enforce_budgets=False).evaluate_network(layers)``); ``price_batch`` prices
them all at once, with numpy arrays over configurations, and must give the same numbers.
Workloads: ResNet-18 and MobileNetV2 (width 1.0) on ImageNet, 224 x 224, batch 1, 8-bit
weights and activations, PyTorch padding. Configurations are drawn at random from::

    dataflow ws / os / is, pe_rows and pe_cols 8..128 (powers of two),
    glb_kib 64..2048 (log-uniform), dram_gbps 4..64, freq_mhz 200..1000 (uniform)

(other fields at their defaults), and, with ``--grid``, also a grid: 3 dataflows x 4 x 4 array
sides x 3 GLB sizes x 3 clocks x 5 random DRAM bandwidths. Rates are (layer, configuration)
pricings per second; ``price_each`` is timed on ``--each`` of the configurations, spread over
the batch (its rate does not depend on how many), ``price_batch`` on all of them, and the two
are compared on the configurations both priced: the largest relative difference of the four
metrics, and how many configurations differ in mappable, reason or total cycles. Runs with
numpy and pyyaml only::

    python benchmarks/batch_pricing.py                   # ~30 s
    python benchmarks/batch_pricing.py --n 2000 --each 2000 --grid
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from evaluators.hardware.batch import METRICS, BatchPrices, price_batch, price_each  # noqa: E402
from evaluators.specs import AcceleratorSpec, ConvLayer  # noqa: E402

SIDES = (8, 16, 32, 64, 128)
DATAFLOWS = ("ws", "os", "is")


def conv(name: str, hw: int, k: int, cin: int, cout: int, stride: int = 1,
         groups: int = 1) -> ConvLayer:
    """A PyTorch-style conv (padding ``k // 2``) on an ``hw`` x ``hw`` input, 8-bit."""
    return ConvLayer(name=name, ifmap_h=hw, ifmap_w=hw, filter_h=k, filter_w=k, channels=cin,
                     num_filters=cout, stride=stride, padding=k // 2, groups=groups)


def resnet18() -> list[ConvLayer]:
    """torchvision ``resnet18``: 7x7/2 stem (max-pool to 56), 4 stages of 2 basic blocks with a
    1x1/2 downsample in stages 2-4, the 1000-way classifier as a 1x1 conv: 21 layers."""
    layers = [conv("conv1", 224, 7, 3, 64, 2)]
    hw, cin = 56, 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            p = f"layer{stage}.{block}"
            layers.append(conv(f"{p}.conv1", hw, 3, cin, cout, stride))
            out = hw // stride
            layers.append(conv(f"{p}.conv2", out, 3, cout, cout))
            if stride == 2:
                layers.append(conv(f"{p}.downsample", hw, 1, cin, cout, 2))
            hw, cin = out, cout
    layers.append(conv("fc", 1, 1, 512, 1000))
    return layers


def mobilenetv2() -> list[ConvLayer]:
    """torchvision ``mobilenet_v2`` (width 1.0): 3x3/2 stem, 17 inverted residual blocks
    (1x1 expand but in the first, 3x3 depthwise, 1x1 project), 1x1 to 1280, the classifier:
    53 layers."""
    layers = [conv("stem", 224, 3, 3, 32, 2)]
    hw, cin, b = 112, 32, 0
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            b += 1
            stride, mid = (s if i == 0 else 1), cin * t
            if t != 1:
                layers.append(conv(f"b{b}.expand", hw, 1, cin, mid))
            layers.append(conv(f"b{b}.dw", hw, 3, mid, mid, stride, groups=mid))
            hw //= stride
            layers.append(conv(f"b{b}.project", hw, 1, mid, c))
            cin = c
    layers.append(conv("conv_last", hw, 1, cin, 1280))
    layers.append(conv("fc", 1, 1, 1280, 1000))
    return layers


def random_configs(n: int, rng: np.random.Generator) -> list[AcceleratorSpec]:
    """``n`` configurations of the space in the module docstring."""
    return [
        AcceleratorSpec(
            dataflow=str(rng.choice(DATAFLOWS)),
            pe_rows=int(rng.choice(SIDES)),
            pe_cols=int(rng.choice(SIDES)),
            glb_kib=float(np.exp(rng.uniform(np.log(64.0), np.log(2048.0)))),
            dram_gbps=float(rng.uniform(4.0, 64.0)),
            freq_mhz=float(rng.uniform(200.0, 1000.0)),
        )
        for _ in range(n)
    ]


def grid_configs(rng: np.random.Generator) -> list[AcceleratorSpec]:
    """3 dataflows x 4 x 4 sides x 3 GLB sizes x 3 clocks x 5 random DRAM bandwidths."""
    return [
        AcceleratorSpec(dataflow=df, pe_rows=r, pe_cols=c, glb_kib=g, freq_mhz=f,
                        dram_gbps=float(rng.uniform(4.0, 64.0)))
        for df in DATAFLOWS for r in (8, 16, 32, 64) for c in (8, 16, 32, 64)
        for g in (128.0, 512.0, 2048.0) for f in (250.0, 500.0, 1000.0) for _ in range(5)
    ]


def differences(a: BatchPrices, b: BatchPrices) -> tuple[float, int]:
    """Max relative difference of the metrics over configurations both can run, and how
    many configurations differ in mappable, reason or total cycles."""
    ok = a.mappable & b.mappable
    rel = 0.0
    for m in METRICS:
        x, y = getattr(a, m)[ok], getattr(b, m)[ok]
        if x.size:
            rel = max(rel, float(np.max(np.abs(x - y) / np.maximum(np.abs(x), 1e-300))))
    other = (a.mappable != b.mappable) | (a.total_cycles != b.total_cycles)
    other |= np.array([r != s for r, s in zip(a.reasons, b.reasons)], dtype=bool)
    return rel, int(other.sum())


def timed(fn: Callable[..., BatchPrices], *args: Any) -> tuple[BatchPrices, float]:
    """``fn(*args)`` and the seconds it took."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def subset(p: BatchPrices, at: list[int]) -> BatchPrices:
    """The configurations of ``p`` at positions ``at``."""
    return BatchPrices(**{f.name: (v[at] if isinstance(v := getattr(p, f.name), np.ndarray)
                                   else tuple(v[i] for i in at))
                          for f in dataclasses.fields(p)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="random configurations (default 2000)")
    ap.add_argument("--each", type=int, default=200,
                    help="of them, how many price_each times one by one (default 200)")
    ap.add_argument("--grid", action="store_true", help="also the grid-shaped batch")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.n < 1 or not 1 <= args.each <= args.n:
        ap.error("need 1 <= --each <= --n")
    rng = np.random.default_rng(args.seed)
    batches = [(f"random {args.n}", random_configs(args.n, rng))]
    if args.grid:
        batches.append(("grid", grid_configs(rng)))

    print(f"numpy {metadata.version('numpy')}, Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs; one process, one thread")
    title = (f"{'workload':<12} {'configs':<11} {'layers':>6} {'each/s':>9} {'batch/s':>10} "
             f"{'batch s':>8} {'ratio':>7} {'max rel diff':>13} {'differ':>8} {'mappable':>9}")
    print(title)
    print("-" * len(title))
    for net, layers in (("ResNet-18", resnet18()), ("MobileNetV2", mobilenetv2())):
        for label, accs in batches:
            each_n = min(args.each, len(accs))
            at = sorted({round(x) for x in np.linspace(0, len(accs) - 1, each_n)})  # spread
            price_batch(layers, accs[:8])  # warm the mapper's shape caches for both paths
            one, t_each = timed(price_each, layers, [accs[i] for i in at])
            many, t_batch = timed(price_batch, layers, accs)
            each_rate = len(layers) * len(at) / t_each
            batch_rate = len(layers) * len(accs) / t_batch
            rel, differ = differences(one, subset(many, at))
            print(f"{net:<12} {label:<11} {len(layers):>6} {each_rate:>9,.0f} "
                  f"{batch_rate:>10,.0f} {t_batch:>8.2f} {batch_rate / each_rate:>6.1f}x "
                  f"{rel:>13.1e} {differ:>4}/{len(at):<4} {many.mappable.mean():>8.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
