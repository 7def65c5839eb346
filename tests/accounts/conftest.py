"""The accounts run on both databases: the CDP tests' fixtures (SQLite and a PostgreSQL cluster
of their own)."""

from tests.cdp.conftest import db_url, engine, postgresql_server

__all__ = ["db_url", "engine", "postgresql_server"]
