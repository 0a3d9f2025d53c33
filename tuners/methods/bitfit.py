"""BitFit (peft_type ``BITFIT``, tuners only): train only the bias terms (Ben Zaken et al., 2022).

The base model's own bias vectors are trained in place and saved under their paths
(``base_model.model.<module>.bias``); for classification the freshly initialised head is trained and
saved whole (``modules_to_save``, added automatically for SEQ_CLS/TOKEN_CLS). Models whose layers have
no biases (Llama, Mistral, T5) cannot use BitFit: applying it raises :class:`ConfigError` rather than
training nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tuners.config import AdapterConfig, ConfigError, default_field
from tuners.method import Method
from tuners.methods.full import base_parameters
from tuners.targets import matches

BIAS_KINDS = ("all", "linear")


@dataclass
class BitFitConfig(AdapterConfig):
    peft_type = "BITFIT"

    target_modules: list[str] | str | None = default_field(
        None, "Only biases of these modules (names or regex). Empty: every bias in the model."
    )
    bias_kinds: str = default_field(
        "all", "'all': every bias (norm layers included); 'linear': linear layers only.", choices=BIAS_KINDS
    )

    def validate(self) -> None:
        super().validate()
        if self.bias_kinds not in BIAS_KINDS:
            raise ConfigError(f"bias_kinds: must be one of {BIAS_KINDS}, got {self.bias_kinds!r}")


def _is_linear_bias(model: nn.Module, path: str) -> bool:
    module = model.get_submodule(path.rsplit(".", 1)[0])
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D" or hasattr(module, "is_quantized_linear")


def base_trainables(model: nn.Module, config: BitFitConfig) -> dict[str, nn.Parameter]:
    out = {}
    for path, param in base_parameters(model):
        if not path.endswith(".bias"):
            continue
        module_path = path[: -len(".bias")].removesuffix(".base_layer")
        if config.target_modules is not None and not matches(module_path, config.target_modules):
            continue
        if config.bias_kinds == "linear" and not _is_linear_bias(model, path):
            continue
        out[path] = param
    return out


def inject(model: nn.Module, config: BitFitConfig, adapter_name: str) -> None:
    if not base_trainables(model, config):
        where = f" in modules matching {config.target_modules!r}" if config.target_modules is not None else ""
        raise ConfigError(
            f"target_modules: {type(model).__name__} has no bias terms{where}, so BitFit would train nothing; "
            "choose LoRA or (IA)³ for this model"
        )


METHOD = Method(
    peft_type="BITFIT",
    name="BitFit",
    family="selective",
    config_cls=BitFitConfig,
    inject=inject,
    base_trainables=base_trainables,
    peft_compatible=False,
    summary="Train only the bias terms (and the classification head); tiny, but needs a model with biases.",
    learning_rate=1e-3,
    learning_rate_range=(1e-4, 1e-3),
)
