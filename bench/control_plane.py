"""Control-plane throughput: CreateFunction, GetFunction and ListFunctions per second.

Starts its own `lamina serve` on a free loopback port with a temporary data dir (the
same Server the tests use), then drives it with boto3, first from one thread and
then from several, and prints a table. A last row times GetFunction over plain
HTTP, so the server's own cost can be told apart from the SDK's.

    .venv/bin/python bench/control_plane.py [--count 300] [--threads 4]
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Server  # noqa: E402  (the path above makes `tests` importable)
from tests.helpers import ECHO, function_args  # noqa: E402


@dataclass
class Result:
    operation: str
    threads: int
    latencies: list[float]
    wall_s: float

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.wall_s

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(operation: str, calls: list[Callable[[], Any]], threads: int) -> Result:
    """Run the calls spread over `threads` threads; time each call and the whole."""
    latencies: list[float] = []
    lock = threading.Lock()
    shares = [calls[i::threads] for i in range(threads)]

    def worker(share: list[Callable[[], Any]]) -> None:
        mine = []
        for call in share:
            start = time.perf_counter()
            call()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=worker, args=(share,)) for share in shares]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return Result(operation, threads, latencies, time.perf_counter() - start)


def run(count: int, threads: int) -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory(prefix="lamina-bench-") as temp:
        os.chmod(temp, 0o755)  # sandbox users (unprivileged uids) reach the data dir
        server = Server(Path(temp) / "data", {"LAMINA_LOG_LEVEL": "warning"})
        server.start()
        try:
            clients = [server.client(max_pool_connections=threads) for _ in range(threads)]
            clients[0].list_functions()  # warm up the connection and the server's imports
            for n in (1, threads):
                prefix = f"bench-t{n}-"
                names = [f"{prefix}{i:05d}" for i in range(count)]

                def creator(name: str, client: Any) -> Callable[[], Any]:
                    return lambda: client.create_function(**function_args(name, ECHO))

                def getter(name: str, client: Any) -> Callable[[], Any]:
                    return lambda: client.get_function(FunctionName=name)

                def lister(client: Any) -> Callable[[], Any]:
                    return lambda: client.list_functions(MaxItems=50)

                pick = [clients[i % n] for i in range(count)]
                results.append(measure("CreateFunction", [creator(a, c) for a, c in zip(names, pick)], n))
                results.append(measure("GetFunction", [getter(a, c) for a, c in zip(names, pick)], n))
                results.append(measure("ListFunctions (50 per page)", [lister(c) for c in pick], n))
            # The server's own cost, without boto3's signing and parsing on top.
            connection = http.client.HTTPConnection("127.0.0.1", server.port)

            def raw_get(name: str) -> Callable[[], Any]:
                def call() -> None:
                    connection.request("GET", f"/2015-03-31/functions/{name}")
                    connection.getresponse().read()
                return call

            results.append(measure("GetFunction (raw HTTP)", [raw_get(a) for a in names], 1))
            connection.close()
        finally:
            server.stop()
    return results


def print_table(results: list[Result], count: int) -> None:
    header = f"{'operation':<28} {'threads':>7} {'calls':>6} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.operation:<28} {r.threads:>7} {len(r.latencies):>6} {r.per_second:>8.0f} "
            f"{r.percentile_ms(0.5):>8.2f} {r.percentile_ms(0.99):>8.2f} "
            f"{1000 * statistics.fmean(r.latencies):>8.2f}"
        )
    print(f"\n{count} functions per round; ListFunctions runs over up to {2 * count} functions. "
          "Raw HTTP: the same GetFunction without an SDK (unsigned, keys are off).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="calls per operation and round")
    parser.add_argument("--threads", type=int, default=4, help="threads in the concurrent round")
    args = parser.parse_args()
    print_table(run(args.count, args.threads), args.count)


if __name__ == "__main__":
    main()
