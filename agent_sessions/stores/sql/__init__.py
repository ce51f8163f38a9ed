"""The SQL backend (SQLite, PostgreSQL): `DatabaseSessionStore` and its engine helpers."""

from __future__ import annotations

from .engine import DatabaseFailure, classify, create_database_engine, install_reset_handler, is_data_error
from .schema import SCHEMA_VERSION
from .store import DatabaseSessionStore, StoreNotClosedWarning

__all__ = [
    "SCHEMA_VERSION",
    "DatabaseFailure",
    "DatabaseSessionStore",
    "StoreNotClosedWarning",
    "classify",
    "create_database_engine",
    "install_reset_handler",
    "is_data_error",
]
