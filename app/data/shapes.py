"""What a table holds (its shape), which column plays which role, and rows checked against that.

Detection only looks at column names and a sample of values; the user can override the mapping,
and ``validate_mapping``/``normalise_rows`` check every row against whatever mapping is chosen.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from app.core.tasks import CLASSIFICATION_SHAPES, SHAPES
from app.data.errors import DataError
from app.data.readers import Table

# role -> required?; chat takes exactly one of "messages" (role/content) or "conversations" (from/value).
ROLES: dict[str, dict[str, bool]] = {
    "instruction": {"instruction": True, "input": False, "output": True, "system": False},
    "chat": {"messages": False, "conversations": False, "system": False},
    "prompt_completion": {"prompt": True, "completion": True},
    "text": {"text": True},
    "classification": {"text": True, "label": True},
    "pair_classification": {"text": True, "text_pair": True, "label": True},
}

_CHAT_COLUMNS = ("messages", "conversations", "conversation", "chat", "dialog", "dialogue", "turns")
_INSTRUCTION = ("instruction", "instructions")
_INPUT = ("input", "context")
_OUTPUT = ("output", "response", "answer")
_SYSTEM = ("system", "system_prompt")
_PROMPT_PAIRS = (
    ("prompt", "completion", 0.95), ("prompt", "response", 0.85), ("question", "answer", 0.8),
    ("query", "response", 0.8), ("source", "target", 0.8), ("input", "output", 0.8),
    ("src", "tgt", 0.75), ("input", "target", 0.75),
)
_TEXT = ("text", "sentence", "review", "content", "document", "comment", "tweet", "body", "utterance")
_LABEL = ("label", "labels", "class", "category", "sentiment", "rating", "target", "intent", "topic", "stars")
_TEXT_PAIRS = (
    ("text", "text_pair"), ("sentence1", "sentence2"), ("premise", "hypothesis"), ("text_a", "text_b"),
    ("question1", "question2"), ("sentence_a", "sentence_b"), ("question", "sentence"), ("query", "passage"),
    ("anchor", "positive"),
)
_ROLE_NAMES = {
    "user": "user", "human": "user", "prompter": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant",
    "chatgpt": "assistant", "ai": "assistant",
    "system": "system",
}
_SAMPLE = 200


@dataclass
class Detection:
    """The best guess for a table: ``mapping`` is role -> column; ``confidence`` in [0, 1]."""

    shape: str
    mapping: dict[str, str]
    confidence: float
    ignored_columns: list[str] = field(default_factory=list)


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _parse_messages(value) -> list | None:
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, list) else None


def _looks_like_chat(value) -> bool:
    turns = _parse_messages(value)
    return bool(turns) and all(
        isinstance(t, dict) and ("role" in t or "from" in t) and ("content" in t or "value" in t) for t in turns
    )


def _fraction(rows: list[dict], column: str, test) -> float:
    return sum(1 for r in rows if test(r.get(column))) / len(rows) if rows else 0.0


def _label_like(value) -> bool:
    return (isinstance(value, str) and 0 < len(value.strip()) <= 64) or (
        isinstance(value, int | float | bool) and not isinstance(value, float) or (
            isinstance(value, float) and value.is_integer()
        )
    )


def detect_shape(table: Table) -> Detection:
    """Name-based candidates, each scored by how well sampled values fit; the best one wins."""
    by_name: dict[str, str] = {}
    for column in table.columns:
        by_name.setdefault(column.strip().lower(), column)
    sample = table.rows[:_SAMPLE]
    found: list[tuple[float, str, dict[str, str]]] = []

    def col(*names: str) -> str | None:
        return next((by_name[n] for n in names if n in by_name), None)

    def fit(conf: float, shape: str, mapping: dict[str, str], checks: dict[str, object]) -> None:
        score = min(_fraction(sample, c, test) for c, test in checks.items()) if checks else 1.0
        found.append((conf * (0.5 + 0.5 * score), shape, mapping))

    for name in _CHAT_COLUMNS:
        if name in by_name:
            column = by_name[name]
            first = next((_parse_messages(r.get(column)) for r in sample if r.get(column)), None)
            role = "conversations" if first and isinstance(first[0], dict) and "from" in first[0] else "messages"
            mapping = {role: column}
            if col(*_SYSTEM):
                mapping["system"] = col(*_SYSTEM)
            fit(1.0, "chat", mapping, {column: _looks_like_chat})
            break
    instruction, output = col(*_INSTRUCTION), col(*_OUTPUT)
    if instruction and output:
        mapping = {"instruction": instruction, "output": output}
        if col(*_INPUT):
            mapping["input"] = col(*_INPUT)
        if col(*_SYSTEM):
            mapping["system"] = col(*_SYSTEM)
        fit(0.97, "instruction", mapping, {instruction: _is_text, output: _is_text})
    for prompt, completion, conf in _PROMPT_PAIRS:
        if prompt in by_name and completion in by_name:
            p, c = by_name[prompt], by_name[completion]
            fit(conf, "prompt_completion", {"prompt": p, "completion": c}, {p: _is_text, c: _is_text})
            break
    label = col(*_LABEL)
    for first, second in _TEXT_PAIRS:
        if first in by_name and second in by_name and label:
            a, b = by_name[first], by_name[second]
            fit(0.93, "pair_classification", {"text": a, "text_pair": b, "label": label},
                {a: _is_text, b: _is_text, label: _label_like})
            break
    text = col(*_TEXT)
    if text and label and text != label:
        distinct = len({str(r.get(label)) for r in sample})
        spread = 1.0 if distinct <= max(2, min(50, len(sample) // 2)) else 0.6
        fit(0.92 * spread, "classification", {"text": text, "label": label}, {text: _is_text, label: _label_like})
    if text:
        fit(0.85 if len(table.columns) == 1 else 0.8, "text", {"text": text}, {text: _is_text})
    if not found:
        found.append(_fallback(table, sample))
    confidence, shape, mapping = max(found, key=lambda f: f[0])
    used = set(mapping.values())
    return Detection(shape, mapping, round(confidence, 3), [c for c in table.columns if c not in used])


def _fallback(table: Table, sample: list[dict]) -> tuple[float, str, dict[str, str]]:
    """No telling names: the longest string column is text; a short low-cardinality one, a label."""
    stringy = [c for c in table.columns if _fraction(sample, c, _is_text) >= 0.9]
    if not stringy:
        return 0.1, "text", {"text": table.columns[0]}

    def mean_len(c: str) -> float:
        return sum(len(str(r.get(c) or "")) for r in sample) / max(1, len(sample))

    longest = max(stringy, key=mean_len)
    if len(table.columns) == 1:
        return 0.6, "text", {"text": longest}
    for c in table.columns:
        if c == longest:
            continue
        distinct = {str(r.get(c)) for r in sample}
        if 2 <= len(distinct) <= max(2, min(20, len(sample) // 3)) and _fraction(sample, c, _label_like) == 1.0:
            return 0.45, "classification", {"text": longest, "label": c}
    return 0.3, "text", {"text": longest}


# --- validation and normalisation --------------------------------------------------------------


def _check_mapping(table: Table, shape: str, mapping: dict[str, str]) -> None:
    if shape not in SHAPES:
        raise DataError("bad_mapping", f"unknown shape '{shape}'", file=table.source,
                        hint=f"Choose one of: {', '.join(SHAPES)}")
    roles = ROLES[shape]
    unknown = [r for r in mapping if r not in roles]
    if unknown:
        raise DataError("bad_mapping", f"the {shape} shape has no role '{unknown[0]}'", file=table.source,
                        field=unknown[0], hint=f"Its roles are: {', '.join(roles)}")
    missing = [r for r, required in roles.items() if required and not mapping.get(r)]
    if shape == "chat" and sum(1 for r in ("messages", "conversations") if mapping.get(r)) != 1:
        missing = ["messages"]
    if missing:
        raise DataError("bad_mapping", f"the {shape} shape needs a column for '{missing[0]}'", file=table.source,
                        field=missing[0], hint="Pick the column that holds it in the column mapping")
    for role, column in mapping.items():
        if column and column not in table.columns:
            raise DataError(
                "missing_column", f"the column '{column}' mapped to '{role}' is not in the file",
                file=table.source, field=column,
                hint=f"The file's columns are: {', '.join(table.columns[:20])}",
            )


def _text(table: Table, index: int, column: str, value, *, required: bool) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        if not required:
            return ""
        raise DataError(
            "empty_field", f"the field is {'null' if value is None else 'empty'}", file=table.source,
            line=table.line_of(index), row=index + 1, field=column,
            hint="Fill it in or remove the row",
        )
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(
            "bad_field", f"the field holds a {type(value).__name__}, not text", file=table.source,
            line=table.line_of(index), row=index + 1, field=column,
        )
    return value if isinstance(value, str) else str(value)


def _label(table: Table, index: int, column: str, value):
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError("empty_field", f"the label is {'null' if value is None else 'empty'}", file=table.source,
                        line=table.line_of(index), row=index + 1, field=column,
                        hint="Every row needs a label; fill it in or remove the row")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str | int | bool):
        return value.strip() if isinstance(value, str) else value
    raise DataError("bad_field", f"the label holds a {type(value).__name__}; labels are text or whole numbers",
                    file=table.source, line=table.line_of(index), row=index + 1, field=column)


def _content(part) -> str | None:
    """OpenAI-style content may be a list of parts; only the text parts are kept."""
    if isinstance(part, str):
        return part
    if isinstance(part, list):
        texts = [p.get("text") for p in part if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "".join(texts) if texts else None
    return None


def _messages(table: Table, index: int, column: str, value, system_prompt: str) -> list[dict]:
    where = dict(file=table.source, line=table.line_of(index), row=index + 1)
    turns = _parse_messages(value)
    if value is None or turns == []:
        raise DataError("empty_field", "the conversation is empty", field=column, **where,
                        hint="Every row needs at least a user turn and an assistant turn")
    if turns is None:
        raise DataError("bad_field", "the conversation is not a list of turns", field=column, **where,
                        hint='Write it as [{"role": "user", "content": "..."}, {"role": "assistant", ...}]')
    out: list[dict] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError("bad_field", "the turn is not an object with a role and content",
                            field=f"{column}[{i}]", **where)
        raw_role = turn.get("role", turn.get("from"))
        role = _ROLE_NAMES.get(str(raw_role).strip().lower()) if raw_role is not None else None
        if role is None:
            raise DataError("bad_field", f"the turn's role '{raw_role}' is not user, assistant or system",
                            field=f"{column}[{i}].role", **where,
                            hint="Use role user/assistant/system (or from human/gpt/system)")
        content = _content(turn.get("content", turn.get("value")))
        if content is None or not content.strip():
            raise DataError("empty_field", "the turn has no text", field=f"{column}[{i}].content", **where,
                            hint="Fill in the turn or remove it")
        out.append({"role": role, "content": content})
    _check_order(out, column, where, offset=1 if system_prompt else 0)
    return out


def _check_order(turns: list[dict], column: str, where: dict, offset: int) -> None:
    expected = "user"
    for i, turn in enumerate(turns):
        name = f"{column}[{i - offset}].role" if i >= offset else "system"
        if turn["role"] == "system":
            if i != 0:
                raise DataError("chat_order", "a system turn may only come first", field=name, **where,
                                hint="Move the system prompt to the start of the conversation")
            continue
        if turn["role"] != expected:
            raise DataError(
                "chat_order", f"expected a {expected} turn here, found {turn['role']}", field=name, **where,
                hint="Turns must alternate user, assistant, user, ... starting with the user",
            )
        expected = "assistant" if expected == "user" else "user"
    if expected == "user" and turns and turns[-1]["role"] == "assistant":
        return
    raise DataError("chat_order", "the conversation does not end with an assistant answer", field=column, **where,
                    hint="End every conversation with the assistant turn to learn from")


def iter_records(table: Table, shape: str, mapping: dict[str, str]) -> Iterator[dict]:
    """Every row as a plain record of its roles, checked, one at a time in file order; the first bad
    row raises DataError. ``table`` may be any table-like object whose ``rows`` can be iterated
    (a stored table streams them), so the check never needs the whole file in memory.

    instruction -> {system, instruction, input, output}; chat -> {messages: [{role, content}]};
    prompt_completion -> {prompt, completion}; text -> {text};
    classification -> {text, label}; pair_classification -> {text, text_pair, label}.
    """
    _check_mapping(table, shape, mapping)
    roles = ROLES[shape]
    for i, row in enumerate(table.rows):
        if shape == "chat":
            key = "messages" if mapping.get("messages") else "conversations"
            system = _text(table, i, mapping["system"], row.get(mapping["system"]), required=False) \
                if mapping.get("system") else ""
            yield {"messages": _messages(table, i, mapping[key], row.get(mapping[key]), system)}
            continue
        record = {}
        for role, required in roles.items():
            column = mapping.get(role)
            if role == "label":
                record[role] = _label(table, i, column, row.get(column))
            elif column:
                record[role] = _text(table, i, column, row.get(column), required=required)
            else:
                record[role] = ""
        yield record


def check_classes(classes: set[str], source: str, mapping: dict[str, str]) -> None:
    """A classifier needs two labels or more; ``classes`` are the label names (``str(label)``) seen."""
    if len(classes) < 2:
        raise DataError(
            "one_class", f"every row has the same label ('{next(iter(classes))}')", file=source,
            field=mapping["label"], hint="A classifier needs at least two different labels",
        )


def normalise_rows(table: Table, shape: str, mapping: dict[str, str], *, need_classes: bool = True) -> list[dict]:
    """Every row as a plain record of its roles (see :func:`iter_records`), checked, classes included."""
    out = list(iter_records(table, shape, mapping))
    if need_classes and shape in CLASSIFICATION_SHAPES:
        check_classes({str(r["label"]) for r in out}, table.source, mapping)
    return out


def validate_mapping(table: Table, shape: str, mapping: dict[str, str]) -> None:
    """Raise DataError for the first row or mapping problem; return quietly when all rows fit."""
    normalise_rows(table, shape, mapping)
