"""Lambda's quotas, with AWS's defaults, in one place.

Each one can be overridden with `LAMINA_<NAME>` (see config.py), e.g.
`LAMINA_MAX_MEMORY_SIZE_MB=3008`.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    # Deployment packages.
    max_zipped_code_bytes: int = 50 * MB
    max_unzipped_code_bytes: int = 250 * MB
    max_layers: int = 5
    # Configuration.
    min_memory_size_mb: int = 128
    max_memory_size_mb: int = 10_240
    default_memory_size_mb: int = 128
    min_timeout_s: int = 1
    max_timeout_s: int = 900
    default_timeout_s: int = 3
    min_ephemeral_storage_mb: int = 512
    max_ephemeral_storage_mb: int = 10_240
    default_ephemeral_storage_mb: int = 512
    max_environment_bytes: int = 4 * 1024
    # Lambda stops an on-demand INIT phase after 10 seconds.
    init_timeout_s: float = 10.0
    # Invocation payloads.
    max_sync_payload_bytes: int = 6 * MB
    max_async_payload_bytes: int = 1 * MB
    # Concurrency.
    concurrent_executions: int = 1_000
    min_unreserved_concurrency: int = 100
    # Storage for all functions and layers (AWS: 75 GB per region).
    total_code_size_bytes: int = 75 * 1024 * MB

    @property
    def max_request_bytes(self) -> int:
        """The largest request body accepted: a base64 zip of the maximum size plus room."""
        return (self.max_zipped_code_bytes * 4) // 3 + 1 * MB
