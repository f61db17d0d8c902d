"""Write a query's result as CSV, JSON lines or Parquet: whole, or not at all."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from storage.localfile import atomic_path

FORMATS = ("csv", "json", "parquet")


def _json_text(value: object) -> str | None:
    return None if value is None else json.dumps(value, default=str, ensure_ascii=False)


def flat_for_csv(table: pa.Table) -> pa.Table:
    """Nested columns (lists, structs, maps) as JSON text: CSV holds only flat values."""
    columns = []
    for col in table.columns:
        if pa.types.is_nested(col.type):
            col = pa.array([_json_text(v) for v in col.to_pylist()], pa.string())
        columns.append(col)
    return pa.Table.from_arrays(columns, names=table.column_names)


def render(table: pa.Table, fmt: str) -> bytes:
    """The result in `fmt` as bytes (Parquet included)."""
    if fmt == "csv":
        return flat_for_csv(table).to_pandas().to_csv(index=False).encode()
    if fmt == "json":
        return table.to_pandas().to_json(orient="records", lines=True).encode()
    if fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def write_result(table: pa.Table, fmt: str, output: Path) -> None:
    """Write to `output` through a temporary file: a failure leaves no file, or the old one."""
    data = render(table, fmt)
    with atomic_path(output) as part:
        part.write_bytes(data)
