"""Low-rank factorization, per-stage mixed precision, warm start and the deployment resolution."""

from __future__ import annotations

import dataclasses
import io
import pickle

import pytest
import torch
from torch import nn

from evaluators.specs import NetworkSpec, SpecError, StageSpec, TaskSpec
from evaluators.training import build_model, evaluate_accuracy, extract_layers, train
from evaluators.training.loop import warm_start
from evaluators.training.model import (
    PACT,
    ConvPlan,
    ConvUnit,
    LowRankConv,
    LowRankLinear,
    QConv2d,
    QLinear,
    low_rank,
    state_shapes,
    warm_start_score,
)


def net(**kw: object) -> NetworkSpec:
    base = NetworkSpec("plain_cnn", 1, 8, 10, (StageSpec(1, 16, 3, 1), StageSpec(1, 32, 3, 2)))
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def state(report_bytes: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(report_bytes), weights_only=True)


# --------------------------------------------------------------------------- factorization


def test_ranks_follow_the_ratio_and_only_where_weights_shrink() -> None:
    assert low_rank(16, 32, 3, 1, 0.5) == (8, 16)  # Tucker-2
    assert low_rank(64, 32, 1, 1, 0.25) == (8,)  # SVD, rank of min(cin, cout)
    assert low_rank(1, 16, 3, 1, 0.5) == ()  # a 1-channel stem would grow: stays dense
    assert low_rank(16, 16, 3, 16, 0.5) == ()  # depthwise: never
    assert low_rank(16, 32, 3, 1, 1.0) == ()  # off


def test_tucker2_and_svd_are_exact_at_full_rank_and_degrade_with_rank() -> None:
    torch.manual_seed(0)
    dense = nn.Conv2d(6, 10, 3, padding=1, stride=2, bias=False)
    x = torch.randn(2, 6, 9, 9)
    errors = []
    for ranks in ((6, 10), (4, 6), (2, 3), (1, 1)):
        low = LowRankConv(ConvPlan("c", 6, 10, 3, 2, 1, 9, "none", w_bits=32, a_bits=32,
                                   ranks=ranks))
        low.init_from(dense.weight)
        with torch.no_grad():
            errors.append(float((low(x) - dense(x)).norm() / dense(x).norm()))
    assert errors[0] < 1e-5
    assert errors == sorted(errors) and errors[-1] > 0.3

    fc = nn.Linear(12, 5)
    low_fc = LowRankLinear(ConvPlan("fc", 12, 5, 1, 1, 1, 1, "none", w_bits=32, a_bits=32,
                                    ranks=(5,)))
    low_fc.init_from(fc)
    xf = torch.randn(3, 12)
    with torch.no_grad():
        assert torch.allclose(low_fc(xf), fc(xf), atol=1e-5)

    one = nn.Conv2d(12, 8, 1, stride=2, bias=False)
    low1 = LowRankConv(ConvPlan("p", 12, 8, 1, 2, 1, 9, "none", w_bits=32, a_bits=32,
                                ranks=(8,)))
    low1.init_from(one.weight)
    x1 = torch.randn(2, 12, 9, 9)
    with torch.no_grad():
        assert torch.allclose(low1(x1), one(x1), atol=1e-5)


def test_factorized_network_trains_and_its_weights_load() -> None:
    spec = net(rank_ratio=0.5)
    task = TaskSpec(epochs=4, seed=0)
    report = train(spec, task)
    sd = state(report.state_dict)
    # stage 1 (16 -> 32, 3x3) is a Tucker-2 chain, the classifier two SVD factors
    assert sd["features.s1b0.conv.0.weight"].shape == (8, 16, 1, 1)
    assert sd["features.s1b0.conv.2.weight"].shape == (16, 8, 3, 3)
    assert sd["features.s1b0.conv.4.weight"].shape == (32, 16, 1, 1)
    assert sd["classifier.0.weight"].shape == (5, 32)
    assert "features.s0b0.conv.weight" in sd  # the 1-channel stem stays dense
    assert report.val_accuracy > 0.6
    assert evaluate_accuracy(spec, task, report.state_dict, "val") == report.val_accuracy
    hw = {x.name: x for x in extract_layers(spec)}
    assert [n for n in hw] == ["s0b0", "s1b0_in", "s1b0_core", "s1b0_out", "fc_u", "fc_v"]
    assert hw["s1b0_core"].stride == 2 and hw["s1b0_out"].ifmap_h == 4


