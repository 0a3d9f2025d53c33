"""Turn the wizard's choices into a RunSpec (the same object `tunestudio train spec.yaml` reads).

The UI collects plain values; this module owns the presets and applies the shared rules: the task
a shape implies (``app.core.tasks``) and how the studio's precision and quantization choices map
onto the spec (``app.core.options``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import tuners
from app.core.options import COMPILE_CHOICES, COMPUTE_PRECISIONS, HEAD_LEARNING_RATE, QUANTIZATIONS
from app.core.spec import DataSpec, ModelSpec, RunSpec, SpecError, TrainingSpec
from app.core.tasks import task_for
from app.services.method_form import build_config, config_values


@dataclass(frozen=True)
class Preset:
    """How long and how wide a preset's run is; the learning rate is always the chosen method's own
    (tuners' ``Method.learning_rate``): one rate for every method left (IA)³ and soft prompts untrained.

    ``quick`` is sized by the data: about ``epochs`` passes over the training rows, but never fewer than
    ``min_steps`` nor more than ``max_steps`` optimizer steps, so a small dataset is really learned and a
    large one still ends in minutes. A classifier gets ``classifier_epochs`` and ``classifier_max_steps``:
    its new head must first learn the classes before the method can move the features it reads: on the
    drug-review demo two passes capped at 150 steps left 11 of 15 methods at the majority class, three
    passes (300 steps) 4, and those had causes of their own (docs/runs.md, "Presets"). The other presets
    train whole epochs (``max_steps`` None). Either way about ``evals`` evals are spread over the run when
    the data's size is known, else one every ``eval_every`` steps."""

    epochs: float
    batch_size: int
    eval_every: int
    evals: int
    max_steps: int | None = None
    min_steps: int = 0
    classifier_epochs: float | None = None
    classifier_max_steps: int | None = None

    def _sized_as_classifier(self, task: str | None) -> bool:
        return task == "SEQ_CLS" and self.classifier_epochs is not None

    def epochs_for(self, task: str | None) -> float:
        """The passes this preset aims at for the task (the train step's Epochs field shows it)."""
        return self.classifier_epochs if self._sized_as_classifier(task) else self.epochs

    def steps(self, train_rows: int | None, task: str | None) -> int | None:
        """Optimizer steps of a capped preset (None: epochs decide); ``min_steps`` when the rows are unknown."""
        if self.max_steps is None:
            return None
        if not train_rows:
            return self.min_steps
        cap = (self.classifier_max_steps or self.max_steps) if self._sized_as_classifier(task) else self.max_steps
        return max(self.min_steps, min(cap, math.ceil(self.epochs_for(task) * train_rows / self.batch_size)))


PRESETS: dict[str, Preset] = {
    "quick": Preset(epochs=1.0, classifier_epochs=3.0, batch_size=8, min_steps=30, max_steps=150,
                    classifier_max_steps=300, eval_every=10, evals=5),
    "balanced": Preset(epochs=2.0, batch_size=8, eval_every=50, evals=8),
    "thorough": Preset(epochs=4.0, batch_size=8, eval_every=100, evals=10),
}
# The fields a preset sets (in the train step and a spec's training section).
PRESET_KEYS = ("epochs", "batch_size", "max_steps", "eval_every", "learning_rate")
# A learning rate this many times outside the method's usual range gets a warning.
LR_WARN_FACTOR = 10.0
# Evals without improvement before a run stops, when a person turns early stopping on.
EARLY_STOPPING_PATIENCE = 3


def preset_values(preset: str, peft_type: str, *, task: str | None = None,
                  train_rows: int | None = None) -> dict[str, Any]:
    """The preset's training values (``PRESET_KEYS``) for this method, task and number of training rows
    (None: not known yet, e.g. before the data step): the one rule the studio's train step and
    ``bench/quick_preset.py`` use. ``max_steps`` 0 means "by epochs"."""
    p = PRESETS[preset]
    steps = p.steps(train_rows, task)
    if train_rows:
        total = steps or math.ceil(p.epochs_for(task) * train_rows / p.batch_size)
        eval_every = max(5, math.ceil(total / p.evals))
    else:
        eval_every = p.eval_every
    return {"epochs": p.epochs_for(task), "batch_size": p.batch_size, "max_steps": steps or 0,
            "eval_every": eval_every, "learning_rate": tuners.method_for(peft_type).learning_rate}


@dataclass(frozen=True)
class LearningRateCheck:
    """Where a learning rate stands against its method's usual range (``off_by`` > 1: that many times
    above the top (``high``) or below the bottom of it)."""

    method: str
    default: float
    low: float
    high: float
    off_by: float
    too_high: bool

    @property
    def far_off(self) -> bool:
        return self.off_by > LR_WARN_FACTOR


def check_learning_rate(peft_type: str, learning_rate: float | None) -> LearningRateCheck:
    method = tuners.method_for(peft_type)
    low, high = method.learning_rate_range
    lr = float(learning_rate or 0.0)
    if lr > high:
        off_by, too_high = lr / high, True
    elif lr < low:
        off_by, too_high = (low / lr if lr > 0 else float("inf")), False
    else:
        off_by, too_high = 1.0, False
    return LearningRateCheck(method.name, method.learning_rate, low, high, off_by, too_high)


@dataclass
class WizardChoices:
    name: str
    model: str
    dataset: str
    peft_type: str
    method_values: dict[str, Any]
    shape: str = "auto"
    mapping: dict[str, str] = field(default_factory=dict)
    model_tasks: tuple[str, ...] = ()
    trust_remote_code: bool = False
    precision: str = "auto"
    quantization: str = "none"
    val_fraction: float = 0.1
    dedupe: bool = True
    max_length: int = 512
    epochs: float = 1.0
    learning_rate: float = 2e-4
    batch_size: int = 8
    max_steps: int = 0
    grad_accum: int = 1
    warmup_steps: int = 0
    scheduler: str = "linear"
    weight_decay: float = 0.0
    head_learning_rate: float = HEAD_LEARNING_RATE
    eval_every: int = 50
    checkpoint_every: int = 0
    seed: int = 42
    # The spec's one field training.early_stopping_patience (0 = off), shown as a switch and a number.
    early_stopping: bool = False
    early_stopping_patience: int = EARLY_STOPPING_PATIENCE
    compile: str = "auto"  # app.core.options.COMPILE_CHOICES
    gradient_checkpointing: bool = False


def build_spec(c: WizardChoices) -> RunSpec:
    """The validated spec; raises SpecError / ConfigError naming the field."""
    task = task_for(c.shape, c.model_tasks)
    patience = int(c.early_stopping_patience or 0) if c.early_stopping else 0
    if c.early_stopping and patience < 1:
        raise SpecError("training.early_stopping_patience", "with early stopping on, the patience must be at "
                        f"least 1 evaluation, got {c.early_stopping_patience!r}")
    adapter = build_config(c.peft_type, c.method_values, task_type=task)
    method = {"peft_type": adapter.peft_type, **config_values(adapter)}
    precision, double_quant = QUANTIZATIONS.get(c.quantization, QUANTIZATIONS["none"])
    spec = RunSpec(
        name=(c.name or "").strip() or f"{c.peft_type.lower()}-{c.model.rsplit('/', 1)[-1]}",
        model=ModelSpec(name=c.model.strip(), task=task, trust_remote_code=bool(c.trust_remote_code),
                        precision=precision, double_quant=double_quant),
        data=DataSpec(dataset=str(c.dataset), shape=c.shape or "auto",
                      mapping={k: v for k, v in (c.mapping or {}).items() if v},
                      max_length=int(c.max_length), val_fraction=float(c.val_fraction), dedupe=bool(c.dedupe)),
        method=method,
        training=TrainingSpec(
            epochs=float(c.epochs), max_steps=int(c.max_steps) or None, batch_size=int(c.batch_size),
            grad_accum=int(c.grad_accum), learning_rate=float(c.learning_rate),
            weight_decay=float(c.weight_decay), head_learning_rate=float(c.head_learning_rate),
            warmup_steps=int(c.warmup_steps), scheduler=c.scheduler,
            eval_every=int(c.eval_every), checkpoint_every=int(c.checkpoint_every), seed=int(c.seed),
            early_stopping_patience=patience,
            compile=COMPILE_CHOICES.get(c.compile, "auto"), gradient_checkpointing=bool(c.gradient_checkpointing),
            bf16=COMPUTE_PRECISIONS.get(c.precision, "auto"),
        ),
    )
    spec.validate()
    return spec
