"""Golden values and properties of the systolic accelerator model (evaluators.hardware)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from evaluators.hardware import (
    SystolicModel,
    area_mm2,
    evaluate_layer,
    evaluate_network,
    load_accelerator_yaml,
    make_model,
    plan_tiling,
    spec_from_dict,
    tables,
    validate_accelerator,
)
from evaluators.hardware.systolic import ORDERS
from evaluators.specs import (
    MAPPER_OBJECTIVES,
    AcceleratorSpec,
    ConvLayer,
    InfeasibleDesign,
    LayerCost,
    SpecError,
)

ROOT = Path(__file__).resolve().parents[1]

# ResNet-18 conv2 as a SCALE-Sim layer: 58x58 ifmap (56x56 + the padding), 3x3, 64 -> 64.
CONV2 = ConvLayer("conv2", 58, 58, 3, 3, 64, 64, 1)
ARRAY_32 = AcceleratorSpec(pe_rows=32, pe_cols=32, glb_kib=64.0)


def _random_layer(rng: np.random.Generator, **overrides) -> ConvLayer:
    r = int(rng.choice([1, 3, 5, 7]))
    stride = int(rng.integers(1, 3))
    pad = int(rng.integers(0, r // 2 + 1))
    h = int(rng.integers(max(r - 2 * pad, 1), 40))
    values = dict(
        name="rand",
        ifmap_h=h,
        ifmap_w=int(rng.integers(max(r - 2 * pad, 1), 40)),
        filter_h=r,
        filter_w=r,
        channels=int(rng.integers(1, 200)),
        num_filters=int(rng.integers(1, 300)),
        stride=stride,
        padding=pad,
        batch=int(rng.integers(1, 4)),
        weight_bits=int(rng.choice([2, 4, 8, 16])),
        input_bits=int(rng.choice([4, 8, 16])),
        output_bits=int(rng.choice([8, 16, 32])),
        weight_density=float(rng.choice([1.0, 0.5, 0.1])),
    )
    values.update(overrides)
    return ConvLayer(**values)


def _random_acc(rng: np.random.Generator, **overrides) -> AcceleratorSpec:
    values = dict(
        dataflow=str(rng.choice(["ws", "os", "is"])),
        pe_rows=int(rng.integers(2, 70)),
        pe_cols=int(rng.integers(2, 70)),
        glb_kib=float(rng.choice([16.0, 64.0, 256.0, 2048.0])),
        rf_bytes=int(rng.choice([4, 8])),
        dram_gbps=float(rng.uniform(1.0, 100.0)),
        freq_mhz=float(rng.uniform(100.0, 1000.0)),
        dram_type=str(rng.choice(["lpddr4", "ddr3", "hbm2"])),
    )
    values.update(overrides)
    return AcceleratorSpec(**values)


def _feasible_cases(seed: int, n: int):
    """(layer, acc) pairs drawn with a seeded RNG; infeasible draws are skipped."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        layer, acc = _random_layer(rng), _random_acc(rng)
        try:
            evaluate_layer(layer, acc)
        except InfeasibleDesign:
            continue
        out.append((layer, acc))
    return out


def _lines(n_out: int, n_in: int, r: int, s: int, p: int, t: int) -> list[int]:
    """Real input lines (rows or columns) each tile of ``t`` output lines touches."""
    out = []
    for e0 in range(0, n_out, t):
        lines: set[int] = set()
        for e in range(e0, min(e0 + t, n_out)):
            lines.update(i for i in range(e * s - p, e * s - p + r) if 0 <= i < n_in)
        out.append(len(lines))
    return out


def _touched_pixels(layer: ConvLayer) -> int:
    """Pixels of one input channel that some window reads (brute force)."""
    h, w = layer.ifmap_h, layer.ifmap_w
    p, s = layer.padding, layer.stride
    rows = _lines(layer.ofmap_h, h, layer.filter_h, s, p, layer.ofmap_h)[0]
    cols = _lines(layer.ofmap_w, w, layer.filter_w, s, p, layer.ofmap_w)[0]
    mask = np.zeros((h + 2 * p, w + 2 * p), dtype=bool)
    for e in range(layer.ofmap_h):
        for f in range(layer.ofmap_w):
            mask[e * s : e * s + layer.filter_h, f * s : f * s + layer.filter_w] = True
    assert mask[p : p + h, p : p + w].sum() == rows * cols
    return rows * cols


# --------------------------------------------------------------------------- golden values


@pytest.mark.parametrize(
    ("dataflow", "cycles"), [("ws", 116_279), ("os", 125_047), ("is", 278_711)]
)
def test_scalesim_golden_compute_cycles(dataflow: str, cycles: int) -> None:
    # SCALE-Sim 3.0.0, 32x32 PEs, no stalls (reference/hardware.md).
    acc = dataclasses.replace(ARRAY_32, dataflow=dataflow)
    assert evaluate_layer(CONV2, acc).compute_cycles == cycles


def test_ideal_cycles_hand_derived() -> None:
    cost = evaluate_layer(CONV2, ARRAY_32)
    assert CONV2.macs == 56 * 56 * 64 * 64 * 9 == 115_605_504
    assert cost.mapping["ideal_cycles"] == 112_896 == CONV2.macs // 1024
    assert cost.mapping_utilization == pytest.approx(112_896 / 116_279)


