"""Preparation options: truncation counted, packing, seeded and second-file validation, de-duplication."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from app.data import (
    IGNORE,
    DataError,
    PrepareOptions,
    length_histogram_png,
    prepare,
    preview_stats,
    read_table,
)
from tests.support.tiny_models import tokenizer


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return read_table(path)


def pc(n, long_every=0):
    return [{"prompt": f"Question {i}:" + (" word" * 80 if long_every and i % long_every == 0 else ""),
             "completion": f" answer {i}"} for i in range(n)]


PC = {"prompt": "prompt", "completion": "completion"}


def test_truncation_is_counted_and_answerless_rows_dropped(tmp_path):
    table = write_jsonl(tmp_path / "pc.jsonl", pc(10, long_every=5) + [{"prompt": "short", "completion": " x" * 60}])
    ready = prepare(table, "prompt_completion", PC, tokenizer("llama"), PrepareOptions(max_length=32, val_fraction=0))
    stats = ready.stats["train"]
    assert stats["dropped"] == 2  # rows 1 and 6: the prompt alone fills max_length
    assert [r["row"] for r in stats["dropped_rows"]] == [1, 6]
    assert all("after max_length" in r["reason"] for r in stats["dropped_rows"])
    assert stats["truncated"] == 1 and stats["truncated_rows"][0]["row"] == 11
    assert all(len(ex["input_ids"]) <= 32 for ex in ready.train)
    assert len(ready.train) == 9


def test_packing_keeps_every_token_and_respects_max_length(tmp_path):
    table = write_jsonl(tmp_path / "pc.jsonl", pc(20))
    tok = tokenizer("llama")
    plain = prepare(table, "prompt_completion", PC, tok, PrepareOptions(max_length=64, val_fraction=0))
    packed = prepare(table, "prompt_completion", PC, tok, PrepareOptions(max_length=64, val_fraction=0, packing=True))
    assert len(packed.train) < len(plain.train)
    assert all(len(b["input_ids"]) <= 64 for b in packed.train)
    assert sum((b["input_ids"] for b in packed.train), []) == sum((e["input_ids"] for e in plain.train), [])
    assert sum((b["labels"] for b in packed.train), []) == sum((e["labels"] for e in plain.train), [])
    assert packed.stats["blocks"] == len(packed.train)
    # position ids restart at each example of a block: the engine's boundaries between them
    starts = [[i for i, p in enumerate(b["position_ids"]) if p == 0] for b in packed.train]
    lengths = [b - a for s, block in zip(starts, packed.train, strict=True)
               for a, b in zip(s, [*s[1:], len(block["input_ids"])], strict=True)]
    assert lengths == [len(e["input_ids"]) for e in plain.train]


def test_seeded_split_is_reproducible_and_disjoint(tmp_path):
    table = write_jsonl(tmp_path / "pc.jsonl", pc(50))
    tok = tokenizer("llama")

    def split(seed):
        ready = prepare(table, "prompt_completion", PC, tok, PrepareOptions(val_fraction=0.2, seed=seed))
        return [tok.decode(e["input_ids"]) for e in ready.train], [tok.decode(e["input_ids"]) for e in ready.eval]

    train, evals = split(0)
    assert len(evals) == 10 and len(train) == 40
    assert not set(train) & set(evals)
    assert split(0) == (train, evals)
    assert split(1)[1] != evals


def test_second_file_is_the_validation_set(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    val = write_jsonl(tmp_path / "v.jsonl", [{"text": "great", "label": "pos"}])
    ready = prepare(train, "classification", {"text": "text", "label": "label"}, tokenizer("bert"),
                    PrepareOptions(task="SEQ_CLS", val_fraction=0.5), val_table=val)
    assert len(ready.train) == 2 and [e["label"] for e in ready.eval] == [1]
    assert ready.stats["eval_source"] == "v.jsonl"


def test_validation_label_unknown_to_training_is_refused(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    val = write_jsonl(tmp_path / "v.jsonl", [{"text": "meh", "label": "pos"}, {"text": "meh", "label": "meh"}])
    with pytest.raises(DataError) as caught:
        prepare(train, "classification", {"text": "text", "label": "label"}, tokenizer("bert"),
                PrepareOptions(task="SEQ_CLS"), val_table=val)
    assert (caught.value.code, caught.value.file, caught.value.row) == ("unknown_label", "v.jsonl", 2)


def test_dedupe_removes_repeated_rows_across_the_split(tmp_path):
    table = write_jsonl(tmp_path / "pc.jsonl", pc(10) + pc(10) + pc(3))
    tok = tokenizer("llama")
    ready = prepare(table, "prompt_completion", PC, tok, PrepareOptions(val_fraction=0.3, dedupe=True))
    texts = [tok.decode(e["input_ids"]) for e in ready.train + ready.eval]
    assert len(texts) == 10 and len(set(texts)) == 10
    assert ready.stats["duplicates_removed"] == 13


def test_wrong_task_for_shape(tmp_path):
    table = write_jsonl(tmp_path / "pc.jsonl", pc(3))
    with pytest.raises(DataError) as caught:
        prepare(table, "prompt_completion", PC, tokenizer("bert"), PrepareOptions(task="SEQ_CLS"))
    assert caught.value.code == "wrong_task"


@pytest.mark.parametrize("options", [{"max_length": 2}, {"val_fraction": 1.0}, {"task": "TOKEN_CLS"},
                                     {"packing": True, "task": "SEQ_CLS"}])
def test_bad_options_are_refused(options):
    with pytest.raises(DataError) as caught:
        PrepareOptions(**options)
    assert caught.value.code == "bad_option"


def test_preview_stats_and_histogram_picture(tmp_path):
    rows = [{"text": "word " * n, "label": "long" if n > 20 else "short"} for n in (1, 2, 3, 30, 40, 5)]
    table = write_jsonl(tmp_path / "c.jsonl", rows)
    stats = preview_stats(table, "classification", {"text": "text", "label": "label"}, tokenizer("bert"), 16)
    assert stats["rows"] == 6
    assert stats["label_balance"] == {"long": 2, "short": 4}
    assert stats["tokens"]["min"] == 3 and stats["tokens"]["max"] == 42
    assert sum(stats["histogram"]["counts"]) == 6
    assert len(stats["histogram"]["bins"]) == len(stats["histogram"]["counts"]) + 1
    assert stats["truncated"] == 2 and [r["row"] for r in stats["truncated_rows"]] == [4, 5]
    png = length_histogram_png(stats)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    assert image.size == (640, 320)
    assert (79, 70, 229) in {c for _, c in image.getcolors(1 << 16)}  # bars were drawn


def test_multi_turn_chat_masks_every_user_turn(tmp_path):
    table = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "uno"},
        {"role": "user", "content": "two"}, {"role": "assistant", "content": "dos"},
    ]}])
    tok = tokenizer("llama")
    ex = prepare(table, "chat", {"messages": "messages"}, tok, PrepareOptions(val_fraction=0)).train[0]
    spans, current = [], []
    for t, label in zip(ex["input_ids"], ex["labels"]):
        if label == IGNORE and current:
            spans.append(tok.decode(current))
            current = []
        elif label != IGNORE:
            current.append(t)
    if current:
        spans.append(tok.decode(current))
    assert spans == ["uno<|im_end|>\n", "dos<|im_end|>\n"]


def fresh_llama_tokenizer(template: str):
    from transformers import AutoTokenizer

    from tests.support.tiny_models import smol_tokenizer_dir

    tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir())
    tok.chat_template = template
    return tok


SYSTEM_CHAT = [{"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"},
                             {"role": "assistant", "content": "hello"}]}]


def test_template_that_rejects_system_gets_it_in_the_first_user_turn(tmp_path):
    tok = fresh_llama_tokenizer(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "[{{ m['role'] }}]{{ m['content'] }}[/]{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    table = write_jsonl(tmp_path / "c.jsonl", SYSTEM_CHAT)
    ex = prepare(table, "chat", {"messages": "messages"}, tok, PrepareOptions(val_fraction=0)).train[0]
    assert tok.decode(ex["input_ids"]) == "[user]Be kind.\n\nhi[/][assistant]hello[/]"
    assert tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE]) == "hello[/]"


def test_template_whose_prefixes_do_not_line_up_still_masks_the_answer(tmp_path):
    # the generation prompt differs from how a finished assistant turn starts
    tok = fresh_llama_tokenizer(
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
        "{% if add_generation_prompt %}<assistant say>{% endif %}"
    )
    table = write_jsonl(tmp_path / "c.jsonl", SYSTEM_CHAT)
    ex = prepare(table, "chat", {"messages": "messages"}, tok, PrepareOptions(val_fraction=0)).train[0]
    assert tok.decode(ex["input_ids"]) == "<system>Be kind.</system><user>hi</user><assistant>hello</assistant>"
    assert tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE]) == "hello"
