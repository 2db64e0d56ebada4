"""What external extensions cost: cold and warm invocations with 0, 1 and 3 of them.

Run: .venv/bin/python bench/extensions.py [--sandbox process|namespaces] [--quick]

Each extension is a plain bash extension from a layer (registers for INVOKE and
SHUTDOWN, then loops on event/next), the cheapest kind there is, so the figures
are Lamina's own overhead: the launcher, registration, the INIT gate, the INVOKE
events and the post-runtime wait, and the SHUTDOWN phase. Printed, in one run for
the same python3.13 function: cold start to first result, Init Duration, warm
invocation latency (p50/p95, in process: no HTTP) to the response and to the end
of the extensions' post-invoke work (what REPORT's Duration covers, and when the
environment takes the next invocation), and the time SHUTDOWN takes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from lamina.environments.environment import Invocation
from lamina.invoke.specs import environment_spec
from lamina.platform import Platform

sys.path.insert(0, str(Path(__file__).parent))
from invoke import ROLE, percentile, running_platform  # noqa: E402

HANDLER = "def handler(event, context):\n    return 'ok'\n"
EXTENSION = r"""#!/bin/bash
api=$AWS_LAMBDA_RUNTIME_API
request() {
    exec 3<>"/dev/tcp/${api%:*}/${api##*:}"
    printf '%s %s HTTP/1.1\r\nHost: x\r\n%s\r\nContent-Length: %d\r\n\r\n%s' \
        "$1" "$2" "$3" "${#4}" "$4" >&3
    length=0
    while IFS= read -r line <&3; do
        line=${line%$'\r'}
        [ -z "$line" ] && break
        case "${line,,}" in
            lambda-extension-identifier:*) id=${line#*: } ;;
            content-length:*) length=${line#*: } ;;
        esac
    done
    body=""
    if [ "$length" -gt 0 ]; then read -r -N "$length" body <&3; fi
    exec 3<&-
}
request POST /2020-01-01/extension/register "Lambda-Extension-Name: ${0##*/}" \
    '{"events": ["INVOKE", "SHUTDOWN"]}'
while :; do
    request GET /2020-01-01/extension/event/next "Lambda-Extension-Identifier: $id" ""
    case "$body" in *SHUTDOWN*) exit 0 ;; esac
done
"""


def zipped(files: dict[str, str], mode: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            archive.writestr(info, content)
    return buffer.getvalue()


async def cold_and_warm(platform: Platform, name: str, round_: int, warm_n: int,
                        found: dict[str, list[float]]) -> None:
    """One cold start of `name` (then `warm_n` warm invocations on it), and its SHUTDOWN."""
    fv = environment_spec(platform.functions.get_version(name))
    pool = platform.environments
    started = time.perf_counter()
    env = await pool.start_environment(fv)
    outcome = await env.invoke(Invocation(f"{name}-{round_}", b"{}", "arn", "Root=1-0-0"))
    found["cold"].append((time.perf_counter() - started) * 1000)
    assert outcome.function_error is None, outcome.payload
    found["init"].append(env.init_duration_ms or 0.0)
    await env.settled()
    for i in range(warm_n):
        started = time.perf_counter()
        outcome = await env.invoke(Invocation(f"{name}-{round_}-{i}", b"{}", "arn", "Root=1-0-0"))
        found["warm"].append((time.perf_counter() - started) * 1000)
        assert outcome.function_error is None, outcome.payload
        # The extensions' post-invoke work: after the response, before the next one.
        await env.settled()
        found["complete"].append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    await pool.stop_environment(env)
    found["shutdown"].append((time.perf_counter() - started) * 1000)


async def run(data_dir: Path, sandbox: str | None, cold_n: int, warm_n: int) -> None:
    results: dict[int, dict[str, list[float]]] = {}
    async with running_platform(data_dir, sandbox) as platform:
        names = {}
        for count in (0, 1, 3):
            layers = []
            if count:
                files = {f"extensions/ext-{i}": EXTENSION for i in range(count)}
                layer = await platform.layers.publish(f"bench-ext-{count}", zipped(files, 0o755))
                layers.append(platform.region.layer_arn(layer.layer_name, layer.version))
            names[count] = f"with-{count}-extensions"
            await platform.functions.create_function(
                names[count], zipped({"app.py": HANDLER}, 0o644),
                {"role": ROLE, "runtime": "python3.13", "handler": "app.handler",
                 "memory_size": 1769, "layers": layers}, {})
            # The runtime image and the code tree are made once, outside the figures.
            await cold_and_warm(platform, names[count], -1, 0,
                                {"cold": [], "init": [], "warm": [], "complete": [], "shutdown": []})
            results[count] = {"cold": [], "init": [], "warm": [], "complete": [], "shutdown": []}
        # Round-robin, so that a busy moment of the machine hits every configuration.
        for round_ in range(cold_n):
            for count, name in names.items():
                await cold_and_warm(platform, name, round_, warm_n // cold_n, results[count])
        backend = platform.sandbox.name

    print(f"sandbox backend: {backend}; python3.13 at 1,769 MB; bash extensions from a layer")
    print(f"{cold_n} cold starts, {warm_n} warm invocations per configuration")
    print()
    header = f"{'(ms)':<34}" + "".join(f"{f'{n} extensions':>16}" for n in results)
    print(header)
    rows = [("cold start to result, p50", "cold", 50), ("cold start to result, p95", "cold", 95),
            ("Init Duration, p50", "init", 50),
            ("warm invocation to response, p50", "warm", 50),
            ("warm invocation to response, p95", "warm", 95),
            ("warm invocation complete, p50", "complete", 50),
            ("warm invocation complete, p95", "complete", 95),
            ("SHUTDOWN (stop environment), p50", "shutdown", 50)]
    for label, key, p in rows:
        print(f"{label:<34}" + "".join(f"{percentile(results[n][key], p):>16.2f}" for n in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandbox", choices=("process", "namespaces"))
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    cold_n, warm_n = (5, 50) if args.quick else (20, 500)
    with tempfile.TemporaryDirectory(prefix="lamina-bench-ext-") as tmp:
        data_dir = Path(tmp) / "data"
        Path(tmp).chmod(0o755)
        asyncio.run(run(data_dir, args.sandbox, cold_n, warm_n))


if __name__ == "__main__":
    main()
