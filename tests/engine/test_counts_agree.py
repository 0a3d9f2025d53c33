"""The method step's trainable count is the run's, and the bundled encoder is never built as a decoder.

The method step counts on a meta-device copy of the model; the engine counts the real one. They
disagreed for classification (14,594 vs 14,979 for MiniLM on three classes) because the meta copy
kept the config's default two-label head; both now size the head with ``classification_head``.
"""

from __future__ import annotations

import logging
import re

import pytest

from app.core.models import load_model, load_tokenizer, resolve_model
from app.core.settings import Settings
from app.core.spec import RunSpec
from app.services import data_preview, method_form
from app.services.context import Context
from app.services.model_info import describe_model
from app.services.wizard import task_for
from tests.engine.helpers import write_drug_review_slice
from worker.engine import Cancelled, MemoryReporter, train

MINILM = "all-MiniLM-L6-v2"


@pytest.fixture
def ctx(tmp_path):
    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    yield c
    c.close()


@pytest.fixture(scope="module")
def minilm():
    return describe_model(MINILM)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_log():
    """Everything transformers logs (its loggers hang under "transformers" and do not propagate further)."""
    handler = _Collect()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def _engine_count(spec: dict, tmp_path) -> tuple[int, int]:
    """The trainable/total figures the run log states (the run stops before its first step)."""
    reporter = MemoryReporter(stop_after_step=0)
    with pytest.raises(Cancelled):
        train(RunSpec.from_dict(spec), tmp_path / "out", reporter, tmp_path / "models")
    line = next(x for x in reporter.lines if "trainable parameters" in x)
    trainable, total = re.search(r"trainable parameters ([\d,]+) of ([\d,]+)", line).groups()
    return int(trainable.replace(",", "")), int(total.replace(",", ""))


@pytest.mark.parametrize("peft_type", ["LORA", "IA3"])
def test_the_method_steps_count_equals_the_runs_for_three_classes(ctx, tmp_path, minilm, peft_type):
    data = write_drug_review_slice(tmp_path / "reviews.csv", per_class=6, seed=0, max_chars=80)
    view = data_preview.register_upload(ctx, data)
    ref = f"dataset:{view.id}"
    classes = data_preview.label_names(ctx, ref, "classification", {"text": "text", "label": "label"})
    assert classes == ["negative", "neutral", "positive"]
    assert data_preview.label_names(ctx, ref, "classification") == classes  # the detected mapping
    assert data_preview.label_names(ctx, ref, "chat") is None

    task = task_for("classification", minilm.tasks)
    config = method_form.build_config(peft_type, {}, task_type=task)
    shown = method_form.count_trainable(minilm.config, config, classes)
    two_label_head = method_form.count_trainable(minilm.config, config)
    assert shown[0] - two_label_head[0] == 384 + 1  # the third class's weights and bias

    spec = {
        "name": "count", "model": {"name": MINILM},
        "data": {"dataset": str(data), "shape": "classification", "max_length": 32},
        "method": {"peft_type": peft_type, **method_form.config_values(config)},
        "training": {"max_steps": 1, "batch_size": 4, "eval_samples": 2},
    }
    assert _engine_count(spec, tmp_path) == shown


def test_the_model_step_builds_minilm_as_a_classifier_without_the_decoder_warning(minilm, transformers_log):
    task = task_for(None, minilm.tasks)  # right after "Check model", before any data
    assert task == "SEQ_CLS"
    method_form.count_trainable(minilm.config, method_form.build_config("LORA", {}, task_type=task))
    assert not [m for m in transformers_log if "is_decoder" in m], transformers_log


def test_loading_minilm_for_classification_emits_no_decoder_warning(tmp_path, transformers_log):
    ref = resolve_model(MINILM, tmp_path)
    model = load_model(ref, "SEQ_CLS", load_tokenizer(ref), label_names=["a", "b", "c"])
    assert model.config.num_labels == 3 and model.classifier.out_features == 3
    assert not [m for m in transformers_log if "is_decoder" in m], transformers_log


def test_the_warning_is_caught_when_an_encoder_is_built_as_a_causal_lm(minilm, transformers_log):
    """The check above can fail: the old path (MiniLM as CAUSAL_LM) logs the warning this handler sees."""
    method_form.meta_model(minilm.config, "CAUSAL_LM")
    assert [m for m in transformers_log if "is_decoder" in m]


@pytest.mark.parametrize("shape,tasks,expected", [
    ("pair_classification", ("CAUSAL_LM", "SEQ_CLS"), "SEQ_CLS"),
    ("chat", ("CAUSAL_LM", "SEQ_CLS"), "CAUSAL_LM"),
    ("chat", ("SEQ_CLS",), "SEQ_CLS"),
    (None, ("SEQ_2_SEQ_LM",), "SEQ_2_SEQ_LM"),
    (None, (), "CAUSAL_LM"),
])
def test_task_for_matches_the_specs_rule(shape, tasks, expected):
    assert task_for(shape, tasks) == expected
