"""`lamina deploy template.yaml` benchmark: how long a redeploy takes.

Run: .venv/bin/python bench/deploy.py [--functions N] [--rounds R]

A stack of N Python functions (one with a requirements.txt, one with an SQS queue
and event, one with a function URL) is deployed once on a fresh server, then:

- a redeploy with no change (R times): read and check the template, hash the
  sources, find every build in the cache, compare with the stack's record, make no
  call that changes anything;
- a redeploy with one changed handler (R times): that function's code and
  configuration updated, a version published, its alias moved.

Each figure is the wall time of the `lamina deploy --no-confirm` command, as a user
waits for it, so it includes starting Python and loading the template parser; the
time of `lamina stacks` (start-up alone, no template) is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lamina.cli.main", "serve", "--port", str(port), "--data-dir", str(data_dir)],
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


def write_app(root: Path, functions: int) -> None:
    lines = ["Transform: AWS::Serverless-2016-10-31", "Globals:", "  Function:", "    Runtime: python3.11",
             "    Handler: app.handler", "    Timeout: 5", "Resources:",
             "  Jobs:", "    Type: AWS::SQS::Queue"]
    for i in range(functions):
        lines += [f"  Fn{i}:", "    Type: AWS::Serverless::Function", "    Properties:",
                  f"      CodeUri: fn{i}/", "      AutoPublishAlias: live"]
        if i == 1:
            lines += ["      Events:", "        Work:", "          Type: SQS", "          Properties:",
                      "            Queue: !GetAtt Jobs.Arn"]
        if i == 2:
            lines += ["      FunctionUrlConfig:", "        AuthType: NONE"]
        source = root / f"fn{i}"
        source.mkdir(parents=True, exist_ok=True)
        (source / "app.py").write_text(f"def handler(event, context):\n    return {i}\n")
        if i == 0:
            (source / "requirements.txt").write_text("six==1.16.0\n")
    (root / "template.yaml").write_text("\n".join(lines) + "\n")


CPU: list[float] = []   # the command's own CPU time (user + system), per call of `timed`


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise RuntimeError(result.stdout + result.stderr)
    return elapsed, result.stdout


def cpu_median(count: int) -> float:
    return statistics.median(CPU[-count:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--functions", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lamina-bench-deploy-") as scratch:
        root = Path(scratch)
        server, port = start_server(root / "data")
        try:
            app = root / "app"
            write_app(app, args.functions)
            env = {**os.environ, "LAMINA_ENDPOINT": f"http://127.0.0.1:{port}",
                   "XDG_CACHE_HOME": str(root / "cache"), "XDG_STATE_HOME": str(root / "state")}
            deploy = [str(BIN / "lamina"), "deploy", "--no-confirm", "--stack-name", "bench"]
            first, _ = timed(deploy, app, env)
            floor = statistics.median(timed([str(BIN / "lamina"), "stacks"], app, env)[0]
                                      for _ in range(args.rounds))
            floor_cpu = cpu_median(args.rounds)
            unchanged = []
            for _ in range(args.rounds):
                elapsed, out = timed(deploy, app, env)
                assert "No changes to deploy" in out, out
                unchanged.append(elapsed)
            unchanged_cpu = cpu_median(args.rounds)
            changed = []
            for round_ in range(args.rounds):
                (app / "fn3" / "app.py").write_text(f"def handler(event, context):\n    return 'round {round_}'\n")
                elapsed, out = timed(deploy, app, env)
                assert "Modify" in out and "Fn3" in out, out
                changed.append(elapsed)
            changed_cpu = cpu_median(args.rounds)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"stack: {args.functions} Python functions with aliases, a queue, an SQS event, a function URL; "
          f"{args.rounds} rounds, median (min-max) wall time of `lamina deploy --no-confirm`")
    print("  (the command's own CPU time beside it: on a busy machine wall time is mostly waiting)")
    print(f"  first deploy (empty build cache, pip)     {first:6.2f} s")
    print(f"  redeploy, no change                       {statistics.median(unchanged):6.2f} s "
          f"({min(unchanged):.2f}-{max(unchanged):.2f}), CPU {unchanged_cpu:.2f} s")
    print(f"  redeploy, one function's handler changed  {statistics.median(changed):6.2f} s "
          f"({min(changed):.2f}-{max(changed):.2f}), CPU {changed_cpu:.2f} s")
    print(f"  for scale: `lamina stacks` (start-up only) {floor:5.2f} s, CPU {floor_cpu:.2f} s")


if __name__ == "__main__":
    main()
