"""Starting or joining a Ray cluster, and what one trial asks of it.

Lifecycle (one per process, before a study or a task is created):

1. ``request = trial_request(cpus, gpus, resources)``: what one trial needs of one node
   (``task_options`` gives the same as ``ray.remote(...).options(**...)`` keywords).
2. ``connect(address, request=request)``:

   - no address: start a private local instance, always (``address="local"``: never the
     cluster named by ``RAY_ADDRESS`` or ``/tmp/ray/ray_current_cluster``), with
     ``os.cpu_count()`` CPUs, no dashboard, its GCS, raylet and agents on 127.0.0.1 only,
     and a token of its own (nothing written to ``~/.ray``);
   - an address (``HOST:PORT`` of a head started with ``ray start --head``): probe it
     first, without joining (a TCP connect, then a GCS client: authentication, the Ray and
     Python versions, the alive nodes, a node of it on this machine), then join it and ship
     the packages ``codesign``, ``evaluators`` and ``search_spaces`` to its workers
     (``runtime_env.py_modules``: the worker task, ``codesign.driver.executor.run_request``,
     imports ``codesign`` and ``evaluators``; ``search_spaces`` is not imported by it today
     and goes along so that a task may). The nodes need the third-party packages
     installed, and a driver on the machine of a node (Ray drives a cluster from a node).

   Either way ``request`` is checked against every alive node: a trial runs on one node,
   so a request no node can meet (2 CPUs on 1-CPU nodes, a GPU or custom resource no node
   has) is an error before anything starts, whatever the cluster's totals, also on a
   cluster that may autoscale. Every failure is one :class:`CodesignError` line, and leaves
   nothing behind (the local instance is stopped, the environment restored).
3. ``shutdown()`` at the end.

**Loopback.** Ray replaces a node IP of 127.0.0.1 (``ray.init(_node_ip_address=...)``,
``ray start --node-ip-address``, and the host of an address to connect to) by the host's
interface address (``resolve_ip_for_localhost`` in ``ray/_private/services.py``), unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: then ``get_node_ip_address`` answers 127.0.0.1
(``ray_constants.ENABLE_RAY_CLUSTER``). A node whose IP is 127.0.0.1 binds its GCS and
raylet servers to 127.0.0.1 instead of all interfaces. ``connect`` sets it for a local
instance and for a loopback address (this process and the Ray processes it starts).

**Authentication** (Ray 2.60). A local instance turns token authentication on
(``RAY_AUTH_MODE=token``). A ``ray start --head`` cluster has it on where a token was
there when it started (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``)
or ``RAY_AUTH_MODE=token`` was set. A client joining by address never turns it on itself:
it needs ``RAY_AUTH_MODE=token`` and the cluster's token in ``RAY_AUTH_TOKEN``, or a file
named by ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token`` (``ray get-auth-token`` on the
head prints it).
"""

from __future__ import annotations

import logging
import math
import os
import platform
import secrets
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from codesign.errors import CodesignError

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": node IPs stay 127.0.0.1
AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
PY_MODULES = ("codesign", "evaluators", "search_spaces")  # shipped to a cluster's workers
PROBE_TIMEOUT_S = 5.0  # each step of probing an address (a refused connection is instant)

_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_RAY_NAMES = {"CPU": "cpus_per_trial", "GPU": "gpus_per_trial"}
_EPS = 1e-9


@dataclass(frozen=True)
class ClusterInfo:
    """What ``connect`` joined: its GCS ``address``, whether it is a ``local`` instance
    started here, and its alive ``nodes`` with their IPs (one per node, sorted)."""

    address: str
    local: bool
    nodes: int
    node_ips: tuple[str, ...]


# ------------------------------------------------------------------ a trial's request


def trial_request(cpus_per_trial: float, gpus_per_trial: float = 0.0,
                  resources: Mapping[str, float] | None = None) -> dict[str, float]:
    """What one trial needs of one node, in Ray's resource names (``CPU``, ``GPU``, custom
    names); zero amounts left out. Raises CodesignError for a negative or non-finite amount,
    or CPU/GPU among the custom ``resources``."""
    request = {"CPU": float(cpus_per_trial), "GPU": float(gpus_per_trial)}
    for name, amount in (resources or {}).items():
        if name in _RAY_NAMES or name == "memory" or name.startswith("node:"):
            raise CodesignError(f"execution: resources_per_trial: {name!r} is not a custom "
                                "resource (give CPUs and GPUs as cpus_per_trial / "
                                "gpus_per_trial)")
        request[name] = float(amount)
    for name, amount in request.items():
        if not math.isfinite(amount) or amount < 0:
            raise CodesignError(f"execution: {_config_name(name)}={amount:g} (give a "
                                "finite amount >= 0)")
    return {k: v for k, v in request.items() if v > 0}


