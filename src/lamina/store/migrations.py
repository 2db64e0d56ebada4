"""Versioned schema migrations, applied in order, each once, at start-up.

Append new migrations to MIGRATIONS with a new id; never edit one that has shipped.
"""

from __future__ import annotations

import datetime
import json
from typing import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)

from lamina.store import schema

Migration = Callable[[Connection], None]


def _0001_functions(conn: Connection) -> None:
    # The tables as they were first released, frozen here: building them from
    # schema.py would give a new database columns that later migrations add.
    first = MetaData()
    tables = [
        Table("functions", first, Column("name", String(140), primary_key=True),
              Column("created_at", String(32), nullable=False)),
        Table("function_versions", first,
              Column("function_name", String(140), primary_key=True),
              Column("version", String(32), primary_key=True),
              Column("revision_id", String(64), nullable=False),
              Column("config", Text, nullable=False)),
        Table("tags", first, Column("resource_arn", String(512), primary_key=True),
              Column("key", String(128), primary_key=True),
              Column("value", String(256), nullable=False)),
        Table("sequences", first, Column("name", String(512), primary_key=True),
              Column("value", Integer, nullable=False)),
    ]
    for table in tables:
        table.create(conn)


def _0002_versions_aliases_layers(conn: Connection) -> None:
    # Published versions are rows of function_versions already; these add the rest.
    for table in (schema.aliases, schema.layer_versions, schema.policies):
        table.create(conn)


def _0003_function_versions_code_size(conn: Connection) -> None:
    # Development databases briefly got this column from 0001; add it only if missing.
    columns = {c["name"] for c in inspect(conn).get_columns("function_versions")}
    if "code_size" not in columns:
        conn.execute(text(
            "ALTER TABLE function_versions ADD COLUMN code_size BIGINT NOT NULL DEFAULT 0"
        ))
    versions = schema.function_versions
    rows = conn.execute(select(versions.c.function_name, versions.c.version, versions.c.config))
    for name, version, config in rows.all():
        conn.execute(
            versions.update()
            .where(versions.c.function_name == name, versions.c.version == version)
            .values(code_size=int(json.loads(config).get("code_size", 0)))
        )


def _0004_queues(conn: Connection) -> None:
    for table in (schema.queues, schema.queue_messages):
        table.create(conn)


def _0005_concurrency(conn: Connection) -> None:
    # Frozen like 0001; `functions` is named only so the foreign keys resolve.
    meta = MetaData()
    Table("functions", meta, Column("name", String(140), primary_key=True))
    tables = [
        Table("function_concurrency", meta,
              Column("function_name", String(140),
                     ForeignKey("functions.name", ondelete="CASCADE"), primary_key=True),
              Column("reserved", Integer, nullable=False)),
        Table("provisioned_concurrency", meta,
              Column("function_name", String(140),
                     ForeignKey("functions.name", ondelete="CASCADE"), primary_key=True),
              Column("qualifier", String(128), primary_key=True),
              Column("requested", Integer, nullable=False),
              Column("last_modified", String(32), nullable=False)),
    ]
    for table in tables:
        table.create(conn)


def _0006_async_events(conn: Connection) -> None:
    # Frozen like 0001; `functions` is named only so the foreign key resolves.
    meta = MetaData()
    Table("functions", meta, Column("name", String(140), primary_key=True))
    tables = [
        Table("async_events", meta,
              Column("request_id", String(36), primary_key=True),
              Column("function_name", String(140), nullable=False),
              Column("qualifier", String(128)),
              Column("payload", Text, nullable=False),
              Column("client_context", Text),
              Column("enqueued_at", BigInteger, nullable=False),
              Column("visible_at", BigInteger, nullable=False),
              Column("lease_token", String(32)),
              Column("deliveries", Integer, nullable=False, default=0),
              Column("function_errors", Integer, nullable=False, default=0),
              Column("throttles", Integer, nullable=False, default=0),
              Column("last_error", Text),
              Index("ix_async_events_ready", "function_name", "visible_at")),
        Table("event_invoke_configs", meta,
              Column("function_name", String(140),
                     ForeignKey("functions.name", ondelete="CASCADE"), primary_key=True),
              Column("qualifier", String(128), primary_key=True),
              Column("config", Text, nullable=False)),
    ]
    for table in tables:
        table.create(conn)


def _0007_function_urls(conn: Connection) -> None:
    # Frozen like 0001; `functions` is named only so the foreign key resolves.
    meta = MetaData()
    Table("functions", meta, Column("name", String(140), primary_key=True))
    Table("function_urls", meta,
          Column("function_name", String(140),
                 ForeignKey("functions.name", ondelete="CASCADE"), primary_key=True),
          Column("qualifier", String(128), primary_key=True),
          Column("url_id", String(64), nullable=False, unique=True),
          Column("config", Text, nullable=False)).create(conn)


