"""The data step's preview: how long the examples are, how the labels balance, what gets cut."""

from __future__ import annotations

from collections import Counter

from app.data.prepare import outcomes, tokenize_rows
from app.data.readers import Table
from app.data.records import record_key
from app.data.stats import histogram, summarise


def preview_stats(table: Table, shape: str, mapping: dict[str, str], tokenizer, max_length: int,
                  task: str | None = None) -> dict:
    """What the preview shows: rows, token lengths (summary + histogram), labels, cut, dropped or repeated rows.

    Raises DataError for a bad mapping or row, exactly as ``prepare`` would.
    """
    items, records, label_names = tokenize_rows(table, shape, mapping, tokenizer, max_length, task)
    lengths = [t.length for t in items]
    balance = None
    if label_names is not None:
        counts = Counter(str(r["label"]) for r in records)
        balance = {name: counts[name] for name in label_names}
    return {
        "rows": len(table.rows), "columns": list(table.columns), "file": table.source, "format": table.fmt,
        "encoding": table.encoding, "shape": shape, "mapping": dict(mapping), "max_length": max_length,
        "tokens": summarise(lengths), "histogram": histogram(lengths), "label_balance": balance,
        "label_names": label_names, "duplicates": len(records) - len({record_key(r) for r in records}),
        **outcomes(table, items),
    }
