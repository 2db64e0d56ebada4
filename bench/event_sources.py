"""Event source mappings: messages/s drained and the latency they add, in one run.

    python bench/event_sources.py [--messages 1000] [--latency-samples 30]

Starts a fresh `lamina serve` (and, when Debian's rabbitmq-server is installed and
this runs as root, a private RabbitMQ node on loopback), then for each source:

- drain: N messages are queued while the mapping is disabled, the mapping is
  enabled, and the clock runs until the function has seen every one (SQS at batch
  sizes 1 and 10; RabbitMQ at batch size 10);
- latency: single messages sent one at a time to an idle, warm mapping; the handler
  logs how long after the send (SQS's SentTimestamp, or the publish time carried in
  the RabbitMQ message) it started.

The function is a python3.13 handler that only logs; figures are the platform's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import function_args, make_zip  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sqs import lamina_server  # noqa: E402

HANDLER = make_zip({"app.py": '''
import base64, json, time

def handler(event, context):
    started = time.time() * 1000
    if "Records" in event:
        sent = [int(r["attributes"]["SentTimestamp"]) for r in event["Records"]]
        ids = [r["body"] for r in event["Records"]]
    else:
        messages = [m for ms in event["rmqMessagesByQueue"].values() for m in ms]
        bodies = [json.loads(base64.b64decode(m["data"])) for m in messages]
        sent = [b["t"] for b in bodies]
        ids = [b["id"] for b in bodies]
    print("SEEN " + json.dumps({"n": len(ids), "latency_ms": started - min(sent), "ids": ids}))
'''})
RABBITMQ = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
ACCOUNT = "000000000000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 300.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(interval)


class Platform:
    def __init__(self, endpoint: str) -> None:
        config = Config(retries={"max_attempts": 1}, read_timeout=120)
        kwargs = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                      aws_secret_access_key="bench", config=config)
        self.lam = boto3.client("lambda", **kwargs)
        self.sqs = boto3.client("sqs", **kwargs)
        self.logs = boto3.client("logs", **kwargs)

    def function(self) -> str:
        name = f"bench-esm-{uuid.uuid4().hex[:8]}"
        self.lam.create_function(**function_args(name, HANDLER, Runtime="python3.13",
                                                 MemorySize=256))
        self.lam.get_waiter("function_active_v2").wait(FunctionName=name)
        return name

    def seen(self, function: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"logGroupName": f"/aws/lambda/{function}", "filterPattern": "SEEN"}
        try:
            while True:
                page = self.logs.filter_log_events(**kwargs)
                found += [json.loads(e["message"].split("SEEN ", 1)[1]) for e in page["events"]
                          if "SEEN {" in e["message"]]
                if not page.get("nextToken"):
                    return found
                kwargs["nextToken"] = page["nextToken"]
        except self.logs.exceptions.ResourceNotFoundException:
            return []

    def count(self, function: str) -> int:
        return sum(s["n"] for s in self.seen(function))

    def queue_empty(self, url: str) -> bool:
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return all(value == "0" for value in attributes.values())

    def mapping(self, function: str, arn: str, **kwargs: Any) -> str:
        uuid_ = self.lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=function,
                                                     **kwargs)["UUID"]
        wanted = "Enabled" if kwargs.get("Enabled", True) else "Disabled"
        wait_for(lambda: self.lam.get_event_source_mapping(UUID=uuid_)["State"] == wanted)
        return uuid_

    def enable(self, uuid_: str) -> None:
        self.lam.update_event_source_mapping(UUID=uuid_, Enabled=True)


def report(label: str, count: int, elapsed: float) -> None:
    print(f"{label:<46} {count / elapsed:>9,.0f} msg/s  ({count} in {elapsed:.2f} s)")


def report_latency(label: str, samples: list[float]) -> None:
    samples = sorted(samples)
    p90 = samples[int(len(samples) * 0.9) - 1] if len(samples) >= 10 else samples[-1]
    print(f"{label:<46} p50 {statistics.median(samples):7.1f} ms   p90 {p90:7.1f} ms"
          f"   ({len(samples)} messages)")


def sqs_drain(platform: Platform, messages: int, batch_size: int) -> None:
    function = platform.function()
    name = f"bench-{uuid.uuid4().hex[:8]}"
    url = platform.sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}"
    uuid_ = platform.mapping(function, arn, BatchSize=batch_size, Enabled=False)
    for start in range(0, messages, 10):
        platform.sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(min(10, messages - start))])
    started = time.perf_counter()
    platform.enable(uuid_)
    # Drained: every message deleted, i.e. its invocation succeeded.
    wait_for(lambda: platform.queue_empty(url), interval=0.05)
    elapsed = time.perf_counter() - started
    assert platform.count(function) >= messages
    report(f"SQS drain, BatchSize {batch_size}", messages, elapsed)


def sqs_latency(platform: Platform, samples: int) -> None:
    function = platform.function()
    name = f"bench-{uuid.uuid4().hex[:8]}"
    url = platform.sqs.create_queue(QueueName=name)["QueueUrl"]
    platform.mapping(function, f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}", BatchSize=1)
    for i in range(samples + 1):  # the first warms the environment
        platform.sqs.send_message(QueueUrl=url, MessageBody=f"l{i}")
        wait_for(lambda: platform.count(function) >= i + 1, interval=0.02)
    latencies = [s["latency_ms"] for s in platform.seen(function)][1:]
    report_latency("SQS send -> handler start, BatchSize 1", latencies)


# -- RabbitMQ ------------------------------------------------------------------------------


@contextmanager
def rabbitmq_broker(base: Path) -> Iterator[int]:
    """A private RabbitMQ node on loopback (see tests/test_rabbitmq.py): its port."""
    for directory in ("mnesia", "log", "home"):
        (base / directory).mkdir(parents=True)
    port, dist_port = free_port(), free_port()
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.1 = 127.0.0.1:{port}\ndefault_user = bench\ndefault_pass = bench\n")
    (base / "enabled_plugins").write_text("[].\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(base / "home"),
           "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
           "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(port),
           "RABBITMQ_DIST_PORT": str(dist_port),
           "RABBITMQ_NODENAME": f"lamina-bench-{uuid.uuid4().hex[:8]}@localhost",
           "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
           "ERL_EPMD_ADDRESS": "127.0.0.1",
           "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}"}
    epmd = set(subprocess.run(["pgrep", "-x", "epmd"], capture_output=True, text=True).stdout.split())
    process = subprocess.Popen([str(RABBITMQ)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("rabbitmq-server did not start") from None
                time.sleep(0.3)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        started = set(subprocess.run(["pgrep", "-x", "epmd"], capture_output=True,
                                     text=True).stdout.split()) - epmd
        for pid in started:
            os.kill(int(pid), signal.SIGTERM)


async def _publish(port: int, queue: str, bodies: list[dict[str, Any]], pace: Callable[[], Any] | None = None) -> None:
    import aio_pika

    connection = await aio_pika.connect(f"amqp://bench:bench@127.0.0.1:{port}/")
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        for body in bodies:
            body["t"] = time.time() * 1000
            await channel.default_exchange.publish(aio_pika.Message(json.dumps(body).encode()),
                                                   routing_key=queue)
            if pace is not None:
                await asyncio.get_running_loop().run_in_executor(None, pace)


def rabbitmq(platform: Platform, port: int, messages: int, samples: int) -> None:
    broker_arn = f"arn:aws:mq:us-east-1:{ACCOUNT}:broker:bench:b-1"
    access = [{"Type": "BASIC_AUTH", "URI": "bench"}]
    function = platform.function()
    queue = f"drain-{uuid.uuid4().hex[:6]}"
    asyncio.run(_publish(port, queue, [{"id": i} for i in range(messages)]))
    uuid_ = platform.mapping(function, broker_arn, BatchSize=10, Queues=[queue],
                             SourceAccessConfigurations=access, Enabled=False)
    started = time.perf_counter()
    platform.enable(uuid_)
    wait_for(lambda: platform.count(function) >= messages, interval=0.25)
    report("RabbitMQ drain, BatchSize 10", messages, time.perf_counter() - started)

    function = platform.function()
    queue = f"latency-{uuid.uuid4().hex[:6]}"
    asyncio.run(_publish(port, queue, []))
    platform.mapping(function, broker_arn, BatchSize=1, Queues=[queue],
                     SourceAccessConfigurations=access)
    published = [0]

    def pace() -> None:
        """One message at a time: wait until the function has seen the last one."""
        published[0] += 1
        wait_for(lambda: platform.count(function) >= published[0], interval=0.02)

    asyncio.run(_publish(port, queue, [{"id": i} for i in range(samples + 1)], pace=pace))
    latencies = [s["latency_ms"] for s in platform.seen(function)][1:]
    report_latency("RabbitMQ publish -> handler start, BatchSize 1", latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        base = Path(scratch)
        os.chmod(base, 0o755)
        port = None
        if RABBITMQ.exists() and os.geteuid() == 0:
            port = stack.enter_context(rabbitmq_broker(base / "rabbitmq"))
            os.environ["LAMINA_MQ_BROKERS"] = f"bench=amqp://127.0.0.1:{port}"
        (base / "secrets.json").write_text(json.dumps({"bench": {"username": "bench",
                                                                "password": "bench"}}))
        os.environ["LAMINA_SECRETS_FILE"] = str(base / "secrets.json")
        platform = Platform(stack.enter_context(lamina_server()))
        for batch_size in (1, 10):
            sqs_drain(platform, args.messages, batch_size)
        sqs_latency(platform, args.latency_samples)
        if port is not None:
            rabbitmq(platform, port, args.messages, args.latency_samples)
        else:
            print("RabbitMQ: skipped (rabbitmq-server not installed, or not root)")


if __name__ == "__main__":
    main()
