"""Container images (PackageType Image): pull and unpack time, and cold starts from an
image against the same handler as a .zip, in one run.

    .venv/bin/python bench/container_images.py                   # 100 MB and 1 GB images
    .venv/bin/python bench/container_images.py --sizes 100,300    # sizes in MB
    .venv/bin/python bench/container_images.py --runs 20          # cold starts per kind

Everything runs on loopback: Debian's docker-registry in a temporary directory, images
built with umoci and pushed with skopeo. A size's image is one layer of random files
(incompressible, so the registry transfer and gzip are at their worst), of that size.
Per size it reports:

- first: a pull into an empty cache (skopeo copy, unpack, merge, finish);
- cached: the same ImageUri again (the image is in the cache: a lookup);
- shared layer: a new image whose big layer is already unpacked (only the small new
  layer is fetched and unpacked, the big one is linked).

The cold starts alternate image and .zip run by run (python3.13 in both: the image is
Lamina's python3.13 runtime image plus the handler and Lamina's runtime client), so
load from elsewhere hits both alike. Needs root (the namespaces sandbox) and the
python3.13 runtime image in the image cache.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from lamina.config import load_settings
from lamina.control.models import FunctionState
from lamina.images import ImageStore
from lamina.images.containers import ContainerImages
from lamina.images.recipes import RECIPES
from lamina.platform import Platform
from lamina.sandbox.namespaces import probe

sys.path.insert(0, str(Path(__file__).parent))
from invoke import HANDLER, MEMORY_MB, ROLE, cold_start, percentile  # noqa: E402

CLIENT = Path(__file__).parents[1] / "src/lamina/runtimes/clients/python/bootstrap.py"
FILE_MB = 25


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: {done.stderr}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    (base / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {base / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    process = subprocess.Popen(["docker-registry", "serve", str(base / "config.yml")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("docker-registry did not start")
            time.sleep(0.05)


def add_layer(layout: Path, parent: str, tag: str, tar: Path) -> None:
    run("umoci", "raw", "add-layer", "--image", f"{layout}:{parent}", "--tag", tag, str(tar))
    tar.unlink()


def random_layer(path: Path, megabytes: int, work: Path) -> Path:
    """A tar of random files totalling `megabytes` (written in bounded chunks)."""
    tree = work / "random"
    tree.mkdir()
    left = megabytes
    index = 0
    while left > 0:
        size = min(FILE_MB, left)
        with open(tree / f"blob{index:04d}", "wb") as out:
            for _ in range(size):
                out.write(os.urandom(1024 * 1024))
        left -= size
        index += 1
    run("tar", "-C", str(tree), "-cf", str(path), ".")
    shutil.rmtree(tree)
    return path


def file_layer(path: Path, files: dict[str, tuple[bytes, int]]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return path


def push(layout: Path, tag: str, uri: str) -> str:
    run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{tag}", f"docker://{uri}")
    raw = run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{uri}")
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def pull_figures(layout: Path, registry: str, sizes: list[int], work: Path, cache: Path) -> None:
    print(f"{'image':>8} {'first pull':>11} {'cached':>8} {'shared layer':>13}   (unpacked size)")
    for megabytes in sizes:
        tar = random_layer(work / "random.tar", megabytes, work)
        add_layer(layout, "empty", f"random{megabytes}", tar)
        add_layer(layout, f"random{megabytes}", f"random{megabytes}-b",
                  file_layer(work / "small.tar", {"extra.txt": (os.urandom(1024), 0o644)}))
        uri = f"{registry}/bench/random:{megabytes}"
        digest = push(layout, f"random{megabytes}", uri)
        digest_b = push(layout, f"random{megabytes}-b", f"{registry}/bench/random:{megabytes}-b")
        store = ContainerImages(cache, max_bytes=20 * 1024 ** 3)
        pinned = f"{registry}/bench/random@{digest}"
        started = time.perf_counter()
        image = store.ensure(pinned)
        first = time.perf_counter() - started
        started = time.perf_counter()
        store.ensure(pinned)
        cached = time.perf_counter() - started
        started = time.perf_counter()
        store.ensure(f"{registry}/bench/random@{digest_b}")
        shared = time.perf_counter() - started
        print(f"{megabytes:>5} MB {first:>10.2f}s {cached * 1000:>6.1f}ms {shared:>12.2f}s   "
              f"({image.size / 1e6:,.0f} MB)", flush=True)


async def cold_starts(layout: Path, registry: str, cache: Path, data_dir: Path, runs: int) -> None:
    entrypoint = b'#!/bin/sh\nexport _HANDLER="$1"\nexec /usr/bin/python3.13 -u /var/runtime/python/bootstrap.py /opt\n'
    add_layer(layout, "base", "app", file_layer(data_dir.parent / "app.tar", {
        "lambda-entrypoint.sh": (entrypoint, 0o755),
        "var/runtime/python/bootstrap.py": (CLIENT.read_bytes(), 0o644),
        "var/task/app.py": (HANDLER.encode(), 0o644),
    }))
    run("umoci", "config", "--image", f"{layout}:app", "--config.entrypoint=/lambda-entrypoint.sh",
        "--config.cmd=app.handler", "--config.workingdir=/var/task")
    uri = f"{registry}/bench/python-app:latest"
    push(layout, "app", uri)

    settings = load_settings(data_dir=data_dir).replace(sandbox="namespaces", image_cache_dir=cache,
                                                       runtime_source="image")
    platform = Platform(settings)
    await platform.start()
    try:
        functions = platform.functions
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            info = zipfile.ZipInfo("app.py")
            info.external_attr = 0o100644 << 16
            archive.writestr(info, HANDLER)
        await functions.create_function("zip", buffer.getvalue(), {
            "role": ROLE, "runtime": "python3.13", "handler": "app.handler", "memory_size": MEMORY_MB}, {})
        started = time.perf_counter()
        await functions.create_function("image", None, {
            "role": ROLE, "package_type": "Image", "memory_size": MEMORY_MB}, {}, image_uri=uri)
        while functions.get_version("image").state == FunctionState.PENDING:
            await asyncio.sleep(0.05)
        print(f"\nImage function Pending -> {functions.get_version('image').state} in "
              f"{time.perf_counter() - started:.2f} s (pull of the python3.13 image plus the app layer)")
        results: dict[str, list[float]] = {"image": [], "zip": []}
        inits: dict[str, list[float]] = {"image": [], "zip": []}
        for index in range(runs + 1):
            for kind in ("image", "zip"):
                elapsed, outcome, init = await cold_start(
                    platform.environments, functions.get_version(kind), f"r{index}")
                assert outcome.function_error is None, outcome.payload
                if index:  # the first round warms the page cache for both
                    results[kind].append(elapsed)
                    inits[kind].append(init)
        print(f"\nCold start, {runs} runs each ({MEMORY_MB} MB, python3.13, namespaces sandbox):")
        print(f"{'kind':>6} {'p50':>9} {'p90':>9} {'mean':>9} {'init p50':>9}")
        for kind in ("image", "zip"):
            values = results[kind]
            print(f"{kind:>6} {percentile(values, 50):>7.1f}ms {percentile(values, 90):>7.1f}ms "
                  f"{statistics.mean(values):>7.1f}ms {percentile(inits[kind], 50):>7.1f}ms")
    finally:
        await platform.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1024", help="image sizes in MB, comma-separated")
    parser.add_argument("--runs", type=int, default=20, help="cold starts per kind")
    args = parser.parse_args()
    if os.geteuid() != 0 or probe() is not None:
        raise SystemExit("needs root and the namespaces sandbox")
    for tool in ("docker-registry", "skopeo", "umoci"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool}")
    runtime = ImageStore(load_settings().image_cache_dir).installed("python3.13")
    if runtime is None:
        raise SystemExit("needs the python3.13 runtime image: lamina runtimes install python3.13")
    # Under /var/tmp and open to others: sandbox users must reach the images.
    work = Path(tempfile.mkdtemp(prefix="lamina-bench-images.", dir="/var/tmp"))
    work.chmod(0o755)
    registry_process = None
    try:
        registry_process, registry = start_registry(work)
        cache = work / "cache"
        cache.mkdir(mode=0o755)
        # The python3.13 runtime image of the shared cache, seen from this one (for the .zip).
        digest_hex = RECIPES["python3.13"].digest().split(":")[-1]
        (cache / digest_hex).symlink_to(runtime.root.parent)
        layout = work / "layout"
        run("umoci", "init", "--layout", str(layout))
        run("umoci", "new", "--image", f"{layout}:empty")
        pull_figures(layout, registry, [int(size) for size in args.sizes.split(",")], work, cache)
        base_tar = work / "base.tar"
        run("tar", "-C", str(runtime.root), "-cf", str(base_tar), ".")
        add_layer(layout, "empty", "base", base_tar)
        data_dir = work / "data"
        asyncio.run(cold_starts(layout, registry, cache, data_dir, args.runs))
    finally:
        if registry_process is not None:
            registry_process.terminate()
            registry_process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
