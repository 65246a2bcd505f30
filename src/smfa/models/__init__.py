"""Models: the built-in tiny MLLM, family adapters, loading and saving."""
