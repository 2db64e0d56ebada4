"""Cluster mode on one machine: a Ray head and two worker nodes on loopback, one
PostgreSQL, two Lamina front ends (`lamina serve` with LAMINA_CLUSTER=ray://...).

The worker nodes advertise `lamina_node` (so they run environments; the head runs
none) and one custom resource each, `node_a` or `node_b`, which tells them apart
in `lamina cluster status`. Ray is kept small: one CPU per worker, no dashboard,
80 MB object stores.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import Server, free_port, reachable
from tests.helpers import function_args, make_zip, wait_active, wait_for
from tests.postgres import Postgres, postgres_server  # noqa: F401  (the session's PostgreSQL)
from tests.test_streaming import CHUNKS, _node, _read

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ray = pytest.importorskip("ray", reason="cluster mode needs Ray: pip install -e '.[cluster]'")

OBJECT_STORE_BYTES = str(80 * 1024 * 1024)
# Loopback addresses stay loopback (tests/ray_node.py says why), no usage reports.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
           # The head's Ray Client proxy waits this long for a client's server process
           # (a new Python process: slow on a loaded machine).
           "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "120"}
# The head declares a node dead after 3 missed health checks a second apart.
HEAD_SYSTEM_CONFIG = json.dumps({"health_check_period_ms": 1000, "health_check_timeout_ms": 1000,
                                 "health_check_failure_threshold": 3})

SLEEPER = make_zip({"app.py": (
    "import time\n"
    "def handler(event, context):\n"
    "    time.sleep(event.get('sleep', 0))\n"
    "    return {'n': event.get('n'), 'request_id': context.aws_request_id}\n"
)})


def _wait_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class RayCluster:
    """A Ray head and worker nodes, each `ray start --block` in a process group of
    its own, which the test ends (or kills, to lose a node) by that process's PID."""

    def __init__(self) -> None:
        # Short: Ray's Unix sockets live under it (108-byte path limit).
        self.base = Path(tempfile.mkdtemp(prefix="lr", dir="/tmp"))
        self.port = free_port()
        self.client_port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def address(self) -> str:
        """As a driver: the front ends join through the head's raylet (Ray picks the head
        among nodes sharing an address), which never goes away in these tests."""
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    def _start(self, name: str, command: list[str]) -> None:
        log = open(self.base / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            command, env={**os.environ, **RAY_ENV}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.base)

    def start_head(self) -> None:
        self._start("head", [
            str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
            "--node-ip-address=127.0.0.1", f"--port={self.port}",
            f"--ray-client-server-port={self.client_port}", "--num-cpus=0",
            "--include-dashboard=false", f"--object-store-memory={OBJECT_STORE_BYTES}",
            f"--temp-dir={self.base / 'tmp'}", "--disable-usage-stats",
            f"--system-config={HEAD_SYSTEM_CONFIG}"])
        _wait_port(self.client_port)

    def add_worker(self, label: str, tries: int = 3) -> None:
        """A worker node, once it has registered. Ray gives a raylet 30 s to register
        with the head; on a loaded machine that can pass, and the node is started again."""
        for _ in range(tries):
            log_path = self.base / f"{label}.log"
            log_path.unlink(missing_ok=True)
            self._start(label, [
                sys.executable, str(Path(__file__).parent / "ray_node.py"), "start", "--block",
                f"--address=127.0.0.1:{self.port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                f"--resources={json.dumps({'lamina_node': 1, label: 1})}",
                f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats"])
            process = self.processes[label]
            deadline = time.monotonic() + 90
            while process.poll() is None and time.monotonic() < deadline:
                if "will now block forever" in log_path.read_text(errors="replace"):
                    return
                time.sleep(0.5)
            self.processes.pop(label)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        raise RuntimeError(f"worker node {label} did not start: "
                           f"{(self.base / f'{label}.log').read_text(errors='replace')[-2000:]}")

    def kill(self, name: str) -> None:
        """Lose a node: SIGKILL to its `ray start` and every process descended from it
        (its raylet, and the workers it started, which run in sessions of their own:
        the node agent and its sandboxes), all at once, as when a machine dies."""
        process = self.processes.pop(name)
        for pid in [process.pid, *_descendants(process.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()

    def stop(self) -> None:
        for name in [n for n in self.processes if n != "head"] + ["head"]:
            process = self.processes.pop(name, None)
            if process is None:
                continue
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def _descendants(root: int) -> list[int]:
    """Every process below `root` in the process tree (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cluster_status(address: str) -> dict[str, Any]:
    """`lamina cluster status --json`, as an operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "lamina.cli.main", "cluster", "status", "--json", "--cluster", address],
        capture_output=True, text=True, timeout=120, env={**os.environ, **RAY_ENV})
    assert done.returncode == 0, done.stderr[-2000:]
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def worker_nodes(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The live environment nodes by their label (node_a, node_b)."""
    return {label: node for node in status["nodes"] if node["alive"] and node["runs_environments"]
            for label in node["labels"]}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    cluster = RayCluster()
    try:
        cluster.start_head()
        cluster.add_worker("node_a")
        cluster.add_worker("node_b")
        wait_for(lambda: set(worker_nodes(cluster_status(cluster.address))) >= {"node_a", "node_b"},
                 timeout=120)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def front_ends(ray_cluster: RayCluster, postgres: Postgres,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Two front ends on one PostgreSQL and one Ray cluster. They share the data dir
    (code blobs are content-addressed files there), as front ends on one machine
    would; the nodes fetch code from them over HTTP into their own directories."""
    base = tmp_path_factory.mktemp("lamina-cluster")
    reachable(base)
    data_dir = base / "data"
    env = {
        "LAMINA_DATABASE_URL": postgres.new_database(),
        "LAMINA_CLUSTER": ray_cluster.address,
        "LAMINA_CLUSTER_NODE_DIR": str(base / "nodes"),
        "LAMINA_CLUSTER_NODE_MEMORY_MB": "4096",
        # Asynchronous events: a dead node's events are retried within seconds.
        "LAMINA_ASYNC_RETRY_DELAY_SCALE": "0.01",
        "LAMINA_ASYNC_LEASE_S": "5",
        "LAMINA_ASYNC_WORKERS_PER_FUNCTION": "4",
        **RAY_ENV,
    }
    a, b = Server(data_dir, env), Server(data_dir, env)
    b.log_path = base / "b-server.log"
    a.start()
    b.start()
    yield a, b
    b.stop()
    a.stop()


def no_retries(server: Server) -> Any:
    """A Lambda client that makes each call once (the SDK's retries of 5xx off)."""
    return boto3.client("lambda", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries={"total_max_attempts": 1}, read_timeout=120))


def _sleeper(server: Server, name: str, **extra: Any) -> None:
    server.client().create_function(**function_args(name, SLEEPER, Timeout=30, **extra))


def test_created_on_one_front_end_invoked_on_the_other(front_ends: tuple[Server, Server],
                                                       ray_cluster: RayCluster) -> None:
    a, b = front_ends
    name = f"cl-{uuid.uuid4().hex[:8]}"
    _sleeper(a, name)
    wait_active(b.client(), name)
    answer = b.client().invoke(FunctionName=name, Payload=b'{"n": 1}', LogType="Tail")
    assert json.loads(answer["Payload"].read())["n"] == 1
    # The log came back from the node with the outcome.
    assert "REPORT RequestId" in base64.b64decode(answer["LogResult"]).decode()
    # ...and into the front end's CloudWatch Logs.
    logs = b.client("logs")
    group = f"/aws/lambda/{name}"
    streams = wait_for(lambda: logs.describe_log_streams(logGroupName=group)["logStreams"])
    events = logs.get_log_events(logGroupName=group, logStreamName=streams[0]["logStreamName"])
    assert any(e["message"].startswith("REPORT") for e in events["events"])
    # The environment runs on a worker node, not on a front end's host pool.
    nodes = worker_nodes(cluster_status(ray_cluster.address))
    assert any(f"{name}:$LATEST" in node.get("versions", {}) for node in nodes.values())


def test_a_streamed_response_arrives_chunk_by_chunk_from_its_node(
        front_ends: tuple[Server, Server]) -> None:
    a, b = front_ends
    name = _node(a.client(), CHUNKS)
    wait_active(b.client(), name)
    response = b.client().invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps({"words": ["early", "late"], "pause_ms": 1000}))
    chunks, complete = _read(response)
    ended = time.perf_counter()
    assert [payload for _, payload in chunks] == [b"early", b"late"]
    assert complete == {}
    # The handler sleeps 1 s between its writes: a buffered response would bring
    # both chunks together at the end.
    assert ended - chunks[0][0] > 0.5


def test_a_front_end_through_ray_client_serves_the_same_functions(
        front_ends: tuple[Server, Server], ray_cluster: RayCluster, tmp_path: Path) -> None:
    """`lamina serve --cluster ray://HEAD:PORT`: a front end that is no Ray node."""
    a, _ = front_ends
    name = f"cl-{uuid.uuid4().hex[:8]}"
    _sleeper(a, name)
    wait_active(a.client(), name)
    c = Server(a.data_dir, {**a.env, "LAMINA_CLUSTER": ray_cluster.client_address})
    c.log_path = tmp_path / "c-server.log"
    try:
        c.start()
    except RuntimeError:
        # Its Ray Client session (a server process on the head) can take longer than
        # the 30 s a test server is given to open its port; a crash says so in its log.
        assert c.process is not None and c.process.poll() is None, c.log_path.read_text()[-2000:]
        _wait_port(c.port, timeout_s=120)
    try:
        answer = c.client().invoke(FunctionName=name, Payload=b'{"n": 7}')
        assert json.loads(answer["Payload"].read())["n"] == 7
    finally:
        c.stop()


def test_environments_land_on_both_worker_nodes_under_load(front_ends: tuple[Server, Server],
                                                           ray_cluster: RayCluster) -> None:
    a, b = front_ends
    name = f"cl-{uuid.uuid4().hex[:8]}"
    _sleeper(a, name)
    wait_active(a.client(), name)
    clients = [a.client(max_pool_connections=4), b.client(max_pool_connections=4)]

    def call(i: int) -> int:
        answer = clients[i % 2].invoke(FunctionName=name, Payload=json.dumps({"n": i, "sleep": 2}))
        return int(json.loads(answer["Payload"].read())["n"])

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert sorted(pool.map(call, range(6))) == list(range(6))
    nodes = worker_nodes(cluster_status(ray_cluster.address))
    holding = {label for label, node in nodes.items() if f"{name}:$LATEST" in node.get("versions", {})}
    assert holding == {"node_a", "node_b"}


def test_reserved_concurrency_holds_across_both_front_ends(front_ends: tuple[Server, Server],
                                                           ray_cluster: RayCluster) -> None:
    a, b = front_ends
    name = f"cl-{uuid.uuid4().hex[:8]}"
    _sleeper(a, name)
    wait_active(a.client(), name)
    a.client().put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
    # Warm three environments first, so the burst below is not spread by cold starts.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda i: b.client().invoke(FunctionName=name, Payload=b'{"sleep": 1}'),
                      range(3)))
    clients = [a.client(max_pool_connections=5), b.client(max_pool_connections=5)]

    def call(i: int) -> str:
        try:
            clients[i % 2].invoke(FunctionName=name, Payload=b'{"sleep": 4}')
            return "ran"
        except ClientError as error:
            assert error.response["Error"]["Code"] == "TooManyRequestsException"
            assert error.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
            return "throttled"

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(call, range(10)))
    # Ten calls within four seconds, five through each front end: three ran.
    assert outcomes.count("ran") == 3, outcomes
    assert cluster_status(ray_cluster.address)["ledger"]["peak"][name] == 3


