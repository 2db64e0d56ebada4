"""Runtime images: build time and size per image, and what starting an interpreter
inside one costs next to the host's.

    .venv/bin/python bench/runtimes.py                 # the images in the user's cache
    .venv/bin/python bench/runtimes.py --cold DIR      # build every image into DIR (minutes)
    .venv/bin/python bench/runtimes.py --starts 30     # interpreter starts, image vs host

Without --cold the figures are those each image recorded when it was built
(image.json). A build's time is mostly downloading and unpacking Debian's packages,
so it depends on the mirror's speed; sizes are the unpacked trees.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lamina.config import load_settings
from lamina.images import ImageStore, RuntimeImage
from lamina.images.recipes import RECIPES

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


def function_cold_starts() -> None:
    """Cold start of the same function through a Lamina server, image mode against
    host mode (Init Duration from REPORT lines). Needs execution environments that
    mount runtime images (LAMINA_RUNTIME_SOURCE=image); until the sandbox does, the
    interpreter starts above are the comparable part."""
    raise SystemExit("function cold starts need a sandbox that mounts runtime images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=Path, help="build every image into this (empty) cache dir")
    parser.add_argument("--starts", type=int, default=20, help="interpreter starts per image (0: none)")
    parser.add_argument("--functions", action="store_true", help="function cold starts, image vs host")
    args = parser.parse_args()
    if args.functions:
        function_cold_starts()
    store = ImageStore(args.cold) if args.cold else ImageStore.from_settings(load_settings())
    print(f"image cache: {store.cache_dir}  (Python {sys.version.split()[0]} runs this)")
    images = build_table(store, build=args.cold is not None)
    if args.starts:
        interpreter_starts(images, args.starts)


if __name__ == "__main__":
    main()