def test_ws_mapping_is_reported() -> None:
    m = evaluate_layer(CONV2, ARRAY_32).mapping
    assert (m["spatial_rows"], m["spatial_cols"], m["temporal"]) == (576, 64, 3136)
    assert (m["folds_row"], m["folds_col"], m["folds"]) == (18, 2, 36)
    assert m["order"] in ORDERS
    assert m["kt"] >= 32 and m["ct"] >= 1 and m["et"] >= 1 and m["ft"] >= 1
    assert m["k_tiles"] * m["c_tiles"] * m["row_tiles"] * m["col_tiles"] >= 1
    json.dumps(m)  # JSON-able


def test_folds_use_ceil() -> None:
    # Spatial rows = R*S*C = pe_rows + 1 needs two row folds; the whole array is charged.
    acc = AcceleratorSpec(pe_rows=32, pe_cols=32, double_buffered=False)
    fits = evaluate_layer(ConvLayer("a", 8, 8, 1, 1, 32, 32, 1), acc)
    over = evaluate_layer(ConvLayer("b", 8, 8, 1, 1, 33, 32, 1), acc)
    assert fits.mapping["folds_row"] == 1 and over.mapping["folds_row"] == 2
    per_fold = 2 * 32 + 32 + 64 - 2
    assert fits.compute_cycles == per_fold - 1
    assert over.compute_cycles == 2 * per_fold - 1
    assert over.mapping_utilization < fits.mapping_utilization


def test_double_buffering_hides_preloads() -> None:
    cost = evaluate_layer(CONV2, ARRAY_32)  # rf_bytes=4 holds two 8-bit weights
    m = cost.mapping
    assert m["preload_cycles_hidden"] == (36 - 1) * min(32, 3136)
    assert m["compute_cycles_overlapped"] == cost.compute_cycles - m["preload_cycles_hidden"]
    single = dataclasses.replace(ARRAY_32, rf_bytes=1)
    off = dataclasses.replace(ARRAY_32, double_buffered=False)
    for acc in (single, off):
        c = evaluate_layer(CONV2, acc)
        assert c.mapping["preload_cycles_hidden"] == 0
        assert c.mapping["compute_cycles_overlapped"] == c.compute_cycles == 116_279
    os_cost = evaluate_layer(CONV2, dataclasses.replace(ARRAY_32, dataflow="os"))
    assert os_cost.mapping["preload_cycles_hidden"] == 0


def test_register_file_must_hold_a_stationary_word() -> None:
    with pytest.raises(InfeasibleDesign, match="rf_bytes >= 4"):
        evaluate_layer(CONV2, dataclasses.replace(ARRAY_32, dataflow="os", rf_bytes=2))
    wide = dataclasses.replace(CONV2, input_bits=16)
    with pytest.raises(InfeasibleDesign, match="rf_bytes >= 2"):
        evaluate_layer(wide, dataclasses.replace(ARRAY_32, dataflow="is", rf_bytes=1))


def test_latency_is_a_roofline_of_compute_and_dram() -> None:
    for layer, acc in _feasible_cases(seed=1, n=40):
        c = evaluate_layer(layer, acc)
        bytes_per_cycle = acc.dram_gbps * 1e9 / (acc.freq_mhz * 1e6)
        dram_cycles = (c.dram_read_bytes + c.dram_write_bytes) / bytes_per_cycle
        assert c.mapping["dram_cycles"] == pytest.approx(dram_cycles)
        assert c.total_cycles == max(
            c.mapping["compute_cycles_overlapped"], math.ceil(c.mapping["dram_cycles"])
        )
        assert c.latency_ms == pytest.approx(c.total_cycles / (acc.freq_mhz * 1e3))
        assert 0 < c.utilization <= 1 and 0 < c.mapping_utilization <= 1


# --------------------------------------------------------------------------- DRAM and mapper


def test_whole_layer_in_buffer_is_exactly_compulsory() -> None:
    c = evaluate_layer(CONV2, dataclasses.replace(ARRAY_32, glb_kib=4096.0))
    compulsory = 58 * 58 * 64 + 3 * 3 * 64 * 64 + 56 * 56 * 64
    assert c.dram_read_bytes + c.dram_write_bytes == compulsory
    assert c.dram_write_bytes == 56 * 56 * 64


def test_dram_never_below_compulsory() -> None:
    # Compulsory inputs are the pixels some window touches (not the padding, not the lines a
    # stride larger than the filter skips), counted here by brute force.
    for layer, acc in _feasible_cases(seed=2, n=120):
        c = evaluate_layer(layer, acc)
        ib, ob = layer.input_bits / 8, layer.output_bits / 8
        weights = layer.weight_count * layer.weight_bits / 8
        if acc.weight_compression and layer.weight_density < 1:
            weights = min(weights, layer.weight_density * weights + layer.weight_count / 8)
        inputs = layer.batch * _touched_pixels(layer) * layer.channels * ib
        outputs = layer.batch * layer.ofmap_h * layer.ofmap_w * layer.num_filters * ob
        assert c.mapping["dram_input_bytes"] >= inputs
        assert c.dram_read_bytes >= math.floor(inputs + weights)
        assert c.dram_write_bytes >= math.floor(outputs)
        assert c.mapping["dram_compulsory_bytes"] == pytest.approx(inputs + weights + outputs)


