"""RunSpec: everything a training run needs, as one validated object (the YAML file the CLI takes
and the object the studio's wizard builds).

Validation happens here, at the edge, and every error names the field path (``training.lr``) and,
when the spec came from a YAML file, the file and line. The adapter section (``method``) is a plain
adapter-config dict checked by the tuner core itself, so new methods need no change here.
Field reference: docs/runs.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from app.core.catalog import bundled_model
from app.core.errors import UserError
from app.core.options import BEST_METRICS, DEVICES, HEAD_LEARNING_RATE, PRECISIONS, SCHEDULERS
from app.core.tasks import SPEC_SHAPES, TASKS, task_for


class SpecError(UserError, ValueError):
    """A spec field is wrong; ``path`` is the dotted field path, ``where`` the file:line if known."""

    def __init__(self, path: str, message: str, where: str | None = None) -> None:
        self.path, self.message, self.where = path, message, where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{path}: {message}" if path else f"{prefix}{message}")


@dataclass
class ModelSpec:
    name: str = ""
    task: str | None = None
    trust_remote_code: bool = False
    precision: str = "full"
    double_quant: bool = True


@dataclass
class DataSpec:
    dataset: str = ""
    validation: str | None = None
    shape: str = "auto"
    mapping: dict[str, str] = field(default_factory=dict)
    max_length: int = 512
    packing: bool = False
    val_fraction: float = 0.1
    dedupe: bool = True
    max_rows: int | None = None


@dataclass
class TrainingSpec:
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 2e-4
    # The rate of a classifier's new head (and the pooler it reads), whatever the method's: see
    # app.core.options.HEAD_LEARNING_RATE. Other modules_to_save copies (lm_head) learn at learning_rate.
    head_learning_rate: float = HEAD_LEARNING_RATE
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: str = "linear"
    max_grad_norm: float | None = 1.0
    eval_every: int = 50
    # Evals before the last one use a seeded sample of this many validation examples (the step-0
    # eval on a CPU must not hold training up); the last eval uses the whole split. 0/None: always whole.
    eval_samples: int | None = 64
    # Early stopping: the run stops once this many evals in a row have not bettered the best one by more
    # than early_stopping_min_delta (0 = never stops early). The best eval's adapter is kept either way.
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    best_metric: str = "loss"  # what ranks the evals: app.core.options.BEST_METRICS
    checkpoint_every: int = 0
    # A checkpoint also after this many minutes of training since the last one (0 = by steps only),
    # so a stopped or lost worker costs at most that much work; the newest ``keep_checkpoints`` stay.
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 2
    log_every: int = 1
    seed: int = 42
    bf16: bool | str = "auto"
    # torch.compile of the model's blocks: auto = where it pays (CUDA), true = also elsewhere, false = eager.
    compile: bool | str = "auto"
    # Recompute each block's activations in backward instead of keeping them: less memory, about a third
    # more compute.
    gradient_checkpointing: bool = False
    device: str = "auto"


@dataclass
class RunSpec:
    name: str
    model: ModelSpec
    data: DataSpec
    method: dict[str, Any]
    training: TrainingSpec = field(default_factory=TrainingSpec)

    def __post_init__(self) -> None:
        # What the method fills in when left out (LoRA's targets) is written into the spec itself, by
        # the same rule the studio's form uses: the stored spec says what trained, CLI or studio.
        method = _known_method(self.method)
        if method is not None:
            self.method = method.with_defaults(self.method)

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None, lines: dict[str, int] | None = None) -> RunSpec:
        """Build and validate; raises :class:`SpecError` naming the first bad field."""
        lines = lines or {}

        def where(path: str) -> str | None:
            if source is None:
                return None
            line = lines.get(path) or lines.get(path.rsplit(".", 1)[0])
            return f"{source}, line {line}" if line else source

        try:
            spec = _build(data)
            spec.validate()
        except SpecError as exc:
            if exc.where is None and source is not None:
                raise SpecError(exc.path, exc.message, where(exc.path)) from None
            raise
        return spec

    @classmethod
    def from_yaml(cls, text: str, source: str | None = None) -> RunSpec:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{source or 'spec'}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
            raise SpecError("", f"not valid YAML: {getattr(exc, 'problem', None) or exc}", where) from None
        return cls.from_dict(data, source=source or "spec", lines=_line_numbers(node))

    @classmethod
    def load(cls, path: str | Path) -> RunSpec:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError("", f"cannot read spec file: {exc.strerror}", str(path)) from None
        return cls.from_yaml(text, source=str(path))

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise SpecError("name", "must be a non-empty string")
        if len(self.name) > 200:
            raise SpecError("name", "must be at most 200 characters")
        self._validate_model()
        self._validate_data()
        self._validate_method()
        self._validate_training()

    def _validate_model(self) -> None:
        m = self.model
        if not isinstance(m.name, str) or not m.name.strip():
            raise SpecError("model.name", "must name a bundled model, a local folder or a hub id")
        if m.task is not None and m.task not in TASKS:
            raise SpecError("model.task", f"{m.task!r} is not one of {', '.join(TASKS)}")
        _bool("model.trust_remote_code", m.trust_remote_code)
        _bool("model.double_quant", m.double_quant)
        if m.precision not in PRECISIONS:
            raise SpecError("model.precision", f"{m.precision!r} is not one of {', '.join(PRECISIONS)}")
        if looks_like_path(m.name) and bundled_model(m.name) is None and not Path(m.name).expanduser().is_dir():
            raise SpecError("model.name", f"no model folder at {m.name!r} (not a bundled model either)")

    def _validate_data(self) -> None:
        d = self.data
        if not isinstance(d.dataset, str | int) or not str(d.dataset).strip():
            raise SpecError("data.dataset", "must be a registered dataset id, a bundled dataset, a file path or "
                                            "a 🤗 dataset id in the local cache (org/name[:split])")
        if d.shape not in SPEC_SHAPES:
            raise SpecError("data.shape", f"{d.shape!r} is not one of {', '.join(SPEC_SHAPES)}")
        if not isinstance(d.mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in d.mapping.items()
        ):
            raise SpecError("data.mapping", "must map field names to column names (strings)")
        _int("data.max_length", d.max_length, lo=8)
        _bool("data.packing", d.packing)
        _bool("data.dedupe", d.dedupe)
        if not isinstance(d.val_fraction, int | float) or not 0 <= d.val_fraction < 1:
            raise SpecError("data.val_fraction", f"must be a number in [0, 1), got {d.val_fraction!r}")
        if d.max_rows is not None:
            _int("data.max_rows", d.max_rows, lo=1)

    def _validate_method(self) -> None:
        import tuners

        if not isinstance(self.method, dict):
            raise SpecError("method", "must be a mapping with peft_type and the method's settings")
        peft_type = self.method.get("peft_type")
        if peft_type is None:
            raise SpecError("method.peft_type", f"missing; one of {', '.join(tuners.METHODS)}")
        if peft_type not in tuners.METHODS:
            raise SpecError("method.peft_type", f"unknown method {peft_type!r}; known: {', '.join(tuners.METHODS)}")
        if self.model.precision != "full" and tuners.METHODS[peft_type].trains_base_weights:
            raise SpecError(
                "model.precision",
                f"{self.model.precision} cannot be used with {tuners.METHODS[peft_type].name}, which trains the "
                "base weights themselves; use precision full",
            )
        try:
            tuners.config_from_dict(self.adapter_config_dict())
        except (tuners.ConfigError, TypeError, ValueError) as exc:
            message = str(exc)
            field_name, sep, rest = message.partition(": ")
            if sep and field_name.isidentifier():
                raise SpecError(f"method.{field_name}", rest) from None
            raise SpecError("method", message) from None

    def _validate_training(self) -> None:
        t = self.training
        _number("training.epochs", t.epochs, positive=True, hi=MAX_EPOCHS)
        if t.max_steps is not None:
            _int("training.max_steps", t.max_steps, lo=1)
        _int("training.batch_size", t.batch_size, lo=1, hi=MAX_BATCH)
        _int("training.grad_accum", t.grad_accum, lo=1, hi=MAX_BATCH)
        _number("training.learning_rate", t.learning_rate, positive=True, hi=MAX_LEARNING_RATE)
        _number("training.head_learning_rate", t.head_learning_rate, positive=True, hi=MAX_LEARNING_RATE)
        _number("training.weight_decay", t.weight_decay, hi=MAX_WEIGHT_DECAY)
        _int("training.warmup_steps", t.warmup_steps, lo=0)
        if t.scheduler not in SCHEDULERS:
            raise SpecError("training.scheduler", f"{t.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        if t.max_grad_norm is not None:
            _number("training.max_grad_norm", t.max_grad_norm, positive=True)
        _int("training.eval_every", t.eval_every, lo=0)
        if t.eval_samples is not None and (
            not isinstance(t.eval_samples, int) or isinstance(t.eval_samples, bool) or t.eval_samples < 0
        ):
            raise SpecError("training.eval_samples", "must be a whole number of validation examples, 0 or more "
                            f"(0 or null = every eval uses the whole validation split), got {t.eval_samples!r}")
        self._validate_best()
        _int("training.checkpoint_every", t.checkpoint_every, lo=0)
        _number("training.checkpoint_minutes", t.checkpoint_minutes, hi=MAX_CHECKPOINT_MINUTES)
        _int("training.keep_checkpoints", t.keep_checkpoints, lo=1, hi=MAX_KEPT_CHECKPOINTS)
        _int("training.log_every", t.log_every, lo=1)
        _int("training.seed", t.seed, lo=0)
        if t.bf16 not in (True, False, "auto"):
            raise SpecError("training.bf16", f"must be true, false or auto, got {t.bf16!r}")
        if not (isinstance(t.compile, bool) or t.compile == "auto"):
            raise SpecError("training.compile", f"must be true, false or auto, got {t.compile!r}")
        _bool("training.gradient_checkpointing", t.gradient_checkpointing)
        if t.device not in DEVICES:
            raise SpecError("training.device", f"{t.device!r} is not one of {', '.join(DEVICES)}")

    def _validate_best(self) -> None:
        """The best eval and early stopping: both need evals to compare, accuracy needs a classifier."""
        t = self.training
        _int("training.early_stopping_patience", t.early_stopping_patience, lo=0)
        _number("training.early_stopping_min_delta", t.early_stopping_min_delta)
        if t.best_metric not in BEST_METRICS:
            raise SpecError("training.best_metric", f"{t.best_metric!r} is not one of {', '.join(BEST_METRICS)}")
        if t.best_metric == "accuracy" and self.task_is_fixed and self.task != "SEQ_CLS":
            raise SpecError("training.best_metric", f"accuracy is measured for classifiers (SEQ_CLS) only; this "
                                                    f"run's task is {self.task}: use loss")
        if not t.early_stopping_patience:
            return
        if not t.eval_every:
            raise SpecError("training.early_stopping_patience", "needs evals while training: set "
                            "training.eval_every above 0 (with 0 the run evaluates only at its start and end)")
        if not self.data.val_fraction and self.data.validation is None:
            raise SpecError("training.early_stopping_patience", "needs a validation split: set "
                            "data.val_fraction above 0 or name a data.validation file")

    # ------------------------------------------------------------------ helpers
    @property
    def task(self) -> str:
        """The task type as far as the spec alone tells: explicit, the method's, the data shape's,
        the bundled model's, else causal LM (:func:`app.core.tasks.task_for`). With ``shape: auto``
        the engine refines it from the data."""
        if self.model.task:
            return self.model.task
        if self.method.get("task_type"):
            return str(self.method["task_type"])
        entry = bundled_model(self.model.name)
        return task_for(self.data.shape, entry.tasks if entry is not None else ())

    @property
    def task_is_fixed(self) -> bool:
        """True when the spec itself decides the task (so detected data cannot change it)."""
        entry = bundled_model(self.model.name)
        return bool(
            self.model.task or self.method.get("task_type") or self.data.shape != "auto"
            or (entry is not None and len(entry.tasks) == 1)
        )

    def adapter_config_dict(self, task: str | None = None) -> dict[str, Any]:
        """The method section with the run's task type filled in (what tuners.config_from_dict takes)."""
        out = dict(self.method)
        out.setdefault("task_type", task or self.task)
        return out


