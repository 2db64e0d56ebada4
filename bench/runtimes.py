"""Runtime images: build time and size per image, what starting an interpreter
inside one costs next to the host's, and a function's cold start and warm invoke on
its image against the same function on the host's interpreter (LAMINA_RUNTIME_SOURCE=host).

    .venv/bin/python bench/runtimes.py                 # the images in the user's cache
    .venv/bin/python bench/runtimes.py --cold DIR      # build every image into DIR (minutes)
    .venv/bin/python bench/runtimes.py --starts 30     # interpreter starts, image vs host
    .venv/bin/python bench/runtimes.py --runs 30       # function cold starts, image vs host

Without --cold the figures are those each image recorded when it was built
(image.json). A build's time is mostly downloading and unpacking Debian's packages,
so it depends on the mirror's speed; sizes are the unpacked trees. The function
figures alternate image and host run by run, so load from elsewhere hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from lamina.config import load_settings
from lamina.environments.environment import Invocation
from lamina.environments.pool import EnvironmentPool
from lamina.images import ImageStore, RuntimeImage
from lamina.images.recipes import RECIPES
from lamina.invoke.specs import environment_spec
from lamina.runtimes.catalog import runtime_spec
from lamina.sandbox.namespaces import probe

sys.path.insert(0, str(Path(__file__).parent))
from invoke import MEMORY_MB, ROLE, cold_start, percentile, running_platform  # noqa: E402

# A command that starts the image's language and exits: the interpreter's own part of
# a cold start.
START = {
    "python3.11": ["/usr/bin/python3.11", "-S", "-c", "pass"],
    "python3.13": ["/usr/bin/python3.13", "-S", "-c", "pass"],
    "python3.14": ["/usr/bin/python3.14", "-S", "-c", "pass"],
    "nodejs20": ["/usr/bin/node", "-e", "0"],
    "nodejs24": ["/usr/bin/node", "-e", "0"],
    "provided": ["/bin/sh", "-c", ":"],
}


def build_table(store: ImageStore, build: bool) -> list[RuntimeImage]:
    images = []
    print(f"{'image':12} {'source':32} {'size':>8} {'build':>8}  versions")
    for name in RECIPES:
        started = time.monotonic()
        image = store.ensure(name) if build else store.installed(name)
        if image is None:
            print(f"{name:12} (not installed: lamina runtimes install, or --cold DIR)")
            continue
        took = time.monotonic() - started if build else image.build_seconds
        versions = ", ".join(f"{k} {v}" for k, v in sorted(image.versions.items()))
        print(f"{name:12} {image.source:32} {image.size / 1e6:6.0f} MB {took:6.1f} s  {versions}")
        images.append(image)
    hit = time.monotonic()
    for image in images:
        store.ensure(image.name)
    if images:
        print(f"cached ensure(): {(time.monotonic() - hit) / len(images) * 1000:.2f} ms per image")
    return images


def _timed(argv: list[str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def interpreter_starts(images: list[RuntimeImage], runs: int) -> None:
    """bubblewrap with the image as a read-only / (as the sandbox mounts it) starting
    the image's interpreter, next to bubblewrap starting the host's over the host's /usr."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        print("interpreter starts: bubblewrap is not installed")
        return
    print(f"\ninterpreter start in bubblewrap, {runs} runs: p50 / p90 ms")
    for image in images:
        inside = [bwrap, "--ro-bind", str(image.root), "/", "--proc", "/proc", "--dev", "/dev",
                  "--tmpfs", "/tmp", "--unshare-all", "--uid", "993", "--gid", "990", "--clearenv",
                  *START[image.name]]
        samples = sorted(_timed(inside, runs))
        line = f"  {image.name:12} image {statistics.median(samples):6.1f} / {samples[int(len(samples) * 0.9) - 1]:6.1f}"
        # The host's Debian interpreter of the same name, if it has one (under /usr).
        host_exe = Path("/usr/bin") / Path(START[image.name][0]).name
        if host_exe.exists():
            host = [bwrap, "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
                    "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin", "--proc", "/proc",
                    "--dev", "/dev", "--tmpfs", "/tmp", "--unshare-all", "--uid", "993", "--gid", "990", "--clearenv",
                    str(host_exe), *START[image.name][1:]]
            samples = sorted(_timed(host, runs))
            line += f"   host {statistics.median(samples):6.1f} / {samples[int(len(samples) * 0.9) - 1]:6.1f}"
        print(line)


# Hello-world functions: what each reports shows which interpreter ran it.
HELLO = {
    "python3.11": ("app.py", "app.handler",
                   "import sys\ndef handler(event, context):\n    return sys.version.split()[0]\n"),
    # Node.js also says whether it was built with its start-up snapshot and code cache
    # (Debian's trixie build of Node.js 20 has neither, so it compiles its own
    # bootstrap code on every start; its Node.js 24 and the official builds have both).
    "nodejs20.x": ("index.mjs", "index.handler",
                   "const v = process.config.variables;\n"
                   "export const handler = async () => `${process.version} snapshot ${v.node_use_node_snapshot}"
                   " code-cache ${v.node_use_node_code_cache}`;\n"),
}