def test_larger_glb_never_adds_dram_traffic() -> None:
    rng = np.random.default_rng(3)
    for _ in range(60):
        layer = _random_layer(rng)
        prev = None
        for kib in (8.0, 16.0, 32.0, 64.0, 128.0, 512.0, 4096.0):
            acc = AcceleratorSpec(glb_kib=kib)
            try:
                t = plan_tiling(layer, acc)
            except InfeasibleDesign:
                assert prev is None  # once a size fits, every larger one fits
                continue
            traffic = t.input_bytes + t.weight_bytes + t.output_bytes
            assert traffic >= t.compulsory_bytes - 1e-6
            if prev is not None:
                assert traffic <= prev + 1e-6
            prev = traffic


def test_mapper_respects_the_buffer_and_infeasible_message() -> None:
    t = plan_tiling(CONV2, ARRAY_32)
    assert t.glb_bytes_used <= 64 * 1024
    with pytest.raises(InfeasibleDesign, match=r"needs \d+ bytes, glb holds 1024"):
        plan_tiling(CONV2, dataclasses.replace(ARRAY_32, glb_kib=1.0))
    with pytest.raises(InfeasibleDesign):
        evaluate_network([CONV2], dataclasses.replace(ARRAY_32, glb_kib=1.0))


def test_weight_compression_only_when_smaller() -> None:
    acc = dataclasses.replace(ARRAY_32, glb_kib=4096.0)
    dense_bytes = CONV2.weight_count
    sparse = dataclasses.replace(CONV2, weight_density=0.25)
    c = evaluate_layer(sparse, acc)
    assert c.mapping["dram_weight_bytes"] == pytest.approx(0.25 * dense_bytes + dense_bytes / 8)
    nearly_dense = dataclasses.replace(CONV2, weight_density=0.95)
    assert evaluate_layer(nearly_dense, acc).mapping["dram_weight_bytes"] == dense_bytes
    off = dataclasses.replace(acc, weight_compression=False)
    assert evaluate_layer(sparse, off).mapping["dram_weight_bytes"] == dense_bytes


# ------------------------------------------------- the mapper: array-sized tiles, C and F tiles

_LOOPS = ("K", "C", "N", "E", "F")
_RELEVANT = {"W": {"K", "C"}, "I": {"C", "N", "E", "F"}, "O": {"K", "N", "E", "F"}}


def _fetches(order: str, trips: dict[str, np.ndarray], operand: str) -> np.ndarray:
    """How many times an operand's data comes from DRAM under a loop order (outermost first).

    The product of the trip counts of the loops it does not depend on that lie outside its
    innermost loop with more than one trip (for outputs: how often each psum leaves the GLB).
    """
    rel = _RELEVANT[operand]
    factor: np.ndarray | int = 1
    seen: np.ndarray | bool = False
    for loop in reversed(order):
        if loop in rel:
            seen = seen | (trips[loop] > 1)
        else:
            factor = factor * np.where(seen, trips[loop], 1)
    return np.asarray(factor)


def _expand(order: str) -> str:
    """A mapper order over K, C and S (spatial) as five loops: S = image > row > column."""
    return order.replace("S", "NEF")


