"""A rough training-memory estimate for model × method × precision × quantization.

The studio shows it in the model step so a person sees, before submitting, whether a run fits the
machine. It is deliberately simple arithmetic on the model's shape (no allocation):

- frozen base weights: linear layers at the chosen storage width (full precision 32 or 16 bits,
  int8 8 bits + one fp32 scale per row, NF4 4 bits + an fp32 absmax per 64-block = 4.5 bits, or
  with double quantization an 8-bit absmax per block plus an fp32 scale per 256 blocks ≈ 4.127
  bits); embeddings, norms and heads stay at the compute width;
- adapter: fp32 parameters, fp32 gradients and two fp32 AdamW moments = 16 bytes per parameter;
- activations: per layer s·b·h·(34 + 5·a·s/h) bytes at 16-bit (Korthikanti et al., 2022), doubled
  at fp32, plus the fp32 logits and their gradient (b·s·vocab·8 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRECISIONS = ("fp32", "bf16", "fp16")
QUANTIZATIONS = ("none", "int8", "nf4", "nf4-dq")

NF4_BLOCK = 64
DQ_BLOCK = 256


def resolve_precision(precision: str) -> str:
    """'auto' as the engine resolves it: bf16 on a CUDA GPU that supports it, else fp32."""
    if precision != "auto":
        return precision
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def bits_per_weight(precision: str, quantization: str) -> float:
    """Storage bits of one frozen linear weight; per-block/per-row scales included as averages."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if quantization == "none":
        return 32.0 if precision == "fp32" else 16.0
    if quantization == "int8":
        return 8.0
    if quantization == "nf4":
        return 4.0 + 32.0 / NF4_BLOCK
    if quantization == "nf4-dq":
        return 4.0 + 8.0 / NF4_BLOCK + 32.0 / (NF4_BLOCK * DQ_BLOCK)
    raise ValueError(f"quantization: {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know of a model; read from its config and a meta-device copy."""

    total_params: int
    linear_params: int
    hidden_size: int
    num_layers: int
    num_heads: int
    vocab_size: int

    @classmethod
    def from_model(cls, model: Any) -> ModelShape:
        """Counts parameters of a (possibly meta-device) transformers model by module kind."""
        from torch import nn

        total = sum(p.numel() for p in model.parameters())
        linear = 0
        for name, module in model.named_modules():
            is_linear = isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
            if is_linear and not name.endswith(("lm_head", "classifier", "score", "qa_outputs")):
                linear += module.weight.numel()
        config = model.config
        return cls(
            total_params=total,
            linear_params=linear,
            hidden_size=int(_first(config, "hidden_size", "n_embd", "d_model", default=0)),
            num_layers=int(_first(config, "num_hidden_layers", "n_layer", "num_layers", default=0)),
            num_heads=int(_first(config, "num_attention_heads", "n_head", "num_heads", default=1)),
            vocab_size=int(_first(config, "vocab_size", default=0)),
        )


def _first(config: Any, *names: str, default: Any) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value:
            return value
    return default


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    adapter_bytes: int
    activations_bytes: int
    bits_per_weight: float

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.adapter_bytes + self.activations_bytes

    def as_rows(self) -> list[tuple[str, str]]:
        return [
            ("Base weights", human_bytes(self.weights_bytes)),
            ("Adapter + gradients + AdamW states", human_bytes(self.adapter_bytes)),
            ("Activations (rough)", human_bytes(self.activations_bytes)),
            ("Total", human_bytes(self.total_bytes)),
        ]


def estimate_training_memory(
    shape: ModelShape,
    trainable_params: int,
    precision: str = "bf16",
    quantization: str = "none",
    batch_size: int = 1,
    seq_len: int = 512,
    full_finetune: bool = False,
) -> MemoryEstimate:
    """Bytes needed to train; ``full_finetune`` counts every parameter as trainable (no adapter)."""
    if trainable_params < 0 or batch_size <= 0 or seq_len <= 0:
        raise ValueError("trainable_params, batch_size and seq_len must be positive")
    bits = bits_per_weight(precision, quantization)
    compute_bytes = 4 if precision == "fp32" else 2
    other_params = max(shape.total_params - shape.linear_params, 0)
    weights = int(shape.linear_params * bits / 8) + other_params * compute_bytes
    trained = shape.total_params if full_finetune else trainable_params
    adapter = trained * 16
    per_layer = seq_len * batch_size * shape.hidden_size * (
        34 + 5 * shape.num_heads * seq_len / max(shape.hidden_size, 1)
    )
    activations = per_layer * shape.num_layers * (compute_bytes / 2)
    activations += batch_size * seq_len * shape.vocab_size * 8
    return MemoryEstimate(
        weights_bytes=int(weights),
        adapter_bytes=int(adapter),
        activations_bytes=int(activations),
        bits_per_weight=bits,
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
