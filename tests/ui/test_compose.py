"""docker-compose.yml: the scaled-out deployment (PostgreSQL, Redis, studio, GPU workers, shared artifacts)."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_the_four_services_on_one_artifacts_volume():
    services = compose()["services"]
    assert {"postgres", "redis", "studio", "worker"} <= set(services)
    for name in ("studio", "worker"):
        assert "artifacts:/data" in services[name]["volumes"]
        env = services[name]["environment"]
        assert env["TUNESTUDIO_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["TUNESTUDIO_BROKER_URL"].startswith("redis://")
    assert "artifacts" in compose()["volumes"]


def test_workers_reserve_an_nvidia_gpu_and_the_studio_is_published_locally():
    services = compose()["services"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert services["worker"]["command"] == ["tunestudio", "worker"]
    assert services["worker"]["stop_grace_period"] == "3m"  # time to checkpoint and give the run back
    assert all(p.startswith("127.0.0.1:") for p in services["studio"]["ports"])


def compose_client() -> list[str] | None:
    """`docker compose` (the v2 plugin) or Debian's `docker-compose`; both validate without a daemon."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_validates(tmp_path):
    client = compose_client()
    if client is None:
        pytest.skip("no docker compose client on this machine")
    result = subprocess.run([*client, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "docker-compose.yml"  # the check can fail: a misspelt option is refused
    broken.write_text(COMPOSE.read_text().replace("    image:", "    imagee:", 1))
    refused = subprocess.run([*client, "-f", str(broken), "config", "-q"], capture_output=True, text=True)
    assert refused.returncode != 0 and "imagee" in refused.stderr + refused.stdout
