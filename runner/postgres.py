"""A private PostgreSQL server for the tests and benchmarks: Debian's ``postgresql``
binaries, a cluster made with initdb in a temporary directory, on a free loopback port with
its unix socket in that directory, stopped (and the directory removed) at the end.

PostgreSQL refuses to run as root; as root the cluster belongs to Debian's ``postgres``
user, which its package creates.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from pilotchain.chain import wait_for
from pilotchain.errors import ChainError
from runner.ports import free_port
from runner.services import ServiceError

USER = "pilotchain"
SYSTEM_USER = "postgres"


def binary(name: str) -> str:
    """A PostgreSQL server program: on PATH, else Debian's newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                      key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0)
    if not versions:
        raise ServiceError(f"PostgreSQL's {name} is not installed; run ./scripts/test (it "
                           "installs Debian's postgresql) or apt-get install postgresql.")
    return str(versions[-1])


class PostgresServer:
    """One throwaway cluster; ``url(database)`` for a client, ``create_database`` per test."""

    start_timeout = 60.0

    def __init__(self) -> None:
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.home = Path(tempfile.mkdtemp(prefix="pilotchain-postgres-"))
        self.data_dir = self.home / "data"
        self.log_file = self.home / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._run_as = {"user": SYSTEM_USER, "group": SYSTEM_USER}
            shutil.chown(self.home, SYSTEM_USER, SYSTEM_USER)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """initdb, start postgres, and wait until it accepts the password."""
        password_file = self.home / "password"
        password_file.write_text(self.password)
        if self._run_as:
            shutil.chown(password_file, SYSTEM_USER, SYSTEM_USER)
        self._run([binary("initdb"), "-D", str(self.data_dir), "-U", USER, "-E", "UTF8",
                   "--auth-local=trust", "--auth-host=scram-sha-256",
                   f"--pwfile={password_file}", "--no-instructions"])
        password_file.unlink()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [binary("postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.home}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, **self._run_as)
        try:
            wait_for(self._ready, timeout=self.start_timeout, what="PostgreSQL to accept clients")
        except ChainError as error:
            self.stop()
            raise ServiceError(f"{error} See {self.log_file}.") from None

    def _run(self, argv: list[str]) -> None:
        with self.log_file.open("ab") as log:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, timeout=120, check=False,
                                    **self._run_as)
        if result.returncode != 0:
            raise ServiceError(f"{Path(argv[0]).name} failed (exit {result.returncode}); see "
                               f"{self.log_file}.")

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise ServiceError(f"postgres exited while starting; see {self.log_file}.")
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients disconnected, no waiting for them), then clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.home, ignore_errors=True)

