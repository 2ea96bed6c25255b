"""PostgreSQL storage against a real server (``pg_server``: a throwaway ``initdb`` on
127.0.0.1), through ``open_storage`` and the real ``codesign`` CLI. No mocks: a driver that
"is not installed" is hidden from a subprocess's imports (``sys.modules[NAME] = None``)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
import yaml
from cli_helpers import ENV, ROOT, codesign
from pg_server import free_port, postgres_url  # noqa: F401 - postgres_url is a fixture

from codesign.errors import StorageError
from codesign.study import open_storage

PASSWORD = "pw-s3cr{e}t/x?y#z"  # not a real one, with characters a password may hold


def _cli_without(modules: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``codesign ARGS`` in a Python where ``modules`` cannot be imported."""
    hide = "".join(f"sys.modules[{m!r}] = None; " for m in modules)
    code = f"import sys; {hide}from codesign.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def test_plain_url_opens_with_psycopg3(postgres_url: str) -> None:  # noqa: F811
    storage = open_storage(postgres_url)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.engine.dialect.driver == "psycopg"
    study = optuna.create_study(study_name="plain", storage=storage, directions=["maximize"])
    study.set_user_attr("codesign.probe", {"nested": [1, 2]})
    again = optuna.load_study(study_name="plain", storage=open_storage(postgres_url))
    assert again.user_attrs["codesign.probe"] == {"nested": [1, 2]}


