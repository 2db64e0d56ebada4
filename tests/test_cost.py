"""`lamina cost`: requests, GB-seconds and cost per function and per day, read from
the server's metrics, against a hand computation from the invocations' REPORT lines."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ROLE, make_zip

HANDLER = make_zip({"app.py": (
    "import time\n"
    "def handler(event, context):\n"
    "    time.sleep(event.get('sleep', 0))\n"
    "    return 'done'\n"
)})
# Prices of our own (LAMINA_PRICE_*), large enough that every digit shows.
PRICE_GB_SECOND = 0.001
PRICE_REQUEST = 0.01


def billed(log_result: str) -> tuple[int, int]:
    """(Billed Duration in ms, Memory Size in MB) from an invocation's REPORT line."""
    tail = base64.b64decode(log_result).decode()
    found = re.search(r"Billed Duration: (\d+) ms\s+Memory Size: (\d+) MB", tail)
    assert found, tail
    return int(found.group(1)), int(found.group(2))


def lamina_cost(server, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "lamina.cli.main", "cost", "--endpoint",
                          server.endpoint, *args],
                         env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def priced(start_server):
    """A server with its own prices and two functions invoked a known number of times;
    the expected figures computed by hand from each REPORT line."""
    server = start_server({"LAMINA_PRICE_GB_SECOND_X86_64": str(PRICE_GB_SECOND),
                           "LAMINA_PRICE_PER_REQUEST": str(PRICE_REQUEST)}, name="cost")
    lam = server.client()
    expected: dict[str, dict[str, float]] = {}
    for name, memory, sleeps in (("cost-small", 128, [0, 0, 0.05]), ("cost-large", 1024, [0.2, 0])):
        lam.create_function(FunctionName=name, Runtime="python3.13", Role=ROLE, MemorySize=memory,
                            Handler="app.handler", Code={"ZipFile": HANDLER})
        lam.get_waiter("function_active_v2").wait(FunctionName=name)
        figures = expected[name] = {"Requests": 0, "GBSeconds": 0.0, "CostUSD": 0.0}
        for sleep in sleeps:
            answer = lam.invoke(FunctionName=name, LogType="Tail",
                                Payload=json.dumps({"sleep": sleep}).encode())
            billed_ms, memory_mb = billed(answer["LogResult"])
            assert memory_mb == memory
            gb_seconds = billed_ms / 1000 * memory_mb / 1024
            figures["Requests"] += 1
            figures["GBSeconds"] += gb_seconds
            figures["CostUSD"] += gb_seconds * PRICE_GB_SECOND + PRICE_REQUEST
    return server, expected


def test_cost_by_function_matches_the_hand_computation(priced):
    server, expected = priced
    rows = json.loads(lamina_cost(server, "--json", "--since", "1h"))
    found = {row["FunctionName"]: row for row in rows}
    assert set(found) == set(expected)
    for name, figures in expected.items():
        assert found[name]["Architecture"] == "x86_64"
        assert found[name]["Requests"] == figures["Requests"]
        assert found[name]["GBSeconds"] == pytest.approx(figures["GBSeconds"], rel=1e-9)
        assert found[name]["CostUSD"] == pytest.approx(figures["CostUSD"], rel=1e-9)


def test_cost_by_day_adds_up_every_function(priced):
    server, expected = priced
    rows = json.loads(lamina_cost(server, "--json", "--by", "day", "--since", "2d"))
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    assert rows and rows[-1]["Day"] <= today
    assert sum(r["Requests"] for r in rows) == sum(f["Requests"] for f in expected.values())
    assert sum(r["CostUSD"] for r in rows) == pytest.approx(
        sum(f["CostUSD"] for f in expected.values()), rel=1e-9)


def test_cost_table_shows_each_function_and_the_total(priced):
    server, expected = priced
    table = lamina_cost(server, "--since", "1h")
    total = sum(f["CostUSD"] for f in expected.values())
    for name, figures in expected.items():
        line = next(line for line in table.splitlines() if name in line)
        # Summed in another order, a cost on a rounding edge may differ in the last digit.
        cost = float(line.replace("│", " ").split()[-1].replace(",", ""))
        assert abs(cost - figures["CostUSD"]) < 2e-8, line
        assert f" {figures['Requests']:,.0f} " in line
    # The total of stored figures may differ from the sum of rounded ones in the last digit.
    shown_total = next(line for line in table.splitlines() if "Total" in line).split()[-2]
    assert abs(float(shown_total.replace(",", "")) - total) < 2e-8


def test_cost_refuses_a_since_it_cannot_read(priced):
    server, _ = priced
    out = subprocess.run([sys.executable, "-m", "lamina.cli.main", "cost", "--endpoint",
                          server.endpoint, "--since", "last tuesday"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--since" in out.stderr
