"""The training engine: one RunSpec in, one adapter folder out, progress reported as it goes.

It knows nothing of Celery or the registry; a :class:`Reporter` (the task's registry reporter, or a
test's in-memory one) receives metric points, log lines and artifacts, and says when to stop.
Everything that can be wrong with a spec (model, data, method) is checked before the first step.

A run is a :class:`TrainingRecipe` read top to bottom: ``setup()`` (tokenizer, data, model, optimizer
and schedule, eval plan), ``train()`` (the loop: one optimizer step per ``forward_backward`` over the
step's micro-batches, evals, checkpoints), ``evaluate()``, ``save()``. What changes as it trains is
one :class:`TrainState` (adapter, optimizer, schedule, RNG, data order and cursor, step, evals), so
``save_checkpoint`` / ``resume_from`` continue a run exactly. :func:`train` is the entry point.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F

from app.core.recipe import recipe
from app.core.spec import RunSpec, SpecError
from app.data.chat import chat_template_files
from app.data.pipeline import prepare_for_run
from app.data.prepare import IGNORE
from app.data.sources import DatasetResolver, resolve_dataset_file
from worker.attention import BOUNDARY_KEYS, use_packed_attention, use_sdpa
from worker.best_adapter import BEST, best_dir, clear_best, replace_best
from worker.checkpoints import CHECKPOINTS, STATE_FILE, checkpoint_dir, is_complete, prune_checkpoints
from worker.compilation import LENGTH_BUCKET, backend_name, compile_blocks, compile_wanted
from worker.loss import chunked_lm_loss, head_detached, hidden_loss_breaks
from worker.packing import REAL_TOKENS, bucketed, pack_batch, packing_breaks, real_tokens
from worker.precision import store_frozen_in, train_in_bf16
from worker.prefetch import Batch, Prefetcher
from worker.recompute import enable_gradient_checkpointing

if TYPE_CHECKING:
    from tuners.model import TunedModel

# Batches a data-driven method (FishMask) sees before training to choose what it trains.
CALIBRATION_BATCHES = 8
STATE_VERSION = 1


class Cancelled(Exception):
    """The run was asked to stop; the metric history stays."""


class Preempted(Exception):
    """The worker is stopping (SIGTERM): the run stopped between steps after writing ``checkpoint`` (None
    before its first step, when there is nothing to keep) and is to be given back to the queue."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        self.step, self.checkpoint = step, checkpoint
        super().__init__(f"worker stopping at step {step}" + (f"; checkpoint {checkpoint}" if checkpoint else ""))


@dataclass(frozen=True)
class Point:
    step: int
    epoch: float
    split: str
    loss: float | None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    grad_norm: float | None = None
    accuracy: float | None = None


class Reporter(Protocol):
    def metric(self, point: Point) -> None: ...
    def log(self, message: str, level: str = "info") -> None: ...
    def progress(self, step: int, total_steps: int) -> None: ...
    def artifact(self, kind: str, path: Path, step: int | None) -> None: ...
    def should_stop(self) -> bool: ...
    def preempted(self) -> bool: ...


@dataclass
class MemoryReporter:
    """Keeps everything in lists; for tests, benchmarks and dry runs."""

    points: list[Point] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    artifacts: list[tuple[str, Path, int | None]] = field(default_factory=list)
    stop_after_step: int | None = None
    preempt_after_step: int | None = None
    step: int = 0

    def metric(self, point: Point) -> None:
        self.points.append(point)

    def log(self, message: str, level: str = "info") -> None:
        self.lines.append(f"{level} {message}")

    def progress(self, step: int, total_steps: int) -> None:
        self.step = step

    def artifact(self, kind: str, path: Path, step: int | None) -> None:
        self.artifacts.append((kind, path, step))

    def should_stop(self) -> bool:
        return self.stop_after_step is not None and self.step >= self.stop_after_step

    def preempted(self) -> bool:
        return self.preempt_after_step is not None and self.step >= self.preempt_after_step


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    label_names: list[str] | None
    first_eval_loss: float | None  # at step 0, on the eval sample (training.eval_samples)
    last_eval_loss: float | None  # after the last step, on the whole validation split
    last_sample_eval_loss: float | None = None  # after the last step, on the step-0 sample (compare with first)
    best_step: int | None = None  # the best eval on training.best_metric (the sample figure every eval shares)
    best_sample_eval_loss: float | None = None
    stopped_early: str | None = None  # why a callback stopped the loop before its last step
    eval_metrics: dict[str, float] = field(default_factory=dict)  # the last eval's, on the whole split
    best_adapter_dir: Path | None = None  # the best eval's adapter (adapter_dir when that is the last step's)


