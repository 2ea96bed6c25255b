"""Several drivers on one study, through the real CLI with real Ray and a real database
(SQLite, a journal file, a PostgreSQL server on 127.0.0.1): the study's target is reached
once, every design is evaluated by one driver, every network trained once."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from cli_helpers import ENV
from optuna.trial import TrialState
from pg_server import postgres_url  # noqa: F401 - a fixture

from codesign.study import open_storage

pytestmark = pytest.mark.slow

EXP = {
    "schema_version": 1,
    "study": {"name": "two", "seed": 11, "n_trials": 10},
    "objectives": ["accuracy", "latency_ms", "energy_mj"],
    "sampler": {"name": "random"},
    "task": {"dataset": "digits", "steps": 6, "batch_size": 32},
    "space": {
        # 6 networks x 8 accelerators: two drivers meet on networks, and on designs
        "network": {"stages": 1, "depth": [1, 2], "width": [8, 12, 16], "kernel": 3},
        "compression": {"weight_bits": 8, "activation_bits": 8, "prune_ratio": 0.0},
        "accelerator": {"dataflow": ["ws", "os"], "pe_rows": [8, 16], "pe_cols": [8, 16]},
    },
    "execution": {"workers": 2, "cpus_per_trial": 0.5},
}


def _drivers(tmp: Path, url: str, name: str, n: int = 10) -> list[subprocess.CompletedProcess]:
    exp = {**EXP, "study": {**EXP["study"], "name": name}}
    (tmp / "exp.yaml").write_text(yaml.safe_dump(exp))
    cmd = [sys.executable, "-m", "codesign", "--debug", "run", "exp.yaml", "--storage", url,
           "--n-trials", str(n), "--no-progress"]
    first = subprocess.Popen(cmd, cwd=tmp, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    # the same command on a second machine: it finds the study (made, or being made, by
    # the first) with the same experiment, and joins it
    second = subprocess.Popen(cmd, cwd=tmp, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    out = []
    for p in (first, second):
        stdout, stderr = p.communicate(timeout=400)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def _check(url: str, name: str, procs: list[subprocess.CompletedProcess], n: int = 10) -> None:
    for p in procs:
        assert p.returncode == 0, p.stderr[-3000:]
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    done = [t for t in trials if t.state == TrialState.COMPLETE
            and "codesign.repeat_of" not in t.user_attrs]
    keys = [t.user_attrs["codesign.design_key"] for t in done]
    assert len(keys) == len(set(keys)) == n  # finished = the target, each design once
    trained = Counter(t.user_attrs["codesign.training_key"] for t in trials
                      if t.user_attrs.get("codesign.trained"))
    assert trained and max(trained.values()) == 1, trained  # no network trained twice
    drivers = {t.user_attrs.get("codesign.driver") for t in done}
    assert len(drivers) == 2  # both drivers did work


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_drivers_on_a_file_storage(tmp_path: Path, kind: str) -> None:
    url = (f"sqlite:///{tmp_path}/two.db" if kind == "sqlite"
           else f"journal:{tmp_path}/two.log")
    _check(url, f"two-{kind}", _drivers(tmp_path, url, f"two-{kind}"))


def test_two_drivers_on_postgresql(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    _check(postgres_url, "two-pg", _drivers(tmp_path, postgres_url, "two-pg"))
