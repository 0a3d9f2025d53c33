"""The training-memory estimate for model × method × precision × quantization × batch × length.

The studio shows it in the model step so a person sees, before submitting, whether a run fits the
worker. It is arithmetic on the model's shape (no allocation), calibrated against measured peaks
(``bench/memory.py``: the bundled SmolLM2-135M and MiniLM with LoRA, QLoRA and full fine-tuning at
two sequence lengths, within ±25 % of the peak resident memory on CPU). Its parts, each one line
on the page:

- base weights: the engine loads every weight in fp32 (bf16 is autocast, not storage); quantized
  linear layers keep int8 (+ an fp32 scale per row) or NF4 (4 bits + an fp32 absmax per 64-block
  = 4.5 bits; with double quantization an 8-bit absmax plus an fp32 scale per 256 blocks ≈ 4.127
  bits); embeddings, norms and heads stay fp32;
- what training adds to the trained weights: a new (adapter) parameter costs its fp32 weight, its
  gradient and AdamW's two moments = 16 bytes; a base weight trained in place (full fine-tuning)
  costs the two moments = 8 bytes, and its 4-byte gradient only where the gradients outgrow the
  activations: backward produces them layer by layer as it frees those (measured: the peak is at
  the start of backward, not the sum);
- activations autograd keeps for the backward pass, per token and layer, at the compute width
  (4 bytes fp32, 2 bf16): about 3.5·hidden plus the MLP's (4·intermediate when gated like Llama's
  SwiGLU, else 2·intermediate); when the base weights train too, every linear layer's input as
  well (+3·hidden + intermediate); and where attention has dropout (BERT) the attention
  probabilities are materialised: 3 numbers per head per token pair;
- output logits of a language model: batch × length × vocabulary, about three fp32 copies at the
  peak of the loss (the logits, their log-softmax and its gradient), which is why a 49k vocabulary
  dominates short models;
- working memory: the tokenizer, the data and the libraries' buffers (a constant from the bench).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.options import QUANTIZATIONS

# Compute dtypes the estimate prices ("auto" is resolved first, as the engine resolves it).
PRECISIONS = ("fp32", "bf16", "fp16")

NF4_BLOCK = 64
DQ_BLOCK = 256


def resolve_precision(precision: str) -> str:
    """'auto' as the engine resolves it (app.core.devices): bf16 where the device multiplies in it (a CUDA
    GPU that supports it, a CPU with AVX512-BF16 or AMX), else fp32."""
    if precision != "auto":
        return precision
    from app.core.devices import bf16_supported, pick_device

    return "bf16" if bf16_supported(pick_device("auto")) else "fp32"


# Per-token, per-layer activation numbers autograd keeps (see the module docstring); fitted on the
# saved tensors of SmolLM2 (Llama) and MiniLM (BERT) and checked against peak RSS in bench/memory.py.
ACT_HIDDEN = 3.5
ACT_GATED_MLP = 4.0
ACT_PLAIN_MLP = 2.0
ACT_TRAINED_LINEAR_INPUTS_HIDDEN = 3.0
ACT_ATTENTION_PROBS = 3.0
LOGIT_COPIES_FP32 = 3
WORKING_BYTES = 200 * 2**20


def bits_per_weight(precision: str, quantization: str) -> float:
    """Storage bits of one frozen linear weight; per-block/per-row scales included as averages.

    Unquantized weights are fp32 whatever the compute precision: the engine loads fp32 and autocasts."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if quantization == "none":
        return 32.0
    if quantization == "int8":
        return 8.0  # + one fp32 scale per row: well under 0.1 bit a weight
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
    intermediate_size: int = 0
    gated_mlp: bool = False
    attention_dropout: float = 0.0

    @classmethod
    def from_model(cls, model: Any) -> ModelShape:
        """Counts parameters of a (possibly meta-device) transformers model by module kind."""
        from tuners.targets import linear_dims  # the core's rule for a linear layer (GPT-2's Conv1D too)

        total = sum(p.numel() for p in model.parameters())
        linear = 0
        gated = False
        for name, module in model.named_modules():
            is_linear = linear_dims(module) is not None
            if is_linear and not name.endswith(("lm_head", "classifier", "score", "qa_outputs")):
                linear += module.weight.numel()
            gated = gated or name.endswith(("gate_proj", "gate_up_proj", "w1", "wi_0"))
        config = model.config
        hidden = int(_first(config, "hidden_size", "n_embd", "d_model", default=0))
        return cls(
            total_params=total,
            linear_params=linear,
            hidden_size=hidden,
            num_layers=int(_first(config, "num_hidden_layers", "n_layer", "num_layers", default=0)),
            num_heads=int(_first(config, "num_attention_heads", "n_head", "num_heads", default=1)),
            vocab_size=int(_first(config, "vocab_size", default=0)),
            intermediate_size=int(_first(config, "intermediate_size", "n_inner", "d_ff", "ffn_dim", default=4 * hidden)),
            gated_mlp=gated,
            attention_dropout=float(_first(config, "attention_probs_dropout_prob", "attention_dropout", "attn_pdrop",
                                           "dropout", default=0.0)),
        )