# ---------------------------------------------------------------------------------------------- batches and loss
def collate(examples: list[dict[str, Any]], pad_id: int, width: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad token lists into a batch (to ``width`` at least); labels pad with IGNORE (-100) so padding
    carries no loss."""
    width = max(width, *(len(e["input_ids"]) for e in examples))
    batch: dict[str, torch.Tensor] = {
        "input_ids": torch.tensor(
            [list(e["input_ids"]) + [pad_id] * (width - len(e["input_ids"])) for e in examples]),
        "attention_mask": torch.tensor(
            [list(e.get("attention_mask") or [1] * len(e["input_ids"])) + [0] * (width - len(e["input_ids"]))
             for e in examples]
        ),
    }
    if "label" in examples[0]:
        batch["labels"] = torch.tensor([int(e["label"]) for e in examples])
    elif "labels" in examples[0]:
        lw = max(len(e["labels"]) for e in examples)
        batch["labels"] = torch.tensor([list(e["labels"]) + [IGNORE] * (lw - len(e["labels"])) for e in examples])
    return batch


def scored_labels(labels: torch.Tensor, task: str) -> torch.Tensor:
    """The labels the loss scores, one per prediction: a causal LM's position t predicts token t+1, so
    its first label is never a target; a classifier has one label per example."""
    return labels[:, 1:] if task == "CAUSAL_LM" else labels


def target_count(labels: torch.Tensor, task: str) -> int:
    """What a loss is averaged over: target tokens (causal and seq2seq LMs) or examples (SEQ_CLS)."""
    return int((scored_labels(labels, task) != IGNORE).sum())


def predictions(logits: torch.Tensor, labels: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) flattened to one row per scored label, as the loss and the eval metrics see them.

    A soft-prompt method puts its virtual positions before the input, so a causal LM's logits are
    taken from the end: the input's own positions, each scored against the next token (the same
    targets for every method).
    """
    if task == "SEQ_CLS":
        return logits, labels
    if task == "CAUSAL_LM":
        logits = logits[:, -labels.shape[1] :][:, :-1]
    targets = scored_labels(labels, task)
    return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)


