"""Settings read from the environment once, at the edge, into a frozen dataclass.

Every part (UI, CLI, worker) builds its own ``Settings.from_env()``; nothing is global, so tests can
point a whole stack at a temporary home by passing ``env=``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.core.errors import UserError

GIB = 1024**3


class SettingsError(UserError, ValueError):
    """An environment variable has a value that cannot be used; the message names it."""


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    broker_url: str
    artifacts_dir: Path
    models_dir: Path
    max_upload_bytes: int = GIB
    host: str = "127.0.0.1"
    port: int = 7860
    auth_user: str | None = None
    auth_password: str | None = field(default=None, repr=False)
    heartbeat_seconds: float = 5.0
    worker_lost_seconds: float = 60.0
    resend_queued_seconds: float = 300.0
    give_up_queued_seconds: float = 86_400.0
    max_attempts: int = 2  # a run stopped by a lost or stopping worker is re-queued until this many
    worker_name: str = field(default_factory=socket.gethostname)
    # Where a run spec may name data files: the studio's home and the folder the command ran in, unless
    # TUNESTUDIO_DATA_ROOTS (os.pathsep-separated) says otherwise.
    data_roots: tuple[Path, ...] = ()

    @property
    def uploads_dir(self) -> Path:
        return self.artifacts_dir / "datasets"

    @property
    def data_cache_dir(self) -> Path:
        """Prepared (tokenized) data, kept by fingerprint so a second run on the same data and
        settings starts without tokenizing (app.data.cache); safe to delete while no run is preparing."""
        return self.artifacts_dir / "data-cache"

    @property
    def runs_dir(self) -> Path:
        return self.artifacts_dir / "runs"

    @property
    def exports_dir(self) -> Path:
        return self.artifacts_dir / "exports"

    @property
    def bundled_dir(self) -> Path:
        """Where bundled demo datasets named as ``bundled:<name>`` are written for runs."""
        return self.artifacts_dir / "bundled"

    @property
    def hub_data_dir(self) -> Path:
        """Where a split of a cached 🤗 dataset (``org/name[:split]``) is written as Parquet for runs."""
        return self.artifacts_dir / "hub-datasets"

    @property
    def auth(self) -> tuple[str, str] | None:
        if self.auth_user and self.auth_password:
            return (self.auth_user, self.auth_password)
        return None

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("sqla+")

    def run_dir(self, run_id: int) -> Path:
        return self.runs_dir / f"run-{int(run_id)}"

    def ensure_dirs(self) -> None:
        for d in (self.home, self.artifacts_dir, self.models_dir, self.uploads_dir, self.runs_dir, self.exports_dir):
            d.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        """The environment variables that rebuild these settings in a child process (the worker)."""
        out = {
            "TUNESTUDIO_HOME": str(self.home),
            "TUNESTUDIO_DATABASE_URL": self.database_url,
            "TUNESTUDIO_BROKER_URL": self.broker_url,
            "TUNESTUDIO_ARTIFACTS_DIR": str(self.artifacts_dir),
            "TUNESTUDIO_MODELS_DIR": str(self.models_dir),
            "TUNESTUDIO_HEARTBEAT_SECONDS": str(self.heartbeat_seconds),
            "TUNESTUDIO_WORKER_LOST_SECONDS": str(self.worker_lost_seconds),
            "TUNESTUDIO_RESEND_QUEUED_SECONDS": str(self.resend_queued_seconds),
            "TUNESTUDIO_GIVE_UP_QUEUED_SECONDS": str(self.give_up_queued_seconds),
            "TUNESTUDIO_MAX_ATTEMPTS": str(self.max_attempts),
        }
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("TUNESTUDIO_HOME") or Path.home() / ".tunestudio").expanduser().resolve()
        artifacts = Path(env.get("TUNESTUDIO_ARTIFACTS_DIR") or home / "artifacts").expanduser().resolve()
        models = Path(env.get("TUNESTUDIO_MODELS_DIR") or home / "models").expanduser().resolve()
        return cls(
            home=home,
            database_url=env.get("TUNESTUDIO_DATABASE_URL") or f"sqlite:///{home / 'registry.sqlite'}",
            broker_url=env.get("TUNESTUDIO_BROKER_URL") or f"sqla+sqlite:///{home / 'broker.sqlite'}",
            artifacts_dir=artifacts,
            models_dir=models,
            max_upload_bytes=_int(env, "TUNESTUDIO_MAX_UPLOAD_BYTES", GIB),
            host=env.get("TUNESTUDIO_HOST") or "127.0.0.1",
            port=parse_port("TUNESTUDIO_PORT", env.get("TUNESTUDIO_PORT") or "7860"),
            auth_user=env.get("TUNESTUDIO_AUTH_USER") or None,
            auth_password=env.get("TUNESTUDIO_AUTH_PASSWORD") or None,
            heartbeat_seconds=_float(env, "TUNESTUDIO_HEARTBEAT_SECONDS", 5.0),
            worker_lost_seconds=_float(env, "TUNESTUDIO_WORKER_LOST_SECONDS", 60.0),
            resend_queued_seconds=_float(env, "TUNESTUDIO_RESEND_QUEUED_SECONDS", 300.0),
            give_up_queued_seconds=_float(env, "TUNESTUDIO_GIVE_UP_QUEUED_SECONDS", 86_400.0),
            max_attempts=_int(env, "TUNESTUDIO_MAX_ATTEMPTS", 2),
            worker_name=env.get("TUNESTUDIO_WORKER_NAME") or socket.gethostname(),
            data_roots=_data_roots(env, home),
        )


def _data_roots(env: Mapping[str, str], home: Path) -> tuple[Path, ...]:
    raw = env.get("TUNESTUDIO_DATA_ROOTS")
    if not raw:
        return (home, Path.cwd().resolve())
    roots = tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip())
    if not roots:
        raise SettingsError(f"TUNESTUDIO_DATA_ROOTS: names no folder, got {raw!r}")
    return roots


def parse_port(name: str, raw: str) -> int:
    """The one check of a port number, for the environment and ``tunestudio serve --port`` alike."""
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a port number (1-65535), got {raw!r}") from None
    if not 0 < value < 65536:
        raise SettingsError(f"{name}: expected a port number (1-65535), got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected an integer, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name}: must be positive, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name}: must be positive, got {value}")
    return value
