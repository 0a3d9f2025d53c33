"""Every dataset shape, as a file a person would upload: what is detected and what the model trains on."""

from __future__ import annotations

import json

import pytest

from app.data import IGNORE, PrepareOptions, detect_shape, prepare, read_table
from tests.support.tiny_models import tokenizer

SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


def jsonl(*records) -> str:
    return "\n".join(json.dumps(r) for r in records) + "\n"


# (case, file name, content, shape, mapping, task, family, full text of row 1, trained text of row 1)
SHAPE_CASES = [
    (
        "alpaca-instruction-csv", "alpaca.csv",
        "instruction,input,output,source\nAdd the numbers,2 and 3,5,web\nName a colour,,Blue,web\n",
        "instruction", {"instruction": "instruction", "input": "input", "output": "output"},
        "CAUSAL_LM", "llama",
        SMOL_SYSTEM + "<|im_start|>user\nAdd the numbers\n\n2 and 3<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n",
        "5<|im_end|>\n",
    ),
    (
        "openai-chat-with-system-jsonl", "chat.jsonl",
        jsonl(
            {"messages": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Salut"}, {"role": "user", "content": "Bye"},
                          {"role": "assistant", "content": "Au revoir"}]},
            {"messages": [{"role": "user", "content": "Yes?"}, {"role": "assistant", "content": "No."}]},
        ),
        "chat", {"messages": "messages"}, "CAUSAL_LM", "llama",
        "<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nSalut<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\nAu revoir<|im_end|>\n",
        "Salut<|im_end|>\nAu revoir<|im_end|>\n",
    ),
    (
        "sharegpt-conversations-json", "sharegpt.json",
        json.dumps([
            {"id": 1, "conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]},
            {"id": 2, "conversations": [{"from": "human", "value": "3+3?"}, {"from": "gpt", "value": "6"}]},
        ], indent=1),
        "chat", {"conversations": "conversations"}, "CAUSAL_LM", "llama",
        SMOL_SYSTEM + "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n",
        "4<|im_end|>\n",
    ),
    (
        "prompt-completion-jsonl", "pc.jsonl",
        jsonl({"prompt": "The capital of France is", "completion": " Paris."},
              {"prompt": "The capital of Spain is", "completion": " Madrid."}),
        "prompt_completion", {"prompt": "prompt", "completion": "completion"}, "CAUSAL_LM", "llama",
        "The capital of France is Paris.<|im_end|>", " Paris.<|im_end|>",
    ),
    (
        "plain-text-paragraphs-txt", "book.txt",
        "It was a dark night.\nThe wind howled.\n\nMorning came.\n",
        "text", {"text": "text"}, "CAUSAL_LM", "llama",
        "It was a dark night.\nThe wind howled.<|im_end|>", "It was a dark night.\nThe wind howled.<|im_end|>",
    ),
    (
        "classification-tsv-string-labels", "reviews.tsv",
        "review\tsentiment\tdate\nGreat drug, no side effects\tpositive\t2020\nMade me dizzy\tnegative\t2021\n",
        "classification", {"text": "review", "label": "sentiment"}, "SEQ_CLS", "bert",
        "[CLS] great drug, no side effects [SEP]", None,
    ),
    (
        "pair-classification-json-columns", "nli.json",
        json.dumps({"premise": ["A man eats.", "A dog runs."], "hypothesis": ["Someone eats.", "A cat sleeps."],
                    "label": [0, 2]}),
        "pair_classification", {"text": "premise", "text_pair": "hypothesis", "label": "label"}, "SEQ_CLS", "bert",
        "[CLS] a man eats. [SEP] someone eats. [SEP]", None,
    ),
    (
        "instruction-as-seq2seq", "alpaca.jsonl",
        jsonl({"instruction": "Translate", "input": "hello", "output": "bonjour"},
              {"instruction": "Translate", "input": "cat", "output": "chat"}),
        "instruction", {"instruction": "instruction", "input": "input", "output": "output"},
        "SEQ_2_SEQ_LM", "llama", "Translate\n\nhello", "bonjour",
    ),
]


