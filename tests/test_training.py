"""The training side: model builder, fake quantization, pruning, the one loop, workload."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
from torch import nn

from evaluators.specs import (
    NetworkSpec,
    SpecError,
    StageSpec,
    TaskSpec,
    TrainingFailed,
    TrainingReport,
)
from evaluators.training import (
    Splits,
    build_model,
    evaluate_accuracy,
    extract_layers,
    load_splits,
    train,
)
from evaluators.training import loop as loop_module
from evaluators.training.loop import _augment
from evaluators.training.model import (
    InputDensityProbe,
    QConv2d,
    QLinear,
    workload_modules,
)
from evaluators.training.quant import PACT, pact_quantize, quantize_weight


def small_net(**kw: object) -> NetworkSpec:
    base = NetworkSpec("plain_cnn", 1, 8, 10, (StageSpec(1, 16, 3, 1), StageSpec(1, 32, 3, 2)))
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def load(report: TrainingReport) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(report.state_dict), weights_only=True)


@pytest.fixture(scope="module")
def trained_8bit() -> TrainingReport:
    return train(small_net(), TaskSpec())


# --------------------------------------------------------------------------- the loop


def test_8bit_reaches_accuracy(trained_8bit: TrainingReport) -> None:
    r = trained_8bit
    assert r.val_accuracy >= 0.85
    assert r.steps == 5 * (1078 // 64) and r.device == "cpu"
    assert 0 < r.train_loss < 1.0 and r.train_seconds > 0


def test_training_measures_each_layers_input_density(trained_8bit: TrainingReport) -> None:
    """Every workload layer gets its non-zero input fraction on the validation split: the
    normalized image is dense, a layer after a ReLU is not."""
    d = trained_8bit.input_density
    assert list(d) == [layer.name for layer in extract_layers(small_net())]
    assert d["s0b0"] > 0.95  # the image (mean-subtracted pixels are rarely exactly 0)
    assert 0.0 < d["s1b0"] < 0.9  # after BatchNorm + ReLU
    assert all(0.0 < v <= 1.0 for v in d.values())


def test_input_density_probe_counts_exactly() -> None:
    """The probe counts the zeros of the tensor each conv reads, batch by batch."""
    spec = small_net()
    model = build_model(spec).eval()
    x = torch.randn(6, 1, 8, 8)
    x[:, :, :2, :] = 0.0  # a quarter of the image is zero
    seen: list[torch.Tensor] = []
    hook = model.features.s1b0.conv.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].detach().clone()))
    with torch.no_grad(), InputDensityProbe(model, spec) as probe:
        model(x[:4])
        model(x[4:])
    hook.remove()
    d = probe.densities()
    assert d["s0b0"] == pytest.approx(0.75)
    inner = torch.cat(seen)
    assert d["s1b0"] == pytest.approx(int(torch.count_nonzero(inner)) / inner.numel())
    assert not model.features.s0b0.conv._forward_pre_hooks  # removed on exit
    with InputDensityProbe(model, spec) as idle:
        pass
    assert idle.densities() == {}  # nothing ran: nothing measured


@pytest.mark.parametrize("family", ["plain_cnn", "resnet", "mobilenetv2"])
def test_every_workload_layer_pairs_with_the_module_that_reads_its_input(family: str) -> None:
    """Factorized, with shortcut convs and depthwise convs: each hardware layer's module is
    the one whose input has the layer's channels and map size."""
    stages = (StageSpec(1, 8, 3, 1, 2), StageSpec(2, 16, 5, 2, 2))
    spec = NetworkSpec(family, 1, 8, 10, stages, rank_ratio=0.5)
    model = build_model(spec).eval()
    pairs = workload_modules(model, spec)
    assert [layer.name for layer, _ in pairs] == [x.name for x in extract_layers(spec)]
    shapes: dict[int, tuple[int, ...]] = {}
    hooks = [m.register_forward_pre_hook(
        lambda m, args: shapes.__setitem__(id(m), tuple(args[0].shape))) for _, m in pairs]
    with torch.no_grad():
        model(torch.randn(2, 1, 8, 8))
    for h in hooks:
        h.remove()
    for layer, m in pairs:
        shape = shapes[id(m)]
        assert shape[1] == layer.channels, layer.name
        if len(shape) == 4:
            assert shape[2:] == (layer.ifmap_h, layer.ifmap_w), layer.name
    other = dataclasses.replace(spec, stages=stages[:1])
    with pytest.raises(SpecError, match="modules"):
        workload_modules(model, other)


