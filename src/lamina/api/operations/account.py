"""GetAccountSettings."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation


@operation("GetAccountSettings")
async def get_account_settings(call: Call) -> dict[str, Any]:
    limits = call.platform.settings.limits
    usage = call.platform.functions.account_usage()
    return {
        "AccountLimit": {
            "TotalCodeSize": limits.total_code_size_bytes,
            "CodeSizeUnzipped": limits.max_unzipped_code_bytes,
            "CodeSizeZipped": limits.max_zipped_code_bytes,
            "ConcurrentExecutions": limits.concurrent_executions,
            "UnreservedConcurrentExecutions": call.platform.concurrency.unreserved_concurrency,
        },
        "AccountUsage": {
            "TotalCodeSize": usage.total_code_size,
            "FunctionCount": usage.function_count,
        },
    }
