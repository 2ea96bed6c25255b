"""optuna_adapter's writes against Optuna's own: what ``ask_as`` stores equals what
``Study.ask`` stores, in one write."""

from __future__ import annotations

import uuid
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from pg_server import postgres_url  # noqa: F401 - a fixture

from codesign.optuna_adapter import ask_as

DISTS = {"width": IntDistribution(4, 64, step=4), "lr": FloatDistribution(1e-4, 1e-1, log=True),
         "dataflow": CategoricalDistribution(["ws", "os", "rs"]), "bits": IntDistribution(1, 8)}


@pytest.fixture(params=["sqlite", "journal", "memory", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return {"sqlite": f"sqlite:///{tmp_path}/a.db", "journal": f"journal:{tmp_path}/a.log",
            "memory": "memory"}[request.param]


def _study(url: str, name: str) -> optuna.Study:
    name = f"{name}-{uuid.uuid4().hex[:8]}"  # one PostgreSQL database for every test
    if url == "memory":
        storage: object = optuna.storages.InMemoryStorage()
    elif url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        storage = JournalStorage(JournalFileBackend(url[len("journal:"):] + name))
    elif url.startswith("postgresql://"):
        from codesign.study import open_storage

        storage = open_storage(url)
    else:
        storage = url
    return optuna.create_study(study_name=name, storage=storage,
                               sampler=optuna.samplers.RandomSampler(seed=3))


def test_ask_as_stores_what_study_ask_stores_in_one_write(storage_url: str,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    ours, theirs = _study(storage_url, "ours"), _study(storage_url, "theirs")
    ours.enqueue_trial({"width": 16, "dataflow": "rs"})
    theirs.enqueue_trial({"width": 16, "dataflow": "rs"})
    calls = []
    real = type(ours._storage).set_trial_param
    monkeypatch.setattr(type(ours._storage), "set_trial_param",
                        lambda self, *a: calls.append(a) or real(self, *a))
    mine = [ask_as(ours, DISTS, {"codesign.driver": "h:1"}).number for _ in range(3)]
    if storage_url != "memory":
        assert calls == []  # no write per parameter
    monkeypatch.undo()
    for _ in range(3):
        theirs.ask(DISTS)
    for a, b in zip(ours.get_trials(), theirs.get_trials()):
        assert a.params == b.params and a.distributions == b.distributions
        assert a.state == TrialState.RUNNING and a.user_attrs == {"codesign.driver": "h:1"}
    assert ours.trials[0].params["width"] == 16 and ours.trials[0].params["dataflow"] == "rs"
    assert mine == [0, 1, 2]


def test_ask_as_refuses_a_distribution_the_study_stored_otherwise(storage_url: str) -> None:
    study = _study(storage_url, "clash")
    ask_as(study, DISTS, {})
    clash = {**DISTS, "bits": CategoricalDistribution(["a", "b"])}
    with pytest.raises(ValueError, match="different distribution"):
        study.ask(clash)  # as Optuna refuses it
    with pytest.raises(ValueError, match="different distribution"):
        ask_as(study, clash, {})
