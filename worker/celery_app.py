"""The Celery application: one queue (``training``), one run at a time per worker.

Embedded mode uses kombu's SQLAlchemy transport on a SQLite file in ``$TUNESTUDIO_HOME``; scaled-out
mode points ``TUNESTUDIO_BROKER_URL`` at Redis. The broker carries only "start run N"; the registry
holds everything else, so no result backend is configured.
"""

from __future__ import annotations

from celery import Celery

from app.core.contract import TRAIN_QUEUE, TRAIN_TASK
from app.core.settings import Settings


def make_celery(settings: Settings) -> Celery:
    app = Celery("tunestudio", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_routes={TRAIN_TASK: {"queue": TRAIN_QUEUE}},
        task_default_queue=TRAIN_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_max_tasks_per_child=None,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    return app


app = make_celery(Settings.from_env())