def _0008_triggers(conn: Connection) -> None:
    # Frozen like 0001.
    meta = MetaData()
    Table("event_source_mappings", meta,
          Column("uuid", String(36), primary_key=True),
          Column("function_name", String(140), nullable=False),
          Column("event_source_arn", String(1024), nullable=False),
          Column("config", Text, nullable=False)).create(conn)
    Table("event_rules", meta,
          Column("name", String(64), primary_key=True),
          Column("config", Text, nullable=False),
          Column("next_fire_at", BigInteger)).create(conn)
    Table("schedules", meta,
          Column("group_name", String(64), primary_key=True),
          Column("name", String(64), primary_key=True),
          Column("config", Text, nullable=False),
          Column("next_fire_at", BigInteger)).create(conn)


def _0009_metric_data(conn: Connection) -> None:
    # Frozen like 0001 (store/metrics.py reads and writes it).
    Table("metric_data", MetaData(),
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
          Index("ix_metric_data_time", "period", "timestamp")).create(conn)


def _0010_code_signing(conn: Connection) -> None:
    # Frozen like 0001; `functions` is named only so the foreign key resolves.
    meta = MetaData()
    Table("functions", meta, Column("name", String(140), primary_key=True))
    configs = Table("code_signing_configs", meta,
                    Column("id", String(32), primary_key=True),
                    Column("config", Text, nullable=False))
    uses = Table("function_code_signing_configs", meta,
                 Column("function_name", String(140),
                        ForeignKey("functions.name", ondelete="CASCADE"), primary_key=True),
                 Column("config_id", String(32), ForeignKey("code_signing_configs.id"),
                        nullable=False))
    profiles = Table("signing_profiles", meta,
                     Column("name", String(64), primary_key=True),
                     Column("config", Text, nullable=False))
    jobs = Table("signing_jobs", meta,
                 Column("job_id", String(64), primary_key=True),
                 Column("created_at", Float, nullable=False),
                 Column("config", Text, nullable=False))
    for table in (configs, uses, profiles, jobs):
        table.create(conn)


def _0011_keys_and_file_systems(conn: Connection) -> None:
    # Frozen like 0001. Functions' environment variables stored in clear before this
    # are sealed under the key service by the control plane once it has its keys
    # (FunctionRegistry.seal_stored_environments), as a migration cannot reach them.
    meta = MetaData()
    Table("kms_keys", meta,
          Column("key_id", String(36), primary_key=True),
          Column("config", Text, nullable=False),
          Column("material", Text, nullable=False)).create(conn)
    Table("kms_aliases", meta,
          Column("name", String(256), primary_key=True),
          Column("key_id", String(36), nullable=False),
          Column("config", Text, nullable=False)).create(conn)
    Table("file_systems", meta,
          Column("file_system_id", String(32), primary_key=True),
          Column("creation_token", String(64), nullable=False, unique=True),
          Column("config", Text, nullable=False)).create(conn)
    Table("access_points", meta,
          Column("access_point_id", String(32), primary_key=True),
          Column("file_system_id", String(32), nullable=False, index=True),
          Column("client_token", String(64), nullable=False, unique=True),
          Column("config", Text, nullable=False)).create(conn)


def _0012_test_events(conn: Connection) -> None:
    # Frozen like 0001 (store/test_events.py reads and writes it).
    Table("test_events", MetaData(),
          Column("function_name", String(140), primary_key=True),
          Column("name", String(25), primary_key=True),
          Column("event", Text, nullable=False),
          Column("updated_at", BigInteger, nullable=False)).create(conn)


MIGRATIONS: list[tuple[str, Migration]] = [
    ("0001_functions", _0001_functions),
    ("0002_versions_aliases_layers", _0002_versions_aliases_layers),
    ("0003_function_versions_code_size", _0003_function_versions_code_size),
    ("0004_queues", _0004_queues),
    ("0005_concurrency", _0005_concurrency),
    ("0006_async_events", _0006_async_events),
    ("0007_function_urls", _0007_function_urls),
    ("0008_triggers", _0008_triggers),
    ("0009_metric_data", _0009_metric_data),
    ("0010_code_signing", _0010_code_signing),
    ("0011_keys_and_file_systems", _0011_keys_and_file_systems),
    ("0012_test_events", _0012_test_events),
]


def migrate(conn: Connection) -> list[str]:
    """Apply every migration not yet recorded; return the ids applied."""
    schema.schema_migrations.create(conn, checkfirst=True)
    done = set(conn.execute(select(schema.schema_migrations.c.id)).scalars())
    applied = []
    for migration_id, apply in MIGRATIONS:
        if migration_id in done:
            continue
        apply(conn)
        conn.execute(
            schema.schema_migrations.insert().values(
                id=migration_id,
                applied_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
            )
        )
        applied.append(migration_id)
    return applied
