"""Migrations bring a database made by an older Lamina up to date, keeping its data."""

from __future__ import annotations

import json
import sqlite3

from sqlalchemy import select

from lamina.store.database import open_database
from lamina.store.functions import FunctionStore
from lamina.store.migrations import MIGRATIONS, migrate
from lamina.store.schema import schema_migrations

# The tables exactly as the first release created them (before code_size).
FIRST_RELEASE = """
CREATE TABLE schema_migrations (id VARCHAR(64) PRIMARY KEY, applied_at VARCHAR(32) NOT NULL);
CREATE TABLE functions (name VARCHAR(140) PRIMARY KEY, created_at VARCHAR(32) NOT NULL);
CREATE TABLE function_versions (
    function_name VARCHAR(140) NOT NULL, version VARCHAR(32) NOT NULL,
    revision_id VARCHAR(64) NOT NULL, config TEXT NOT NULL,
    PRIMARY KEY (function_name, version));
CREATE TABLE tags (resource_arn VARCHAR(512) NOT NULL, "key" VARCHAR(128) NOT NULL,
    value VARCHAR(256) NOT NULL, PRIMARY KEY (resource_arn, "key"));
CREATE TABLE sequences (name VARCHAR(512) PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO schema_migrations VALUES ('0001_functions', '2026-01-01T00:00:00+00:00');
"""


def test_first_release_database_gets_code_sizes_from_its_configs(tmp_path):
    path = tmp_path / "lamina.db"
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_RELEASE)
        for name, size in (("old-a", 1234), ("old-b", 766)):
            db.execute("INSERT INTO functions VALUES (?, '2026-01-01')", (name,))
            db.execute("INSERT INTO function_versions VALUES (?, '$LATEST', 'r1', ?)",
                       (name, json.dumps({"function_name": name, "code_size": size})))
    engine = open_database(f"sqlite:///{path}")
    try:
        store = FunctionStore(engine)
        assert store.count_and_code_size() == (2, 2000)
        assert store.get_version("old-a", "$LATEST")["code_size"] == 1234
    finally:
        engine.dispose()


def test_new_database_applies_every_migration_once(tmp_path):
    engine = open_database(f"sqlite:///{tmp_path / 'lamina.db'}")
    try:
        with engine.begin() as conn:
            applied = set(conn.execute(select(schema_migrations.c.id)).scalars())
            assert applied == {migration_id for migration_id, _ in MIGRATIONS}
            assert migrate(conn) == []
        assert FunctionStore(engine).count_and_code_size() == (0, 0)
    finally:
        engine.dispose()
