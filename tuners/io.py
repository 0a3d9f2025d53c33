"""Reading and writing adapter folders in peft's layout.

A folder holds ``adapter_config.json``, ``adapter_model.safetensors`` (metadata ``{"format": "pt"}``),
a model card ``README.md`` and any extra files the caller adds (the studio adds its run config).
Writing goes to a temporary sibling folder that is renamed into place, so a crash never leaves a
half-written adapter behind. Only safetensors are read: nothing user-supplied is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from tuners.config import AdapterConfig, ConfigError
from tuners.methods import config_from_dict, method_for

if TYPE_CHECKING:
    from tuners.model import TunedModel

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
CARD_NAME = "README.md"


RESERVED_NAMES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)


def config_json(config: AdapterConfig) -> str:
    """The ``adapter_config.json`` text: for a method peft has, only keys its config class accepts.

    peft warns about every key its class lacks ("Unexpected keyword arguments ... ignored"), so tuners-only
    fields at their default are left out; methods peft lacks keep every field, as only tuners reads them.
    """
    fields_only = method_for(config).peft_compatible
    return json.dumps(config.to_dict(peft_fields_only=fields_only), indent=2, sort_keys=True)


def save_adapter(tuned: TunedModel, adapter_name: str, path: Path, extra_files: dict[str, str],
                 card_notes: dict[str, str] | None = None) -> Path:
    """Write the folder next to ``path`` and swap it in, so readers see the old folder or the new one.
    ``card_notes`` are the caller's own model-card sections (title -> Markdown), after the method's."""
    for name in extra_files:
        if Path(name).name != name or name in (".", "..") or name in RESERVED_NAMES:
            raise ValueError(f"extra file name {name!r} must be a plain file name other than {RESERVED_NAMES}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path}: exists and is not a folder; choose another adapter path")
    config = tuned.configs[adapter_name]
    state = tuned.adapter_state_dict(adapter_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    retired: Path | None = None
    try:
        save_file(state, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        (staging / CONFIG_NAME).write_text(config_json(config) + "\n")
        (staging / CARD_NAME).write_text(model_card(tuned, adapter_name, card_notes))
        for name, text in extra_files.items():
            (staging / name).write_text(text)
        if path.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, retired / "adapter")
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if retired is not None and not path.exists():
            os.replace(retired / "adapter", path)
        raise
    finally:
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    return path


def read_adapter(path: Path) -> tuple[AdapterConfig, dict[str, torch.Tensor]]:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a folder; an adapter is a folder holding {CONFIG_NAME}")
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_NAME}; not an adapter folder")
    try:
        data = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{config_file}: line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{config_file}: expected a JSON object, got {type(data).__name__}")
    try:
        config = config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{config_file}: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"{config_file}: {exc}") from exc
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        found = f" (found {', '.join(pickled)}: pickled weights are never loaded; convert them to safetensors)"
        raise FileNotFoundError(f"{path}: no {WEIGHTS_NAME}{found if pickled else ''}")
    try:
        return config, load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
        raise ConfigError(f"{weights}: not a readable safetensors file ({exc})") from exc


def model_card(tuned: TunedModel, adapter_name: str, notes: dict[str, str] | None = None) -> str:
    config = tuned.configs[adapter_name]
    method = method_for(config)
    trainable = sum(p.numel() for p in tuned.adapter_parameters(adapter_name).values())
    total = sum(p.numel() for p in tuned.parameters())
    base = config.base_model_name_or_path or "the base model"
    targets = config.target_modules if config.target_modules is not None else "(whole model)"
    peft_ok, reason = method.peft_loads(tuned, adapter_name)
    sections = "".join(f"\n## {title}\n\n{text}\n" for title, text in (notes or {}).items())
    loader = (
        "from peft import PeftModel\nmodel = PeftModel.from_pretrained(base_model, \"path/to/this/folder\")\n"
        if peft_ok
        else f"# peft cannot load this adapter: {reason}; load it with TuneStudio's tuners\n"
    )
    return f"""---
library_name: peft
base_model: {base}
tags: [tunestudio, {method.peft_type.lower()}]
---
# {method.name} adapter for {base}

Trained with TuneStudio. Method: **{method.name}** ({method.family}), task `{config.task_type}`.
Target modules: `{targets}`. Trainable parameters: {trainable:,} of {total:,}.
{sections}
## Load

```python
{loader}
# or, with TuneStudio's own core:
import tuners
model = tuners.load(base_model, "path/to/this/folder")
```

## Configuration

```json
{config_json(config)}
```
"""
