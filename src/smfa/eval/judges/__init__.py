"""Judges: Fact Score and Meaningful Score, 0-10, for one answer at a time or in batches.

- :mod:`~smfa.eval.judges.base`: the :class:`Judge` interface and the registry (``@register_judge``,
  ``get_judge(name, **options)``);
- :mod:`~smfa.eval.judges.offline`: ``offline``, the deterministic rubric (the default; no network);
- :mod:`~smfa.eval.judges.openai_judge`: ``openai``, any OpenAI-compatible chat-completions endpoint.

A new judge is a module here with a ``@register_judge("name")`` class, imported below so it registers.
"""

from smfa.eval.judges.base import (
    Judge,
    JudgeError,
    JudgeItem,
    Scores,
    available_judges,
    get_judge,
    register_judge,
)
from smfa.eval.judges.offline import (
    OfflineJudge,
    bench_lexicon,
    is_degenerate,
    offline_fact_score,
    offline_meaningful_score,
)
from smfa.eval.judges.openai_judge import OpenAIJudge, display_url, load_prompt, parse_score

__all__ = [
    "Judge",
    "JudgeError",
    "JudgeItem",
    "OfflineJudge",
    "OpenAIJudge",
    "Scores",
    "available_judges",
    "bench_lexicon",
    "display_url",
    "get_judge",
    "is_degenerate",
    "load_prompt",
    "offline_fact_score",
    "offline_meaningful_score",
    "parse_score",
    "register_judge",
]
