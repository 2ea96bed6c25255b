"""A throwaway PostgreSQL server for the tests: real ``initdb`` / ``pg_ctl``, no mocks.

The server lives in a fresh temporary folder, listens on 127.0.0.1 only (a free port; its
Unix socket in that folder), lets 127.0.0.1 in without a password (``trust``: no password is
written anywhere) and has one database. PostgreSQL refuses to run as root, so as root the
server runs as the ``postgres`` system user (made by Debian's ``postgresql`` package) in a
folder that user owns.

Without PostgreSQL's server programs the fixture skips, but not under CI (``CI`` set): CI
installs them (``.ci/run``), so a skip there would hide a broken set-up; it fails instead.

Use it in a test module with ``from pg_server import postgres_url`` (a session fixture).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "codesign"  # the server's superuser, only reachable from 127.0.0.1
DATABASE = "codesign_test"
HOST = "127.0.0.1"
# the server's own environment: nothing of the caller's PG* settings (PGPASSWORD, PGHOST...)
_CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PG")}


# Stops the server and deletes its folder once the test process is gone, however it went (a
# timeout's SIGTERM, SIGKILL): it waits for the end of its stdin, a pipe from that process.
_WATCHDOG = r"""
import os, shutil, subprocess, sys
sys.stdin.read()
folder, pg_ctl, user = sys.argv[1:4]
data = os.path.join(folder, "data")
if os.path.exists(os.path.join(data, "postmaster.pid")):
    argv = [pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"]
    subprocess.run(["runuser", "-u", user, "--", *argv] if user else argv, cwd=folder,
                   capture_output=True, timeout=60)
shutil.rmtree(folder, ignore_errors=True)
"""


class Unavailable(Exception):
    """PostgreSQL's server programs (or, as root, its system user) are missing."""


def find_bindir() -> Path:
    """The folder with ``initdb``, ``pg_ctl`` and ``postgres``: ``pg_config --bindir``, else
    the newest ``/usr/lib/postgresql/*/bin`` (Debian), else ``initdb`` on ``PATH``."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                 timeout=10, check=False, env=_CLEAN_ENV)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass

    def version(p: str) -> tuple[int, ...]:
        v = Path(p).parent.name
        return tuple(int(x) for x in v.split(".") if x.isdigit())

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version,
                                           reverse=True)]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for d in candidates:
        if all((d / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    raise Unavailable("no PostgreSQL server programs (initdb, pg_ctl, postgres): install "
                      "them, e.g. `apt-get install postgresql` (Debian)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One server in its own temporary folder: :meth:`start`, :attr:`url`, :meth:`stop`."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.as_user: str | None = None  # the system user the server runs as (root only)
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root, and there is no `postgres` system user "
                                  "to run PostgreSQL as (Debian's postgresql package makes "
                                  "it)") from None
            self.as_user = "postgres"
        self.dir: Path | None = None
        self.port: int | None = None
        self._watchdog: subprocess.Popen | None = None

    @property
    def data(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@{HOST}:{self.port}/{DATABASE}"

    def _run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A server program, as the server's user (root: ``runuser -u postgres``)."""
        argv = [str(self.bindir / cmd[0]), *cmd[1:]]
        if self.as_user:
            argv = ["runuser", "-u", self.as_user, "--", *argv]
        out = subprocess.run(argv, cwd=self.dir, env=_CLEAN_ENV, capture_output=True,
                             text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): "
                               f"{(out.stderr or out.stdout).strip()[-2000:]}")
        return out

    def start(self) -> str:
        """Make, configure and start the server and its database; the URL to it."""
        # tempfile's folder (/tmp), not pytest's: the postgres user must reach it, and the
        # socket's path must stay short (about 100 characters at most)
        self.dir = Path(tempfile.mkdtemp(prefix="codesign-pg-"))
        if self.as_user:
            info = pwd.getpwnam(self.as_user)
            os.chown(self.dir, info.pw_uid, info.pw_gid)  # mkdtemp made it 0700
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.dir), str(self.bindir / "pg_ctl"),
             self.as_user or ""], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, env=_CLEAN_ENV)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")
        # only 127.0.0.1 gets in: USER without a password, any other user name with one, and
        # none has one (the wrong-password case); no Unix-socket lines, no other hosts
        (self.data / "pg_hba.conf").write_text(f"host all {USER} {HOST}/32 trust\n"
                                               f"host all all {HOST}/32 scram-sha-256\n")
        last = ""
        for _ in range(3):  # the free port may be taken before the server binds it
            self.port = free_port()
            with open(self.data / "postgresql.conf", "a") as f:
                f.write(f"\nlisten_addresses = '{HOST}'\nport = {self.port}\n"
                        f"unix_socket_directories = '{self.dir}'\n"
                        "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"),
                          "-w", "-t", "60", "start", timeout=90)
                break
            except RuntimeError as e:
                last = f"{e}; log: {self.log_tail()}"
        else:
            raise RuntimeError(f"the PostgreSQL server did not start: {last}")
        self._run("createdb", "-h", HOST, "-p", str(self.port), "-U", USER, DATABASE)
        return self.url

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.dir / "server.log").read_text()[-n:] if self.dir else ""
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (``-m immediate``: nothing of it is kept) and delete its folder."""
        if self.dir is None:
            return
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            if self._watchdog is not None:  # nothing left for it to do: let it end
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.close()
                self._watchdog.wait(timeout=60)
                self._watchdog = None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql://codesign@127.0.0.1:PORT/codesign_test``: a fresh, empty server for the
    test session, stopped and deleted after it."""
    try:
        server = PostgresServer()
    except Unavailable as e:
        _unavailable(str(e))
    t0 = time.monotonic()
    try:
        url = server.start()
    except BaseException:
        server.stop()
        raise
    print(f"PostgreSQL test server {url} started in {time.monotonic() - t0:.1f} s")
    try:
        yield url
    finally:
        server.stop()
