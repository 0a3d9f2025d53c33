"""Adapter configuration shared by every method.

A config is a flat dataclass that serialises to peft's ``adapter_config.json``: the field names are
peft's, so a folder written here loads in ``peft`` and one written by ``peft`` loads here. Each method
subclasses :class:`AdapterConfig` in its own module under ``tuners/methods/``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

TASK_TYPES = ("CAUSAL_LM", "SEQ_CLS", "SEQ_2_SEQ_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")

# Classification heads a new task model carries; they are freshly initialised, so they must be trained
# and saved with the adapter (peft does the same for SEQ_CLS / TOKEN_CLS). BERT's ``pooler`` is the
# dense layer its classifier reads, the same role as DistilBERT's ``pre_classifier`` and the dense layer
# inside RoBERTa's ``classification_head``: it was trained for next-sentence prediction or not at all
# (sentence-transformers checkpoints), so it is trained with the head (docs/runs.md, "classifier heads").
HEAD_NAMES = ("classifier", "pre_classifier", "score", "qa_outputs", "classification_head", "pooler")
# Heads that come with the checkpoint rather than new: left to the method when its named targets reach
# inside them (``target_modules: [dense]`` on BERT adapts ``pooler.dense`` instead of copying the pooler).
PRETRAINED_HEADS = ("pooler",)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


@dataclass
class AdapterConfig:
    """Fields every method has.

    ``target_modules`` may be a list of module names (matched on the full name or a ``.name`` suffix),
    a regex string (full match), or one of the shorthands ``"attention"`` / ``"all-linear"``, resolved
    from the model's structure when the adapter is applied.
    """

    peft_type: ClassVar[str] = ""
    # Keys peft writes that carry no meaning here; accepted on load so peft folders round-trip.
    ignored_keys: ClassVar[frozenset[str]] = frozenset(
        {"auto_mapping", "revision", "peft_version", "inference_mode"}
    )
    # peft's defaults for keys a folder may omit, where ours differ (a peft folder means peft's default).
    peft_defaults: ClassVar[dict[str, Any]] = {}
    # peft options this core does not implement, each with its "off" value: a folder that turns one on is
    # refused with a clear message instead of being loaded into something that computes differently.
    unsupported: ClassVar[dict[str, Any]] = {}

    task_type: str | None = "CAUSAL_LM"
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None
    base_model_name_or_path: str | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            raise ConfigError(f"task_type: {self.task_type!r} is not one of {', '.join(TASK_TYPES)}")
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    re.compile(value)
                except re.error as exc:
                    raise ConfigError(f"{name}: {value!r} is not a valid regular expression ({exc})") from exc
            elif value is not None and not (
                isinstance(value, list | tuple | set) and all(isinstance(v, str) for v in value)
            ):
                raise ConfigError(f"{name}: expected a list of module names or a regex string, got {value!r}")
        if self.modules_to_save is not None and not all(isinstance(v, str) for v in self.modules_to_save):
            raise ConfigError(f"modules_to_save: expected a list of module names, got {self.modules_to_save!r}")

    def to_dict(self, peft_fields_only: bool = False) -> dict[str, Any]:
        """``peft_fields_only`` (for a method peft has) leaves out tuners-only fields at their default.

        peft warns about any key its config class lacks, and loading here restores the default of a missing
        key, so such a field is written only when it holds something a load would otherwise lose.
        """
        out: dict[str, Any] = {"peft_type": self.peft_type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if peft_fields_only and f.metadata.get("tuners_only") and value == _default(f):
                continue
            if isinstance(value, set | tuple):
                value = sorted(value) if isinstance(value, set) else list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        """Build from a config dict, dropping keys this method does not know (peft-version drift)."""
        for key, off in cls.unsupported.items():
            value = data.get(key)
            if value is not None and value != off and value not in (False, [], {}, ""):
                raise ConfigError(
                    f"{key}: {value!r} is a peft option TuneStudio does not support for {cls.peft_type}"
                )
        data = {**cls.peft_defaults, **data}
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        config = cls(**kwargs)
        config.validate()
        return config

    def tuners_only_values(self) -> dict[str, Any]:
        """Tuners-only fields set away from their default: what peft would ignore when loading the folder."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata.get("tuners_only") and getattr(self, f.name) != _default(f)
        }

    def replace(self, **changes: Any) -> AdapterConfig:
        return dataclasses.replace(self, **changes)

    def for_run(self, total_steps: int) -> AdapterConfig:
        """The config with values that depend on the run's length filled in (AdaLoRA's schedule)."""
        return self


def default_field(value: Any, help: str = "", *, tuners_only: bool = False, choices: tuple | None = None) -> Any:
    """A dataclass field carrying help text (shown by the studio's method step).

    ``tuners_only`` marks a field that peft's config class for the same ``peft_type`` does not have (a
    subclass redeclares an inherited field to mark it), so a saved folder stays one peft reads cleanly.
    ``choices`` lists every value the field accepts (the validator's own set), so a form can offer a list
    instead of free text that fails only at validation.
    """
    metadata: dict[str, Any] = {"help": help}
    if tuners_only:
        metadata["tuners_only"] = True
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if isinstance(value, list | dict | set):
        return field(default_factory=lambda: type(value)(value), metadata=metadata)
    return field(default=value, metadata=metadata)


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def field_help(config_cls: type[AdapterConfig]) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config_cls)}
