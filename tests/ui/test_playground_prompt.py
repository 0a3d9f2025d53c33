"""The playground prompts a trained causal model token for token as its training data was rendered,
with the chat template saved beside the adapter (not whatever the model's tokenizer says later)."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from app.core.models import load_tokenizer
from app.core.spec import RunSpec
from app.data import IGNORE
from app.data.chat import CHAT_TEMPLATE_FILE, DEFAULT_CHAT_TEMPLATE
from app.data.pipeline import prepare_for_run
from app.data.sources import resolve_dataset_file
from app.services import playground, runs
from tests.engine.helpers import save_tiny_model
from worker.tasks import execute_run

QUESTIONS = {"What colour is the sky?": "Blue.", "What colour is grass?": "Green.", "Is snow cold?": "Yes, very.",
             "Name a fruit.": "An apple.", "How many legs has a cat?": "Four.", "Say hello.": "Hello!"}
FOLLOW_UP = [{"role": "user", "content": "What colour is the sky?"}, {"role": "assistant", "content": "Blue."},
             {"role": "user", "content": "And at night?"}, {"role": "assistant", "content": "Black."}]
# A template the model's tokenizer might carry by the time someone asks it something.
LATER_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}assistant: {% endif %}")


def llama_without_a_template(folder: Path) -> Path:
    """The tiny Llama with its tokenizer's chat template removed (a base model that has none)."""
    save_tiny_model(folder)
    (folder / CHAT_TEMPLATE_FILE).unlink(missing_ok=True)
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "chat_template"}))
    assert AutoTokenizer.from_pretrained(folder).chat_template is None
    return folder


def write_chats(path: Path) -> Path:
    lines = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
             for q, a in QUESTIONS.items()]
    lines.append({"messages": FOLLOW_UP})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def prompt_parts(example: dict) -> list[list[int]]:
    """The ids in front of each trained span of a prepared example: what the model saw before it answered."""
    ids, labels = example["input_ids"], example["labels"]
    return [ids[:i] for i in range(len(ids)) if labels[i] != IGNORE and (i == 0 or labels[i - 1] == IGNORE)]


def test_the_playground_prompts_a_model_without_a_template_exactly_as_training_did(ctx, tmp_path):
    model = llama_without_a_template(tmp_path / "llama")
    spec = RunSpec.from_dict({
        "name": "chat", "model": {"name": str(model)},
        "data": {"dataset": str(write_chats(tmp_path / "chats.jsonl")), "shape": "chat", "val_fraction": 0.0,
                 "max_length": 128},
        "method": {"peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj"]},
        "training": {"max_steps": 2, "batch_size": 4, "eval_every": 0},
    })
    run_id = runs.create_run(ctx, spec)
    assert execute_run(run_id, ctx.settings, ctx.registry) == "succeeded", runs.get_run(ctx, run_id).error
    adapter = Path(runs.get_run(ctx, run_id).adapter_path)
    assert (adapter / CHAT_TEMPLATE_FILE).read_text() == DEFAULT_CHAT_TEMPLATE  # ChatML: the model has none

    # What training fed the model before each answer: the engine's own data stage, on the stored spec.
    prepared, _ = prepare_for_run(runs.get_spec(ctx, run_id), load_tokenizer(str(model)), resolve_dataset_file,
                                  lambda line: None)
    trained = [tuple(part) for example in prepared.train for part in prompt_parts(example)]

    def asked() -> set[tuple[int, ...]]:
        """The ids the playground gives the model: each question alone, and the follow-up after its history."""
        loaded = playground.load_run(ctx, run_id)
        single = [playground.encode_prompt(loaded, None, q)["input_ids"][0].tolist() for q in QUESTIONS]
        follow_up = playground.encode_prompt(loaded, FOLLOW_UP[:2], FOLLOW_UP[2]["content"])["input_ids"][0].tolist()
        return {tuple(ids) for ids in [*single, follow_up]}

    # one prompt per answer: six questions, and the follow-up conversation's two (its first is a repeat)
    assert len(trained) == len(QUESTIONS) + 2 and len(set(trained)) == len(QUESTIONS) + 1
    assert asked() == set(trained)

    # The model's tokenizer gains a template of its own later (a hub model updated): the playground
    # still prompts as training did, because the template travels with the adapter.
    (model / CHAT_TEMPLATE_FILE).write_text(LATER_TEMPLATE)
    assert AutoTokenizer.from_pretrained(model).chat_template == LATER_TEMPLATE
    assert asked() == set(trained)