def _reference(layer: ConvLayer, acc: AcceleratorSpec):
    """Brute force: every kt, ct, et, ft the array allows and all 120 orders of the 5 loops;
    with ``ws`` also every tile with its weights streamed (a staging buffer of one fold in
    place of the weight tile; weights then come once per visit of a tile, i.e. once per
    image, row and column tile, whatever the order).

    Returns (least DRAM bytes or inf, a function pricing a given tile and order).
    """
    big_k, big_c, e, f = layer.num_filters, layer.channels, layer.ofmap_h, layer.ofmap_w
    r, s_, p, st, n = layer.filter_h, layer.filter_w, layer.padding, layer.stride, layer.batch
    ib, wb, ob = layer.input_bits / 8, layer.weight_bits / 8, layer.output_bits / 8
    df = acc.dataflow
    k_ok = [
        x
        for x in range(1, big_k + 1)
        if x == big_k or df == "is" or x % min(big_k, acc.pe_cols) == 0
    ]
    c_ok = [
        x
        for x in range(1, big_c + 1)
        if x == big_c or df == "os" or (r * s_ * x) % acc.pe_rows == 0
    ]
    min_px = {"ws": 1, "os": min(e * f, acc.pe_rows), "is": min(e * f, acc.pe_cols)}[df]
    rows = {t: _lines(e, layer.ifmap_h, r, st, p, t) for t in range(1, e + 1)}
    cols = {t: _lines(f, layer.ifmap_w, s_, st, p, t) for t in range(1, f + 1)}
    grid = np.array(
        [(kt, ct, et, ft) for kt in k_ok for ct in c_ok for et in rows for ft in cols], float
    )
    kt, ct, et, ft = grid.T
    max_rows = np.array([max(rows[int(t)]) for t in et])
    max_cols = np.array([max(cols[int(t)]) for t in ft])
    sum_rows = np.array([sum(rows[int(t)]) for t in et])
    sum_cols = np.array([sum(cols[int(t)]) for t in ft])
    w_tile = kt * ct * r * s_ * wb
    rest = ct * ib * max_rows * max_cols + kt * 4 * et * ft
    stage = acc.pe_rows * acc.pe_cols * wb
    fits = (w_tile + rest <= acc.glb_kib * 1024) & (et * ft >= min_px)
    fits_streamed = (np.minimum(w_tile, stage) + rest <= acc.glb_kib * 1024) & (et * ft >= min_px)
    if df != "ws":
        fits_streamed[:] = False
    trips = {
        "K": np.ceil(big_k / kt),
        "C": np.ceil(big_c / ct),
        "N": np.full_like(kt, n),
        "E": np.ceil(e / et),
        "F": np.ceil(f / ft),
    }
    w_once = layer.weight_count * wb
    outs = n * e * f * big_k

    def price(order: str, sel=slice(None), streamed: bool = False):
        t = {k: v[sel] for k, v in trips.items()}
        i = n * big_c * ib * sum_rows[sel] * sum_cols[sel] * _fetches(order, t, "I")
        visits = t["N"] * t["E"] * t["F"]
        w = w_once * (visits if streamed else _fetches(order, t, "W"))
        o = outs * ob + 2 * outs * 4 * (_fetches(order, t, "O") - 1)
        return i, w, o

    best = np.inf
    for perm in itertools.permutations(_LOOPS):
        for streamed, ok in ((False, fits), (True, fits_streamed)):
            i, w, o = price("".join(perm), streamed=streamed)
            best = min(best, float(np.where(ok, i + w + o, np.inf).min()))

    def price_tile(order: str, t) -> tuple[float, float, float]:
        sel = np.flatnonzero((grid == (t.kt, t.ct, t.et, t.ft)).all(axis=1))
        ok = fits_streamed if t.weights_streamed else fits
        assert len(sel) == 1 and ok[sel[0]]
        return tuple(float(x[0]) for x in price(_expand(order), sel, t.weights_streamed))

    return best, price_tile


def _small_case(rng: np.random.Generator) -> tuple[ConvLayer, AcceleratorSpec]:
    r = int(rng.choice([1, 2, 3]))
    layer = ConvLayer(
        "small",
        int(rng.integers(r, 10)),
        int(rng.integers(r, 10)),
        r,
        r,
        int(rng.integers(1, 20)),
        int(rng.integers(1, 20)),
        stride=int(rng.integers(1, 4)),
        padding=int(rng.integers(0, r)),
        batch=int(rng.integers(1, 3)),
        input_bits=int(rng.choice([4, 8])),
        output_bits=int(rng.choice([8, 16])),
    )
    acc = AcceleratorSpec(
        dataflow=str(rng.choice(["ws", "os", "is"])),
        pe_rows=int(rng.integers(2, 9)),
        pe_cols=int(rng.integers(2, 9)),
        glb_kib=float(rng.choice([0.25, 0.5, 1.0, 2.0, 8.0])),
        rf_bytes=4,
    )
    return layer, acc


def test_mapper_finds_the_least_traffic_of_every_tile_and_loop_order() -> None:
    """Against brute force: all tile sizes (not only distinct tile counts) and all 120 orders
    of the K, C, image, row and column loops, with halos and psum spills counted per loop."""
    rng = np.random.default_rng(11)
    checked = spilled = streamed = 0
    for _ in range(160):
        layer, acc = _small_case(rng)
        best, price_tile = _reference(layer, acc)
        try:
            t = plan_tiling(layer, acc)
        except InfeasibleDesign:
            assert best == np.inf
            continue
        assert t.total_bytes == pytest.approx(best, rel=1e-12)
        # The reported order moves exactly the reported bytes of each operand.
        i, w, o = price_tile(t.order, t)
        assert (t.input_bytes, t.weight_bytes, t.output_bytes) == pytest.approx((i, w, o))
        final = layer.batch * layer.ofmap_h * layer.ofmap_w * layer.num_filters
        final *= layer.output_bits / 8
        assert t.psum_read_bytes == t.psum_write_bytes == pytest.approx((o - final) / 2)
        checked += 1
        spilled += t.psum_read_bytes > 0
        streamed += t.weights_streamed
    assert checked >= 110 and spilled >= 3 and streamed >= 10


def _array_cases(seed: int, n: int):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        layer = _random_layer(rng, weight_density=1.0)
        acc = _random_acc(rng, glb_kib=float(rng.choice([16.0, 64.0, 256.0])))
        try:
            evaluate_layer(layer, acc)
        except InfeasibleDesign:
            continue
        out.append((layer, acc))
    return out


