"""GetAccountSettings."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation


@operation("GetAccountSettings")
async def get_account_settings(call: Call) -> dict[str, Any]:
    limits = call.platform.settings.limits
    count, code_size = call.platform.functions.store.count_and_code_size()
    code_size += call.platform.layers.store.total_code_size()
    return {
        "AccountLimit": {
            "TotalCodeSize": limits.total_code_size_bytes,
            "CodeSizeUnzipped": limits.max_unzipped_code_bytes,
            "CodeSizeZipped": limits.max_zipped_code_bytes,
            "ConcurrentExecutions": limits.concurrent_executions,
            "UnreservedConcurrentExecutions": call.platform.concurrency.unreserved_concurrency,
        },
        "AccountUsage": {"TotalCodeSize": code_size, "FunctionCount": count},
    }
