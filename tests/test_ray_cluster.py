"""``codesign.driver.ray_connect``: a trial's request checked per node (no Ray), a private
local instance on loopback, and a real multi-node cluster on 127.0.0.1 (``ray start``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codesign.driver import ray_connect
from codesign.driver.ray_connect import check_request, task_options, trial_request
from codesign.errors import CodesignError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ray_cluster_helpers import Cluster, free_port, start_cluster  # noqa: E402

AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _ray_env() -> dict[str, str]:
    """The RAY_* variables of this process (what connect may set; ray.init itself sets
    PYTHONBREAKPOINT, which stays)."""
    return {k: v for k, v in os.environ.items() if k.startswith("RAY_")}


def _node(cpus: float, ip: str = "127.0.0.1", alive: bool = True, **more: float) -> dict:
    return {"NodeID": "x", "Alive": alive, "NodeManagerAddress": ip,
            "Resources": {"CPU": cpus, "memory": 1e9, **more}}


# ------------------------------------------------------------------ no Ray


def test_trial_request_and_task_options_agree():
    assert trial_request(2, 0, {"fake_gpu": 1}) == {"CPU": 2.0, "fake_gpu": 1.0}
    assert trial_request(1, 0.25) == {"CPU": 1.0, "GPU": 0.25}
    assert task_options(1, 0.25) == {"num_cpus": 1.0, "num_gpus": 0.25}
    assert task_options(2, 1, {"fake_gpu": 0.5}) == {
        "num_cpus": 2.0, "num_gpus": 1.0, "resources": {"fake_gpu": 0.5}}
    with pytest.raises(CodesignError, match="'GPU' is not a custom resource"):
        trial_request(1, 0, {"GPU": 1})
    with pytest.raises(CodesignError, match="gpus_per_trial=-1"):
        task_options(1, -1)
    with pytest.raises(CodesignError, match="resources_per_trial.x=inf"):
        trial_request(1, 0, {"x": float("inf")})


def test_check_request_is_per_node_not_cluster_totals():
    one_cpu = [_node(1), _node(1), _node(1)]  # 3 CPUs in all, 1 a node
    assert check_request({"CPU": 1}, one_cpu) is None
    problem = check_request({"CPU": 2}, one_cpu)
    assert problem == (
        "execution: no node can run a trial needing cpus_per_trial=2, so none could ever "
        "be scheduled: 3 nodes at 127.0.0.1 have CPU=1 (a trial runs on one node: the "
        "cluster's total does not count)")
    assert check_request({"CPU": 2}, [*one_cpu, _node(2, "10.0.0.9")]) is None


def test_check_request_gpus_custom_resources_and_dead_nodes():
    nodes = [_node(4, "10.0.0.1", GPU=1), _node(8, "10.0.0.2", fake_gpu=1)]
    assert check_request({"CPU": 1, "GPU": 0.5}, nodes) is None
    assert check_request({"CPU": 1, "fake_gpu": 1}, nodes) is None
    problem = check_request({"CPU": 1, "GPU": 0.5, "fake_gpu": 1}, nodes)
    assert problem is not None and "\n" not in problem
    assert ("needing cpus_per_trial=1, gpus_per_trial=0.5, resources_per_trial.fake_gpu=1"
            in problem)
    assert ("node 10.0.0.1 has CPU=4, GPU=1, fake_gpu=0; node 10.0.0.2 has CPU=8, GPU=0, "
            "fake_gpu=1") in problem
    assert problem.endswith("(a trial runs on one node: the cluster's total does not count)")
    assert "total" not in check_request({"GPU": 2}, nodes)  # nor would the totals
    # a dead node's resources do not count; zero amounts ask nothing
    assert check_request({"CPU": 2}, [_node(1), _node(4, alive=False)]) is not None
    assert check_request({"CPU": 1, "GPU": 0}, [_node(1)]) is None
    assert "no alive node" in check_request({"CPU": 1}, [_node(4, alive=False)])


def test_version_problem_names_both_sides():
    import platform

    import ray

    mine = {"ray_version": ray.__version__, "python_version": platform.python_version()}
    assert ray_connect._version_problem(mine) is None
    assert ray_connect._version_problem(None) is None
    problem = ray_connect._version_problem({**mine, "ray_version": "2.9.3"})
    assert problem.startswith("the cluster runs Ray 2.9.3 on Python ")
    assert f"this process Ray {ray.__version__}" in problem
    assert ray_connect._version_problem({**mine, "python_version": "3.8.1"})


def test_bad_addresses_are_refused_before_anything_starts():
    import ray

    for address, why in [("ray://10.0.0.1:10001", "Ray Client"),
                         ("10.0.0.1", "HOST:PORT"), ("h:99999", "HOST:PORT")]:
        with pytest.raises(CodesignError, match=f"cannot connect to {address}: .*{why}"):
            ray_connect.connect(address, request={"CPU": 1})
        assert not ray.is_initialized()


# ------------------------------------------------------------------ a local instance


@pytest.fixture
def foreign() -> Cluster:
    """Another Ray on this machine that a local run must not attach to."""
    cluster = start_cluster(0)
    yield cluster
    cluster.stop()


def _listening_of_this_instance() -> list[tuple[str, int, str]]:
    """(ip, port, process name) of every TCP socket that the local instance's processes
    (GCS, raylet, agents, workers: Ray's own list, and their descendants) listen on."""
    import psutil  # Ray's own copy (ray/thirdparty_files), on sys.path once ray is imported
    import ray

    node = ray._private.worker._global_node
    procs = []
    for infos in node.all_processes.values():
        for info in infos:
            p = psutil.Process(info.process.pid)
            procs += [p, *p.children(recursive=True)]
    out = []
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.append((c.laddr.ip, c.laddr.port, p.name()))
        except psutil.Error:
            pass
    return out


@pytest.mark.slow
def test_local_instance_is_private_and_on_loopback(foreign, monkeypatch):
    import ray

    # a cluster named in the environment, as a user's shell may have it
    monkeypatch.setenv("RAY_ADDRESS", foreign.address)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    for name in AUTH_VARS:
        monkeypatch.delenv(name, raising=False)
    before = _ray_env()
    t0 = time.monotonic()
    info = ray_connect.connect(None, request=trial_request(1, 0, {"fake_gpu": 1}),
                               local_resources={"fake_gpu": 2})
    try:
        started = time.monotonic() - t0
        assert info.local and info.nodes == 1 and info.node_ips == ("127.0.0.1",)
        assert info.address != foreign.address
        assert info.address.startswith("127.0.0.1:")
        assert ray.get_runtime_context().gcs_address == info.address
        nodes = ray.nodes()
        assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]
        assert nodes[0]["Resources"]["CPU"] == (os.cpu_count() or 1)
        assert nodes[0]["Resources"]["fake_gpu"] == 2
        # no dashboard; every socket of the instance's processes on 127.0.0.1 only
        assert not ray._private.worker._global_node.webui_url
        listening = _listening_of_this_instance()
        assert listening, "found none of the instance's listening sockets"
        off = [x for x in listening if x[0] not in ("127.0.0.1", "::ffff:127.0.0.1")]
        assert not off, f"listening beyond loopback: {off}"
        assert 8265 not in {port for _, port, _ in listening}
        # its own token, in this process only (nothing written to ~/.ray)
        assert os.environ["RAY_AUTH_TOKEN"] != foreign.token
        def where() -> str:  # by value: the workers cannot import this test module
            return ray.util.get_node_ip_address()

        opts = task_options(1, 0, {"fake_gpu": 1})
        assert ray.get(ray.remote(where).options(**opts).remote(), timeout=60) == "127.0.0.1"
    finally:
        ray_connect.shutdown()
    assert _ray_env() == before  # what connect set is undone
    print(f"local start {started:.1f} s")


