"""Function URL benchmark: warm request latency through a function URL against the
Invoke API, in one run, on one server, for the same function.

Run: .venv/bin/python bench/urls.py [--requests N] [--runtime python3.13]

Both paths are driven over HTTP on loopback with a keep-alive client (no boto3 or
SDK overhead on either side). The function answers the smallest structured
response; the Invoke path sends the event a URL request would have produced, so
the difference between the two columns is what the URL front end adds: matching
the host name, the policy check, building the payload format 2.0 event and mapping
the response back. Requests alternate between the two paths so drift on a shared
machine affects both alike.

Then a Node.js function on a RESPONSE_STREAM URL writes 10 chunks 50 ms apart: the
time to the first byte against the time to the last shows the body reaching the
client as the function writes it.
"""

from __future__ import annotations

import argparse
import base64
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

HANDLER = (
    "def handler(event, context):\n"
    "    return {'statusCode': 200, 'headers': {'content-type': 'text/plain'}, 'body': 'ok'}\n"
)
ROLE = "arn:aws:iam::000000000000:role/bench"
STREAMING_HANDLER = (
    "export const handler = awslambda.streamifyResponse(async (event, stream) => {\n"
    "  for (let i = 0; i < 10; i++) {\n"
    "    stream.write(`chunk ${i}\\n`);\n"
    "    await new Promise((resolve) => setTimeout(resolve, 50));\n"
    "  }\n"
    "  stream.end();\n"
    "});\n"
)
# One full vCPU, so the figures are Lamina's overhead rather than a small CPU share.
MEMORY_MB = 1769


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def code_zip(file_name: str = "app.py", code: str = HANDLER) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(file_name)
        info.external_attr = 0o100644 << 16
        archive.writestr(info, code)
    return buffer.getvalue()


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lamina.cli.main", "serve", "--port", str(port),
         "--data-dir", str(data_dir)],
        env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("server did not start")


def api(conn: http.client.HTTPConnection, method: str, path: str, body: object = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"content-type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {payload[:300]!r}")
    return json.loads(payload) if payload else {}


def set_up(port: int, name: str, runtime: str, handler: str, code: bytes,
           invoke_mode: str = "BUFFERED") -> str:
    """Create the function, its URL and the public statements; return the URL's host."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    api(conn, "POST", "/2015-03-31/functions", {
        "FunctionName": name, "Runtime": runtime, "Role": ROLE, "Handler": handler,
        "MemorySize": MEMORY_MB, "Code": {"ZipFile": base64.b64encode(code).decode()},
    })
    deadline = time.monotonic() + 300
    while api(conn, "GET", f"/2015-03-31/functions/{name}")["Configuration"]["State"] != "Active":
        if time.monotonic() > deadline:
            raise RuntimeError("function did not become Active")
        time.sleep(0.2)
    url = api(conn, "POST", f"/2021-10-31/functions/{name}/url",
              {"AuthType": "NONE", "InvokeMode": invoke_mode})["FunctionUrl"]
    for sid, action, extra in (
        ("url", "lambda:InvokeFunctionUrl", {"FunctionUrlAuthType": "NONE"}),
        ("invoke", "lambda:InvokeFunction", {"InvokedViaFunctionUrl": True}),
    ):
        api(conn, "POST", f"/2015-03-31/functions/{name}/policy",
            {"StatementId": sid, "Action": action, "Principal": "*", **extra})
    return str(url).split("//", 1)[1].rstrip("/")


def first_and_last_byte(conn: http.client.HTTPConnection, host: str) -> tuple[float, float]:
    """Milliseconds to the first byte of the body and to its end."""
    started = time.perf_counter()
    conn.request("GET", "/", headers={"host": host})
    response = conn.getresponse()
    response.read(1)
    first = (time.perf_counter() - started) * 1000
    response.read()
    return first, (time.perf_counter() - started) * 1000


def timed(conn: http.client.HTTPConnection, method: str, path: str, body: bytes,
          headers: dict[str, str]) -> float:
    started = time.perf_counter()
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: {response.status}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per path")
    parser.add_argument("--runtime", default="python3.13")
    parser.add_argument("--streams", type=int, default=20, help="timed streamed responses")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lamina-bench-urls-") as tmp:
        tmp_path = Path(tmp)
        # Sandbox users must be able to reach the data dir.
        tmp_path.chmod(0o755)
        process, port = start_server(tmp_path / "data")
        try:
            host = set_up(port, "bench", args.runtime, "app.handler", code_zip())
            stream_host = set_up(port, "bench-stream", "nodejs24.x", "index.handler",
                                 code_zip("index.mjs", STREAMING_HANDLER), "RESPONSE_STREAM")
            url_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            invoke_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            url_headers = {"host": host, "user-agent": "bench"}
            # The event a URL request for GET /hello?x=1 would produce, for Invoke.
            event = json.dumps({
                "version": "2.0", "routeKey": "$default", "rawPath": "/hello",
                "rawQueryString": "x=1", "headers": {"host": host}, "isBase64Encoded": False,
                "requestContext": {"http": {"method": "GET", "path": "/hello"}},
            }).encode()
            invoke_path = "/2015-03-31/functions/bench/invocations"
            invoke_headers = {"content-type": "application/json"}
            # Warm up: the environment starts, connections open, caches fill.
            for _ in range(50):
                timed(url_conn, "GET", "/hello?x=1", b"", url_headers)
                timed(invoke_conn, "POST", invoke_path, event, invoke_headers)
            through_url: list[float] = []
            through_invoke: list[float] = []
            for _ in range(args.requests):
                through_url.append(timed(url_conn, "GET", "/hello?x=1", b"", url_headers))
                through_invoke.append(timed(invoke_conn, "POST", invoke_path, event,
                                            invoke_headers))
            stream_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            first_and_last_byte(stream_conn, stream_host)
            streamed = [first_and_last_byte(stream_conn, stream_host) for _ in range(args.streams)]
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"warm requests, {args.requests} per path, runtime {args.runtime}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'path (ms)':<28}{'p50':>9}{'p90':>9}{'p99':>9}{'mean':>9}")
    for label, values in (("function URL (GET)", through_url),
                          ("Invoke API (POST)", through_invoke)):
        print(f"{label:<28}{percentile(values, 50):>9.2f}{percentile(values, 90):>9.2f}"
              f"{percentile(values, 99):>9.2f}{statistics.fmean(values):>9.2f}")
    added = percentile(through_url, 50) - percentile(through_invoke, 50)
    print(f"URL front end adds {added:+.2f} ms at p50")
    first, last = zip(*streamed)
    print(f"RESPONSE_STREAM URL, 10 chunks 50 ms apart ({args.streams} requests, nodejs24.x): "
          f"first byte p50 {percentile(list(first), 50):.1f} ms p99 {percentile(list(first), 99):.1f} ms, "
          f"last byte p50 {percentile(list(last), 50):.1f} ms")


if __name__ == "__main__":
    main()
