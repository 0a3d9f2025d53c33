"""What a PEFT method module exports: one :class:`Method` describing how to attach it.

Most methods only need ``inject`` (wrap target layers with :class:`tuners.layers.AdapterLayer`
subclasses). Methods that act on the whole model (soft prompts, prefixes) return a module from
``inject`` and may override ``forward``/``generate`` and how their state is named on disk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tuners.config import AdapterConfig

if TYPE_CHECKING:
    from tuners.model import TunedModel

_NO_PEFT_DEFAULT = object()

FAMILIES = ("additive", "selective", "reparameterized", "hybrid", "baseline")


@dataclass(frozen=True)
class Method:
    """A PEFT method as the core and the studio see it.

    inject: attach adapter ``adapter_name`` to ``model`` in place; may return a model-level module
        (e.g. a prompt encoder) that the TunedModel keeps under ``adapter_modules[adapter_name]``.
    forward / generate: replace the plain ``model(**kwargs)`` call while this adapter is active.
    export_state / import_state: on-disk keys of a model-level module's state (peft names them
        without the ``base_model.model.`` prefix, e.g. ``prompt_embeddings``).
    base_trainables: parameters of the base model itself that this adapter trains and saves, keyed by
        their path in the task model (LoRA's bias modes, BitFit, layer freezing).
    after_backward: per-step hook for methods with a schedule (AdaLoRA's rank budget).
    trains_base_weights: the method updates the base's linear weights themselves (full fine-tuning,
        layer freezing, FishMask), so it refuses a quantized base.
    trains_pretrained_heads: the method trains a classifier's pretrained head layers (BERT's pooler) as
        part of the base (full fine-tuning), so a new adapter does not also copy them into its head.
        Layer freezing and FishMask train other weights and leave the pooler to the head.
    calibrate: one pass over a few training batches before the optimizer is built, for methods
        that choose what to train from the user's data (FishMask's Fisher-information mask).
    key_prefix: prefix of the on-disk keys of wrapped base modules (``modules_to_save``); peft's
        prompt-learning models save them under ``base_model.`` rather than ``base_model.model.``.
    state_to_disk / state_from_disk: rewrite the adapter's tensors (on-disk keys) between the in-memory
        and the on-disk layout (AdaLoRA keeps masked ranks in memory; peft's files drop them).
    peft_caveat: why peft cannot load this particular adapter although it has the method (a layer
        type peft does not wrap), or None; the model card and the run log say it.
    learning_rate / learning_rate_range: the learning rate this method usually trains well at, and the
        range its papers and peft's examples use (sources in docs/runs.md). Methods differ by two to
        three orders of magnitude (full fine-tuning ~2e-5, LoRA ~2e-4, (IA)³ ~3e-3, soft prompts
        ~3e-2), so one rate for all trains some methods not at all; the studio's presets take it and
        a spec that names no learning rate gets it.
    default_targets: the ``target_modules`` a spec or the studio's form gets when it names none, for
        methods that cannot pick their own layers (LoRA and kin: ``attention``, the query/value
        projections peft uses by default); None where the method chooses its layers itself.
    """

    peft_type: str
    name: str
    family: str
    config_cls: type[AdapterConfig]
    inject: Callable[[nn.Module, AdapterConfig, str], nn.Module | None]
    summary: str = ""
    peft_compatible: bool = True
    forward: Callable[[TunedModel, str, dict[str, Any]], Any] | None = None
    generate: Callable[[TunedModel, str, dict[str, Any]], Any] | None = None
    export_state: Callable[[nn.Module], dict[str, torch.Tensor]] | None = None
    import_state: Callable[[nn.Module, dict[str, torch.Tensor]], None] | None = None
    base_trainables: Callable[[nn.Module, AdapterConfig], dict[str, nn.Parameter]] | None = None
    after_backward: Callable[[TunedModel, str, int], None] | None = None
    loss_term: Callable[[TunedModel, str], torch.Tensor] | None = None
    calibrate: Callable[[TunedModel, Iterable[dict[str, Any]]], None] | None = None
    trains_base_weights: bool = False
    trains_pretrained_heads: bool = False
    key_prefix: str = "base_model.model."
    state_to_disk: Callable[[TunedModel, str, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    state_from_disk: Callable[[TunedModel, str, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    peft_caveat: Callable[[TunedModel, str], str | None] | None = None
    learning_rate: float = field(kw_only=True)
    learning_rate_range: tuple[float, float] = field(kw_only=True)
    default_targets: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        lo, hi = self.learning_rate_range
        if not 0 < lo <= self.learning_rate <= hi:
            raise ValueError(f"{self.peft_type}: learning_rate {self.learning_rate} is not inside its range "
                             f"{self.learning_rate_range}")

    def with_defaults(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Config values with what the method fills in when they are left out or empty.

        The one home of this rule: the studio's form starts from it and the run spec (CLI or studio)
        applies it, so ``method: {peft_type: LORA}`` in a YAML file trains on the same layers as the
        form's untouched defaults, and an emptied field means "the method's default" in both.
        """
        out = dict(values)
        if self.default_targets is not None and out.get("target_modules") in (None, "", []):
            out["target_modules"] = self.default_targets
        # A spec means this core's defaults, written out where peft's differ: config_from_dict reads a
        # missing key as peft's default (right for an adapter folder; LoRA's alpha is 8 there, 16 here).
        for f in dataclasses.fields(self.config_cls):
            peft_default = self.config_cls.peft_defaults.get(f.name, _NO_PEFT_DEFAULT)
            if f.name != "task_type" and f.name not in out and peft_default is not _NO_PEFT_DEFAULT:
                ours = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                if ours is not dataclasses.MISSING and ours != peft_default:
                    out[f.name] = ours
        return out

    def peft_loads(self, tuned: TunedModel, adapter_name: str) -> tuple[bool, str | None]:
        """(whether peft can load this adapter, the reason when it cannot)."""
        if not self.peft_compatible:
            return False, f"peft has no {self.name}"
        kept = tuned.configs[adapter_name].tuners_only_values()
        if kept:
            shown = ", ".join(f"{k}={v!r}" for k, v in kept.items())
            return False, f"peft's {self.name} config has no {', '.join(kept)} and would ignore it ({shown})"
        reason = self.peft_caveat(tuned, adapter_name) if self.peft_caveat is not None else None
        return reason is None, reason