def task_options(cpus_per_trial: float, gpus_per_trial: float = 0.0,
                 resources: Mapping[str, float] | None = None) -> dict[str, Any]:
    """``ray.remote(f).options(**task_options(...))`` for one trial: the same request as
    :func:`trial_request` (``gpus_per_trial`` may be fractional: trials then share a GPU)."""
    request = trial_request(cpus_per_trial, gpus_per_trial, resources)
    options: dict[str, Any] = {"num_cpus": request.pop("CPU", 0.0),
                               "num_gpus": request.pop("GPU", 0.0)}
    if request:
        options["resources"] = request
    return options


def check_request(request: Mapping[str, float], nodes: list[dict[str, Any]]) -> str | None:
    """The one-line problem when no alive node of ``nodes`` (``ray.nodes()``'s dicts:
    ``Alive``, ``NodeManagerAddress``, ``Resources``) can run one trial needing
    ``request``, else None. Pure."""
    need = {k: float(v) for k, v in request.items() if v > 0}
    alive = [n for n in nodes if n.get("Alive", True)]
    if not alive:
        return "ray: the cluster has no alive node (no trial could ever be scheduled)"

    def fits(node: dict[str, Any]) -> bool:
        have = node.get("Resources") or {}
        return all(float(have.get(k, 0.0)) + _EPS >= v for k, v in need.items())

    if any(fits(n) for n in alive):
        return None
    wants = ", ".join(f"{_config_name(k)}={v:g}" for k, v in need.items())
    groups: dict[tuple[str, str], int] = {}  # (ip, what it has of the request) -> nodes
    for n in alive:
        have = n.get("Resources") or {}
        has = ", ".join(f"{k}={float(have.get(k, 0.0)):g}" for k in need)
        key = (str(n.get("NodeManagerAddress", "?")), has)
        groups[key] = groups.get(key, 0) + 1
    nodes_text = "; ".join(f"node {ip} has {has}" if count == 1 else
                           f"{count} nodes at {ip} have {has}"
                           for (ip, has), count in groups.items())
    totals = {k: sum(float((n.get("Resources") or {}).get(k, 0.0)) for n in alive)
              for k in need}
    whole = (" (a trial runs on one node: the cluster's total does not count)"
             if len(alive) > 1 and all(totals[k] + _EPS >= v for k, v in need.items())
             else "")
    return (f"execution: no node can run a trial needing {wants}, so none could ever be "
            f"scheduled: {nodes_text}{whole}")


def _config_name(ray_name: str) -> str:
    return _RAY_NAMES.get(ray_name, f"resources_per_trial.{ray_name}")


# ------------------------------------------------------------------ connect / shutdown


class _Env:
    """Environment variables (and Ray's loopback switch) set by ``connect``, undone by
    ``restore``."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}
        self._loopback_const: bool | None = None

    def set(self, name: str, value: str) -> None:
        if name not in self._saved:
            self._saved[name] = os.environ.get(name)
        os.environ[name] = value

    def loopback(self) -> None:
        """Keep node IPs 127.0.0.1, here and in the Ray processes started from here."""
        self.set(LOOPBACK_ENV, "0")
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None and self._loopback_const is None:
            # read once, when Ray was imported: set it too where that was before this call
            self._loopback_const = constants.ENABLE_RAY_CLUSTER
            constants.ENABLE_RAY_CLUSTER = False

    def restore(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()
        if self._loopback_const is not None:
            constants = sys.modules.get("ray._private.ray_constants")
            if constants is not None:
                constants.ENABLE_RAY_CLUSTER = self._loopback_const
            self._loopback_const = None
        _reload_auth_config()


_env = _Env()


def connect(address: str | None, *, request: Mapping[str, float],
            namespace: str | None = None,
            local_resources: Mapping[str, float] | None = None) -> ClusterInfo:
    """Start a private local Ray instance (``address`` None or empty) or join the cluster at
    ``address``, then check that some alive node can run a trial needing ``request`` (see
    the module docstring). ``local_resources``: custom resources of the local instance's
    node (tests: a stand-in for a GPU).

    Raises:
        CodesignError: one line: the instance did not start, the address is unreachable,
            authentication failed, the versions differ, no node of the cluster runs here, or
            no node can run a trial. Nothing is left started or joined.
        RuntimeError: Ray is already initialised in this process (call ``shutdown``).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray 2.60 warns on every local start that it turned token authentication on
    logging.getLogger(_RAY_AUTH_LOGGER).setLevel(logging.ERROR)
    import ray

    if ray.is_initialized():
        raise RuntimeError("ray_connect.connect: Ray is already initialised in this process")
    try:
        if address:
            info = _join(address, request, namespace)
        else:
            info = _start_local(request, namespace, local_resources)
    except BaseException:
        if ray.is_initialized():
            ray.shutdown()
        _env.restore()
        raise
    return info