def looks_like_path(name: str) -> bool:
    """A model name is a path (not a hub id) when it is absolute, relative-explicit, or exists."""
    return (
        name.startswith(("/", "./", "../", "~")) or os.sep + os.sep in name or name.count("/") > 1
        or Path(name).expanduser().exists()
    )


def _build(data: Any) -> RunSpec:
    if not isinstance(data, dict):
        raise SpecError("", f"a spec must be a mapping of fields, got {type(data).__name__}")
    known = {"name", "model", "data", "method", "training"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(unknown[0], f"unknown field; a spec has {', '.join(sorted(known))}")
    for required in ("model", "data", "method"):
        if required not in data or data[required] is None:
            raise SpecError(required, "missing")
    model = data["model"]
    if isinstance(model, str):
        model = {"name": model}
    training = data.get("training") or {}
    method = _known_method(data["method"])
    if method is not None and isinstance(training, dict) and "learning_rate" not in training:
        # A spec that names no learning rate trains at its method's usual one, as the studio's presets do.
        training = {**training, "learning_rate": method.learning_rate}
    return RunSpec(
        name=data.get("name") or "run",
        model=_section("model", ModelSpec, model),
        data=_section("data", DataSpec, data["data"]),
        method=data["method"] if isinstance(data["method"], dict) else _not_mapping("method"),
        training=_section("training", TrainingSpec, training),
    )


def _known_method(method: Any) -> Any:
    """The tuners Method a ``method`` section names, or None (validation reports what is wrong)."""
    import tuners

    if isinstance(method, dict) and isinstance(method.get("peft_type"), str):
        return tuners.METHODS.get(method["peft_type"])
    return None


def _section(path: str, cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise SpecError(path, f"must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dict(data)
    for key, value in data.items():
        if key not in fields:
            raise SpecError(f"{path}.{key}", f"unknown field; known: {', '.join(fields)}")
        # PyYAML reads 2e-4 (no dot) as a string; accept it where a float is expected.
        if isinstance(fields[key].default, float) and isinstance(value, str):
            try:
                values[key] = float(value)
            except ValueError:
                raise SpecError(f"{path}.{key}", f"must be a number, got {value!r}") from None
    return cls(**values)


def _not_mapping(path: str) -> Any:
    raise SpecError(path, "must be a mapping")


def _bool(path: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise SpecError(path, f"must be true or false, got {value!r}")


# Sanity bounds: beyond these a value is a typo, not a training choice.
MAX_EPOCHS = 10_000
MAX_BATCH = 4_096
MAX_LEARNING_RATE = 1.0
MAX_WEIGHT_DECAY = 10.0
MAX_CHECKPOINT_MINUTES = 7 * 24 * 60  # a week
MAX_KEPT_CHECKPOINTS = 1_000
# The registry stores steps in 32-bit integer columns; larger values would surface as raw SQL errors.
REGISTRY_INT_MAX = 2**31 - 1


def _int(path: str, value: Any, lo: int | None = None, hi: int = REGISTRY_INT_MAX) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(path, f"must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise SpecError(path, f"must be >= {lo}, got {value}")
    if value > hi:
        raise SpecError(path, f"must be <= {hi:,}, got {value:,}")


def _number(path: str, value: Any, positive: bool = False, hi: float | None = None) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise SpecError(path, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SpecError(path, f"must be a finite number, got {value}")
    if positive and value <= 0:
        raise SpecError(path, f"must be > 0, got {value}")
    if value < 0:
        raise SpecError(path, f"must be >= 0, got {value}")
    if hi is not None and value > hi:
        raise SpecError(path, f"must be <= {hi:g}, got {value:g}")


def _line_numbers(node: Any, prefix: str = "") -> dict[str, int]:
    """Dotted field path -> 1-based line, from a composed YAML node tree."""
    out: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            out[path] = key.start_mark.line + 1
            out.update(_line_numbers(value, path))
    return out