def test_structured_pruning_of_factorized_layers_matches_the_hardware() -> None:
    spec = net(rank_ratio=0.5, prune_ratio=0.5, prune_mode="structured")
    report = train(spec, TaskSpec(epochs=2, seed=0))
    sd = state(report.state_dict)
    hw = {x.name: x for x in extract_layers(spec)}
    out = sd["features.s1b0.conv.4.weight"].reshape(32, -1)
    assert int((out.abs().sum(dim=1) > 0).sum()) == hw["s1b0_out"].num_filters == 16
    stem = sd["features.s0b0.conv.weight"].reshape(16, -1)  # the first factor reads these
    assert int((stem.abs().sum(dim=1) > 0).sum()) == hw["s1b0_in"].channels == 8
    assert hw["fc_u"].channels == 16


def test_bad_rank_ratio_is_refused() -> None:
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(SpecError, match="rank_ratio"):
            extract_layers(net(rank_ratio=bad))


# --------------------------------------------------------------------------- mixed precision


def mixed() -> NetworkSpec:
    return net(stages=(StageSpec(1, 16, 3, 1, weight_bits=2, activation_bits=4),
                       StageSpec(1, 32, 3, 2, weight_bits=4, activation_bits=2)),
               first_layer_bits=8, last_layer_bits=8)


def test_per_stage_bits_and_first_last_layers_reach_the_hardware() -> None:
    hw = {x.name: x for x in extract_layers(mixed())}
    assert (hw["s0b0"].input_bits, hw["s0b0"].weight_bits, hw["s0b0"].output_bits) == (8, 8, 4)
    assert (hw["s1b0"].input_bits, hw["s1b0"].weight_bits, hw["s1b0"].output_bits) == (4, 4, 2)
    assert (hw["fc"].input_bits, hw["fc"].weight_bits, hw["fc"].output_bits) == (2, 8, 8)
    # without first/last overrides the first conv takes its stage's weight bits
    plain = {x.name: x for x in extract_layers(dataclasses.replace(
        mixed(), first_layer_bits=None, last_layer_bits=None))}
    assert plain["s0b0"].weight_bits == 2 and plain["fc"].weight_bits == 4


def test_per_stage_bits_reach_the_module_and_its_trained_weights() -> None:
    spec = mixed()
    model = build_model(spec)
    bits = {n: m.weight_bits for n, m in model.named_modules()
            if isinstance(m, (QConv2d, QLinear))}
    assert bits == {"features.s0b0.conv": 8, "features.s1b0.conv": 4, "classifier": 8}
    acts = {n: m.bits for n, m in model.named_modules() if isinstance(m, PACT)}
    assert acts == {"features.s0b0.act": 4, "features.s1b0.act": 2}
    report = train(spec, TaskSpec(epochs=None, steps=10))
    model.load_state_dict(state(report.state_dict))
    q = model.features.s1b0.conv.quantized_weight().detach()
    assert max(len(torch.unique(q[c])) for c in range(q.shape[0])) <= 2**4


def test_residual_blocks_carry_their_stage_bits() -> None:
    spec = NetworkSpec("resnet", 1, 8, 10,
                       (StageSpec(1, 8, 3, 1, weight_bits=4, activation_bits=8),
                        StageSpec(1, 16, 3, 2, weight_bits=8, activation_bits=4)))
    hw = {x.name: x for x in extract_layers(spec)}
    assert hw["stem"].weight_bits == 4 and hw["stem"].output_bits == 8
    assert hw["s1b0_short"].input_bits == 8 and hw["s1b0_short"].weight_bits == 8
    assert hw["s1b0_conv2"].input_bits == 4 and hw["fc"].input_bits == 4
    units = [m for m in build_model(spec).modules() if isinstance(m, ConvUnit)]
    assert [u.plan.w_bits for u in units] == [4, 4, 4, 8, 8, 8]


