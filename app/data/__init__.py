"""Data in: read uploads, detect their shape, check them, and turn them into token examples.

    checked = check_data_file(path, Limits(), name="upload.csv")  # the whole check datasets add and the upload make
    table = read_table(path, name="upload.csv")
    found = detect_shape(table)                       # shape, mapping (role -> column), confidence
    validate_mapping(table, found.shape, found.mapping)
    stats = preview_stats(table, found.shape, found.mapping, tokenizer, 512)
    ready = prepare(table, found.shape, found.mapping, tokenizer, PrepareOptions(task="CAUSAL_LM"))
    ready.train[0], len(ready.eval)                   # ExampleSets: Arrow-backed sequences of example dicts

    for line, row in stream_table(path):              # rows one at a time (a run streams them into Arrow)
        ...

A run's data goes through ``app.data.pipeline.prepare_for_run`` (streamed, checked, tokenized with a
batched ``Dataset.map`` and cached by fingerprint); see docs/data.md.

Every problem with the user's data is a ``DataError`` with a stable ``code`` and its location.
"""

from app.data.bundled import bundled_datasets
from app.data.chat import DEFAULT_CHAT_TEMPLATE, chat_template_for, render_chat
from app.data.check import CheckedData, check_data_file, check_table
from app.data.errors import CODES, DataError
from app.data.examples import ExampleSet
from app.data.histogram import length_histogram_png
from app.data.limits import Limits
from app.data.prepare import IGNORE, Prepared, PrepareOptions, pack, prepare
from app.data.preview import preview_stats
from app.data.readers import FORMATS, RowStream, Table, read_table, stream_table
from app.data.shapes import ROLES, Detection, detect_shape, normalise_rows, validate_mapping
from app.data.storage import file_sha256, safe_name, store_upload

__all__ = [
    "CODES",
    "DEFAULT_CHAT_TEMPLATE",
    "CheckedData",
    "FORMATS",
    "IGNORE",
    "ROLES",
    "DataError",
    "Detection",
    "ExampleSet",
    "Limits",
    "PrepareOptions",
    "Prepared",
    "RowStream",
    "Table",
    "bundled_datasets",
    "chat_template_for",
    "check_data_file",
    "check_table",
    "detect_shape",
    "file_sha256",
    "length_histogram_png",
    "normalise_rows",
    "pack",
    "prepare",
    "preview_stats",
    "read_table",
    "render_chat",
    "safe_name",
    "store_upload",
    "stream_table",
    "validate_mapping",
]