def _zipped(name: str, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(name)
        # rw-r--r--: the sandbox user is not the file's owner (a bare name would get 0600).
        info.external_attr = 0o100644 << 16
        archive.writestr(info, text)
    return buffer.getvalue()


async def _compare(data_dir: Path, identifiers: list[str], runs: int,
                   warm_n: int) -> dict[tuple[str, str], dict[str, Any]]:
    """Cold starts and warm invokes per (identifier, mode), modes interleaved run by run.

    One platform (one sandbox backend, one code store); a second environment pool on
    the same backend runs the same function versions on the host's interpreters, so
    the only difference between the two is what is mounted as / and which binary
    starts."""
    async with running_platform(data_dir, "namespaces") as platform:
        image_pool = platform.environments
        host_pool = EnvironmentPool(
            platform.sandbox, platform.blobs, platform.logs,
            dataclasses.replace(image_pool.settings, runtime_source="host"),
            image_pool.images, image_pool.credentials)
        pools = {"image": image_pool, "host": host_pool}
        results: dict[tuple[str, str], dict[str, Any]] = {}
        for identifier in identifiers:
            filename, handler, text = HELLO[identifier]
            name = "hello-" + identifier.replace(".", "-")
            await platform.functions.create_function(
                name, _zipped(filename, text),
                {"role": ROLE, "runtime": identifier, "handler": handler, "memory_size": MEMORY_MB}, {})
            fv = platform.functions.get_version(name)
            for mode, pool in pools.items():
                runtime = runtime_spec(identifier, source=mode)
                image = pool.images.installed(runtime.image) if pool.images and runtime.image else None
                # One cold start outside the figures: images resolved, page cache warm.
                _, outcome, _ = await cold_start(pool, fv, f"{mode}-first")
                assert outcome.status == "success", outcome
                results[identifier, mode] = {
                    "cold": [], "init": [], "warm": [],
                    "runs on": f"{runtime.interpreter}" + (f" ({image.name} image)" if image else ""),
                    "reports": json.loads(outcome.payload),
                }
            for i in range(runs):
                # Alternate which mode goes first, so neither always follows the other.
                for mode in (("image", "host") if i % 2 == 0 else ("host", "image")):
                    elapsed, outcome, init_ms = await cold_start(pools[mode], fv, f"{mode}-{i}")
                    assert outcome.status == "success", outcome
                    results[identifier, mode]["cold"].append(elapsed)
                    results[identifier, mode]["init"].append(init_ms)
            warm_envs = {mode: await pool.start_environment(environment_spec(fv)) for mode, pool in pools.items()}
            try:
                for i in range(warm_n):
                    for mode in (("image", "host") if i % 2 == 0 else ("host", "image")):
                        started = time.perf_counter()
                        outcome = await warm_envs[mode].invoke(
                            Invocation(f"warm-{mode}-{i}", b"{}", "arn", "Root=1-0-0"))
                        results[identifier, mode]["warm"].append((time.perf_counter() - started) * 1000)
                        assert outcome.status == "success", outcome
            finally:
                for mode, env in warm_envs.items():
                    await pools[mode].stop_environment(env)
        return results


def function_cold_starts(runs: int, warm_n: int) -> None:
    """Cold start (new environment to first result) and warm invoke of a hello-world
    function on its runtime image against the same on the host's interpreter, through
    Lamina's environment pool with the namespaces sandbox."""
    reason = probe()
    if reason is not None:
        print(f"function cold starts: the namespaces sandbox is not available here ({reason})")
        return
    identifiers = ["python3.11"]
    host_node = Path("/usr/bin/node")
    if host_node.exists() and subprocess.run([str(host_node), "--version"], capture_output=True,
                                             text=True).stdout.startswith("v20."):
        identifiers.append("nodejs20.x")
    with tempfile.TemporaryDirectory(prefix="lamina-bench-runtimes.") as tmp:
        # Sandbox users (other uids) reach the function's code under it.
        Path(tmp).chmod(0o755)
        results = asyncio.run(_compare(Path(tmp) / "data", identifiers, runs, warm_n))
    print(f"\nfunction cold starts, {runs} per mode interleaved; warm invokes, {warm_n} per mode (ms)")
    print(f"  {'runtime':11} {'mode':6} {'cold p50':>9} {'cold p99':>9} {'init p50':>9} {'warm p50':>9}"
          "  runs on (reports)")
    for (identifier, mode), figures in results.items():
        print(f"  {identifier:11} {mode:6} {statistics.median(figures['cold']):9.1f} "
              f"{percentile(figures['cold'], 99):9.1f} {statistics.median(figures['init']):9.1f} "
              f"{statistics.median(figures['warm']):9.2f}  {figures['runs on']} ({figures['reports']})")
    for identifier in identifiers:
        ratio = (statistics.median(results[identifier, "image"]["cold"])
                 / statistics.median(results[identifier, "host"]["cold"]))
        print(f"{identifier}: cold start on image / host: {ratio:.2f} (goal <= 1.10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=Path, help="build every image into this (empty) cache dir")
    parser.add_argument("--starts", type=int, default=20, help="interpreter starts per image (0: none)")
    parser.add_argument("--runs", type=int, default=30,
                        help="function cold starts per runtime and mode, image vs host (0: none)")
    parser.add_argument("--warm", type=int, default=200, help="warm invokes per runtime and mode")
    args = parser.parse_args()
    store = ImageStore(args.cold) if args.cold else ImageStore.from_settings(load_settings())
    print(f"image cache: {store.cache_dir}  (Python {sys.version.split()[0]} runs this)")
    images = build_table(store, build=args.cold is not None)
    if args.starts:
        interpreter_starts(images, args.starts)
    if args.runs:
        function_cold_starts(args.runs, max(args.warm, 1))


if __name__ == "__main__":
    main()
