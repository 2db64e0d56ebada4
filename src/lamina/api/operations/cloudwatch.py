"""CloudWatch metrics (`cloudwatch`, JSON and query protocols): the read operations
over Lambda's metrics (AWS/Lambda) and Lamina's cost figures (Lamina/Cost)."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation


@operation("GetMetricStatistics", service="cloudwatch")
async def get_metric_statistics(call: Call) -> dict[str, Any]:
    return await call.platform.cloudwatch.get_metric_statistics(call.params)


@operation("GetMetricData", service="cloudwatch")
async def get_metric_data(call: Call) -> dict[str, Any]:
    return await call.platform.cloudwatch.get_metric_data(call.params)


@operation("ListMetrics", service="cloudwatch")
async def list_metrics(call: Call) -> dict[str, Any]:
    return await call.platform.cloudwatch.list_metrics(call.params)
