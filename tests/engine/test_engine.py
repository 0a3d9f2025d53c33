from __future__ import annotations

import json

import pytest
import torch

import tuners
from app.core.spec import RunSpec
from app.data.errors import DataError
from tests.engine.helpers import mapping_spec, save_tiny_model, write_classification_csv, write_mapping_csv
from tests.support.tiny_models import tokenizer
from worker.engine import Cancelled, MemoryReporter, collate, lr_lambda, train


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def mapping_file(tmp_path_factory):
    return write_mapping_csv(tmp_path_factory.mktemp("data") / "colours.csv")


def _run(spec_dict, tmp_path, **reporter_kw):
    reporter = MemoryReporter(**reporter_kw)
    result = train(RunSpec.from_dict(spec_dict), tmp_path / "out", reporter, tmp_path / "models")
    return result, reporter


def test_a_fixed_mapping_is_learned_and_the_adapter_reloads_with_the_trained_behaviour(llama_dir, mapping_file, tmp_path):
    result, rep = _run(mapping_spec(llama_dir, mapping_file), tmp_path)
    evals = [p.loss for p in rep.points if p.split == "eval"]
    train_points = [p for p in rep.points if p.split == "train"]
    assert result.steps == 40 and len(train_points) == 40
    assert evals[-1] < 0.35 * evals[0], evals
    assert all(p.learning_rate > 0 and p.tokens_per_second > 0 and p.grad_norm >= 0 for p in train_points)
    folder = result.adapter_dir
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "training_config.yaml"} <= {
        f.name for f in folder.iterdir()}
    assert RunSpec.from_yaml((folder / "training_config.yaml").read_text()).name == "colours"
    assert [kind for kind, _, _ in rep.artifacts if kind != "best_adapter"] == ["adapter"]

    from transformers import AutoModelForCausalLM

    tok = tokenizer("llama")
    prompt = tok("Q0: what colour is the grass? A:", return_tensors="pt")
    target = tok(" green", add_special_tokens=False)["input_ids"][0]
    base = AutoModelForCausalLM.from_pretrained(llama_dir)
    with torch.no_grad():
        before = base(**prompt).logits[0, -1].log_softmax(-1)[target]
        tuned = tuners.load(base, folder)
        after = tuned(**prompt).logits[0, -1].log_softmax(-1)[target]
    assert after > before + 2.0


def test_runs_with_the_same_seed_are_identical(llama_dir, mapping_file, tmp_path):
    from safetensors.torch import load_file

    spec = mapping_spec(llama_dir, mapping_file, max_steps=5, eval_every=0, grad_accum=2, batch_size=4)
    spec["method"]["lora_dropout"] = 0.1  # randomness drawn while training, from the seed
    results = [_run(spec, tmp_path / name) for name in ("a", "b")]
    (ra, a), (rb, b) = results
    assert [(p.loss, p.grad_norm) for p in a.points] == [(p.loss, p.grad_norm) for p in b.points]
    ta, tb = (load_file(r.adapter_dir / "adapter_model.safetensors") for r in (ra, rb))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    spec["training"]["seed"] = 4
    rc, _ = _run(spec, tmp_path / "c")
    tc = load_file(rc.adapter_dir / "adapter_model.safetensors")
    assert not all(torch.equal(ta[k], tc[k]) for k in ta)  # the seed is what makes them equal


def test_gradient_accumulation_counts_optimizer_steps_and_checkpoints_are_written(llama_dir, mapping_file, tmp_path):
    spec = mapping_spec(llama_dir, mapping_file, max_steps=4, grad_accum=2, batch_size=4, checkpoint_every=2,
                        eval_every=0, scheduler="cosine")
    result, rep = _run(spec, tmp_path)
    assert result.steps == 4
    assert [(k, s) for k, _, s in rep.artifacts if k != "best_adapter"] == [("checkpoint", 2), ("adapter", 4)]
    assert (tmp_path / "out" / "checkpoints" / "step-2" / "adapter_model.safetensors").is_file()


def test_a_stop_request_between_steps_cancels_with_metrics_kept(llama_dir, mapping_file, tmp_path):
    with pytest.raises(Cancelled):
        _run(mapping_spec(llama_dir, mapping_file), tmp_path, stop_after_step=3)


