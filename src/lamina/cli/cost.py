"""`lamina cost`: what functions cost, from the server's metrics (namespace
Lamina/Cost: Requests, GBSeconds and Cost by FunctionName and Architecture), read
through the CloudWatch API like any other client would."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from lamina.cli.client import lambda_client

COST_NAMESPACE = "Lamina/Cost"
FIGURES = ("Requests", "GBSeconds", "Cost")
DAY = 86400
# GetMetricData takes at most 500 queries: three per function and architecture.
METRICS_PER_CALL = 500 // len(FIGURES)

console = Console()


def parse_since(text: str, now: datetime.datetime) -> datetime.datetime:
    """`7d`, `12h`, `30m` before now, or an ISO 8601 date or time (UTC unless it says)."""
    found = re.fullmatch(r"(\d+)\s*([dhm])", text.strip())
    if found:
        amount, unit = int(found.group(1)), found.group(2)
        seconds = {"d": DAY, "h": 3600, "m": 60}[unit] * amount
        return now - datetime.timedelta(seconds=seconds)
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"expected e.g. 7d, 12h, 30m or 2026-11-01, got {text!r}",
                                 param_hint="--since") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def cost_rows(client: Any, since: datetime.datetime, until: datetime.datetime,
              by: str) -> list[tuple[str, str, float, float, float]]:
    """(function or day, architecture or "", requests, GB-seconds, cost) rows."""
    metrics = [m for page in client.get_paginator("list_metrics").paginate(
        Namespace=COST_NAMESPACE, MetricName="Cost") for m in page["Metrics"]]
    start = since.replace(second=0, microsecond=0)
    if by == "day":
        start = start.replace(hour=0, minute=0)
    # By function: one period covering the whole range (a multiple of a day, so
    # at most two datapoints, summed); by day: one datapoint per UTC day.
    span = int((until - start).total_seconds())
    period = DAY if by == "day" else max(DAY, -(-span // DAY) * DAY)
    totals: dict[tuple[str, str], list[float]] = {}
    for first in range(0, len(metrics), METRICS_PER_CALL):
        batch = metrics[first:first + METRICS_PER_CALL]
        queries = [{"Id": f"m{i}_{j}", "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": COST_NAMESPACE, "MetricName": figure,
                       "Dimensions": metric["Dimensions"]},
            "Period": period, "Stat": "Sum"}}
            for i, metric in enumerate(batch) for j, figure in enumerate(FIGURES)]
        pages = client.get_paginator("get_metric_data").paginate(
            MetricDataQueries=queries, StartTime=start, EndTime=until)
        for page in pages:
            for result in page["MetricDataResults"]:
                i, j = (int(n) for n in result["Id"][1:].split("_"))
                dims = {d["Name"]: d["Value"] for d in batch[i]["Dimensions"]}
                for at, value in zip(result["Timestamps"], result["Values"]):
                    key = ((at.strftime("%Y-%m-%d"), "") if by == "day"
                           else (dims.get("FunctionName", "-"), dims.get("Architecture", "-")))
                    totals.setdefault(key, [0.0, 0.0, 0.0])[j] += value
    return [(k[0], k[1], *v) for k, v in sorted(totals.items())]  # type: ignore[misc]


@click.command()
@click.option("--since", default="30d", show_default=True,
              help="Start of the period: 7d, 12h, 30m ago, or an ISO 8601 date or time (UTC).")
@click.option("--by", type=click.Choice(["function", "day"]), default="function",
              show_default=True, help="One row per function (and architecture) or per UTC day.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON, for scripts.")
@click.option("--endpoint", envvar="LAMINA_ENDPOINT", default=None,
              help="Lamina server URL (default http://127.0.0.1:9000, or $LAMINA_ENDPOINT).")
def cost(since: str, by: str, as_json: bool, endpoint: str | None) -> None:
    """Requests, GB-seconds and cost of every function since a moment, priced as the
    server prices them (LAMINA_PRICE_*)."""
    from lamina.cli.main import _api_errors

    now = datetime.datetime.now(datetime.timezone.utc)
    start = parse_since(since, now)
    with _api_errors():
        rows = cost_rows(lambda_client(endpoint, "cloudwatch"), start, now, by)
    if as_json:
        key = "FunctionName" if by == "function" else "Day"
        click.echo(json.dumps([
            {key: name, **({"Architecture": arch} if by == "function" else {}),
             "Requests": requests, "GBSeconds": gb_seconds, "CostUSD": usd}
            for name, arch, requests, gb_seconds, usd in rows], indent=2))
        return
    first = ("Function", "Architecture") if by == "function" else ("Day (UTC)",)
    table = Table(*first, "Requests", "GB-seconds", "Cost (USD)",
                  title=f"Cost since {start:%Y-%m-%d %H:%M} UTC")
    totals = [0.0, 0.0, 0.0]
    for name, architecture, requests, gb_seconds, usd in rows:
        head = (name, architecture) if by == "function" else (name,)
        table.add_row(*head, f"{requests:,.0f}", f"{gb_seconds:,.6f}", f"{usd:,.8f}")
        totals = [totals[0] + requests, totals[1] + gb_seconds, totals[2] + usd]
    blank = ("Total", "") if by == "function" else ("Total",)
    table.add_row(*blank, f"{totals[0]:,.0f}", f"{totals[1]:,.6f}", f"{totals[2]:,.8f}",
                  style="bold")
    console.print(table)
