"""The Amazon MQ (RabbitMQ) event source against a real rabbitmq-server (Debian's
package), started here on loopback with a private node name, ports, data and
config, and ended by its PID. Skipped where rabbitmq-server is not installed."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import Server, free_port
from tests.helpers import aws_error, error_message, function_args, make_zip, wait_for

RABBITMQ = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
ACCOUNT = "000000000000"
USER, PASSWORD = "lamina", "s3cret-pass"
HANDLER = make_zip({"app.py": '''
import base64, json

def handler(event, context):
    print("EVENT " + json.dumps(event))
    for messages in event["rmqMessagesByQueue"].values():
        for m in messages:
            if base64.b64decode(m["data"]) == b"fail-once" and not m["redelivered"]:
                raise RuntimeError("first delivery fails")
'''})

pytestmark = pytest.mark.skipif(not RABBITMQ.exists() or os.geteuid() != 0,
                                reason="rabbitmq-server (Debian package) not installed, or not root")


def _epmd_pids() -> set[int]:
    found = subprocess.run(["pgrep", "-x", "epmd"], capture_output=True, text=True).stdout
    return {int(p) for p in found.split()}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private RabbitMQ node on loopback: its AMQP port."""
    base = tmp_path_factory.mktemp("rabbitmq")
    for directory in ("mnesia", "log", "home"):
        (base / directory).mkdir()
    port, dist_port = free_port(), free_port()
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.1 = 127.0.0.1:{port}\n"
        f"default_user = {USER}\ndefault_pass = {PASSWORD}\n")
    (base / "enabled_plugins").write_text("[].\n")
    env = {
        "PATH": os.environ["PATH"], "HOME": str(base / "home"),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_NODENAME": f"lamina-test-{uuid.uuid4().hex[:8]}@localhost",
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
        # Erlang's distribution and port mapper on loopback too.
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    epmd_before = _epmd_pids()
    log = open(base / "server.log", "wb")
    process = subprocess.Popen([str(RABBITMQ)], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((base / "server.log").read_text()[-2000:])
                time.sleep(0.3)
        yield port
    finally:
        # The script's child (beam.smp) is the broker; its process group is ours alone.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in _epmd_pids() - epmd_before:
            # The port mapper this node started (none ran before).
            os.kill(pid, signal.SIGTERM)


async def _publish(port: int, queue: str, bodies: list[bytes]) -> int:
    import aio_pika

    connection = await aio_pika.connect(f"amqp://{USER}:{PASSWORD}@127.0.0.1:{port}/")
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True)
        for body in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(body, content_type="text/plain", headers={"origin": "test"}),
                routing_key=queue)
        return declared.declaration_result.message_count or 0


async def _depth(port: int, queue: str) -> int:
    import aio_pika

    connection = await aio_pika.connect(f"amqp://{USER}:{PASSWORD}@127.0.0.1:{port}/")
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True, passive=True)
        return declared.declaration_result.message_count or 0


def publish(port: int, queue: str, bodies: list[bytes]) -> None:
    asyncio.run(_publish(port, queue, bodies))


@pytest.fixture(scope="module")
def mq_server(start_server, broker: int, tmp_path_factory: pytest.TempPathFactory) -> Server:
    secrets = tmp_path_factory.mktemp("secrets") / "secrets.json"
    secrets.write_text(json.dumps({"mq-credentials": {"username": USER, "password": PASSWORD}}))
    return start_server({"LAMINA_MQ_BROKERS": f"local=amqp://127.0.0.1:{broker}",
                         "LAMINA_SECRETS_FILE": str(secrets)}, name="lamina-mq")


BROKER_ARN = f"arn:aws:mq:us-east-1:{ACCOUNT}:broker:local:b-{uuid.uuid4()}"
SECRET_ARN = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:mq-credentials-AbCdEf"



def events_seen(server: Server, function: str) -> list[dict[str, Any]]:
    logs = server.client("logs")
    try:
        found = logs.filter_log_events(logGroupName=f"/aws/lambda/{function}",
                                       filterPattern="EVENT")["events"]
    except logs.exceptions.ResourceNotFoundException:
        return []
    return [json.loads(e["message"].split("EVENT ", 1)[1]) for e in found
            if e["message"].startswith("EVENT ")]


