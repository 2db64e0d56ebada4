"""Asynchronous invocation: events accepted per second, and events drained per second.

Starts its own `lamina serve` (the Server the tests use, SQLite in a temporary data
dir) and prints three figures for a trivial handler:

- accepted/s: Invoke with InvocationType=Event over plain HTTP (keep-alive), from
  several client threads, while the function's reserved concurrency is 0 so the
  workers stay out of the way. Every 202 means the event was committed first.
- drained/s: the reservation is removed and the workers run the queued events;
  timed until the last invocation record reaches the OnSuccess SQS queue
  (cold starts of the workers' environments included).
- end-to-end/s: a second function, no reservation: events sent and drained at the
  same time, timed from the first send to the last record.

    .venv/bin/python bench/async.py [--events 3000] [--threads 8] [--workers 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Server  # noqa: E402  (the path above makes `tests` importable)
from tests.helpers import function_args  # noqa: E402


def send_events(port: int, name: str, count: int, threads: int) -> float:
    """Send `count` Event invokes from `threads` connections; the wall time taken."""
    path = f"/2015-03-31/functions/{name}/invocations"
    failures: list[int] = []

    def worker(share: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for n in range(share):
            conn.request("POST", path, body=json.dumps({"n": n}),
                         headers={"X-Amz-Invocation-Type": "Event",
                                  "Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 202:
                failures.append(response.status)
        conn.close()

    shares = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
    workers = [threading.Thread(target=worker, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if failures:
        raise SystemExit(f"{len(failures)} events not accepted: {sorted(set(failures))}")
    return time.perf_counter() - started


def wait_for_records(sqs: Any, url: str, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while True:
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        if int(attributes["ApproximateNumberOfMessages"]) >= count:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"only {attributes} of {count} records after {timeout} s")
        time.sleep(0.05)


def setup_function(lam: Any, sqs: Any, name: str) -> str:
    """A trivial function whose successes go to a fresh queue; the queue's URL."""
    url = sqs.create_queue(QueueName=f"{name}-done")["QueueUrl"]
    lam.create_function(**function_args(name))
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={
        "OnSuccess": {"Destination": f"arn:aws:sqs:us-east-1:000000000000:{name}-done"}})
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--workers", type=int, default=10, help="workers per function")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # sandbox users (unprivileged uids) reach the data dir
        server = Server(Path(tmp) / "data", {
            "LAMINA_ASYNC_WORKERS_PER_FUNCTION": str(args.workers),
            # Only so the throttled workers of phase 1 notice the change quickly.
            "LAMINA_ASYNC_RETRY_DELAY_SCALE": "0.01",
        })
        server.start()
        try:
            lam, sqs = server.client(), server.client("sqs")
            count = args.events

            url = setup_function(lam, sqs, "bench-queued")
            lam.put_function_concurrency(FunctionName="bench-queued",
                                         ReservedConcurrentExecutions=0)
            accept_s = send_events(server.port, "bench-queued", count, args.threads)
            started = time.perf_counter()
            lam.delete_function_concurrency(FunctionName="bench-queued")
            wait_for_records(sqs, url, count)
            drain_s = time.perf_counter() - started

            url = setup_function(lam, sqs, "bench-live")
            started = time.perf_counter()
            send_events(server.port, "bench-live", count, args.threads)
            wait_for_records(sqs, url, count)
            both_s = time.perf_counter() - started
        finally:
            server.stop()

    print(f"{count} events, {args.threads} client threads, {args.workers} workers per function")
    print(f"{'accepted (durable 202)':<34} {count / accept_s:>8,.0f} events/s  ({accept_s:.2f} s)")
    print(f"{'drained by the workers':<34} {count / drain_s:>8,.0f} events/s  ({drain_s:.2f} s)")
    print(f"{'sent and drained together':<34} {count / both_s:>8,.0f} events/s  ({both_s:.2f} s)")


if __name__ == "__main__":
    main()
