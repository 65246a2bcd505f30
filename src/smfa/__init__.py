"""smfa: selective, benign unlearning for multimodal LLMs (SMFA, S-MLLMUn Bench, baselines)."""

__version__ = "0.1.0"