def test_a_missing_column_fails_before_training(llama_dir, tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("question,reply\nhi,there\nhow,now\n")
    spec = mapping_spec(llama_dir, data)
    spec["data"].update(shape="prompt_completion", mapping={"prompt": "prompt", "completion": "completion"})
    reporter = MemoryReporter()
    with pytest.raises(DataError, match="prompt"):
        train(RunSpec.from_dict(spec), tmp_path / "out", reporter, tmp_path / "models")
    assert reporter.points == []


def test_warmup_then_linear_and_cosine_decay_to_zero():
    linear, cosine = lr_lambda("linear", 2, 10), lr_lambda("cosine", 2, 10)
    assert [round(linear(s), 3) for s in (0, 1, 2, 6, 10)] == [0.333, 0.667, 1.0, 0.5, 0.0]
    assert cosine(2) == pytest.approx(1.0) and cosine(6) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)


def test_collate_pads_inputs_and_masks_label_padding():
    batch = collate([{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
                     {"input_ids": [8], "attention_mask": [1], "labels": [8]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    cls = collate([{"input_ids": [1, 2], "attention_mask": [1, 1], "label": 2}], pad_id=0)
    assert cls["labels"].tolist() == [2]
    assert json.dumps(cls["input_ids"].tolist()) == "[[1, 2]]"


def test_classification_on_drug_reviews_beats_the_majority_class(tmp_path):
    """The bundled encoder learns sentiment from a balanced positive/negative slice of the drug reviews.

    Three-class sentiment (with "neutral") on a few hundred truncated reviews is beyond this small model
    (a linear probe on its frozen embeddings reaches ~45%), so the slice is the two polar classes.
    """
    import csv
    from collections import Counter

    from app.core.models import resolve_model
    from tests.engine.helpers import write_drug_review_slice

    data = write_drug_review_slice(tmp_path / "reviews.csv", per_class=200, seed=1, classes=("negative", "positive"))
    spec = {
        "name": "reviews",
        "model": {"name": "all-MiniLM-L6-v2"},
        "data": {"dataset": str(data), "shape": "classification", "max_length": 128, "val_fraction": 0.25},
        "method": {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": "all-linear"},
        "training": {"epochs": 3, "batch_size": 16, "learning_rate": 0.001, "warmup_steps": 2, "eval_every": 0,
                     "seed": 0},
    }
    result, rep = _run(spec, tmp_path)
    evals = [p for p in rep.points if p.split == "eval"]
    with open(data) as f:
        labels = [r["label"] for r in csv.DictReader(f)]
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    assert result.label_names == ["negative", "positive"]
    assert evals[-1].loss < evals[0].loss
    assert evals[-1].accuracy > majority + 0.1, (evals[-1].accuracy, majority)
    assert json.loads((result.adapter_dir / "label_map.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    assert resolve_model("all-MiniLM-L6-v2", tmp_path).endswith("model")


def test_max_length_beyond_the_models_positions_is_capped_not_a_crash(tmp_path):
    bert_dir = save_tiny_model(tmp_path / "bert", "bert", "SEQ_CLS")
    data = write_classification_csv(tmp_path / "long.csv", [
        (" ".join(["good" if i % 2 else "bad"] * 400), "pos" if i % 2 else "neg") for i in range(12)])
    spec = {
        "name": "long", "model": {"name": str(bert_dir)},
        "data": {"dataset": str(data), "shape": "classification", "max_length": 512, "val_fraction": 0.25},
        "method": {"peft_type": "LORA", "target_modules": "attention"},
        "training": {"max_steps": 2, "batch_size": 4, "eval_every": 0, "seed": 0},
    }
    result, rep = _run(spec, tmp_path)
    assert result.steps == 2
    assert any("using 256" in line for line in rep.lines), rep.lines


@pytest.mark.parametrize("precision", ["nf4", "int8"])
def test_a_quantized_base_learns_and_its_adapter_loads_on_the_full_precision_base(
    precision, llama_dir, mapping_file, tmp_path
):
    spec = mapping_spec(llama_dir, mapping_file)
    spec["model"].update(precision=precision, double_quant=True)
    result, rep = _run(spec, tmp_path)
    evals = [p.loss for p in rep.points if p.split == "eval"]
    assert evals[-1] < 0.5 * evals[0], evals

    from transformers import AutoModelForCausalLM

    tok = tokenizer("llama")
    prompt = tok("Q0: what colour is the grass? A:", return_tensors="pt")
    target = tok(" green", add_special_tokens=False)["input_ids"][0]
    base = AutoModelForCausalLM.from_pretrained(llama_dir)
    with torch.no_grad():
        before = base(**prompt).logits[0, -1].log_softmax(-1)[target]
        after = tuners.load(base, result.adapter_dir)(**prompt).logits[0, -1].log_softmax(-1)[target]
    assert after > before + 2.0