def test_plain_url_uses_psycopg2_when_only_it_is_installed(postgres_url: str,  # noqa: F811
                                                           tmp_path: Path) -> None:
    pytest.importorskip("psycopg2")  # in the `test` extra: runs wherever the tests are set up
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from codesign.study import open_storage\n"
            "s = open_storage(sys.argv[1]); s.get_all_studies()\n"
            "print(s.engine.dialect.driver)")
    proc = subprocess.run([sys.executable, "-c", code, postgres_url], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "psycopg2"


def test_no_driver_says_what_to_install(postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    proc = _cli_without(["psycopg", "psycopg2"], "inspect", "--storage", postgres_url,
                        cwd=tmp_path)
    line = _one_error_line(proc)
    assert line.startswith(f"error: {postgres_url}: no PostgreSQL driver is installed"), line
    assert 'pip install "codesign[postgres]"' in line
    # a URL that names psycopg2: the hint names its package
    named = _cli_without(["psycopg2"], "inspect", "--storage",
                         postgres_url.replace("postgresql://", "postgresql+psycopg2://"),
                         cwd=tmp_path)
    line = _one_error_line(named)
    assert "not installed (psycopg2)" in line and "pip install psycopg2-binary" in line


@pytest.mark.slow  # real Ray, a whole (small) study
def test_run_and_inspect_through_the_cli(postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    raw = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    raw["study"]["name"] = "pgquick"
    raw["task"].update(epochs=2)  # the smallest settings the end-to-end tests use
    raw["space"]["network"] = {"stages": [1, 2], "depth": [1], "width": [8, 16], "kernel": [3]}
    (tmp_path / "quickstart.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    t0 = time.monotonic()
    run = codesign("run", "quickstart.yaml", "--storage", postgres_url, "--n-trials", "3",
                   "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Pareto set:" in run.stdout
    print(f"run: {time.monotonic() - t0:.1f} s")
    proc = codesign("inspect", "pgquick", "--storage", postgres_url, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["study"] == "pgquick" and doc["storage"] == postgres_url
    assert doc["distinct_complete"] >= 3 and doc["n_trials_target"] == 3
    study = optuna.load_study(study_name="pgquick", storage=open_storage(postgres_url))
    assert study.user_attrs["codesign.experiment"]["study"]["name"] == "pgquick"
    assert study.metric_names == ["accuracy", "latency_ms", "energy_mj"]
    # the study's weights: in the working folder, a database server has no file to sit beside
    assert study.user_attrs["codesign.artifacts_dir"] == str(tmp_path / "runs" /
                                                             "pgquick-artifacts")


def test_unreachable_server_is_one_line_and_quick(tmp_path: Path) -> None:
    url = f"postgresql://codesign@127.0.0.1:{free_port()}/codesign_test"  # nothing listens
    (tmp_path / "exp.yaml").write_text((ROOT / "experiments" / "quickstart.yaml").read_text())
    t0 = time.monotonic()
    proc = codesign("run", "exp.yaml", "--storage", url, "--no-progress", cwd=tmp_path)
    took = time.monotonic() - t0
    line = _one_error_line(proc)
    assert line.startswith(f"error: {url}: cannot open the storage (") and "refused" in line
    assert took < 30, took  # the CLI's own start-up (torch, Ray imports) is most of it
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # waits out the 5 s connect_timeout
def test_silent_server_times_out() -> None:
    """A server that accepts the connection and never answers: open_storage gives up after
    connect_timeout (5 s), not never."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()  # the kernel completes connections; nobody reads or writes
        url = f"postgresql://codesign@127.0.0.1:{s.getsockname()[1]}/db"
        t0 = time.monotonic()
        with pytest.raises(StorageError) as e:
            open_storage(url)
        took = time.monotonic() - t0
    assert 4 < took < 20, took
    assert str(e.value).startswith(f"{url}: cannot open the storage (")
    assert len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize("case", ["unreachable", "wrong password", "missing database"])
def test_password_is_never_shown(postgres_url: str, tmp_path: Path, case: str) -> None:  # noqa: F811
    host = postgres_url.split("@", 1)[1]  # 127.0.0.1:PORT/codesign_test
    url = {"unreachable": f"postgresql://codesign:{PASSWORD}@127.0.0.1:{free_port()}/db",
           # the test server asks any user but `codesign` for a password, and none has one
           "wrong password": f"postgresql://other:{PASSWORD}@{host}",
           "missing database": f"postgresql://codesign:{PASSWORD}@{host.split('/')[0]}/nodb",
           }[case]
    expect = {"unreachable": "refused", "wrong password": "password authentication failed",
              "missing database": 'database "nodb" does not exist'}[case]
    proc = codesign("inspect", "--storage", url, cwd=tmp_path)
    line = _one_error_line(proc)
    assert expect in line, line
    assert PASSWORD not in proc.stdout + proc.stderr
    for part in ("s3cr", "{e}", "t/x", "y#z"):  # nor any piece of it
        assert part not in proc.stdout + proc.stderr, line
    assert line.startswith(f"error: postgresql://{url.split('://')[1].split(':')[0]}:***@")


def test_unescaped_at_in_the_password(postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    """SQLAlchemy would read ``pw@rd@host`` as password ``pw`` and host ``rd@host`` (and the
    driver's error would show ``rd``): codesign refuses the URL before any connection."""
    url = postgres_url.replace("codesign@", "codesign:pw-x@secret-part@")
    line = _one_error_line(codesign("inspect", "--storage", url, cwd=tmp_path))
    assert "unescaped '@'" in line and "%40" in line
    assert "pw-x" not in line and "secret-part" not in line
    escaped = postgres_url.replace("codesign@", "codesign:pw-x%40secret-part@")
    proc = codesign("inspect", "--storage", escaped, cwd=tmp_path)  # trust: any password does
    assert proc.returncode == 0, proc.stderr


def test_drivers_that_start_at_once_share_one_study(postgres_url: str,  # noqa: F811
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Several drivers started together (a job array) all check, find no study, and create
    it: one does, the others join it, none fails. Each thread's first existence check is
    made to answer "no", so that they all race to create; the server is real."""
    import codesign.study as cs
    from codesign.config import load

    raw = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    raw["study"]["name"] = "race"
    (tmp_path / "race.yaml").write_text(yaml.safe_dump(raw))
    cfg = load(tmp_path / "race.yaml")
    real, checked = cs.study_exists, threading.local()

    def first_says_no(storage: optuna.storages.BaseStorage, name: str) -> bool:
        if not getattr(checked, "once", False):
            checked.once = True
            return False
        return real(storage, name)

    monkeypatch.setattr(cs, "study_exists", first_says_no)
    storages = [open_storage(postgres_url) for _ in range(4)]  # one connection pool each
    start = threading.Barrier(4, timeout=60)

    def driver(storage: optuna.storages.BaseStorage) -> bool:
        start.wait()
        return cs.create_or_load(cfg, storage, postgres_url, sampler=None)[1]

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(driver, s) for s in storages]
        created = [f.result(timeout=120) for f in futures]
    assert sorted(created) == [False, False, False, True]
    study = optuna.load_study(study_name="race", storage=open_storage(postgres_url))
    assert study.user_attrs["codesign.fingerprint"] == cfg.fingerprint()
