"""The current schema, as SQLAlchemy Core tables. Migrations create and change them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("applied_at", String(32), nullable=False),
)

functions = Table(
    "functions",
    metadata,
    Column("name", String(140), primary_key=True),
    Column("created_at", String(32), nullable=False),
)

# One row per version of a function; `$LATEST` is a row like any other, so the
# versions feature adds rows, not tables. `config` is the FunctionVersion as JSON.
function_versions = Table(
    "function_versions",
    metadata,
    Column("function_name", String(140), primary_key=True),
    Column("version", String(32), primary_key=True),
    Column("revision_id", String(64), nullable=False),
    Column("config", Text, nullable=False),
    # Copied out of `config` so account usage is one SUM, not a parse of every row.
    Column("code_size", BigInteger, nullable=False, server_default="0"),
)

tags = Table(
    "tags",
    metadata,
    Column("resource_arn", String(512), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(256), nullable=False),
)

# Counters that must survive restarts, e.g. the last published version of a function.
sequences = Table(
    "sequences",
    metadata,
    Column("name", String(512), primary_key=True),
    Column("value", Integer, nullable=False),
)

# An alias points at one version, optionally sending a share of traffic to a second
# (`routing` is AdditionalVersionWeights as JSON: {"version": weight}).
aliases = Table(
    "aliases",
    metadata,
    Column("function_name", String(140), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("function_version", String(32), nullable=False),
    Column("description", Text, nullable=False),
    Column("routing", Text, nullable=False),
    Column("revision_id", String(64), nullable=False),
)

# Published layer versions are immutable; their zips live in the blob store, and the
# unzipped size is kept so a function's code plus its layers can be held to the quota.
layer_versions = Table(
    "layer_versions",
    metadata,
    Column("layer_name", String(140), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("description", Text, nullable=False),
    Column("created_date", String(32), nullable=False),
    Column("compatible_runtimes", Text, nullable=False),
    Column("compatible_architectures", Text, nullable=False),
    Column("license_info", String(512)),
    Column("code_sha256_hex", String(64), nullable=False),
    Column("code_size", Integer, nullable=False),
    Column("unzipped_size", Integer, nullable=False),
)

# Resource-based policies (a layer version's today, a function's later), one JSON
# document per resource ARN, changed by compare-and-swap on revision_id.
policies = Table(
    "policies",
    metadata,
    Column("resource_arn", String(512), primary_key=True),
    Column("document", Text, nullable=False),
    Column("revision_id", String(64), nullable=False),
)

# SQS queues. `attributes` holds the settable attributes (VisibilityTimeout, ...)
# as a JSON object of strings, the way SQS itself reports them.
queues = Table(
    "queues",
    metadata,
    Column("name", String(80), primary_key=True),
    Column("attributes", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),  # epoch seconds
    Column("modified_at", BigInteger, nullable=False),
)

# One row per message still in a queue. A message is visible when visible_at has
# passed; receiving it moves visible_at forward by the visibility timeout and
# replaces receipt_token, which is what makes older receipt handles stale.
# Times are epoch milliseconds, as SQS reports them.
queue_messages = Table(
    "queue_messages",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("queue_name", String(80), nullable=False),
    Column("message_id", String(36), nullable=False, unique=True),
    Column("body", Text, nullable=False),
    Column("message_attributes", Text, nullable=False),
    Column("trace_header", Text),
    Column("sender_id", String(128), nullable=False),
    Column("sent_at", BigInteger, nullable=False),
    Column("visible_at", BigInteger, nullable=False),
    Column("receive_count", Integer, nullable=False, default=0),
    Column("first_received_at", BigInteger),
    Column("receipt_token", String(64)),
    Column("dead_letter_source_arn", String(256)),
    Index("ix_queue_messages_ready", "queue_name", "visible_at", "seq"),
)

# Reserved concurrency (PutFunctionConcurrency): one row per function that has it.
# Rows go with their function (ON DELETE CASCADE).
function_concurrency = Table(
    "function_concurrency",
    metadata,
    Column("function_name", String(140), ForeignKey("functions.name", ondelete="CASCADE"),
           primary_key=True),
    Column("reserved", Integer, nullable=False),
)

# Provisioned concurrency configs, per (function, qualifier): a version or an alias.
# Only what the user asked for is stored; allocation status is live state.
provisioned_concurrency = Table(
    "provisioned_concurrency",
    metadata,
    Column("function_name", String(140), ForeignKey("functions.name", ondelete="CASCADE"),
           primary_key=True),
    Column("qualifier", String(128), primary_key=True),
    Column("requested", Integer, nullable=False),
    Column("last_modified", String(32), nullable=False),
)

# Asynchronous invocations (InvocationType=Event) accepted and not yet finished.
# Written before the 202 is answered. A worker claims one by moving visible_at to
# the end of its lease and setting lease_token; a server that dies holding a lease
# lets it run out, and the event is claimed again. Times are epoch milliseconds.
async_events = Table(
    "async_events",
    metadata,
    Column("request_id", String(36), primary_key=True),
    Column("function_name", String(140), nullable=False),
    Column("qualifier", String(128)),  # as invoked; NULL when unqualified
    Column("payload", Text, nullable=False),
    Column("client_context", Text),
    Column("enqueued_at", BigInteger, nullable=False),  # the event's age counts from here
    Column("visible_at", BigInteger, nullable=False),
    Column("lease_token", String(32)),
    # Claims, and the outcomes recorded so far: a claim with no outcome recorded
    # (a crash, a lost lease) may have run the function, a possible duplicate.
    Column("deliveries", Integer, nullable=False, default=0),
    Column("function_errors", Integer, nullable=False, default=0),
    Column("throttles", Integer, nullable=False, default=0),
    # The last failed attempt, as JSON (status, functionError, errorType, errorMessage).
    Column("last_error", Text),
    Index("ix_async_events_ready", "function_name", "visible_at"),
)

# Put/UpdateFunctionEventInvokeConfig, per function and qualifier ($LATEST, a
# version or an alias); `config` holds the settings as JSON.
event_invoke_configs = Table(
    "event_invoke_configs",
    metadata,
    Column("function_name", String(140), ForeignKey("functions.name", ondelete="CASCADE"),
           primary_key=True),
    Column("qualifier", String(128), primary_key=True),
    Column("config", Text, nullable=False),
)

# Function URL configs (Create/Get/Update/DeleteFunctionUrlConfig), per function and
# qualifier ($LATEST or an alias). The url_id is the host label the URL is served
# under; it is fixed when the config is created. `config` holds the rest as JSON.
function_urls = Table(
    "function_urls",
    metadata,
    Column("function_name", String(140), ForeignKey("functions.name", ondelete="CASCADE"),
           primary_key=True),
    Column("qualifier", String(128), primary_key=True),
    Column("url_id", String(64), nullable=False, unique=True),
    Column("config", Text, nullable=False),
)

# Event source mappings (events/). `config` is the mapping as JSON; its state and
# settings change together, so they live in one document.
event_source_mappings = Table(
    "event_source_mappings",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("function_name", String(140), nullable=False),
    Column("event_source_arn", String(1024), nullable=False),
    Column("config", Text, nullable=False),
)

# EventBridge rules of the default event bus, their targets inside `config`, and
# EventBridge Scheduler's schedules. `next_fire_at` (epoch ms, None: not scheduled)
# is when the next firing is due, so a restart carries on where the server stopped.
event_rules = Table(
    "event_rules",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("config", Text, nullable=False),
    Column("next_fire_at", BigInteger),
)

schedules = Table(
    "schedules",
    metadata,
    Column("group_name", String(64), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("config", Text, nullable=False),
    Column("next_fire_at", BigInteger),
)

# CloudWatch metric data (namespace AWS/Lambda, and Lamina's cost figures): one row
# per metric, dimension set, period (60 s, or 3,600 s once down-sampled) and period
# start. `dimensions` is the set as canonical JSON ([[name, value], ...] by name);
# `buckets` the log-bucket histogram for percentiles (JSON, empty for counts).
metric_data = Table(
    "metric_data",
    metadata,
    Column("namespace", String(255), primary_key=True),
    Column("metric_name", String(255), primary_key=True),
    Column("dimensions", String(1024), primary_key=True),
    Column("period", Integer, primary_key=True),
    Column("timestamp", BigInteger, primary_key=True),
    Column("sum", Float, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("minimum", Float, nullable=False),
    Column("maximum", Float, nullable=False),
    Column("buckets", Text, nullable=False, server_default=""),
    Index("ix_metric_data_time", "period", "timestamp"),
)

# Code signing configs (Create/Get/Update/Delete/ListCodeSigningConfigs), by their id
# (csc-...); `config` holds AllowedPublishers, CodeSigningPolicies and the rest as JSON.
code_signing_configs = Table(
    "code_signing_configs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("config", Text, nullable=False),
)

# Which config a function uses (PutFunctionCodeSigningConfig). A config in use cannot
# be deleted; a function's row goes with the function.
function_code_signing_configs = Table(
    "function_code_signing_configs",
    metadata,
    Column("function_name", String(140), ForeignKey("functions.name", ondelete="CASCADE"),
           primary_key=True),
    Column("config_id", String(32), ForeignKey("code_signing_configs.id"), nullable=False),
)

# The signer's signing profiles (PutSigningProfile), by name; `config` is the profile
# as JSON (its version, status, validity period, revocation). Key material is not
# here: control.signer keeps it in files of the data dir.
signing_profiles = Table(
    "signing_profiles",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("config", Text, nullable=False),
)

# The signer's signing jobs (one per SignPayload), by id: what DescribeSigningJob and
# ListSigningJobs show, and a signature's revocation (RevokeSignature).
signing_jobs = Table(
    "signing_jobs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("config", Text, nullable=False),
)

# KMS keys: `config` is the key's metadata as JSON; `material` the key material,
# encrypted under the master key (never stored in clear).
kms_keys = Table(
    "kms_keys",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("config", Text, nullable=False),
    Column("material", Text, nullable=False),
)

kms_aliases = Table(
    "kms_aliases",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("key_id", String(36), nullable=False),
    Column("config", Text, nullable=False),
)

# EFS file systems and access points; `config` is the description as JSON.
file_systems = Table(
    "file_systems",
    metadata,
    Column("file_system_id", String(32), primary_key=True),
    Column("creation_token", String(64), nullable=False, unique=True),
    Column("config", Text, nullable=False),
)

access_points = Table(
    "access_points",
    metadata,
    Column("access_point_id", String(32), primary_key=True),
    Column("file_system_id", String(32), nullable=False, index=True),
    Column("client_token", String(64), nullable=False, unique=True),
    Column("config", Text, nullable=False),
)

# The console's saved test events, per function (the Lambda console's "shareable"
# test events: stored on the server, seen by everyone who opens the function).
# `event` is the JSON document as the user typed it.
test_events = Table(
    "test_events",
    metadata,
    Column("function_name", String(140), primary_key=True),
    Column("name", String(25), primary_key=True),
    Column("event", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
