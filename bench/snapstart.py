"""SnapStart against ordinary cold starts, on the namespaces sandbox.

    .venv/bin/python bench/snapstart.py [--runs 30] [--burst 100] [--warm 10]
                                        [--runtime python3.13]

Two functions, on the host's CPython by default (so the comparison is of start-up,
not of images) or on a runtime image with `--runtime` (SnapStart's own Pythons on
AWS are 3.12 and later, whose immortal objects a fork does not copy when it only
reads them): a hello-world, and one whose INIT imports boto3 and makes a client
(about 150 ms of imports). For each, with and without SnapStart:

- cold start: a new environment until its first invocation has answered (INIT, or
  the restore from the version's template, plus the invocation); p50 and p99;
- a burst: `--burst` environments started at once, until every one is ready;
- PSS per warm environment: `--warm` environments kept warm, each after one
  invocation; the proportional set size of every process of theirs, summed, divided
  by their number (pages shared with the template or with each other count in
  part). The template's own PSS is shown apart.

Cases run interleaved, so load from elsewhere on a shared machine hits them alike.
The "ready" figure is the part until the environment is ready (INIT or restore),
the rest is its first invocation. Run as root (the namespaces backend needs it); the
load average is printed, since every figure moves with it on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from lamina.config import load_settings
from lamina.environments.environment import (
    EnvironmentConfig,
    ExecutionEnvironment,
    Invocation,
)
from lamina.environments.spec import EnvironmentSpec
from lamina.images.store import ImageStore, RuntimeImage
from lamina.observe.logs import LogStore
from lamina.runtimes.catalog import CLIENTS_DIR, RuntimeSpec, runtime_spec
from lamina.sandbox.namespaces import NamespaceBackend, NamespaceSettings
from lamina.sandbox.zygote import RestoringBackend, ZygoteTemplate

HELLO = "def handler(event, context):\n    return {'hello': 'world'}\n"
BOTO3 = ("import boto3\nCLIENT = boto3.client('s3', region_name='us-east-1')\n"
         "def handler(event, context):\n    return {'hello': CLIENT.meta.region_name}\n")
BOTO3_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")


def make_code(root: Path, name: str, source: str, packages: tuple[str, ...] = ()) -> Path:
    code = root / name
    code.mkdir(mode=0o755)
    (code / "app.py").write_text(source)
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    for package in packages:
        if (site / package).is_dir():
            shutil.copytree(site / package, code / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(site / package, code / package)
    for path in [code, *code.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return code


class Case:
    def __init__(self, name: str, code: Path, backend: NamespaceBackend, logs: LogStore,
                 scratch: Path, snap_start: bool, runtime: str = "python3.11",
                 image: RuntimeImage | None = None) -> None:
        self.runtime = runtime
        self.image = image
        self.name = name
        self.code = code
        self.backend = backend
        self.logs = logs
        self.scratch = scratch
        self.snap_start = snap_start
        self.template: ExecutionEnvironment | None = None
        self.zygote: ZygoteTemplate | None = None
        self.cold: list[float] = []
        # The part of each cold start until the environment was ready (INIT or restore).
        self.ready: list[float] = []
        self.spares = 2

    def runtime_spec(self) -> RuntimeSpec:
        if self.image is None:
            return runtime_spec(self.runtime, source="host")
        return runtime_spec(self.runtime, source="image").on_image(self.image.own_runtime)

    def config(self) -> EnvironmentConfig:
        runtime = self.runtime_spec()
        fv = EnvironmentSpec(f"bench-{self.name}", "1", "r1", self.runtime, "app.handler", "-",
                             1769, 30, 512, f"/aws/lambda/bench-{self.name}", "role",
                             snap_start=self.snap_start)
        return EnvironmentConfig(
            function_version=fv, runtime=runtime,
            root_image=self.image.root if self.image is not None else None,
            task_root=self.code, layers_root=None,
            runtime_root=None if runtime.own_runtime_dir else CLIENTS_DIR,
            scratch_root=self.scratch / uuid.uuid4().hex, region="us-east-1", account_id="0",
            network=False, initialization_type="snap-start" if self.snap_start else "on-demand",
            init_timeout_s=130)

    async def prepare(self) -> None:
        if self.snap_start:
            self.zygote = ZygoteTemplate(self.backend)
            self.template = ExecutionEnvironment(self.config(), self.zygote, self.logs)
            await self.template.start()
            assert self.template.init_failure is None, self.template.init_failure
            self.zygote.keep_spares(self.spares)

    async def start(self) -> ExecutionEnvironment:
        backend = RestoringBackend(self.zygote) if self.zygote else self.backend
        env = ExecutionEnvironment(self.config(), backend, self.logs)  # type: ignore[arg-type]
        await env.start()
        if env.init_failure is not None:
            raise RuntimeError(f"{self.name}: {env.init_failure!r}")
        return env

    async def cold_start(self) -> ExecutionEnvironment:
        started = time.perf_counter()
        env = await self.start()
        self.ready.append(time.perf_counter() - started)
        outcome = await env.invoke(Invocation(uuid.uuid4().hex, b"{}", "arn", "trace"))
        self.cold.append(time.perf_counter() - started)
        assert outcome.status == "success", outcome.payload
        return env


def pss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def environment_pids(env: ExecutionEnvironment) -> list[int]:
    sandbox = env._sandbox  # noqa: SLF001 - a benchmark looks inside
    return sandbox._cgroup.pids() if sandbox is not None else []  # type: ignore[attr-defined]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--warm", type=int, default=10)
    parser.add_argument("--runtime", help="a Python runtime to run on its image (default: "
                                          "python3.11 on the host)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lamina-bench-snapstart-"))
    root.chmod(0o755)
    backend = NamespaceBackend(NamespaceSettings(cgroup_parent=f"lamina-bench-{uuid.uuid4().hex[:6]}"))
    logs = LogStore(root / "logs")
    hello = make_code(root, "hello", HELLO)
    boto3 = make_code(root, "boto3", BOTO3, BOTO3_PACKAGES)
    image = None
    if args.runtime is not None:
        spec = runtime_spec(args.runtime, source="image")
        assert spec.image is not None, f"{args.runtime} has no runtime image"
        image = ImageStore(load_settings().image_cache_dir).ensure(spec.image)
    runtime = args.runtime or "python3.11"
    print(f"runtime: {runtime} ({'image ' + image.name if image else 'the host'})")
    cases = [Case(f"{name}{'-snapstart' if snap else ''}", code, backend, logs, root / "scratch",
                  snap, runtime, image)
             for name, code in (("hello", hello), ("boto3", boto3)) for snap in (False, True)]
    try:
        for case in cases:
            await case.prepare()
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"cold start: a new environment until its first answer ({args.runs} runs each)")
        for _ in range(args.runs):
            for case in cases:
                env = await case.cold_start()
                await env.shutdown()
        for case in cases:
            ms = [c * 1000 for c in case.cold]
            ready = statistics.median(case.ready) * 1000
            print(f"  {case.name:18} p50 {statistics.median(ms):7.1f} ms   p99 {percentile(ms, 0.99):7.1f} ms"
                  f"   (ready after {ready:.1f} ms at p50)")

        print(f"burst: {args.burst} environments at once, until all are ready")
        for case in (cases[0], cases[1]):
            started = time.perf_counter()
            envs = await asyncio.gather(*(case.start() for _ in range(args.burst)))
            elapsed = time.perf_counter() - started
            print(f"  {case.name:18} {elapsed * 1000:7.0f} ms")
            await asyncio.gather(*(env.shutdown() for env in envs))

        print(f"PSS per warm environment ({args.warm} warm, each after one invocation)")
        for case in cases:
            envs = [await case.cold_start() for _ in range(args.warm)]
            per_env = pss_kb([pid for env in envs for pid in environment_pids(env)]) / len(envs)
            line = f"  {case.name:18} {per_env / 1024:7.1f} MB"
            if case.template is not None:
                line += f"   (template: {pss_kb(environment_pids(case.template)) / 1024:.1f} MB)"
            print(line)
            await asyncio.gather(*(env.shutdown() for env in envs))
    finally:
        for case in cases:
            if case.template is not None and case.zygote is not None:
                await case.zygote.destroy()
                await case.template.shutdown()
        await backend.close()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({case.name: round(statistics.median(case.cold) * 1000, 2) for case in cases}))


if __name__ == "__main__":
    asyncio.run(main())
