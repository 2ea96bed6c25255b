"""A real multi-node Ray cluster on 127.0.0.1 for the tests: one ``ray start --head`` and
``n_workers`` ``ray start --address`` processes on this machine, token authentication on.

    with start_cluster(2, cpus_per_node=1) as cluster:   # 3 nodes, 1 CPU each
        env = cluster.client_env()                        # for a subprocess client
        subprocess.run([..., "codesign", "run", "exp.yaml", "--ray-address",
                        cluster.address], env=env)
        cluster.kill_worker(0)                            # node 1 gone, abruptly

Every node stays on 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, see
``codesign.driver.ray_connect``; a worker node is started through a small wrapper, since
``ray start --address`` refuses that setting). The cluster lives under its own temp dir
(never ``/tmp/ray``: nothing here is found by another ``ray.init()``), and every process of
a node, including the Ray workers that run tasks (each in a process group of its own),
carries a marker variable by which ``kill_worker`` and ``stop`` find it: only this
cluster's processes are ever signalled (never ``ray stop``, which stops every Ray on the
machine). A client needs ``client_env()``: the token (``RAY_AUTH_MODE=token``,
``RAY_AUTH_TOKEN``) and the loopback setting.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "CODESIGN_TEST_RAY_NODE"  # "<cluster tag>:<node index>" in every process's env
STARTED = "Ray runtime started."
OBJECT_STORE_BYTES = 100 * 1024 * 1024
# the GCS health-checks each raylet this often, and calls a node dead after 5 misses in a
# row: a killed node is noticed in about 5 s (Ray's default period, 3 s: about 15 s)
HEALTH_CHECK_PERIOD_MS = 1000

# `ray start --address` aborts when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with it on, it
# turns 127.0.0.1 into the host's interface address: start it with the switch on, then
# answer 127.0.0.1 for this node's IP and hand the processes it starts the switch off.
_WORKER_BOOT = """
import os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
import ray._private.services as services
from ray.scripts.scripts import main
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
services.get_node_ip_address = lambda address=None: "127.0.0.1"
sys.argv = ["ray", *sys.argv[1:]]
main()
"""


def free_port() -> int:
    """A TCP port nothing listens on now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A running cluster: ``address`` (the head's GCS, 127.0.0.1:PORT), ``token``,
    ``temp_dir``; ``env``: what a client process needs on top of its environment."""

    address: str
    token: str
    temp_dir: Path
    env: dict[str, str]
    tag: str
    _procs: list[subprocess.Popen] = field(default_factory=list)  # head first
    _logs: list[Path] = field(default_factory=list)

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) without ``RAY_ADDRESS`` or a
        token of its own, plus ``env``."""
        out = {k: v for k, v in (os.environ if base is None else base).items()
               if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", MARKER)}
        return {**out, **self.env}

    @property
    def nodes(self) -> int:
        """Nodes started (alive or killed), head included."""
        return len(self._procs)

    def pids(self, node: int) -> list[int]:
        """The live processes of node ``node`` (0: the head, i: worker node i-1)."""
        return _marked(f"{self.tag}:{node}")

    def kill_worker(self, i: int) -> None:
        """Worker node ``i`` (0-based; the head is not one) dies at once: SIGKILL to all its
        processes, as when a machine is lost."""
        if not 0 <= i < len(self._procs) - 1:
            raise IndexError(f"worker node {i}: the cluster has {len(self._procs) - 1}")
        _kill(self.pids(i + 1), signal.SIGKILL)
        self._procs[i + 1].wait(timeout=10)

    def log(self, node: int) -> str:
        """The ``ray start`` output of node ``node``."""
        return self._logs[node].read_text(errors="replace")

    def stop(self, grace_s: float = 3.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``grace_s``) and remove the temp
        dir. Safe to call twice, and on a cluster that did not finish starting."""
        for node in reversed(range(len(self._procs))):
            _kill(self.pids(node), signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _marked(f"{self.tag}:"):
            time.sleep(0.2)
        _kill(_marked(f"{self.tag}:"), signal.SIGKILL)
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for _ in range(20):  # the last ones may still be closing their files
            if not _marked(f"{self.tag}:"):
                break
            time.sleep(0.1)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_cluster(n_workers: int, cpus_per_node: float = 1,
                  resources: dict[str, float] | None = None, *,
                  head_cpus: float | None = None, gpus_per_node: int = 0,
                  timeout_s: float = 120) -> Cluster:
    """A head and ``n_workers`` worker nodes on 127.0.0.1, each with ``cpus_per_node`` CPUs
    (the head: ``head_cpus`` if given), ``gpus_per_node`` GPUs and the custom
    ``resources``; returns once every node is registered. Stops what it started if any
    node fails to start within ``timeout_s`` (RuntimeError with that node's log tail)."""
    tag = secrets.token_hex(6)
    token = secrets.token_hex(32)
    temp_dir = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # socket paths: ~107 chars
    port = free_port()
    address = f"127.0.0.1:{port}"
    client = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
              "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    cluster = Cluster(address=address, token=token, temp_dir=temp_dir, env=client, tag=tag)
    common = ["--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
              "--num-gpus", str(gpus_per_node), "--object-store-memory",
              str(OBJECT_STORE_BYTES)]
    if resources:
        common += ["--resources", json.dumps(resources)]
    head = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--port",
            str(port), "--temp-dir", str(temp_dir), "--include-dashboard", "false",
            "--num-cpus", f"{cpus_per_node if head_cpus is None else head_cpus:g}"]
    worker = [sys.executable, "-c", _WORKER_BOOT, "start", "--address", address,
              "--num-cpus", f"{cpus_per_node:g}"]
    deadline = time.monotonic() + timeout_s
    try:
        for node in range(n_workers + 1):
            argv = (head if node == 0 else worker) + common + [
                "--dashboard-agent-listen-port", str(free_port())]
            _launch(cluster, node, argv)
            # one at a time: raylets starting together on one machine pick the same free
            # port (bind: Address already in use) and the same log file names
            _wait_started(cluster, node, deadline)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _launch(cluster: Cluster, node: int, argv: list[str]) -> None:
    env = cluster.client_env()
    env[MARKER] = f"{cluster.tag}:{node}"
    env["RAY_health_check_period_ms"] = str(HEALTH_CHECK_PERIOD_MS)
    log = cluster.temp_dir / f"node{node}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=cluster.temp_dir,
                                start_new_session=True)
    cluster._procs.append(proc)
    cluster._logs.append(log)


def _wait_started(cluster: Cluster, node: int, deadline: float) -> None:
    """Until node ``node`` says it started (registered with the GCS), or RuntimeError."""
    proc = cluster._procs[node]
    while STARTED not in cluster.log(node):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(cluster.log(node).splitlines()[-15:])
            why = (f"exited with {proc.returncode}" if proc.returncode is not None else
                   "did not start in time")
            raise RuntimeError(f"ray node {node} {why}:\n{tail}")
        time.sleep(0.2)


def _marked(prefix: str) -> list[int]:
    """Live processes whose ``MARKER`` variable starts with ``prefix`` (Linux /proc)."""
    want = f"{MARKER}={prefix}".encode()
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
        except OSError:  # gone, or not ours
            continue
        if state != b"Z" and any(v.startswith(want) for v in env.split(b"\0")):
            pids.append(int(entry.name))
    return pids


def _kill(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