def _first(config: Any, *names: str, default: Any) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value:
            return value
    return default


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes by part; ``rows`` says each part in words a person can check."""

    weights_bytes: int
    trainable_bytes: int
    activations_bytes: int
    logits_bytes: int
    working_bytes: int
    bits_per_weight: float
    quantization: str = "none"

    @property
    def total_bytes(self) -> int:
        return (self.weights_bytes + self.trainable_bytes + self.activations_bytes + self.logits_bytes
                + self.working_bytes)

    @property
    def adapter_bytes(self) -> int:
        """The older name of ``trainable_bytes``."""
        return self.trainable_bytes

    def as_rows(self) -> list[tuple[str, str]]:
        return [(key, human_bytes(n)) for key, n in self.parts()] + [("estimate.total", human_bytes(self.total_bytes))]

    def parts(self) -> list[tuple[str, int]]:
        """(label key in ``app.ui.labels``, bytes) per part, in the order the page lists them."""
        weights_key = {"none": "estimate.weights.full", "int8": "estimate.weights.int8"}.get(
            self.quantization, "estimate.weights.nf4")
        return [(weights_key, self.weights_bytes), ("estimate.trainable", self.trainable_bytes),
                ("estimate.activations", self.activations_bytes), ("estimate.logits", self.logits_bytes),
                ("estimate.working", self.working_bytes)]


@dataclass(frozen=True)
class WorkerMemory:
    """The memory a run will have: the GPU's when the worker trains on one, else the machine's RAM."""

    kind: str  # "gpu" or "ram"
    name: str
    total_bytes: int
    available_bytes: int | None = None


def worker_memory(embedded: bool = True) -> WorkerMemory | None:
    """The embedded worker trains in this process's machine: its first CUDA GPU (what ``device:
    auto`` picks) or else its RAM from /proc/meminfo. A separate Celery worker's is unknown here."""
    if not embedded:
        return None
    import torch

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(0)
        return WorkerMemory("gpu", torch.cuda.get_device_name(0), int(total), int(free))
    return ram_memory()


def ram_memory(meminfo: str = "/proc/meminfo") -> WorkerMemory | None:
    try:
        text = Path(meminfo).read_text(encoding="ascii")
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    kib = {k: int(v.split()[0]) * 1024 for k, v in fields.items() if v.split() and v.split()[0].isdigit()}
    if "MemTotal" not in kib:
        return None
    return WorkerMemory("ram", "this machine", kib["MemTotal"], kib.get("MemAvailable"))


def fit_verdict(total_bytes: int, memory: WorkerMemory | None) -> str:
    """"fits", "tight" (fits in the total but not in what is free now), "too_big" or "unknown"."""
    if memory is None:
        return "unknown"
    if total_bytes > memory.total_bytes:
        return "too_big"
    if memory.available_bytes is not None and total_bytes > memory.available_bytes:
        return "tight"
    return "fits"


def gib(n: float) -> str:
    """Bytes as GiB the way the page says them: one decimal, whole numbers from 10 GiB up."""
    value = n / 2**30
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def estimate_training_memory(
    shape: ModelShape,
    trainable_params: int,
    precision: str = "bf16",
    quantization: str = "none",
    batch_size: int = 1,
    seq_len: int = 512,
    full_finetune: bool = False,
    task: str = "CAUSAL_LM",
    trains_base_weights: bool = False,
) -> MemoryEstimate:
    """Bytes needed to train. ``trains_base_weights``: the trainable parameters are the model's own
    (full fine-tuning, BitFit), not new adapter weights; ``full_finetune`` also makes every
    parameter trainable."""
    if trainable_params < 0 or batch_size <= 0 or seq_len <= 0:
        raise ValueError("trainable_params, batch_size and seq_len must be positive")
    bits = bits_per_weight(precision, quantization)
    compute_bytes = 4 if precision == "fp32" else 2
    other_params = max(shape.total_params - shape.linear_params, 0)
    weights = int(shape.linear_params * bits / 8) + other_params * 4
    if full_finetune:
        trainable_params, trains_base_weights = shape.total_params, True
    h, inter = shape.hidden_size, shape.intermediate_size or 4 * shape.hidden_size
    per_token_layer = ACT_HIDDEN * h + (ACT_GATED_MLP if shape.gated_mlp else ACT_PLAIN_MLP) * inter
    if trains_base_weights:
        per_token_layer += ACT_TRAINED_LINEAR_INPUTS_HIDDEN * h + inter
    if shape.attention_dropout > 0:
        per_token_layer += ACT_ATTENTION_PROBS * shape.num_heads * seq_len
    tokens = batch_size * seq_len
    activations = tokens * shape.num_layers * per_token_layer * compute_bytes
    logits = 0
    if task == "CAUSAL_LM":
        logits = tokens * shape.vocab_size * (4 * LOGIT_COPIES_FP32 + (compute_bytes if compute_bytes == 2 else 0))
    if trains_base_weights:
        # Two AdamW moments (+ the bf16 copy autocast caches); the gradients appear layer by layer
        # as backward frees the activations, so only what exceeds the activations adds to the peak.
        trainable = trainable_params * (8 + (2 if compute_bytes == 2 else 0))
        trainable += max(0, trainable_params * 4 - int(activations) - logits)
    else:
        trainable = trainable_params * 16  # fp32 weight, gradient and two AdamW moments
    return MemoryEstimate(
        weights_bytes=int(weights),
        trainable_bytes=int(trainable),
        activations_bytes=int(activations),
        logits_bytes=int(logits),
        working_bytes=WORKING_BYTES,
        bits_per_weight=bits,
        quantization=quantization,
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
