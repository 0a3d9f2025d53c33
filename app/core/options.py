"""The values a run's settings may take, named once.

The spec validates against these, the wizard maps the studio's choices onto them, the memory
estimate prices them, and the engine implements them; a name added here is a name the whole studio
knows. Field reference: docs/runs.md.
"""

from __future__ import annotations

# model.precision: how the frozen base weights are stored.
PRECISIONS = ("full", "int8", "nf4")
# training.scheduler: the learning-rate schedule after warm-up.
SCHEDULERS = ("linear", "cosine", "constant")
# training.device
DEVICES = ("auto", "cpu", "cuda")
# training.head_learning_rate's default: a new classification head (and BERT's pooler, which feeds it)
# starts untrained and is the same layer whatever the method, so it learns at one rate, not the method's
# (a fresh linear layer on a frozen encoder wants ~1e-3; LoRA's 2e-4 leaves it at the label prior, soft
# prompts' 3e-2 throws it about). docs/runs.md, "Classifier heads".
HEAD_LEARNING_RATE = 2e-3
# training.best_metric: what ranks a run's evals (the adapter kept as the run's, early stopping); the
# loss falls as a run improves, accuracy (measured for classifiers only) rises.
BEST_METRICS = ("loss", "accuracy")

# The studio's quantization choice -> (model.precision, model.double_quant).
QUANTIZATIONS: dict[str, tuple[str, bool]] = {
    "none": ("full", False), "int8": ("int8", False), "nf4": ("nf4", False), "nf4-dq": ("nf4", True),
}
# The studio's compute-precision choice -> training.bf16 ("auto": bf16 where the GPU has it).
COMPUTE_PRECISIONS: dict[str, bool | str] = {"auto": "auto", "bf16": True, "fp32": False}
# The studio's compile choice -> training.compile ("auto": where it pays, see worker.compilation).
COMPILE_CHOICES: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}

# Rows of hidden states the engine's causal-LM loss projects onto the vocabulary at a time
# (worker.loss): the most output scores that exist at once, which the memory estimate prices.
LOSS_CHUNK_ROWS = 1024
