"""``codesign run --ray-address`` on a real multi-node Ray cluster on 127.0.0.1 (``ray
start`` processes: a head and two worker nodes, ``ray_cluster_helpers``), through the real
CLI: a study completes on the workers, a worker node killed mid-study loses no trial,
custom resources stand in for GPUs, and a connection or request that cannot work creates
nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from cli_helpers import ENV
from optuna.trial import TrialState
from ray_cluster_helpers import start_cluster

from codesign.study import open_storage

pytestmark = pytest.mark.slow

EXP = {
    "schema_version": 1,
    "study": {"name": "cl", "seed": 2, "n_trials": 6},
    "objectives": ["accuracy", "latency_ms", "energy_mj"],
    "sampler": {"name": "random"},
    "task": {"dataset": "digits", "steps": 60, "batch_size": 32},
    "space": {
        "network": {"stages": 1, "depth": [1, 2], "width": [8, 12, 16, 24], "kernel": 3},
        "compression": {"weight_bits": [4, 8], "activation_bits": 8, "prune_ratio": 0.0},
        "accelerator": {"dataflow": ["ws", "os"], "pe_rows": [8, 16], "pe_cols": [8, 16]},
    },
    "execution": {"workers": 2, "resources_per_trial": {"fake_gpu": 1}},
}


@pytest.fixture(scope="module")
def cluster():
    # the head runs no trial (0 CPUs); each worker node has one CPU and one "fake_gpu"
    c = start_cluster(2, cpus_per_node=1, resources={"fake_gpu": 1}, head_cpus=0)
    yield c
    c.stop()


def _write(tmp: Path, name: str, **execution: object) -> None:
    exp = {**EXP, "study": {**EXP["study"], "name": name},
           "execution": {**EXP["execution"], **execution}}
    (tmp / "exp.yaml").write_text(yaml.safe_dump(exp))


def _run(tmp: Path, cluster, *extra: str, env: dict | None = None,
         background: bool = False):
    cmd = [sys.executable, "-m", "codesign", "run", "exp.yaml", "--storage",
           f"sqlite:///{tmp}/cl.db", "--ray-address", cluster.address, "--no-progress",
           *extra]
    env = env or cluster.client_env(ENV)
    if background:
        return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=400)


def _nodes_of_the_cluster(cluster) -> list[dict]:
    code = ("import json, ray; ray.init(address='auto', log_to_driver=False); "
            "print(json.dumps([{'ip': n['NodeManagerAddress'], 'id': n['NodeID'], "
            "'alive': n['Alive'], 'res': n['Resources']} for n in ray.nodes()]))")
    env = {**cluster.client_env(ENV), "RAY_ADDRESS": cluster.address}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_study_runs_on_the_worker_nodes_with_a_custom_resource(cluster, tmp_path) -> None:
    _write(tmp_path, "cl")
    proc = _run(tmp_path, cluster)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nodes = _nodes_of_the_cluster(cluster)
    assert {n["ip"] for n in nodes} == {"127.0.0.1"}  # every node on loopback
    workers = {n["id"] for n in nodes if n["res"].get("CPU", 0) > 0}
    study = optuna.load_study(study_name="cl", storage=open_storage(f"sqlite:///{tmp_path}/cl.db"))
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len({t.user_attrs["codesign.design_key"] for t in done}) == 6
    ran_on = {t.user_attrs["codesign.node"] for t in done if "codesign.node" in t.user_attrs}
    assert ran_on and ran_on <= workers  # never on the head (it has no CPU for trials)


@pytest.mark.parametrize(("execution", "words"), [
    ({"resources_per_trial": {"fake_gpu": 2}}, "fake_gpu"),
    ({"cpus_per_trial": 2}, "cpus_per_trial=2"),
])
def test_a_trial_no_node_can_run_is_refused_before_anything_is_made(
        cluster, tmp_path, execution, words) -> None:
    _write(tmp_path, "refused", **execution)
    proc = _run(tmp_path, cluster)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "cl.db").exists()  # no study, no database file


def test_without_the_token_the_connection_fails_clearly_and_makes_nothing(
        cluster, tmp_path) -> None:
    _write(tmp_path, "noauth")
    env = {k: v for k, v in cluster.client_env(ENV).items() if k != "RAY_AUTH_TOKEN"}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    proc = _run(tmp_path, cluster, env=env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = proc.stderr.strip().splitlines()
    assert len(line) == 1 and "authentication" in line[0], proc.stderr
    assert not (tmp_path / "cl.db").exists()


def test_a_trial_past_its_timeout_is_stopped_and_failed_for_good(cluster, tmp_path) -> None:
    exp = {**EXP, "study": {**EXP["study"], "name": "slow", "n_trials": 2},
           "task": {**EXP["task"], "steps": 100000},  # minutes each, were it not stopped
           "execution": {**EXP["execution"], "trial_timeout_s": 1.0}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    proc = _run(tmp_path, cluster)
    assert proc.returncode != 0  # every trial timed out: the run stops after 10 failures
    study = optuna.load_study(study_name="slow",
                              storage=open_storage(f"sqlite:///{tmp_path}/cl.db"))
    failed = study.get_trials(states=(TrialState.FAIL,))
    reasons = [t.user_attrs.get("codesign.fail_reason", "") for t in failed]
    assert failed and all("timed out after 1 s" in r for r in reasons), reasons
    assert all(t.user_attrs.get("codesign.fail_final") for t in failed)
    assert not study.get_trials(states=(TrialState.RUNNING,))


def test_killing_a_worker_node_mid_study_loses_no_trial(cluster, tmp_path) -> None:
    # last in the module: it takes a node away
    exp = {**EXP, "study": {**EXP["study"], "name": "kill", "n_trials": 8},
           "task": {**EXP["task"], "steps": 400},  # long enough to be caught running
           "execution": {**EXP["execution"], "resources_per_trial": {}}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    url = f"sqlite:///{tmp_path}/cl.db"
    proc = _run(tmp_path, cluster, background=True)
    deadline = time.monotonic() + 300
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="kill", storage=open_storage(url))
        except Exception:  # noqa: BLE001 - not made yet
            continue
        states = [t.state for t in study.get_trials(deepcopy=False)]
        if TrialState.COMPLETE in states and TrialState.RUNNING in states:
            cluster.kill_worker(0)  # a machine lost while trials run on it
            killed = True
            break
    stdout, stderr = proc.communicate(timeout=400)
    assert killed, "the study ended before a node could be killed mid-study"
    assert proc.returncode == 0, stderr[-3000:]
    study = optuna.load_study(study_name="kill", storage=open_storage(url))
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE
            and "codesign.repeat_of" not in t.user_attrs]
    assert len({t.user_attrs["codesign.design_key"] for t in done}) == len(done) == 8
    assert not [t for t in trials if t.state == TrialState.RUNNING]