def shutdown() -> None:
    """Leave the cluster, or stop the local instance; restore what ``connect`` set."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _env.restore()


_INIT_KWARGS: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.WARNING)


def _start_local(request: Mapping[str, float], namespace: str | None,
                 local_resources: Mapping[str, float] | None) -> ClusterInfo:
    import ray

    _env.loopback()
    if (os.environ.get(AUTH_MODE_ENV, "").lower() != "disabled"
            and not os.environ.get(AUTH_TOKEN_ENV) and not os.environ.get(AUTH_TOKEN_PATH_ENV)):
        # a token of this instance's own, inherited by its processes: Ray would otherwise
        # write ~/.ray/auth_token, which later `ray start --head` clusters then pick up
        _env.set(AUTH_TOKEN_ENV, secrets.token_hex(32))
    _env.set(AUTH_MODE_ENV, os.environ.get(AUTH_MODE_ENV) or "token")
    _reload_auth_config()
    try:
        ray.init(address="local", num_cpus=os.cpu_count() or 1,
                 resources=dict(local_resources) if local_resources else None,
                 namespace=namespace, include_dashboard=False, **_INIT_KWARGS)
    except Exception as e:  # noqa: BLE001 - any failure to start is the user's one line
        raise CodesignError(f"ray: cannot start a local instance ({_first_line(e)})") from None
    nodes = ray.nodes()
    gcs = ray.get_runtime_context().gcs_address
    off = sorted({n["NodeManagerAddress"] for n in nodes} - {"127.0.0.1"})
    if off or _host(gcs) != "127.0.0.1":
        raise CodesignError(f"ray: the local instance is not on loopback (GCS {gcs}, nodes "
                            f"{', '.join(off) or '127.0.0.1'}); this Ray version ignores "
                            f"{LOOPBACK_ENV}=0")
    problem = check_request(request, nodes)
    if problem:
        raise CodesignError(problem)
    return _info(gcs, local=True, nodes=nodes)


def _join(address: str, request: Mapping[str, float], namespace: str | None) -> ClusterInfo:
    import ray

    fail = f"ray: cannot connect to {address}"
    if "://" in address:
        raise CodesignError(f"{fail}: give the head's GCS address HOST:PORT (Ray Client "
                            "ray:// addresses are not supported)")
    host, port = _split(address, fail)
    if host in _LOOPBACK_HOSTS:
        _env.loopback()  # or Ray would dial the host's interface address instead
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" and not _token_source():
        # Ray's C++ client would exit the process at once, saying nothing we could show
        raise CodesignError(f"{fail}: authentication failed (RAY_AUTH_MODE=token is set but "
                            "no token was found: put the cluster's token in RAY_AUTH_TOKEN, "
                            "or a file holding it in RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token;"
                            " `ray get-auth-token` on the head prints it)")
    _reload_auth_config()
    nodes = _probe(host, port, address, fail)
    problem = check_request(request, nodes)
    if problem:
        raise CodesignError(problem)
    import codesign
    import evaluators
    import search_spaces

    modules = {"codesign": codesign, "evaluators": evaluators, "search_spaces": search_spaces}
    runtime_env = {"py_modules": [modules[m] for m in PY_MODULES],
                   "excludes": ["__pycache__/", "*.pyc"]}
    try:
        ray.init(address=address, runtime_env=runtime_env, namespace=namespace,
                 **_INIT_KWARGS)
    except Exception as e:  # noqa: BLE001 - the probe passed: whatever else, one line
        raise CodesignError(f"{fail} ({_first_line(e)})") from None
    nodes = ray.nodes()
    problem = check_request(request, nodes)  # the cluster may have changed since the probe
    if problem:
        raise CodesignError(problem)
    return _info(ray.get_runtime_context().gcs_address, local=False, nodes=nodes)


def _probe(host: str, port: int, address: str, fail: str) -> list[dict[str, Any]]:
    """Without joining: is a GCS there, does it accept this process, the same versions, a
    node of it on this machine? The alive nodes (``ray.nodes()``'s keys)."""
    from ray._raylet import InnerGcsClient

    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except socket.gaierror as e:
        raise CodesignError(f"{fail}: unreachable (unknown host {host}: {e.strerror})"
                            ) from None
    except TimeoutError:
        raise CodesignError(f"{fail}: unreachable (no answer within {PROBE_TIMEOUT_S:g} s; "
                            "check the address and the firewall)") from None
    except OSError as e:
        raise CodesignError(f"{fail}: unreachable (nothing listens there: "
                            f"{e.strerror or e}; is the head up, is it its GCS port?)"
                            ) from None
    try:
        with _quiet_stderr():  # Ray's C++ client logs each failed attempt on stderr
            client = InnerGcsClient.standalone(address, None, int(PROBE_TIMEOUT_S * 1000))
            metadata = _cluster_metadata(client)
            infos = _alive_node_infos(client)
    except Exception as e:  # noqa: BLE001 - classified below
        if type(e).__name__ == "AuthenticationError":
            raise CodesignError(f"{fail}: authentication failed ({_auth_hint()})") from None
        raise CodesignError(f"{fail}: unreachable (no Ray GCS answers there: "
                            f"{_first_line(e)})") from None
    problem = _version_problem(metadata)
    if problem:
        raise CodesignError(f"{fail}: version mismatch ({problem})")
    from ray._private import services

    here = services.find_node_ids()  # the raylets running on this machine
    nodes = [{"NodeID": i.node_id.hex(), "Alive": True,
              "NodeManagerAddress": i.node_manager_address,
              "Resources": dict(i.resources_total)} for i in infos]
    if not any(n["NodeID"] in here for n in nodes):
        raise CodesignError(f"{fail}: no node of that cluster runs on this machine "
                            f"(codesign drives a cluster from one of its nodes: run "
                            f"`ray start --address {address}` here first)")
    return nodes


def _cluster_metadata(client: Any) -> dict[str, Any] | None:
    import json

    from ray._common.usage.usage_constants import CLUSTER_METADATA_KEY
    from ray._private.ray_constants import KV_NAMESPACE_CLUSTER

    raw = client.internal_kv_get(CLUSTER_METADATA_KEY, namespace=KV_NAMESPACE_CLUSTER,
                                 timeout=PROBE_TIMEOUT_S)
    return json.loads(raw) if raw else None


def _alive_node_infos(client: Any) -> list[Any]:
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    infos = client.get_all_node_info(timeout=PROBE_TIMEOUT_S,
                                     state_filter=GcsNodeInfo.GcsNodeState.ALIVE)
    return list(infos.values())


def _version_problem(metadata: Mapping[str, Any] | None) -> str | None:
    """What differs between the cluster's Ray/Python versions and this process's (Python
    to the patch level, or the minor one under RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor,
    as Ray compares them), or None."""
    import ray

    if not metadata:
        return None
    theirs_ray = str(metadata.get("ray_version", ""))
    theirs_py = str(metadata.get("python_version", ""))
    mine_py = platform.python_version()
    level = os.environ.get("RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL", "patch")
    parts = 2 if level == "minor" else 3
    same_py = theirs_py.split(".")[:parts] == mine_py.split(".")[:parts]
    if theirs_ray == ray.__version__ and same_py:
        return None
    return (f"the cluster runs Ray {theirs_ray} on Python {theirs_py}, this process Ray "
            f"{ray.__version__} on Python {mine_py}: install the same versions")


def _token_source() -> bool:
    """Whether a token is there for Ray's client to send (the places it looks, in order)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return os.path.isfile(path)
    return os.path.isfile(os.path.expanduser("~/.ray/auth_token"))


def _auth_hint() -> str:
    if os.environ.get(AUTH_MODE_ENV, "").lower() != "token":
        return (f"the cluster requires a token and this process sends none: set "
                f"{AUTH_MODE_ENV}=token and the cluster's token in {AUTH_TOKEN_ENV}, or a "
                f"file holding it in {AUTH_TOKEN_PATH_ENV} or ~/.ray/auth_token; "
                "`ray get-auth-token` on the head prints it")
    source = (AUTH_TOKEN_ENV if os.environ.get(AUTH_TOKEN_ENV) else
              AUTH_TOKEN_PATH_ENV if os.environ.get(AUTH_TOKEN_PATH_ENV) else
              "~/.ray/auth_token")
    return (f"the cluster rejected the token from {source}: use the head's token "
            f"(`ray get-auth-token` there) in {AUTH_TOKEN_ENV} or {AUTH_TOKEN_PATH_ENV}")


def _reload_auth_config() -> None:
    """Make this process's Ray see the auth variables as they are now (Ray caches them)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token authentication
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block (C++ logging bypasses Python)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _split(address: str, fail: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CodesignError(f"{fail}: give the head's GCS address as HOST:PORT")
    return host, int(port)


def _host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def _info(address: str, *, local: bool, nodes: list[dict[str, Any]]) -> ClusterInfo:
    alive = [n for n in nodes if n.get("Alive", True)]
    return ClusterInfo(address=address, local=local, nodes=len(alive),
                       node_ips=tuple(sorted(n["NodeManagerAddress"] for n in alive)))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
