"""``tunestudio`` commands that do not train never import torch (seconds per call, for nothing).

Each command runs in a fresh interpreter, as a person's ``tunestudio`` call does, and reports which
heavy modules it loaded. User errors are still recognised by type: ``tuners``' ``ConfigError``
(a library of its own, torch underneath) is a user error once it exists.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from app.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(m for m in ("torch", "tuners", "transformers") if m in sys.modules)}))
"""


def run_cli(args: list[str], home: Path) -> dict:
    env = {"TUNESTUDIO_HOME": str(home), "PATH": "/usr/bin:/bin", "HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [
    ["--help"], ["runs", "--help"], ["runs", "list"], ["datasets", "list"], ["datasets", "add", "--help"],
    ["datasets", "add", "{good}"], ["datasets", "add", "{one_class}"],
], ids=lambda a: " ".join(a))
def test_a_command_that_does_not_train_does_not_import_torch(args, tmp_path):
    (tmp_path / "good.csv").write_text("text,label\ngood day,pos\nbad day,neg\n", encoding="utf-8")
    (tmp_path / "one_class.csv").write_text("text,label\ngood day,pos\nfine day,pos\n", encoding="utf-8")
    args = [a.format(good=tmp_path / "good.csv", one_class=tmp_path / "one_class.csv") for a in args]
    result = run_cli(args, tmp_path / "home")
    assert result["code"] in (0, 1, None)  # help and listing exit 0; a refused file exits 1
    assert result["loaded"] == [], result


def test_a_tuners_config_error_is_a_user_error_by_type():
    from app.core import errors
    from tuners.config import ConfigError

    assert errors.describe(ConfigError("r: must be at least 1")) == "r: must be at least 1"
    assert errors.describe(ValueError("boom")) == "ValueError: boom"
    assert ConfigError in errors.USER_ERRORS and errors.UserError in errors.USER_ERRORS
    try:
        raise ConfigError("lora_alpha: must be positive")
    except errors.USER_ERRORS as caught:
        assert errors.is_user_error(caught)