@pytest.mark.parametrize(
    "name,content,shape,mapping,task,family,full,trained",
    [c[1:] for c in SHAPE_CASES], ids=[c[0] for c in SHAPE_CASES],
)
def test_shape_is_detected_and_prepared(tmp_path, name, content, shape, mapping, task, family, full, trained):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    table = read_table(path)
    found = detect_shape(table)
    assert (found.shape, found.mapping) == (shape, mapping)
    assert found.confidence >= 0.75
    assert set(found.ignored_columns) == set(table.columns) - set(mapping.values())

    tok = tokenizer(family)
    ready = prepare(table, found.shape, found.mapping, tok, PrepareOptions(max_length=128, val_fraction=0, task=task))
    first = ready.train[0]
    assert len(ready.train) == len(table.rows)
    assert first["attention_mask"] == [1] * len(first["input_ids"])
    assert tok.decode(first["input_ids"]) == full
    if task == "CAUSAL_LM":
        assert len(first["labels"]) == len(first["input_ids"])
        kept = [t for t, label in zip(first["input_ids"], first["labels"]) if label != IGNORE]
        assert [label for label in first["labels"] if label != IGNORE] == kept
        assert tok.decode(kept) == trained
    elif task == "SEQ_2_SEQ_LM":
        assert tok.decode(first["labels"], skip_special_tokens=True) == trained
    else:
        assert ready.label_names == sorted({str(r[mapping["label"]]) for r in table.rows})
        assert [ex["label"] for ex in ready.train] == [
            ready.label_names.index(str(r[mapping["label"]])) for r in table.rows
        ]


def test_ignored_columns_are_listed(tmp_path):
    path = tmp_path / "extra.csv"
    path.write_text("prompt,completion,id,notes\nA,B,1,x\nC,D,2,y\n")
    found = detect_shape(read_table(path))
    assert found.shape == "prompt_completion"
    assert found.ignored_columns == ["id", "notes"]


def test_user_mapping_overrides_detection(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer,topic\nWhy?,Because.,a\nHow?,Slowly.,b\n")
    table = read_table(path)
    ready = prepare(table, "classification", {"text": "question", "label": "topic"}, tokenizer("bert"),
                    PrepareOptions(task="SEQ_CLS", val_fraction=0))
    assert ready.label_names == ["a", "b"]
    assert [ex["label"] for ex in ready.train] == [0, 1]


def test_integer_labels_are_ordered_numerically(tmp_path):
    path = tmp_path / "stars.csv"
    path.write_text("text,stars\nbad,1\nok,10\nfine,2\n")
    table = read_table(path)
    ready = prepare(table, "classification", {"text": "text", "label": "stars"}, tokenizer("bert"),
                    PrepareOptions(task="SEQ_CLS", val_fraction=0))
    assert ready.label_names == ["1", "2", "10"]
    assert [ex["label"] for ex in ready.train] == [0, 2, 1]


def test_classification_for_a_causal_model_learns_the_label_name(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("text,label\nlovely,positive\nawful,negative\n")
    table = read_table(path)
    tok = tokenizer("llama")
    ready = prepare(table, "classification", {"text": "text", "label": "label"}, tok, PrepareOptions(val_fraction=0))
    first = ready.train[0]
    assert tok.decode([t for t, lab in zip(first["input_ids"], first["labels"]) if lab != IGNORE]) == \
        "positive<|im_end|>\n"
    assert ready.label_names == ["negative", "positive"]


def test_tokenizer_without_chat_template_gets_chatml(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(jsonl({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}))
    tok = tokenizer("bert")
    ready = prepare(read_table(path), "chat", {"messages": "messages"}, tok, PrepareOptions(val_fraction=0))
    first = ready.train[0]
    trained = tok.decode([t for t, lab in zip(first["input_ids"], first["labels"]) if lab != IGNORE])
    assert trained.replace(" ", "") == "yo<|im_end|>"
    assert "hi" in tok.decode(first["input_ids"])
