"""Checked rows -> token examples the engine trains on: templated, masked, truncated, split, packed.

Causal LM examples train only on what the model should produce (assistant turns, completions; all
of a plain text); everything else has label -100. Seq2seq examples carry the target ids as labels.
Classification examples carry an integer ``label`` whose names are returned in ``label_names``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from app.core.tasks import CLASSIFICATION_SHAPES, TASKS, task_for
from app.data.chat import chat_segments
from app.data.errors import DataError
from app.data.readers import Table
from app.data.shapes import normalise_rows
from app.data.stats import summarise

IGNORE = -100
_TOKENIZE_BATCH = 512
_LISTED = 100  # truncated/dropped rows listed by number; the counts are always complete


@dataclass
class PrepareOptions:
    max_length: int = 512
    packing: bool = False
    val_fraction: float = 0.1
    seed: int = 0
    dedupe: bool = False
    task: str = "CAUSAL_LM"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError("bad_option", f"task '{self.task}' is not one of {', '.join(TASKS)}", field="task")
        if not isinstance(self.max_length, int) or not 8 <= self.max_length <= 1_048_576:
            raise DataError("bad_option", f"max_length {self.max_length!r} must be a whole number from 8",
                            field="max_length")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise DataError("bad_option", f"val_fraction {self.val_fraction!r} must be in [0, 1)",
                            field="val_fraction")
        if self.packing and self.task != "CAUSAL_LM":
            raise DataError("bad_option", "packing applies to causal language models only", field="packing")


@dataclass
class Prepared:
    train: list[dict]
    eval: list[dict]
    label_names: list[str] | None
    stats: dict = field(default_factory=dict)


@dataclass
class Tokenized:
    """One row's outcome: an example (None when dropped), its untruncated length and why it changed."""

    index: int
    example: dict | None
    length: int
    truncated: bool = False
    reason: str | None = None


def label_names_of(records: list[dict]) -> list[str]:
    """Class names in a stable order: numerically when every label is a whole number, else by text."""
    values = {str(r["label"]) for r in records}
    if all(_is_int(v) for v in values):
        return sorted(values, key=lambda v: int(v))
    return sorted(values)


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def _affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer wraps around a text by default (BOS in front, [SEP] or </s> behind)."""
    probe = "hello"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    wrapped = tokenizer(probe)["input_ids"]
    for start in range(len(wrapped) - len(bare) + 1):
        if wrapped[start : start + len(bare)] == bare:
            return wrapped[:start], wrapped[start + len(bare) :]
    return [], []


def _user_text(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)


def _as_messages(record: dict, shape: str, label_names: list[str] | None) -> list[dict]:
    if shape == "chat":
        return record["messages"]
    if shape == "instruction":
        messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
        return [*messages, {"role": "user", "content": _user_text(record["instruction"], record["input"])},
                {"role": "assistant", "content": record["output"]}]
    # classification as generation: the answer is the label's name
    return [{"role": "user", "content": _user_text(record["text"], record.get("text_pair", ""))},
            {"role": "assistant", "content": str(record["label"])}]


class _Builder:
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

    def build(self, records: list[dict]) -> list[Tokenized]:
        out: list[Tokenized] = []
        for start in range(0, len(records), _TOKENIZE_BATCH):
            chunk = records[start : start + _TOKENIZE_BATCH]
            if self.task == "SEQ_CLS":
                out += [self._classify(start + i, r) for i, r in enumerate(chunk)]
            elif self.task == "SEQ_2_SEQ_LM":
                out += [self._seq2seq(start + i, r) for i, r in enumerate(chunk)]
            else:
                out += self._causal(start, chunk)
        return out

    # causal ---------------------------------------------------------------------------------

    def _segments(self, record: dict) -> list[tuple[str | list[int], bool]]:
        if self.shape == "text":
            return [(self.prefix, False), (record["text"], True), (self.eos, True)]
        if self.shape == "prompt_completion":
            return [(self.prefix, False), (record["prompt"], False), (record["completion"], True), (self.eos, True)]
        return list(chat_segments(self.tok, _as_messages(record, self.shape, self.label_names)))

    def _causal(self, offset: int, records: list[dict]) -> list[Tokenized]:
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
            out.append(self._cut_causal(offset + i, ids, labels))
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
            return _user_text(record["system"], record["instruction"], record["input"]), record["output"]
        if self.shape == "chat":
            turns = record["messages"]
            history = "\n".join(f"{t['role']}: {t['content']}" for t in turns[:-1])
            return history, turns[-1]["content"]
        return _user_text(record["text"], record.get("text_pair", "")), str(record["label"])

    def _fit(self, ids: list[int]) -> list[int]:
        if len(ids) <= self.max_length:
            return ids
        keep = self.max_length - len(self.suffix)
        return ids[:keep] + self.suffix if self.suffix and ids[-len(self.suffix):] == self.suffix else ids[: self.max_length]

    def _seq2seq(self, index: int, record: dict) -> Tokenized:
        source, target = self._source_target(record)
        src = self.tok(source)["input_ids"]
        tgt = self.tok(target)["input_ids"]
        length = max(len(src), len(tgt))
        truncated = length > self.max_length
        src, tgt = self._fit(src), self._fit(tgt)
        example = {"input_ids": src, "attention_mask": [1] * len(src), "labels": tgt}
        return Tokenized(index, example, length, truncated,
                         f"cut from {length} to {self.max_length} tokens" if truncated else None)

    # classification -------------------------------------------------------------------------

    def _classify(self, index: int, record: dict) -> Tokenized:
        pair = record.get("text_pair") or None
        enc = self.tok(record["text"], pair)
        length = len(enc["input_ids"])
        truncated = length > self.max_length
        if truncated:
            enc = self.tok(record["text"], pair, truncation=True, max_length=self.max_length)
        example = {"input_ids": list(enc["input_ids"]), "attention_mask": list(enc["attention_mask"])}
        if pair is not None and "token_type_ids" in enc:
            example["token_type_ids"] = list(enc["token_type_ids"])
        name = str(record["label"])
        if name not in self.label_ids:
            return Tokenized(index, None, length, truncated, f"label '{name}' does not occur in training")
        example["label"] = self.label_ids[name]
        return Tokenized(index, example, length, truncated,
                         f"cut from {length} to {self.max_length} tokens" if truncated else None)


def record_key(record: dict) -> str:
    """Two examples are duplicates when their normalised records are equal."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)


