"""Alembic migrations of the registry schema (shipped inside the package; see app.registry.db)."""
