"""Lamina beside its peers, in one run: warm latency and throughput of a no-op Python
handler invoked through the Lambda Invoke API with keep-alive HTTP.

Run: .venv/bin/python bench/peers.py [--sandbox namespaces] [--seconds 3] [--warm 2000]

Rows:
- the floor: a bare asyncio HTTP responder (httptools, uvloop) answering a fixed 200,
  i.e. what the load generator and the loopback cost by themselves;
- serverless-offline 13 (npm), when installed: `npm install serverless@3
  serverless-offline@13` in ~/.cache/lamina-peers (or $LAMINA_PEERS_DIR); skipped
  with a note otherwise;
- Lamina: `lamina serve` with the given sandbox, MemorySize 1,769 MB (one vCPU).

Columns: warm p50/p99 at concurrency 1, and invocations/s at concurrency 1, 4, 16.
Every server is started here, on loopback, all at once (an idle one costs nothing),
and every figure is measured in short slices with the servers taking turns, so a
change in the machine's load hits every row alike: on a shared machine, compare
rows of one run. Each server is stopped (its process group, by id) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import Figures, latencies, percentile, rate, request_bytes  # noqa: E402

HANDLER = "def handler(event, context):\n    return {}\n"
ROLE = "arn:aws:iam::000000000000:role/bench"
MEMORY_MB = 1769
PEERS_DIR = Path(os.environ.get("LAMINA_PEERS_DIR", Path.home() / ".cache" / "lamina-peers"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def running(command: list[str], port: int, **options: object) -> Iterator[subprocess.Popen[bytes]]:
    """A server in its own process group, stopped (the group, by its id) on the way out."""
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, **options)  # type: ignore[call-overload]
    try:
        wait_port(port, process)
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def code_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("app.py")
        info.external_attr = 0o100644 << 16
        archive.writestr(info, HANDLER)
    return buffer.getvalue()


# Each peer: a running server, as (port, the Invoke request to send), or why not.
Peer = Iterator["tuple[int, bytes] | str"]


@contextmanager
def floor(args: argparse.Namespace) -> Peer:
    port = free_port()
    command = [sys.executable, str(Path(__file__).parent / "loadgen.py"), "floor", str(port)]
    with running(command, port):
        yield port, request_bytes("POST", "/", b"{}")


@contextmanager
def serverless_offline(args: argparse.Namespace) -> Peer:
    binary = PEERS_DIR / "node_modules" / ".bin" / "serverless"
    if not (PEERS_DIR / "node_modules" / "serverless-offline").is_dir() or not binary.exists():
        yield f"not installed (npm install serverless@3 serverless-offline@13 in {PEERS_DIR})"
        return
    work = Path(tempfile.mkdtemp(prefix="peers-sls-"))
    try:
        (work / "handler.py").write_text(HANDLER)
        (work / "serverless.yml").write_text(
            "service: bench\n"
            "frameworkVersion: '3'\n"
            "provider:\n  name: aws\n  runtime: python3.11\n  region: us-east-1\n"
            "plugins:\n  - serverless-offline\n"
            "functions:\n  noop:\n    handler: handler.handler\n"
        )
        (work / "node_modules").symlink_to(PEERS_DIR / "node_modules")
        port, http_port = free_port(), free_port()
        env = dict(os.environ, SLS_TELEMETRY_DISABLED="1", SLS_NOTIFICATIONS_MODE="off",
                   AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
        command = [str(binary), "offline", "--lambdaPort", str(port), "--httpPort",
                   str(http_port), "--host", "127.0.0.1"]
        try:
            server = running(command, port, cwd=work, env=env)
            server.__enter__()
        except RuntimeError as error:
            yield f"did not start ({error})"
            return
        try:
            yield port, request_bytes("POST", "/2015-03-31/functions/bench-dev-noop/invocations",
                                      b"{}", {"Content-Type": "application/json"})
        finally:
            server.__exit__(None, None, None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def lamina(args: argparse.Namespace, source: Path | None = None,
           python: str | None = None) -> Peer:
    """Lamina from this checkout, or from another checkout's src, or run by another
    interpreter (a before/after row)."""
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="peers-lamina-"))
    data.chmod(0o755)  # sandbox users (unprivileged uids) reach the code under it
    # 16 environments of 1,769 MB: more than this host's default budget, but a no-op
    # uses a few MB of it.
    env = dict(os.environ, LAMINA_ENVIRONMENT_MEMORY_MB="65536")
    if args.sandbox:
        env["LAMINA_SANDBOX"] = args.sandbox
    if source is not None:
        env["PYTHONPATH"] = str(source / "src")
    command = [python or sys.executable, "-m", "lamina.cli.main", "serve", "--port", str(port),
               "--data-dir", str(data)]
    try:
        with running(command, port, env=env):
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("POST", "/2015-03-31/functions", body=json.dumps({
                "FunctionName": "noop", "Runtime": "python3.11", "Role": ROLE,
                "Handler": "app.handler", "MemorySize": MEMORY_MB,
                "Code": {"ZipFile": base64.b64encode(code_zip()).decode()}}),
                headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 201, response.read()
            response.read()
            yield port, request_bytes("POST", "/2015-03-31/functions/noop/invocations", b"{}")
    finally:
        shutil.rmtree(data, ignore_errors=True)


async def interleaved(targets: dict[str, tuple[int, bytes]], args: argparse.Namespace,
                      concurrencies: tuple[int, ...] = (1, 4, 16)) -> dict[str, Figures]:
    """Every figure measured in short slices, the servers taking turns, so that a
    change in the machine's load falls on all of them alike."""
    rounds = args.rounds
    times: dict[str, list[float]] = {name: [] for name in targets}
    done: dict[tuple[str, int], float] = {}
    spent: dict[tuple[str, int], float] = {}
    for port, request in targets.values():
        await latencies(port, request, 200)  # warm up
        for c in concurrencies:
            await rate(port, request, c, 0.3)  # c environments started
    order = list(targets.items())
    for index in range(rounds):
        turn = order if index % 2 == 0 else order[::-1]
        for name, (port, request) in turn:
            times[name] += await latencies(port, request, max(1, args.warm // rounds))
        for c in concurrencies:
            for name, (port, request) in turn:
                seconds = args.seconds / rounds
                done[name, c] = done.get((name, c), 0) + await rate(port, request, c, seconds) * seconds
                spent[name, c] = spent.get((name, c), 0) + seconds
    return {name: Figures(percentile(times[name], 50), percentile(times[name], 99),
                          {c: done[name, c] / spent[name, c] for c in concurrencies})
            for name in targets}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sandbox", default="namespaces")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warm", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10,
                        help="slices each figure is measured in, the servers taking turns")
    parser.add_argument("--only", choices=["floor", "serverless-offline", "lamina"])
    parser.add_argument("--compare", type=Path, metavar="CHECKOUT",
                        help="add a row for Lamina from another checkout (e.g. `git worktree` "
                             "of an earlier commit), measured in the same run")
    parser.add_argument("--compare-python", metavar="PYTHON",
                        help="add a row for Lamina run by another interpreter (one with "
                             "Lamina installed, e.g. another venv's bin/python)")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()  # the load generator's loop
    except ImportError:
        pass
    peers: list[tuple[str, str, Callable[[argparse.Namespace], Peer]]] = [
        ("floor", "bare asyncio HTTP responder (floor)", floor),
        ("serverless-offline", "serverless-offline 13 (no isolation)", serverless_offline),
        ("lamina", f"Lamina ({args.sandbox} sandbox, {MEMORY_MB} MB)", lamina),
        ("compare", f"Lamina from {args.compare}", lambda args: lamina(args, args.compare)),
        ("compare-python", f"Lamina on {args.compare_python}",
         lambda args: lamina(args, python=args.compare_python))]
    load = os.getloadavg()[0]
    skipped: dict[str, str] = {}
    with ExitStack() as stack:
        targets: dict[str, tuple[int, bytes]] = {}
        for key, name, peer in peers:
            # --only lamina keeps the --compare row: a before/after of Lamina alone.
            if key in ("compare", "compare-python"):
                if getattr(args, key.replace("-", "_")) is None:
                    continue
            elif args.only and key != args.only:
                continue
            started = stack.enter_context(peer(args))
            if isinstance(started, str):
                skipped[name] = started
            else:
                targets[name] = started
        figures = asyncio.run(interleaved(targets, args))
    print(f"\n{os.uname().nodename}: {os.cpu_count()} cores; uptime: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"load average when starting: {load:.2f}")
    print("| | warm p50 | warm p99 | inv/s c=1 | inv/s c=4 | inv/s c=16 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, found in figures.items():
        rates = " | ".join(f"{found.per_s[c]:,.0f}" for c in (1, 4, 16))
        print(f"| {name} | {found.p50_ms:.3f} ms | {found.p99_ms:.3f} ms | {rates} |")
    for name, reason in skipped.items():
        print(f"| {name} | skipped: {reason} | | | | |")


if __name__ == "__main__":
    main()
