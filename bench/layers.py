"""Cold start cost of layers: a function with 5 layers against the same with none.

Run: .venv/bin/python bench/layers.py [--sandbox process|namespaces] [--quick]

Each layer is a realistic Python package tree (a few hundred small files). The
first cold start of a layer combination merges the layers into one shared /opt
tree; every later cold start, in any environment, reuses it. Printed: the first
(uncached) cold start, then p50/p95 of cold starts with the tree cached, beside
the same figures for the function without layers, all in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import zipfile
from pathlib import Path

from lamina.platform import Platform

sys.path.insert(0, str(Path(__file__).parent))
from invoke import ROLE, cold_start, percentile, running_platform  # noqa: E402

HANDLER = (
    "import layer0, layer4\n"
    "def handler(event, context):\n"
    "    return [layer0.NAME, layer4.NAME]\n"
)
PLAIN_HANDLER = "def handler(event, context):\n    return 'plain'\n"


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100644 << 16  # readable by others, as Lambda requires
            archive.writestr(info, content)
    return buffer.getvalue()


def layer_zip(index: int, files: int) -> bytes:
    tree = {f"python/layer{index}/__init__.py": f"NAME = 'layer{index}'\n"}
    for n in range(files):
        tree[f"python/layer{index}/module_{n}.py"] = f"VALUE = {n}\n" + "# padding\n" * 20
    return zipped(tree)


async def cold_starts(platform: Platform, name: str, count: int) -> tuple[float, list[float]]:
    fv = platform.functions.get_version(name)
    timings: list[float] = []
    for i in range(count):
        elapsed, outcome, _ = await cold_start(platform.environments, fv, f"{name}-{i}")
        assert outcome.function_error is None, outcome.payload
        timings.append(elapsed)
    return timings[0], timings[1:]


async def run(data_dir: Path, sandbox: str | None, count: int, files: int) -> None:
    async with running_platform(data_dir, sandbox) as platform:
        arns = []
        for index in range(5):
            layer = await platform.layers.publish(f"bench-layer-{index}", layer_zip(index, files))
            arns.append(platform.region.layer_arn(layer.layer_name, layer.version))
        base = {"role": ROLE, "runtime": "python3.11", "handler": "app.handler"}
        await platform.functions.create_function("plain", zipped({"app.py": PLAIN_HANDLER}), base, {})
        await platform.functions.create_function(
            "layered", zipped({"app.py": HANDLER}), {**base, "layers": arns}, {}
        )
        plain_first, plain = await cold_starts(platform, "plain", count)
        layered_first, layered = await cold_starts(platform, "layered", count)

    print(f"sandbox backend: {platform.sandbox.name}; 5 layers x {files + 1} files each")
    print()
    print(f"{'cold start to first result (ms)':<40}{'no layers':>12}{'5 layers':>12}{'added':>10}")
    rows = [
        ("first (layers merged now)", plain_first, layered_first),
        ("p50, merged /opt reused", statistics.median(plain), statistics.median(layered)),
        ("p95, merged /opt reused", percentile(plain, 95), percentile(layered, 95)),
    ]
    for label, without, with_layers in rows:
        print(f"{label:<40}{without:>12.2f}{with_layers:>12.2f}{with_layers - without:>+10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sandbox", default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # sandbox users (unprivileged uids) reach the data dir
        asyncio.run(run(Path(tmp), args.sandbox, 8 if args.quick else 30, 200))


if __name__ == "__main__":
    main()
