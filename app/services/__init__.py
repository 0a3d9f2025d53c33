"""Service functions the UI and the CLI call; each takes a :class:`Context` (settings + registry).

    ctx = Context.open()                 # from TUNESTUDIO_* env, migrations applied
    run_id = create_run(ctx, spec)       # spec: RunSpec, dict or YAML text
    get_run(ctx, run_id).status; metrics(ctx, run_id, since_step=10); cancel_run(ctx, run_id)
"""

from app.services.catalog import ModelEntry, list_bundled_datasets, list_methods, list_models
from app.services.context import Context
from app.services.datasets import (
    DatasetInUse,
    DatasetNotFound,
    DatasetView,
    add_dataset,
    delete_dataset,
    get_dataset,
    list_datasets,
)
from app.services.export import NoAdapter, export_adapter_zip
from app.services.runs import (
    MetricView,
    RunActive,
    RunNotFound,
    RunView,
    cancel_run,
    create_run,
    delete_run,
    get_run,
    get_spec,
    list_runs,
    logs,
    metrics,
    resume_run,
    run_disk_bytes,
)

__all__ = [
    "Context",
    "DatasetInUse",
    "DatasetNotFound",
    "DatasetView",
    "MetricView",
    "ModelEntry",
    "NoAdapter",
    "RunActive",
    "RunNotFound",
    "RunView",
    "add_dataset",
    "cancel_run",
    "create_run",
    "delete_dataset",
    "delete_run",
    "export_adapter_zip",
    "get_dataset",
    "get_run",
    "get_spec",
    "list_bundled_datasets",
    "list_datasets",
    "list_methods",
    "list_models",
    "list_runs",
    "logs",
    "metrics",
    "resume_run",
    "run_disk_bytes",
]
