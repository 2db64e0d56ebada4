"""A real Lamina server per test session, on a free loopback port, driven by boto3."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import boto3
import pytest
from botocore.config import Config

from lamina.sandbox.namespaces import NamespaceBackend, NamespaceSettings
from tests.helpers import ROLE  # noqa: F401  (re-exported for test modules)


def reachable(path: Path) -> Path:
    """Let sandbox users (unprivileged host uids) traverse to `path`: pytest makes
    its temporary directories 0700, a server's data dir sits inside one."""
    for directory in (path, *path.parents):
        if directory == Path("/"):
            break
        if directory.exists():
            mode = directory.stat().st_mode
            if mode & 0o001 == 0:
                directory.chmod(mode | 0o011)
    return path


@pytest.fixture(autouse=True)
def _reachable_tmp_path(request: pytest.FixtureRequest) -> None:
    if "tmp_path" in request.fixturenames:
        reachable(request.getfixturevalue("tmp_path"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PR_SET_PDEATHSIG = 1


def _end_with_parent() -> None:
    """In a server's child before exec: SIGTERM when the test process ends, so a test
    run that dies (or a parallel worker that crashes) leaves no server behind."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Server:
    """A `lamina serve` process; restartable on the same data dir."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        reachable(data_dir.parent)
        self.port = free_port()
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lamina.cli.main", "serve", "--port", str(self.port),
             "--data-dir", str(self.data_dir)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_end_with_parent,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start in 30 s")

    def sandbox_backend(self) -> str:
        """The sandbox backend the server chose, from its start-up line."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("Lamina listening on") and "sandbox: " in line:
                return line.rsplit("sandbox: ", 1)[1].rstrip(")")
        return "unknown"

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def client(self, service: str = "lambda", validate: bool = True, **kwargs: object):
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=kwargs.pop("key", "test"),
            aws_secret_access_key=kwargs.pop("secret", "test"),
            config=Config(
                parameter_validation=validate,
                retries={"max_attempts": 1},
                read_timeout=120,
                max_pool_connections=int(kwargs.pop("max_pool_connections", 10)),
            ),
        )


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("lamina") / "data")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def lam(server: Server):
    return server.client()


@pytest.fixture(scope="session")
def lam_unchecked(server: Server):
    """A client that skips boto3's own parameter checks, to reach the server's."""
    return server.client(validate=False)


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """Start a dedicated server (own data dir, own LAMINA_* env); stopped at session end."""
    started: list[Server] = []

    def start(env: dict[str, str] | None = None, name: str = "lamina-dedicated") -> Server:
        srv = Server(tmp_path_factory.mktemp(name) / "data", env)
        srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


# The namespaces backend driven directly (tests/test_sandbox_*.py, test_security_sandbox.py).

@pytest.fixture
def backend(tmp_path: Path) -> Iterator[NamespaceBackend]:
    # A parent cgroup of its own, so reaping here never touches another server's sandboxes.
    parent = f"lamina-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    backend = NamespaceBackend(NamespaceSettings(cgroup_parent=parent,
                                                 ephemeral_dir=tmp_path / "ephemeral"))
    yield backend
    asyncio.run(backend.close())
    backend._cgroups.remove_empty_parents()
    assert not any(root.exists() for root in backend._cgroups.roots.values())


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    task = tmp_path / "functions" / "mine"
    sibling = tmp_path / "functions" / "theirs"
    runtime = tmp_path / "runtime"
    for directory in (task, sibling, runtime):
        directory.mkdir(parents=True)
    (task / "handler.py").write_text("def handler(event, context):\n    return event\n")
    (sibling / "secret.txt").write_text("another function's code")
    return {"task": task, "sibling": sibling, "runtime": runtime}
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which cgroup version(s) the sandbox tests ran on (tests/test_cgroup_v2.py)."""
    module = sys.modules.get("tests.test_cgroup_v2")
    if module is None and any(str(getattr(report, "nodeid", "")).startswith("tests/test_cgroup_v2.py")
                              for reports in terminalreporter.stats.values() for report in reports):
        # Parallel workers ran it: this process has not imported it yet.
        from tests import test_cgroup_v2 as module
    line = module.sandbox_summary(terminalreporter.stats) if module is not None else None
    if line:
        terminalreporter.write_line(line)