def provisioned_by_node(address: str, name: str, version: str) -> dict[str, int]:
    """Ready environments of FUNCTION:VERSION per worker node label."""
    return {label: node.get("versions", {}).get(f"{name}:{version}", {}).get("idle", 0)
            for label, node in worker_nodes(cluster_status(address)).items()}


def test_a_node_lost_during_a_thousand_async_events_loses_none(
        front_ends: tuple[Server, Server], ray_cluster: RayCluster) -> None:
    a, b = front_ends
    name = f"cl-{uuid.uuid4().hex[:8]}"
    _sleeper(a, name)
    wait_active(a.client(), name)
    # Provisioned concurrency, spread over the two nodes.
    kept = f"cl-{uuid.uuid4().hex[:8]}"
    _sleeper(a, kept, Publish=True)
    wait_active(a.client(), kept)
    a.client().put_provisioned_concurrency_config(FunctionName=kept, Qualifier="1",
                                                  ProvisionedConcurrentExecutions=4)
    wait_for(lambda: b.client().get_provisioned_concurrency_config(
        FunctionName=kept, Qualifier="1")["Status"] == "READY", timeout=60)
    # Spread over both nodes (a node whose agent is still being made when the config
    # is applied gets its share once the front ends see it).
    wait_for(lambda: provisioned_by_node(ray_cluster.address, kept, "1")
             == {"node_a": 2, "node_b": 2}, timeout=60)
    sqs = a.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"{name}-done")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    a.client().put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": queue_arn}})
    clients = [a.client(max_pool_connections=4), b.client(max_pool_connections=4)]

    def send(i: int) -> None:
        payload = json.dumps({"n": i, "sleep": 0.05})
        assert clients[i % 2].invoke(FunctionName=name, InvocationType="Event",
                                     Payload=payload)["StatusCode"] == 202

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(send, range(1000)))

    done: set[int] = set()

    def drain() -> None:
        while True:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=0).get("Messages", [])
            if not messages:
                return
            for message in messages:
                done.add(json.loads(message["Body"])["requestPayload"]["n"])
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]} for k, m in enumerate(messages)])

    # Lose node_a while the events run on both nodes, and synchronous calls too: those
    # of a function warm on both nodes, as many calls as it has environments.
    sync_name = f"cl-{uuid.uuid4().hex[:8]}"
    _sleeper(a, sync_name)
    wait_active(b.client(), sync_name)

    def warm_on_both_nodes() -> int:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: b.client().invoke(FunctionName=sync_name,
                                                      Payload=b'{"sleep": 1}'), range(4)))
        held = [node.get("versions", {}).get(f"{sync_name}:$LATEST", {}).get("idle", 0)
                for node in worker_nodes(cluster_status(ray_cluster.address)).values()]
        return sum(held) if len(held) == 2 and all(held) else 0

    environments = wait_for(warm_on_both_nodes, timeout=180)
    wait_for(lambda: drain() or len(done) >= 150, timeout=120)

    once = no_retries(b)

    def sync_call(i: int) -> str:
        try:
            once.invoke(FunctionName=sync_name, Payload=json.dumps({"sleep": 5}))
            return "ran"
        except ClientError as error:
            return str(error.response["Error"]["Code"])

    with concurrent.futures.ThreadPoolExecutor(environments) as pool:
        in_flight = [pool.submit(sync_call, i) for i in range(environments)]
        time.sleep(2.5)
        ray_cluster.kill("node_a")
        killed = time.monotonic()
        outcomes = [future.result() for future in in_flight]
    # Those that ran on node_a fail with AWS's ServiceException: Lamina does not run
    # them again elsewhere behind the caller's back (an SDK with retries on would send
    # them again itself, as it does any 5xx); those on node_b finish.
    assert set(outcomes) == {"ran", "ServiceException"}, outcomes

    # Synchronous invocations succeed again (on node_b) within 10 s.
    recovered = None
    while time.monotonic() - killed < 30:
        try:
            once.invoke(FunctionName=name, Payload=b'{"n": -1}')
            recovered = time.monotonic() - killed
            break
        except ClientError as error:
            # What a caller sees while its invocation's node is lost: AWS's 500.
            assert error.response["Error"]["Code"] in ("ServiceException", "TooManyRequestsException")
            time.sleep(0.2)
    assert recovered is not None and recovered < 10, recovered

    # Every accepted event ran to success at least once (at-least-once delivery).
    wait_for(lambda: drain() or len(done - {-1}) >= 1000, timeout=240)
    assert set(range(1000)) <= done
    # The provisioned environments node_a held are started again on node_b.
    wait_for(lambda: provisioned_by_node(ray_cluster.address, kept, "1") == {"node_b": 4}, timeout=60)
    config = a.client().get_provisioned_concurrency_config(FunctionName=kept, Qualifier="1")
    assert (config["Status"], config["AllocatedProvisionedConcurrentExecutions"]) == ("READY", 4)


def test_the_ledger_counts_reserved_and_unreserved_slots_and_expires_lost_ones() -> None:
    from lamina.cluster.ledger import LEASE_MARGIN_S, ConcurrencyLedger

    now = [0.0]
    ledger = ConcurrencyLedger(clock=lambda: now[0])
    held = [ledger.take("f", 2, 10, 1.0) for _ in range(3)]
    assert held[0] and held[1] and held[2] is None
    ledger.release(held[0])
    assert ledger.take("f", 2, 10, 1.0) is not None
    # Unreserved functions share the account's unreserved limit.
    assert ledger.take("g", None, 1, 1.0) is not None
    assert ledger.take("h", None, 1, 1.0) is None
    # A slot never given back (its front end died) is free once its lease ends.
    # (f's and g's slots run out after their 1 s timeout plus the margin.)
    now[0] = 1.0 + LEASE_MARGIN_S + 1
    assert ledger.take("h", None, 1, 1.0) is not None
    assert ledger.counts()["running"] == {"h": 1}
    assert ledger.counts()["peak"] == {"f": 2, "g": 1, "h": 1}
