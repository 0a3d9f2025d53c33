"""The handle every service function takes: settings plus an open registry (no global state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from app.core.settings import Settings
from app.registry.db import Registry


@dataclass
class Context:
    settings: Settings
    registry: Registry = field(repr=False)

    @classmethod
    def open(cls, settings: Settings | None = None, migrate: bool = True) -> Context:
        settings = settings or Settings.from_env()
        settings.ensure_dirs()
        return cls(settings, Registry(settings.database_url, migrate=migrate))

    def session(self):
        return self.registry.session()

    @cached_property
    def celery(self) -> Any:
        """A Celery client used only to send "start run N" by task name (no worker code imported)."""
        from celery import Celery

        from app.core.contract import declare_train_queue

        declare_train_queue(self.settings.broker_url)
        client = Celery("tunestudio", broker=self.settings.broker_url)
        client.conf.update(broker_connection_retry_on_startup=True, task_ignore_result=True)
        return client

    def close(self) -> None:
        if "celery" in self.__dict__:
            self.celery.close()
        self.registry.dispose()
