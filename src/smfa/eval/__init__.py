"""Evaluation: generation (``generate``), the typed records and ``metrics.json`` schema (``schema``), answer
matching and per-set / overall metrics (``metrics``), pluggable Fact/Meaningful judges (``judges``), the
oracle-based gold standard and membership inference (``gold``), and the ``smfa report`` command
(``report_cli``). Import the submodule you need; this package imports nothing heavy on its own."""
