"""What the model step shows about a model reference: architecture, size, tasks, memory estimate.

Only the model's config is read (no weights): a bundled model's config comes from where the engine
reads it (``app.core.models.bundled_files``, without converting anything), a local folder's from its
``config.json``; a hub id is read from the local Hugging Face cache only
(the studio makes no network request of its own). The parameter count comes from a meta-device
copy, so checking a 7B model costs no memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.catalog import BUNDLED_MODELS, bundled_model, pickled_weights_only
from app.core.errors import UserError
from app.core.models import bundled_files
from app.core.spec import looks_like_path
from app.core.tasks import task_for
from app.services.estimate import (
    MemoryEstimate,
    ModelShape,
    estimate_training_memory,
    human_count,
    uses_example_attention,
)

ARCH_TASKS = (
    ("ForCausalLM", ("CAUSAL_LM", "SEQ_CLS")),
    ("LMHeadModel", ("CAUSAL_LM", "SEQ_CLS")),
    ("ForConditionalGeneration", ("SEQ_2_SEQ_LM",)),
    ("ForSequenceClassification", ("SEQ_CLS",)),
    ("ForMaskedLM", ("SEQ_CLS",)),
    ("Model", ("SEQ_CLS",)),
)


class ModelNotFound(UserError, LookupError):
    pass


@dataclass(frozen=True)
class ModelInfo:
    name: str
    architecture: str
    model_type: str
    tasks: tuple[str, ...]
    shape: ModelShape
    config: Any
    description: str = ""
    tokenizer: Any = None


def bundled_choices() -> list[tuple[str, str]]:
    return [(f"{m.name} ({human_count(m.parameters)}, {', '.join(m.tasks)})", m.name) for m in BUNDLED_MODELS]


def load_config(ref: str, models_dir: Path | None = None, trust_remote_code: bool = False) -> Any:
    """The transformers config for a bundled name, a local folder or a cached hub id (offline)."""
    from transformers import AutoConfig

    ref = (ref or "").strip()
    if not ref:
        raise ModelNotFound("no model chosen: pick a bundled model or type a folder / hub id")
    entry = bundled_model(ref)
    if entry is not None:
        folder, kwargs = bundled_files(entry, models_dir, convert=False)
        return AutoConfig.from_pretrained(folder, **kwargs)
    if looks_like_path(ref):
        folder = Path(ref).expanduser()
        if not folder.exists():
            raise ModelNotFound(f"no such folder: {ref}")
        if not folder.is_dir():
            raise ModelNotFound(f"{ref}: is a file, not a folder (give the folder that holds config.json)")
        if not (folder / "config.json").is_file():
            raise ModelNotFound(f"{ref}: no config.json in that folder (is it a transformers model folder?)")
        problem = pickled_weights_only(folder)
        if problem:
            raise ModelNotFound(problem)
        return AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    try:
        return AutoConfig.from_pretrained(ref, local_files_only=True, trust_remote_code=trust_remote_code)
    except OSError:
        raise ModelNotFound(
            f"{ref}: not a bundled model, not a folder, and not in the local Hugging Face cache "
            "(the studio downloads nothing; the worker will fetch hub models when it trains)"
        ) from None


def load_tokenizer(ref: str, models_dir: Path | None = None, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer (offline), for token-length statistics; None when it cannot be read."""
    from transformers import AutoTokenizer

    entry = bundled_model(ref)
    try:
        if entry is not None:
            folder, kwargs = bundled_files(entry, models_dir, convert=False)
            return AutoTokenizer.from_pretrained(folder, **kwargs)
        if looks_like_path(ref):
            return AutoTokenizer.from_pretrained(Path(ref).expanduser(), trust_remote_code=trust_remote_code)
        return AutoTokenizer.from_pretrained(ref, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None


def tasks_for(architecture: str) -> tuple[str, ...]:
    for suffix, tasks in ARCH_TASKS:
        if architecture.endswith(suffix):
            return tasks
    return ("CAUSAL_LM",)


# Model checks by (ref, models folder, trust, the folder's config.json stamp): the wizard checks the same
# model again on every reload and "new run from this one", and a check reads the config, builds a meta
# copy and loads the tokenizer (about a second on an idle CPU, far more on a busy one). A local folder
# whose config.json changes is checked afresh; a failed check is never kept.
_CHECKED: dict[tuple, ModelInfo] = {}
_CHECKED_MAX = 8


def _stamp(ref: str) -> int | None:
    """A local folder's config.json modification time (None for bundled names and hub ids, which do not
    change under a running studio)."""
    if bundled_model(ref) is not None or not looks_like_path(ref):
        return None
    try:
        return (Path(ref).expanduser() / "config.json").stat().st_mtime_ns
    except OSError:
        return None


def describe_model(ref: str, models_dir: Path | None = None, trust_remote_code: bool = False) -> ModelInfo:
    """What step 1 shows about a model (cached per model, see ``_CHECKED``)."""
    ref = (ref or "").strip()
    key = (ref, str(models_dir), bool(trust_remote_code), _stamp(ref))
    if key not in _CHECKED:
        info = _describe_model(ref, models_dir, trust_remote_code)
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.pop(next(iter(_CHECKED)))
        _CHECKED[key] = info
    return _CHECKED[key]


def _describe_model(ref: str, models_dir: Path | None, trust_remote_code: bool) -> ModelInfo:
    from app.services.method_form import meta_model

    config = load_config(ref, models_dir, trust_remote_code)
    entry = bundled_model(ref)
    architecture = entry.architecture if entry else ((getattr(config, "architectures", None) or ["?"])[0])
    tasks = entry.tasks if entry else tasks_for(architecture)
    task = task_for(None, tasks)  # the model as it is, before any data
    shape = ModelShape.from_model(meta_model(config, task))
    return ModelInfo(
        name=entry.name if entry else ref,
        architecture=architecture,
        model_type=getattr(config, "model_type", "?"),
        tasks=tuple(tasks),
        shape=shape,
        config=config,
        description=entry.description if entry else "",
        tokenizer=load_tokenizer(ref, models_dir, trust_remote_code),
    )


def estimate_memory(
    info: ModelInfo, trainable: int, precision: str, quantization: str, batch_size: int, seq_len: int,
    peft_type: str | None = None, data_shape: str | None = None,
) -> MemoryEstimate:
    """The estimate for what the wizard holds: the task follows the data's format once one is chosen
    (classification has no vocabulary-sized output), and a method that trains the model's own
    weights (full fine-tuning, BitFit) is counted as such."""
    import tuners
    from app.core.devices import pick_device

    method = tuners.METHODS.get(peft_type or "")
    task = task_for(data_shape, info.tasks)
    return estimate_training_memory(
        info.shape, trainable, precision, quantization, batch_size, seq_len, task=task,
        trains_base_weights=bool(method is not None and method.trains_base_weights),
        example_attention=uses_example_attention(info.shape, task, pick_device("auto").type),
    )