def _dedupe(records: list[dict], indices: list[int], seen: set[str]) -> tuple[list[int], int]:
    kept, removed = [], 0
    for i in indices:
        key = record_key(records[i])
        if key in seen:
            removed += 1
            continue
        seen.add(key)
        kept.append(i)
    return kept, removed


def split_sizes(rows: int, fraction: float) -> tuple[int, int]:
    """(training, validation) rows for ``rows`` distinct rows: the one rule the data preview and the
    engine share, so the figures the data step shows are the ones the run log reports.

    At least one validation row when a fraction is asked for, and at least one training row.
    """
    if fraction <= 0 or rows < 2:
        return rows, 0
    n_eval = min(rows - 1, max(1, round(rows * fraction)))
    return rows - n_eval, n_eval


def _split(indices: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random split of ``indices`` into (training, validation) of :func:`split_sizes`."""
    _, n_eval = split_sizes(len(indices), fraction)
    if not n_eval:
        return list(indices), []
    order = list(indices)
    random.Random(seed).shuffle(order)
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def pack(examples: list[dict], max_length: int) -> list[dict]:
    """Greedy, in order: whole examples share a block while they fit; none is ever split.

    Attention is not reset between the examples of a block (no position-id tricks), which is the
    common trade-off for throughput; see docs/data.md.
    """
    blocks: list[dict] = []
    current: dict | None = None
    for ex in examples:
        if current is not None and len(current["input_ids"]) + len(ex["input_ids"]) <= max_length:
            for key in ("input_ids", "attention_mask", "labels"):
                current[key] = current[key] + ex[key]
        else:
            current = {k: list(ex[k]) for k in ("input_ids", "attention_mask", "labels")}
            blocks.append(current)
    return blocks


def outcomes(table: Table, items: list[Tokenized]) -> dict:
    truncated = [t for t in items if t.truncated and t.example is not None]
    dropped = [t for t in items if t.example is None]

    def listed(rows: list[Tokenized]) -> list[dict]:
        return [{"index": t.index, "row": t.index + 1, "line": table.line_of(t.index), "tokens": t.length,
                 "reason": t.reason} for t in rows[:_LISTED]]

    return {"truncated": len(truncated), "truncated_rows": listed(truncated),
            "dropped": len(dropped), "dropped_rows": listed(dropped)}


def prepare(
    table: Table, shape: str, mapping: dict[str, str], tokenizer, options: PrepareOptions | None = None, *,
    val_table: Table | None = None,
) -> Prepared:
    """Check every row, tokenize, split (seeded, or ``val_table``), and report what happened."""
    options = options or PrepareOptions()
    records = normalise_rows(table, shape, mapping)
    val_records = normalise_rows(val_table, shape, mapping, need_classes=False) if val_table is not None else None
    classification = shape in CLASSIFICATION_SHAPES
    label_names = label_names_of(records) if classification else None
    if val_records is not None and label_names:
        known = set(label_names)
        for i, r in enumerate(val_records):
            if str(r["label"]) not in known:
                raise DataError(
                    "unknown_label", f"the label '{r['label']}' does not occur in the training file",
                    file=val_table.source, line=val_table.line_of(i), row=i + 1, field=mapping["label"],
                    hint=f"Use one of: {', '.join(label_names[:20])}",
                )
    # Repeats go first, then the split: the split sizes then follow from the distinct rows alone
    # (split_sizes), which the data preview knows before any seed is chosen.
    duplicates = 0
    seen: set[str] = set()
    kept = list(range(len(records)))
    if options.dedupe:
        kept, duplicates = _dedupe(records, kept, seen)
    if val_records is None:
        train_idx, eval_idx = _split(kept, float(options.val_fraction), options.seed)
    else:
        train_idx, eval_idx = kept, list(range(len(val_records)))
        if options.dedupe:
            eval_idx, eval_duplicates = _dedupe(val_records, eval_idx, seen)
            duplicates += eval_duplicates

    builder = _Builder(tokenizer, shape, options.task, options.max_length, label_names)
    train_items = builder.build([records[i] for i in train_idx])
    for item, i in zip(train_items, train_idx):
        item.index = i
    eval_source = val_records if val_records is not None else records
    eval_items = builder.build([eval_source[i] for i in eval_idx])
    for item, i in zip(eval_items, eval_idx):
        item.index = i
    train = [t.example for t in train_items if t.example is not None]
    evals = [t.example for t in eval_items if t.example is not None]
    if not train:
        raise DataError("no_examples", "no training example is left after truncation and checks",
                        file=table.source, hint="Raise max_length or check the mapped columns")
    unpacked = len(train)
    if options.packing:
        train = pack(train, options.max_length)
    stats = {
        "shape": shape, "mapping": dict(mapping), "task": options.task, "max_length": options.max_length,
        "rows": len(records), "eval_rows": len(eval_idx), "train_rows": len(train_idx),
        "eval_source": val_table.source if val_table is not None else "split",
        "duplicates_removed": duplicates,
        "examples_train": unpacked, "examples_eval": len(evals),
        "packed": options.packing, "blocks": len(train) if options.packing else None,
        "label_names": label_names,
        "tokens": summarise([t.length for t in train_items]),
        "train": outcomes(table, train_items),
        "eval": outcomes(val_table if val_table is not None else table, eval_items),
        "truncated": sum(t.truncated and t.example is not None for t in train_items + eval_items),
        "dropped": sum(t.example is None for t in train_items + eval_items),
    }
    return Prepared(train, evals, label_names, stats)


def tokenize_rows(table: Table, shape: str, mapping: dict[str, str], tokenizer, max_length: int,
                  task: str | None = None) -> tuple[list[Tokenized], list[dict], list[str] | None]:
    """Every row tokenized as training would see it (no split), for the preview."""
    records = normalise_rows(table, shape, mapping)
    label_names = label_names_of(records) if shape in CLASSIFICATION_SHAPES else None
    builder = _Builder(tokenizer, shape, task or task_for(shape), max_length, label_names)
    return builder.build(records), records, label_names
