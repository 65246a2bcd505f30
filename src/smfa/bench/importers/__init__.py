"""Importers: other benchmarks and your own rows as smfa bench directories (``smfa bench import``).

Each importer parses its input into :class:`smfa.bench.importers.common.ImportedData` and hands it to
:func:`smfa.bench.importers.common.write_imported_bench`, which draws the reference pool and the anchor and
writes a validated bench directory atomically. ``docs/data-format.md`` documents the result.
"""

from smfa.bench.importers.common import ImportOptions

IMPORT_FORMATS = ("mllmu", "clear", "jsonl")

__all__ = ["IMPORT_FORMATS", "ImportOptions"]