def test_chosen_tile_fits_the_glb_counted_with_the_full_array() -> None:
    """A WS/OS fold produces min(K, pe_cols) channels at once, so a tile holds their weights
    and 32-bit psums; WS/IS C tiles make whole row folds; OS/IS tiles hold a fold of pixels."""
    for layer, acc in _array_cases(seed=12, n=150):
        m = evaluate_layer(layer, acc).mapping
        kt, ct, et, ft = m["kt"], m["ct"], m["et"], m["ft"]
        big_k, big_c = layer.num_filters, layer.channels
        r, s_ = layer.filter_h, layer.filter_w
        pixels = layer.ofmap_h * layer.ofmap_w
        if acc.dataflow in ("ws", "os"):
            assert kt >= min(big_k, acc.pe_cols)
            assert kt == big_k or kt % min(big_k, acc.pe_cols) == 0
        if acc.dataflow in ("ws", "is"):
            assert ct == big_c or (r * s_ * ct) % acc.pe_rows == 0
        if acc.dataflow == "os":
            assert et * ft >= min(pixels, acc.pe_rows)
        if acc.dataflow == "is":
            assert et * ft >= min(pixels, acc.pe_cols)
        rows = max(_lines(layer.ofmap_h, layer.ifmap_h, r, layer.stride, layer.padding, et))
        cols = max(_lines(layer.ofmap_w, layer.ifmap_w, s_, layer.stride, layer.padding, ft))
        weights = kt * ct * r * s_ * layer.weight_bits / 8  # weights of the tile, dense
        if m["weights_streamed"]:  # ws only: a staging buffer of one fold
            assert acc.dataflow == "ws"
            weights = min(weights, acc.pe_rows * acc.pe_cols * layer.weight_bits / 8)
        need = (
            weights
            + ct * rows * cols * layer.input_bits / 8  # the input lines the tile touches
            + kt * et * ft * 4  # 32-bit psums of every channel the tile computes
        )
        assert m["glb_bytes_used"] == pytest.approx(need)
        assert need <= acc.glb_kib * 1024


# ResNet-18 layers of docs/hardware/zigzag.md (SCALE-Sim style: padding in the ifmap).
CONV4_X = ConvLayer("conv4_x", 16, 16, 3, 3, 256, 256, 1)
CONV5_X = ConvLayer("conv5_x", 9, 9, 3, 3, 512, 512, 1)
CONV4_DS = ConvLayer("conv4_ds", 28, 28, 1, 1, 128, 256, 2)


def test_conv4_and_conv5_on_64_kib_stream_their_weights() -> None:
    # One 32-channel K tile with all C is 73,728 / 147,456 B of weights: more than 64 KiB.
    # Held in the GLB, that forces C tiles; streamed one fold at a time (ws), it leaves the
    # GLB to the psums and the inputs. Both mappings are ZigZag's (docs/hardware/zigzag.md).
    t4 = plan_tiling(CONV4_X, ARRAY_32)
    # conv4_x: psums of 64 channels stay over 8 C tiles; inputs once per 64-channel K tile.
    assert t4.weights_streamed and (t4.kt, t4.c_tiles) == (64, 8)
    assert (t4.input_bytes, t4.weight_bytes, t4.output_bytes) == (
        4 * 16 * 16 * 256,
        589_824,
        14 * 14 * 256,
    )
    # conv5_x: the whole 9 x 9 x 512 input stays while K tiles stream their weights: every
    # operand moves once, the compulsory minimum.
    t5 = plan_tiling(CONV5_X, ARRAY_32)
    assert t5.weights_streamed and t5.c_tiles == 1
    assert t5.total_bytes == t5.compulsory_bytes == 9 * 9 * 512 + 9 * 512 * 512 + 7 * 7 * 512
    for t in (t4, t5):
        assert t.glb_bytes_used <= 64 * 1024
    # Weights held in the GLB (os / is: reused across pixel folds, so never streamed).
    for dataflow in ("os", "is"):
        acc = dataclasses.replace(ARRAY_32, dataflow=dataflow)
        for layer in (CONV4_X, CONV5_X):
            t = plan_tiling(layer, acc)
            assert not t.weights_streamed and t.glb_bytes_used <= 64 * 1024


def test_strided_1x1_reads_only_the_touched_pixels() -> None:
    # 1x1, stride 2 on 28x28: 14x14 of the 28x28 pixels are read.
    t = plan_tiling(CONV4_DS, ARRAY_32)
    assert t.input_bytes == 14 * 14 * 128
    assert t.compulsory_bytes == 14 * 14 * 128 + 128 * 256 + 14 * 14 * 256
    assert t.total_bytes == 108_032  # = ZigZag's count (docs/hardware/zigzag.md)
    # Filter 2, stride 3: rows/cols 0,1, 3,4, ... are touched, 2, 5, ... are not.
    layer = ConvLayer("gap", 12, 12, 2, 2, 8, 8, 3)
    assert layer.ofmap_h == 4
    big = dataclasses.replace(ARRAY_32, glb_kib=1024.0)
    assert plan_tiling(layer, big).input_bytes == (4 * 2) ** 2 * 8
    # The last row and column of a 3x3 stride-2 layer on an even input are never read.
    down = ConvLayer("s2", 58, 58, 3, 3, 64, 128, 2)
    assert plan_tiling(down, big).input_bytes == 57 * 57 * 64