def bodies(events: list[dict[str, Any]]) -> list[tuple[bytes, bool]]:
    return [(base64.b64decode(m["data"]), m["redelivered"]) for e in events
            for ms in e["rmqMessagesByQueue"].values() for m in ms]


def new_function(lam) -> str:
    name = f"mq-{uuid.uuid4().hex[:8]}"
    lam.create_function(**function_args(name, HANDLER, Runtime="python3.13"))
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    return name


def test_rabbitmq_mapping_delivers_aws_rmq_events_and_acknowledges_them(mq_server, broker):
    lam = mq_server.client()
    function = new_function(lam)
    queue = f"orders-{uuid.uuid4().hex[:6]}"
    publish(broker, queue, [])
    created = lam.create_event_source_mapping(
        EventSourceArn=BROKER_ARN, FunctionName=function, BatchSize=10, Queues=[queue],
        SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": SECRET_ARN}])
    assert created["State"] == "Creating" and created["Queues"] == [queue]
    assert created["BatchSize"] == 10
    wait_for(lambda: lam.get_event_source_mapping(UUID=created["UUID"])["State"] == "Enabled")
    publish(broker, queue, [f"order-{i}".encode() for i in range(5)])
    wait_for(lambda: len(bodies(events_seen(mq_server, function))) >= 5)
    event = events_seen(mq_server, function)[0]
    assert event["eventSource"] == "aws:rmq" and event["eventSourceArn"] == BROKER_ARN
    assert list(event["rmqMessagesByQueue"]) == [f"{queue}::/"]
    message = event["rmqMessagesByQueue"][f"{queue}::/"][0]
    assert message["basicProperties"]["contentType"] == "text/plain"
    assert message["basicProperties"]["headers"] == {"origin": {"bytes": list(b"test")}}
    assert message["basicProperties"]["bodySize"] == len(base64.b64decode(message["data"]))
    assert sorted(b for b, _ in bodies(events_seen(mq_server, function))) == \
        sorted(f"order-{i}".encode() for i in range(5))
    wait_for(lambda: asyncio.run(_depth(broker, queue)) == 0)


def test_a_failed_batch_is_given_back_and_redelivered(mq_server, broker):
    lam = mq_server.client()
    function = new_function(lam)
    queue = f"retry-{uuid.uuid4().hex[:6]}"
    publish(broker, queue, [])
    created = lam.create_event_source_mapping(
        EventSourceArn=BROKER_ARN, FunctionName=function, Queues=[queue],
        SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": "mq-credentials"}])
    wait_for(lambda: lam.get_event_source_mapping(UUID=created["UUID"])["State"] == "Enabled")
    publish(broker, queue, [b"fail-once"])
    seen = wait_for(lambda: (b := bodies(events_seen(mq_server, function))) and len(b) >= 2 and b)
    assert seen[:2] == [(b"fail-once", False), (b"fail-once", True)]
    wait_for(lambda: asyncio.run(_depth(broker, queue)) == 0)
    lam.delete_event_source_mapping(UUID=created["UUID"])


def test_rabbitmq_mapping_needs_a_known_broker_a_queue_and_credentials(mq_server):
    lam = mq_server.client()
    function = new_function(lam)
    access = [{"Type": "BASIC_AUTH", "URI": SECRET_ARN}]
    with aws_error(lam, "InvalidParameterValueException", 400) as info:
        lam.create_event_source_mapping(EventSourceArn=BROKER_ARN, FunctionName=function,
                                        SourceAccessConfigurations=access)
    assert "Queues" in error_message(info)
    with aws_error(lam, "InvalidParameterValueException", 400) as info:
        lam.create_event_source_mapping(EventSourceArn=BROKER_ARN, FunctionName=function,
                                        Queues=["q"])
    assert error_message(info) == "Required 'sourceAccessConfigurations' parameter is missing."
    unknown = f"arn:aws:mq:us-east-1:{ACCOUNT}:broker:elsewhere:b-1"
    with aws_error(lam, "InvalidParameterValueException", 400):
        lam.create_event_source_mapping(EventSourceArn=unknown, FunctionName=function,
                                        Queues=["q"], SourceAccessConfigurations=access)
