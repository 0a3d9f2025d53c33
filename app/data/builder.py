"""Checked records -> token examples for one tokenizer, task and length: templated, masked, truncated.

Causal LM examples train only on what the model should produce (assistant turns, completions; all
of a plain text); everything else has label -100. Seq2seq examples carry the target ids as labels.
Classification examples carry an integer ``label`` whose names are given as ``label_names``.

The builder works a batch at a time and calls the tokenizer once per batch (per kind of text), so
the fast tokenizer encodes a whole batch in Rust; :meth:`Builder.batch` is the function the
pipeline hands to ``Dataset.map(batched=True)``, and :meth:`Builder.build` serves the preview.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets import Features, List, Value

from app.core.tasks import CLASSIFICATION_SHAPES
from app.data.chat import chat_segments
from app.data.errors import DataError

IGNORE = -100

# What became of each row, beside its example: kept (False = dropped), untruncated length, why it changed.
OUTCOME_FEATURES = Features({
    "kept": Value("bool"), "length": Value("int32"), "truncated": Value("bool"), "reason": Value("string"),
})
OUTCOME_COLUMNS = tuple(OUTCOME_FEATURES)


@dataclass
class Tokenized:
    """One row's outcome: an example (None when dropped), its untruncated length and why it changed."""

    index: int
    example: dict | None
    length: int
    truncated: bool = False
    reason: str | None = None