def test_psum_spills_are_counted_at_32_bit() -> None:
    layer = ConvLayer("spill", 16, 16, 3, 3, 256, 64, 1)
    # is: the GLB holds the input tile (its im2col folds reuse it) and the weights (every
    # pixel fold reuses them); ws would stream its weights and keep the psums instead.
    acc = dataclasses.replace(ARRAY_32, glb_kib=16.0, dataflow="is")
    t = plan_tiling(layer, acc)
    outs = 14 * 14 * 64
    assert t.c_tiles > 1 and t.order in ("KCS", "CKS", "SCK", "CSK")
    assert t.psum_read_bytes == t.psum_write_bytes == outs * 4 * (t.c_tiles - 1)
    assert t.output_bytes == outs + 2 * t.psum_read_bytes
    c = evaluate_layer(layer, acc)
    assert c.dram_read_bytes == math.ceil(t.input_bytes + t.weight_bytes + t.psum_read_bytes)
    assert c.dram_write_bytes == outs + t.psum_write_bytes
    assert c.mapping["dram_psum_bytes"] == 2 * t.psum_read_bytes
    # With room for the psums of a whole K tile across the C loop, nothing spills.
    roomy = plan_tiling(layer, dataclasses.replace(acc, glb_kib=64.0))
    assert roomy.psum_read_bytes == 0 and roomy.total_bytes < t.total_bytes


def test_larger_glb_never_adds_dram_traffic_any_dataflow() -> None:
    rng = np.random.default_rng(13)
    for _ in range(60):
        layer = _random_layer(rng)
        acc = _random_acc(rng)
        prev = None
        for kib in (4.0, 16.0, 64.0, 256.0, 1024.0, 8192.0):
            try:
                t = plan_tiling(layer, dataclasses.replace(acc, glb_kib=kib))
            except InfeasibleDesign:
                assert prev is None
                continue
            assert t.total_bytes >= t.compulsory_bytes - 1e-6
            if prev is not None:
                assert t.total_bytes <= prev + 1e-6
            prev = t.total_bytes


# --------------------------------------------------------------------------- properties


def test_more_bandwidth_never_adds_cycles() -> None:
    for layer, acc in _feasible_cases(seed=4, n=60):
        slow = evaluate_layer(layer, acc).total_cycles
        fast = evaluate_layer(layer, dataclasses.replace(acc, dram_gbps=acc.dram_gbps * 3))
        assert fast.total_cycles <= slow


def test_fewer_bits_never_add_mac_energy() -> None:
    rng = np.random.default_rng(5)
    acc = AcceleratorSpec(glb_kib=4096.0)
    for _ in range(60):
        layer = _random_layer(rng, weight_bits=16, input_bits=16)
        base = evaluate_layer(layer, acc).mac_energy_pj
        for wb, ib in ((8, 16), (16, 8), (8, 8), (4, 8), (2, 4)):
            fewer = dataclasses.replace(layer, weight_bits=wb, input_bits=ib)
            e = evaluate_layer(fewer, acc).mac_energy_pj
            assert e <= base
            base_same_w = evaluate_layer(dataclasses.replace(layer, weight_bits=wb), acc)
            assert e <= base_same_w.mac_energy_pj


def test_more_pes_never_increase_compute_cycles_when_evenly_divisible() -> None:
    rng = np.random.default_rng(6)
    for _ in range(60):
        df = str(rng.choice(["ws", "os", "is"]))
        small = (int(rng.choice([4, 8, 16])), int(rng.choice([4, 8, 16])))
        big = (small[0] * int(rng.choice([1, 2, 4])), small[1] * int(rng.choice([1, 2, 4])))
        # Make every spatial extent a multiple of the bigger array's sides (8x8 ofmap for
        # os/is, whose pixel dimension is spatial; 64 is a multiple of every side drawn).
        r = int(rng.choice([1, 3]))
        m1, m2, free = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 50))
        if df == "ws":  # rows = R*S*C, cols = K
            c, k = big[0] * m1, big[1] * m2
        elif df == "os":  # rows = E*F = 64, cols = K
            c, k = free, big[1] * m2
        else:  # rows = R*S*C, cols = E*F = 64
            c, k = big[0] * m1, free
        layer = ConvLayer("l", 7 + r, 7 + r, r, r, c, k, 1)
        assert layer.ofmap_h * layer.ofmap_w % big[0] == 0 and 64 % big[1] == 0
        a = AcceleratorSpec(dataflow=df, pe_rows=small[0], pe_cols=small[1], glb_kib=4096.0)
        b = dataclasses.replace(a, pe_rows=big[0], pe_cols=big[1])
        assert evaluate_layer(layer, b).compute_cycles <= evaluate_layer(layer, a).compute_cycles


def test_zero_gating_scales_multiplier_energy_by_density() -> None:
    sparse = dataclasses.replace(CONV2, weight_density=0.5)
    gated = evaluate_layer(sparse, ARRAY_32).mac_energy_pj
    plain = evaluate_layer(sparse, dataclasses.replace(ARRAY_32, zero_gating=False))
    assert gated == pytest.approx(CONV2.macs * (0.2 * 0.5 + 0.1))
    assert plain.mac_energy_pj == pytest.approx(CONV2.macs * (0.2 + 0.1))
    # zero inputs gate the multiplier too: it switches only where both operands are non-zero
    both = dataclasses.replace(sparse, input_density=0.4)
    assert evaluate_layer(both, ARRAY_32).mac_energy_pj == pytest.approx(
        CONV2.macs * (0.2 * 0.5 * 0.4 + 0.1))
    assert evaluate_layer(both, dataclasses.replace(ARRAY_32, zero_gating=False))\
        .mac_energy_pj == pytest.approx(plain.mac_energy_pj)


