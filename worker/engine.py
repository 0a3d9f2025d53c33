"""The training engine: one RunSpec in, one adapter folder out, progress reported as it goes.

It knows nothing of Celery or the registry; a :class:`Reporter` (the task's registry reporter, or a
test's in-memory one) receives metric points, log lines and artifacts, and says when to stop.
Everything that can be wrong with a spec (model, data, method) is checked before the first step.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from app.core.spec import RunSpec, SpecError
from app.data.chat import chat_template_files
from app.data.pipeline import prepare_for_run
from app.data.sources import DatasetResolver, resolve_dataset_file

# Batches a data-driven method (FishMask) sees before training to choose what it trains.
CALIBRATION_BATCHES = 8


class Cancelled(Exception):
    """The run was asked to stop; the metric history stays."""


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


@dataclass
class MemoryReporter:
    """Keeps everything in lists; for tests, benchmarks and dry runs."""

    points: list[Point] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    artifacts: list[tuple[str, Path, int | None]] = field(default_factory=list)
    stop_after_step: int | None = None
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


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    label_names: list[str] | None
    first_eval_loss: float | None  # at step 0, on the eval sample (training.eval_samples)
    last_eval_loss: float | None  # after the last step, on the whole validation split
    last_sample_eval_loss: float | None = None  # after the last step, on the step-0 sample (compare with first)


# ---------------------------------------------------------------------------------------------- data
def collate(examples: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token lists into a batch; labels pad with -100 so padding carries no loss."""
    width = max(len(e["input_ids"]) for e in examples)
    batch: dict[str, torch.Tensor] = {
        "input_ids": torch.tensor([e["input_ids"] + [pad_id] * (width - len(e["input_ids"])) for e in examples]),
        "attention_mask": torch.tensor(
            [list(e.get("attention_mask") or [1] * len(e["input_ids"])) + [0] * (width - len(e["input_ids"]))
             for e in examples]
        ),
    }
    if "label" in examples[0]:
        batch["labels"] = torch.tensor([int(e["label"]) for e in examples])
    elif "labels" in examples[0]:
        lw = max(len(e["labels"]) for e in examples)
        batch["labels"] = torch.tensor([list(e["labels"]) + [-100] * (lw - len(e["labels"])) for e in examples])
    return batch


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


