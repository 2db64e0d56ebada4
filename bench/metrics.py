"""What the metrics model adds to one invocation, in one run: the calls an
invocation makes into it (a concurrency slot taken and given back, the
environment's InvokeReport through its listener) against the same calls with
metrics off (a listener that does nothing, the bare counter). Prints microseconds
per invocation; the budget is 20 µs.

    .venv/bin/python bench/metrics.py [N]
"""

from __future__ import annotations

import sys
import time

from lamina.observe.events import InvokeReport
from lamina.observe.metrics import Metrics, Prices


class _Settings:
    reserved: dict[str, int] = {}
    provisioned_by_function: dict[str, int] = {}
    shared_pool = 1000


def per_invocation_us(n: int, metrics_on: bool) -> float:
    from lamina.invoke.concurrency import ConcurrencyCounter

    metrics = Metrics(Prices(0.0000166667, 0.0000133334, 0.0000002))
    counter = ConcurrencyCounter(_Settings(), metrics)  # type: ignore[arg-type]
    listener = metrics.listener_for("bench", "$LATEST") if metrics_on else (lambda event: None)
    reports = [InvokeReport(f"id-{i}", "success", 1.234, 2, 128, 40, "Root=1-x",
                            invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:bench")
               for i in range(n)]
    # CPU time of this process: on a shared machine, time spent descheduled is
    # not the model's.
    started = time.process_time()
    for report in reports:
        if metrics_on:
            slot = counter.take("bench")
            listener(report)
            counter.release("bench", slot)
        else:
            listener(report)
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    off, on = [], []
    for _ in range(5):  # round-robin, best of 5
        off.append(per_invocation_us(n, False))
        on.append(per_invocation_us(n, True))
    print(f"metrics off: {min(off):.2f} µs per invocation")
    print(f"metrics on:  {min(on):.2f} µs per invocation")
    print(f"overhead:    {min(on) - min(off):.2f} µs per invocation (budget 20 µs)")


if __name__ == "__main__":
    main()