@pytest.mark.parametrize("objective", MAPPER_OBJECTIVES)
def test_input_zeros_change_energy_never_the_dataflow_choice(objective: str) -> None:
    """``dataflow: auto`` ranks dataflows at dense inputs: the zero-input saving is the same
    for each, so a layer's zeros lower its energy and leave its dataflow and cycles alone."""
    acc = dataclasses.replace(ARRAY_32, dataflow="auto", mapper_objective=objective)
    fc = ConvLayer("fc", 1, 1, 1, 1, 512, 1000, batch=4)
    for layer in (CONV2, fc, ConvLayer("s2", 29, 29, 3, 3, 64, 128, 2)):
        dense = evaluate_layer(layer, acc)
        for d in (0.7, 0.2):
            c = evaluate_layer(dataclasses.replace(layer, input_density=d), acc)
            scores = c.mapping["dataflow_choice"]["candidates"]
            assert scores == pytest.approx(dense.mapping["dataflow_choice"]["candidates"])
            assert c.mapping["dataflow"] == dense.mapping["dataflow"]
            assert c.total_cycles == dense.total_cycles
            saved = c.mapping["input_gating_saved_pj"]
            assert saved > 0 and c.energy_pj + saved == pytest.approx(dense.energy_pj)


# --------------------------------------------------------------------------- costs add up


def test_costs_add_up() -> None:
    layers = [
        CONV2,
        ConvLayer("down", 58, 58, 3, 3, 64, 128, 2),
        ConvLayer("pw", 28, 28, 1, 1, 128, 256, 1, weight_density=0.3),
        ConvLayer("fc", 1, 1, 1, 1, 512, 1000, 1),
    ]
    report = evaluate_network(layers, ARRAY_32)
    t = report.total
    assert len(report.layers) == 4
    assert t.energy_pj == pytest.approx(sum(c.energy_pj for c in report.layers), rel=1e-12)
    assert t.total_cycles == sum(c.total_cycles for c in report.layers)
    assert t.compute_cycles == sum(c.compute_cycles for c in report.layers)
    assert t.dram_read_bytes == sum(c.dram_read_bytes for c in report.layers)
    assert t.macs == sum(layer.macs for layer in layers)
    assert t.latency_ms == pytest.approx(sum(c.latency_ms for c in report.layers))
    for field in ("mac_energy_pj", "rf_energy_pj", "glb_energy_pj", "dram_energy_pj"):
        assert getattr(t, field) == pytest.approx(sum(getattr(c, field) for c in report.layers))
    assert report.power_w == pytest.approx(t.energy_pj * 1e-12 / (t.latency_ms * 1e-3))
    assert report.area_mm2 == pytest.approx(area_mm2(ARRAY_32, weight_bits=8, input_bits=8))
    json.dumps(report.to_dict())


def test_single_layer_network_equals_layer() -> None:
    report = evaluate_network([CONV2], ARRAY_32)
    layer = evaluate_layer(CONV2, ARRAY_32)
    assert isinstance(report.total, LayerCost) and report.total.name == "total"
    assert report.total.total_cycles == layer.total_cycles
    assert report.total.energy_pj == pytest.approx(layer.energy_pj)


# --------------------------------------------------------------------------- TPU v1 anchor


def test_tpu_v1_peak_and_memory_bound_fc() -> None:
    tpu = load_accelerator_yaml(ROOT / "experiments/accelerators/tpu_v1_like.yaml")
    model = make_model(tpu)
    assert isinstance(model, SystolicModel)
    assert model.peak_ops_per_s == 2 * 256 * 256 * 700e6
    assert model.peak_ops_per_s / 1e12 == pytest.approx(91.75, abs=0.01)
    fc = ConvLayer("fc", 1, 1, 1, 1, 2048, 2048, 1)  # batch-1 MLP layer, int8
    c = model.evaluate_layer(fc)
    assert c.mapping["dram_cycles"] > c.mapping["compute_cycles_overlapped"]
    assert c.mapping["bound"] == "memory"
    assert c.total_cycles == math.ceil(c.mapping["dram_cycles"])
    assert c.dram_read_bytes >= 2048 * 2048  # every weight comes from DRAM once


# --------------------------------------------------------------------------- energy and area


def test_energy_tables_match_their_sources() -> None:
    assert tables.mult_pj(8, 8) == pytest.approx(0.2)
    assert tables.mult_pj(32, 32) == pytest.approx(3.2)  # table: 3.1 (+3 %)
    assert tables.add_pj(32) == pytest.approx(0.1)
    assert tables.add_pj(8) == pytest.approx(0.025)  # table: 0.03
    errors = tables.sram_fit_errors()
    assert errors == pytest.approx([-0.0403, -0.0403, 0.0858], abs=1e-3)
    assert tables.sram_pj_per_bit(8 * 1024) * 64 == pytest.approx(10.0, rel=0.05)
    assert tables.DRAM_PJ_PER_BIT["lpddr4"] == 8.0 and tables.DRAM_PJ_PER_BIT["ddr3"] == 70.0


