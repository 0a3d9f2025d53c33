"""The training-memory estimate for model × method × precision × quantization × batch × length.

The studio shows it in the model step so a person sees, before submitting, whether a run fits the
worker. It is arithmetic on the model's shape (no allocation) that follows what the engine does,
checked against measured peaks (``bench/memory.py``: the bundled SmolLM2-135M and MiniLM with LoRA,
QLoRA and full fine-tuning at two sequence lengths, in bf16 and fp32, against the peak resident
memory on CPU; docs/ui.md has the table). Its parts, each one line on the page:

- base weights, as the engine stores them: in bf16 when the run trains in bf16 (the frozen base is
  converted; ``app.core.devices.trains_in_bf16`` says when), else fp32; a method that trains the
  model's own tensors keeps them fp32 (full fine-tuning, BitFit). Quantized linear layers keep
  exactly what ``tuners.quant`` stores (int8 + an fp32 scale per row; NF4 at 4 bits + an fp32 absmax
  per 64-block, or double quantized ≈ 4.127 bits), their biases fp32; buffers as they are. A
  quantized run does not keep the fp32 checkpoint mapped (``app.core.models.release_checkpoint``);
- what training adds to the trained weights: a new (adapter) parameter costs its fp32 weight, its
  gradient and AdamW's two moments = 16 bytes; a base weight trained in place (full fine-tuning)
  costs the two moments = 8 bytes (+ the bf16 copy autocast keeps of it), and its 4-byte gradient
  only where the gradients outgrow the activations: backward produces them layer by layer as it
  frees those (measured: the peak is at the start of backward, not the sum);
- activations autograd keeps for the backward pass, per token and layer: about 3.5·hidden plus the
  MLP's (4·intermediate when gated like Llama's SwiGLU, else 2·intermediate) at the compute width
  (4 bytes fp32, 2 bf16); when the base weights train too, every linear layer's input as well
  (+3·hidden + intermediate), and the hidden-sized ones stay fp32 in bf16 runs (the residual
  stream follows the fp32 embeddings); RMS norms (Llama) keep fp32 copies of their input in bf16
  (1.5 hidden widths, fitted across methods); where attention has dropout (BERT) the attention
  probabilities are materialised, 3 fp32 numbers per head per token pair (softmax runs in fp32 under
  autocast); on a CPU, packed causal rows go through per-example attention on sdpa's math kernel
  (worker.attention), which keeps each example's probabilities, 1.25 fp32 numbers per head per token
  pair when every example fills its row (the most it keeps). Tokens are batch × max length: causal
  batches are packed without padding, so that is the most a step holds;
- output scores of a language model: the engine's loss projects the hidden states onto the
  vocabulary a chunk of rows at a time (``LOSS_CHUNK_ROWS``, recomputed in backward), so only one
  chunk's scores exist at once: about three fp32 copies (the scores, their log-softmax, its
  gradient) plus the compute-width output, for min(tokens, chunk) rows;
- working memory: the tokenizer, the data, the libraries' buffers (a constant from the bench).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.models import sliding_window
from app.core.options import COMPUTE_PRECISIONS, LOSS_CHUNK_ROWS, QUANTIZATIONS

# Compute dtypes the estimate prices ("auto" is resolved first, as the engine resolves it).
PRECISIONS = ("fp32", "bf16", "fp16")

NF4_BLOCK = 64
DQ_BLOCK = 256


def resolve_precision(precision: str) -> str:
    """The studio's compute-precision choice as the engine resolves it: "auto" is bf16 where
    ``app.core.devices.trains_in_bf16`` says the run trains in bf16 on the device ``auto`` picks."""
    if precision != "auto":
        return precision
    from app.core.devices import pick_device, trains_in_bf16

    return "bf16" if trains_in_bf16(COMPUTE_PRECISIONS["auto"], pick_device("auto")) else "fp32"


# Per-token, per-layer activation numbers autograd keeps (see the module docstring); fitted on the
# saved tensors of SmolLM2 (Llama) and MiniLM (BERT) and checked against peak RSS in bench/memory.py.
ACT_HIDDEN = 3.5
ACT_GATED_MLP = 4.0
ACT_PLAIN_MLP = 2.0
ACT_TRAINED_LINEAR_INPUTS_HIDDEN = 3.0
ACT_ATTENTION_PROBS = 3.0
# Per-example attention on a CPU (worker.attention: packed causal rows, sdpa's math kernel) keeps each
# example's attention probabilities, fp32 numbers per head per token pair; fitted on bench/memory.py's
# SmolLM2 cases (fp32 1.33-1.67, bf16 1.1-1.36), where every example fills its row: the most it keeps.
ACT_EXAMPLE_ATTENTION_PROBS = 1.25
# fp32 copies of an RMS norm's input in bf16 runs, in hidden widths: 2 before LoRA stopped casting its input
# to fp32 by hand (tuners/methods/lora.py), which had kept an extra copy per adapted layer; 1.5 sits between
# the methods on the saved-tensor check (tests/ui/test_estimate.py: LoRA on q/v 1.15, on all linear layers
# 0.91, (IA)³ 0.88 of what autograd keeps, tiny Llama in bf16).
ACT_RMS_NORM_FP32 = 1.5
LOGIT_COPIES_FP32 = 3
WORKING_BYTES = 200 * 2**20


def bits_per_weight(precision: str, quantization: str, trains_base_weights: bool = False) -> float:
    """Average storage bits of one frozen linear weight (scales included as averages).

    Unquantized weights are stored at the compute width when the run trains in bf16 or fp16 (the
    engine converts the frozen base), fp32 when they train themselves or the run is fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if quantization == "none":
        return 32.0 if precision == "fp32" or trains_base_weights else 16.0
    if quantization == "int8":
        return 8.0  # + one fp32 scale per row: well under 0.1 bit a weight
    if quantization == "nf4":
        return 4.0 + 32.0 / NF4_BLOCK
    if quantization == "nf4-dq":
        return 4.0 + 8.0 / NF4_BLOCK + 32.0 / (NF4_BLOCK * DQ_BLOCK)
    raise ValueError(f"quantization: {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")


