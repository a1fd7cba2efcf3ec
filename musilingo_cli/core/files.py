"""The one reader of users' JSON, JSON-lines and CSV files (captions, manifests, datasets,
predictions, references), with one-line errors that name the file and the line. Journals we write
ourselves are read by `journal.read_jsonl`, which also tolerates a torn last line.

Whatever wrote the file (Notepad, PowerShell, Excel, pandas, another lab's script):
- a UTF-8 byte-order mark is dropped and CRLF / CR line ends read as LF;
- bytes that are not UTF-8 raise one DataError naming the file, the line and the encoding the
  bytes look like (charset-normalizer's guess), with the command that converts them;
- a JSON document and JSON lines are told apart by content, not by the file's extension: a
  `.json` file with one object per line and a `.jsonl` file holding one JSON list both read;
  content that is neither raises one line saying what was found.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import DataError, csv_error


def read_text(path: str | Path) -> str:
    """The file as text: UTF-8 with or without a BOM, line ends normalised to "\\n".

    Raises DataError (one line: file, line, the encoding the bytes look like) on other bytes."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        encoding = _guess_encoding(data)
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); it may be {encoding}: "
            f"save it as UTF-8 (e.g. iconv -f {encoding} -t UTF-8 FILE > NEW)"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _guess_encoding(data: bytes) -> str:
    """The encoding the bytes most look like (a BOM, else charset-normalizer's best guess)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    from charset_normalizer import from_bytes  # only on this error path: keeps imports light

    best = from_bytes(data[:65536]).best()
    return "binary data, not text" if best is None else codecs.lookup(best.encoding).name.upper()


def looks_like_json(path: str | Path) -> bool:
    """True when the file's first non-blank character opens a JSON object or list (so a `.csv` or
    `.txt` name does not decide how it is read)."""
    with Path(path).open("rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1] in (b"{", b"[")


def sniff_json(path: str | Path) -> tuple[str, Any]:
    """("json", the document) or ("jsonl", [(line number, value), ...]), decided by the content.

    Raises DataError when the file is empty, or is neither (the message says which it looked
    like and where it broke)."""
    text = read_text(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        return "json", json.loads(text)
    except json.JSONDecodeError as doc_err:
        document_error = doc_err
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            if rows:  # earlier lines were JSON values: JSON lines with one bad line
                raise DataError(
                    f"{path}:{number}: not valid JSON ({err.msg}); the file is JSON lines (one value per line) "
                    "and this line is not one"
                ) from None
            break
    else:
        return "jsonl", rows
    first = text.lstrip().split("\n", 1)[0][:40]
    if first[:1] not in ("[", "{"):
        looks = " (it looks like CSV)" if "," in text.split("\n", 1)[0] else ""
        raise DataError(f"{path}: neither a JSON document nor JSON lines: it starts with {first!r}{looks}")
    raise DataError(
        f"{path}: not valid JSON (line {document_error.lineno}: {document_error.msg}); "
        "it is neither one JSON document nor JSON lines"
    )


def read_json(path: str | Path) -> Any:
    """The file's JSON document; JSON lines (whatever the extension) read as a list of their values."""
    kind, data = sniff_json(path)
    return data if kind == "json" else [value for _, value in data]


def iter_jsonl_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per record: JSON lines, or a JSON document that is a list of objects
    (numbered from 1) or a single object. A record that is not an object raises."""
    kind, data = sniff_json(path)
    if kind == "json":
        data = list(enumerate(data if isinstance(data, list) else [data], start=1))
    for number, row in data:
        if not isinstance(row, dict):
            what = "line" if kind == "jsonl" else "record"
            raise DataError(f"{path}:{number}: expected one JSON object per {what}, got {type(row).__name__}")
        yield number, row


def read_jsonl_objects(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """All (line number, object) pairs of a JSON-lines file (or a JSON list of objects)."""
    return list(iter_jsonl_objects(path))


def read_csv_rows(path: str | Path, delimiter: str | None = None) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(columns, [(line number, row)]) of a CSV/TSV file with a header (TSV: by `.tsv` or `delimiter`).

    Raises DataError naming the line for a row with more or fewer fields than the header."""
    path = Path(path)
    delimiter = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    reader = csv.DictReader(read_text(path).splitlines(keepends=True), delimiter=delimiter, strict=True)
    try:
        columns = list(reader.fieldnames or [])
        if not columns:
            raise DataError(f"{path}: no header row; the first line must name the columns")
        rows = []
        for row in reader:
            line = reader.line_num
            if None in row:  # more fields than the header
                raise DataError(
                    f"{path}:{line}: row has {len(columns) + len(row[None])} fields but the header has "
                    f"{len(columns)}; quote fields that contain '{delimiter}'"
                )
            if any(v is None for v in row.values()):  # fewer fields than the header
                raise DataError(f"{path}:{line}: row has fewer fields than the header's {len(columns)}")
            rows.append((line, row))
    except csv.Error as err:
        raise csv_error(path, reader.line_num, err) from None
    return columns, rows
