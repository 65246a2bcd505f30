"""The pipeline's stages, each a function over a config dataclass: finetune (the vanilla and the oracle; its
cached runs in :mod:`smfa.stages.cache`), unlearn, forget (a deletion request), evaluate (``smfa eval`` of a run),
compare, sweep, audit, demo.
Stages import libraries (bench, models, methods, sculpt, eval, report) and lower stages, never the CLI."""
