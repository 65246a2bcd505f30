"""Reading a Hugging Face dataset directory's parquet subsets (``DIR/<subset>/*.parquet`` as the hub lays
them out, or ``DIR/<subset>.parquet``) into rows, with one-line errors naming the file and the column."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from smfa.errors import BenchError


def subset_files(root: Path, subset: str) -> list[Path]:
    """The parquet files of ``subset`` under ``root`` (sorted); ``[]`` when the subset is absent."""
    folder = root / subset
    if folder.is_dir():
        return sorted(folder.rglob("*.parquet"))
    single = root / f"{subset}.parquet"
    return [single] if single.is_file() else []


def read_subset(root: Path, subset: str, required: tuple[str, ...], one_of: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` for every row of ``subset`` (``where`` = "file row N" for error messages). Raises
    :class:`BenchError` when the subset is absent, a file is not parquet, or a ``required`` column (or every
    column of ``one_of``) is missing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = subset_files(root, subset)
    if not files:
        raise BenchError(f"{root}: subset {subset} not found (expected {root / subset}/*.parquet or {root / subset}.parquet)")
    rows: list[tuple[str, dict[str, Any]]] = []
    for path in files:
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise BenchError(f"{path}: not a readable parquet file ({exc})") from exc
        columns = set(table.column_names)
        missing = [c for c in required if c not in columns]
        if missing:
            raise BenchError(f"{path}: column(s) {', '.join(missing)} missing (found: {', '.join(sorted(columns))}); "
                             f"is this the {subset} subset of the dataset?")
        if one_of and not columns & set(one_of):
            raise BenchError(f"{path}: none of the columns {', '.join(one_of)} is present (found: {', '.join(sorted(columns))})")
        for i, row in enumerate(table.to_pylist()):
            rows.append((f"{path} row {i}", row))
    return rows


def has_subset(root: Path, subset: str) -> bool:
    return bool(subset_files(root, subset))


def import_parquet_folder(root: str | Path, opts: Any, fmt: str, holding: str, subsets: Iterable[str],
                          parse: Callable[[Path], Any]) -> dict[str, Any]:
    """The entry of a parquet importer: check that ``root`` is a folder (else a one-line error naming what it
    should hold), ``parse`` it, and write the bench with the ``subsets`` found there in its source record;
    returns ``bench.json``'s content."""
    from smfa.bench.importers.common import write_imported_bench

    root = Path(root).expanduser()
    if not root.is_dir():
        raise BenchError(f"{root} is not a directory; pass the folder holding {holding}")
    data = parse(root)
    read = sorted(s for s in subsets if has_subset(root, s))
    return write_imported_bench(data, opts, {"format": fmt, "input": str(root), "subsets": read})
