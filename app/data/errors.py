"""One error type for every data problem, carrying where it happened so the UI can point at it."""

from __future__ import annotations

from app.core.errors import UserError

# Stable codes: the UI, tests and docs key on these; the human message may change.
CODES = {
    "file_not_found": "the file does not exist",
    "unsupported_format": "the file type is not one the studio reads",
    "empty_file": "the file is empty",
    "header_only": "the file has a header but no rows",
    "binary_file": "the file is binary, not text",
    "bad_encoding": "the file's bytes do not match its text encoding",
    "malformed_json": "the JSON is not well formed",
    "malformed_jsonl": "a JSON Lines line is not well formed",
    "not_records": "the data is not a list of records",
    "malformed_csv": "the CSV/TSV cannot be parsed",
    "inconsistent_columns": "rows do not have the same columns",
    "bad_parquet": "the Parquet file cannot be read",
    "too_large": "the file is over the size limit",
    "too_many_rows": "the file has more rows than allowed",
    "too_many_columns": "the file has more columns than allowed",
    "line_too_long": "a line is longer than allowed",
    "zip_no_data": "the zip holds no data file",
    "zip_multiple": "the zip holds several data files",
    "zip_unsafe_path": "the zip holds a path escaping its folder",
    "bad_zip": "the zip archive cannot be read",
    "unknown_shape": "the dataset shape is not known",
    "bad_mapping": "the column mapping does not fit the shape",
    "missing_column": "a mapped column is not in the file",
    "empty_field": "a mapped field is null or empty",
    "bad_field": "a mapped field has the wrong type",
    "one_class": "the label column has a single class",
    "unknown_label": "a validation label does not occur in training",
    "chat_order": "chat turns are out of order",
    "bad_option": "a preparation option is out of range",
    "no_examples": "no usable example is left",
    "wrong_task": "the shape does not fit the model's task",
    "no_source": "the dataset reference names nothing that exists",
}


class DataError(UserError, ValueError):
    """A problem with the user's data, with a location and a stable ``code``.

    ``str(e)`` is a full sentence for a person: the file, the line or row, the field, what is wrong
    and what to do about it.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        row: int | None = None,
        column: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        if code not in CODES:
            raise AssertionError(f"unknown DataError code {code!r}")
        self.code = code
        self.detail = message
        self.file = file
        self.line = line
        self.row = row
        self.column = column
        self.field = field
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column}")
        if self.field:
            where.append(f"field '{self.field}'")
        text = f"{', '.join(where)}: {self.detail}" if where else self.detail
        if self.hint:
            text = f"{text}. {self.hint}"
        return text if text.endswith(".") else text + "."

    def to_dict(self) -> dict:
        """What a UI or the registry stores: plain, JSON-ready."""
        return {
            "code": self.code, "message": str(self), "file": self.file, "line": self.line,
            "row": self.row, "column": self.column, "field": self.field,
        }