@pytest.mark.slow
def test_local_request_no_node_meets_leaves_nothing_started(monkeypatch):
    import ray

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    for name in AUTH_VARS:
        monkeypatch.delenv(name, raising=False)
    before = _ray_env()
    with pytest.raises(CodesignError, match=r"needing cpus_per_trial=1, resources_per_trial"
                                            r"\.fake_gpu=1, .*: node 127\.0\.0\.1 has "
                                            r"CPU=\d+, fake_gpu=0$"):
        ray_connect.connect(None, request=trial_request(1, 0, {"fake_gpu": 1}))
    assert not ray.is_initialized()
    assert _ray_env() == before


# ------------------------------------------------------------------ a multi-node cluster


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    """A head and 2 worker nodes on 127.0.0.1, 1 CPU and 1 ``fake_gpu`` each."""
    t0 = time.monotonic()
    cluster = start_cluster(2, cpus_per_node=1, resources={"fake_gpu": 1})
    print(f"cluster start {time.monotonic() - t0:.1f} s")
    yield cluster
    cluster.stop()


@pytest.fixture
def client(cluster, monkeypatch) -> Cluster:
    """This process set up as the cluster's client (its token, loopback)."""
    for name in AUTH_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in cluster.env.items():
        monkeypatch.setenv(name, value)
    return cluster


