"""User-facing errors: the CLI prints them in one line and exits with status 2 (or the error's ``exit_status``)."""

from __future__ import annotations


class SmfaError(Exception):
    """An error the user can act on: say what is wrong, where (file/row), and what to do."""


class BenchError(SmfaError):
    """The benchmark directory is missing, corrupt or inconsistent."""


class ModelError(SmfaError):
    """A model directory is missing/corrupt, or its type is not supported."""


class ConfigError(SmfaError):
    """A command-line option or config value is invalid."""


class SculptError(SmfaError):
    """Adapters or deltas cannot be sculpted/merged (shape or target mismatch, non-finite values, bad k)."""


class OutputError(SmfaError):
    """An output directory exists (without --overwrite) or cannot be written."""


class EvalError(SmfaError):
    """Evaluation inputs are inconsistent (mixed or empty sets, bad losses) or a judge failed."""