def test_probe_leaves_structurally_pruned_channels_out() -> None:
    """A structurally pruned block's masked channels are zero at the next conv's input; the
    density is over the channels the (smaller) hardware layer keeps."""
    spec = small_net(prune_ratio=0.5, prune_mode="structured")
    report = train(spec, TaskSpec(epochs=1, seed=0))
    model = build_model(spec)
    model.load_state_dict(load(report))
    model.eval()
    kept = torch.nonzero(model.features.s0b0.bn.weight.detach() != 0).flatten()
    layer = {x.name: x for x in extract_layers(spec)}["s1b0"]
    assert len(kept) == layer.channels < model.features.s1b0.conv.in_channels
    seen: list[torch.Tensor] = []
    hook = model.features.s1b0.conv.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].detach().clone()))
    x = load_splits(TaskSpec()).val_x[:64]
    with torch.no_grad(), InputDensityProbe(model, spec) as probe:
        model(x)
    hook.remove()
    inner = seen[0]
    assert int(torch.count_nonzero(inner[:, kept])) == int(torch.count_nonzero(inner))
    expected = int(torch.count_nonzero(inner)) / inner[:, kept].numel()
    assert probe.densities()["s1b0"] == pytest.approx(expected)
    assert 0.0 < report.input_density["s1b0"] < 1.0


