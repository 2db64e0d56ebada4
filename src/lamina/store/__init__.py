"""Persistence: SQLite by default, PostgreSQL through the same SQLAlchemy Core tables."""
