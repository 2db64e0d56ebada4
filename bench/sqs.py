"""Messages per second through Lamina's SQS API, one boto3 client, one queue.

    python bench/sqs.py [--messages 2000] [--endpoint http://127.0.0.1:9000]

Without --endpoint a fresh `lamina serve` is started on a free loopback port with
its own data dir (SQLite), and stopped afterwards. Every send is committed before
it is answered, so these are durable-message figures.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import boto3
from botocore.config import Config


@contextmanager
def lamina_server() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        os.chmod(data, 0o755)  # sandbox users (unprivileged uids) reach the data dir
        process = subprocess.Popen(
            [sys.executable, "-m", "lamina.cli.main", "serve", "--port", str(port),
             "--data-dir", str(Path(data) / "data")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise SystemExit("lamina serve did not start") from None
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=20)


def timed(label: str, count: int, run: Callable[[], None]) -> None:
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    print(f"{label:<42} {count / elapsed:>9,.0f} msg/s  ({count} in {elapsed:.2f} s)")


def bench(endpoint: str, count: int) -> None:
    sqs = boto3.client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="bench", aws_secret_access_key="bench",
        config=Config(retries={"max_attempts": 1}),
    )
    url = sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    body = "x" * 256

    def send_one_by_one() -> None:
        for _ in range(count):
            sqs.send_message(QueueUrl=url, MessageBody=body)

    def receive_and_delete_one_by_one() -> None:
        for _ in range(count):
            [message] = sqs.receive_message(QueueUrl=url)["Messages"]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def send_in_batches() -> None:
        for start in range(0, count, 10):
            sqs.send_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "MessageBody": body} for i in range(start, min(start + 10, count))
            ])

    def receive_and_delete_in_batches() -> None:
        done = 0
        while done < count:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ])
            done += len(messages)

    print(f"{count} messages of {len(body)} bytes, one client, {endpoint}")
    timed("SendMessage, sequential", count, send_one_by_one)
    timed("ReceiveMessage + DeleteMessage, sequential", count, receive_and_delete_one_by_one)
    timed("SendMessageBatch, 10 per call", count, send_in_batches)
    timed("Receive 10 + DeleteMessageBatch", count, receive_and_delete_in_batches)
    sqs.delete_queue(QueueUrl=url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--endpoint")
    args = parser.parse_args()
    if args.endpoint:
        bench(args.endpoint, args.messages)
    else:
        with lamina_server() as endpoint:
            bench(endpoint, args.messages)


if __name__ == "__main__":
    main()
