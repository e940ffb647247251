"""Alembic migrations of raybot's store (SQLite and PostgreSQL); bot/store.py runs them at start."""
