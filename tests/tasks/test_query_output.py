"""Query results in CSV, JSON lines and Parquet; a failed write leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.query_output import render, write_result

TABLE = pa.table(
    {
        "keys": [["s", "d"], None],
        "n": [1, 2],
        "pos": [{"x": 1.5}, {"x": -2.0}],
        "name": ["a,b", 'q"'],
        "tags": pa.array([[("k", "v")], []], pa.map_(pa.string(), pa.string())),
    }
)


def test_nested_columns_are_json_text_in_csv() -> None:
    assert render(TABLE, "csv").decode().splitlines() == [
        "keys,n,pos,name,tags",
        '"[""s"", ""d""]",1,"{""x"": 1.5}","a,b","[[""k"", ""v""]]"',
        ',2,"{""x"": -2.0}","q""",[]',
    ]


def test_parquet_and_json_keep_the_nesting(tmp_path: Path) -> None:
    write_result(TABLE, "parquet", tmp_path / "q.parquet")
    assert pq.read_table(tmp_path / "q.parquet").column("keys").to_pylist() == [["s", "d"], None]
    assert render(TABLE, "json").decode().splitlines()[0].startswith('{"keys":["s","d"],"n":1,')


def test_a_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_a) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space left"):
        write_result(TABLE, "csv", tmp_path / "q.csv")
    assert list(tmp_path.iterdir()) == []
