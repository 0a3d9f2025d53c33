"""`tunestudio train spec.yaml --wait` as a person runs it, against a worker started as the studio starts one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from app.core.settings import Settings
from tests.engine.helpers import save_tiny_model
from worker.embedded import EmbeddedWorker

ROOT = Path(__file__).resolve().parents[2]
TUNESTUDIO = ROOT / ".venv" / "bin" / "tunestudio"


def environment(home: Path) -> dict[str, str]:
    env = {**os.environ, "TUNESTUDIO_HOME": str(home), "TUNESTUDIO_DATA_ROOTS": str(home.parent),
           "TUNESTUDIO_HEARTBEAT_SECONDS": "0.5"}
    for key in ("TUNESTUDIO_DATABASE_URL", "TUNESTUDIO_BROKER_URL"):
        env.pop(key, None)
    return env


def tunestudio(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(TUNESTUDIO), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def write_spec(path: Path, model: Path | str, dataset: str) -> Path:
    path.write_text(f"name: chatterbot-cli\nmodel: {{name: '{model}'}}\ndata: {{dataset: '{dataset}', max_length: 64}}\n"
                    "method: {peft_type: LORA, r: 4, target_modules: [q_proj, v_proj]}\n"
                    "training: {max_steps: 2, batch_size: 4, eval_every: 0}\n")
    return path


def test_a_bundled_dataset_trains_through_the_cli(tmp_path):
    home = tmp_path / "home"
    env = environment(home)
    spec = write_spec(tmp_path / "spec.yaml", save_tiny_model(tmp_path / "llama"), "bundled:chatterbot")
    with EmbeddedWorker(Settings.from_env(env)):
        done = tunestudio(env, "train", str(spec), "--wait", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[run 1] succeeded" in done.stdout
    assert "step 2/2" in done.stdout
    adapter = home / "artifacts" / "runs" / "run-1" / "adapter"
    assert f"[run 1] adapter: {adapter}" in done.stdout
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (home / "artifacts" / "bundled" / "chatterbot.jsonl").is_file()  # written where runs read demos


def test_an_unknown_bundled_dataset_is_refused_before_anything_is_queued(tmp_path):
    env = environment(tmp_path / "home")
    spec = write_spec(tmp_path / "spec.yaml", "SmolLM2-135M-Instruct", "bundled:chatterbots")
    refused = tunestudio(env, "train", str(spec))
    assert refused.returncode == 1
    assert refused.stderr.strip() == ("error: field 'data.dataset': no bundled dataset named 'chatterbots'. "
                                      "Bundled datasets: chatterbot, drug-reviews.")
    assert tunestudio(env, "runs", "list").stdout.splitlines()[1:] == []
