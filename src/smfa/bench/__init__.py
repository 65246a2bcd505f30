"""S-MLLMUn Bench: the procedural benchmark (profiles, portraits, fundus scans, shapes, questions, splits).

``build_bench(preset_config("tiny", seed=0), "bench/")`` writes a bench directory; ``Bench.load("bench/")``
reads and validates it and hands out training rows, the forget set, the retain anchor and eval sets.
"""

from smfa.bench.build import build_bench
from smfa.bench.layout import bench_checksum
from smfa.bench.config import PRESETS, BenchConfig, preset_config
from smfa.bench.load import Bench
from smfa.bench.schema import Person, Question

__all__ = ["PRESETS", "Bench", "BenchConfig", "Person", "Question", "bench_checksum", "build_bench", "preset_config"]