def _affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer wraps around a text by default (BOS in front, [SEP] or </s> behind)."""
    probe = "hello"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    wrapped = tokenizer(probe)["input_ids"]
    for start in range(len(wrapped) - len(bare) + 1):
        if wrapped[start : start + len(bare)] == bare:
            return wrapped[:start], wrapped[start + len(bare) :]
    return [], []


def user_text(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)


def as_messages(record: dict, shape: str) -> list[dict]:
    """The conversation a causal model is trained on for a record of any shape but text/prompt_completion."""
    if shape == "chat":
        return record["messages"]
    if shape == "instruction":
        messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
        return [*messages, {"role": "user", "content": user_text(record["instruction"], record["input"])},
                {"role": "assistant", "content": record["output"]}]
    # classification as generation: the answer is the label's name
    return [{"role": "user", "content": user_text(record["text"], record.get("text_pair", ""))},
            {"role": "assistant", "content": str(record["label"])}]


class Builder:
    """Turns normalised records into token examples for one tokenizer, task and length."""

    def __init__(self, tokenizer, shape: str, task: str, max_length: int, label_names: list[str] | None) -> None:
        if task == "SEQ_CLS" and shape not in CLASSIFICATION_SHAPES:
            raise DataError("wrong_task", f"a sequence classifier needs labelled text, not the {shape} shape",
                            hint="Map a text and a label column, or pick a generative model")
        if task == "SEQ_2_SEQ_LM" and shape == "text":
            raise DataError("wrong_task", "a sequence-to-sequence model needs inputs and targets, not plain text",
                            hint="Use prompt/completion or instruction data, or pick a causal language model")
        self.tok, self.shape, self.task, self.max_length = tokenizer, shape, task, max_length
        self.label_names = label_names
        self.label_ids = {n: i for i, n in enumerate(label_names)} if label_names else {}
        self.prefix, self.suffix = _affixes(tokenizer)
        self.eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        self.pair_types = (task == "SEQ_CLS" and shape == "pair_classification"
                           and "token_type_ids" in tokenizer("a", "b"))

    # the examples' columns ------------------------------------------------------------------

    @property
    def example_features(self) -> Features:
        ids = List(Value("int32"))
        if self.task != "SEQ_CLS":
            return Features({"input_ids": ids, "attention_mask": List(Value("int8")), "labels": ids})
        columns = {"input_ids": ids, "attention_mask": List(Value("int8"))}
        if self.pair_types:
            columns["token_type_ids"] = List(Value("int8"))
        return Features({**columns, "label": Value("int64")})

    @property
    def features(self) -> Features:
        return Features({**self.example_features, **OUTCOME_FEATURES})

    def batch(self, columns: dict[str, list]) -> dict[str, list]:
        """``Dataset.map(batched=True)``'s function: record columns in, example and outcome columns out
        (a dropped row keeps its place with empty token lists and ``kept`` False)."""
        names = list(columns)
        records = [dict(zip(names, values)) for values in zip(*columns.values())]
        out: dict[str, list[Any]] = {name: [] for name in self.features}
        example_columns = list(self.example_features)
        for item in self.build(records):
            example = item.example
            for name in example_columns:
                out[name].append(example[name] if example is not None else (None if name == "label" else []))
            out["kept"].append(example is not None)
            out["length"].append(item.length)
            out["truncated"].append(item.truncated)
            out["reason"].append(item.reason)
        return out

    def build(self, records: list[dict]) -> list[Tokenized]:
        """One :class:`Tokenized` per record, ``index`` its position in ``records``."""
        if not records:
            return []
        if self.task == "SEQ_CLS":
            return self._classify(records)
        if self.task == "SEQ_2_SEQ_LM":
            return self._seq2seq(records)
        return self._causal(records)

    # causal ---------------------------------------------------------------------------------

    def _segments(self, record: dict) -> list[tuple[str | list[int], bool]]:
        if self.shape == "text":
            return [(self.prefix, False), (record["text"], True), (self.eos, True)]
        if self.shape == "prompt_completion":
            return [(self.prefix, False), (record["prompt"], False), (record["completion"], True), (self.eos, True)]
        return list(chat_segments(self.tok, as_messages(record, self.shape)))

    def _causal(self, records: list[dict]) -> list[Tokenized]:
        per_record = [self._segments(r) for r in records]
        texts = [s for segs in per_record for s, _ in segs if isinstance(s, str)]
        encoded = iter(self.tok(texts, add_special_tokens=False)["input_ids"]) if texts else iter(())
        out = []
        for i, segs in enumerate(per_record):
            ids: list[int] = []
            labels: list[int] = []
            for piece, trained in segs:
                piece_ids = next(encoded) if isinstance(piece, str) else list(piece)
                ids += piece_ids
                labels += piece_ids if trained else [IGNORE] * len(piece_ids)
            out.append(self._cut_causal(i, ids, labels))
        return out

    def _cut_causal(self, index: int, ids: list[int], labels: list[int]) -> Tokenized:
        length = len(ids)
        truncated = length > self.max_length
        if truncated:
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        if all(label == IGNORE for label in labels):
            reason = (f"the answer starts after max_length ({self.max_length}) tokens" if truncated
                      else "nothing to learn: the answer is empty once tokenized")
            return Tokenized(index, None, length, truncated, reason)
        example = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}
        return Tokenized(index, example, length, truncated,
                         f"cut from {length} to {self.max_length} tokens" if truncated else None)

    # seq2seq --------------------------------------------------------------------------------

    def _source_target(self, record: dict) -> tuple[str, str]:
        if self.shape == "prompt_completion":
            return record["prompt"], record["completion"]
        if self.shape == "instruction":
            return user_text(record["system"], record["instruction"], record["input"]), record["output"]
        if self.shape == "chat":
            turns = record["messages"]
            history = "\n".join(f"{t['role']}: {t['content']}" for t in turns[:-1])
            return history, turns[-1]["content"]
        return user_text(record["text"], record.get("text_pair", "")), str(record["label"])

    def _fit(self, ids: list[int]) -> list[int]:
        if len(ids) <= self.max_length:
            return ids
        keep = self.max_length - len(self.suffix)
        return ids[:keep] + self.suffix if self.suffix and ids[-len(self.suffix):] == self.suffix else ids[: self.max_length]

    def _seq2seq(self, records: list[dict]) -> list[Tokenized]:
        sources, targets = zip(*(self._source_target(r) for r in records))
        src_ids = self.tok(list(sources))["input_ids"]
        tgt_ids = self.tok(list(targets))["input_ids"]
        out = []
        for i, (src, tgt) in enumerate(zip(src_ids, tgt_ids)):
            length = max(len(src), len(tgt))
            truncated = length > self.max_length
            src, tgt = self._fit(list(src)), self._fit(list(tgt))
            example = {"input_ids": src, "attention_mask": [1] * len(src), "labels": tgt}
            out.append(Tokenized(i, example, length, truncated,
                                 f"cut from {length} to {self.max_length} tokens" if truncated else None))
        return out

    # classification -------------------------------------------------------------------------

    def _encode_pairs(self, texts: list[str], pairs: list[str | None], **kwargs) -> list[dict]:
        """Each (text, pair) encoded as ``tokenizer(text, pair)`` would, one call per kind of row."""
        out: list[dict] = [{} for _ in texts]
        for with_pair in (False, True):
            rows = [i for i, p in enumerate(pairs) if (p is not None) == with_pair]
            if not rows:
                continue
            args = ([texts[i] for i in rows], [pairs[i] for i in rows]) if with_pair else ([texts[i] for i in rows],)
            enc = self.tok(*args, **kwargs)
            for k, i in enumerate(rows):
                out[i] = {key: list(values[k]) for key, values in enc.items()}
        return out

    def _classify(self, records: list[dict]) -> list[Tokenized]:
        texts = [r["text"] for r in records]
        pairs = [r.get("text_pair") or None for r in records]
        encoded = self._encode_pairs(texts, pairs)
        lengths = [len(enc["input_ids"]) for enc in encoded]
        long = [i for i, n in enumerate(lengths) if n > self.max_length]
        if long:
            cut = self._encode_pairs([texts[i] for i in long], [pairs[i] for i in long], truncation=True,
                                     max_length=self.max_length)
            for i, enc in zip(long, cut):
                encoded[i] = enc
        out = []
        for i, (record, enc, length) in enumerate(zip(records, encoded, lengths)):
            truncated = length > self.max_length
            example = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
            if pairs[i] is not None and "token_type_ids" in enc:
                example["token_type_ids"] = enc["token_type_ids"]
            name = str(record["label"])
            if name not in self.label_ids:
                out.append(Tokenized(i, None, length, truncated, f"label '{name}' does not occur in training"))
                continue
            example["label"] = self.label_ids[name]
            out.append(Tokenized(i, example, length, truncated,
                                 f"cut from {length} to {self.max_length} tokens" if truncated else None))
        return out