def test_energy_breakdown_of_conv2() -> None:
    c = evaluate_layer(CONV2, ARRAY_32)
    assert c.mac_energy_pj == pytest.approx(CONV2.macs * 0.3)
    rf_bit = tables.sram_pj_per_bit(4)
    assert c.rf_energy_pj == pytest.approx(CONV2.macs * (8 + 8 + 32) * rf_bit)
    dram_bytes = c.dram_read_bytes + c.dram_write_bytes
    assert c.dram_energy_pj == pytest.approx(dram_bytes * 8 * 8.0)
    glb_bits = 576 * 64 * 8 + 2 * 576 * 3136 * 8 + (2 * 18 - 1) * 64 * 3136 * 32
    glb_bits += 8 * dram_bytes
    assert c.glb_energy_pj == pytest.approx(glb_bits * tables.sram_pj_per_bit(64 * 1024))


def test_area_fits_and_totals() -> None:
    assert tables.mult_area_um2(8, 8) == pytest.approx(282.0)
    assert tables.mult_area_um2(32, 32) == pytest.approx(3495.0)
    assert tables.add_area_um2(8) == pytest.approx(36.0)
    assert tables.add_area_um2(32) == pytest.approx(137.0)
    assert tables.SRAM_AREA_UM2_PER_KIB == pytest.approx(594_786 / 162)
    pe = 282.0 + 137.0 + 32 * tables.REG_AREA_UM2_PER_BIT
    expected = (1024 * pe + 64 * tables.SRAM_AREA_UM2_PER_KIB) * 1e-6
    assert area_mm2(ARRAY_32, weight_bits=8, input_bits=8) == pytest.approx(expected)
    assert area_mm2(ARRAY_32, weight_bits=4, input_bits=8) < expected
    bigger = dataclasses.replace(ARRAY_32, glb_kib=128.0)
    assert area_mm2(bigger, weight_bits=8, input_bits=8) > expected


# --------------------------------------------------------------------------- validation


def test_validate_accelerator_accepts_the_default() -> None:
    assert validate_accelerator(AcceleratorSpec()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pe_rows", 0),
        ("pe_cols", -4),
        ("pe_rows", 2.5),
        ("pe_cols", True),
        ("glb_kib", 0.0),
        ("rf_bytes", 0),
        ("dram_gbps", -1.0),
        ("freq_mhz", float("nan")),
        ("freq_mhz", "fast"),
        ("template", "eyeriss"),
        ("dataflow", "rs"),
        ("dram_type", "ddr5"),
        ("zero_gating", "yes"),
    ],
)
def test_validate_accelerator_names_field_and_value(field: str, value: object) -> None:
    acc = dataclasses.replace(AcceleratorSpec(), **{field: value})
    problems = validate_accelerator(acc)
    assert len(problems) == 1
    assert problems[0].startswith(f"{field}: ")
    assert repr(value) in problems[0]
    with pytest.raises(SpecError, match=field):
        evaluate_network([CONV2], acc)


@pytest.mark.parametrize(("d", "message"), [
    ({"template": "fpga"}, "device: missing; required for template fpga"),
    ({"template": "gpu"}, "peak_tops_int8: missing; required for template gpu"),
    ({"template": "eyeriss", "bogus": 1}, "bogus: unknown key; known eyeriss keys: pe_rows"),
    ({"pe_rows": 8, "tn": 4}, "tn: unknown key; known systolic keys: template"),
])
def test_spec_from_dict_names_the_bad_key(d: dict, message: str) -> None:
    """A design's stored accelerator dict is read back with a SpecError, never a TypeError."""
    with pytest.raises(SpecError, match="^" + re.escape(message)):
        spec_from_dict(d)


def test_validate_accelerator_collects_all_problems() -> None:
    acc = AcceleratorSpec(pe_rows=0, pe_cols=0, dataflow="xx")
    assert len(validate_accelerator(acc)) == 3


def test_bad_layers_raise_spec_error() -> None:
    with pytest.raises(SpecError, match="filter_h"):
        evaluate_layer(ConvLayer("big", 2, 8, 3, 3, 4, 4, 1), ARRAY_32)
    with pytest.raises(SpecError, match="channels"):
        evaluate_layer(ConvLayer("zero", 8, 8, 3, 3, 0, 4, 1), ARRAY_32)
    with pytest.raises(SpecError, match="weight_density"):
        evaluate_layer(dataclasses.replace(CONV2, weight_density=0.0), ARRAY_32)
    for bad in (0.0, 1.5, float("nan"), "0.5", True):
        with pytest.raises(SpecError, match=r"input_density: must be in \(0, 1\]"):
            evaluate_layer(dataclasses.replace(CONV2, input_density=bad), ARRAY_32)
    with pytest.raises(SpecError, match="no layers"):
        evaluate_network([], ARRAY_32)


def test_padding_is_supported() -> None:
    same = ConvLayer("same", 56, 56, 3, 3, 64, 64, 1, padding=1)
    assert (same.ofmap_h, same.ofmap_w) == (56, 56)
    assert evaluate_layer(same, ARRAY_32).compute_cycles == 116_279


def test_model_is_picklable_and_pure() -> None:
    model = make_model(ARRAY_32)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.evaluate_layer(CONV2) == model.evaluate_layer(CONV2)
    assert model.evaluate_layer(CONV2) == model.evaluate_layer(CONV2)
    assert model.acc == ARRAY_32