@pytest.mark.slow
def test_connect_joins_every_loopback_node(client):
    import ray

    info = ray_connect.connect(client.address, request=trial_request(1, 0, {"fake_gpu": 1}))
    try:
        assert info == ray_connect.ClusterInfo(address=client.address, local=False, nodes=3,
                                               node_ips=("127.0.0.1",) * 3)
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        assert ray.get_runtime_context().runtime_env["py_modules"]  # the code is shipped
    finally:
        ray_connect.shutdown()


@pytest.mark.slow
def test_two_cpus_on_one_cpu_nodes_is_refused_before_joining(client):
    import ray

    t0 = time.monotonic()
    with pytest.raises(CodesignError) as e:
        ray_connect.connect(client.address, request=trial_request(2))
    assert str(e.value) == (
        "execution: no node can run a trial needing cpus_per_trial=2, so none could ever "
        "be scheduled: 3 nodes at 127.0.0.1 have CPU=1 (a trial runs on one node: the "
        "cluster's total does not count)")
    with pytest.raises(CodesignError, match="resources_per_trial.other=1, .*have CPU=1, "
                                            "other=0$"):
        ray_connect.connect(client.address, request=trial_request(1, 0, {"other": 1}))
    assert not ray.is_initialized()
    assert time.monotonic() - t0 < 20


@pytest.mark.slow
def test_without_the_token_authentication_fails_clearly(client, monkeypatch):
    import ray

    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("HOME", str(client.temp_dir))  # no ~/.ray/auth_token either
    t0 = time.monotonic()
    with pytest.raises(CodesignError) as e:
        ray_connect.connect(client.address, request=trial_request(1))
    assert str(e.value).startswith(f"ray: cannot connect to {client.address}: "
                                   "authentication failed (the cluster requires a token and "
                                   "this process sends none: set RAY_AUTH_MODE=token")
    assert "RAY_AUTH_TOKEN" in str(e.value) and "\n" not in str(e.value)

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 64)
    with pytest.raises(CodesignError, match="authentication failed .the cluster rejected the "
                                            "token from RAY_AUTH_TOKEN"):
        ray_connect.connect(client.address, request=trial_request(1))
    assert not ray.is_initialized()
    assert time.monotonic() - t0 < 20


@pytest.mark.slow
def test_nothing_listening_is_unreachable_at_once(client):
    address = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(CodesignError, match=f"^ray: cannot connect to {address}: unreachable "
                                            r"\(nothing listens there"):
        ray_connect.connect(address, request=trial_request(1))
    assert time.monotonic() - t0 < 5


@pytest.mark.slow
def test_a_subprocess_client_needs_only_client_env(cluster, tmp_path):
    """As ``codesign run --ray-address`` would: its tasks run the shipped packages."""
    code = f"""
import ray
from codesign.driver.ray_connect import connect, shutdown, task_options, trial_request
info = connect({cluster.address!r}, request=trial_request(1, 0, {{"fake_gpu": 1}}))
print("nodes", info.nodes, *info.node_ips)

def where():
    import codesign.driver.executor, evaluators.evaluate, search_spaces
    return " ".join([ray.util.get_node_ip_address(), evaluators.evaluate.__file__,
                     codesign.driver.executor.__file__, search_spaces.__file__])

f = ray.remote(where).options(scheduling_strategy="SPREAD",
                              **task_options(1, 0, {{"fake_gpu": 1}}))
for line in ray.get([f.remote() for _ in range(3)], timeout=120):
    print("task", line)
shutdown()
"""
    # run outside the checkout: the workers must import the packages that were shipped
    out = subprocess.run([sys.executable, "-c", code], env=cluster.client_env(), cwd=tmp_path,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert "nodes 3 127.0.0.1 127.0.0.1 127.0.0.1" in lines
    tasks = [line.split()[1:] for line in lines if line.startswith("task ")]
    assert len(tasks) == 3
    for ip, *files in tasks:
        assert ip == "127.0.0.1"
        assert all("/runtime_resources/py_modules_files/" in f for f in files), files


@pytest.mark.slow
def test_kill_worker_takes_its_node_away(cluster, client):
    """Last: the module's cluster has a node less after it."""
    assert all(cluster.pids(node) for node in range(3))
    cluster.kill_worker(1)
    assert not cluster.pids(2) and cluster.pids(1) and cluster.pids(0)
    deadline = time.monotonic() + 60
    while True:  # the GCS notices a lost node within its health-check period
        info = ray_connect.connect(cluster.address, request=trial_request(1))
        ray_connect.shutdown()
        if info.nodes == 2 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert info.nodes == 2
