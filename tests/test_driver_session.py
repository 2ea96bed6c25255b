"""The driver session with executors that stand in for Ray (no Ray started): the writes a
trial gets, timeouts, lost workers, the in-process executor, and two sessions on one study."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from codesign.config import from_mapping
from codesign.driver.executor import InProcessExecutor, Outcome
from codesign.runner import RunOptions, run_study
from codesign.samplers import make
from codesign.study import create_or_load, open_storage

EXP = {
    "schema_version": 1,
    "study": {"name": "drv", "seed": 5, "n_trials": 8},
    "objectives": ["accuracy", "latency_ms", "energy_mj"],
    "sampler": {"name": "random"},
    "task": {"dataset": "digits", "steps": 2, "batch_size": 32},
    "space": {
        "network": {"stages": 1, "depth": [1, 2], "width": [8, 12, 16], "kernel": 3},
        "compression": {"weight_bits": [4, 8], "activation_bits": 8, "prune_ratio": 0.0},
        "accelerator": {"dataflow": ["ws", "os"], "pe_rows": [8, 16], "pe_cols": [8, 16],
                        "glb_kib": [32, 64]},
    },
    "execution": {"workers": 3, "max_retries": 1},
}


def cfg_with(**execution: Any) -> Any:
    raw = {**EXP, "execution": {**EXP["execution"], **execution}}
    return from_mapping(raw, source="exp.yaml")


def open_study(cfg: Any, url: str, seed: int = 0) -> optuna.Study:
    study, _ = create_or_load(cfg, open_storage(url), url, sampler=None)
    study.sampler = make(cfg.sampler, seed=seed)
    return study


class Canned(InProcessExecutor):
    """Prices each design for real (no training: a fixed accuracy), or answers ``kind``."""

    def __init__(self, kind: str = "ok", accuracy: float = 0.5) -> None:
        super().__init__()
        self.kind, self.accuracy = kind, accuracy
        self.submitted = 0
        self.most_in_flight = 0

    def submit(self, request: Any) -> int:
        self.submitted += 1
        handle = super().submit(replace(request, cached_accuracy=self.accuracy,
                                        cached_input_density={}))
        self.most_in_flight = max(self.most_in_flight, len(self._queue))
        return handle

    def wait(self, timeout_s: float) -> list[Outcome]:
        if self.kind == "ok":
            return super().wait(timeout_s)
        out = [Outcome(h, self.kind, message=f"{self.kind}!") for h, _ in self._queue]
        self._queue.clear()
        return out


def options(tmp: Path, url: str, n: int, executor: Any, workers: int = 3) -> RunOptions:
    return RunOptions(n_trials=n, workers=workers, artifacts=tmp / "art", storage_url=url,
                      progress=False, executor=executor)


@pytest.fixture(params=["sqlite", "journal"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return (f"sqlite:///{tmp_path}/s.db" if request.param == "sqlite"
            else f"journal:{tmp_path}/s.log")


def test_each_trial_is_told_whole_and_workers_bound_what_is_in_flight(
        tmp_path: Path, url: str) -> None:
    cfg = cfg_with()
    study = open_study(cfg, url)
    ex = Canned()
    summary = run_study(study, cfg, options(tmp_path, url, 8, ex))
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert summary.complete == 8
    assert len({t.user_attrs["codesign.design_key"] for t in done}) == 8
    for t in done:
        assert {"codesign.hw", "codesign.layers", "codesign.accuracy", "codesign.driver",
                "codesign.constraint_names"} <= set(t.user_attrs)
        assert "constraints" in t.system_attrs and len(t.values) == 3
    assert ex.most_in_flight <= 3
    from codesign.optuna_adapter import claims

    held = claims(study)  # every claim was released or settled with its trial's result
    assert all(h.get("final") for h in held.values())
    assert {h["trial"] for n, h in held.items() if n.startswith("design:")} == {
        t.number for t in done}
    assert not study.get_trials(states=(TrialState.RUNNING,))


def test_a_timed_out_evaluation_fails_for_good(tmp_path: Path, url: str) -> None:
    cfg = cfg_with(trial_timeout_s=5)
    study = open_study(cfg, url)
    with pytest.raises(Exception, match="failed trials"):
        run_study(study, cfg, options(tmp_path, url, 2, Canned("timeout"), workers=1))
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert failed and all(t.user_attrs.get("codesign.fail_final") for t in failed)
    assert all("timeout!" in t.user_attrs["codesign.fail_reason"] for t in failed)


def test_a_lost_worker_is_retried_then_failed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    cfg = cfg_with(max_retries=2)
    study = open_study(cfg, url)
    ex = Canned("lost")
    with pytest.raises(Exception, match="failed trials"):
        run_study(study, cfg, options(tmp_path, url, 2, ex, workers=1))
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert all(t.user_attrs["codesign.attempts"] == 3 for t in failed)
    assert ex.submitted == 3 * len(failed)


def test_the_in_process_executor_runs_a_real_evaluation(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    cfg = cfg_with()
    study = open_study(cfg, url)
    summary = run_study(study, cfg, replace(options(tmp_path, url, 2, None), workers=0))
    assert summary.complete == 2 and summary.trained_now >= 1
    trained = [t for t in study.trials if t.user_attrs.get("codesign.trained")]
    assert all(t.user_attrs["codesign.device"] == "cpu" for t in trained)


def test_two_sessions_share_the_target_and_evaluate_no_design_twice(tmp_path: Path,
                                                                    url: str) -> None:
    cfg = cfg_with()
    first, second = open_study(cfg, url, seed=1), open_study(cfg, url, seed=1)
    errors: list[BaseException] = []

    def drive(study: optuna.Study) -> None:
        try:
            run_study(study, cfg, options(tmp_path, url, 10, Canned()))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=drive, args=(s,)) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    done = [t for t in first.get_trials(states=(TrialState.COMPLETE,))
            if "codesign.repeat_of" not in t.user_attrs]
    keys = [t.user_attrs["codesign.design_key"] for t in done]
    assert len(keys) == len(set(keys)) == 10


def test_a_dead_driver_of_another_host_does_not_block_a_live_one(tmp_path: Path,
                                                                url: str) -> None:
    """A driver on another host died holding two seats and a design, its lease not yet
    lapsed: the live driver runs what it can, and once the lease lapses, fails the dead
    driver's trial, re-queues its design and reaches the target."""
    import time

    from codesign.optuna_adapter import claim, claims, new_trial, set_params

    cfg = cfg_with(lease_s=1.0)
    study = open_study(cfg, url)
    dead = "another-host:77"
    trial = new_trial(study, user_attrs={"codesign.driver": dead, "codesign.session": "s"})
    set_params(study, trial, {k: d.low if hasattr(d, "low") else d.choices[0]
                              for k, d in cfg.space.distributions().items()},
               cfg.space.distributions())
    holder = {"trial": trial.number, "driver": dead, "session": "s"}
    for name in ("seat:0", "seat:1", "design:whatever"):
        assert claim(study, name, holder, lambda h: False) is None
    beat = {"driver": dead, "t": time.time(), "lease_s": 2.0}  # lapses while the live runs
    assert claim(study, f"beat:{dead}", beat, lambda h: True) is None
    t0 = time.monotonic()
    summary = run_study(study, cfg, options(tmp_path, url, 4, Canned()))
    assert summary.complete == 4
    assert time.monotonic() - t0 > 2.0  # it waited for the lease, then took over
    first = study.trials[trial.number]
    assert first.state == TrialState.FAIL
    assert "re-queued" in first.user_attrs["codesign.fail_reason"]
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert not [n for n, h in claims(study).items()
                if h.get("driver") == dead and not n.startswith("beat:")]
    # the live driver's own beat is gone once it stopped
    assert [n for n in claims(study) if n.startswith("beat:")] == [f"beat:{dead}"]


class TakenOver(Canned):
    """Before its first results come back, another driver (one that took this one's lease
    for lapsed) fails one of the running trials."""

    def __init__(self, study: optuna.Study) -> None:
        super().__init__()
        self.study, self.done = study, False

    def wait(self, timeout_s: float) -> list[Outcome]:
        if not self.done and self._queue:
            from codesign.optuna_adapter import fail_stale

            self.done = True
            victim = self.study.get_trials(states=(TrialState.RUNNING,))[0]
            fail_stale(self.study, victim, "codesign.fail_reason", "taken over")
        return super().wait(timeout_s)


def test_a_result_for_a_trial_another_driver_took_over_is_dropped(
        tmp_path: Path, url: str, caplog: pytest.LogCaptureFixture) -> None:
    cfg = cfg_with()
    study = open_study(cfg, url)
    summary = run_study(study, cfg, options(tmp_path, url, 5, TakenOver(study)))
    assert summary.complete == 5
    lost = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["codesign.fail_reason"] for t in lost] == ["taken over"]
    assert "failed by another driver while this one evaluated it" in caplog.text
    assert not study.get_trials(states=(TrialState.RUNNING,))