def test_bad_stage_bits_are_refused() -> None:
    with pytest.raises(SpecError, match=r"stages\[1\].weight_bits"):
        extract_layers(net(stages=(StageSpec(1, 16, 3, 1), StageSpec(1, 32, 3, 2,
                                                                     weight_bits=0))))
    with pytest.raises(SpecError, match="last_layer_bits"):
        extract_layers(net(last_layer_bits=17))


# --------------------------------------------------------------------------- warm start


def test_warm_start_loads_matching_tensors_only() -> None:
    donor = train(net(), TaskSpec(epochs=3, seed=1))
    wider = net(stages=(StageSpec(1, 16, 3, 1), StageSpec(1, 48, 3, 2)))
    model = build_model(wider, factorized=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n = warm_start(model, donor.state_dict)
    donor_sd = state(donor.state_dict)
    after = model.state_dict()
    same = [k for k in after if k in donor_sd and donor_sd[k].shape == after[k].shape]
    assert n == len(same) > 0
    assert all(torch.equal(after[k], donor_sd[k]) for k in same)
    assert torch.equal(after["features.s1b0.conv.weight"], before["features.s1b0.conv.weight"])

    report = train(net(), TaskSpec(epochs=1, seed=0), init_state=donor.state_dict)
    cold = train(net(), TaskSpec(epochs=1, seed=0))
    assert report.warm_started_tensors == len(donor_sd) and cold.warm_started_tensors == 0
    assert report.val_accuracy >= cold.val_accuracy


def test_warm_start_prefers_shared_weights_and_never_a_sparser_donor() -> None:
    target = net(prune_ratio=0.5)
    shapes = state_shapes(target, factorized=False)
    same = warm_start_score(net(), state_shapes(net()), target, shapes)
    wider = net(stages=(StageSpec(1, 16, 3, 1), StageSpec(1, 48, 3, 2)))
    partial = warm_start_score(wider, state_shapes(wider), target, shapes)
    assert same > partial > 0  # the stem and its BN still match
    for donor in (net(prune_ratio=0.8), net(prune_ratio=0.3, prune_mode="structured")):
        assert warm_start_score(donor, state_shapes(donor), target, shapes) == 0
    less = net(prune_ratio=0.3)
    assert warm_start_score(less, state_shapes(less), target, shapes) == same


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_warm_start_refuses_what_is_not_a_state_dict(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    model = build_model(net())
    with pytest.raises(SpecError, match="not a readable torch state dict"):
        warm_start(model, b"garbage")
    with pytest.raises(SpecError, match="not a readable torch state dict"):
        warm_start(model, pickle.dumps(_Evil()))
    assert "must never run" not in capsys.readouterr().out
    buf = io.BytesIO()
    torch.save({"weights": [1, 2]}, buf)
    with pytest.raises(SpecError, match="not a state dict"):
        warm_start(model, buf.getvalue())


# --------------------------------------------------------------------------- deployment


def test_deploy_resolution_sets_the_workload_not_the_classifier() -> None:
    spec = net(rank_ratio=0.5)
    train_res, deploy = extract_layers(spec), extract_layers(spec, input_hw=32)
    assert [x.name for x in train_res] == [x.name for x in deploy]
    assert deploy[0].ifmap_h == 32 and train_res[0].ifmap_h == 8
    for a, b in zip(train_res, deploy):
        if a.name.startswith("fc"):
            assert a == b
        else:
            assert b.macs == 16 * a.macs and b.weight_count == a.weight_count
    with pytest.raises(SpecError, match="deploy input"):
        extract_layers(spec, input_hw=0)


# --------------------------------------------------------------------------- bf16 autocast


@pytest.mark.parametrize("family", ["plain_cnn", "resnet", "mobilenetv2"])
def test_forward_backward_under_bf16_autocast(family: str) -> None:
    """The CUDA path trains under bf16 autocast; CI has no GPU, so the same autocast runs on
    the CPU here: every quantizer and factor must accept bf16 activations."""
    spec = NetworkSpec(family, 1, 8, 10, (StageSpec(1, 16, 3, 1, 2, weight_bits=4),
                                          StageSpec(1, 32, 3, 2, 2, activation_bits=2)),
                       rank_ratio=0.5, first_layer_bits=8)
    model = build_model(spec)
    x = torch.randn(4, 1, 8, 8)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = model(x)
    loss = nn.functional.cross_entropy(logits.float(), torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
