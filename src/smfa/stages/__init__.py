"""The pipeline's stages, each a function over a config dataclass: finetune (the vanilla and the oracle),
unlearn, forget (a deletion request), compare, sweep, audit, demo. Stages import libraries, never the CLI."""
