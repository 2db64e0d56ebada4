"""Streamed responses: time to first byte against total time, and what streaming costs.

Run: .venv/bin/python bench/streaming.py [--runs N]

Against a real `lamina serve` on loopback, over plain HTTP with a keep-alive client
(no boto3 in the timings), event stream decoded with botocore's own parser:

- TTFB vs total: a Node.js handler that streams 10 chunks 50 ms apart through
  InvokeWithResponseStream; time to the first PayloadChunk against time to
  InvokeComplete (a buffered response would make them equal, ~450 ms);
- overhead for a small response, warm: Invoke of a buffered handler, the same
  handler through InvokeWithResponseStream (one PayloadChunk), and a streaming
  handler (streamifyResponse, one write) through InvokeWithResponseStream;
- bandwidth: a 12 MB stream, whose last 6 MB Lambda (and Lamina) send at 2 MB/s,
  so about 3 s in all.

`measure(port, names)` is the part another benchmark (bench/urls.py) can call with
its own server and functions.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.eventstream import EventStreamBuffer

ROLE = "arn:aws:iam::000000000000:role/bench"
TEN_CHUNKS = """
export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  for (let i = 0; i < 10; i++) {
    responseStream.write(`chunk ${i}\\n`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  responseStream.end();
});
"""
ONE_WRITE = """
export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.end('{"ok":true}');
});
"""
BUFFERED = """
export const handler = async () => ({ ok: true });
"""
LARGE = """
export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const piece = Buffer.alloc(64 * 1024, 120);
  for (let i = 0; i < event.pieces; i++) {
    if (!responseStream.write(piece)) await new Promise((resolve) => responseStream.once("drain", resolve));
  }
  responseStream.end();
});
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def code_zip(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("index.mjs")
        info.external_attr = 0o100644 << 16
        archive.writestr(info, source)
    return buffer.getvalue()


class Client:
    """One keep-alive connection; each call returns (ms to first payload byte, ms in all)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port)

    def invoke(self, name: str) -> tuple[float, float]:
        started = time.perf_counter()
        self.conn.request("POST", f"/2015-03-31/functions/{name}/invocations", body=b"{}")
        response = self.conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        elapsed = (time.perf_counter() - started) * 1000
        return elapsed, elapsed

    def stream(self, name: str, event: bytes = b"{}") -> tuple[float, float]:
        started = time.perf_counter()
        self.conn.request("POST", f"/2021-11-15/functions/{name}/response-streaming-invocations",
                          body=event)
        response = self.conn.getresponse()
        assert response.status == 200, response.status
        decoder = EventStreamBuffer()
        first: float | None = None
        complete = False
        while not complete:
            data = response.read1(65536)
            if not data:
                break
            decoder.add_data(data)
            for message in decoder:
                kind = message.headers[":event-type"]
                if kind == "PayloadChunk" and first is None:
                    first = time.perf_counter()
                elif kind == "InvokeComplete":
                    assert json.loads(message.payload).get("ErrorCode") is None, message.payload
                    complete = True
        response.read()
        ended = time.perf_counter()
        assert complete and first is not None
        return (first - started) * 1000, (ended - started) * 1000


def measure(port: int, names: dict[str, str], runs: int = 20, small_runs: int = 200) -> dict[str, dict[str, float]]:
    """names: "ten_chunks", "one_write", "buffered", "large" -> function names on that server."""
    client = Client(port)
    results: dict[str, dict[str, float]] = {}
    client.stream(names["ten_chunks"])  # warm
    ttfb, total = zip(*(client.stream(names["ten_chunks"]) for _ in range(runs)))
    results["10 chunks x 50 ms, streamed"] = {
        "ttfb_p50": statistics.median(ttfb), "ttfb_p99": percentile(list(ttfb), 99),
        "total_p50": statistics.median(total), "total_p99": percentile(list(total), 99)}
    cases = {
        "small, Invoke (buffered handler)": lambda: client.invoke(names["buffered"]),
        "small, InvokeWithResponseStream (buffered handler)": lambda: client.stream(names["buffered"]),
        "small, InvokeWithResponseStream (streaming handler)": lambda: client.stream(names["one_write"]),
    }
    for label, call in cases.items():
        for _ in range(10):
            call()
        ttfb, total = zip(*(call() for _ in range(small_runs)))
        results[label] = {"ttfb_p50": statistics.median(ttfb), "ttfb_p99": percentile(list(ttfb), 99),
                          "total_p50": statistics.median(total), "total_p99": percentile(list(total), 99)}
    pieces = 12 * 16  # 64 KB each: 12 MB
    client.stream(names["large"], json.dumps({"pieces": 1}).encode())
    ttfb_ms, total_ms = client.stream(names["large"], json.dumps({"pieces": pieces}).encode())
    results["12 MB streamed (6 MB burst, then 2 MB/s)"] = {
        "ttfb_p50": ttfb_ms, "ttfb_p99": ttfb_ms, "total_p50": total_ms, "total_p99": total_ms}
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--small-runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lamina-bench-stream-") as tmp:
        os.chmod(tmp, 0o755)  # sandbox users traverse to the data dir
        port = free_port()
        log = open(Path(tmp) / "server.log", "wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "lamina.cli.main", "serve", "--port", str(port),
             "--data-dir", str(Path(tmp) / "data")], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise SystemExit((Path(tmp) / "server.log").read_text())
                    time.sleep(0.05)
            lam = boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                               aws_access_key_id="bench", aws_secret_access_key="bench",
                               config=Config(retries={"max_attempts": 1}))
            names = {}
            for key, source in (("ten_chunks", TEN_CHUNKS), ("one_write", ONE_WRITE), ("buffered", BUFFERED),
                                ("large", LARGE)):
                names[key] = f"bench-{key.replace('_', '-')}"
                lam.create_function(FunctionName=names[key], Runtime="nodejs24.x", Role=ROLE,
                                    Handler="index.handler", MemorySize=1769,
                                    Code={"ZipFile": code_zip(source)})
                lam.get_waiter("function_active_v2").wait(FunctionName=names[key])
            results = measure(port, names, args.runs, args.small_runs)
        finally:
            process.terminate()
            process.wait(timeout=20)
    print(f"Streamed responses, Node.js 24, warm, loopback ({args.runs} streamed runs, "
          f"{args.small_runs} small runs each)")
    print(f"{'case':<55}{'TTFB p50':>10}{'p99':>9}{'total p50':>11}{'p99':>9}  (ms)")
    for label, row in results.items():
        print(f"{label:<55}{row['ttfb_p50']:>10.2f}{row['ttfb_p99']:>9.2f}"
              f"{row['total_p50']:>11.2f}{row['total_p99']:>9.2f}")


if __name__ == "__main__":
    main()
