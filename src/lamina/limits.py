"""Lambda's quotas, with AWS's defaults, in one place.

Each one can be overridden with `LAMINA_<NAME>` (see config.py), e.g.
`LAMINA_MAX_MEMORY_SIZE_MB=3008`.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024

# What a deployment package may hold, from the file system it is unpacked to (Linux's
# NAME_MAX and PATH_MAX), not from Lambda's quotas: an entry past them would be
# accepted and then fail every cold start. PATH_MAX counts the terminating NUL and
# applies to the path as the function sees it, under /var/task or /opt.
FILE_NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4096
# Directories nested deeper than this are refused: no real package comes close, and
# the tools that walk and remove unpacked trees recurse once per level.
PACKAGE_MAX_DEPTH = 256
# AWS Signer: how long a signature made with a profile stays valid, at most and when
# the profile does not say (PutSigningProfile's signatureValidityPeriod).
SIGNATURE_VALIDITY_MAX_MONTHS = 135
SIGNATURE_VALIDITY_DEFAULT_MONTHS = 135


@dataclass(frozen=True)
class Limits:
    # Deployment packages.
    max_zipped_code_bytes: int = 50 * MB
    max_unzipped_code_bytes: int = 250 * MB
    max_layers: int = 5
    # A container image (PackageType Image), unpacked: Lambda's 10 GB.
    max_image_bytes: int = 10 * 1024 * MB
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
    # A synchronous response may be a little larger than a request: AWS's limit
    # (and its message) say 6291556 bytes.
    max_sync_response_bytes: int = 6 * MB + 100
    max_async_payload_bytes: int = 1 * MB
    # Streamed responses (InvokeWithResponseStream, RESPONSE_STREAM function URLs): at
    # most this large, cut there; the first burst bytes go out uncapped, the rest at
    # most bytes_per_s (AWS: 200 MB, the first 6 MB uncapped, then 2 MB/s).
    max_streamed_response_bytes: int = 200 * MB
    streamed_response_burst_bytes: int = 6 * MB
    streamed_response_bytes_per_s: int = 2 * MB
    # Asynchronous invocation: the default MaximumRetryAttempts of an event invoke
    # config (its MaximumEventAgeInSeconds default is max_event_age_s below).
    async_retry_attempts: int = 2
    # Concurrency.
    concurrent_executions: int = 1_000
    min_unreserved_concurrency: int = 100
    # Scaling rate: each function may start this many new execution environments
    # per window, refilled continuously (AWS: 1,000 every 10 seconds per function).
    scaling_environments: int = 1_000
    scaling_window_s: float = 10.0
    # An asynchronous event that keeps being throttled is retried until it is this
    # old (Lambda's maximum event age: 6 hours).
    max_event_age_s: int = 21_600
    # A function's (or version's, or alias's) resource-based policy, as JSON.
    max_function_policy_bytes: int = 20 * 1024
    # Storage for all functions and layers (AWS: 75 GB per region).
    total_code_size_bytes: int = 75 * 1024 * MB
    # SQS queues. SQS's classic 256 KiB message limit (body plus attributes), which
    # is also what a Lambda async event may be when it is queued.
    max_message_bytes: int = 256 * 1024
    min_message_bytes: int = 1024
    max_batch_entries: int = 10
    max_message_attributes: int = 10
    max_receive_messages: int = 10
    max_receive_wait_s: int = 20
    max_visibility_timeout_s: int = 43_200
    default_visibility_timeout_s: int = 30
    max_delay_s: int = 900
    min_retention_s: int = 60
    max_retention_s: int = 1_209_600
    default_retention_s: int = 345_600
    max_receive_count: int = 1_000
    max_queues_listed: int = 1_000
    # Request bodies, per operation (see api.bodies): code uploads may be
    # max_request_bytes, Invoke its payload limit, SQS requests this much (a 256 KiB
    # message escaped into JSON grows at most threefold, plus attributes), every
    # other request this much.
    max_queue_request_bytes: int = 1 * MB
    max_api_request_bytes: int = 1 * MB
    # A refused request's body is read and dropped up to this size, so the client
    # gets the answer instead of a reset connection; past it the connection closes.
    max_discarded_request_bytes: int = 8 * MB
    # Event source mappings: batch sizes (defaults and maxima, by source), filters
    # per FilterCriteria, and the pollers one SQS mapping scales to when its
    # ScalingConfig sets no MaximumConcurrency (Lambda: up to 1,250 concurrent
    # invocations; a single host gets far fewer).
    sqs_default_batch_size: int = 10
    sqs_max_batch_size: int = 10_000
    mq_default_batch_size: int = 100
    mq_max_batch_size: int = 10_000
    max_mapping_filters: int = 5
    sqs_mapping_max_pollers: int = 20
    # KMS: a key's deletion waiting period (days) and what Encrypt takes (bytes).
    min_key_deletion_days: int = 7
    max_key_deletion_days: int = 30
    max_kms_plaintext_bytes: int = 4096
    # EFS: file systems per account and access points per file system (AWS's
    # quotas), and the file systems one function mounts.
    max_file_systems: int = 1_000
    max_access_points: int = 10_000
    max_function_file_systems: int = 1

    @property
    def max_request_bytes(self) -> int:
        """The largest request body accepted: a base64 zip of the maximum size plus room."""
        return (self.max_zipped_code_bytes * 4) // 3 + 1 * MB
