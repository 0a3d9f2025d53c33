"""The run registry: SQLAlchemy models, sessions and migrations. Imports no UI code."""

from app.registry.db import Registry, downgrade, make_engine, upgrade
from app.registry.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    RUN_STATUSES,
    Artifact,
    Base,
    Dataset,
    LogLine,
    MetricPoint,
    Run,
)

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "RUN_STATUSES",
    "Artifact",
    "Base",
    "Dataset",
    "LogLine",
    "MetricPoint",
    "Registry",
    "Run",
    "downgrade",
    "make_engine",
    "upgrade",
]