def summed_loss(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Cross-entropy summed over the batch's targets (in fp32, as transformers computes it); divided by a
    target count chosen by the caller: the whole optimizer step's in training, the split's in eval."""
    scores, targets = predictions(logits, labels, task)
    return F.cross_entropy(scores.float(), targets, ignore_index=IGNORE, reduction="sum")


@dataclass(frozen=True)
class EvalMetric:
    """A figure computed at each eval beside the loss: ``measure(logits, labels)`` → (total, count) per
    batch on the flattened predictions (:func:`predictions`); the figure is Σ total / Σ count."""

    name: str
    measure: Callable[[torch.Tensor, torch.Tensor], tuple[float, int]]


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    scored = labels != IGNORE
    return float((logits.argmax(-1)[scored] == labels[scored]).sum()), int(scored.sum())


# Share of targets whose most likely prediction is right: examples for a classifier, next tokens for an LM.
ACCURACY = EvalMetric("accuracy", _accuracy)


def default_metrics(task: str) -> tuple[EvalMetric, ...]:
    """Metrics every run of ``task`` reports (a classifier's accuracy is a column of the metric points)."""
    return (ACCURACY,) if task == "SEQ_CLS" else ()


# ---------------------------------------------------------------------------------------------- eval and log
# At most this many per-step lines in a run's log (the UI shows the log's tail); longer runs log every N steps.
STEP_LOG_LINES = 100


@dataclass(frozen=True)
class EvalPlan:
    """Which validation examples the evals before the last see (``sample``; None = all of them)."""

    sample: list[int] | None
    rest: list[int]


def eval_plan(n_eval: int, eval_samples: int | None, seed: int) -> EvalPlan:
    """A fixed, seeded sample of the validation split, the same at every eval so the curve compares
    like with like; None when the cap is off or the split is no bigger than it."""
    if not eval_samples or n_eval <= eval_samples:
        return EvalPlan(None, [])
    sample = sorted(random.Random(seed).sample(range(n_eval), eval_samples))
    chosen = set(sample)
    return EvalPlan(sample, [i for i in range(n_eval) if i not in chosen])


def step_log_interval(total_steps: int, log_every: int) -> int:
    """Every logged step gets a log line while that stays under ``STEP_LOG_LINES`` lines; longer runs
    log every k-th logged step (the metric points, and so the chart, keep every one)."""
    per_line = max(1, math.ceil(total_steps / (STEP_LOG_LINES * log_every)))
    return per_line * log_every


@dataclass(frozen=True)
class EvalResult:
    """One eval. ``sample_loss`` is on the fixed sample every eval shares (compare these across steps);
    ``loss`` and ``metrics`` are on what this eval saw (the sample, or the whole split at the end)."""

    step: int
    loss: float
    sample_loss: float
    examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    sample_metrics: dict[str, float] = field(default_factory=dict)

    def sample_figure(self, metric: str) -> float:
        """``metric`` ("loss" or a metric's name) on the fixed sample every eval shares: what evals are ranked by."""
        if metric == "loss":
            return self.sample_loss
        return self.sample_metrics[metric] if metric in self.sample_metrics else self.metrics[metric]


# Figures that rise as a run gets better (the loss falls); training.best_metric names one of them or the loss.
RISING_METRICS = frozenset({"accuracy"})


def improves(result: EvalResult, best: EvalResult, metric: str = "loss", min_delta: float = 0.0) -> bool:
    """Whether ``result`` beats ``best`` on ``metric`` by more than ``min_delta`` (on the shared sample)."""
    new, old = result.sample_figure(metric), best.sample_figure(metric)
    return new > old + min_delta if metric in RISING_METRICS else new < old - min_delta


# After each eval the loop asks its callbacks; a returned reason stops it (the run then ends as usual:
# last eval on the whole split, adapter saved).
EvalCallback = Callable[[EvalResult, "TrainState"], str | None]


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``patience`` evals in a row have not bettered the best so far on ``metric`` (the sample eval
    loss, or accuracy) by more than ``min_delta``. Reads only the state's eval history, so a resumed run
    decides the same."""

    patience: int
    min_delta: float = 0.0
    metric: str = "loss"

    def __call__(self, result: EvalResult, state: TrainState) -> str | None:
        best = state.best(self.min_delta, self.metric)
        since = sum(1 for e in state.evals if e.step > best.step) if best is not None else 0
        if since >= self.patience:
            return (f"no eval improved on step {best.step}'s {self.metric} {best.sample_figure(self.metric):.4f} "
                    f"by more than {self.min_delta:g} in {since} evals (early stopping, patience {self.patience})")
        return None


# ------------------------------------------------------------------------------------------ schedule and device
def lr_lambda(scheduler: str, warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / (warmup + 1)
        if scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        progress = min(max(progress, 0.0), 1.0)
        if scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def rng_state() -> dict[str, Any]:
    """Every random generator training draws from (dropout, Python's ``random``), to put in a checkpoint."""
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise SpecError("training.device", "cuda requested but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


# ---------------------------------------------------------------------------------------------- state
class DataOrder:
    """The order training examples are drawn in: a fresh seeded permutation each epoch and a cursor into
    it. The last batch of an epoch may be short; the next epoch starts a new permutation."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.cursor = 0
        self.epochs_begun = 0

    def take(self, count: int) -> list[int]:
        if self.cursor >= len(self.order):
            self.order = torch.randperm(self.size, generator=self.generator).tolist()
            self.cursor = 0
            self.epochs_begun += 1
        indices = self.order[self.cursor : self.cursor + count]
        self.cursor += count
        return indices

    def peek(self, count: int, times: int = 1) -> list[list[int]] | None:
        """What the next ``times`` calls of ``take(count)`` will return, without taking them; None when they
        reach past this epoch's permutation (the next one is drawn only when taken)."""
        cursor, upcoming = self.cursor, []
        for _ in range(times):
            if cursor >= len(self.order):
                return None
            upcoming.append(self.order[cursor : cursor + count])
            cursor += count
        return upcoming

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": torch.tensor(self.order, dtype=torch.long),
                "cursor": self.cursor, "epochs_begun": self.epochs_begun, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["size"] != self.size:
            raise SpecError("data", f"the checkpoint was drawn from {state['size']:,} training examples, "
                                    f"this run has {self.size:,}; resume needs the same data and settings")
        self.generator.set_state(state["generator"])
        self.order = state["order"].tolist()
        self.cursor, self.epochs_begun = state["cursor"], state["epochs_begun"]


@dataclass
class TrainState:
    """Everything that changes as a run trains, in one object so a checkpoint saves and restores it whole:
    the adapter's trainable tensors, the optimizer and schedule, the data order and cursor, the step,
    the evals so far, and (in ``state_dict``) every RNG. Restored into a recipe set up from the same spec,
    the run continues exactly as if it had never stopped."""

    tuned: TunedModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data: DataOrder
    step: int = 0
    evals: list[EvalResult] = field(default_factory=list)

    def best(self, min_delta: float = 0.0, metric: str = "loss") -> EvalResult | None:
        """The best eval on ``metric`` (the lowest sample loss by default); a later one counts only when it
        betters the best before it by more than ``min_delta`` (:func:`improves`)."""
        best: EvalResult | None = None
        for e in self.evals:
            if best is None or improves(e, best, metric, min_delta):
                best = e
        return best

    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        return {k: p for k, p in self.tuned.adapter_parameters().items() if p.requires_grad}

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "evals": [asdict(e) for e in self.evals],
            "adapter": {k: p.detach().cpu().clone() for k, p in self._trainable().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "data": self.data.state_dict(),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise SpecError("training", f"checkpoint format {state.get('version')!r} is not this engine's "
                                        f"({STATE_VERSION})")
        params = self._trainable()
        saved = state["adapter"]
        if set(saved) != set(params) or any(saved[k].shape != p.shape for k, p in params.items()):
            raise SpecError("method", "the checkpoint's adapter does not match this run's method and model; "
                                      "resume needs the spec the checkpoint was written by")
        with torch.no_grad():
            for key, param in params.items():
                param.copy_(saved[key])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.data.load_state_dict(state["data"])
        self.step = state["step"]
        self.evals = [EvalResult(**e) for e in state["evals"]]
        set_rng_state(state["rng"])


# ---------------------------------------------------------------------------------------------- the recipe
class TrainingRecipe:
    """One run of a spec, in stages: ``setup()`` then ``run()`` (``train()`` → last ``evaluate()`` → ``save()``).

    ``callbacks`` are asked after every eval whether to stop (:class:`EarlyStopping`); ``metrics`` are
    computed at every eval beside the loss and the task's own (:func:`default_metrics`).
    ``data_cache_dir`` (the studio's ``Settings.data_cache_dir``) keeps the prepared data, so the next run
    on the same data and settings tokenizes nothing; without it the data is prepared in a temporary folder.
    """

    def __init__(
        self,
        spec: RunSpec,
        out_dir: Path,
        reporter: Reporter,
        models_dir: Path,
        resolver: DatasetResolver | None = None,
        *,
        callbacks: Sequence[EvalCallback] = (),
        metrics: Sequence[EvalMetric] = (),
        data_cache_dir: Path | None = None,
    ) -> None:
        spec.validate()
        self.spec, self.out_dir, self.reporter, self.models_dir = spec, Path(out_dir), reporter, models_dir
        self.data_cache_dir = data_cache_dir
        self.resolver = resolver or resolve_dataset_file
        self.callbacks = list(callbacks)
        es = spec.training
        if es.early_stopping_patience:  # the spec's own early stopping, beside any callbacks given
            self.callbacks.append(EarlyStopping(es.early_stopping_patience, es.early_stopping_min_delta,
                                                es.best_metric))
        self.extra_metrics = list(metrics)
        self.training = spec.training
        self.stopped_early: str | None = None
        self.length_bucket = 1  # batches' lengths are multiples of this (within max_length) for compiled blocks

    # ------------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Everything before the first step; every check that can fail on the spec fails here."""
        self.reporter.log(f"recipe: {recipe(self.spec)}")  # first, so the log says what this run is
        self.device = pick_device(self.training.device)
        self.bf16 = train_in_bf16(self.training.bf16, self.device)
        seed_everything(self.training.seed)
        self._setup_tokenizer()
        self._setup_data()
        seed_everything(self.training.seed)
        self._setup_model()
        self._setup_compute()
        self._setup_optimizer()
        self._setup_eval()
        t = self.training
        self.state = TrainState(self.tuned, self.optimizer, self.scheduler, DataOrder(len(self.train_data), t.seed))
        self.reporter.progress(0, self.total_steps)
        self.reporter.log(
            f"training: {self.total_steps} steps ({self.steps_per_epoch} per epoch), batch {t.batch_size} "
            f"x accumulation {t.grad_accum}, lr {t.learning_rate:g} {t.scheduler}, warmup {t.warmup_steps}")

    def _setup_tokenizer(self) -> None:
        from app.core.models import load_tokenizer, position_limit, resolve_model

        spec = self.spec
        self.reporter.log(f"model: resolving {spec.model.name!r}")
        self.model_ref = resolve_model(spec.model.name, self.models_dir)
        self.tokenizer = load_tokenizer(self.model_ref, spec.model.trust_remote_code)
        self.max_positions = position_limit(self.model_ref, spec.model.trust_remote_code)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _setup_data(self) -> None:
        """The data stage is :func:`app.data.pipeline.prepare_for_run` (cached in ``data_cache_dir``); the
        engine reads its splits by ``len``, ``take`` (a batch in one Arrow query) and ``lengths``."""
        prepared, self.task = prepare_for_run(self.spec, self.tokenizer, self.resolver, self.reporter.log,
                                              self.max_positions, cache_dir=self.data_cache_dir)
        self.train_data, self.eval_data = prepared.train, prepared.eval
        self.label_names = list(prepared.label_names) if prepared.label_names else None
        self.data_shape = prepared.stats["shape"]
        t = self.training
        micro_per_epoch = math.ceil(len(self.train_data) / t.batch_size)
        self.steps_per_epoch = max(1, math.ceil(micro_per_epoch / t.grad_accum))
        self.total_steps = t.max_steps or max(1, math.ceil(t.epochs * self.steps_per_epoch))

    def _setup_model(self) -> None:
        """Load the base, quantize it if asked, attach the method (calibrating it on a few batches if it
        chooses what to train from the data)."""
        import tuners
        from app.core.models import load_model, release_checkpoint

        spec = self.spec
        model = load_model(self.model_ref, self.task, self.tokenizer, spec.model.trust_remote_code,
                           self.label_names)
        self._choose_loss(model)
        config = tuners.config_from_dict(spec.adapter_config_dict(self.task)).for_run(self.total_steps)
        config.validate()
        if config.base_model_name_or_path is None:
            config = config.replace(base_model_name_or_path=spec.model.name)
        self._choose_batches(model, tuners.method_for(config))
        if spec.model.precision != "full":
            bits = 4 if spec.model.precision == "nf4" else 8
            quantized = tuners.quantize(model, bits=bits, double_quant=spec.model.double_quant,
                                        compute_dtype=torch.bfloat16 if self.bf16 else torch.float32)
            model = quantized if quantized is not None else model
            release_checkpoint(model)  # else the fp32 file pages quantizing read stay resident all run
        tuned = tuners.apply(model, config)
        self.tuned = tuned
        if tuned.method.calibrate is not None:
            tuned.to(self.device)
            size, n = self.training.batch_size, len(self.train_data)
            calibration = [self._batch(range(i, min(i + size, n)), self.train_data, packed=False)
                           for i in range(0, min(n, CALIBRATION_BATCHES * size), size)]
            self.reporter.log(f"method: calibrating {tuned.method.name} on {len(calibration)} training batches")
            tuned.method.calibrate(tuned, calibration)
        if self.bf16:  # after calibration, which runs in fp32 outside autocast
            store_frozen_in(tuned, torch.bfloat16)
        tuned.to(self.device)
        trainable, total = tuned.trainable_parameters()
        self.reporter.log(
            f"method: {tuned.method.name}; trainable parameters {trainable:,} of {total:,} "
            f"({100 * trainable / max(total, 1):.3f}%) on {self.device.type}"
            f"{' in bf16 (autocast; frozen base stored in bf16, trained tensors in fp32)' if self.bf16 else ''}")
        self.params = [p for p in tuned.parameters() if p.requires_grad]
        if not self.params:
            raise SpecError("method", "the adapter has no trainable parameters for this model")
        peft_ok, reason = tuned.method.peft_loads(tuned, tuned.active_adapter)
        if not peft_ok:
            self.reporter.log(f"method: note: {reason}; the adapter will load with TuneStudio's tuners only")

    def _setup_compute(self) -> None:
        """How a step computes, never what: gradient checkpointing (``training.gradient_checkpointing``,
        worker.recompute) and the model's blocks compiled (``training.compile``, worker.compilation), with
        batch lengths bucketed for them; a compile that fails falls back to eager, saying why."""
        if self.training.gradient_checkpointing:
            reason = enable_gradient_checkpointing(self.tuned.model)
            if reason is None:
                self.reporter.log("memory: gradient checkpointing: each block keeps only its input and "
                                  "recomputes its activations in backward")
            else:
                self.reporter.log(f"memory: no gradient checkpointing: {reason}", "warn")
        wanted, why = compile_wanted(self.training.compile, self.device)
        if not wanted:
            self.reporter.log(f"speed: the model's blocks run eager: {why}")
            return
        self.length_bucket = LENGTH_BUCKET
        per_example = self.per_example_attention
        if per_example:  # a loop over each batch's examples cannot be traced: compiled blocks take sdpa's mask
            use_sdpa(self.tuned.model)
            self.per_example_attention = False
        count, reason = compile_blocks(self.tuned.model, self._compile_trial)
        if reason is not None:
            self.length_bucket = 1
            self.per_example_attention = per_example and use_packed_attention(self.tuned.model) is None
            self.reporter.log(f"speed: the model's blocks run eager: compiling them failed ({reason})", "warn")
            return
        self.reporter.log(f"speed: {count} blocks compiled (torch.compile, {backend_name()}; {why}); batch lengths "
                          f"padded to multiples of {LENGTH_BUCKET} tokens")

    def _compile_trial(self) -> None:
        """A training forward and backward (and an eval forward, when the run evaluates) on the first
        training examples, so the compiled blocks compile now, where a failure can still fall back; random
        state, gradients and the model's mode are left as they were."""
        batch = self._batch(range(min(self.training.batch_size, len(self.train_data))), self.train_data)
        random_state, was_training = rng_state(), self.tuned.training
        try:
            self.tuned.train()
            with self._autocast():
                summed = self._summed_loss(batch)
            summed.backward()
            if self.eval_data:
                self.tuned.eval()
                with torch.no_grad(), self._autocast():
                    self._summed_loss(batch)
        finally:
            self.tuned.train(was_training)
            for param in self.params:
                param.grad = None
            set_rng_state(random_state)

    def _setup_optimizer(self) -> None:
        t = self.training
        heads = {id(p) for p in self.tuned.head_parameters()}
        groups = [{"params": [p for p in self.params if id(p) not in heads]},
                  {"params": [p for p in self.params if id(p) in heads], "lr": t.head_learning_rate}]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=t.learning_rate,
                                           weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(t.scheduler, t.warmup_steps, self.total_steps))

    def _setup_eval(self) -> None:
        self.metrics = [*default_metrics(self.task), *self.extra_metrics]
        best_metric = self.spec.training.best_metric
        if best_metric != "loss" and best_metric not in {m.name for m in self.metrics}:
            raise SpecError("training.best_metric", f"{best_metric} is not measured for this run's task "
                                                    f"({self.task}): use loss")
        self.plan = eval_plan(len(self.eval_data), self.training.eval_samples, self.training.seed)
        self.eval_lengths = self.eval_data.lengths()  # token counts from the Arrow offsets, for length-sorted batches
        if self.plan.sample is not None:
            n = len(self.eval_data)
            self.reporter.log(f"eval: every eval before the last on {len(self.plan.sample)} of {n:,} validation "
                              f"examples (a fixed sample, training.eval_samples); the last on all {n:,}")

    # ------------------------------------------------------------------------------------------ the loop
    def train(self) -> None:
        """Optimizer steps until the last (or until a callback stops the loop); raises :class:`Cancelled`
        when the reporter asks to stop between steps, :class:`Preempted` when the worker is stopping (each
        after a checkpoint of the step reached, so a resume loses nothing). Continues from ``state.step``
        after a resume."""
        t, state = self.training, self.state
        log_lines_every = step_log_interval(self.total_steps, t.log_every)
        self.tuned.train()
        if state.step == 0 and not state.evals:
            self.evaluate()
        window_tokens, window_start = 0, time.perf_counter()
        self.last_checkpoint_at = time.monotonic()
        self.prefetcher = Prefetcher(lambda indices: self._batch(indices, self.train_data))
        while state.step < self.total_steps:
            if self.reporter.should_stop():
                if state.step:  # so resuming a cancelled run loses nothing
                    self.checkpoint()
                raise Cancelled(f"cancelled at step {state.step}")
            if self.reporter.preempted():
                raise Preempted(state.step, self.checkpoint() if state.step else None)
            micro_batches = self._next_batches()
            window_tokens += sum(real_tokens(b) for b in micro_batches)
            loss = self.forward_backward(micro_batches, step=state.step + 1)
            grad_norm = _grad_norm(self.params, t.max_grad_norm)
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            state.step += 1
            step = state.step
            if self.tuned.method.after_backward is not None:
                self.tuned.method.after_backward(self.tuned, self.tuned.active_adapter, step)
            self.optimizer.zero_grad(set_to_none=True)
            self.reporter.progress(step, self.total_steps)
            if step % t.log_every == 0 or step == self.total_steps:
                speed = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                self.reporter.metric(Point(step, self.epoch, "train", loss, lr, speed, grad_norm))
                if step == 1 or step % log_lines_every == 0 or step == self.total_steps:
                    self.reporter.log(f"step {step}/{self.total_steps}: loss {loss:.4f} · lr {lr:.3g} · "
                                      f"{speed:,.0f} tokens/s · grad norm {grad_norm:.3g}")
                window_tokens, window_start = 0, time.perf_counter()
            if t.eval_every and step % t.eval_every == 0 and step != self.total_steps:
                self.evaluate()
                if self.stopped_early:
                    self.reporter.log(f"stopping at step {step}: {self.stopped_early}")
                    break
            if step != self.total_steps and self._checkpoint_due(step):
                self.checkpoint()

    def _next_batches(self) -> list[Batch]:
        """This step's micro-batches (collated during the previous step where their examples were known
        then, worker.prefetch) and, while this step trains, the next step's in the background."""
        t, data = self.training, self.state.data
        batches = self.prefetcher.batches([data.take(t.batch_size) for _ in range(t.grad_accum)])
        if self.state.step + 1 < self.total_steps:  # this step is state.step + 1; is there one after it?
            self.prefetcher.schedule(data.peek(t.batch_size, t.grad_accum))
        return batches

    def _checkpoint_due(self, step: int) -> bool:
        """Every ``checkpoint_every`` steps, and once ``checkpoint_minutes`` of training passed since the
        last checkpoint (or this attempt's start), so a lost worker costs at most that much work."""
        t = self.training
        by_steps = bool(t.checkpoint_every) and step % t.checkpoint_every == 0
        by_time = bool(t.checkpoint_minutes) and time.monotonic() - self.last_checkpoint_at >= 60 * t.checkpoint_minutes
        return by_steps or by_time

    def checkpoint(self) -> Path:
        """A resumable checkpoint of the current step in ``checkpoints/step-N``, registered and logged; then
        only the newest ``keep_checkpoints`` are kept (:func:`worker.checkpoints.prune_checkpoints`). A step
        already checkpointed (a run resumed from it and stopped again before its next step) is reused."""
        step = self.state.step
        path = checkpoint_dir(self.out_dir, step)
        if not is_complete(path):
            self.save_checkpoint(path)
            self.reporter.artifact("checkpoint", path, step)
            self.reporter.log(f"checkpoint saved at step {step}")
        self.last_checkpoint_at = time.monotonic()
        prune_checkpoints(self.out_dir / CHECKPOINTS, self.training.keep_checkpoints)
        return path

    def forward_backward(self, micro_batches: list[dict[str, torch.Tensor]], step: int | None = None) -> float:
        """Forward and backward over one optimizer step's micro-batches; returns the step's loss.

        Each micro-batch's summed loss is divided by the target count of the whole step (tokens for an
        LM, examples for a classifier), so the accumulated gradient is that of the step's examples as one
        batch, whatever their lengths, and the returned loss is that batch's mean, as eval weighs it.
        A method's loss term (AdaLoRA's orthogonality) depends on the weights only: added once per step.
        """
        total = max(1, sum(target_count(b["labels"], self.task) for b in micro_batches))
        loss_sum = 0.0
        for batch in micro_batches:
            with self._autocast():
                summed = self._summed_loss(batch)
            self._check_finite(summed, step)
            (summed / total).backward()
            loss_sum += float(summed.detach())
        loss = loss_sum / total
        loss_term = self.tuned.method.loss_term
        if loss_term is not None:
            with self._autocast():
                term = loss_term(self.tuned, self.tuned.active_adapter)
            self._check_finite(term, step)
            term.backward()
            loss += float(term.detach())
        return loss

    @property
    def epoch(self) -> float:
        return (self.state.step * self.training.grad_accum * self.training.batch_size) / len(self.train_data)

    def _model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The model scores nothing itself (the engine's loss does); a seq2seq model still needs its labels
        to build the decoder's inputs. A causal LM keeps no KV cache while training (it would hold every
        layer's keys and values for nothing)."""
        if self.task == "SEQ_2_SEQ_LM":
            return batch
        dropped = ("labels", REAL_TOKENS) if self.per_example_attention else ("labels", REAL_TOKENS, *BOUNDARY_KEYS)
        inputs: dict[str, Any] = {k: v for k, v in batch.items() if k not in dropped}
        if self.task == "CAUSAL_LM":
            inputs["use_cache"] = False
        return inputs

    def _choose_loss(self, model: torch.nn.Module) -> None:
        """A causal LM's loss comes from its last hidden states, the output head applied to the target
        positions only, a chunk at a time (worker.loss): full logits in fp32 are never held. Checked once
        on the fp32 base; a model whose logits are more than its head's output keeps the plain loss."""
        self.hidden_loss = False
        if self.task != "CAUSAL_LM":
            return
        reason = hidden_loss_breaks(model, self.train_data[0]["input_ids"][:16])
        if reason is not None:
            self.reporter.log(f"speed: the loss is computed from full logits: {reason}")
            return
        self.hidden_loss = True
        self.reporter.log("speed: the loss is computed from the last hidden states, the output head applied to "
                          "the target positions only, a chunk at a time (no full logits)")

    def _choose_batches(self, model: torch.nn.Module, method: Any) -> None:
        """A causal LM trains (and evaluates) on padding-free batches (worker.packing): each micro-batch's
        examples end to end in rows of up to ``max_length`` tokens, each attending only to itself. Checked
        once on the fp32 base; methods that put virtual tokens or a prefix before every example, and
        models whose attention does not read restarting position ids as boundaries, pad instead."""
        self.packed = self.per_example_attention = False
        if self.task != "CAUSAL_LM":
            return
        limit = self.spec.data.max_length
        self.row_width = min(limit, self.max_positions) if self.max_positions else limit
        if method.forward is not None:
            self.reporter.log(f"speed: padded batches: {method.name} puts its own tokens before every example, which "
                              "packed examples cannot share")
            return
        n = len(self.train_data)
        first, second = self.train_data[0]["input_ids"], self.train_data[1 % n]["input_ids"]
        per_example = use_packed_attention(model)
        reason = packing_breaks(model, first, second)
        if per_example is None and reason is not None:
            per_example = f"attending per example changed its outputs ({reason})"
            use_sdpa(model)
            reason = packing_breaks(model, first, second)
        if reason is not None:
            self.reporter.log(f"speed: padded batches: {reason}")
            return
        self.packed, self.per_example_attention = True, per_example is None
        how = ("each example attended to alone (no masked-out work)" if per_example is None
               else f"each example attending only to itself through a block-diagonal mask; not per example: {per_example}")
        self.reporter.log(f"speed: padding-free batches: each micro-batch's examples end to end in rows of up to "
                          f"{self.row_width} tokens, {how}")

    def _summed_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's loss summed over its targets (see :func:`summed_loss`), from the hidden states where
        :meth:`_choose_loss` allowed it. Hidden states of a soft prompt's virtual positions are dropped:
        the same targets for every method, as :func:`predictions` takes them."""
        inputs, labels = self._model_inputs(batch), batch["labels"]
        if not self.hidden_loss:
            return summed_loss(self.tuned(**inputs).logits, labels, self.task)
        with head_detached(self.tuned.model) as head:
            hidden = self.tuned(**inputs).logits
        return chunked_lm_loss(hidden[:, -labels.shape[1]:], labels, head)[0]

    def _check_finite(self, loss: torch.Tensor, step: int | None) -> None:
        if not torch.isfinite(loss):
            raise SpecError("training.learning_rate", f"the loss became {float(loss)} at step {step}; "
                                                     "lower the learning rate")

    def _batch(self, indices: Sequence[int], split: Any, packed: bool | None = None) -> dict[str, Any]:
        """The examples at ``indices`` of a prepared split, collated (packed where the run packs, see
        :meth:`_choose_batches`, unless ``packed`` says otherwise) and on the device."""
        examples = split.take(indices)
        if self.packed if packed is None else packed:
            batch = pack_batch(examples, self.pad_id, self.row_width, self.length_bucket)
        else:
            longest = max(len(e["input_ids"]) for e in examples)
            batch = collate(examples, self.pad_id, bucketed(longest, self.spec.data.max_length, self.length_bucket))
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # ------------------------------------------------------------------------------------------ eval
    def evaluate(self, final: bool = False) -> EvalResult | None:
        """Eval at the current step on the fixed sample (or, when ``final``, on the whole split, the
        sample's batches first so both figures come from one pass); reports it, records it in the
        state and asks the callbacks whether to stop. None when there is no validation split."""
        if not self.eval_data:
            return None
        n = len(self.eval_data)
        sample = self.plan.sample if self.plan.sample is not None else list(range(n))
        self.tuned.eval()
        with torch.no_grad(), self._autocast():
            sums = self._eval_pass(sample)
            sample_loss, sample_metrics = sums.loss(), sums.metric_values()
            if final and self.plan.sample is not None:
                sums = sums.plus(self._eval_pass(self.plan.rest))
        self.tuned.train()
        step = self.state.step
        result = EvalResult(step, sums.loss(), sample_loss, sums.examples, sums.metric_values(), sample_metrics)
        accuracy = result.metrics.get("accuracy")
        self.reporter.metric(Point(step, self.epoch, "eval", result.loss, accuracy=accuracy))
        scope = f"all {result.examples:,}" if result.examples == n else f"{result.examples} of {n:,}"
        shown = "".join(f" {name} {value:.3f}" if name == "accuracy" else f" {name} {value:.4g}"
                        for name, value in result.metrics.items())
        self.reporter.log(f"eval step {step} on {scope} validation examples: loss {result.loss:.4f}{shown}"
                          + (f" (the {len(sample)}-example sample: {sample_loss:.4f})"
                             if result.examples != len(sample) else ""))
        self.state.evals.append(result)
        if not final and self.state.best(metric=self.spec.training.best_metric) is result:
            self._keep_best(result)
        for callback in self.callbacks:
            reason = callback(result, self.state)
            if reason and not final:
                self.stopped_early = self.stopped_early or reason
        return result

    def _eval_pass(self, indices: list[int]) -> _EvalSums:
        """Loss and metric sums over ``indices``; length-sorted batches pad little."""
        sums = _EvalSums(totals={m.name: (0.0, 0) for m in self.metrics})
        lengths = self.eval_lengths
        ordered = sorted(indices, key=lambda i: lengths[i])
        for start in range(0, len(ordered), self.training.batch_size):
            chunk = ordered[start : start + self.training.batch_size]
            batch = self._batch(chunk, self.eval_data)
            labels = batch["labels"]
            sums.targets += target_count(labels, self.task)
            sums.examples += len(chunk)
            if not self.metrics:  # the loss alone: from the hidden states where the model allows it
                sums.loss_sum += float(self._summed_loss(batch))
                continue
            logits = self.tuned(**self._model_inputs(batch)).logits
            sums.loss_sum += float(summed_loss(logits, labels, self.task))
            scores, targets = predictions(logits, labels, self.task)
            for metric in self.metrics:
                total, count = metric.measure(scores, targets)
                before = sums.totals[metric.name]
                sums.totals[metric.name] = (before[0] + total, before[1] + count)
        return sums

    # ------------------------------------------------------------------------------------------ save
    def save(self) -> Path:
        """The run's adapter, with what a person or the playground needs beside it (:meth:`_extras`)."""
        adapter_dir = self.tuned.save_pretrained(self.out_dir / "adapter", extra_files=self._extras(),
                                                 card_notes=self._card_notes())
        self.reporter.artifact("adapter", adapter_dir, self.state.step)
        self.reporter.log(f"adapter saved ({self.state.step} steps)")
        return adapter_dir

    def _keep_best(self, result: EvalResult) -> None:
        """The adapter as it is at the best eval so far, in ``best/step-N`` (replacing the one before, see
        :mod:`worker.best_adapter`), registered as the ``best_adapter`` artifact of that step."""
        path = replace_best(self.out_dir, result.step,
                            lambda folder: self.tuned.save_pretrained(folder, extra_files=self._extras(),
                                                                      card_notes=self._card_notes()))
        self.reporter.artifact("best_adapter", path, result.step)
        metric = self.spec.training.best_metric
        self.reporter.log(f"best eval so far: step {result.step}, sample {metric} "
                          f"{result.sample_figure(metric):.4f}; its adapter is kept ({BEST}/{path.name})")

    def _settle_best(self, best: EvalResult | None, adapter_dir: Path) -> Path | None:
        """The best eval's adapter once the run is over: ``adapter_dir`` itself when the best eval is the
        last step's (the copy goes), else the kept ``best/step-N``. None (and the run's adapter is the last
        one) without evals, or when the kept copy is not this eval's: written by an earlier attempt whose
        evals a resumed attempt did not reproduce."""
        if best is None:
            return None
        metric = self.spec.training.best_metric
        if best.step == self.state.step:
            clear_best(self.out_dir)
            self.reporter.artifact("best_adapter", adapter_dir, best.step)
            where = "the last step's, adapter/"
            path = adapter_dir
        else:
            path = best_dir(self.out_dir, best.step)
            if not path.is_dir():
                clear_best(self.out_dir)
                self.reporter.log(f"the best eval (step {best.step}) has no kept adapter (an earlier attempt's "
                                  "evals were not reproduced); the run's adapter is the last step's", "warn")
                return None
            where = f"{BEST}/{path.name}; the last step's is in adapter/"
        self.reporter.log(f"best eval: step {best.step}, sample {metric} {best.sample_figure(metric):.4f}; "
                          f"its adapter is the run's adapter ({where})")
        return path

    def _extras(self) -> dict[str, str]:
        """Files saved beside every adapter and checkpoint: the run's spec, a classifier's label names."""
        extras = {"training_config.yaml": self.spec.to_yaml()}
        if self.label_names:
            extras["label_map.json"] = json.dumps({"id2label": dict(enumerate(self.label_names))}, indent=2) + "\n"
        extras.update(chat_template_files(self.tokenizer, self.task, self.data_shape))  # the playground prompts with it
        return extras

    def _card_notes(self) -> dict[str, str]:
        """The model card's section on how the adapter was made: the run's recipe, the one line the studio
        names runs by (app.core.recipe), with the full spec beside it."""
        return {"Training recipe": f"{recipe(self.spec)}\n\nThe whole run configuration is in `training_config.yaml`."}

    def save_checkpoint(self, path: Path) -> Path:
        """An adapter folder (loadable like the final one) plus :data:`STATE_FILE`, written last and
        atomically: a checkpoint is complete exactly when that file exists."""
        path = self.tuned.save_pretrained(path, extra_files=self._extras(), card_notes=self._card_notes())
        partial = path / (STATE_FILE + ".partial")
        torch.save(self.state.state_dict(), partial)
        os.replace(partial, path / STATE_FILE)
        return path

    def resume_from(self, path: Path) -> None:
        """Continue from a checkpoint written by a run of the same spec (after :meth:`setup`)."""
        state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)
        self.state.load_state_dict(state)
        self.reporter.progress(self.state.step, self.total_steps)
        self.reporter.log(f"resumed from step {self.state.step} ({path})")

    # ------------------------------------------------------------------------------------------ whole run
    def run(self) -> TrainResult:
        """The loop, the last eval on the whole validation split, the adapter."""
        self.train()
        last = self.evaluate(final=True)
        if self.reporter.should_stop():
            raise Cancelled(f"cancelled at step {self.state.step}")
        adapter_dir = self.save()
        best = self.state.best(metric=self.spec.training.best_metric)
        best_dir = self._settle_best(best, adapter_dir)
        first = self.state.evals[0].loss if self.state.evals and self.state.evals[0].step == 0 else None
        return TrainResult(
            adapter_dir, self.state.step, self.label_names, first,
            last.loss if last else None, last.sample_loss if last else None,
            best.step if best else None, best.sample_loss if best else None,
            self.stopped_early, dict(last.metrics) if last else {}, best_dir,
        )


@dataclass
class _EvalSums:
    loss_sum: float = 0.0
    targets: int = 0
    examples: int = 0
    totals: dict[str, tuple[float, int]] = field(default_factory=dict)

    def loss(self) -> float:
        return self.loss_sum / max(self.targets, 1)

    def plus(self, other: _EvalSums) -> _EvalSums:
        totals = {k: (v[0] + other.totals[k][0], v[1] + other.totals[k][1]) for k, v in self.totals.items()}
        return _EvalSums(self.loss_sum + other.loss_sum, self.targets + other.targets,
                         self.examples + other.examples, totals)

    def metric_values(self) -> dict[str, float]:
        return {k: total / max(count, 1) for k, (total, count) in self.totals.items()}


def _grad_norm(params: list[torch.nn.Parameter], max_norm: float | None) -> float:
    if max_norm is not None:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    grads = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0


# ---------------------------------------------------------------------------------------------- entry point
def train(
    spec: RunSpec,
    out_dir: Path,
    reporter: Reporter,
    models_dir: Path,
    resolver: DatasetResolver | None = None,
    *,
    resume_from: Path | None = None,
    callbacks: Sequence[EvalCallback] = (),
    metrics: Sequence[EvalMetric] = (),
    data_cache_dir: Path | None = None,
) -> TrainResult:
    """Run the whole spec (from a checkpoint folder when ``resume_from``); raises :class:`Cancelled` if
    the reporter asks to stop between steps. ``data_cache_dir``: see :class:`TrainingRecipe`."""
    recipe = TrainingRecipe(spec, out_dir, reporter, models_dir, resolver, callbacks=callbacks, metrics=metrics,
                            data_cache_dir=data_cache_dir)
    recipe.setup()
    if resume_from is not None:
        recipe.resume_from(resume_from)
    return recipe.run()