def test_same_seed_same_result(trained_8bit: TrainingReport) -> None:
    again = train(small_net(), TaskSpec())
    assert again.val_accuracy == trained_8bit.val_accuracy
    assert again.train_loss == trained_8bit.train_loss
    a, b = load(trained_8bit), load(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = load(train(small_net(), TaskSpec(seed=1)))
    assert not torch.equal(other["classifier.weight"], a["classifier.weight"])


def test_evaluate_accuracy_matches(trained_8bit: TrainingReport) -> None:
    task = TaskSpec()
    assert evaluate_accuracy(small_net(), task, trained_8bit.state_dict, "val") == \
        trained_8bit.val_accuracy
    test_acc = evaluate_accuracy(small_net(), task, trained_8bit.state_dict)
    assert 0.8 <= test_acc <= 1.0
    with pytest.raises(SpecError, match="split"):
        evaluate_accuracy(small_net(), task, trained_8bit.state_dict, "holdout")
    with pytest.raises(SpecError, match="does not fit"):
        evaluate_accuracy(small_net(stages=(StageSpec(1, 8, 3, 1),)), task,
                          trained_8bit.state_dict)
    with pytest.raises(SpecError, match="not a readable torch state dict"):
        evaluate_accuracy(small_net(), task, b"not a checkpoint")


def test_state_dict_is_cpu_and_plain(trained_8bit: TrainingReport) -> None:
    sd = load(trained_8bit)
    assert all(t.device.type == "cpu" for t in sd.values())
    assert not any(k.endswith(("_orig", "_mask")) for k in sd)
    assert "features.s0b0.act.alpha" in sd and "classifier.weight" in sd


def test_step_budget_and_threads_restored() -> None:
    before = torch.get_num_threads()
    r = train(small_net(), TaskSpec(epochs=None, steps=7, num_threads=1))
    assert r.steps == 7
    assert torch.get_num_threads() == before


def test_huge_lr_raises_training_failed() -> None:
    with pytest.raises(TrainingFailed, match=r"loss became nan at step \d+"):
        train(small_net(), TaskSpec(lr=1e6))


def test_forced_nan_raises_at_step_0(monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop_module.load_splits

    def poisoned(task: TaskSpec) -> Splits:
        s = real(task)
        return dataclasses.replace(s, train_x=torch.full_like(s.train_x, float("nan")))

    monkeypatch.setattr(loop_module, "load_splits", poisoned)
    with pytest.raises(TrainingFailed, match="loss became nan at step 0"):
        train(small_net(), TaskSpec(epochs=1))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_requested_without_cuda() -> None:
    with pytest.raises(TrainingFailed, match="CUDA is not available"):
        train(small_net(), TaskSpec(device="cuda"))


@pytest.mark.parametrize(
    ("spec", "task", "message"),
    [
        (small_net(weight_bits=0), TaskSpec(), "weight_bits"),
        (small_net(activation_bits=17), TaskSpec(), "activation_bits"),
        (small_net(prune_ratio=1.0), TaskSpec(), "prune_ratio"),
        (small_net(family="vgg"), TaskSpec(), "family"),
        (small_net(stages=()), TaskSpec(), "stages"),
        (small_net(stages=(StageSpec(0, 8, 3, 1),)), TaskSpec(), "depth"),
        (small_net(), TaskSpec(epochs=3, steps=3), "exactly one of epochs / steps"),
        (small_net(), TaskSpec(batch_size=0), "batch_size"),
        (small_net(), TaskSpec(lr=-1.0), "lr"),
        (small_net(), TaskSpec(device="tpu"), "device"),
        (small_net(input_hw=28), TaskSpec(), "does not match dataset 'digits'"),
    ],
)
def test_bad_inputs(spec: NetworkSpec, task: TaskSpec, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        train(spec, task)


# --------------------------------------------------------------------------- quantization


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_weight_fake_quant_levels(bits: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 64, 5, 5) * torch.rand(8, 1, 1, 1)
    q = quantize_weight(w, bits)
    for c in range(8):
        values = torch.unique(q[c])
        assert len(values) <= 2**bits
        if bits == 1:
            assert len(values) == 2 and torch.isclose(values[0], -values[1])
            assert torch.isclose(values[1], w[c].abs().mean())
        else:  # symmetric, on a uniform grid, max|w| exactly representable
            step = w[c].abs().max() / (2 ** (bits - 1) - 1)
            k = values / step
            assert torch.allclose(k, k.round(), atol=1e-4)
            assert torch.isclose(q[c].abs().max(), w[c].abs().max())
    assert quantize_weight(w, 32) is w


def test_weight_quant_keeps_zeros_and_passes_gradient() -> None:
    w = torch.randn(4, 10)
    w[:, :5] = 0
    w.requires_grad_(True)
    for bits in (1, 2, 8):
        q = quantize_weight(w, bits)
        assert torch.all(q[:, :5] == 0)
        upstream = torch.randn_like(q)
        (grad,) = torch.autograd.grad(q, w, upstream)
        assert torch.equal(grad, upstream)  # straight-through


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_pact_levels_and_gradients(bits: int) -> None:
    torch.manual_seed(0)
    x = (torch.randn(1000) * 3).relu().requires_grad_(True)
    alpha = torch.tensor(2.0, requires_grad=True)
    y = pact_quantize(x, alpha, bits)
    assert len(torch.unique(y)) <= 2**bits
    assert float(y.detach().min()) >= 0 and float(y.detach().max()) <= 2.0 + 1e-6
    y.sum().backward()
    assert float(alpha.grad) == float((x >= 2.0).sum())
    assert torch.equal(x.grad, (x < 2.0).float())
    assert pact_quantize(x, alpha, 32) is x


def test_trained_model_weights_are_on_the_grid() -> None:
    for bits in (1, 2):
        report = train(small_net(weight_bits=bits, activation_bits=2),
                       TaskSpec(epochs=None, steps=10))
        model = build_model(small_net(weight_bits=bits, activation_bits=2))
        model.load_state_dict(load(report))
        layers = [m for m in model.modules() if isinstance(m, (QConv2d, QLinear))]
        assert len(layers) == 3
        for m in layers:
            q = m.quantized_weight().detach()
            for c in range(q.shape[0]):
                assert len(torch.unique(q[c])) <= 2**bits
        assert all(isinstance(m, PACT) and m.bits == 2 for n, m in model.named_modules()
                   if n.endswith(".act"))


def test_float_model_has_no_quantizers() -> None:
    model = build_model(small_net(weight_bits=32, activation_bits=32))
    assert not any(isinstance(m, PACT) for m in model.modules())
    x = torch.randn(2, 1, 8, 8)
    assert model(x).shape == (2, 10)


# --------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("ratio", [0.5, 0.8])
def test_pruned_state_dict_has_requested_zeros(ratio: float) -> None:
    spec = small_net(prune_ratio=ratio)
    task = TaskSpec(epochs=None, steps=20)
    report = train(spec, task)
    sd = load(report)
    weights = [k for k in sd if k.endswith("conv.weight")] + ["classifier.weight"]
    assert len(weights) == 3
    for k in weights:
        n = sd[k].numel()
        zeros = int((sd[k] == 0).sum())
        assert abs(zeros - round(ratio * n)) <= 1, (k, zeros, n)
    assert evaluate_accuracy(spec, task, report.state_dict, "val") == report.val_accuracy


# --------------------------------------------------------------------------- workload


def count_with_hooks(model: nn.Module, in_channels: int, hw: int) -> list[tuple[int, int]]:
    """(MACs, weights) of every Conv2d / Linear, counted on the torch module itself."""
    counts: list[tuple[int, int]] = []

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        per_output = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.in_features
        counts.append((out[0].numel() * per_output, m.weight.numel()))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, in_channels, hw, hw))
    for h in handles:
        h.remove()
    return counts


@pytest.mark.parametrize(
    "spec",
    [
        NetworkSpec("plain_cnn", 1, 8, 10, (StageSpec(1, 8, 3, 1),)),
        NetworkSpec("plain_cnn", 1, 8, 10, (StageSpec(1, 16, 3, 1), StageSpec(2, 32, 3, 2))),
        NetworkSpec("plain_cnn", 1, 28, 10,
                    (StageSpec(1, 8, 5, 2), StageSpec(2, 16, 3, 2), StageSpec(1, 32, 5, 2))),
        NetworkSpec("plain_cnn", 3, 32, 100,
                    (StageSpec(2, 16, 3, 1), StageSpec(1, 24, 5, 3), StageSpec(3, 40, 3, 2)),
                    weight_bits=4, activation_bits=2, prune_ratio=0.25),
        NetworkSpec("resnet", 1, 8, 10, (StageSpec(2, 8, 3, 1), StageSpec(1, 16, 3, 2))),
        NetworkSpec("resnet", 3, 32, 10, (StageSpec(1, 16, 5, 1), StageSpec(2, 16, 3, 1),
                                          StageSpec(1, 32, 3, 2)), prune_ratio=0.5),
        NetworkSpec("mobilenetv2", 1, 8, 10,
                    (StageSpec(1, 8, 3, 1, 1), StageSpec(2, 16, 3, 2, 4))),
        NetworkSpec("mobilenetv2", 3, 32, 100,
                    (StageSpec(2, 16, 3, 1, 6), StageSpec(1, 24, 5, 2, 6),
                     StageSpec(2, 24, 3, 1, 3)), weight_bits=4, activation_bits=4),
        NetworkSpec("plain_cnn", 3, 32, 10, (StageSpec(1, 12, 5, 1), StageSpec(1, 20, 3, 2)),
                    weight_bits=32, activation_bits=32),
        # low-rank factorization on (Tucker-2 k x k, SVD 1x1 and classifier), with pruning
        NetworkSpec("plain_cnn", 3, 16, 10, (StageSpec(1, 16, 3, 1), StageSpec(2, 32, 5, 2)),
                    prune_ratio=0.3, rank_ratio=0.5),
        NetworkSpec("resnet", 1, 8, 10, (StageSpec(2, 16, 3, 1), StageSpec(1, 32, 3, 2)),
                    prune_ratio=0.5, prune_mode="nm", rank_ratio=0.25),
        NetworkSpec("mobilenetv2", 3, 16, 100,
                    (StageSpec(1, 16, 3, 1, 4), StageSpec(2, 24, 3, 2, 6)), rank_ratio=0.4),
    ],
)
def test_extract_layers_matches_module(spec: NetworkSpec) -> None:
    layers = extract_layers(spec)
    expected = count_with_hooks(build_model(spec), spec.in_channels, spec.input_hw)
    assert [(layer.macs, layer.weight_count) for layer in layers] == expected
    assert layers[-1].name in ("fc", "fc_v") and layers[-1].ifmap_h == layers[-1].filter_h == 1
    assert layers[-1].num_filters == spec.num_classes
    assert layers[0].input_bits == 8
    assert all(layer.input_bits == spec.activation_bits for layer in layers[1:]
               if not layer.name.startswith("fc_v"))
    assert all(layer.weight_bits == spec.weight_bits for layer in layers)
    if spec.prune_mode == "unstructured":
        assert all(layer.weight_density == pytest.approx(1 - spec.prune_ratio)
                   for layer in layers)
    if spec.rank_ratio < 1:  # factors are separate layers and fewer weights than the dense net
        assert any(layer.name.endswith(("_core", "_u")) for layer in layers)
        dense = extract_layers(dataclasses.replace(spec, rank_ratio=1.0))
        assert sum(x.weight_count for x in layers) < sum(x.weight_count for x in dense)
    convs = [layer for layer in layers if not layer.name.startswith("fc")]
    assert all(layer.padding == layer.filter_h // 2 for layer in convs)
    if spec.family == "plain_cnn" and spec.rank_ratio == 1:
        assert sum(s.depth for s in spec.stages) == len(convs)
        for prev, nxt in zip(convs, convs[1:]):  # shapes chain
            assert (nxt.ifmap_h, nxt.channels) == (prev.ofmap_h, prev.num_filters)
    if spec.family == "mobilenetv2":  # depthwise convs reach the hardware as grouped convs
        dws = [layer for layer in convs if layer.name.endswith("_dw")]
        assert dws and all(dw.groups == dw.channels == dw.num_filters for dw in dws)


@pytest.mark.parametrize("family", ["resnet", "mobilenetv2"])
def test_residual_families_train(family: str) -> None:
    spec = NetworkSpec(family, 1, 8, 10, (StageSpec(1, 8, 3, 1, 2), StageSpec(1, 16, 3, 2, 2)))
    report = train(spec, TaskSpec(epochs=3, seed=0))
    assert report.val_accuracy > 0.5  # 10 classes: chance is 0.1
    sd = torch.load(io.BytesIO(report.state_dict), weights_only=True)
    assert evaluate_accuracy(spec, TaskSpec(epochs=3, seed=0), report.state_dict, "val") == \
        report.val_accuracy
    assert any(k.endswith("post.range") for k in sd) == (family == "mobilenetv2")


def test_extract_layers_rejects_bad_spec() -> None:
    with pytest.raises(SpecError):
        extract_layers(small_net(weight_bits=33))


# --------------------------------------------------------------------------- augmentation


def test_augment_is_a_padded_crop_or_its_mirror() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    out = _augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(16):
        found = any(
            torch.equal(out[i], cand) or torch.equal(out[i], cand.flip(2))
            for dy in range(9) for dx in range(9)
            for cand in (padded[i, :, dy:dy + 32, dx:dx + 32],))
        assert found
    again = _augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(again, out)


def test_load_splits_is_reexported() -> None:
    assert load_splits(TaskSpec()).info == (1, 8, 10)


def _nonzero_shapes(sd: dict[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
    """(non-zero output filters, non-zero input slices) of every conv weight."""
    out = {}
    for k, w in sd.items():
        if k.endswith("conv.weight"):
            filt = w.reshape(w.shape[0], w.shape[1], -1).abs().sum(dim=2)
            out[k] = (int((filt.sum(dim=1) > 0).sum()), int((filt.sum(dim=0) > 0).sum()))
    return out


@pytest.mark.parametrize("family", ["plain_cnn", "resnet", "mobilenetv2"])
def test_structured_pruning_shrinks_what_the_hardware_sees(family: str) -> None:
    stages = (StageSpec(1, 16, 3, 1, 4), StageSpec(2, 32, 3, 2, 4))
    dense = NetworkSpec(family, 1, 8, 10, stages)
    spec = dataclasses.replace(dense, prune_ratio=0.5, prune_mode="structured")
    report = train(spec, TaskSpec(epochs=2, seed=0))
    sd = torch.load(io.BytesIO(report.state_dict), weights_only=True)
    hw = extract_layers(spec)
    assert sum(x.macs for x in hw) < 0.75 * sum(x.macs for x in extract_layers(dense))
    # every conv the torch model really uses (non-zero filters) is what the hardware gets
    shapes = _nonzero_shapes(sd)
    nonzero_out = sorted(o for o, _ in shapes.values())
    hw_out = sorted(x.num_filters for x in hw[:-1])
    assert nonzero_out == hw_out
    assert report.val_accuracy > 0.3


def test_nm_pruning_is_n_of_4() -> None:
    spec = NetworkSpec("plain_cnn", 1, 8, 10, (StageSpec(1, 16, 3, 1), StageSpec(1, 32, 3, 2)),
                       prune_ratio=0.5, prune_mode="nm")
    report = train(spec, TaskSpec(epochs=2, seed=0))
    sd = torch.load(io.BytesIO(report.state_dict), weights_only=True)
    w = sd["features.s1b0.conv.weight"].reshape(32, -1)  # 16*9 = 144, a multiple of 4
    nonzero_per_group = (w.reshape(32, -1, 4) != 0).sum(dim=2)
    assert int(nonzero_per_group.max()) <= 2
    assert all(x.weight_density == 0.5 for x in extract_layers(spec))
