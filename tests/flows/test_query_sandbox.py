"""`csdm query` runs user SQL read-only: only the catalog is visible, nothing is written."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.dataset import open_dataset

runner = CliRunner()


def _query(*args: str):
    return runner.invoke(app, ["query", *args], env={"COLUMNS": "200"})


def test_copy_to_a_file_is_refused(processed: Path, tmp_path: Path) -> None:
    target = tmp_path / "leak.csv"
    r = _query(str(processed), f"COPY (SELECT * FROM files) TO '{target}'")
    assert r.exit_code == 2 and not target.exists()
    assert "read-only" in r.output and "Traceback" not in r.output


def test_attach_creates_no_database(processed: Path, tmp_path: Path) -> None:
    target = tmp_path / "new.db"
    r = _query(str(processed), f"ATTACH '{target}' AS x")
    assert r.exit_code == 2 and not target.exists()


def test_reading_other_files_is_refused(processed: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    r = _query(str(processed), f"SELECT content FROM read_text('{secret}')", "--format", "csv")
    assert r.exit_code == 2 and "hunter2" not in r.output
    r = _query(str(processed), "SELECT * FROM read_parquet('/etc/*.parquet')")
    assert r.exit_code == 2


def test_extensions_cannot_be_installed(processed: Path) -> None:
    r = _query(str(processed), "INSTALL httpfs")
    assert r.exit_code == 2 and "read-only" in r.output
    r = _query(str(processed), "SET enable_external_access = true")
    assert r.exit_code == 2


def test_catalog_queries_and_output_still_work(processed: Path, tmp_path: Path) -> None:
    out = tmp_path / "n.parquet"
    r = _query(
        str(processed),
        "select episode, count(*) as n from frames group by all",
        "--format",
        "parquet",
        "--output",
        str(out),
    )
    assert r.exit_code == 0, r.output
    got = pq.read_table(out).to_pydict()
    files = open_dataset(processed).files.to_pandas()
    stored = files[files.status == "stored"]
    assert dict(zip(got["episode"], got["n"], strict=True)) == dict(
        zip(stored.episode, stored.n_frames, strict=True)
    )
    csv = tmp_path / "f.csv"
    r = _query(
        str(processed), "select count(*) as n from files", "--format", "csv", "--output", str(csv)
    )
    assert r.exit_code == 0 and csv.read_text().splitlines()[1] == str(len(files))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["{missing}", "select 1"], "not a processed dataset"),
        (["{out}", "  "], "empty SQL"),
        (["{out}", "select 1", "--format", "csv", "--output", "{missing}/x.csv"], "does not exist"),
        (["{out}", "select * from nowhere"], "nowhere"),
    ],
)
def test_user_errors_are_one_line(processed: Path, tmp_path: Path, args, says) -> None:
    missing = tmp_path / "missing"
    r = _query(*[a.format(out=processed, missing=missing) for a in args])
    assert r.exit_code == 2
    assert says in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
