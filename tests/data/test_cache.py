"""Prepared data is cached by fingerprint: a second run on the same data and settings tokenizes nothing."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import pytest

from app.core.spec import RunSpec
from app.data import DataError
from app.data.cache import MANIFEST
from app.data.pipeline import prepare_for_run
from tests.data.test_prepare import fresh_llama_tokenizer
from tests.support.tiny_models import smol_tokenizer_dir


class CountingTokenizer:
    """The tokenizer, counting every call that tokenizes or renders text; with ``fail_after`` its
    tokenizing calls after that many raise (a crash in the middle of preparing)."""

    def __init__(self, tokenizer, fail_after: int | None = None) -> None:
        self._tok, self.calls, self.encodes, self.fail_after = tokenizer, 0, 0, fail_after

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.encodes += 1
        if self.fail_after is not None and self.encodes > self.fail_after:
            raise RuntimeError("the tokenizer broke down")
        return self._tok(*args, **kwargs)

    def apply_chat_template(self, *args, **kwargs):
        self.calls += 1
        return self._tok.apply_chat_template(*args, **kwargs)

    def encode(self, *args, **kwargs):
        self.calls += 1
        return self._tok.encode(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def smol():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_tokenizer_dir())


def instructions(path, n=60, answer="answer"):
    rows = [{"instruction": f"Question {i % 50}?", "input": "", "output": f"{answer} {i % 50}."} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def spec_for(path, **data):
    return RunSpec.from_dict({
        "name": "cache", "model": {"name": str(path.parent)},
        "data": {"dataset": str(path), "max_length": 64, "val_fraction": 0.2, "dedupe": True, **data},
        "method": {"peft_type": "LORA", "target_modules": ["q_proj"]},
    })


def run(spec, tokenizer, cache_dir, lines=None):
    path = spec.data.dataset
    return prepare_for_run(spec, tokenizer, lambda ref: path, (lines if lines is not None else []).append,
                           cache_dir=cache_dir)


def entries(cache_dir):
    folder = cache_dir / "prepared"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_second_run_reads_the_cache_and_never_calls_the_tokenizer(tmp_path):
    data, cache = instructions(tmp_path / "data.jsonl"), tmp_path / "cache"
    first_tok, second_tok = CountingTokenizer(smol()), CountingTokenizer(smol())
    first, task = run(spec_for(data), first_tok, cache)
    lines: list[str] = []
    second, second_task = run(spec_for(data), second_tok, cache, lines)
    assert first_tok.calls > 0
    assert second_tok.calls == 0
    assert (list(second.train), list(second.eval)) == (list(first.train), list(first.eval))
    assert (second.stats, second.label_names, second_task) == (first.stats, first.label_names, task)
    assert len(first.train) == 40 and len(first.eval) == 10 and first.stats["duplicates_removed"] == 10
    assert any("found in the cache" in line and "nothing tokenized" in line for line in lines)
    assert any(line.startswith("data: 40 training / 10 validation rows") for line in lines)
    mapped = [f["filename"] for f in second.train.dataset.cache_files]
    assert mapped and all(name.startswith(str(cache / "prepared")) for name in mapped)


def test_the_same_bytes_under_the_same_name_elsewhere_hit_the_cache(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    data, cache = instructions(tmp_path / "a" / "data.jsonl"), tmp_path / "cache"
    run(spec_for(data), CountingTokenizer(smol()), cache)
    copy = shutil.copy(data, tmp_path / "b" / "data.jsonl")
    tok = CountingTokenizer(smol())
    run(spec_for(copy), tok, cache)
    assert tok.calls == 0 and len(entries(cache)) == 1


@pytest.mark.parametrize("change", ["nothing", "content", "max_length", "seed", "dedupe", "template", "vocabulary"])
def test_any_change_to_the_inputs_prepares_again(tmp_path, change):
    data, cache = instructions(tmp_path / "data.jsonl"), tmp_path / "cache"
    run(spec_for(data), CountingTokenizer(smol()), cache)
    options, tokenizer = {}, smol()
    if change == "content":
        instructions(data, answer="ANSWER")  # same size, other bytes
    elif change == "max_length":
        options = {"max_length": 48}
    elif change == "dedupe":
        options = {"dedupe": False}
    elif change == "template":
        tokenizer = fresh_llama_tokenizer("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
                                          "{% if add_generation_prompt %}[assistant]{% endif %}")
    elif change == "vocabulary":
        tokenizer.add_tokens(["<extra_token>"])
    spec = spec_for(data, **options)
    if change == "seed":
        spec = RunSpec.from_dict({**spec.to_dict(), "training": {**spec.to_dict()["training"], "seed": 7}})
    counting = CountingTokenizer(tokenizer)
    run(spec, counting, cache)
    if change == "nothing":
        assert (counting.calls, len(entries(cache))) == (0, 1)
    else:
        assert counting.calls > 0 and len(entries(cache)) == 2


def test_a_build_that_fails_half_way_leaves_no_entry(tmp_path):
    rows = [{"instruction": f"Question {i}?", "input": "", "output": f"answer {i}."} for i in range(3000)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    cache = tmp_path / "cache"
    broken = CountingTokenizer(smol(), fail_after=3)  # two probes, the first batch of the map, then a crash
    with pytest.raises(RuntimeError, match="broke down"):
        run(spec_for(data), broken, cache)
    assert entries(cache) == []
    tok = CountingTokenizer(smol())
    prepared, _ = run(spec_for(data), tok, cache)
    assert tok.calls > 0 and len(prepared.train) + len(prepared.eval) == 3000
    (entry,) = entries(cache)
    assert (cache / "prepared" / entry / MANIFEST).is_file()


def test_bad_data_is_refused_and_leaves_no_entry(tmp_path):
    data, cache = tmp_path / "data.jsonl", tmp_path / "cache"
    data.write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q2", "output": null}\n', encoding="utf-8")
    with pytest.raises(DataError) as caught:
        run(spec_for(data), smol(), cache)
    assert (caught.value.code, caught.value.line, caught.value.field) == ("empty_field", 2, "output")
    assert entries(cache) == []


def test_a_damaged_entry_is_prepared_again(tmp_path):
    data, cache = instructions(tmp_path / "data.jsonl"), tmp_path / "cache"
    first, _ = run(spec_for(data), smol(), cache)
    expected = list(first.train)
    del first
    gc.collect()
    (entry,) = entries(cache)
    (cache / "prepared" / entry / "train-tokens.arrow").unlink()
    tok = CountingTokenizer(smol())
    again, _ = run(spec_for(data), tok, cache)
    assert tok.calls > 0 and list(again.train) == expected


def test_without_a_cache_the_files_go_with_the_splits(tmp_path):
    data = instructions(tmp_path / "data.jsonl")
    prepared, _ = run(spec_for(data), smol(), None)
    (folder,) = {f["filename"].split("/prepared/")[0] for f in prepared.train.dataset.cache_files}
    train = prepared.train
    assert len(train) == 40 and train[0]["input_ids"]
    del prepared, train
    gc.collect()
    assert not Path(folder).exists()
