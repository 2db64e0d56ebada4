"""A private PostgreSQL server for tests: a temporary cluster (initdb) on loopback.

Debian's `postgresql` package provides the binaries; without them the tests that
need PostgreSQL skip. As root the cluster runs as the `postgres` user, since the
server refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import free_port, reachable


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class Postgres:
    def __init__(self, base: Path) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
        self.bin = bin_dir
        self.base = base
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        command = [*(["runuser", "-u", self.user, "--"] if self.user else []), *args]
        subprocess.run(command, check=True, capture_output=True, cwd="/")

    def start(self) -> None:
        reachable(self.base)
        if self.user:
            record = pwd.getpwnam(self.user)
            os.chown(self.base, record.pw_uid, record.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.base / "data"), "-A", "trust",
                  "-U", "lamina", "-E", "UTF8", "--no-sync")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-w", "-l",
                  str(self.base / "server.log"), "-o",
                  f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off "
                  "-c max_connections=200", "start")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate",
                  "-w", "stop")

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "lamina", "-d", "postgres", "-q", "-c", f"CREATE DATABASE {name}"],
                       check=True, capture_output=True)
        return f"postgresql+psycopg://lamina@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session", name="postgres")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = Postgres(Path(tmp_path_factory.mktemp("postgres")))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
