"""Full fine-tuning (peft_type ``FULL``, tuners only): the baseline every method is compared with.

Every parameter of the base model is trained and saved, as full tensors under the usual keys
(``base_model.model.<path>``), so the folder is the whole fine-tuned model in safetensors. Loading it
onto a fresh copy of the base overwrites every weight. Nothing to merge: the base *is* the result.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

from tuners.config import AdapterConfig, ConfigError
from tuners.layers import AdapterLayer, ModulesToSave
from tuners.method import Method


@dataclass
class FullConfig(AdapterConfig):
    peft_type = "FULL"

    def validate(self) -> None:
        super().validate()
        if self.target_modules is not None:
            raise ConfigError("target_modules: full fine-tuning trains the whole model; leave it empty")


def base_parameters(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Parameter]]:
    """The base model's own parameters by path, skipping adapters' parameters and heads' trainable copies.

    Inside an adapter wrapper only ``base_layer`` is the base; a ``modules_to_save`` head is trained
    (and saved) through its copy, so its base is skipped too. Tied weights appear once.
    """
    seen: set[int] = set()
    yield from _walk(model, prefix, seen)


def _walk(module: nn.Module, prefix: str, seen: set[int]) -> Iterator[tuple[str, nn.Parameter]]:
    if isinstance(module, ModulesToSave):
        return
    if isinstance(module, AdapterLayer):
        yield from _walk(module.base_layer, f"{prefix}base_layer.", seen)
        return
    for name, param in module.named_parameters(recurse=False):
        if param is not None and id(param) not in seen:
            seen.add(id(param))
            yield f"{prefix}{name}", param
    for name, child in module.named_children():
        yield from _walk(child, f"{prefix}{name}.", seen)


def inject(model: nn.Module, config: FullConfig, adapter_name: str) -> None:
    return None


def base_trainables(model: nn.Module, config: FullConfig) -> dict[str, nn.Parameter]:
    return dict(base_parameters(model))


METHOD = Method(
    trains_base_weights=True,
    trains_pretrained_heads=True,
    peft_type="FULL",
    name="Full fine-tuning",
    family="baseline",
    config_cls=FullConfig,
    inject=inject,
    base_trainables=base_trainables,
    peft_compatible=False,
    summary="Train every weight; the baseline. Saves the whole model (largest files, most memory).",
    learning_rate=2e-5,
    learning_rate_range=(1e-5, 5e-5),
)
