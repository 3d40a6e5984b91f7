"""Uploaded dataset files: which formats we take, the checks that refuse a bad one with a reason, and
the texts inside (the worker hands the library a .txt or a normalized .jsonl made from them).

Torch-free: the API checks an upload with it, the worker converts with it. Parquet needs pyarrow
(the `parquet` extra); without it, parquet uploads are refused with a message saying so.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".parquet": "parquet"}
CHUNK = 1024 * 1024
PARQUET_MAGIC = b"PAR1"


# (spec section, the field that selects a dataset) for every place a job may name one.
DATASET_FIELDS = (("calibration", "source"), ("evaluation", "corpus"))


def dataset_sections(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(section name, section) of each part of a dumped job spec that names an uploaded dataset."""
    found = []
    for name, selector in DATASET_FIELDS:
        section = spec.get(name) or {}
        if section.get(selector) == "dataset":
            found.append((name, section))
    return found


class DatasetRefused(Exception):
    """The upload cannot be used; `status` is the HTTP status, the message says what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def format_of(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS:
        raise DatasetRefused(415, f"unknown dataset file type {suffix or '(no extension)'!r} in {filename!r}: "
                             "upload a .txt (plain UTF-8 text), a .jsonl (one JSON object with a string field "
                             "'text' per line) or a .parquet (with a string column 'text')")
    return FORMATS[suffix]


def check(path: Path, fmt: str, name: str) -> int:
    """How many records (non-empty lines of a .txt, rows with text otherwise); DatasetRefused if unusable."""
    if path.stat().st_size == 0:
        raise DatasetRefused(422, f"{name} is empty: upload a file with text in it")
    if fmt == "parquet":
        return sum(1 for _ in parquet_texts(path, name))
    _check_text_bytes(path, name)
    records = sum(1 for _ in texts(path, fmt, name))
    if records == 0:
        raise DatasetRefused(422, f"{name} has no text (only blank lines or empty 'text' fields)")
    return records


def _check_text_bytes(path: Path, name: str) -> None:
    """UTF-8 and no NUL bytes: binary files and other encodings are refused with the offset that shows it."""
    with open(path, "rb") as handle:
        head = handle.read(4)
        if head.startswith(PARQUET_MAGIC):
            raise DatasetRefused(422, f"{name} is a parquet file: give it the .parquet extension")
        if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            raise DatasetRefused(422, f"{name} is UTF-16 text: re-save it as UTF-8")
        handle.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        offset = 0
        for block in iter(lambda: handle.read(CHUNK), b""):
            nul = block.find(b"\0")
            if nul >= 0:
                raise DatasetRefused(422, f"{name} contains a NUL byte at offset {offset + nul}: it looks like a "
                                     "binary file, not text")
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                raise DatasetRefused(422, f"{name} is not UTF-8 text (invalid byte at offset {offset + exc.start}): "
                                     "re-save it as UTF-8") from None
            offset += len(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise DatasetRefused(422, f"{name} is not UTF-8 text (it ends inside a character): "
                                 "re-save it as UTF-8") from None


def texts(path: Path, fmt: str, name: str) -> Iterator[str]:
    """The non-empty texts of a checked file: lines of a .txt, 'text' of each .jsonl line or parquet row."""
    if fmt == "parquet":
        yield from parquet_texts(path, name)
        return
    with open(path, encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            if fmt == "txt":
                yield line
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetRefused(422, f"{name} line {number} is not valid JSON: {exc.msg}") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DatasetRefused(422, f"{name} line {number} has no string field 'text' (each line must be "
                                     'an object like {"text": "..."})')
            if record["text"].strip():
                yield record["text"]


def parquet_texts(path: Path, name: str) -> Iterator[str]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetRefused(415, "this server cannot read parquet files (pyarrow is not installed: "
                             "pip install 'spectra[parquet]'); upload .txt or .jsonl instead") from None
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetRefused(422, f"{name} is not a readable parquet file: {exc}") from None
    schema = parquet.schema_arrow
    if "text" not in schema.names:
        raise DatasetRefused(422, f"{name} has no column 'text' (its columns: {', '.join(schema.names) or 'none'}); "
                             "name the column with the documents 'text'")
    kind = schema.field("text").type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DatasetRefused(422, f"{name}'s column 'text' holds {kind}, not strings")
    count = 0
    try:
        for batch in parquet.iter_batches(columns=["text"], batch_size=4096):
            for value in batch.column(0).to_pylist():
                if value and value.strip():
                    count += 1
                    yield value
    except pa.ArrowException as exc:
        raise DatasetRefused(422, f"{name} could not be read: {exc}") from None
    if count == 0:
        raise DatasetRefused(422, f"{name}'s column 'text' has no text (every row is null or blank)")


def write_library_file(path: Path, fmt: str, name: str, folder: Path, stem: str) -> Path:
    """The file the library reads: a .txt as uploaded; .jsonl and .parquet rewritten as one JSON object
    per line (ASCII escapes, so no character inside a text can split a line)."""
    if fmt == "txt":
        return path
    target = folder / f"{stem}.jsonl"
    with open(target, "w", encoding="utf-8") as out:
        for text in texts(path, fmt, name):
            out.write(json.dumps({"text": text}) + "\n")
    return target
