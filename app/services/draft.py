"""A half-filled wizard kept in the person's own browser, so a reload or a closed tab loses nothing.

The page stores the draft (encrypted) in localStorage; this module decides what a draft holds and
what of an old or tampered draft may be put back: only known fields, only JSON scalars or lists of
them, and only values a choice field still offers. Anything else is dropped, never an error.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from app.core.catalog import bundled_model
from app.core.options import COMPILE_CHOICES, COMPUTE_PRECISIONS, QUANTIZATIONS
from app.core.spec import RunSpec
from app.services.data_preview import roles_for
from app.services.method_form import describe_method
from app.services.wizard import EARLY_STOPPING_PATIENCE

DRAFT_VERSION = 1
# The draft's field names: model.*, data.* (data.role.<i> follows the shape's roles in order),
# method.choice and method.<PEFT_TYPE>.<field>, train.preset and train.<name> below, wizard.step.
TRAIN_FIELDS = ("name", "epochs", "learning_rate", "batch_size", "max_steps", "grad_accum", "warmup_steps",
                "scheduler", "weight_decay", "head_learning_rate", "eval_every", "checkpoint_every", "seed",
                "early_stopping", "early_stopping_patience", "compile", "gradient_checkpointing")
_SCALARS = (str, int, float, bool, type(None))


def pack(keys: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    """The draft for the wizard's current values (non-JSON values, such as a file, are left out)."""
    return _draft(dict(zip(keys, values, strict=True)))


def unpack(draft: Any, keys: Sequence[str], accept: Mapping[str, Callable[[Any], bool]] | None = None
           ) -> dict[str, Any]:
    """The values of ``draft`` that can go back into the fields named by ``keys``.

    ``accept`` gives, for some fields, a test of what they take now: a stored value that fails it
    (a choice the method list no longer offers) is dropped.
    """
    values = _values(draft)
    accept = accept or {}
    restored: dict[str, Any] = {}
    for key in keys:
        if key not in values or not _is_plain(values[key]):
            continue
        test = accept.get(key)
        if test is None or test(values[key]):
            restored[key] = values[key]
    return restored


def has_values(draft: Any) -> bool:
    """Whether a half-filled wizard is waiting in this draft."""
    return bool(_values(draft))


def one_of(choices: Iterable[Any]) -> Callable[[Any], bool]:
    allowed = list(choices)
    return lambda value: value in allowed


def from_spec(spec: RunSpec, run_id: int) -> dict[str, Any]:
    """A draft that fills the wizard with a finished run's choices, opened on the train step, so a
    person can change one thing and run again."""
    m, d, t = spec.model, spec.data, spec.training
    entry = bundled_model(m.name)
    values: dict[str, Any] = {
        "model.bundled": entry.name if entry else None, "model.custom": "" if entry else m.name,
        "model.trust": m.trust_remote_code,
        "model.precision": next((k for k, v in COMPUTE_PRECISIONS.items() if v == t.bf16), "auto"),
        "model.quantization": next((k for k, v in QUANTIZATIONS.items() if v == (m.precision, m.double_quant)),
                                   "none"),
        "data.ref": d.dataset, "data.val_fraction": d.val_fraction, "data.dedupe": d.dedupe,
        "data.max_length": d.max_length, "data.shape": None if d.shape == "auto" else d.shape,
        "method.choice": spec.method["peft_type"], "train.name": f"{spec.name} (from #{run_id})",
        "wizard.step": 3,
    }
    for i, role in enumerate(roles_for(d.shape) if d.shape != "auto" else []):
        values[f"data.role.{i}"] = d.mapping.get(role, "")
    for f in describe_method(spec.method["peft_type"]).fields:
        if f.name in spec.method:
            values[f"method.{spec.method['peft_type']}.{f.name}"] = f.form_value(spec.method[f.name])
    for name in TRAIN_FIELDS[1:]:
        if name != "early_stopping":
            values[f"train.{name}"] = getattr(t, name)
    values["train.max_steps"] = t.max_steps or 0
    # early stopping is one spec field (the patience, 0 = off), shown as a switch and a number
    values["train.early_stopping"] = t.early_stopping_patience > 0
    values["train.early_stopping_patience"] = t.early_stopping_patience or EARLY_STOPPING_PATIENCE
    values["train.compile"] = next((k for k, v in COMPILE_CHOICES.items() if v == t.compile and type(v) is type(t.compile)),
                                   "auto")
    return _draft(values)


def browser_secret(home: Path) -> str:
    """The key the page encrypts drafts with: kept in the studio's home so drafts outlive a restart."""
    path = home / "draft-secret"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(secret, encoding="ascii")
    tmp.chmod(0o600)
    tmp.replace(path)
    return secret


def _draft(values: Mapping[str, Any]) -> dict[str, Any]:
    return {"version": DRAFT_VERSION, "values": {k: v for k, v in values.items() if _is_plain(v)}}


def _values(draft: Any) -> Mapping[str, Any]:
    """The stored values of a draft of this version; nothing for anything else."""
    if not isinstance(draft, Mapping) or draft.get("version") != DRAFT_VERSION:
        return {}
    values = draft.get("values")
    return values if isinstance(values, Mapping) else {}


def _is_plain(value: Any) -> bool:
    if isinstance(value, _SCALARS):
        return True
    return isinstance(value, list) and all(isinstance(v, _SCALARS) for v in value)