def quantized_bytes(layers: tuple[tuple[int, int], ...], quantization: str) -> int:
    """Bytes ``tuners.quant`` stores for these (out, in) linear weights under the studio's quantization."""
    from tuners.quant import stored_bytes

    mode, double_quant = QUANTIZATIONS[quantization]
    bits = 8 if mode == "int8" else 4
    return sum(stored_bytes(out_f, in_f, bits=bits, double_quant=double_quant) for out_f, in_f in layers)


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
    rms_norm: bool = False
    sliding_window: bool = False
    # The (out, in) of each linear layer quantization replaces, their bias count, and the model's
    # buffer bytes: what prices the stored weights exactly (empty: averages from bits_per_weight).
    quantizable: tuple[tuple[int, int], ...] = ()
    quantizable_bias_params: int = 0
    buffer_bytes: int = 0

    @classmethod
    def from_model(cls, model: Any) -> ModelShape:
        """Counts parameters of a (possibly meta-device) transformers model by module kind."""
        from tuners.quant import quantizable_layers  # the layers a quantized run replaces
        from tuners.targets import linear_dims

        total = sum(p.numel() for p in model.parameters())
        layers = []
        biases = 0
        for _, module in quantizable_layers(model):
            in_f, out_f = linear_dims(module)
            layers.append((out_f, in_f))
            bias = getattr(module, "bias", None)
            biases += bias.numel() if bias is not None else 0
        names = [name for name, _ in model.named_modules()]
        gated = any(name.endswith(("gate_proj", "gate_up_proj", "w1", "wi_0")) for name in names)
        rms = any("RMSNorm" in type(module).__name__ for module in model.modules())
        config = model.config
        hidden = int(_first(config, "hidden_size", "n_embd", "d_model", default=0))
        return cls(
            total_params=total,
            linear_params=sum(o * i for o, i in layers),
            hidden_size=hidden,
            num_layers=int(_first(config, "num_hidden_layers", "n_layer", "num_layers", default=0)),
            num_heads=int(_first(config, "num_attention_heads", "n_head", "num_heads", default=1)),
            vocab_size=int(_first(config, "vocab_size", default=0)),
            intermediate_size=int(_first(config, "intermediate_size", "n_inner", "d_ff", "ffn_dim", default=4 * hidden)),
            gated_mlp=gated,
            attention_dropout=float(_first(config, "attention_probs_dropout_prob", "attention_dropout", "attn_pdrop",
                                           "dropout", default=0.0)),
            rms_norm=rms,
            sliding_window=sliding_window(config) is not None,
            quantizable=tuple(layers),
            quantizable_bias_params=biases,
            buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
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
        weights_key = {"none": "estimate.weights.full" if self.bits_per_weight == 32 else "estimate.weights.bf16",
                       "int8": "estimate.weights.int8"}.get(self.quantization, "estimate.weights.nf4")
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


def uses_example_attention(shape: ModelShape, task: str, device: str) -> bool:
    """Whether the engine's attention keeps per-example probabilities: packed causal batches on a CPU
    (worker.attention's math kernel; CUDA's kernels keep none), unless the model has a sliding window."""
    return task == "CAUSAL_LM" and device == "cpu" and not shape.sliding_window


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
    example_attention: bool = False,
) -> MemoryEstimate:
    """Bytes needed to train. ``trains_base_weights``: the trainable parameters are the model's own
    (full fine-tuning, BitFit), not new adapter weights; ``full_finetune`` also makes every
    parameter trainable; ``example_attention``: attention runs per example on the math kernel
    (:func:`uses_example_attention`)."""
    if trainable_params < 0 or batch_size <= 0 or seq_len <= 0:
        raise ValueError("trainable_params, batch_size and seq_len must be positive")
    if full_finetune:
        trainable_params, trains_base_weights = shape.total_params, True
    bits = bits_per_weight(precision, quantization, trains_base_weights)
    compute_bytes = 4 if precision == "fp32" else 2
    weights = base_weight_bytes(shape, precision, quantization, trains_base_weights)
    h, inter = shape.hidden_size, shape.intermediate_size or 4 * shape.hidden_size
    hidden_numbers = ACT_HIDDEN * h
    inter_numbers = (ACT_GATED_MLP if shape.gated_mlp else ACT_PLAIN_MLP) * inter
    if trains_base_weights:
        hidden_numbers += ACT_TRAINED_LINEAR_INPUTS_HIDDEN * h
        inter_numbers += inter
    # Trained base tensors stay fp32, the embeddings with them, so the residual stream is fp32 too.
    hidden_bytes = 4 if trains_base_weights else compute_bytes
    per_token_layer = hidden_numbers * hidden_bytes + inter_numbers * compute_bytes
    if shape.rms_norm and compute_bytes == 2:
        per_token_layer += ACT_RMS_NORM_FP32 * h * 4
    if shape.attention_dropout > 0:
        per_token_layer += ACT_ATTENTION_PROBS * shape.num_heads * seq_len * 4
    elif example_attention:
        per_token_layer += ACT_EXAMPLE_ATTENTION_PROBS * shape.num_heads * seq_len * 4
    tokens = batch_size * seq_len
    activations = tokens * shape.num_layers * per_token_layer
    logits = 0
    if task == "CAUSAL_LM":
        rows = min(tokens, LOSS_CHUNK_ROWS)
        logits = rows * shape.vocab_size * (4 * LOGIT_COPIES_FP32 + (compute_bytes if compute_bytes == 2 else 0))
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


def base_weight_bytes(shape: ModelShape, precision: str, quantization: str = "none",
                      trains_base_weights: bool = False) -> int:
    """Bytes of the model's own parameters and buffers as the engine holds them for this run (see the
    module docstring): quantized layers as ``tuners.quant`` stores them, the rest at the storage
    width; buffers as they are."""
    stored = 4 if precision == "fp32" or trains_base_weights else 2
    if quantization == "none":
        return shape.total_params * stored + shape.buffer_bytes
    if shape.quantizable:
        linear = quantized_bytes(shape.quantizable, quantization)
    else:
        linear = int(shape.linear_params * bits_per_weight(precision, quantization) / 8)
    biases = shape.quantizable_bias_params  # a quantized layer keeps its bias as loaded: fp32
    other = max(shape.total_params - shape.linear_params - biases, 0)
    return linear + biases * 4 + other * stored + shape.buffer_bytes


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
