"""Console page loads with many functions: the function list (first page, a later
page, a search), a function's page and its monitor tab, timed over plain HTTP.

Starts its own `lamina serve` on a free loopback port with a temporary data dir
(the same Server the tests use), creates the functions through the API from
several threads, invokes one a few times (so the list and the charts have
figures), then times each page `--repeat` times. The target: under 200 ms for
the list with 1,000 functions.

    .venv/bin/python bench/console.py [--functions 1000] [--repeat 30] [--threads 8]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Server  # noqa: E402  (the path above makes `tests` importable)
from tests.helpers import ECHO, function_args  # noqa: E402


def time_page(port: int, path: str, repeat: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    timings = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        timings.append(time.perf_counter() - start)
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status} {body[:300]!r}")
    return timings[1:]  # the first load builds the templates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--functions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lamina-bench-console-") as tmp:
        server = Server(Path(tmp) / "data")
        server.start()
        try:
            lam = server.client(max_pool_connections=args.threads)
            names = [f"bench-fn-{i:04d}" for i in range(args.functions)]
            start = time.perf_counter()
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(lambda name: lam.create_function(**function_args(name, code=ECHO)), names))
            created_s = time.perf_counter() - start
            print(f"created {len(names)} functions in {created_s:.1f} s "
                  f"({len(names) / created_s:.0f}/s, {args.threads} threads)")
            lam.get_waiter("function_active_v2").wait(FunctionName=names[0], WaiterConfig={"Delay": 0.1})
            for _ in range(5):
                lam.invoke(FunctionName=names[0], Payload=b"{}")

            pages = [
                ("function list, page 1", "/console/"),
                ("function list, page 10", "/console/?page=10"),
                ("function list, search", "/console/?q=fn-09"),
                ("function page (code tab)", f"/console/functions/{names[0]}"),
                ("function page (configuration)", f"/console/functions/{names[0]}?tab=configuration"),
                ("function page (monitor, 1 h)", f"/console/functions/{names[0]}?tab=monitor"),
            ]
            print(f"\n{'page':34} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8}   ({args.repeat} loads each)")
            for label, path in pages:
                timings = sorted(time_page(server.port, path, args.repeat))
                p50 = 1000 * statistics.median(timings)
                p90 = 1000 * timings[min(len(timings) - 1, int(0.9 * len(timings)))]
                print(f"{label:34} {p50:8.1f} {p90:8.1f} {1000 * timings[-1]:8.1f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
