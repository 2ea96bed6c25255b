"""The joint space's compression part: per-stage precision, first/last layer bits, rank ratio."""

from __future__ import annotations

import optuna
import pytest

from search_spaces import SpaceError, build


def space(**compression: object) -> object:
    return build({"network": {"stages": [1, 2, 3]}, "compression": compression},
                 in_channels=1, input_hw=8, num_classes=10)


def sample(sp: object, **override: object) -> dict:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return {**study.ask(sp.distributions()).params, **override}


def test_stage_precision_searches_bits_per_stage() -> None:
    sp = space(precision="stage", weight_bits=[2, 4, 8], activation_bits=[4, 8])
    names = sp.distributions()
    assert "cmp/weight_bits" not in names and "cmp/activation_bits" not in names
    assert {f"cmp/s{i}/weight_bits" for i in range(3)} <= set(names)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    mixed = 0
    for _ in range(30):
        params = study.ask(names).params
        sp.check_params(params)
        net = sp.decode(params).network
        n = params["net/stages"]
        want_w = [params[f"cmp/s{i}/weight_bits"] for i in range(n)]
        want_a = [params[f"cmp/s{i}/activation_bits"] for i in range(n)]
        assert [net.stage_bits(i) for i in range(n)] == list(zip(want_w, want_a))
        # canonical: the network's bits are stage 0's; a stage's own only where different
        assert net.weight_bits == want_w[0]
        assert all((s.weight_bits is None) == (w == want_w[0])
                   for s, w in zip(net.stages, want_w))
        mixed += len(set(want_w)) > 1
    assert mixed > 5
    assert sp.to_yaml()["compression"]["weight_bits"] == [2, 4, 8]


def test_network_precision_is_the_default_and_canonical() -> None:
    sp = space(weight_bits=4, activation_bits=8, first_layer_bits=4, last_layer_bits=8)
    assert not any("/s0/weight_bits" in n for n in sp.dims)
    net = sp.decode(sample(sp)).network
    assert all(s.weight_bits is None and s.activation_bits is None for s in net.stages)
    # an override equal to the layer's own bits is no override: the same cache key
    assert net.first_layer_bits is None and net.last_layer_bits == 8


def test_searched_first_last_and_rank() -> None:
    sp = space(first_layer_bits=[None, 8], rank_ratio={"low": 0.25, "high": 1.0})
    names = sp.distributions()
    assert {"cmp/first_layer_bits", "cmp/rank_ratio"} <= set(names)
    params = sample(sp, **{"cmp/first_layer_bits": 8, "cmp/rank_ratio": 0.5})
    net = sp.decode(params).network
    assert net.rank_ratio == 0.5 and net.first_layer_bits in (None, 8)
    with pytest.raises(SpaceError, match="cmp/rank_ratio"):
        sp.check_params({**params, "cmp/rank_ratio": 0.1})


def test_register_file_must_hold_the_widest_layer_weight() -> None:
    with pytest.raises(SpaceError, match="rf_bytes"):
        build({"compression": {"weight_bits": 8, "last_layer_bits": 32},
               "accelerator": {"rf_bytes": 2}}, in_channels=1, input_hw=8, num_classes=10)
