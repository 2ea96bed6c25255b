"""Grouped and depthwise convolutions in the systolic model."""

from __future__ import annotations

import numpy as np
import pytest

from evaluators.hardware import evaluate_layer
from evaluators.hardware.systolic import plan_tiling
from evaluators.specs import AcceleratorSpec, ConvLayer, SpecError

ACC = AcceleratorSpec(pe_rows=16, pe_cols=16, glb_kib=64, rf_bytes=8)


def test_groups_one_is_an_ordinary_conv() -> None:
    a = ConvLayer("c", 30, 30, 3, 3, 32, 64, 1, 1)
    b = ConvLayer("c", 30, 30, 3, 3, 32, 64, 1, 1, groups=1)
    assert evaluate_layer(a, ACC) == evaluate_layer(b, ACC)


def test_grouped_conv_is_groups_independent_gemms() -> None:
    """G groups cost G times one group's folds (SCALE-Sim has no groups: G separate layers)."""
    g = 4
    grouped = ConvLayer("g", 16, 16, 3, 3, 32, 64, 1, 1, groups=g)
    one = ConvLayer("one", 16, 16, 3, 3, 32 // g, 64 // g, 1, 1)
    assert grouped.macs == g * one.macs and grouped.weight_count == g * one.weight_count
    acc = AcceleratorSpec(pe_rows=16, pe_cols=16, glb_kib=64, rf_bytes=1)  # no overlap
    c_g, c_one = evaluate_layer(grouped, acc), evaluate_layer(one, acc)
    assert c_g.compute_cycles == g * c_one.compute_cycles


def test_depthwise_is_poorly_utilized_but_never_below_compulsory() -> None:
    dw = ConvLayer("dw", 56, 56, 3, 3, 64, 64, 1, 1, groups=64)
    dense = ConvLayer("c", 56, 56, 3, 3, 64, 64, 1, 1)
    c_dw, c_dense = evaluate_layer(dw, ACC), evaluate_layer(dense, ACC)
    assert c_dw.utilization < 0.1 < 0.9 < c_dense.utilization
    t = plan_tiling(dw, ACC)
    assert t.input_bytes + t.weight_bytes + t.output_bytes >= t.compulsory_bytes


def test_grouped_dram_never_below_compulsory_random() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        g = int(rng.choice([1, 2, 4, 8]))
        c, k = g * int(rng.integers(1, 16)), g * int(rng.integers(1, 16))
        h = int(rng.integers(3, 40))
        r = int(rng.choice([1, 3, 5]))
        layer = ConvLayer("x", h, h, r, r, c, k, int(rng.integers(1, 3)), r // 2, groups=g)
        acc = AcceleratorSpec(glb_kib=float(rng.choice([4, 16, 64, 256])))
        try:
            t = plan_tiling(layer, acc)
        except Exception:  # noqa: BLE001 - an unmappable draw is fine here
            continue
        assert t.input_bytes + t.weight_bytes + t.output_bytes >= t.compulsory_bytes - 1e-6


def test_groups_must_divide_channels() -> None:
    with pytest.raises(SpecError, match="groups"):
        evaluate_layer(ConvLayer("bad", 8, 8, 3, 3, 6, 8, 1, 1, groups=4), ACC)