# ---------------------------------------------------------------------------------------------- schedule
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


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise SpecError("training.device", "cuda requested but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def use_bf16(setting: bool | str, device: torch.device) -> bool:
    supported = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if setting is True and not supported:
        raise SpecError("training.bf16", "bf16 autocast needs a CUDA device that supports bfloat16")
    return supported and setting in (True, "auto")


# ---------------------------------------------------------------------------------------------- engine
def train(
    spec: RunSpec,
    out_dir: Path,
    reporter: Reporter,
    models_dir: Path,
    resolver: DatasetResolver | None = None,
) -> TrainResult:
    """Run the whole spec; raises :class:`Cancelled` if the reporter asks to stop between steps."""
    import tuners
    from app.core.models import load_model, load_tokenizer, position_limit, resolve_model

    resolver = resolver or resolve_dataset_file
    spec.validate()
    t = spec.training
    device = pick_device(t.device)
    bf16 = use_bf16(t.bf16, device)
    seed_everything(t.seed)

    reporter.log(f"model: resolving {spec.model.name!r}")
    ref = resolve_model(spec.model.name, models_dir)
    tokenizer = load_tokenizer(ref, spec.model.trust_remote_code)
    max_positions = position_limit(ref, spec.model.trust_remote_code)
    prepared, task = prepare_for_run(spec, tokenizer, resolver, reporter.log, max_positions)
    label_names = list(prepared.label_names) if prepared.label_names else None

    seed_everything(t.seed)
    model = load_model(ref, task, tokenizer, spec.model.trust_remote_code, label_names)
    micro_per_epoch = math.ceil(len(prepared.train) / t.batch_size)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / t.grad_accum))
    total_steps = t.max_steps or max(1, math.ceil(t.epochs * steps_per_epoch))
    config = tuners.config_from_dict(spec.adapter_config_dict(task)).for_run(total_steps)
    config.validate()
    if config.base_model_name_or_path is None:
        config = config.replace(base_model_name_or_path=spec.model.name)
    if spec.model.precision != "full":
        bits = 4 if spec.model.precision == "nf4" else 8
        quantized = tuners.quantize(model, bits=bits, double_quant=spec.model.double_quant,
                                    compute_dtype=torch.bfloat16 if bf16 else torch.float32)
        model = quantized if quantized is not None else model
    tuned = tuners.apply(model, config)
    tuned.to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if tuned.method.calibrate is not None:
        calibration = [
            {k: v.to(device) for k, v in collate(prepared.train[i : i + t.batch_size], pad_id).items()}
            for i in range(0, min(len(prepared.train), CALIBRATION_BATCHES * t.batch_size), t.batch_size)
        ]
        reporter.log(f"method: calibrating {tuned.method.name} on {len(calibration)} training batches")
        tuned.method.calibrate(tuned, calibration)
    trainable, total = tuned.trainable_parameters()
    reporter.log(f"method: {tuned.method.name}; trainable parameters {trainable:,} of {total:,} "
                 f"({100 * trainable / max(total, 1):.3f}%) on {device.type}{' with bf16 autocast' if bf16 else ''}")
    params = [p for p in tuned.parameters() if p.requires_grad]
    if not params:
        raise SpecError("method", "the adapter has no trainable parameters for this model")
    peft_ok, reason = tuned.method.peft_loads(tuned, tuned.active_adapter)
    if not peft_ok:
        reporter.log(f"method: note: {reason}; the adapter will load with TuneStudio's tuners only")

    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t.scheduler, t.warmup_steps, total_steps))
    adapter_name = tuned.active_adapter
    after_backward, loss_term = tuned.method.after_backward, tuned.method.loss_term
    reporter.progress(0, total_steps)
    reporter.log(f"training: {total_steps} steps ({steps_per_epoch} per epoch), batch {t.batch_size} "
                 f"x accumulation {t.grad_accum}, lr {t.learning_rate:g} {t.scheduler}, warmup {t.warmup_steps}")

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)

    plan = eval_plan(len(prepared.eval), t.eval_samples, t.seed)
    if plan.sample is not None:
        reporter.log(f"eval: every eval before the last on {len(plan.sample)} of {len(prepared.eval):,} validation "
                     f"examples (a fixed sample, training.eval_samples); the last on all {len(prepared.eval):,}")

    def run_eval(indices: list[int]) -> tuple[float, int, int]:
        """(loss sum, loss weight, correct) over ``indices``; length-sorted batches pad little."""
        loss_sum, weight, correct = 0.0, 0, 0
        ordered = sorted(indices, key=lambda i: len(prepared.eval[i]["input_ids"]))
        for start in range(0, len(ordered), t.batch_size):
            chunk = [prepared.eval[i] for i in ordered[start : start + t.batch_size]]
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
            out = tuned(**batch)
            n = len(chunk) if task == "SEQ_CLS" else int((batch["labels"] != -100).sum())
            loss_sum += float(out.loss) * n
            weight += n
            if task == "SEQ_CLS":
                correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
        return loss_sum, weight, correct

    def evaluate(step: int, epoch: float, final: bool = False) -> tuple[float | None, float | None]:
        """Eval loss at ``step`` (sample, or whole split when ``final``) and, for the last eval, the
        sample's loss too (the sample's batches go first, so both come from one pass)."""
        if not prepared.eval:
            return None, None
        tuned.eval()
        with torch.no_grad(), autocast():
            sample = plan.sample if plan.sample is not None else list(range(len(prepared.eval)))
            loss_sum, weight, correct = run_eval(sample)
            sample_loss = loss_sum / max(weight, 1)
            count = len(sample)
            if final and plan.sample is not None:
                more = run_eval(plan.rest)
                loss_sum, weight, correct = loss_sum + more[0], weight + more[1], correct + more[2]
                count = len(prepared.eval)
        tuned.train()
        loss = loss_sum / max(weight, 1)
        accuracy = correct / count if task == "SEQ_CLS" else None
        reporter.metric(Point(step, epoch, "eval", loss, accuracy=accuracy))
        scope = f"all {count:,}" if count == len(prepared.eval) else f"{count} of {len(prepared.eval):,}"
        reporter.log(f"eval step {step} on {scope} validation examples: loss {loss:.4f}"
                     + (f" accuracy {accuracy:.3f}" if accuracy is not None else "")
                     + (f" (the {len(sample)}-example sample: {sample_loss:.4f})"
                        if count != len(sample) else ""))
        return loss, sample_loss

    log_lines_every = step_log_interval(total_steps, t.log_every)

    generator = torch.Generator().manual_seed(t.seed)
    order: list[int] = []
    cursor = 0
    epoch_index = 0

    def next_batch() -> list[dict[str, Any]]:
        nonlocal order, cursor, epoch_index
        if cursor >= len(order):
            order = torch.randperm(len(prepared.train), generator=generator).tolist()
            cursor = 0
            epoch_index += 1
        chunk = [prepared.train[i] for i in order[cursor : cursor + t.batch_size]]
        cursor += t.batch_size
        return chunk

    tuned.train()
    first_eval, _ = evaluate(0, 0.0)
    step = 0
    window_tokens, window_start = 0, time.perf_counter()
    while step < total_steps:
        if reporter.should_stop():
            raise Cancelled(f"cancelled at step {step}")
        step_loss = 0.0
        for _ in range(t.grad_accum):
            batch = {k: v.to(device) for k, v in collate(next_batch(), pad_id).items()}
            window_tokens += int(batch["attention_mask"].sum())
            with autocast():
                loss = tuned(**batch).loss
                if loss_term is not None:
                    loss = loss + loss_term(tuned, adapter_name)
            if not torch.isfinite(loss):
                raise SpecError("training.learning_rate", f"the loss became {float(loss)} at step {step + 1}; "
                                                         "lower the learning rate")
            (loss / t.grad_accum).backward()
            step_loss += float(loss.detach()) / t.grad_accum
        grad_norm = _grad_norm(params, t.max_grad_norm)
        lr = schedule.get_last_lr()[0]
        optimizer.step()
        schedule.step()
        step += 1
        if after_backward is not None:
            after_backward(tuned, adapter_name, step)
        optimizer.zero_grad(set_to_none=True)
        epoch = (step * t.grad_accum * t.batch_size) / len(prepared.train)
        reporter.progress(step, total_steps)
        if step % t.log_every == 0 or step == total_steps:
            elapsed = time.perf_counter() - window_start
            speed = window_tokens / max(elapsed, 1e-9)
            reporter.metric(Point(step, epoch, "train", step_loss, lr, speed, grad_norm))
            if step == 1 or step % log_lines_every == 0 or step == total_steps:
                reporter.log(f"step {step}/{total_steps}: loss {step_loss:.4f} · lr {lr:.3g} · "
                             f"{speed:,.0f} tokens/s · grad norm {grad_norm:.3g}")
            window_tokens, window_start = 0, time.perf_counter()
        if t.eval_every and step % t.eval_every == 0 and step != total_steps:
            evaluate(step, epoch)
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step != total_steps:
            path = tuned.save_pretrained(out_dir / "checkpoints" / f"step-{step}", extra_files=_extras(spec, label_names))
            reporter.artifact("checkpoint", path, step)
            reporter.log(f"checkpoint saved at step {step}")
    last_eval, last_sample_eval = evaluate(step, (step * t.grad_accum * t.batch_size) / len(prepared.train),
                                           final=True)
    if reporter.should_stop():
        raise Cancelled(f"cancelled at step {step}")
    adapter_dir = tuned.save_pretrained(out_dir / "adapter", extra_files=_extras(spec, label_names)
                                        | chat_template_files(tokenizer, task, prepared.stats["shape"]))
    reporter.artifact("adapter", adapter_dir, step)
    reporter.log(f"adapter saved ({step} steps)")
    return TrainResult(adapter_dir, step, label_names, first_eval, last_eval, last_sample_eval)


def _grad_norm(params: list[torch.nn.Parameter], max_norm: float | None) -> float:
    if max_norm is not None:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    grads = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0


def _extras(spec: RunSpec, label_names: list[str] | None) -> dict[str, str]:
    extras = {"training_config.yaml": spec.to_yaml()}
    if label_names:
        extras["label_map.json"] = json.dumps({"id2label": dict(enumerate(label_names))}, indent=2) + "\n"
    return extras
